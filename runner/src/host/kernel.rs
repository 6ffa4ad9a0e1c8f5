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
