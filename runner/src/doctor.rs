//! `hybox doctor`: what this host supports, and what each fact means for hybox.

use serde::Serialize;

/// One fact about the host.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    /// `ok`, `warn` (works with a caveat) or `fail` (a backend or limit cannot be enforced).
    pub status: Status,
    /// What was found.
    pub found: String,
    /// What it means for hybox.
    pub meaning: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Warn,
    Fail,
}

fn check(
    name: &str,
    status: Status,
    found: impl Into<String>,
    meaning: impl Into<String>,
) -> Check {
    Check {
        name: name.into(),
        status,
        found: found.into(),
        meaning: meaning.into(),
    }
}

/// Runs every check. Cheap (no sandbox is started) and side-effect free.
pub fn run(host: &crate::HostConfig) -> Vec<Check> {
    vec![
        privileges(),
        cgroups(host),
        user_namespaces(),
        seccomp(),
        landlock(),
    ]
}

fn privileges() -> Check {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if euid == 0 {
        check(
            "privileges",
            Status::Ok,
            "running as root",
            "hybox can create cgroups and map sandbox ids to an unprivileged host id",
        )
    } else {
        check(
            "privileges",
            Status::Warn,
            format!("running as uid {euid}"),
            "the envelope needs root or a delegated writable cgroup; sandbox ids map to your own uid",
        )
    }
}

fn cgroups(host: &crate::HostConfig) -> Check {
    match crate::envelope::detect(&host.cgroup_root) {
        Ok(layout) => check(
            "cgroups",
            Status::Ok,
            layout.describe(),
            "every run gets its own cgroup envelope (memory, cpu, pids)",
        ),
        Err(e) => check(
            "cgroups",
            Status::Fail,
            e.to_string(),
            "no envelope can be built: runs fail unless the policy says on_unenforceable: degrade",
        ),
    }
}

fn read_trim(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn user_namespaces() -> Check {
    let max = read_trim("/proc/sys/user/max_user_namespaces").and_then(|s| s.parse::<u64>().ok());
    let apparmor = read_trim("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    let debian = read_trim("/proc/sys/kernel/unprivileged_userns_clone");
    if max == Some(0) {
        return check(
            "user namespaces",
            Status::Fail,
            "user.max_user_namespaces = 0",
            "the native backend cannot run (hint: sysctl -w user.max_user_namespaces=15000)",
        );
    }
    if apparmor.as_deref() == Some("1") {
        return check(
            "user namespaces",
            Status::Warn,
            "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)",
            "the native backend works as root; unprivileged, mounts inside the sandbox fail (hint: an AppArmor profile for hybox, or run as root)",
        );
    }
    if debian.as_deref() == Some("0") {
        return check(
            "user namespaces",
            Status::Warn,
            "kernel.unprivileged_userns_clone = 0",
            "the native backend works only as root",
        );
    }
    check(
        "user namespaces",
        Status::Ok,
        format!(
            "available (max {})",
            max.map(|m| m.to_string()).unwrap_or_else(|| "?".into())
        ),
        "the native backend can build user, pid, mount, net, uts, ipc and cgroup namespaces",
    )
}

fn seccomp() -> Check {
    match read_trim("/proc/sys/kernel/seccomp/actions_avail") {
        Some(actions) if actions.contains("kill_process") && actions.contains("errno") => check(
            "seccomp",
            Status::Ok,
            format!("filter mode, actions: {actions}"),
            "the native backend installs its default-deny syscall filter",
        ),
        Some(actions) => check(
            "seccomp",
            Status::Fail,
            format!("actions: {actions}"),
            "the kernel lacks kill_process or errno: the native filter cannot be installed",
        ),
        None => check(
            "seccomp",
            Status::Fail,
            "no seccomp filter support",
            "the native backend cannot run",
        ),
    }
}

/// The Landlock ABI version of the running kernel, or the errno if Landlock is unavailable.
pub fn landlock_abi() -> Result<i64, std::io::Error> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr, size 0 and the VERSION flag, landlock_create_ruleset only returns the
    // ABI version (or -1 with errno); it touches no memory of ours.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(v)
    }
}

fn landlock() -> Check {
    match landlock_abi() {
        Ok(v) if v >= 6 => check(
            "landlock",
            Status::Ok,
            format!("ABI {v}"),
            "filesystem, TCP and scoping (abstract sockets, signals) rules are enforced",
        ),
        Ok(v) => check(
            "landlock",
            Status::Warn,
            format!("ABI {v}"),
            "older ABI: some rules (TCP needs 4, scoping needs 6) are not enforced; `landlock: required` policies fail unless they degrade",
        ),
        Err(e) => check(
            "landlock",
            Status::Warn,
            format!("unavailable ({e})"),
            "`landlock: required` policies fail unless they degrade; mount namespaces still confine files",
        ),
    }
}

/// The human-readable table.
pub fn render(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let tag = match c.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        s.push_str(&format!(
            "[{tag}] {:<16} {}\n       {}\n",
            c.name, c.found, c.meaning
        ));
    }
    s
}
