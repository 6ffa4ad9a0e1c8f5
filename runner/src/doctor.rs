//! `hybox doctor`: what this host supports, and what each fact means for hybox. The facts come from
//! [`crate::host`] (where the backends and the envelope read them too); this module only judges and
//! words them.

use serde::Serialize;

use crate::host::{cgroup, kernel, landlock_abi};

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
    let layout = cgroup::detect(&host.cgroup_root);
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
    let euid = kernel::euid();
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
            format!(
                "{}; sandbox ids map to your own uid",
                crate::envelope::NO_CGROUP_HINT.trim_end_matches('.')
            ),
        )
    }
}

type Detected = Result<cgroup::Layout, cgroup::LayoutError>;

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
    if cgroup::favordynmods() {
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
             slightly dearer: a host-wide choice hybox leaves to you (`hybox doctor --fix favordynmods \
             --dry-run` shows the remount; on Linux >= 6.18 a mount that had it once keeps its effect \
             until reboot though the option may no longer show, and `phases.join_us` in a run's \
             report tells)",
        )
    }
}

fn user_namespaces() -> Check {
    let kernel::UserNamespaces {
        max,
        apparmor_restricted,
        unprivileged_clone,
    } = kernel::user_namespaces();
    if max == Some(0) {
        return check(
            "user namespaces",
            Status::Fail,
            "user.max_user_namespaces = 0",
            "the native backend cannot run (hint: sysctl -w user.max_user_namespaces=15000)",
        );
    }
    if apparmor_restricted == Some(true) {
        return check(
            "user namespaces",
            Status::Warn,
            "AppArmor restricts unprivileged user namespaces (kernel.apparmor_restrict_unprivileged_userns = 1)",
            "the native backend works as root; unprivileged, mounts inside the sandbox fail (hint: an AppArmor profile for hybox, or run as root)",
        );
    }
    if unprivileged_clone == Some(false) {
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
    match kernel::seccomp_actions() {
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
