//! Compiles a narrowing seccomp profile (`native.seccomp.profile`: an OCI bundle's `linux.seccomp`
//! as `hybox-runc` maps it) into one more BPF program, with libseccomp like the allow-list
//! ([`super::seccomp`]).
//!
//! The program is stacked with hybox's own filters, never a replacement for them: the kernel runs
//! every installed filter on each syscall and applies the most severe of their results
//! (kernel/seccomp.c, `seccomp_run_filters`: KILL_PROCESS > KILL_THREAD > TRAP > ERRNO > TRACE >
//! LOG > ALLOW), so whatever the profile says, a syscall hybox kills or refuses stays killed or
//! refused. A profile can narrow the allow-list; it cannot widen it.
//!
//! It is installed right before the allow-list, not after it: the allow-list denies `seccomp(2)`
//! itself, so nothing can be installed once it is in force. The profile's program therefore always
//! allows `seccomp(2)` (so that the allow-list can still be installed); that takes nothing from the
//! profile, because the allow-list installed next kills `seccomp(2)` for the workload anyway.

use hybox_shim::seccomp::FilterError;
use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};

use crate::policy::{ProfileAction, ProfileArg, ProfileOp, SeccompProfile};

fn err(message: String) -> FilterError {
    FilterError::Compile {
        filter: "profile",
        message,
    }
}

fn action(a: ProfileAction) -> ScmpAction {
    match a {
        ProfileAction::Allow => ScmpAction::Allow,
        ProfileAction::Errno(e) => ScmpAction::Errno(i32::from(e)),
        ProfileAction::KillProcess => ScmpAction::KillProcess,
        ProfileAction::KillThread => ScmpAction::KillThread,
        ProfileAction::Trap => ScmpAction::Trap,
        ProfileAction::Log => ScmpAction::Log,
    }
}

fn compare(a: &ProfileArg) -> ScmpArgCompare {
    let (op, datum) = match a.op {
        ProfileOp::Ne => (ScmpCompareOp::NotEqual, a.value),
        ProfileOp::Lt => (ScmpCompareOp::Less, a.value),
        ProfileOp::Le => (ScmpCompareOp::LessOrEqual, a.value),
        ProfileOp::Eq => (ScmpCompareOp::Equal, a.value),
        ProfileOp::Ge => (ScmpCompareOp::GreaterEqual, a.value),
        ProfileOp::Gt => (ScmpCompareOp::Greater, a.value),
        // The OCI (and libseccomp) meaning: `arg & value == value_two`.
        ProfileOp::MaskedEq => (ScmpCompareOp::MaskedEqual(a.value), a.value_two),
    };
    ScmpArgCompare::new(u32::from(a.index), op, datum)
}

/// The profile's program for x86_64 (see the module docs for how it stacks). Syscall names
/// libseccomp does not know are skipped, as runc skips them (profiles list other arches' and newer
/// kernels' syscalls); a rule whose action is the default action is skipped too (libseccomp refuses
/// it, and it changes nothing).
pub fn compile(profile: &SeccompProfile) -> Result<seccompiler::BpfProgram, FilterError> {
    let default = action(profile.default_action);
    let mut ctx = ScmpFilterContext::new(default).map_err(|e| err(format!("libseccomp: {e}")))?;
    // A foreign arch or an x32 syscall: the allow-list kills those already.
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .and_then(|c| c.set_ctl_optimize(2))
        .map_err(|e| err(format!("libseccomp attributes: {e}")))?;
    let seccomp = ScmpSyscall::from_name("seccomp").map_err(|e| err(format!("seccomp: {e}")))?;
    if default != ScmpAction::Allow {
        ctx.add_rule(ScmpAction::Allow, seccomp)
            .map_err(|e| err(format!("rule for `seccomp`: {e}")))?;
    }
    for (i, rule) in profile.rules.iter().enumerate() {
        let act = action(rule.action);
        if act == default {
            continue;
        }
        if let Some(a) = rule.args.iter().find(|a| a.index > 5) {
            return Err(err(format!(
                "rules[{i}]: argument index {} (a syscall has 6: 0..=5)",
                a.index
            )));
        }
        // runc's rule: comparisons all on one argument are alternatives (libseccomp cannot AND
        // two comparisons of one argument); on different arguments, they are ANDed.
        let one_arg =
            rule.args.len() > 1 && rule.args.iter().all(|a| a.index == rule.args[0].index);
        let conditions: Vec<Vec<ScmpArgCompare>> = if one_arg {
            rule.args.iter().map(|a| vec![compare(a)]).collect()
        } else {
            vec![rule.args.iter().map(compare).collect()]
        };
        for name in &rule.names {
            let Ok(nr) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if nr == seccomp {
                continue;
            }
            for conds in &conditions {
                ctx.add_rule_conditional(act, nr, conds)
                    .map_err(|e| err(format!("rules[{i}] `{name}`: {e}")))?;
            }
        }
    }
    super::seccomp::export(&ctx, err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(json: serde_json::Value) -> SeccompProfile {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn rules_compile_and_unknown_names_are_skipped() {
        let p = profile(serde_json::json!({
            "default_action": "allow",
            "rules": [
                {"names": ["mkdir", "mkdirat", "no_such_call"], "action": {"errno": 38}},
                {"names": ["personality"], "action": "kill_process",
                 "args": [{"index": 0, "op": "ne", "value": 0}, {"index": 0, "op": "ne", "value": 8}]},
                {"names": ["clone"], "action": "trap",
                 "args": [{"index": 0, "op": "masked_eq", "value": 2114060288, "value_two": 0}]},
                {"names": ["getpid"], "action": "allow"}
            ]
        }));
        assert!(!compile(&p).unwrap().is_empty());
    }

    #[test]
    fn a_bad_argument_index_is_refused() {
        let p = profile(serde_json::json!({
            "default_action": {"errno": 1},
            "rules": [{"names": ["read"], "action": "allow", "args": [{"index": 6, "op": "eq", "value": 0}]}]
        }));
        assert!(compile(&p).unwrap_err().to_string().contains("rules[0]"));
    }
}
