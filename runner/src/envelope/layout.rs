//! Which cgroup hierarchy the host has, found under a root path (never assumed).
//!
//! - v2 (unified): `<root>/cgroup.controllers` exists.
//! - v1: controller directories `<root>/<name>` (possibly co-mounted, `cpu,cpuacct`) holding
//!   `cgroup.procs`.
//! - hybrid: v1 controllers plus a v2 mount at `<root>/unified`; hybox uses the v1 controllers, as the
//!   v2 mount of such hosts has no controllers to give (they are all bound to v1).
//!
//! On the real host, the v1 directories are cross-checked against `/proc/self/mountinfo` as parsed by
//! cgroups-rs: a directory counts only if it is a cgroup mount carrying that controller. A root with no
//! cgroup mounts under it (a fake tree in a tempdir) is probed by its files alone.

use std::path::{Path, PathBuf};

use super::fsio::CgroupFs;
use super::EnvelopeError;

/// The v1 controller directories hybox uses (each the mount point of that controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Controllers {
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    /// Optional and unused: the kill seals the envelope through `pids.max` instead (see `v1.rs`).
    pub freezer: Option<PathBuf>,
}

/// The cgroup layout under a root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Legacy hierarchy: one mount per controller (or co-mounted group).
    V1 {
        root: PathBuf,
        controllers: V1Controllers,
    },
    /// Unified hierarchy; `controllers` is the root's `cgroup.controllers`.
    V2 {
        root: PathBuf,
        controllers: Vec<String>,
    },
    /// v1 controllers plus a v2 mount (`unified`) whose controllers are listed; hybox uses v1.
    Hybrid {
        root: PathBuf,
        controllers: V1Controllers,
        unified: PathBuf,
        unified_controllers: Vec<String>,
    },
}

/// The v1 controllers hybox needs, by mount option name.
const V1_NEEDED: [&str; 4] = ["memory", "cpu", "cpuacct", "pids"];

impl Layout {
    /// One paragraph for `hybox doctor`: the version in use and which controllers are usable.
    pub fn describe(&self) -> String {
        let v1 = |c: &V1Controllers| {
            let show = |name: &str, p: &Option<PathBuf>| match p {
                Some(p) => format!("{name} at {}", p.display()),
                None => format!("{name} MISSING"),
            };
            [
                show("memory", &c.memory),
                show("cpu", &c.cpu),
                show("cpuacct", &c.cpuacct),
                show("pids", &c.pids),
                match &c.freezer {
                    Some(p) => format!(
                        "freezer at {} (not needed: the kill seals through pids.max)",
                        p.display()
                    ),
                    None => "freezer absent (not needed: the kill seals through pids.max)".into(),
                },
            ]
            .join(", ")
        };
        let usable = if self.missing().is_empty() {
            "usable".to_string()
        } else {
            format!("NOT usable, missing: {}", self.missing().join(", "))
        };
        match self {
            Layout::V1 { root, controllers } => {
                format!("cgroup v1 at {}: {}; {usable}", root.display(), v1(controllers))
            }
            Layout::V2 { root, controllers } => {
                format!("cgroup v2 at {} (controllers: {}); {usable}", root.display(), list(controllers))
            }
            Layout::Hybrid { root, controllers, unified, unified_controllers } => format!(
                "cgroup v1 (hybrid) at {}: using the v1 controllers: {}; the v2 mount at {} is not used \
                 (controllers: {}); {usable}",
                root.display(),
                v1(controllers),
                unified.display(),
                list(unified_controllers)
            ),
        }
    }

