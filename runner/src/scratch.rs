//! Directories hybox makes on the host for a run's guest (a wasm guest's `/tmp`, a warm function's
//! per-call `/tmp` base): private to hybox's user (0700), named after their owner, and listed while
//! they live so that a signal teardown can remove them ([`remove_scratch_dirs`]).
//!
//! A hybox that is SIGKILLed runs no destructor: its scratch directories stay, and on a tmpfs what
//! the guest wrote there stays in host memory, charged to nobody. So each directory's name carries
//! its owner record, as envelopes do (`<prefix><random>.owner-<pid>-<starttime>`, see
//! [`crate::envelope::owner`]), and [`gc`] removes the directories whose owner is dead: `hybox gc`
//! calls it, and every process sweeps once before it makes its first scratch directory.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::envelope::owner::{parse_leaf_name, Owner};

/// Every scratch directory's name starts with this (then the caller's prefix).
const NAME_START: &str = "hybox-";

/// A private directory (0700) for a guest's `/tmp`, removed when dropped: on a tmpfs (`/dev/shm`)
/// when the host has one, else in the system's temp directory.
///
/// Why a tmpfs: a run makes and removes this directory, which on a journaling disk filesystem costs
/// more than the rest of a small run (measured here on ext4: the removal alone 1.5 ms of a 12 ms
/// `hybox run`; a warm call makes and removes one per call); and tmpfs pages are charged to the
/// cgroup of the process that writes them, the worker in its envelope, so what the guest writes
/// counts against the run's memory limit, as the native backend's `/tmp` tmpfs does.
///
/// Why 0700: `/dev/shm` and `/tmp` are world-readable; with the default mode (0777 minus a 022
/// umask) any local user could list, and read, what a guest writes while it runs. Under a 0700
/// directory nothing the guest creates is reachable by another host user, whatever its own mode.
pub fn scratch_dir(prefix: &str) -> std::io::Result<ScratchDir> {
    debug_assert!(prefix.starts_with(NAME_START));
    let base = scratch_base();
    sweep_once(&base);
    let suffix = Owner::current()?.leaf_name("");
    let mut b = tempfile::Builder::new();
    b.prefix(prefix)
        .suffix(&suffix)
        .permissions(std::fs::Permissions::from_mode(0o700));
    let dir = b
        .tempdir_in(&base)
        .or_else(|_| b.tempdir_in(std::env::temp_dir()))?;
    live_scratch().push(dir.path().to_path_buf());
    Ok(ScratchDir(dir))
}

/// Where scratch directories go: `/dev/shm` when it is a directory, else the temp directory.
fn scratch_base() -> PathBuf {
    let shm = Path::new("/dev/shm");
    match shm.is_dir() {
        true => shm.to_path_buf(),
        false => std::env::temp_dir(),
    }
}

/// The first scratch directory of a process first removes those of dead owners in the same place.
fn sweep_once(base: &Path) {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(|| {
        let _ = gc_in(base);
    });
}

/// A guest's scratch directory, listed while it lives so that [`remove_scratch_dirs`] finds it;
/// removed (by its `TempDir`) when dropped.
#[derive(Debug)]
pub struct ScratchDir(tempfile::TempDir);

impl ScratchDir {
    pub fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        live_scratch().retain(|p| p != self.0.path());
    }
}

fn live_scratch() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    static LIVE: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Removes every guest scratch directory of this process still in use. For a signal teardown
/// (the CLI's), after it has killed the envelopes: the process then exits
/// without running the destructors that remove them after a run.
pub fn remove_scratch_dirs() -> Vec<std::io::Error> {
    let dirs = std::mem::take(&mut *live_scratch());
    dirs.iter()
        .filter_map(|d| match std::fs::remove_dir_all(d) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Some(e),
            _ => None,
        })
        .collect()
}

/// What [`gc`] did.
#[derive(Debug, Default)]
pub struct ScratchGc {
    /// Scratch directories found (hybox's name and owner record, owned by this user).
    pub examined: usize,
    /// Removed: their owner is dead.
    pub removed: Vec<PathBuf>,
    /// Still owned by a live hybox.
    pub live: usize,
    pub errors: Vec<std::io::Error>,
}

