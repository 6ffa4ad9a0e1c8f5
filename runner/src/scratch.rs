//! Directories hybox makes on the host for a run's guest (a wasm guest's `/tmp`, a warm function's
//! per-call `/tmp` base): private to hybox's user, listed while they live so that a signal teardown
//! can remove them ([`remove_scratch_dirs`]).

use std::path::{Path, PathBuf};

/// A private directory (0700) for a guest's `/tmp`, removed when dropped: on a tmpfs (`/dev/shm`)
/// when the host has one, else in the system's temp directory.
///
/// Why a tmpfs: a run makes and removes this directory, which on a journaling disk filesystem costs
/// more than the rest of a small run (measured here on ext4: the removal alone 1.5 ms of a 12 ms
/// `hybox run`; a warm call makes and removes one per call); and tmpfs pages are charged to the
/// cgroup of the process that writes them, the worker in its envelope, so what the guest writes
/// counts against the run's memory limit, as the native backend's `/tmp` tmpfs does.
pub fn scratch_dir(prefix: &str) -> std::io::Result<ScratchDir> {
    let mut b = tempfile::Builder::new();
    b.prefix(prefix);
    let shm = Path::new("/dev/shm");
    let dir = match shm.is_dir() {
        true => b.tempdir_in(shm).or_else(|_| b.tempdir())?,
        false => b.tempdir()?,
    };
    live_scratch().push(dir.path().to_path_buf());
    Ok(ScratchDir(dir))
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
