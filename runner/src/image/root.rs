//! The root filesystem of one run of an image: the image's layers as the read-only lower
//! directories of an overlayfs, and, unless the root is read-only, an upper directory on a tmpfs
//! of its own that lives exactly as long as the run. Nothing the container writes survives the run:
//! the tmpfs is unmounted and its directory removed afterwards.
//!
//! As root it mounts on the host, under the store's `run/` directory; the native backend then binds
//! the merged tree's top-level entries as the sandbox's root (`policy::Rootfs::Image`). Without
//! root it mounts nothing: it makes the mount points and hands the layers to the sandbox, which
//! mounts the overlay (`userxattr`) in its own user and mount namespaces, and the runner's own
//! lookups go through the layers (`image::union`). The tmpfs's pages are charged
//! to the memory cgroup of the process that writes them, which is the workload in its envelope, so
//! what a container writes counts against the run's memory limit, as its `/tmp` does.
//!
//! A run's directory is named with its owner (`run-<random>.owner-<pid>-<starttime>`, as envelopes
//! are) so that `hybox image prune` unmounts and removes the roots of a hybox that was killed.

use std::fs;
use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use std::os::fd::AsRawFd;

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::stat::Mode;

use super::store::{remove_tree, ImageRecord, Store, StoreError, StoreLock};
use super::union::Union;
use crate::envelope::owner::{parse_leaf_name, Owner};
use crate::policy::ImageOverlay;

/// Building or removing a run's root failed.
#[derive(Debug, thiserror::Error)]
pub enum RootError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the root of image {image}: {step} {path}: {source}")]
    Io {
        image: String,
        step: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error(
        "the root of image {image}: layer {layer} is not in the store (import the image again)"
    )]
    MissingLayer { image: String, layer: String },
    #[error("the root of image {image}: the store path {path} holds ':' or ',', which overlayfs options cannot carry")]
    BadStorePath { image: String, path: PathBuf },
    #[error("the root of image {image}: mount {what} on {path}: {errno}")]
    Mount {
        image: String,
        what: &'static str,
        path: PathBuf,
        errno: nix::errno::Errno,
    },
}

/// The ephemeral writable layer of a run at its end (`filesystem.writable_layer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct WritableUsage {
    /// Its size as the tmpfs has it (the policy's size rounded up to a page).
    pub size_bytes: u64,
    /// What the run's writes (and overlayfs's own work directory) use of it at the end.
    pub used_bytes: u64,
    /// No space (or no inode) left: a write beyond the size failed with `ENOSPC` in the guest.
    pub full: bool,
}

/// A mounted root; unmounted and removed by [`RunRoot::unmount`] or when dropped.
pub struct RunRoot {
    run_dir: PathBuf,
    merged: PathBuf,
    mounts: Vec<PathBuf>,
    /// The overlay's lower directories, uppermost first.
    lower: Vec<PathBuf>,
    in_sandbox: bool,
    writable_bytes: Option<u64>,
    _lock: StoreLock,
}