/// Removes the scratch directories of dead owners, wherever hybox makes them (`/dev/shm` and the
/// temp directory). Only real directories (never a symlink: `/dev/shm` and `/tmp` are
/// world-writable, and a planted link must not redirect the removal) owned by this process's
/// effective uid, whose name is hybox's with a parseable owner record.
pub fn gc() -> ScratchGc {
    let mut total = ScratchGc::default();
    let mut bases = vec![PathBuf::from("/dev/shm"), std::env::temp_dir()];
    bases.dedup();
    for base in bases.iter().filter(|b| b.is_dir()) {
        let r = gc_in(base);
        total.examined += r.examined;
        total.removed.extend(r.removed);
        total.live += r.live;
        total.errors.extend(r.errors);
    }
    total
}

fn gc_in(base: &Path) -> ScratchGc {
    let mut r = ScratchGc::default();
    let entries = match std::fs::read_dir(base) {
        Ok(e) => e,
        Err(e) => {
            r.errors.push(e);
            return r;
        }
    };
    // SAFETY: geteuid(2) cannot fail and touches no memory.
    let euid = unsafe { libc::geteuid() };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(NAME_START) {
            continue;
        }
        let Some((_, owner)) = parse_leaf_name(name) else {
            continue;
        };
        let path = entry.path();
        // symlink_metadata: the entry itself, never what a link points to.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() && m.uid() == euid => {}
            _ => continue,
        }
        r.examined += 1;
        if owner.is_alive() {
            r.live += 1;
            continue;
        }
        // remove_dir_all does not follow symlinks inside the tree (CVE-2022-21658 was fixed in
        // Rust 1.58.1), so what a guest planted in its /tmp cannot redirect it either.
        match std::fs::remove_dir_all(&path) {
            Ok(()) => r.removed.push(path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => r.errors.push(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            )),
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_dirs_are_private_and_carry_their_owner() {
        let d = scratch_dir("hybox-test-tmp-").unwrap();
        let m = std::fs::metadata(d.path()).unwrap();
        assert_eq!(
            m.permissions().mode() & 0o777,
            0o700,
            "{}",
            d.path().display()
        );
        let name = d.path().file_name().unwrap().to_str().unwrap().to_string();
        let (_, owner) = parse_leaf_name(&name).expect("owner record in the name");
        assert_eq!(owner, Owner::current().unwrap());
    }

    #[test]
    fn gc_removes_dead_owners_only_and_never_follows_a_link() {
        let base = tempfile::tempdir().unwrap();
        let me = Owner::current().unwrap();
        let dead = Owner {
            start_time: me.start_time + 1,
            ..me
        };
        let dead_dir = base
            .path()
            .join(format!("hybox-wasm-tmp-ab{}", dead.leaf_name("")));
        std::fs::create_dir(&dead_dir).unwrap();
        std::fs::write(dead_dir.join("guest-file"), b"x").unwrap();
        let live_dir = base
            .path()
            .join(format!("hybox-wasm-tmp-cd{}", me.leaf_name("")));
        std::fs::create_dir(&live_dir).unwrap();
        // A link with a dead owner's name, pointing at a victim directory of the test's own.
        let victim = base.path().join("victim");
        std::fs::create_dir(&victim).unwrap();
        std::fs::write(victim.join("keep"), b"keep").unwrap();
        let link = base
            .path()
            .join(format!("hybox-wasm-tmp-ef{}", dead.leaf_name("")));
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let foreign = base.path().join("hybox-something-else");
        std::fs::create_dir(&foreign).unwrap();

        let r = gc_in(base.path());
        assert_eq!(r.removed, vec![dead_dir.clone()], "{r:?}");
        assert_eq!((r.examined, r.live), (2, 1), "{r:?}");
        assert!(!dead_dir.exists());
        assert!(live_dir.is_dir() && foreign.is_dir());
        assert!(std::fs::symlink_metadata(&link).is_ok());
        assert_eq!(std::fs::read(victim.join("keep")).unwrap(), b"keep");
    }
}
