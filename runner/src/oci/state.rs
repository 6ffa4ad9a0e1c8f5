//! A container's state: files in `ROOT/ID/` (runc's `--root`), so that no hybox process but the
//! container's own monitor has to stay alive between calls.
//!
//! - `state.json` ([`Record`]): written by `create` once the monitor is ready; never changed.
//! - `exec.fifo`: the monitor waits on it until `start` writes a byte; `start` removes it. Its
//!   presence is what tells *created* from *running*.
//! - `exit.json` ([`ExitRecord`]): written by the monitor when the container's process ended.
//! - `policy.json`: the container's hybox policy as `create` mapped it; `exec` gives its
//!   processes the same restrictions from it.
//! - `argv0/NAME`: a symlink to the program inside the rootfs, so the workload's `argv[0]` is the
//!   name `process.args[0]` gave (the backends name argv[0] after the file they run).
//!
//! The monitor's pid and start time say whether it still lives (a pid alone may be reused).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::oci::{procfs, OciError};
use crate::policy::Backend;

/// Where state lives without `--root`.
pub const DEFAULT_ROOT: &str = "/run/hybox-runc";
pub const RECORD: &str = "state.json";
pub const FIFO: &str = "exec.fifo";
pub const EXIT: &str = "exit.json";
/// Written by `kill` / `delete --force` before they SIGKILL the container.
pub const KILLED: &str = "killed";
pub const ARGV0_DIR: &str = "argv0";
/// The container's policy as `create` mapped it (before the rootfs view), for `exec`.
pub const POLICY: &str = "policy.json";

/// What `create` recorded.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub bundle: PathBuf,
    pub rootfs: PathBuf,
    /// The monitor's pid (the pid file's), and its start time in clock ticks after boot.
    pub pid: i32,
    pub pid_start_time: u64,
    /// RFC 3339.
    pub created: String,
    pub annotations: BTreeMap<String, String>,
    /// hybox's decision: backend, why, and what the program is.
    pub backend: Backend,
    pub reasons: Vec<String>,
    pub workload: String,
    pub cgroups_path: Option<String>,
    /// The container's cgroup as hybox-runc built it (`linux.cgroupsPath`, or its default).
    #[serde(default)]
    pub cgroup: Option<String>,
    /// A native container's rootfs view (the monitor's mount point, see docs/oci.md).
    #[serde(default)]
    pub rootfs_view: Option<PathBuf>,
    /// The mount points of its binds next to it.
    #[serde(default)]
    pub bind_views: Vec<PathBuf>,
    /// The host paths the container binds, granted by the runtime policy (shown by `state`).
    #[serde(default)]
    pub binds: Vec<Bind>,
}

/// One bind of a container, as `state` shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Bind {
    pub source: PathBuf,
    pub destination: PathBuf,
    pub writable: bool,
}

/// What the monitor recorded when the container's process ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitRecord {
    /// The container's exit status (the monitor's own).
    pub status: i32,
    /// The run's outcome as hybox reports it (`exited(0)`, `oom (...)`...), or the error that kept
    /// it from running.
    pub outcome: String,
}

/// The OCI statuses hybox-runc reports (`creating` is never observable: `create` returns after).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    /// Running, with its cgroup frozen (`pause`).
    Paused,
    Stopped,
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Stopped => "stopped",
        })
    }
}

/// One container's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub id: String,
    pub dir: PathBuf,
}

