//! An envelope at the path its caller names: a container runtime's container cgroup
//! (`linux.cgroupsPath`), where the caller — containerd, Docker, Kubernetes — reads the
//! container's statistics and OOM events. Unlike [`Envelope::create`] there is no owner record in
//! the name and no gc: the runtime's state owns the cgroup. The limits are written and read back
//! as for every envelope; the teardown of the run kills what is inside but keeps the directories
//! (the caller still reads them after the exit, as runc's cgroup stays until `delete`), and
//! [`Envelope::remove`] removes them. Also here what a live container's cgroup needs: the
//! calling process inside it ([`Envelope::enter`]), new limits ([`Envelope::update`]), and the
//! freezer ([`Envelope::set_frozen`]).
//!
//! The path: an absolute one is from the root of every hierarchy; a relative one is under the
//! calling process's own cgroup in each hierarchy (`/proc/self/cgroup`), as runc does.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::create::{
    bases, check_cpus, check_memory, check_pids, mkdir_parents, unavailable_or_io, validate_limits,
    validate_name,
};
use super::fsio::{CgroupFs, RealFs};
use super::{v1, v2, Applied, Dirs, Envelope, EnvelopeError, Inner, Limits, Version};
use crate::host::cgroup::{self, Layout};

/// New limits for a live envelope; `None` keeps the current value.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitsUpdate {
    pub memory_bytes: Option<u64>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
}

/// Where an envelope at a path is, in every hierarchy it spans.
struct Located {
    version: Version,
    dirs: Dirs,
    /// The v1 freezer's directory, when that hierarchy is mounted.
    freezer: Option<PathBuf>,
    /// The calling process's own cgroup in each hierarchy, in the order of `Inner::all_dirs`.
    home: Vec<PathBuf>,
    /// The path as `/proc/PID/cgroup` shows it (the memory controller's on v1).
    rel_path: String,
}

/// The calling process's cgroups: controller name (`""` for the v2 hierarchy) → path.
fn own_cgroups() -> Result<HashMap<String, String>, EnvelopeError> {
    let file = Path::new("/proc/self/cgroup");
    let text = std::fs::read_to_string(file).map_err(|e| EnvelopeError::io("read", file, e))?;
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut it = line.splitn(3, ':');
        let (_, names, path) = match (it.next(), it.next(), it.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => continue,
        };
        for n in names.split(',') {
            out.insert(n.trim_start_matches("name=").to_string(), path.to_string());
        }
    }
    Ok(out)
}

