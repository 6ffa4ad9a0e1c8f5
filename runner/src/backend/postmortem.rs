//! How a sandbox process that ended without saying why is explained, the same way for both
//! backends: the syscall a seccomp filter killed it for (from the kernel's audit record), the name
//! of the signal that ended it, and whether the cgroup OOM killer did it (from the envelope's
//! counters).

use std::io;

use crate::policy::Policy;
use crate::report::{Outcome, Usage};
use crate::units::Size;

/// The syscall that `SECCOMP_RET_KILL_PROCESS` killed `pid` for, from the kernel's audit record
/// (`type=1326 ... pid=P ... sig=31 ... syscall=N`) in `/dev/kmsg`. A parent's wait status carries only
/// SIGSYS, and `/proc/PID/syscall` is gone once the process is dead; the audit record is the one place
/// the number survives. It needs `kill_process` in `/proc/sys/kernel/seccomp/actions_logged` (the
/// default) and read access to `/dev/kmsg` (root); printk rate limiting can drop it. `None` then.
pub fn seccomp_syscall_from_kmsg(pid: i32) -> Option<i64> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .ok()?;
    let needle = format!(" pid={pid} ");
    let mut found = None;
    let mut buf = vec![0u8; 8192];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                let rec = String::from_utf8_lossy(&buf[..n]);
                if rec.contains("type=1326") && rec.contains(&needle) && rec.contains(" sig=31 ") {
                    found = rec
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix("syscall="))
                        .and_then(|n| n.parse().ok());
                }
            }
            // EPIPE: a record was overwritten while we read; go on with the next one.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
    found
}

/// The name of syscall `nr` (x86_64), or `syscall N` for a number hybox has no name for.
pub fn syscall_name(nr: i64) -> String {
    hybox_shim::seccomp::syscall_name(nr)
        .map(str::to_string)
        .unwrap_or_else(|| format!("syscall {nr}"))
}

/// The name of the syscall a seccomp filter killed `pid` for, looking in the kernel log up to
/// `attempts` times 10 ms apart: without auditd the record goes out through kauditd a moment after
/// the kill. `None` when the record is not (or not yet) there.
pub fn seccomp_killed_syscall(pid: i32, attempts: u32) -> Option<String> {
    for attempt in 0..attempts {
        if let Some(nr) = seccomp_syscall_from_kmsg(pid) {
            return Some(syscall_name(nr));
        }
        if attempt + 1 < attempts {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
    None
}

/// `SIGSEGV` for 11, `signal N` for a number that is no signal.
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {sig}"))
}

/// The outcome of a process that `sig` ended.
pub fn signaled(sig: i32) -> Outcome {
    Outcome::Signaled {
        signal: sig,
        name: signal_name(sig),
    }
}

/// The outcome of a run the cgroup OOM killer ended: the policy's memory limit and how many kills
/// the envelope counted.
pub fn cgroup_oom(memory: Size, oom_kills: u64) -> Outcome {
    Outcome::Oom {
        detail: format!("cgroup memory limit {memory} (OOM kills: {oom_kills})"),
    }
}

/// Whether a process that `signal` ended (`None`: it exited) was killed by the cgroup OOM killer:
/// a SIGKILL hybox did not send while the envelope counted `new_oom_kills` OOM kills.
pub fn oom_killed(signal: Option<i32>, new_oom_kills: u64, memory: Size) -> Option<Outcome> {
    (signal == Some(libc::SIGKILL) && new_oom_kills > 0).then(|| cgroup_oom(memory, new_oom_kills))
}

/// Which limit fired, from what the envelope saw: a SIGKILL the backend did not send, with an OOM kill
/// counted in the cgroup, is the memory limit; a failure while `pids.max` refused forks is the pids
/// limit. The backend's own attribution (timeout, wasm memory limit, fuel, seccomp) is kept as is.
pub fn attribute(outcome: Outcome, usage: &Usage, policy: &Policy) -> Outcome {
    let oom = || cgroup_oom(policy.resources.memory, usage.oom_kills);
    match outcome {
        Outcome::Signaled { signal, .. } if signal == libc::SIGKILL && usage.oom_kills > 0 => oom(),
        Outcome::Exited { code } if code != 0 && usage.oom_kills > 0 => oom(),
        Outcome::Exited { code } if code != 0 && usage.pids_limit_hits > 0 => Outcome::PidsLimit,
        Outcome::Signaled { .. } if usage.pids_limit_hits > 0 => Outcome::PidsLimit,
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(1000), "signal 1000");
        assert_eq!(syscall_name(1_000_000), "syscall 1000000");
    }

    #[test]
    fn a_sigkill_with_an_oom_kill_is_the_memory_limit() {
        let memory: Size = "64M".parse().unwrap();
        let detail = |o: Option<Outcome>| match o {
            Some(Outcome::Oom { detail }) => detail,
            o => panic!("{o:?}"),
        };
        assert_eq!(
            detail(oom_killed(Some(libc::SIGKILL), 1, memory)),
            format!("cgroup memory limit {memory} (OOM kills: 1)")
        );
        assert_eq!(oom_killed(Some(libc::SIGKILL), 0, memory), None);
        assert_eq!(oom_killed(Some(libc::SIGSEGV), 1, memory), None);
        assert_eq!(oom_killed(None, 1, memory), None);
    }
}
