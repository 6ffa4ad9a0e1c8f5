//! The native backend's seccomp policy: a default-deny allow-list, the last restriction the workload's
//! process installs before its `execveat`.
//!
//! Two filters, compiled by the runner (`hybox::backend::seccomp`, so that this crate, linked into
//! the static shim, needs no C library) and installed by the workload's process right before
//! `execveat`, in this order:
//! 1. `EPERM` for `unshare`/`clone` with any `CLONE_NEW*` flag (with the `native.nested` grant: any
//!    but those of [`NESTED_NAMESPACES`]), `ioctl(TIOCSTI|TIOCLINUX)` (32-bit
//!    compare), `personality` other than 0 / query, and `socket` of a family other than unix, inet,
//!    inet6 and netlink (AF_VSOCK above all) or of a netlink protocol other than NETLINK_ROUTE;
//!    everything else passes. Compiled by seccompiler's JSON frontend (policy as data, one rule per
//!    line): several conditions on one argument ANDed in one rule, which libseccomp cannot express.
//! 2. The allow-list: anything not listed kills the process (`SECCOMP_RET_KILL_PROCESS`), which the shim
//!    sees as a SIGSYS death and the runner reports as `seccomp_violation`; `clone3` (libc falls back to
//!    `clone`, whose flags filter 1 checks) and `io_uring_*` answer `ENOSYS`. Compiled by libseccomp
//!    with its binary-tree optimisation: ~300 syscalls become ~350 instructions instead of seccompiler's
//!    linear ~1,360, which the kernel takes ~4x less time to install (0.19 ms instead of 0.75 ms per
//!    sandbox, measured) and walks in O(log n) on every syscall the workload makes. x32 syscalls (bit 30
//!    set) and a foreign audit arch are killed by libseccomp's arch checks.
//!
//! The `native.nested` grant adds [`NESTED_SYSCALLS`] to the allow-list, and nothing else; without
//! it they stay killed (`unshare`: refused by filter 1 for every namespace).
//!
//! The kernel runs every installed filter and applies the most severe result (KILL > TRAP > ERRNO >
//! ALLOW), so filter 1 can only answer syscalls filter 2 lets through.

use crate::syscalls_x86_64::SYSCALL_NAMES;

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

/// Why a policy may not grant a syscall ([`check_grantable`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotGrantable {
    #[error("expected a syscall name, found {0:?}")]
    NotAName(String),
    #[error("`{0}` is an escape primitive and cannot be granted")]
    EscapePrimitive(String),
}

/// Whether a policy may grant `name` on top of the default allow-list.
pub fn check_grantable(name: &str) -> Result<(), NotGrantable> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    {
        return Err(NotGrantable::NotAName(name.to_string()));
    }
    if NEVER_GRANTABLE.contains(&name) {
        return Err(NotGrantable::EscapePrimitive(name.to_string()));
    }
    Ok(())
}

