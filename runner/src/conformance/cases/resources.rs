//! Resources and lifecycle: bombs, spins, sleeps, rlimits, survivors.

use std::time::Duration;

use serde_json::json;

use super::{attack, case, policy, s, Case, Control, Expect, Guest, NATIVE, WASM_BOTH};
use crate::conformance::fixtures::Fixtures;

/// Resources and lifecycle: bombs, spins, sleeps, rlimits, survivors.
pub(super) fn cases(fx: &Fixtures, out: &mut Vec<Case>) {
    for backends in [NATIVE, WASM_BOTH] {
        let mut c = case(
            "memory_bomb",
            "resources: memory bomb (reported as oom, not signal 9)",
            backends,
            s(&["100"]),
            Expect::Oom(if backends == NATIVE {
                "cgroup memory limit"
            } else {
                "wasm memory limit"
            }),
            Control::Succeeds(s(&["100"])),
        );
        c.guest = Guest::Example("alloc");
        c.policy = policy(json!({"resources": {"memory": "64M"}}));
        out.push(c);
        let mut c = case(
            "cpu_spin",
            "resources: CPU spin (throttled, then timeout)",
            backends,
            attack(&["spin"]),
            Expect::Timeout,
            Control::RunsPast(attack(&["spin"]), Duration::from_millis(500)),
        );
        c.policy = policy(json!({"resources": {"timeout": "1s", "cpus": 0.5}}));
        out.push(c);
        let mut c = case(
            "infinite_sleep",
            "resources: infinite sleep (a blocking host call)",
            backends,
            attack(&["sleep"]),
            Expect::Timeout,
            Control::RunsPast(attack(&["sleep"]), Duration::from_millis(500)),
        );
        c.policy = policy(json!({"resources": {"timeout": "1s"}}));
        out.push(c);
    }
    for name in ["forkbomb", "threadbomb"] {
        let mut c = case(
            name,
            "resources: fork and thread bombs (pids limit, reported)",
            NATIVE,
            attack(&[name, "64"]),
            Expect::PidsLimit,
            Control::Succeeds(attack(&[name, "64"])),
        );
        c.policy = policy(json!({"resources": {"pids": 16}}));
        out.push(c);
    }

    out.push(case(
        "fd_exhaustion",
        "resources: fd exhaustion (RLIMIT_NOFILE)",
        NATIVE,
        attack(&["fd_exhaust", "512"]),
        Expect::Errno(&["EMFILE"]),
        Control::Succeeds(attack(&["fd_exhaust", "512"])),
    ));
    out.push(case(
        "mlock",
        "resources: mlock (RLIMIT_MEMLOCK)",
        NATIVE,
        attack(&["mlock", "1024"]),
        Expect::Errno(&["ENOMEM", "EPERM", "EAGAIN"]),
        Control::Succeeds(attack(&["mlock", "1024"])),
    ));
    let fill = fx.dir.path().join("probe-fill:8").display().to_string();
    let mut c = case(
        "tmpfs_fill",
        "resources: tmpfs fill (the sandbox's /tmp is sized)",
        NATIVE,
        attack(&["fill", "/tmp/probe-fill:8"]),
        Expect::Errno(&["ENOSPC"]),
        Control::Succeeds(attack(&["fill", &fill])),
    );
    c.policy = policy(json!({"filesystem": {"tmp": {"size": "1M"}}}));
    out.push(c);
    out.push(case(
        "cgroup_move",
        "lifecycle: writing its own pid into another cgroup",
        NATIVE,
        attack(&["cgroup_move", "/sys/fs/cgroup/cgroup.procs"]),
        Expect::Errno(&["ENOENT", "EACCES", "EROFS", "EPERM"]),
        Control::None("bare, this would move the probe into the host's root cgroup"),
    ));
    out.push(case(
        "daemon",
        "lifecycle: double-fork daemon outliving the run",
        NATIVE,
        attack(&["daemon"]),
        Expect::CleanExit,
        Control::None("bare, the daemon would outlive the probe on the host, which is the point"),
    ));
    let mut c = case(
        "sigstop_self",
        "lifecycle: SIGSTOP self before the timeout",
        NATIVE,
        attack(&["sigstop"]),
        Expect::Timeout,
        Control::RunsPast(attack(&["sigstop"]), Duration::from_millis(500)),
    );
    c.policy = policy(json!({"resources": {"timeout": "1s"}}));
    out.push(c);
}
