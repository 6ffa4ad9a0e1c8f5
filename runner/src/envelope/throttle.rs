//! Disk I/O throttles (`resources.io`): per block device, bytes and operations per second in each
//! direction, written after the envelope's other limits and **read back** like them.
//!
//! - cgroup v2 (Documentation/admin-guide/cgroup-v2.rst, "IO"): the `io` controller enabled in the
//!   `cgroup.subtree_control` of the root and of every component of the parent (enabling it there
//!   also gives the existing leaf its `io.*` files), then one line per device in the leaf's `io.max`:
//!   `MAJ:MIN rbps=N wbps=N riops=N wiops=N`, read back as the same keys (`max` for the unset ones).
//! - cgroup v1 (Documentation/admin-guide/cgroup-v1/blkio-controller.rst): blkio is a hierarchy of
//!   its own, so the envelope gets one more leaf there, `<blkio>/<parent>/<leaf>` (joined, killed and
//!   removed with the others), with `MAJ:MIN N` in `blkio.throttle.{read,write}_{bps,iops}_device`.
//!   v1 throttles only I/O the writing task issues itself: direct I/O and reads; buffered writes are
//!   issued later by the kernel's writeback threads, outside the envelope (v2 attributes writeback
//!   to the cgroup that dirtied the page, so there buffered writes are throttled too).
//!
//! Only envelopes whose policy asks for a throttle pay any of this: the rest never touch the blkio
//! hierarchy or the io controller.

use std::path::{Path, PathBuf};

use super::create::{mkdir_parents, unavailable_or_io};
use super::fsio::CgroupFs;
use super::owner::parse_leaf_name;
use super::{Envelope, EnvelopeError, Version};
use crate::host::cgroup::{self, Layout};
use crate::report::IoThrottle;

/// One block device's throttle; `None` is unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoLimit {
    pub major: u32,
    pub minor: u32,
    pub read_bps: Option<u64>,
    pub write_bps: Option<u64>,
    pub read_iops: Option<u64>,
    pub write_iops: Option<u64>,
}

impl IoLimit {
    /// The policy's `resources.io` with each device resolved on this host.
    pub fn from_policy(io: &[crate::policy::IoLimit]) -> Result<Vec<IoLimit>, EnvelopeError> {
        io.iter()
            .map(|l| {
                let (major, minor) = l.resolve().map_err(|_| EnvelopeError::Invalid {
                    what: "resources.io device",
                    value: l.device.clone(),
                    why: "not a block device of this host",
                })?;
                Ok(IoLimit {
                    major,
                    minor,
                    read_bps: l.read_bps.map(|s| s.bytes()),
                    write_bps: l.write_bps.map(|s| s.bytes()),
                    read_iops: l.read_iops,
                    write_iops: l.write_iops,
                })
            })
            .collect()
    }

    fn device(&self) -> String {
        format!("{}:{}", self.major, self.minor)
    }

    /// The four values with their v2 key and v1 file.
    fn values(&self) -> [(&'static str, &'static str, Option<u64>); 4] {
        [
            ("rbps", "blkio.throttle.read_bps_device", self.read_bps),
            ("wbps", "blkio.throttle.write_bps_device", self.write_bps),
            ("riops", "blkio.throttle.read_iops_device", self.read_iops),
            ("wiops", "blkio.throttle.write_iops_device", self.write_iops),
        ]
    }

    pub(crate) fn report(&self) -> IoThrottle {
        IoThrottle {
            device: self.device(),
            read_bps: self.read_bps,
            write_bps: self.write_bps,
            read_iops: self.read_iops,
            write_iops: self.write_iops,
        }
    }
}

/// The throttles an envelope has, as read back, and its v1 blkio leaf.
#[derive(Debug)]
pub(crate) struct IoState {
    pub limits: Vec<IoLimit>,
    pub blkio_dir: Option<PathBuf>,
}