fn locate(root: &Path, path: &str) -> Result<Located, EnvelopeError> {
    let rel = path.trim_start_matches('/');
    validate_name("cgroups path", rel, true)?;
    let absolute = path.starts_with('/');
    let layout = cgroup::detect(root)?;
    let (version, mounts) = bases(&layout)?;
    let freezer_mount = match &layout {
        Layout::V1 { controllers, .. } | Layout::Hybrid { controllers, .. } => {
            controllers.freezer.clone()
        }
        Layout::V2 { .. } => None,
    };
    let own = if absolute {
        HashMap::new()
    } else {
        own_cgroups()?
    };
    // The base of each hierarchy: its mount (absolute path) or the caller's cgroup in it.
    let base = |mount: &Path, controller: &str| -> PathBuf {
        match own.get(controller) {
            Some(p) => mount.join(p.trim_start_matches('/')),
            None => mount.to_path_buf(),
        }
    };
    let (dirs, freezer) = match version {
        Version::V2 => {
            let b = base(&mounts.memory, "");
            (mounts.map(|_| b.join(rel)), None)
        }
        Version::V1 { .. } => (
            Dirs {
                memory: base(&mounts.memory, "memory").join(rel),
                cpu: base(&mounts.cpu, "cpu").join(rel),
                cpuacct: base(&mounts.cpuacct, "cpuacct").join(rel),
                pids: base(&mounts.pids, "pids").join(rel),
            },
            freezer_mount.as_ref().map(|m| base(m, "freezer").join(rel)),
        ),
    };
    let home = {
        let me = own_cgroups()?;
        let in_mount = |mount: &Path, controller: &str| {
            mount
                .join(me.get(controller).map_or("", |p| p.trim_start_matches('/')))
                .join("cgroup.procs")
        };
        let mut h: Vec<PathBuf> = Vec::new();
        let mut seen: Vec<&Path> = Vec::new();
        let hierarchies: Vec<(&Path, &str)> = match version {
            Version::V2 => vec![(mounts.memory.as_path(), "")],
            Version::V1 { .. } => vec![
                (mounts.memory.as_path(), "memory"),
                (mounts.cpu.as_path(), "cpu"),
                (mounts.cpuacct.as_path(), "cpuacct"),
                (mounts.pids.as_path(), "pids"),
            ],
        };
        for (m, c) in hierarchies {
            if !seen.contains(&m) {
                seen.push(m);
                h.push(in_mount(m, c));
            }
        }
        if let Version::V1 { .. } = version {
            if let Some(m) = &freezer_mount {
                h.push(in_mount(m, "freezer"));
            }
        }
        h
    };
    let rel_path = if absolute {
        format!("/{rel}")
    } else {
        let own_mem = own
            .get(if version == Version::V2 { "" } else { "memory" })
            .map_or("", |p| p.trim_end_matches('/'));
        format!("{own_mem}/{rel}")
    };
    Ok(Located {
        version,
        dirs,
        freezer,
        home,
        rel_path,
    })
}

fn envelope(fs: Arc<dyn CgroupFs>, at: Located, applied: Applied) -> Envelope {
    let mut inner = Inner::new(fs, at.version, at.dirs);
    inner.extra = at.freezer.into_iter().collect();
    inner.keep_dirs = true;
    Envelope {
        inner: Arc::new(inner),
        applied,
        rel_path: at.rel_path,
        // Not in the registry: `teardown_all` is for a front-end's own runs, and these
        // directories outlive the process that made them.
        id: 0,
        done: false,
        home: at.home,
        join_ns: std::sync::atomic::AtomicU64::new(0),
    }
}

impl Envelope {
    /// Creates the cgroup at exactly `path` (under `root`, `/sys/fs/cgroup`) in every hierarchy,
    /// with its missing parents (v2: the controllers enabled down to it), writes `limits` and reads
    /// them back. The path must not exist. Whatever was created is removed if a step fails.
    pub fn create_at(root: &Path, path: &str, limits: &Limits) -> Result<Envelope, EnvelopeError> {
        Self::create_at_with(Arc::new(RealFs), root, path, limits)
    }