impl StateDir {
    /// The directory of `id` under `root` (which need not exist yet). The id becomes a file name:
    /// letters, digits and `-_.+:` only, not starting with '.'.
    pub fn new(root: &Path, id: &str) -> Result<StateDir, OciError> {
        let bad = |why| OciError::BadId {
            id: id.to_string(),
            why,
        };
        if id.is_empty() || id.len() > 1024 {
            return Err(bad("must be 1 to 1024 characters"));
        }
        if id.starts_with('.') {
            return Err(bad("may not start with '.'"));
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+:".contains(&b))
        {
            return Err(bad("only ASCII letters, digits and - _ . + : are allowed"));
        }
        Ok(StateDir {
            id: id.to_string(),
            dir: root.join(id),
        })
    }

    /// Creates the directory (and `root`, mode 0700); [`OciError::Exists`] if it is there.
    pub fn create(&self) -> Result<(), OciError> {
        use std::os::unix::fs::DirBuilderExt;
        if let Some(root) = self.dir.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(root)
                .map_err(OciError::io(format!("create --root {}", root.display())))?;
        }
        match std::fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(OciError::Exists {
                id: self.id.clone(),
            }),
            Err(e) => Err(OciError::io(format!("create {}", self.dir.display()))(e)),
        }
    }

    pub fn fifo(&self) -> PathBuf {
        self.dir.join(FIFO)
    }

    /// The record, or [`OciError::NotFound`] when there is no such container.
    pub fn record(&self) -> Result<Record, OciError> {
        let path = self.dir.join(RECORD);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(OciError::NotFound {
                    id: self.id.clone(),
                })
            }
            Err(e) => return Err(OciError::io(format!("read {}", path.display()))(e)),
        };
        serde_json::from_str(&text).map_err(|e| {
            OciError::io(format!("parse {}", path.display()))(std::io::Error::other(e))
        })
    }

    pub fn write_record(&self, r: &Record) -> Result<(), OciError> {
        write_atomic(
            &self.dir.join(RECORD),
            &serde_json::to_vec_pretty(r).expect("a record serialises"),
        )
    }

    /// `kill` / `delete --force` record that they SIGKILLed the container before they signal: a
    /// kill that lands while the sandbox is still being built ends its start half-way, and the
    /// monitor must report the kill (137), not a start failure.
    pub fn write_policy(&self, p: &crate::Policy) -> Result<(), OciError> {
        write_atomic(
            &self.dir.join(POLICY),
            &serde_json::to_vec(p).expect("a policy serialises"),
        )
    }

    pub fn policy(&self) -> Result<crate::Policy, OciError> {
        let path = self.dir.join(POLICY);
        let text =
            std::fs::read(&path).map_err(OciError::io(format!("read {}", path.display())))?;
        serde_json::from_slice(&text).map_err(|e| {
            OciError::io(format!("parse {}", path.display()))(std::io::Error::other(e))
        })
    }

    pub fn mark_killed(&self) {
        let _ = std::fs::write(self.dir.join(KILLED), b"");
    }

    pub fn was_killed(&self) -> bool {
        self.dir.join(KILLED).exists()
    }

    pub fn exit(&self) -> Option<ExitRecord> {
        let text = std::fs::read_to_string(self.dir.join(EXIT)).ok()?;
        serde_json::from_str(&text).ok()
    }

    pub fn write_exit(&self, e: &ExitRecord) -> Result<(), OciError> {
        write_atomic(
            &self.dir.join(EXIT),
            &serde_json::to_vec(e).expect("an exit record serialises"),
        )
    }

    /// Created while the monitor lives and waits on the fifo, running while it lives past it,
    /// stopped once it has exited.
    pub fn status(&self, r: &Record) -> Status {
        if !procfs::alive(r.pid, r.pid_start_time) {
            Status::Stopped
        } else if self.fifo().exists() {
            Status::Created
        } else if r.cgroup.as_deref().is_some_and(is_frozen) {
            Status::Paused
        } else {
            Status::Running
        }
    }

    /// Removes the directory and everything in it.
    pub fn remove(&self) -> Result<(), OciError> {
        match std::fs::remove_dir_all(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(OciError::io(format!("remove {}", self.dir.display()))(e)),
        }
    }
}

/// Whether the container's cgroup is frozen (`pause`); a cgroup that cannot be read is not.
pub fn is_frozen(cgroup: &str) -> bool {
    let root = crate::HostConfig::default().cgroup_root;
    crate::envelope::Envelope::open_at(&root, cgroup)
        .and_then(|e| e.is_frozen())
        .unwrap_or(false)
}

/// Writes `path` through a temporary file and a rename: a reader sees all of it or nothing.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), OciError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes)
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(OciError::io(format!("write {}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_that_cannot_be_file_names_are_refused() {
        let root = Path::new("/run/x");
        assert!(StateDir::new(root, "abc-1_2.3:4").is_ok());
        for bad in ["", "..", ".x", "a/b", "a b", "a\0"] {
            assert!(StateDir::new(root, bad).is_err(), "{bad:?}");
        }
    }
}
