//! The native backend's seccomp policy: a default-deny allow-list (see `shared/security.md`, step 16).

/// Syscalls that are escape primitives or kernel attack surface: a policy can never grant them.
pub const NEVER_GRANTABLE: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "keyctl",
    "add_key",
    "request_key",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "open_tree",
    "move_mount",
    "mount_setattr",
    "open_by_handle_at",
    "name_to_handle_at",
    "unshare",
    "setns",
    "clock_settime",
    "clock_adjtime",
    "settimeofday",
    "adjtimex",
    "acct",
    "swapon",
    "swapoff",
    "reboot",
    "syslog",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "modify_ldt",
    "iopl",
    "ioperm",
    "lookup_dcookie",
    "quotactl",
    "quotactl_fd",
    "vhangup",
    "nfsservctl",
    "uselib",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "sysfs",
    "_sysctl",
    "personality",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
];

/// Whether a policy may grant `name` on top of the default allow-list.
pub fn check_grantable(name: &str) -> Result<(), String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(format!("expected a syscall name, found {name:?}"));
    }
    if NEVER_GRANTABLE.contains(&name) {
        return Err(format!(
            "`{name}` is an escape primitive and cannot be granted"
        ));
    }
    Ok(())
}