/// The default allow-list (x86_64): what ordinary static and dynamic programs, libc, threads and the Rust
/// and Go runtimes use. Everything else kills the process (`SECCOMP_RET_KILL_PROCESS`). Some entries are
/// here only so that the narrower filters below can answer them with an errno (a KILL in the allow-list
/// would win over their ERRNO: the kernel applies the most severe action of all installed filters).
pub const DEFAULT_ALLOW: &[&str] = &[
    "read",
    "write",
    "open",
    "close",
    "stat",
    "fstat",
    "lstat",
    "poll",
    "lseek",
    "mmap",
    "mprotect",
    "munmap",
    "brk",
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "ioctl",
    "pread64",
    "pwrite64",
    "readv",
    "writev",
    "access",
    "pipe",
    "select",
    "sched_yield",
    "mremap",
    "msync",
    "mincore",
    "madvise",
    "shmget",
    "shmat",
    "shmctl",
    "dup",
    "dup2",
    "pause",
    "nanosleep",
    "getitimer",
    "alarm",
    "setitimer",
    "getpid",
    "sendfile",
    "socket",
    "connect",
    "accept",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
    "bind",
    "listen",
    "getsockname",
    "getpeername",
    "socketpair",
    "setsockopt",
    "getsockopt",
    "clone",
    "fork",
    "vfork",
    "execve",
    "exit",
    "wait4",
    "kill",
    "uname",
    "semget",
    "semop",
    "semctl",
    "shmdt",
    "msgget",
    "msgsnd",
    "msgrcv",
    "msgctl",
    "fcntl",
    "flock",
    "fsync",
    "fdatasync",
    "truncate",
    "ftruncate",
    "getdents",
    "getcwd",
    "chdir",
    "fchdir",
    "rename",
    "mkdir",
    "rmdir",
    "creat",
    "link",
    "unlink",
    "symlink",
    "readlink",
    "chmod",
    "fchmod",
    "chown",
    "fchown",
    "lchown",
    "umask",
    "gettimeofday",
    "getrlimit",
    "getrusage",
    "sysinfo",
    "times",
    "getuid",
    "getgid",
    "setuid",
    "setgid",
    "geteuid",
    "getegid",
    "setpgid",
    "getppid",
    "getpgrp",
    "setsid",
    "setreuid",
    "setregid",
    "getgroups",
    "setgroups",
    "setresuid",
    "getresuid",
    "setresgid",
    "getresgid",
    "getpgid",
    "setfsuid",
    "setfsgid",
    "getsid",
    "capget",
    "capset",
    "rt_sigpending",
    "rt_sigtimedwait",
    "rt_sigqueueinfo",
    "rt_sigsuspend",
    "sigaltstack",
    "utime",
    "mknod",
    "statfs",
    "fstatfs",
    "getpriority",
    "setpriority",
    "sched_setparam",
    "sched_getparam",
    "sched_setscheduler",
    "sched_getscheduler",
    "sched_get_priority_max",
    "sched_get_priority_min",
    "sched_rr_get_interval",
    "mlock",
    "munlock",
    "mlockall",
    "munlockall",
    "prctl",
    "arch_prctl",
    "setrlimit",
    "sync",
    "gettid",
    "readahead",
    "setxattr",
    "lsetxattr",
    "fsetxattr",
    "getxattr",
    "lgetxattr",
    "fgetxattr",
    "listxattr",
    "llistxattr",
    "flistxattr",
    "removexattr",
    "lremovexattr",
    "fremovexattr",
    "tkill",
    "time",
    "futex",
    "sched_setaffinity",
    "sched_getaffinity",
    "epoll_create",
    "getdents64",
    "set_tid_address",
    "restart_syscall",
    "semtimedop",
    "fadvise64",
    "timer_create",
    "timer_settime",
    "timer_gettime",
    "timer_getoverrun",
    "timer_delete",
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "exit_group",
    "epoll_wait",
    "epoll_ctl",
    "tgkill",
    "utimes",
    "mq_open",
    "mq_unlink",
    "mq_timedsend",
    "mq_timedreceive",
    "mq_notify",
    "mq_getsetattr",
    "waitid",
    "inotify_init",
    "inotify_add_watch",
    "inotify_rm_watch",
    "openat",
    "mkdirat",
    "mknodat",
    "fchownat",
    "futimesat",
    "newfstatat",
    "unlinkat",
    "renameat",
    "linkat",
    "symlinkat",
    "readlinkat",
    "fchmodat",
    "faccessat",
    "pselect6",
    "ppoll",
    "set_robust_list",
    "get_robust_list",
    "splice",
    "tee",
    "sync_file_range",
    "vmsplice",
    "utimensat",
    "epoll_pwait",
    "signalfd",
    "timerfd_create",
    "eventfd",
    "fallocate",
    "timerfd_settime",
    "timerfd_gettime",
    "accept4",
    "signalfd4",
    "eventfd2",
    "epoll_create1",
    "dup3",
    "pipe2",
    "inotify_init1",
    "preadv",
    "pwritev",
    "rt_tgsigqueueinfo",
    "recvmmsg",
    "prlimit64",
    "syncfs",
    "sendmmsg",
    "getcpu",
    "sched_setattr",
    "sched_getattr",
    "renameat2",
    "getrandom",
    "memfd_create",
    "execveat",
    "membarrier",
    "mlock2",
    "copy_file_range",
    "preadv2",
    "pwritev2",
    "statx",
    "rseq",
    "pidfd_open",
    "pidfd_send_signal",
    "close_range",
    "openat2",
    "faccessat2",
    "epoll_pwait2",
    "futex_waitv",
    "fchmodat2",
    "map_shadow_stack",
    // Answered by the errno filters below.
    "unshare",
    "clone3",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "personality",
];

/// `CLONE_NEW*` flags: a new namespace from inside the sandbox (a user namespace above all) is an
/// escape primitive (it hands back CAP_SYS_ADMIN over fresh namespaces, the entry to most kernel
/// privilege-escalation bugs).
pub const CLONE_NEW_MASK: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | 0x80) as u64; // 0x80 = CLONE_NEWTIME