    /// The version string of reports: `v1`, `v1 (hybrid)` or `v2`.
    pub fn version(&self) -> &'static str {
        match self {
            Layout::V1 { .. } => "v1",
            Layout::V2 { .. } => "v2",
            Layout::Hybrid { .. } => "v1 (hybrid)",
        }
    }

    /// Controllers hybox needs that this layout lacks (empty: usable).
    pub fn missing(&self) -> Vec<&'static str> {
        match self {
            Layout::V1 { controllers: c, .. } | Layout::Hybrid { controllers: c, .. } => {
                let have = [&c.memory, &c.cpu, &c.cpuacct, &c.pids];
                V1_NEEDED
                    .iter()
                    .zip(have)
                    .filter(|(_, p)| p.is_none())
                    .map(|(n, _)| *n)
                    .collect()
            }
            Layout::V2 { controllers, .. } => ["memory", "cpu", "pids"]
                .into_iter()
                .filter(|n| !controllers.iter().any(|c| c.as_str() == *n))
                .collect(),
        }
    }
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(" ")
    }
}

/// Finds the layout under `root` using `fs` for the probing.
pub(crate) fn detect_with(fs: &dyn CgroupFs, root: &Path) -> Result<Layout, EnvelopeError> {
    if !fs.exists(root) {
        return Err(EnvelopeError::Unavailable {
            what: format!("cgroup root {}", root.display()),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
    }
    let controllers_file = root.join("cgroup.controllers");
    if fs.exists(&controllers_file) {
        let text = fs
            .read(&controllers_file)
            .map_err(|e| EnvelopeError::io("read", &controllers_file, e))?;
        return Ok(Layout::V2 {
            root: root.to_path_buf(),
            controllers: words(&text),
        });
    }
    let v1 = v1_controllers(fs, root)?;
    if [&v1.memory, &v1.cpu, &v1.cpuacct, &v1.pids, &v1.freezer]
        .iter()
        .all(|p| p.is_none())
    {
        return Err(EnvelopeError::Unavailable {
            what: format!("a cgroup hierarchy under {} (neither cgroup.controllers nor v1 controller directories)", root.display()),
            source: std::io::Error::from_raw_os_error(libc::ENOENT),
        });
    }
    let unified = root.join("unified");
    let unified_file = unified.join("cgroup.controllers");
    if fs.exists(&unified_file) {
        let text = fs
            .read(&unified_file)
            .map_err(|e| EnvelopeError::io("read", &unified_file, e))?;
        return Ok(Layout::Hybrid {
            root: root.to_path_buf(),
            controllers: v1,
            unified,
            unified_controllers: words(&text),
        });
    }
    Ok(Layout::V1 {
        root: root.to_path_buf(),
        controllers: v1,
    })
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Finds each v1 controller's directory under `root`: a directory whose name (split on `,` for
/// co-mounts such as `cpu,cpuacct`) names the controller and that holds `cgroup.procs`. Symlinks
/// (`cpu -> cpu,cpuacct`) are resolved so co-mounted controllers share one path.
fn v1_controllers(fs: &dyn CgroupFs, root: &Path) -> Result<V1Controllers, EnvelopeError> {
    let names = fs
        .list_dirs(root)
        .map_err(|e| EnvelopeError::io("list", root, e))?;
    // Mount table as parsed by cgroups-rs: the v1 cgroup mounts under this root, if any (none for a
    // fake tree).
    let root_canon = std::fs::canonicalize(root).unwrap_or_else(|_| root.to_path_buf());
    let mounts: Vec<_> = cgroups_rs::fs::hierarchies::mountinfo_self()
        .into_iter()
        .filter(|m| m.fs_type.0 == "cgroup" && m.mount_point.parent() == Some(root_canon.as_path()))
        .collect();
    let find = |ctl: &str| -> Option<PathBuf> {
        if !mounts.is_empty() {
            // Real host: the mount carrying the controller is authoritative.
            return mounts
                .iter()
                .find(|m| m.super_opts.iter().any(|o| o == ctl))
                .and_then(|m| Some(root.join(m.mount_point.file_name()?)));
        }
        let name = names
            .iter()
            .find(|n| n.split(',').any(|part| part == ctl))?;
        let dir = root.join(name);
        fs.exists(&dir.join("cgroup.procs")).then_some(dir)
    };
    Ok(V1Controllers {
        memory: find("memory"),
        cpu: find("cpu"),
        cpuacct: find("cpuacct"),
        pids: find("pids"),
        freezer: find("freezer"),
    })
}