    pub(crate) fn create_at_with(
        fs: Arc<dyn CgroupFs>,
        root: &Path,
        path: &str,
        limits: &Limits,
    ) -> Result<Envelope, EnvelopeError> {
        validate_limits(limits)?;
        let at = locate(root, path)?;
        let rel = path.trim_start_matches('/');
        let parent = Path::new(rel)
            .parent()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        let leaf_depth = Path::new(rel).components().count();
        // Each hierarchy's base: the leaf with the path's components taken off.
        let base_of = |dir: &Path| -> PathBuf {
            let mut b = dir.to_path_buf();
            for _ in 0..leaf_depth {
                b.pop();
            }
            b
        };
        let zero = Applied {
            memory_bytes: 0,
            cpu_quota_us: 0,
            cpu_period_us: 0,
            pids_max: 0,
        };
        let mut env = envelope(fs.clone(), at, zero);
        // Nothing is ours until our own mkdir succeeded.
        env.done = true;
        let dirs: Vec<PathBuf> = env
            .inner
            .all_dirs()
            .iter()
            .map(|d| d.to_path_buf())
            .collect();
        let mut made = 0;
        let built = (|| {
            for dir in &dirs {
                let base = base_of(dir);
                if env.inner.version == Version::V2 {
                    v2::prepare_parents(&*fs, &base, &parent)?;
                } else {
                    mkdir_parents(&*fs, &base, &parent)?;
                }
                match fs.mkdir(dir) {
                    Ok(()) => made += 1,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return Err(EnvelopeError::Exists { path: dir.clone() })
                    }
                    Err(e) => return Err(unavailable_or_io("mkdir", dir, e)),
                }
            }
            Ok(match env.inner.version {
                Version::V1 { .. } => v1::apply(&*fs, &env.inner.dirs, limits)?,
                Version::V2 => v2::apply(&*fs, &env.inner.dirs.memory, limits)?,
            })
        })();
        match built {
            Ok(applied) => {
                env.applied = applied;
                env.done = false;
                Ok(env)
            }
            Err(e) => {
                // Only what this call made (an existing cgroup is someone else's).
                for dir in dirs.iter().take(made).rev() {
                    let _ = fs.rmdir(dir);
                }
                Err(e)
            }
        }
    }

    /// The existing cgroup at `path` (as [`Envelope::create_at`] made it), with its limits as
    /// the kernel shows them now. Dropping it leaves it alone; [`Envelope::remove`] removes it.
    /// A cgroup that does not exist is [`EnvelopeError::Io`] with `NotFound`.
    pub fn open_at(root: &Path, path: &str) -> Result<Envelope, EnvelopeError> {
        Self::open_at_with(Arc::new(RealFs), root, path)
    }

    pub(crate) fn open_at_with(
        fs: Arc<dyn CgroupFs>,
        root: &Path,
        path: &str,
    ) -> Result<Envelope, EnvelopeError> {
        let mut at = locate(root, path)?;
        if !fs.exists(&at.dirs.memory) {
            return Err(EnvelopeError::io(
                "open",
                &at.dirs.memory,
                io::Error::from(io::ErrorKind::NotFound),
            ));
        }
        at.freezer = at.freezer.filter(|f| fs.exists(f));
        let applied = match at.version {
            Version::V1 { .. } => v1::read_applied(&*fs, &at.dirs)?,
            Version::V2 => v2::read_applied(&*fs, &at.dirs.memory)?,
        };
        let mut env = envelope(fs, at, applied);
        env.done = true;
        env.adopt_blkio_leaf(root);
        Ok(env)
    }

    /// Moves the calling process into the envelope (every hierarchy it spans), so that the pid
    /// a caller recorded is in the container's cgroup (containerd reads the cgroup of the pid in
    /// its pid file). Before any kill of the envelope the process moves back to where it was, so
    /// it never kills itself.
    pub fn enter(&self) -> Result<(), EnvelopeError> {
        let mut origin = self.inner.origin.lock().unwrap_or_else(|p| p.into_inner());
        for f in self.inner.procs_files() {
            self.inner
                .fs
                .write(&f, &std::process::id().to_string())
                .map_err(|e| EnvelopeError::io("write", &f, e))?;
        }
        *origin = Some(self.home.clone());
        Ok(())
    }

    /// New limits on the live envelope, each read back; the report shows them afterwards.
    pub fn update(&mut self, u: &LimitsUpdate) -> Result<(), EnvelopeError> {
        let fs = &*self.inner.fs;
        let d = &self.inner.dirs;
        let v2 = self.inner.version == Version::V2;
        if let Some(b) = u.memory_bytes {
            check_memory(b)?;
            self.applied.memory_bytes = if v2 {
                v2::set_memory(fs, &d.memory, b)?
            } else {
                v1::set_memory(fs, d, b)?
            };
        }
        if let Some(c) = u.cpus {
            check_cpus(c)?;
            (self.applied.cpu_quota_us, self.applied.cpu_period_us) = if v2 {
                v2::set_cpus(fs, &d.cpu, c)?
            } else {
                v1::set_cpus(fs, d, c)?
            };
        }
        if let Some(p) = u.pids {
            check_pids(p)?;
            self.applied.pids_max = if v2 {
                v2::set_pids(fs, &d.pids, p)?
            } else {
                v1::set_pids(fs, d, p)?
            };
        }
        Ok(())
    }

    /// The freezer file and the values for frozen and thawed, on this envelope's version.
    fn freezer(&self) -> Result<(PathBuf, &'static str, &'static str), EnvelopeError> {
        match self.inner.version {
            Version::V2 => Ok((self.inner.dirs.memory.join("cgroup.freeze"), "1", "0")),
            Version::V1 { .. } => match self.inner.extra.first() {
                Some(d) => Ok((d.join("freezer.state"), "FROZEN", "THAWED")),
                None => Err(EnvelopeError::MissingControllers {
                    missing: "freezer".into(),
                    layout: "the v1 freezer hierarchy is not mounted".into(),
                }),
            },
        }
    }

    /// Freezes (`true`) or thaws every process inside, and waits until the kernel says it is done
    /// (v1 `freezer.state` passes through `FREEZING`; v2 reports `frozen 1` in `cgroup.events`).
    pub fn set_frozen(&self, frozen: bool) -> Result<(), EnvelopeError> {
        let fs = &*self.inner.fs;
        let (file, on, off) = self.freezer()?;
        let want = if frozen { on } else { off };
        let v2_events = self.inner.dirs.memory.join("cgroup.events");
        let give_up = Instant::now() + Duration::from_secs(5);
        loop {
            fs.write(&file, want)
                .map_err(|e| EnvelopeError::io("write", &file, e))?;
            let done = if self.inner.version == Version::V2 {
                let ev = fs
                    .read(&v2_events)
                    .map_err(|e| EnvelopeError::io("read", &v2_events, e))?;
                super::fsio::parse_key(&ev, "frozen") == Some(u64::from(frozen))
            } else {
                fs.read(&file).is_ok_and(|s| s.trim() == want)
            };
            if done {
                return Ok(());
            }
            if Instant::now() >= give_up {
                let read = fs.read(&file).unwrap_or_default();
                return Err(EnvelopeError::Mismatch {
                    path: file,
                    wrote: want.into(),
                    read: read.trim().into(),
                });
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Whether the envelope is frozen (or freezing) now.
    pub fn is_frozen(&self) -> Result<bool, EnvelopeError> {
        let (file, on, _) = self.freezer()?;
        let now = self
            .inner
            .fs
            .read(&file)
            .map_err(|e| EnvelopeError::io("read", &file, e))?;
        Ok(now.trim() == on || now.trim() == "FREEZING")
    }

    /// Kills whatever is left inside and removes the directories, whoever made them.
    pub fn remove(mut self) -> Result<(), EnvelopeError> {
        self.done = true;
        self.inner.remove()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::fake::{v1_tree, v2_tree};
    use super::super::fsio::CgroupFs;
    use super::*;

    const LIMITS: Limits = Limits {
        memory_bytes: 64 << 20,
        cpus: 0.5,
        pids: 32,
    };

    #[test]
    fn v1_at_the_path_kept_after_the_run_updated_frozen_and_removed() {
        let t = tempfile::tempdir().unwrap();
        let fs = Arc::new(v1_tree(t.path(), false));
        let dynfs: Arc<dyn CgroupFs> = fs.clone();
        let e = Envelope::create_at_with(dynfs.clone(), t.path(), "/ns/ctr", &LIMITS).unwrap();
        assert_eq!(e.path(), "/ns/ctr");
        let mem = t.path().join("memory/ns/ctr");
        let read = |f: &str| std::fs::read_to_string(mem.join(f)).unwrap();
        assert_eq!(read("memory.limit_in_bytes"), (64u64 << 20).to_string());
        assert!(t.path().join("freezer/ns/ctr/freezer.state").is_file());
        assert!(t.path().join("pids/ns/ctr/pids.max").is_file());
        // The same path again is refused, and nothing of the first is touched.
        let again = Envelope::create_at_with(dynfs.clone(), t.path(), "/ns/ctr", &LIMITS);
        assert!(
            matches!(again, Err(EnvelopeError::Exists { .. })),
            "{again:?}"
        );
        assert!(mem.is_dir());
        // The run's end keeps the directories for the caller.
        e.destroy().unwrap();
        assert!(mem.is_dir());

        let mut e = Envelope::open_at_with(dynfs.clone(), t.path(), "/ns/ctr").unwrap();
        // Opened, it shows the limits as the kernel has them.
        let crate::report::EnvelopeReport::Cgroup {
            memory_bytes,
            pids_max,
            ..
        } = e.report()
        else {
            panic!("{:?}", e.report())
        };
        assert_eq!((memory_bytes, pids_max), (64 << 20, 32));
        // Raising memory writes memory+swap first (it may never be below memory).
        let before = fs.written().len();
        e.update(&LimitsUpdate {
            memory_bytes: Some(128 << 20),
            pids: Some(7),
            cpus: None,
        })
        .unwrap();
        let w: Vec<String> = fs.written()[before..]
            .iter()
            .map(|(f, _)| f.clone())
            .collect();
        assert_eq!(
            &w[..2],
            [
                "memory/ns/ctr/memory.memsw.limit_in_bytes",
                "memory/ns/ctr/memory.limit_in_bytes"
            ]
        );
        assert_eq!(read("memory.limit_in_bytes"), (128u64 << 20).to_string());
        assert_eq!(
            std::fs::read_to_string(t.path().join("pids/ns/ctr/pids.max")).unwrap(),
            "7"
        );
        assert!(matches!(
            e.update(&LimitsUpdate {
                pids: Some(0),
                ..LimitsUpdate::default()
            }),
            Err(EnvelopeError::Invalid { .. })
        ));
        e.set_frozen(true).unwrap();
        assert!(e.is_frozen().unwrap());
        e.set_frozen(false).unwrap();
        assert!(!e.is_frozen().unwrap());
        e.remove().unwrap();
        for c in ["memory", "cpu,cpuacct", "pids", "freezer"] {
            assert!(!t.path().join(c).join("ns/ctr").exists(), "{c}");
        }
        assert!(matches!(
            Envelope::open_at_with(dynfs, t.path(), "/ns/ctr"),
            Err(EnvelopeError::Io { .. })
        ));
    }

    #[test]
    fn v2_at_the_path_with_the_controllers_enabled_down_to_it() {
        let t = tempfile::tempdir().unwrap();
        let fs = Arc::new(v2_tree(t.path()));
        let dynfs: Arc<dyn CgroupFs> = fs.clone();
        let e = Envelope::create_at_with(dynfs.clone(), t.path(), "/ns/ctr", &LIMITS).unwrap();
        let leaf = t.path().join("ns/ctr");
        let read = |f: &str| std::fs::read_to_string(leaf.join(f)).unwrap();
        assert_eq!(read("memory.max"), (64u64 << 20).to_string());
        assert_eq!(read("cpu.max"), "50000 100000");
        assert_eq!(read("memory.oom.group"), "1");
        let ns = std::fs::read_to_string(t.path().join("ns/cgroup.subtree_control")).unwrap();
        assert!(ns.contains("memory") && ns.contains("pids"), "{ns}");
        drop(e);
        assert!(leaf.is_dir(), "kept after the run");
        let mut e = Envelope::open_at_with(dynfs.clone(), t.path(), "/ns/ctr").unwrap();
        e.update(&LimitsUpdate {
            cpus: Some(1.5),
            ..LimitsUpdate::default()
        })
        .unwrap();
        assert_eq!(read("cpu.max"), "150000 100000");
        assert_eq!(read("memory.max"), (64u64 << 20).to_string(), "unchanged");
        e.remove().unwrap();
        assert!(!leaf.exists());
        // A path that could leave the hierarchy is refused before anything is made.
        let bad = Envelope::create_at_with(dynfs, t.path(), "/ns/../x", &LIMITS);
        assert!(matches!(bad, Err(EnvelopeError::Invalid { .. })), "{bad:?}");
    }
}