/// The namespaces the `native.nested` grant lets the workload create (`unshare`, `clone`): user,
/// mount, pid, net, ipc, uts, and cgroup (hybox's own shim roots a cgroup namespace at its run's
/// leaf, and a cgroup namespace only narrows the view of the hierarchy: the processes stay in the
/// outer run's cgroup). Not CLONE_NEWTIME: no sandbox tool needs it and a time namespace's offsets
/// are kernel surface of their own. Everything a namespace created from inside the sandbox owns is
/// nested in the sandbox's own namespaces: the inner user namespace is a child of the sandbox's
/// (which maps one unprivileged host id), so the capabilities it hands back apply only to
/// namespaces it owns, never to the host's or the outer sandbox's. The kernel bounds the nesting:
/// 32 levels of user namespaces (`clone`/`unshare` fail with EUSERS past them) and, per user,
/// `user.max_user_namespaces` (ENOSPC).
pub const NESTED_NAMESPACES: &[(&str, u64)] = &[
    ("user", libc::CLONE_NEWUSER as u64),
    ("mount", libc::CLONE_NEWNS as u64),
    ("pid", libc::CLONE_NEWPID as u64),
    ("net", libc::CLONE_NEWNET as u64),
    ("ipc", libc::CLONE_NEWIPC as u64),
    ("uts", libc::CLONE_NEWUTS as u64),
    ("cgroup", libc::CLONE_NEWCGROUP as u64),
];

/// The syscalls the `native.nested` grant adds to the allow-list, and the only ones: what a sandbox
/// tool (hybox's own runner and shim, or another) needs to build its sandbox inside this one.
/// - `unshare`, `setns`: new namespaces of [`NESTED_NAMESPACES`] (filter 1 still refuses the
///   others), and joining one; joining needs CAP_SYS_ADMIN over the target's owning user
///   namespace, which the workload only has over namespaces it created itself.
/// - `mount`, `umount2`, `pivot_root`: the inner sandbox's root. In a mount namespace owned by the
///   inner user namespace every mount copied from the outer one is locked (MNT_LOCKED: it cannot be
///   unmounted to reveal what it covers; MNT_LOCK_READONLY and friends: its read-only, nosuid and
///   nodev flags cannot be cleared), so nothing the outer sandbox hides or makes read-only becomes
///   reachable or writable. The new mount API (`fsopen`, `open_tree`, `move_mount`, ...) is not
///   granted: hybox's shim does not use it.
/// - `sethostname`: the inner UTS namespace's name.
/// - `seccomp`, `landlock_*`: the inner sandbox's own filters and rulesets. Both only ever stack:
///   an installed filter or Landlock domain cannot be removed or widened, so the inner sandbox is
///   at most as permissive as this one.
///
/// Everything else [`NEVER_GRANTABLE`] lists stays denied with the grant (ptrace, bpf, keyctl,
/// kexec, modules, io_uring, perf, userfaultfd, the new mount API, chroot, ...).
pub const NESTED_SYSCALLS: &[&str] = &[
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "sethostname",
    "seccomp",
    "landlock_create_ruleset",
    "landlock_add_rule",
    "landlock_restrict_self",
];

/// The `CLONE_NEW*` bits filter 1 refuses: all of [`CLONE_NEW_MASK`], or with the `native.nested`
/// grant those not in [`NESTED_NAMESPACES`].
pub fn refused_namespaces(nested: bool) -> u64 {
    if !nested {
        return CLONE_NEW_MASK;
    }
    NESTED_NAMESPACES
        .iter()
        .fold(CLONE_NEW_MASK, |mask, (_, bit)| mask & !bit)
}

/// Why a filter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    /// A granted syscall is unknown on this architecture, or the compiler failed.
    #[error("seccomp filter {filter}: {message}")]
    Compile {
        filter: &'static str,
        message: String,
    },
    /// A granted syscall is not allowed to be granted.
    #[error("native.seccomp.allow: {0}")]
    NotGrantable(NotGrantable),
}

fn errno_filter(action_errno: i32, rules: Vec<serde_json::Value>) -> serde_json::Value {
    serde_json::json!({
        "mismatch_action": "allow",
        "match_action": { "errno": action_errno },
        "filter": rules,
    })
}

