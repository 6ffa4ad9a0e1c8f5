//! `wasm.os_sandbox`: the wasm worker process itself in namespaces, without capabilities, under
//! Landlock and a seccomp filter tailored to wasmtime: defense in depth, so that a bug in wasmtime
//! or in its WASI implementation that lets a guest run code in the worker still meets the kernel's
//! walls.
//!
//! Two halves:
//! - The supervisor creates the worker in new user, mount, network, IPC and UTS namespaces
//!   ([`CLONE_FLAGS`], at clone time), and [`in_new_namespaces`] runs in that child before its exec:
//!   `lo` up when granted, an empty capability bounding set, `no_new_privs`. No uid/gid map is written: in-ns
//!   uid 0 is unmapped, so `execve` grants the worker no capabilities at all (capabilities(7), "Effect
//!   of user ID changes on capabilities": only a process whose euid is the namespace's root gets
//!   them) and the worker's `CapEff`/`CapPrm` are 0. The worker keeps its host uid for DAC (it must
//!   read the runner's private 0700 compile cache and the policy's preopens), which is why Landlock
//!   below is what confines the filesystem. The mount namespace is owned by the new user namespace,
//!   so the kernel turns every shared mount into a slave (`CL_SHARED_TO_SLAVE`): nothing the worker
//!   could mount propagates out, and without capabilities it cannot mount at all. The network
//!   namespace has only `lo`, down. No PID namespace: it would only apply to the worker's children,
//!   and the seccomp filter forbids it any (clone without `CLONE_THREAD` kills it).
//! - [`confine`] runs in the worker right after it read its job, before it compiles or loads a byte
//!   of the guest and before it starts any thread: Landlock (read/exec on the binary and the system
//!   libraries, read on the guest file, rw on the compile cache and `/tmp`, the preopens as granted;
//!   TCP bind/connect denied unless the policy grants loopback; signals and abstract unix sockets
//!   scoped), then the seccomp filters of [`compile_filters`] (two small errno filters on arguments
//!   from seccompiler, the allow-list from libseccomp's binary tree, as for the native shim),
//!   installed with TSYNC on all threads.

use std::path::{Path, PathBuf};

use super::Job;
use crate::policy::{Access, Network};
use hybox_shim::plan::LandlockStatus;
use hybox_shim::seccomp::FilterError;

