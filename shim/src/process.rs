//! The setup steps that change the shim's own process rather than its filesystem or network: the
//! signal mask, dumpability, ids, the cgroup namespace, rlimits and the session. The workload's
//! process inherits all of them across `fork` and `execveat`.
//!
//! Separate from `workload`, which holds what only the workload's process does (after the fork),
//! and from `mounts` and `net`, which build the sandbox's view of the world.

use hybox_shim::plan::Rlimits;

use crate::error::{Result, SetupError};
use crate::sys::{check, sigprocmask, sigset};

/// The type of setrlimit's resource argument: glibc declares its own enum type, musl an int.
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

/// Starts from an empty signal mask. The runner cloned this process with every signal blocked (so
/// that none of the runner's handlers could run in the child before its exec); the shim sets its own
/// mask later, in `init`, on top of an empty one.
pub fn clear_sigmask() -> Result<()> {
    sigprocmask(libc::SIG_SETMASK, &sigset(&[])).map_err(SetupError::ClearSigmask)
}

/// Non-dumpable until exec: nobody but real root can ptrace this process or open its
/// `/proc/1/{mem,exe,fd}` (CVE-2019-5736: overwriting the runtime through `/proc/PID/exe`). Init
/// stays non-dumpable; the workload's process inherits the flag until its `execveat` resets it.
pub fn set_non_dumpable() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) })
        .map(drop)
        .map_err(SetupError::Dumpable)
}

/// Becomes the sandbox's ids now, keeping the namespace's capabilities: the runner raised them as
/// ambient, and the uid the shim starts with is not the namespace's 0, so the switch does not clear
/// them (capabilities(7): only a change from a set containing uid 0 to one without does). The
/// sandbox's own tmpfs only accepts files owned by ids mapped in its user namespace.
pub fn become_sandbox_ids(uid: u32, gid: u32) -> Result<()> {
    // SAFETY: integer ids.
    check(unsafe { libc::setresgid(gid, gid, gid) }).map_err(SetupError::Setresgid)?;
    // SAFETY: integer ids.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map_err(SetupError::Setresuid)?;
    Ok(())
}

/// A cgroup namespace rooted where the runner put this process (the run's own leaf), so the
/// workload's `/proc/self/cgroup` shows `/` and no host cgroup path. Created here, after the
/// runner's join, not at clone time (the root would be the runner's cgroup).
pub fn unshare_cgroup_ns() -> Result<()> {
    // SAFETY: unshare with a flag constant.
    check(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) })
        .map(drop)
        .map_err(SetupError::CgroupNs)
}

/// The rlimits the workload inherits: fds, file size, no core dumps, processes, locked memory,
/// message queues, no realtime priority, stack, and CPU time as a backstop to the wall clock. Never
/// RLIMIT_AS: it counts address space reserved, not memory used (a huge untouched mmap is allowed);
/// memory is the cgroup's limit.
pub fn set_rlimits(r: &Rlimits) -> Result<()> {
    let mut limits: Vec<(&'static str, RlimitResource, u64)> = vec![
        ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE, r.nofile),
        ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE, r.fsize),
        ("RLIMIT_CORE", libc::RLIMIT_CORE, 0),
        ("RLIMIT_NPROC", libc::RLIMIT_NPROC, r.nproc),
        ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK, r.memlock),
        ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE, r.msgqueue),
        ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO, 0),
        ("RLIMIT_STACK", libc::RLIMIT_STACK, r.stack),
    ];
    if let Some(cpu) = r.cpu_secs {
        limits.push(("RLIMIT_CPU", libc::RLIMIT_CPU, cpu));
    }
    for (name, res, v) in limits {
        let lim = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: a resource constant and a pointer to a live rlimit.
        check(unsafe { libc::setrlimit(res, &lim) }).map_err(|e| SetupError::Rlimit(name, e))?;
    }
    Ok(())
}

/// A new session: no controlling terminal, so TIOCSTI (which needs one) cannot push input into a
/// terminal outside the sandbox; stdio are runner-owned pipes.
pub fn new_session() -> Result<()> {
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() })
        .map(drop)
        .map_err(SetupError::Setsid)
}

/// After [`new_session`], with `Plan::controlling_tty`: stdin (the pty made for this sandbox)
/// becomes the new session's controlling terminal. `arg 0`: never steal one that is another
/// session's (the kernel refuses, and so does this).
pub fn take_controlling_tty() -> Result<()> {
    // SAFETY: an ioctl on fd 0 with an integer argument.
    check(unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) })
        .map(drop)
        .map_err(SetupError::ControllingTty)
}
