//! What the running kernel lets this process do, as plain facts: who we are (`euid`), whether user
//! namespaces may be created, and which seccomp filter actions exist. Nothing here decides anything;
//! `hybox doctor` says what each fact means, the backends find out the hard way (a failing
//! `clone(2)`, a refused filter) and say so in their own errors.

use std::path::Path;

/// The effective uid of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The sysctls that decide whether an unprivileged process may create a user namespace. `None`:
/// the file is absent (the knob does not exist on this kernel) or unreadable.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UserNamespaces {
    /// `user.max_user_namespaces`: 0 forbids user namespaces to everyone, root included.
    pub max: Option<u64>,
    /// `kernel.apparmor_restrict_unprivileged_userns` (Ubuntu 23.10+): `true` confines an
    /// unprivileged process's new user namespace to an AppArmor profile without capabilities, so
    /// mounts inside it fail.
    pub apparmor_restricted: Option<bool>,
    /// `kernel.unprivileged_userns_clone` (Debian's patch): `false` reserves user namespaces to root.
    pub unprivileged_clone: Option<bool>,
}

/// Reads the user-namespace sysctls of the running kernel.
pub fn user_namespaces() -> UserNamespaces {
    UserNamespaces {
        max: read_trim("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse().ok()),
        apparmor_restricted: read_flag("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
        unprivileged_clone: read_flag("/proc/sys/kernel/unprivileged_userns_clone"),
    }
}

/// The seccomp filter actions the kernel supports (`/proc/sys/kernel/seccomp/actions_avail`, e.g.
/// `kill_process kill_thread trap errno user_notif trace log allow`); `None` without seccomp filter
/// support.
pub fn seccomp_actions() -> Option<String> {
    read_trim("/proc/sys/kernel/seccomp/actions_avail")
}

fn read_trim(path: impl AsRef<Path>) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// A `0`/`1` sysctl; any other content counts as unknown.
fn read_flag(path: &str) -> Option<bool> {
    match read_trim(path)?.as_str() {
        "0" => Some(false),
        "1" => Some(true),
        _ => None,
    }
}

/// How long this thread has been runnable since it was forked: its CPU time
/// (`CLOCK_THREAD_CPUTIME_ID`, exact to the call) plus the time it waited for a CPU (the second field
/// of `/proc/thread-self/schedstat`, the scheduler's nanosecond accounting, up to date as of the
/// thread's last switch onto a CPU; needs `CONFIG_SCHED_INFO`, which distribution kernels have).
/// Read first thing in `main`, it estimates what came before `main`: the fork's child side, the
/// exec, the dynamic loader and the runtime's start. Time blocked on I/O (an executable paged in
/// from disk) is not in it, so a cold start is under-counted; `/proc/PID/stat`'s start time is in
/// clock ticks (10 ms), too coarse for this. `None` if either figure cannot be read.
pub fn runnable_since_fork() -> Option<std::time::Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a live, writable timespec; the clock id is a constant the kernel knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return None;
    }
    let cpu = std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32);
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    Some(cpu + schedstat_wait(&s)?)
}

/// The second field of a schedstat line: nanoseconds spent waiting on a runqueue. (The first, the
/// CPU time, is only brought up to date at the scheduler's tick or a switch, so it lags a running
/// thread by up to a tick; the CPU-time clock does not.)
fn schedstat_wait(s: &str) -> Option<std::time::Duration> {
    let mut f = s.split_whitespace().map(str::parse::<u64>);
    let _run = f.next()?.ok()?;
    let wait = f.next()?.ok()?;
    Some(std::time::Duration::from_nanos(wait))
}

#[cfg(test)]
mod schedstat_tests {
    #[test]
    fn schedstat_wait_is_the_second_field() {
        let d = super::schedstat_wait("175989 4157169 2\n").unwrap();
        assert_eq!(d.as_nanos(), 4_157_169);
        assert!(super::schedstat_wait("").is_none());
        assert!(super::schedstat_wait("12 x 1").is_none());
        // This process has run, so its own figure is there and not zero.
        assert!(super::runnable_since_fork().unwrap().as_nanos() > 0);
    }
}