impl Envelope {
    /// Writes `limits` into this envelope and reads each back; call it before anything joins the
    /// envelope (the v1 blkio leaf is joined with the other leaves from then on). `root` is the
    /// cgroup root the envelope was created under. Once per envelope.
    pub fn limit_io(&mut self, root: &Path, limits: &[IoLimit]) -> Result<(), EnvelopeError> {
        if limits.is_empty() {
            return Ok(());
        }
        if self.inner.io.get().is_some() {
            return Err(EnvelopeError::Invalid {
                what: "io limits",
                value: format!("{limits:?}"),
                why: "already set for this envelope",
            });
        }
        let fs = self.inner.fs.clone();
        let parent = self.parent().to_string();
        let state = match self.inner.version {
            Version::V2 => {
                enable_io(&*fs, root, &parent)?;
                let leaf = &self.inner.dirs.memory;
                for l in limits {
                    set_v2(&*fs, leaf, l)?;
                }
                IoState {
                    limits: limits.to_vec(),
                    blkio_dir: None,
                }
            }
            Version::V1 { .. } => {
                let blkio = blkio_mount(root)?;
                mkdir_parents(&*fs, &blkio, &parent)?;
                gc_dead(&*fs, &blkio.join(&parent));
                let leaf_name = self.rel_path.rsplit('/').next().unwrap_or_default();
                let dir = blkio.join(&parent).join(leaf_name);
                match fs.mkdir(&dir) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        return Err(EnvelopeError::Exists { path: dir });
                    }
                    Err(e) => return Err(unavailable_or_io("mkdir", &dir, e)),
                }
                let state = IoState {
                    limits: limits.to_vec(),
                    blkio_dir: Some(dir.clone()),
                };
                // From here the leaf is the envelope's: removed with it even if a write fails.
                let _ = self.inner.io.set(state);
                for l in limits {
                    set_v1(&*fs, &dir, l)?;
                }
                return Ok(());
            }
        };
        let _ = self.inner.io.set(state);
        Ok(())
    }

    /// For an envelope opened by path (`Envelope::open_at`) on v1: its blkio leaf, when
    /// [`Envelope::limit_io`] made one at create, becomes the envelope's again, so that a kill or
    /// remove (`hybox-runc delete`, another process than the one that created it) covers it too.
    pub(super) fn adopt_blkio_leaf(&mut self, root: &Path) {
        if !matches!(self.inner.version, Version::V1 { .. }) {
            return;
        }
        let Ok(blkio) = blkio_mount(root) else {
            return;
        };
        let dir = blkio.join(self.rel_path.trim_start_matches('/'));
        if self.inner.fs.exists(&dir) {
            let _ = self.inner.io.set(IoState {
                limits: Vec::new(),
                blkio_dir: Some(dir),
            });
        }
    }

    /// `parent` of `/<parent>/<leaf>`.
    fn parent(&self) -> &str {
        let p = self.rel_path.trim_start_matches('/');
        p.rsplit_once('/').map_or("", |(parent, _)| parent)
    }
}

/// The mount point of the v1 blkio hierarchy under `root`.
fn blkio_mount(root: &Path) -> Result<PathBuf, EnvelopeError> {
    let layout = cgroup::detect(root)?;
    let found = match &layout {
        Layout::V1 { controllers, .. } | Layout::Hybrid { controllers, .. } => {
            controllers.blkio.clone()
        }
        Layout::V2 { .. } => None,
    };
    found.ok_or_else(|| EnvelopeError::MissingControllers {
        missing: "blkio (for resources.io)".into(),
        layout: layout.describe(),
    })
}

/// Enables the `io` controller from the root down to `parent`, where missing.
fn enable_io(fs: &dyn CgroupFs, root: &Path, parent: &str) -> Result<(), EnvelopeError> {
    let mut dir = root.to_path_buf();
    let mut dirs = vec![dir.clone()];
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        dir.push(part);
        dirs.push(dir.clone());
    }
    for d in dirs {
        let file = d.join("cgroup.subtree_control");
        let have = fs
            .read(&file)
            .map_err(|e| EnvelopeError::io("read", &file, e))?;
        if have.split_whitespace().any(|c| c == "io") {
            continue;
        }
        fs.write(&file, "+io")
            .map_err(|e| unavailable_or_io("write", &file, e))?;
        let now = fs
            .read(&file)
            .map_err(|e| EnvelopeError::io("read", &file, e))?;
        if !now.split_whitespace().any(|c| c == "io") {
            return Err(EnvelopeError::Mismatch {
                path: file,
                wrote: "+io".into(),
                read: now.trim().into(),
            });
        }
    }
    Ok(())
}

