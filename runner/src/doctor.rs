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
    let layout = crate::envelope::detect(&host.cgroup_root);
    vec![
        privileges(),
        cgroups(&layout),
        cgroup_entry(&layout),
        user_namespaces(),
        seccomp(),
        landlock(),
        shim(host),
    ]
}

/// The native sandbox's init: the static shim embedded in this binary (sealed in a memory file when
/// first used), a dynamically linked one (built without the musl target), or a file the host names.
fn shim(host: &crate::HostConfig) -> Check {
    if let Some(p) = &host.shim_path {
        return check(
            "shim",
            Status::Warn,
            format!("the native backend runs the shim file {}", p.display()),
            "a shim on disk: whoever can write that file controls every native sandbox's PID 1",
        );
    }
    let target = crate::backend::native::shim::SHIM_TARGET;
    match crate::backend::native::shim::embedded() {
        Ok(_) if target.ends_with("-musl") => check(
            "shim",
            Status::Ok,
            format!("embedded, statically linked ({target}), executed from a sealed memory file"),
            "no shim on disk to replace or write to; no dynamic loader on the sandbox's start path",
        ),
        Ok(_) => check(
            "shim",
            Status::Warn,
            format!("embedded, dynamically linked ({target})"),
            "hybox was built without the x86_64-unknown-linux-musl target: every native sandbox pays \
             the dynamic loader (~0.4 ms); rustup target add x86_64-unknown-linux-musl and rebuild",
        ),
        Err(e) => check(
            "shim",
            Status::Fail,
            e.to_string(),
            "the native backend cannot start a sandbox",
        ),
    }
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

type Detected = Result<crate::envelope::Layout, crate::envelope::EnvelopeError>;

fn cgroups(layout: &Detected) -> Check {
    match layout {
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

/// How a run's process enters its envelope, and what that costs on this host.
fn cgroup_entry(layout: &Detected) -> Check {
    let Ok(layout) = layout else {
        return check(
            "cgroup entry",
            Status::Warn,
            "no usable cgroup layout",
            "see the cgroups check",
        );
    };
    if layout.version() == "v2" {
        return check(
            "cgroup entry",
            Status::Ok,
            "cgroup v2: the native shim is created inside its envelope (clone3 CLONE_INTO_CGROUP)",
            "no migration on the native start path",
        );
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let favoured = favordynmods(&mounts);
    if favoured {
        check(
            "cgroup entry",
            Status::Ok,
            "cgroup v1: processes are moved into their envelope; a cgroup hierarchy is mounted with favordynmods",
            "a move does not wait for an RCU grace period",
        )
    } else {
        check(
            "cgroup entry",
            Status::Warn,
            "cgroup v1: processes are moved into their envelope; no cgroup hierarchy is mounted with favordynmods",
            "a move can wait for an RCU grace period (the kernel's cgroup_threadgroup_rwsem), milliseconds \
             for a lone run; remounting any cgroup hierarchy with -o favordynmods (Linux >= 6.0; \
             CONFIG_CGROUP_FAVOR_DYNMODS makes it the default) removes the wait and makes fork and exit \
             slightly dearer: a host-wide choice hybox leaves to you",
        )
    }
}

/// Whether a cgroup or cgroup2 mount in `mounts` (the format of /proc/self/mounts) has the
/// `favordynmods` option (it applies to the kernel's one threadgroup lock, so one mount is enough).
fn favordynmods(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && (f[2] == "cgroup" || f[2] == "cgroup2")
            && f[3].split(',').any(|o| o == "favordynmods")
    })
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

pub use crate::host::landlock_abi;

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

#[cfg(test)]
mod tests {
    #[test]
    fn favordynmods_is_found_on_any_cgroup_mount_only() {
        let plain = "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                     cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert!(!super::favordynmods(plain));
        let v2 = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime,favordynmods 0 0\n";
        assert!(super::favordynmods(v2));
        let other = "tmpfs /favordynmods tmpfs rw,favordynmods 0 0\n";
        assert!(!super::favordynmods(other));
    }
}