/// Syscalls the allow-list answers with `ENOSYS` instead of allowing them: `clone3` keeps its flags in
/// memory where BPF cannot look (libc falls back to `clone`, whose flags filter 1 checks); io_uring
/// performs its operations outside seccomp's view.
pub const ENOSYS_ANSWERED: &[&str] = &[
    "clone3",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// Filter 1 as seccompiler JSON: the `EPERM` rules on arguments (each lets everything it does not
/// match through). The same for every policy but one grant: `native.seccomp.allow` only extends the
/// allow-list; `native.nested` (`nested`) lets [`NESTED_NAMESPACES`] through.
pub fn filters_json(nested: bool) -> serde_json::Value {
    // A masked_eq condition matches when (arg & mask) == val; we need "any refused CLONE_NEW* bit
    // set", so one rule per bit (rules of one syscall are ORed).
    let refused = refused_namespaces(nested);
    let bits: Vec<u64> = (0..64)
        .map(|b| 1u64 << b)
        .filter(|b| refused & b != 0)
        .collect();
    let mut eperm = Vec::new();
    for bit in &bits {
        let cond =
            serde_json::json!({"index": 0, "type": "qword", "op": {"masked_eq": bit}, "val": bit});
        eperm.push(serde_json::json!({"syscall": "unshare", "args": [cond.clone()]}));
        eperm.push(serde_json::json!({"syscall": "clone", "args": [cond]}));
    }
    // TIOCSTI/TIOCLINUX compared as 32-bit words: the kernel truncates `cmd` to an int, so a 64-bit compare
    // is dodged by setting high bits (CVE-2017-5226, the bubblewrap TIOCSTI escape).
    for cmd in [libc::TIOCSTI, libc::TIOCLINUX] {
        eperm.push(serde_json::json!({"syscall": "ioctl", "args": [{"index": 1, "type": "dword", "op": "eq", "val": cmd}]}));
    }
    // personality: only the query (0xffffffff) and PER_LINUX (0) are allowed; READ_IMPLIES_EXEC and
    // friends weaken W^X and ASLR.
    eperm.push(serde_json::json!({"syscall": "personality", "args": [
        {"index": 0, "type": "dword", "op": "ne", "val": 0},
        {"index": 0, "type": "dword", "op": "ne", "val": 0xffff_ffffu32},
    ]}));
    // socket: only AF_UNIX, AF_INET, AF_INET6 and AF_NETLINK (all scoped by the sandbox's own network
    // namespace). AF_VSOCK is not: in a VM it reaches the hypervisor (CID 2) whatever the namespace, an
    // egress around `network: none`; AF_PACKET, AF_ALG, AF_XDP and the rest are kernel attack surface.
    eperm.push(serde_json::json!({"syscall": "socket", "args": [
        {"index": 0, "type": "dword", "op": "ne", "val": libc::AF_UNIX},
        {"index": 0, "type": "dword", "op": "ne", "val": libc::AF_INET},
        {"index": 0, "type": "dword", "op": "ne", "val": libc::AF_INET6},
        {"index": 0, "type": "dword", "op": "ne", "val": libc::AF_NETLINK},
    ]}));
    // AF_NETLINK: NETLINK_ROUTE only (libc's getaddrinfo and getifaddrs use it; it sees the sandbox's
    // own namespace). Audit, uevent, netfilter, xfrm and the rest are kernel attack surface.
    eperm.push(serde_json::json!({"syscall": "socket", "args": [
        {"index": 0, "type": "dword", "op": "eq", "val": libc::AF_NETLINK},
        {"index": 2, "type": "dword", "op": "ne", "val": libc::NETLINK_ROUTE},
    ]}));
    serde_json::json!({ "1_eperm": errno_filter(libc::EPERM, eperm) })
}

/// The names on the allow-list: [`DEFAULT_ALLOW`], the policy's grants (`extra_allow`, and
/// [`NESTED_SYSCALLS`] with `nested`), without the [`ENOSYS_ANSWERED`] ones, sorted and without
/// duplicates.
pub fn allow_list(extra_allow: &[String], nested: bool) -> Result<Vec<&str>, FilterError> {
    for name in extra_allow {
        check_grantable(name).map_err(FilterError::NotGrantable)?;
    }
    let nested_syscalls: &[&str] = if nested { NESTED_SYSCALLS } else { &[] };
    let mut names: Vec<&str> = DEFAULT_ALLOW
        .iter()
        .copied()
        .chain(extra_allow.iter().map(String::as_str))
        .chain(nested_syscalls.iter().copied())
        .filter(|n| !ENOSYS_ANSWERED.contains(n))
        .collect();
    names.sort_unstable();
    names.dedup();
    Ok(names)
}

/// The x86_64 number of a syscall name.
pub fn syscall_number(name: &str) -> Option<i64> {
    SYSCALL_NAMES
        .iter()
        .find(|(s, _)| *s == name)
        .map(|(_, nr)| *nr)
}

/// The x86_64 syscall name for `nr`, for reports (`seccomp_violation(ptrace)`).
pub fn syscall_name(nr: i64) -> Option<&'static str> {
    SYSCALL_NAMES
        .iter()
        .find(|(_, n)| *n == nr)
        .map(|(s, _)| *s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_allow_has_no_escape_primitive_except_errno_answered() {
        let errno_answered = [
            "unshare",
            "clone3",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "personality",
        ];
        for s in DEFAULT_ALLOW {
            assert!(
                !NEVER_GRANTABLE.contains(s) || errno_answered.contains(s),
                "{s}"
            );
        }
    }

    #[test]
    fn only_namespaced_socket_families_pass() {
        let json = filters_json(false);
        let rules: Vec<&serde_json::Value> = json["1_eperm"]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["syscall"] == "socket")
            .collect();
        assert_eq!(rules.len(), 2, "{rules:?}");
        let rule = rules[0];
        // Netlink: NETLINK_ROUTE only.
        assert_eq!(
            rules[1]["args"],
            serde_json::json!([
                {"index": 0, "type": "dword", "op": "eq", "val": libc::AF_NETLINK},
                {"index": 2, "type": "dword", "op": "ne", "val": libc::NETLINK_ROUTE},
            ])
        );
        // EPERM when the family is none of these (conditions of one rule are ANDed).
        let allowed: Vec<i64> = rule["args"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                assert_eq!(c["op"], "ne");
                assert_eq!(c["type"], "dword");
                c["val"].as_i64().unwrap()
            })
            .collect();
        let want: Vec<i64> = [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ]
        .map(i64::from)
        .to_vec();
        assert_eq!(allowed, want);
        assert!(!allowed.contains(&i64::from(libc::AF_VSOCK)));
    }

    /// The `CLONE_NEW*` bits filter 1 answers with EPERM, one rule per bit and syscall.
    fn eperm_clone_bits(nested: bool) -> Vec<u64> {
        let json = filters_json(nested);
        let mut bits: Vec<u64> = json["1_eperm"]["filter"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["syscall"] == "unshare")
            .map(|r| r["args"][0]["val"].as_u64().unwrap())
            .collect();
        bits.sort_unstable();
        bits
    }

    #[test]
    fn nested_lets_its_namespaces_through_and_no_other() {
        let all: Vec<u64> = (0..64)
            .map(|b| 1u64 << b)
            .filter(|b| CLONE_NEW_MASK & b != 0)
            .collect();
        assert_eq!(eperm_clone_bits(false), all);
        // CLONE_NEWTIME stays refused with the grant.
        assert_eq!(eperm_clone_bits(true), vec![0x80]);
    }

    #[test]
    fn nested_adds_exactly_its_syscalls() {
        let without = allow_list(&[], false).unwrap();
        let with = allow_list(&[], true).unwrap();
        let added: Vec<&str> = with
            .iter()
            .copied()
            .filter(|n| !without.contains(n))
            .collect();
        let mut want: Vec<&str> = NESTED_SYSCALLS
            .iter()
            .copied()
            .filter(|n| !DEFAULT_ALLOW.contains(n))
            .collect();
        want.sort_unstable();
        assert_eq!(added, want);
        // The rest of the deny-list holds with the grant.
        for n in [
            "ptrace",
            "bpf",
            "keyctl",
            "kexec_load",
            "init_module",
            "perf_event_open",
        ] {
            assert!(!with.contains(&n), "{n}");
        }
        for n in [
            "userfaultfd",
            "io_uring_setup",
            "fsopen",
            "open_tree",
            "move_mount",
            "chroot",
        ] {
            assert!(!with.contains(&n), "{n}");
        }
        // The grant's syscalls stay out of reach of `native.seccomp.allow`, but `sethostname` (of
        // the sandbox's own UTS namespace, and only with a capability the workload lacks).
        for n in NESTED_SYSCALLS.iter().filter(|n| **n != "sethostname") {
            assert!(check_grantable(n).is_err(), "{n}");
        }
    }

    #[test]
    fn names_resolve() {
        assert_eq!(syscall_name(101), Some("ptrace"));
        assert_eq!(syscall_name(321), Some("bpf"));
    }
}