/// One device's line of `io.max`, written and read back key by key.
fn set_v2(fs: &dyn CgroupFs, leaf: &Path, l: &IoLimit) -> Result<(), EnvelopeError> {
    let file = leaf.join("io.max");
    let dev = l.device();
    let mut line = dev.clone();
    for (key, _, v) in l.values() {
        line.push_str(&format!(
            " {key}={}",
            v.map_or("max".to_string(), |v| v.to_string())
        ));
    }
    let read = fs
        .write_then_read(&file, &line)
        .map_err(|e| EnvelopeError::io("write", &file, e))?;
    let mismatch = || EnvelopeError::Mismatch {
        path: file.clone(),
        wrote: line.clone(),
        read: read.trim().into(),
    };
    let got = read
        .lines()
        .find(|r| r.split_whitespace().next() == Some(dev.as_str()))
        .ok_or_else(mismatch)?;
    for (key, _, v) in l.values() {
        let want = v.map_or("max".to_string(), |v| v.to_string());
        let have = got
            .split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='));
        // The kernel omits nothing it was given; an unset key shows `max` (or is absent).
        if have.unwrap_or("max") != want {
            return Err(mismatch());
        }
    }
    Ok(())
}

/// The device's set values in the four v1 throttle files, each read back.
fn set_v1(fs: &dyn CgroupFs, leaf: &Path, l: &IoLimit) -> Result<(), EnvelopeError> {
    let dev = l.device();
    for (_, name, v) in l.values() {
        let Some(v) = v else { continue };
        let file = leaf.join(name);
        let value = format!("{dev} {v}");
        let read = fs
            .write_then_read(&file, &value)
            .map_err(|e| EnvelopeError::io("write", &file, e))?;
        if !read.lines().any(|r| r.trim() == value) {
            return Err(EnvelopeError::Mismatch {
                path: file,
                wrote: value,
                read: read.trim().into(),
            });
        }
    }
    Ok(())
}

