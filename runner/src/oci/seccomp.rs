//! `linux.seccomp` mapped onto a narrowing profile (`native.seccomp.profile`): hybox's default-deny
//! allow-list always applies, and the bundle's profile is compiled into one more filter stacked
//! with it (`backend::seccomp_profile` says why a stacked filter can only narrow). docs/oci.md.
//!
//! Refused, with the field named: `SCMP_ACT_NOTIFY` (a seccomp agent on the host deciding the
//! container's syscalls: hybox runs none) and `SCMP_ACT_TRACE` (a ptrace tracer: the workload has
//! none, and ptrace is denied), an argument index beyond the six a syscall has, an errno beyond
//! the kernel's 4095, a rule without names. Unknown actions, operators, arches and flags are
//! refused by the parser already, with their path. Ignored, and listed: the flags (the filter is
//! always installed on every thread; `SECCOMP_FILTER_FLAG_SPEC_ALLOW` would turn the Speculative
//! Store Bypass mitigation off, and hybox keeps it; `LOG` and `WAIT_KILLABLE_RECV` concern logging
//! and notification), the listener fields (no notification), and `architectures`: hybox runs
//! x86_64 only and its allow-list kills every other arch's syscalls (x32 and i386 included).

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

use crate::oci::OciError;
use crate::policy::{ProfileAction, ProfileArg, ProfileOp, ProfileRule, SeccompProfile};

/// The kernel's largest errno (`MAX_ERRNO`): a seccomp `ERRNO` result is masked to 16 bits, and
/// anything above 4095 would not read as an error in userspace.
const MAX_ERRNO: u32 = 4095;

fn action(
    a: LinuxSeccompAction,
    errno: Option<u32>,
    field: &str,
    errno_field: &str,
) -> Result<ProfileAction, OciError> {
    Ok(match a {
        LinuxSeccompAction::ScmpActAllow => ProfileAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            let e = errno.unwrap_or(libc::EPERM as u32);
            if e > MAX_ERRNO {
                return Err(OciError::refused(
                    errno_field,
                    format!("expected an errno in 0..=4095, found {e}"),
                ));
            }
            ProfileAction::Errno(e as u16)
        }
        // libseccomp's SCMP_ACT_KILL is SCMP_ACT_KILL_THREAD.
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ProfileAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ProfileAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ProfileAction::Trap,
        LinuxSeccompAction::ScmpActLog => ProfileAction::Log,
        LinuxSeccompAction::ScmpActNotify => {
            return Err(OciError::refused(
                field,
                "SCMP_ACT_NOTIFY hands the container's syscalls to a seccomp agent; hybox-runc runs none",
            ))
        }
        LinuxSeccompAction::ScmpActTrace => {
            return Err(OciError::refused(
                field,
                "SCMP_ACT_TRACE needs a ptrace tracer; the container has none (ptrace is denied)",
            ))
        }
    })
}

fn op(o: LinuxSeccompOperator) -> ProfileOp {
    match o {
        LinuxSeccompOperator::ScmpCmpNe => ProfileOp::Ne,
        LinuxSeccompOperator::ScmpCmpLt => ProfileOp::Lt,
        LinuxSeccompOperator::ScmpCmpLe => ProfileOp::Le,
        LinuxSeccompOperator::ScmpCmpEq => ProfileOp::Eq,
        LinuxSeccompOperator::ScmpCmpGe => ProfileOp::Ge,
        LinuxSeccompOperator::ScmpCmpGt => ProfileOp::Gt,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ProfileOp::MaskedEq,
    }
}

/// Maps `linux.seccomp` (see the module docs), listing what it ignores in `ignored`.
pub fn map(s: &LinuxSeccomp, ignored: &mut Vec<String>) -> Result<SeccompProfile, OciError> {
    let default_action = action(
        s.default_action(),
        s.default_errno_ret(),
        "linux.seccomp.defaultAction",
        "linux.seccomp.defaultErrnoRet",
    )?;
    let mut rules = Vec::new();
    for (i, call) in s.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        if call.names().is_empty() {
            return Err(OciError::refused(
                format!("{field}.names"),
                "expected at least one syscall name",
            ));
        }
        let action = action(
            call.action(),
            call.errno_ret(),
            &format!("{field}.action"),
            &format!("{field}.errnoRet"),
        )?;
        let mut args = Vec::new();
        for (j, a) in call.args().iter().flatten().enumerate() {
            if a.index() > 5 {
                return Err(OciError::refused(
                    format!("{field}.args[{j}].index"),
                    format!("expected an argument index in 0..=5, found {}", a.index()),
                ));
            }
            args.push(ProfileArg {
                index: a.index() as u8,
                op: op(a.op()),
                value: a.value(),
                value_two: a.value_two().unwrap_or(0),
            });
        }
        rules.push(ProfileRule {
            names: call.names().clone(),
            action,
            args,
        });
    }
    if let Some(flags) = s.flags().as_ref().filter(|f| !f.is_empty()) {
        let names: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
        ignored.push(format!(
            "linux.seccomp.flags ({}): hybox installs its filters on every thread and keeps the \
             Speculative Store Bypass mitigation",
            names.join(", ")
        ));
    }
    if s.listener_path().is_some() || s.listener_metadata().is_some() {
        ignored.push(
            "linux.seccomp.listenerPath/listenerMetadata: no seccomp agent (SCMP_ACT_NOTIFY is refused)"
                .into(),
        );
    }
    if s.architectures().as_ref().is_some_and(|a| !a.is_empty()) {
        ignored.push(
            "linux.seccomp.architectures: the profile applies to x86_64 syscalls; hybox's allow-list \
             kills every other arch's"
                .into(),
        );
    }
    Ok(SeccompProfile {
        default_action,
        rules,
    })
}
