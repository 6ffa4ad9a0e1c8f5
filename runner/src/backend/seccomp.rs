//! Compiles the seccomp policies to BPF: the native sandbox's (its rules are data in
//! [`hybox_shim::seccomp`]) and the wasm worker's allow-list. Here, in the runner, and not in the
//! shim crate: libseccomp is a C library, and the shim is linked statically without one.
//!
//! The allow-lists go through libseccomp with its binary-tree optimisation (~300 syscalls become
//! ~350 instructions instead of a linear filter's ~1,360, which the kernel installs ~4x faster and
//! walks in O(log n)); the `EPERM` rules on arguments through seccompiler's JSON frontend, which can
//! AND several conditions on one argument where libseccomp cannot.

use hybox_shim::seccomp::{allow_list, filters_json, syscall_number, FilterError, ENOSYS_ANSWERED};

/// A syscall allowed only when its first argument, masked, equals a value: `(arg0 & mask) == value`.
#[derive(Debug, Clone, Copy)]
pub struct MaskedArg0 {
    pub syscall: &'static str,
    pub mask: u64,
    pub value: u64,
}

/// Compiles a default-kill allow-list with libseccomp (binary-tree optimised) for x86_64: `allow`
/// are allowed, `allow_if` allowed when their first argument matches, `enosys` answer `ENOSYS`,
/// anything else (and a foreign arch or an x32 syscall) kills the process. Shared with the wasm
/// worker's filter.
pub fn compile_allow_list(
    allow: &[&str],
    allow_if: &[MaskedArg0],
    enosys: &[&str],
) -> Result<seccompiler::BpfProgram, FilterError> {
    use libseccomp::{ScmpAction, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall};
    let err = |message: String| FilterError::Compile {
        filter: "allow-list",
        message,
    };
    let mut ctx = ScmpFilterContext::new(ScmpAction::KillProcess)
        .map_err(|e| err(format!("libseccomp: {e}")))?;
    ctx.set_act_badarch(ScmpAction::KillProcess)
        .and_then(|c| c.set_ctl_optimize(2))
        .map_err(|e| err(format!("libseccomp attributes: {e}")))?;
    let number = |name: &str| {
        syscall_number(name)
            .map(|nr| ScmpSyscall::from(nr as i32))
            .ok_or_else(|| err(format!("unknown syscall `{name}` on x86_64")))
    };
    let rules = allow
        .iter()
        .map(|n| (n, ScmpAction::Allow))
        .chain(enosys.iter().map(|n| (n, ScmpAction::Errno(libc::ENOSYS))));
    for (name, action) in rules {
        ctx.add_rule_exact(action, number(name)?)
            .map_err(|e| err(format!("rule for `{name}`: {e}")))?;
    }
    for rule in allow_if {
        let cond = ScmpArgCompare::new(0, ScmpCompareOp::MaskedEqual(rule.mask), rule.value);
        ctx.add_rule_conditional_exact(ScmpAction::Allow, number(rule.syscall)?, &[cond])
            .map_err(|e| err(format!("rule for `{}`: {e}", rule.syscall)))?;
    }
    export(&ctx, err)
}

/// The BPF program of a libseccomp filter, read back from its export.
pub(crate) fn export(
    ctx: &libseccomp::ScmpFilterContext,
    err: impl Fn(String) -> FilterError,
) -> Result<seccompiler::BpfProgram, FilterError> {
    // libseccomp 2.5 exports to a file descriptor only: an anonymous memory file (no path, so it
    // works as well after Landlock as before).
    // SAFETY: memfd_create with a NUL-terminated name and flags; the fd is owned right below.
    let fd = unsafe { libc::memfd_create(c"hybox-seccomp".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(err(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let mut file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    ctx.export_bpf(&file)
        .map_err(|e| err(format!("export: {e}")))?;
    use std::io::{Read, Seek};
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(|e| err(format!("read back: {e}")))?;
    if bytes.is_empty() || bytes.len() % 8 != 0 {
        return Err(err(format!("export gave {} bytes", bytes.len())));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| seccompiler::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Compiles the filters to BPF for x86_64, in install order: the default ones with the policy's
/// `native.seccomp.allow` grants (`extra_allow`) and, with `nested` (the `native.nested` grant), the
/// namespaces and syscalls of [`hybox_shim::seccomp::NESTED_SYSCALLS`].
pub fn compile(
    extra_allow: &[String],
    nested: bool,
) -> Result<Vec<seccompiler::BpfProgram>, FilterError> {
    // First, so that a grant that may not be given is refused before anything is compiled.
    let allow = allow_list(extra_allow, nested)?;
    let text = filters_json(nested).to_string();
    let mut map = seccompiler::compile_from_json(text.as_bytes(), seccompiler::TargetArch::x86_64)
        .map_err(|e| FilterError::Compile {
            filter: "eperm",
            message: e.to_string(),
        })?;
    let eperm = map.remove("1_eperm").ok_or(FilterError::Compile {
        filter: "eperm",
        message: "1_eperm missing".into(),
    })?;
    let allow = compile_allow_list(&allow, &[], ENOSYS_ANSWERED)?;
    Ok(vec![eperm, allow])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_filters_compile() {
        let progs = compile(&[], false).unwrap();
        assert_eq!(progs.len(), 2);
        // The binary tree keeps the allow-list short (seccompiler's linear form was ~1,360).
        assert!(progs[1].len() < 400, "{}", progs[1].len());
        assert!(progs.iter().all(|p| !p.is_empty()));
    }

    #[test]
    fn escape_primitives_cannot_be_granted() {
        let err = compile(&["ptrace".to_string()], false).unwrap_err();
        assert_eq!(
            err.to_string(),
            "native.seccomp.allow: `ptrace` is an escape primitive and cannot be granted"
        );
    }

    #[test]
    fn nested_filters_compile() {
        let progs = compile(&[], true).unwrap();
        assert_eq!(progs.len(), 2);
        assert!(progs[1].len() < 400, "{}", progs[1].len());
    }

    #[test]
    fn unknown_syscalls_are_refused() {
        assert!(compile(&["no_such_call".to_string()], false).is_err());
    }
}