impl RunRoot {
    /// Mounts the root of a run of `image`: writable with an upper layer of at most
    /// `writable_bytes` bytes, or read-only when `None`.
    pub fn mount(
        store: &Store,
        image: &ImageRecord,
        writable_bytes: Option<u64>,
    ) -> Result<RunRoot, RootError> {
        let name = image
            .names
            .first()
            .cloned()
            .unwrap_or_else(|| image.id.to_string());
        let io_err = |step, path: &Path| {
            let name = name.clone();
            let path = path.to_path_buf();
            move |source| RootError::Io {
                image: name,
                step,
                path,
                source,
            }
        };
        let lock = store.lock_shared()?;
        let mut lowers: Vec<PathBuf> = Vec::new();
        // overlayfs lists the uppermost lower directory first.
        for l in image.layers.iter().rev() {
            let dir = store.layer_root(l);
            if store.layer(l)?.is_none() || !dir.is_dir() {
                return Err(RootError::MissingLayer {
                    image: name,
                    layer: l.to_string(),
                });
            }
            lowers.push(dir);
        }
        let owner =
            Owner::current().map_err(io_err("read the owner of", Path::new("/proc/self")))?;
        let tmp = tempfile::Builder::new()
            .prefix("run-")
            .suffix(&owner.leaf_name(""))
            .tempdir_in(store.run_dir())
            .map_err(io_err("create a run directory in", &store.run_dir()))?;
        let dir = tmp.keep();
        let mut root = RunRoot {
            merged: dir.join("merged"),
            run_dir: dir.clone(),
            mounts: Vec::new(),
            lower: Vec::new(),
            in_sandbox: !nix::unistd::geteuid().is_root(),
            writable_bytes,
            _lock: lock,
        };
        fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o711))
            .map_err(io_err("chmod", &dir))?;
        // overlayfs needs a lower directory, and two when there is no upper one.
        let needed = if writable_bytes.is_some() { 1 } else { 2 };
        if lowers.len() < needed {
            let empty = dir.join("empty");
            fs::DirBuilder::new()
                .mode(0o755)
                .create(&empty)
                .map_err(io_err("mkdir", &empty))?;
            while lowers.len() < needed {
                lowers.push(empty.clone());
            }
        }
        fs::DirBuilder::new()
            .mode(0o755)
            .create(&root.merged)
            .map_err(io_err("mkdir", &root.merged))?;
        for l in &lowers {
            if l.to_string_lossy().contains([':', ',']) {
                return Err(RootError::BadStorePath {
                    image: name,
                    path: store.root().to_path_buf(),
                });
            }
        }
        let rw = dir.join("rw");
        if writable_bytes.is_some() {
            fs::DirBuilder::new()
                .mode(0o700)
                .create(&rw)
                .map_err(io_err("mkdir", &rw))?;
        }
        root.lower = lowers;
        if root.in_sandbox {
            // Without root the sandbox mounts the overlay in its own namespaces (docs/images.md,
            // "Unprivileged runs"): here only the mount points.
            return Ok(root);
        }
        let lower: Vec<String> = root
            .lower
            .iter()
            .map(|l| l.to_string_lossy().into_owned())
            .collect();
        let mut opts = format!("lowerdir={}", lower.join(":"));
        let mount_err = |what, path: &Path| {
            let name = name.clone();
            let path = path.to_path_buf();
            move |errno| RootError::Mount {
                image: name,
                what,
                path,
                errno,
            }
        };
        if let Some(bytes) = writable_bytes {
            let data = format!("size={bytes},mode=0700");
            mount(
                Some("tmpfs"),
                &rw,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                Some(data.as_str()),
            )
            .map_err(mount_err("the writable layer's tmpfs", &rw))?;
            root.mounts.push(rw.clone());
            for (d, mode) in [("upper", 0o755), ("work", 0o700)] {
                fs::DirBuilder::new()
                    .mode(mode)
                    .create(rw.join(d))
                    .map_err(io_err("mkdir", &rw.join(d)))?;
            }
            opts.push_str(&format!(
                ",upperdir={},workdir={}",
                rw.join("upper").display(),
                rw.join("work").display()
            ));
        }
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        if writable_bytes.is_none() {
            flags |= MsFlags::MS_RDONLY;
        }
        mount(
            Some("overlay"),
            &root.merged,
            Some("overlay"),
            flags,
            Some(opts.as_str()),
        )
        .map_err(mount_err("the overlay", &root.merged))?;
        root.mounts.push(root.merged.clone());
        Ok(root)
    }

    /// Whether the sandbox mounts the overlay itself (an unprivileged run): there is no merged
    /// tree on the host, only its mount point.
    pub fn in_sandbox(&self) -> bool {
        self.in_sandbox
    }

    /// A path inside the image, resolved as the container would (`..` and absolute symlinks stay
    /// in the root): `(host, guest)`, the host path of what it names and its canonical path in
    /// the image. In the mounted tree with `openat2(RESOLVE_IN_ROOT)`, else in the layers as
    /// overlayfs merges them (`image::union`).
    pub fn resolve(&self, path: &Path) -> io::Result<(PathBuf, PathBuf)> {
        if self.in_sandbox {
            return Union {
                layers: &self.lower,
            }
            .resolve(path);
        }
        let dir = nix::fcntl::open(
            &self.merged,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(&dir, path, how)?;
        let real = fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))?;
        let Ok(guest) = real
            .strip_prefix(&self.merged)
            .map(|p| Path::new("/").join(p))
        else {
            return Err(io::Error::other(format!(
                "{} resolves outside the image root",
                path.display()
            )));
        };
        Ok((real, guest))
    }

    /// What the sandbox mounts when [`RunRoot::in_sandbox`]: the layers, the writable layer's
    /// tmpfs, and the root's top-level entries found in the layers; `None` for a host-side mount.
    pub fn sandbox_overlay(&self) -> io::Result<Option<ImageOverlay>> {
        if !self.in_sandbox {
            return Ok(None);
        }
        let entries = Union {
            layers: &self.lower,
        }
        .top_level()?;
        Ok(Some(ImageOverlay {
            lower: self.lower.clone(),
            upper: self.writable_bytes.map(|b| (self.run_dir.join("rw"), b)),
            entries,
        }))
    }

    /// The merged tree: the run's root directory.
    pub fn dir(&self) -> &Path {
        &self.merged
    }

    /// A directory on the writable layer's tmpfs beside the overlay's upper directory (`rw/tmp`,
    /// 0700), for a guest that gets the root read-only and a writable `/tmp` (the wasm backend's
    /// preopens): ephemeral and bounded by the same size. An error for a read-only root.
    pub fn scratch_dir(&self) -> io::Result<PathBuf> {
        let rw = self.run_dir.join("rw");
        if !self.mounts.contains(&rw) {
            return Err(io::Error::other("the root is read-only: no writable layer"));
        }
        let dir = rw.join("tmp");
        match fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(dir),
            Err(e) => Err(e),
        }
    }

    /// How much of the writable layer the run used, read from its tmpfs (`statvfs`); `None` for a
    /// read-only root. Read it before [`RunRoot::unmount`].
    pub fn writable_usage(&self) -> Option<WritableUsage> {
        let rw = self.run_dir.join("rw");
        if !self.mounts.contains(&rw) {
            return None;
        }
        let st = nix::sys::statvfs::statvfs(&rw).ok()?;
        let frsize = st.fragment_size() as u64;
        let size_bytes = st.blocks() as u64 * frsize;
        let free_bytes = st.blocks_available() as u64 * frsize;
        Some(WritableUsage {
            size_bytes,
            used_bytes: size_bytes.saturating_sub(free_bytes),
            // tmpfs hands out whole pages: with none left every further write fails with ENOSPC;
            // so does creating a file once the inodes are gone.
            full: free_bytes == 0 || st.files_available() == 0,
        })
    }

    /// Unmounts and removes the run's root.
    pub fn unmount(mut self) -> io::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> io::Result<()> {
        let mut first = None;
        while let Some(m) = self.mounts.pop() {
            if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
                first.get_or_insert(io::Error::from(e));
            }
        }
        if first.is_none() {
            if let Err(e) = remove_tree(&self.run_dir) {
                first = Some(e);
            }
        }
        match first {
            None => Ok(()),
            Some(e) => Err(e),
        }
    }
}

impl Drop for RunRoot {
    fn drop(&mut self) {
        let _ = self.teardown();
    }
}

/// Unmounts and removes the run directories whose owner is dead (a hybox killed mid-run).
pub(crate) fn remove_dead_runs(store: &Store) -> Result<Vec<String>, StoreError> {
    let mut removed = Vec::new();
    let dir = store.run_dir();
    for e in fs::read_dir(&dir).map_err(|e| store.io("list run", e))? {
        let e = e.map_err(|e| store.io("list run", e))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((_, owner)) = parse_leaf_name(&name) else {
            continue;
        };
        if owner.is_alive() {
            continue;
        }
        for m in ["merged", "rw"] {
            // Not mounted any more (EINVAL) is the common case after a reboot.
            let _ = umount2(&e.path().join(m), MntFlags::MNT_DETACH);
        }
        remove_tree(&e.path()).map_err(|e| store.io("remove a dead run's root", e))?;
        removed.push(name);
    }
    Ok(removed)
}
