//! The host's cgroups: which hierarchy it has under a root path ([`detect`], never assumed), and how
//! the cgroup filesystems are mounted ([`favordynmods`]). The envelope builds on the layout, `hybox
//! doctor` describes it; both read it from here.
//!
//! - v2 (unified): `<root>/cgroup.controllers` exists.
//! - v1: controller directories `<root>/<name>` (possibly co-mounted, `cpu,cpuacct`) holding
//!   `cgroup.procs`.
//! - hybrid: v1 controllers plus a v2 mount at `<root>/unified`; hybox uses the v1 controllers, as the
//!   v2 mount of such hosts has no controllers to give (they are all bound to v1).
//!
//! On the real host, the v1 directories are cross-checked against `/proc/self/mountinfo` as parsed by
//! cgroups-rs: a directory counts only if it is a cgroup mount carrying that controller. A root with no
//! cgroup mounts under it (a fake tree in a tempdir, as the envelope's unit tests build) is probed by
//! its files alone. Detection only reads, with plain `std::fs` calls: a fake tree is a real directory
//! tree, so it needs no fake filesystem.

use std::io;
use std::path::{Path, PathBuf};

/// Why no layout was found under a root. Every variant names the path.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    /// The root itself cannot be found (no cgroup filesystem mounted there).
    #[error("no usable cgroup: cgroup root {}: {source}", root.display())]
    NoRoot {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The root holds neither v2's `cgroup.controllers` nor a v1 controller directory.
    #[error("no usable cgroup: a cgroup hierarchy under {} (neither cgroup.controllers nor v1 controller directories): {source}", root.display())]
    NoHierarchy {
        root: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading a file or listing a directory of the hierarchy failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

impl LayoutError {
    /// Whether this host (or this user) has no cgroup hybox may use: no root, no hierarchy, or no
    /// permission to read it (as opposed to an I/O failure of a hierarchy that is there).
    pub fn is_unavailable(&self) -> bool {
        match self {
            LayoutError::NoRoot { .. } | LayoutError::NoHierarchy { .. } => true,
            LayoutError::Io { source, .. } => matches!(
                source.raw_os_error(),
                Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
            ),
        }
    }
}

/// The v1 controller directories hybox uses (each the mount point of that controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V1Controllers {
    pub memory: Option<PathBuf>,
    pub cpu: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    /// Optional and unused: the envelope's kill seals it through `pids.max` instead (see
    /// `envelope/v1.rs`).
    pub freezer: Option<PathBuf>,
    /// Optional: used only by envelopes whose policy sets disk I/O throttles (`resources.io`).
    pub blkio: Option<PathBuf>,
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

/// Finds the cgroup layout under `root` (normally `/sys/fs/cgroup`, `HostConfig.cgroup_root`).
pub fn detect(root: &Path) -> Result<Layout, LayoutError> {
    if let Err(source) = std::fs::metadata(root) {
        return Err(LayoutError::NoRoot {
            root: root.to_path_buf(),
            source,
        });
    }
    let controllers_file = root.join("cgroup.controllers");
    if controllers_file.exists() {
        return Ok(Layout::V2 {
            root: root.to_path_buf(),
            controllers: words(&read(&controllers_file)?),
        });
    }
    let v1 = v1_controllers(root)?;
    if [&v1.memory, &v1.cpu, &v1.cpuacct, &v1.pids, &v1.freezer]
        .iter()
        .all(|p| p.is_none())
    {
        return Err(LayoutError::NoHierarchy {
            root: root.to_path_buf(),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        });
    }
    let unified = root.join("unified");
    let unified_file = unified.join("cgroup.controllers");
    if unified_file.exists() {
        return Ok(Layout::Hybrid {
            root: root.to_path_buf(),
            controllers: v1,
            unified,
            unified_controllers: words(&read(&unified_file)?),
        });
    }
    Ok(Layout::V1 {
        root: root.to_path_buf(),
        controllers: v1,
    })
}

fn read(path: &Path) -> Result<String, LayoutError> {
    std::fs::read_to_string(path).map_err(|source| LayoutError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })
}

/// The names of the sub-directories of `dir`, sorted; a symlink (`cpu -> cpu,cpuacct`) is not one.
fn list_dirs(dir: &Path) -> Result<Vec<String>, LayoutError> {
    let io = |source| LayoutError::Io {
        op: "list",
        path: dir.to_path_buf(),
        source,
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

fn words(s: &str) -> Vec<String> {
    s.split_whitespace().map(String::from).collect()
}

/// Finds each v1 controller's directory under `root`: a directory whose name (split on `,` for
/// co-mounts such as `cpu,cpuacct`) names the controller and that holds `cgroup.procs`. Symlinks
/// (`cpu -> cpu,cpuacct`) are resolved so co-mounted controllers share one path.
fn v1_controllers(root: &Path) -> Result<V1Controllers, LayoutError> {
    let names = list_dirs(root)?;
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
        dir.join("cgroup.procs").exists().then_some(dir)
    };
    Ok(V1Controllers {
        memory: find("memory"),
        cpu: find("cpu"),
        cpuacct: find("cpuacct"),
        pids: find("pids"),
        freezer: find("freezer"),
        blkio: find("blkio"),
    })
}

/// Whether a cgroup hierarchy of this host is mounted with `favordynmods` (Linux >= 6.0). It applies
/// to the kernel's one `cgroup_threadgroup_rwsem`, so one mount is enough: moving a process into a
/// cgroup then no longer waits for an RCU grace period (the cost of joining an envelope on v1).
/// `false` if `/proc/self/mounts` cannot be read.
pub fn favordynmods() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    favordynmods_in(&mounts)
}

/// Whether a cgroup or cgroup2 mount in `mounts` (the format of /proc/self/mounts) has the
/// `favordynmods` option.
fn favordynmods_in(mounts: &str) -> bool {
    mounts.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3
            && (f[2] == "cgroup" || f[2] == "cgroup2")
            && f[3].split(',').any(|o| o == "favordynmods")
    })
}

#[cfg(test)]
mod tests {
    // Detection itself is tested against the fake trees in envelope/tests.rs.

    #[test]
    fn favordynmods_is_found_on_any_cgroup_mount_only() {
        let plain = "cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                     cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert!(!super::favordynmods_in(plain));
        let v2 = "cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime,favordynmods 0 0\n";
        assert!(super::favordynmods_in(v2));
        let other = "tmpfs /favordynmods tmpfs rw,favordynmods 0 0\n";
        assert!(!super::favordynmods_in(other));
    }
}
