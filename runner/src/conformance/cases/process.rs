//! Processes: signals to host pids, and writes to the shim's or the workload's binary.

use super::{attack, case, Case, Control, Expect, NATIVE};

/// Signals to host processes, host binaries.
pub(super) fn cases(out: &mut Vec<Case>) {
    out.push(case(
        "kill_any",
        "privilege: kill(-1) / signals to host pids",
        NATIVE,
        attack(&["kill", "-1"]),
        Expect::Errno(&["ESRCH"]),
        Control::Succeeds(attack(&["kill", "-1"])),
    ));
    let me = std::process::id().to_string();
    out.push(case(
        "kill_host_pid",
        "privilege: signal a host pid (hybox's own)",
        NATIVE,
        attack(&["kill", &me]),
        Expect::Errno(&["ESRCH"]),
        Control::Succeeds(attack(&["kill", &me])),
    ));
    out.push(case(
        "write_shim_exe",
        "privilege: overwrite the shim through /proc/1/exe (CVE-2019-5736)",
        NATIVE,
        attack(&["write_exe", "/proc/1/exe"]),
        Expect::Errno(&["EACCES"]),
        Control::None("bare, this would open the host init's binary for writing"),
    ));
    out.push(case(
        "write_own_exe",
        "privilege: overwrite the workload's binary through /proc/self/exe",
        NATIVE,
        attack(&["write_exe", "/proc/self/exe"]),
        Expect::Refused,
        Control::None("bare, this would open the probe binary for writing"),
    ));
    out.push(case(
        "sysrq",
        "filesystem: write /proc/sysrq-trigger",
        NATIVE,
        attack(&["sysrq"]),
        Expect::Refused,
        Control::None("bare, this would trigger the host's sysrq"),
    ));
}