/// The v1 blkio leaves of dead owners under `parent` (a hybox killed mid-run): the envelope gc
/// walks the hierarchies every envelope has, so the optional blkio one is swept here, best-effort
/// (a leaf whose tasks still run is busy and is tried again by the next throttled run).
fn gc_dead(fs: &dyn CgroupFs, parent: &Path) {
    let Ok(children) = fs.list_dirs(parent) else {
        return;
    };
    for name in children {
        if let Some((_, owner)) = parse_leaf_name(&name) {
            if !owner.is_alive() {
                let _ = fs.rmdir(&parent.join(&name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::fake::{v1_tree, v2_tree, FakeFs};
    use super::super::fsio::CgroupFs;
    use super::super::{Envelope, EnvelopeError, Limits, Owner};
    use super::IoLimit;
    use crate::report::EnvelopeReport;

    const LIMITS: Limits = Limits {
        memory_bytes: 64 << 20,
        cpus: 0.5,
        pids: 32,
    };
    const LOOP: IoLimit = IoLimit {
        major: 7,
        minor: 3,
        read_bps: None,
        write_bps: Some(2 << 20),
        read_iops: Some(100),
        write_iops: None,
    };

    fn create(fs: &Arc<FakeFs>) -> Envelope {
        let dynfs: Arc<dyn CgroupFs> = fs.clone();
        Envelope::create_with(
            dynfs,
            &fs.root.clone(),
            "hybox",
            "r1",
            &LIMITS,
            Owner::current().unwrap(),
        )
        .unwrap()
    }

    fn io_of(env: &Envelope) -> Vec<crate::report::IoThrottle> {
        match env.report() {
            EnvelopeReport::Cgroup { io, .. } => io,
            EnvelopeReport::None => panic!("no cgroup"),
        }
    }

    #[test]
    fn v2_enables_io_down_to_the_parent_and_writes_io_max() {
        let t = tempfile::tempdir().unwrap();
        let fs = Arc::new(v2_tree(t.path()));
        let mut env = create(&fs);
        let leaf = env.dirs()[0].clone();
        // What the kernel does once `+io` is in the parent's subtree_control: the leaf gets io.max,
        // which shows every key of a device it was given a line for.
        std::fs::write(leaf.join("io.max"), "").unwrap();
        fs.rule("io.max", |v| {
            let mut it = v.split_whitespace();
            let dev = it.next().unwrap().to_string();
            let mut line = dev;
            for key in ["rbps", "wbps", "riops", "wiops"] {
                let v = v
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
                    .unwrap_or("max");
                line.push_str(&format!(" {key}={v}"));
            }
            line + "\n"
        });
        env.limit_io(&fs.root.clone(), &[LOOP]).unwrap();
        let w = fs.written();
        assert!(
            w.contains(&("cgroup.subtree_control".into(), "+io".into())),
            "{w:?}"
        );
        assert!(
            w.contains(&("hybox/cgroup.subtree_control".into(), "+io".into())),
            "{w:?}"
        );
        assert!(
            w.iter().any(|(f, v)| f.ends_with("/io.max")
                && v == "7:3 rbps=max wbps=2097152 riops=100 wiops=max"),
            "{w:?}"
        );
        assert_eq!(io_of(&env), vec![LOOP.report()]);
        assert!(
            env.limit_io(&fs.root.clone(), &[LOOP]).is_err(),
            "set once per envelope"
        );
        env.destroy().unwrap();
    }

    #[test]
    fn a_value_the_kernel_did_not_take_is_a_mismatch() {
        let t = tempfile::tempdir().unwrap();
        let fs = Arc::new(v2_tree(t.path()));
        let mut env = create(&fs);
        std::fs::write(env.dirs()[0].join("io.max"), "").unwrap();
        fs.rule("io.max", |_| {
            "7:3 rbps=max wbps=max riops=max wiops=max\n".into()
        });
        let e = env.limit_io(&fs.root.clone(), &[LOOP]).unwrap_err();
        assert!(matches!(e, EnvelopeError::Mismatch { .. }), "{e}");
    }

    #[test]
    fn v1_adds_a_blkio_leaf_that_is_joined_and_removed_with_the_envelope() {
        let t = tempfile::tempdir().unwrap();
        let fs = Arc::new(v1_tree(t.path(), false));
        std::fs::create_dir(t.path().join("blkio")).unwrap();
        std::fs::write(t.path().join("blkio/cgroup.procs"), "").unwrap();
        let mut env = create(&fs);
        let before = super::super::EnvelopeJoin::procs_files(&env).len();
        env.limit_io(&fs.root.clone(), &[LOOP]).unwrap();
        let blkio = t.path().join("blkio/hybox");
        let leaves = fs.list_dirs(&blkio).unwrap();
        assert_eq!(leaves.len(), 1, "{leaves:?}");
        let leaf = blkio.join(&leaves[0]);
        assert_eq!(
            std::fs::read_to_string(leaf.join("blkio.throttle.write_bps_device")).unwrap(),
            "7:3 2097152"
        );
        assert_eq!(
            std::fs::read_to_string(leaf.join("blkio.throttle.read_iops_device")).unwrap(),
            "7:3 100"
        );
        // Unset values are not written (a 0 would remove a rule).
        assert_eq!(
            std::fs::read_to_string(leaf.join("blkio.throttle.read_bps_device")).unwrap(),
            ""
        );
        let procs = super::super::EnvelopeJoin::procs_files(&env);
        assert_eq!(procs.len(), before + 1);
        assert!(procs.contains(&leaf.join("cgroup.procs")));
        assert_eq!(io_of(&env), vec![LOOP.report()]);
        env.destroy().unwrap();
        assert!(
            !leaf.exists(),
            "the blkio leaf is removed with the envelope"
        );
    }
}
