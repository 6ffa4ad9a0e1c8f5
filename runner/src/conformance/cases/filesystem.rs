//! The filesystem: host secrets, writes outside the grants, escapes from a grant, /proc and cgroupfs.

use std::path::Path;

use serde_json::json;

use super::{attack, case, policy, Case, Control, Expect, HostCheck, NATIVE, WASM, WASM_BOTH};
use crate::conformance::fixtures::Fixtures;

/// Filesystem: host secrets, writes outside the grants, escapes from a grant, /proc and cgroupfs.
pub(super) fn cases(fx: &Fixtures, out: &mut Vec<Case>) {
    let secret = fx.secret.display().to_string();
    for backends in [NATIVE, WASM_BOTH] {
        out.push(case(
            "read_host_secret",
            "filesystem: read host files outside the mounts",
            backends,
            attack(&["read", &secret]),
            Expect::Errno(&["ENOENT"]),
            Control::Succeeds(attack(&["read", &secret])),
        ));
        out.push(case(
            "read_etc_shadow",
            "filesystem: read /etc/shadow",
            backends,
            attack(&["read", "/etc/shadow"]),
            Expect::Refused,
            Control::Succeeds(attack(&["read", "/etc/shadow"])),
        ));
    }
    let grant = json!({"filesystem": {"mounts": [{"host": fx.ro, "guest": "/data"}]}});
    let landed_ro = fx.ro.join("probe-write");
    let landed_host = fx.dir.path().join("probe-write");
    for backends in [NATIVE, WASM_BOTH] {
        let mut c = case(
            "write_ro_grant",
            "filesystem: write to a read-only grant",
            backends,
            attack(&["write", "/data/probe-write"]),
            Expect::Refused,
            Control::Succeeds(attack(&["write", &landed_ro.display().to_string()])),
        );
        c.policy = policy(grant.clone());
        c.host_check = Some(HostCheck::FileAbsent(landed_ro.clone()));
        out.push(c);
        let mut c = case(
            "write_host_path",
            "filesystem: write a host path outside the grants",
            backends,
            attack(&["write", &landed_host.display().to_string()]),
            Expect::Refused,
            Control::Succeeds(attack(&["write", &landed_host.display().to_string()])),
        );
        c.host_check = Some(HostCheck::FileAbsent(landed_host.clone()));
        out.push(c);
    }

    let host_dotdot = fx.ro.join("../secret.txt").display().to_string();
    let host_link = fx.ro.join("link").display().to_string();
    for backends in [NATIVE, WASM] {
        let mut c = case(
            "grant_dotdot",
            "filesystem: `..` out of a grant / preopen",
            backends,
            attack(&["read", "/data/../secret.txt"]),
            Expect::Errno(&["ENOENT", "ENOTCAPABLE", "EPERM", "EACCES"]),
            Control::Succeeds(attack(&["read", &host_dotdot])),
        );
        c.policy = policy(grant.clone());
        out.push(c);
        let mut c = case(
            "grant_symlink",
            "filesystem: a symlink inside a grant aimed at a host path",
            backends,
            attack(&["read", "/data/link"]),
            Expect::Errno(&["ENOENT", "ENOTCAPABLE", "EPERM", "EACCES"]),
            Control::Succeeds(attack(&["read", &host_link])),
        );
        c.policy = policy(grant.clone());
        out.push(c);
    }
    out.push(case(
        "read_proc_keys",
        "filesystem: read /proc/keys",
        NATIVE,
        attack(&["read", "/proc/keys"]),
        Expect::ReadsNothing,
        Control::Succeeds(attack(&["read", "/proc/keys"])),
    ));
    let mut c = case(
        "read_proc_kcore",
        "filesystem: read /proc/kcore",
        NATIVE,
        attack(&["read", "/proc/kcore"]),
        Expect::ReadsNothing,
        Control::None("reading the host's kernel memory image is not a safe control"),
    );
    if !Path::new("/proc/kcore").exists() {
        c.unsupported = Some(
            "this kernel has no /proc/kcore (CONFIG_PROC_KCORE is off): nothing to mask".into(),
        );
    }
    out.push(c);
    out.push(case(
        "write_proc_sys",
        "filesystem: write /proc/sys",
        NATIVE,
        attack(&["write", "/proc/sys/kernel/hostname"]),
        Expect::Errno(&["EROFS", "EACCES", "EPERM"]),
        Control::None("bare, this would rename the host"),
    ));
    out.push(case(
        "release_agent",
        "filesystem: cgroup release_agent",
        NATIVE,
        attack(&["write", "/sys/fs/cgroup/release_agent"]),
        Expect::Errno(&["ENOENT", "EROFS", "EACCES"]),
        Control::None("bare, this would set the host cgroup's release agent"),
    ));
}