/// Why the worker could not confine itself (`wasm.os_sandbox`); the run is then a setup error and
/// nothing of the guest was read.
#[derive(Debug, thiserror::Error)]
pub enum ConfineError {
    /// seccompiler refused the errno filters on arguments.
    #[error("compile the worker's seccomp filter: {0}")]
    CompileArgFilters(#[source] seccompiler::Error),
    /// A filter of [`filters_json`] is not in what seccompiler compiled.
    #[error("seccomp filter {0} missing")]
    MissingFilter(&'static str),
    /// libseccomp refused the allow-list.
    #[error("compile the worker's seccomp filter: {0}")]
    CompileAllowList(#[source] FilterError),
    /// Creating or enforcing the Landlock ruleset failed.
    #[error("landlock: {0}")]
    Landlock(#[source] landlock::RulesetError),
    /// A path's Landlock rule could not be added.
    #[error("landlock rule for {}: {source}", path.display())]
    LandlockRule {
        path: PathBuf,
        #[source]
        source: landlock::RulesetError,
    },
    /// The kernel refused a seccomp filter.
    #[error("install seccomp: {0}")]
    InstallSeccomp(#[source] seccompiler::Error),
}

/// The namespaces the worker is started in.
pub const NAMESPACES: &[&str] = &["user", "mnt", "net", "ipc", "uts"];

/// The worker's namespaces as clone flags.
pub const CLONE_FLAGS: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// In the supervisor's child, created in [`CLONE_FLAGS`]'s namespaces, before its exec: `lo` up when
/// granted, an empty bounding set, no_new_privs. Only raw syscalls (async-signal-safe); allocates
/// nothing.
pub fn in_new_namespaces(loopback: bool) -> std::io::Result<()> {
    if loopback {
        // `network: loopback` grants the guest 127.0.0.1 inside the worker's own network namespace;
        // `lo` starts down there. CAP_NET_ADMIN of the new user namespace allows this until exec.
        super::netns::loopback_up()?;
    }
    // Full capabilities in the new namespace until exec: use them to empty the bounding set, so no
    // later exec could ever regain a capability (PR_CAPBSET_DROP needs CAP_SETPCAP).
    for cap in 0..=63 {
        // SAFETY: prctl with integer arguments; EINVAL past the last capability is expected.
        let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
        if r < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
            break;
        }
    }
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Syscalls wasmtime, its WASI implementation (tokio), std and the libc (glibc or musl) use in the
/// worker, measured with `strace -f -c` over hello, file I/O, a timeout in a host call, a trap and a
/// component. Anything else kills the worker (`SECCOMP_RET_KILL_PROCESS`; the supervisor reports SIGSYS).
pub const WORKER_ALLOW: &[&str] = &[
    // I/O on the job/result pipes, stdio, the cache, preopens.
    "read",
    "write",
    "readv",
    "writev",
    "pread64",
    "pwrite64",
    "preadv",
    "pwritev",
    "preadv2",
    "pwritev2",
    "close",
    "close_range",
    "openat",
    "openat2",
    "fstat",
    "newfstatat",
    "statx",
    "lseek",
    "getdents64",
    "fcntl",
    "dup",
    "dup3",
    "mkdirat",
    "unlinkat",
    "renameat",
    "renameat2",
    "linkat",
    "symlinkat",
    "readlinkat",
    "utimensat",
    "fchmod",
    "fchmodat",
    "ftruncate",
    "fallocate",
    "fsync",
    "fdatasync",
    "fadvise64",
    "faccessat",
    "faccessat2",
    "fstatfs",
    "flock",
    "getcwd",
    // The legacy path calls Rust's std still makes (create_dir_all, remove_file, rename), and musl's
    // open(3), which calls SYS_open on x86_64 (the static build): each the same kernel path as its
    // `*at` twin above, with AT_FDCWD.
    "open",
    "mkdir",
    "rmdir",
    "unlink",
    "rename",
    "access",
    "readlink",
    "stat",
    "lstat",
    "chmod",
    // Memory: wasm linear memories, code, guard pages.
    "mmap",
    "mprotect",
    "munmap",
    "mremap",
    "madvise",
    "brk",
    "membarrier",
    // Traps are signals (SIGSEGV/SIGILL/SIGFPE handlers on an alternate stack); abort raises.
    "rt_sigaction",
    "rt_sigprocmask",
    "rt_sigreturn",
    "sigaltstack",
    "tgkill",
    "gettid",
    "getpid",
    // Threads (the guest thread, the epoch ticker, tokio's blocking pool): clone is further limited
    // to CLONE_THREAD below.
    "set_robust_list",
    "rseq",
    "set_tid_address",
    "futex",
    "sched_yield",
    "sched_getaffinity",
    "exit",
    "exit_group",
    // tokio's reactor.
    "epoll_create1",
    "epoll_ctl",
    "epoll_wait",
    "epoll_pwait",
    "epoll_pwait2",
    "eventfd2",
    "pipe2",
    "poll",
    "ppoll",
    // Clocks, randomness, limits.
    "clock_gettime",
    "clock_getres",
    "clock_nanosleep",
    "nanosleep",
    "gettimeofday",
    "getrandom",
    "getuid",
    "geteuid",
    "getgid",
    "getegid",
    "getppid",
    "uname",
    "sysinfo",
    "getrusage",
    "umask",
    "mincore",
    "prlimit64",
    "getrlimit",
    // Answered with an errno: by the allow-list itself (ENOSYS, `WORKER_ENOSYS`) or by the filters on
    // arguments before it (a KILL here would win over their errno).
    "memfd_create",
    "clone3",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "ioctl",
    "prctl",
];

/// Socket calls, allowed only when the policy grants loopback (components; the worker's network
/// namespace has no usable interface either way).
const SOCKET_ALLOW: &[&str] = &[
    "socket",
    "connect",
    "bind",
    "listen",
    "accept",
    "accept4",
    "getsockname",
    "getpeername",
    "setsockopt",
    "getsockopt",
    "sendto",
    "recvfrom",
    "sendmsg",
    "recvmsg",
    "shutdown",
];

/// ioctl requests the worker may make: non-blocking mode and close-on-exec (tokio, std), the
/// terminal queries of isatty() and the WASI stdio, bytes available.
const IOCTL_ALLOW: &[libc::Ioctl] = &[
    libc::FIONBIO,
    libc::FIOCLEX,
    libc::FIONCLEX,
    libc::TCGETS,
    libc::TIOCGWINSZ,
    libc::FIONREAD,
];

/// The errno filters on arguments as seccompiler JSON, in install order (each lets through what it
/// does not match); the allow-list after them is [`compile_filters`]'s.
pub fn filters_json() -> serde_json::Value {
    use serde_json::json;
    // Any other ioctl (TIOCSTI and friends; compared as 32-bit words, CVE-2017-5226): ENOTTY.
    let ioctl_other = json!({"syscall": "ioctl", "args": IOCTL_ALLOW.iter().map(|c| {
        // The request type is c_ulong on glibc and c_int on musl; the filter compares the low 32 bits.
        json!({"index": 1, "type": "dword", "op": "ne", "val": *c as u32})
    }).collect::<Vec<_>>()});
    // prctl: only thread names (std names the guest thread) and no_new_privs (seccompiler sets it
    // before each filter it installs; setting it only ever restricts).
    let prctl_other = json!({"syscall": "prctl", "args": [
        {"index": 0, "type": "dword", "op": "ne", "val": libc::PR_SET_NO_NEW_PRIVS},
        {"index": 0, "type": "dword", "op": "ne", "val": libc::PR_SET_NAME},
        {"index": 0, "type": "dword", "op": "ne", "val": libc::PR_GET_NAME},
        {"index": 0, "type": "dword", "op": "ne", "val": libc::PR_GET_NO_NEW_PRIVS},
    ]});
    json!({
        "1_errno": {"mismatch_action": "allow", "match_action": {"errno": libc::ENOTTY}, "filter": [ioctl_other]},
        "2_eperm": {"mismatch_action": "allow", "match_action": {"errno": libc::EPERM}, "filter": [prctl_other]},
    })
}

/// Syscalls the worker's allow-list answers with `ENOSYS`: memfd_create (not EPERM: wasmtime takes ENOSYS
/// as "not supported" and falls back to anonymous mmap, EPERM as a failure); clone3, which keeps its flags in memory where BPF cannot
/// look (glibc falls back to clone); io_uring, which performs its operations outside seccomp's view.
const WORKER_ENOSYS: &[&str] = &[
    "memfd_create",
    "clone3",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
];

/// The worker's filters for x86_64, in install order: the errno filters of [`filters_json`], then the
/// default-deny allow-list.
pub fn compile_filters(network: Network) -> Result<Vec<seccompiler::BpfProgram>, ConfineError> {
    let text = filters_json().to_string();
    let mut map = seccompiler::compile_from_json(text.as_bytes(), seccompiler::TargetArch::x86_64)
        .map_err(ConfineError::CompileArgFilters)?;
    let mut out: Vec<seccompiler::BpfProgram> = ["1_errno", "2_eperm"]
        .iter()
        .map(|n| map.remove(*n).ok_or(ConfineError::MissingFilter(n)))
        .collect::<Result<_, _>>()?;
    let mut allow: Vec<&str> = WORKER_ALLOW
        .iter()
        .copied()
        .filter(|n| !WORKER_ENOSYS.contains(n))
        .collect();
    if network == Network::Loopback {
        allow.extend(SOCKET_ALLOW);
    }
    // Threads only: CLONE_THREAD set and no CLONE_NEW* bit (a new process or namespace kills).
    let clone_thread = crate::backend::seccomp::MaskedArg0 {
        syscall: "clone",
        mask: libc::CLONE_THREAD as u64 | hybox_shim::seccomp::CLONE_NEW_MASK,
        value: libc::CLONE_THREAD as u64,
    };
    out.push(
        crate::backend::seccomp::compile_allow_list(&allow, &[clone_thread], WORKER_ENOSYS)
            .map_err(ConfineError::CompileAllowList)?,
    );
    Ok(out)
}

/// Paths the worker may read and execute: its own binary and the system's shared libraries (already
/// mapped; listed for `dlopen` of libgcc_s on a panic's unwind).
fn exec_paths() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = [
        "/lib",
        "/lib64",
        "/usr/lib",
        "/usr/lib64",
        "/etc/ld.so.cache",
    ]
    .iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect();
    // The magic link, not the path it shows: it opens the file this worker runs from even when
    // the file at that path was replaced or removed since.
    v.push(PathBuf::from("/proc/self/exe"));
    v
}

fn landlock(job: &Job) -> Result<LandlockStatus, ConfineError> {
    use landlock::{
        Access as _, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
        RulesetAttr, RulesetCreatedAttr, Scope, ABI,
    };
    let abi = ABI::V6;
    let err = ConfineError::Landlock;
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    if job.policy.network != Network::Loopback {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(err)?;
    }
    let mut created = ruleset
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(err)?
        .create()
        .map_err(err)?;
    let is_dir = |p: &Path| std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false);
    let read = |p: &Path| {
        if is_dir(p) {
            AccessFs::from_read(abi)
        } else {
            AccessFs::from_file(abi) & AccessFs::from_read(abi)
        }
    };
    let write = |p: &Path| {
        if is_dir(p) {
            AccessFs::from_all(abi)
        } else {
            AccessFs::from_file(abi)
        }
    };
    let mut rules: Vec<(PathBuf, landlock::BitFlags<AccessFs>)> = Vec::new();
    for p in exec_paths() {
        let a = read(&p);
        rules.push((p, a));
    }
    rules.push((job.artifact.clone(), read(&job.artifact)));
    if let Some(d) = &job.cache_dir {
        // Created (0700, ours) now, or the rule below could not name it.
        if super::artifact::open_private_dir(d).is_ok() {
            rules.push((d.clone(), write(d)));
        }
    }
    if let Some(t) = &job.tmp_dir {
        rules.push((t.clone(), write(t)));
    }
    for m in &job.policy.filesystem.mounts {
        let a = match m.mode {
            Access::Ro => read(&m.host),
            Access::Rw => write(&m.host),
        };
        rules.push((m.host.clone(), a));
    }
    for (p, access) in rules {
        // A path that does not exist grants nothing; the worker reports the failure where it uses it.
        let Ok(fd) = PathFd::new(&p) else { continue };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|source| ConfineError::LandlockRule {
                path: p.clone(),
                source,
            })?;
    }
    let status = created.restrict_self().map_err(err)?;
    Ok(LandlockStatus::from(status.ruleset))
}

/// In the worker, right after it read its job and before it touches guest bytes or starts a thread:
/// Landlock, then seccomp (last: after it, neither landlock_* nor seccomp(2) are allowed). Returns the
/// report's `os_sandbox` detail.
pub fn confine(job: &Job) -> Result<crate::report::details::OsSandboxDetails, ConfineError> {
    // Compiled first: it needs nothing Landlock takes away, and a failure leaves nothing half-done.
    let filters = compile_filters(job.policy.network)?;
    let landlock = landlock(job)?;
    for f in &filters {
        seccompiler::apply_filter_all_threads(f).map_err(ConfineError::InstallSeccomp)?;
    }
    Ok(crate::report::details::OsSandboxDetails {
        namespaces: NAMESPACES.iter().map(|n| n.to_string()).collect(),
        seccomp: format!(
            "{} filters: wasmtime allow-list, kill_process otherwise; memfd_create/clone3/io_uring ENOSYS",
            filters.len()
        ),
        landlock,
        capabilities: "none (bounding set empty)".into(),
        no_new_privs: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_compile() {
        for n in [Network::None, Network::Loopback] {
            let f = compile_filters(n).unwrap();
            assert_eq!(f.len(), 3);
        }
    }

    #[test]
    fn allow_list_has_no_escape_primitive() {
        let errno_answered = [
            "clone3",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
        ];
        for s in WORKER_ALLOW {
            assert!(
                !hybox_shim::seccomp::NEVER_GRANTABLE.contains(s) || errno_answered.contains(s),
                "{s}"
            );
        }
    }
}
