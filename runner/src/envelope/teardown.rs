//! Taking an envelope down: kill everything inside, remove every directory, verify it is gone. Used
//! by [`Envelope::destroy`], by `Drop` (an early return, a panic), by [`super::teardown_all`] (a
//! front-end's signal handling) and by gc (envelopes of dead owners).
//!
//! There is no freezer: the kill seals the envelope with `pids.max = 0` (nothing inside can fork)
//! and SIGKILLs until `cgroup.procs` is empty ([`seal_and_kill`]), or writes v2's `cgroup.kill`; an
//! envelope whose workload already exited is removed by `rmdir(2)` alone, without a signal.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::fsio::CgroupFs;
use super::{registry, v1, v2, Envelope, EnvelopeError, Inner, Version};

impl Inner {
    pub(super) fn kill_all(&self) -> Result<(), EnvelopeError> {
        // A caller inside its envelope (hybox-runc's monitor) that is alone there has nothing to
        // kill: it stays, rather than moving out first, which on cgroup v1 waits for an RCU grace
        // period on the container's exit path (the monitor's exit is the container's). What
        // might join later is killed by `delete`, which removes the cgroup (`Envelope::remove`).
        if self.only_caller_inside() {
            return Ok(());
        }
        // The runner's own process never stays in what it kills (`Envelope::enter`), and a frozen
        // v1 task takes no SIGKILL until it is thawed (freezer-subsystem.rst).
        self.leave()?;
        self.thaw();
        match self.version {
            Version::V1 { .. } => v1::kill_all(&*self.fs, &self.dirs),
            Version::V2 => v2::kill_all(&*self.fs, &self.dirs.memory),
        }
    }

    /// The calling process entered the envelope ([`Envelope::enter`]) and is the only process in
    /// every one of its cgroups. `false` when a `cgroup.procs` cannot be read.
    fn only_caller_inside(&self) -> bool {
        let me = std::process::id().to_string();
        self.caller_entered()
            && self.procs_files().iter().all(|f| {
                self.fs
                    .read(f)
                    .is_ok_and(|procs| procs.lines().all(|l| l.trim() == me))
            })
    }

    /// The calling process moved itself into the envelope ([`Envelope::enter`]) and has not left.
    pub(super) fn caller_entered(&self) -> bool {
        self.origin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// Moves the calling process back to where it was before [`Envelope::enter`] (nothing to do
    /// when it never entered).
    pub(super) fn leave(&self) -> Result<(), EnvelopeError> {
        let mut origin = self.origin.lock().unwrap_or_else(|p| p.into_inner());
        for f in origin.iter().flatten() {
            self.fs
                .write(f, &std::process::id().to_string())
                .map_err(|e| EnvelopeError::io("write", f, e))?;
        }
        *origin = None;
        Ok(())
    }

    /// Thaws a paused envelope (only envelopes made by `create_at` are ever frozen).
    fn thaw(&self) {
        if !self.keep_dirs {
            return;
        }
        for d in self.all_dirs() {
            for (file, value) in [("freezer.state", "THAWED"), ("cgroup.freeze", "0")] {
                let f = d.join(file);
                if self.fs.exists(&f) {
                    let _ = self.fs.write(&f, value);
                }
            }
        }
    }

    /// The common case, an envelope whose tasks are all gone: `rmdir(2)` alone removes it. The
    /// kernel refuses (`EBUSY`) while a task or a child cgroup is inside, and each task of the
    /// envelope is in every one of its leaves, so a removal that succeeds proves there was nothing
    /// left to kill. `false` at the first refusal: the full teardown then kills and removes what
    /// is left (a leaf already removed here counts as removed there).
    fn remove_if_empty(&self) -> bool {
        self.all_dirs()
            .into_iter()
            .rev()
            .all(|dir| match self.fs.rmdir(dir) {
                Ok(()) => true,
                Err(e) => e.raw_os_error() == Some(libc::ENOENT),
            })
    }

    /// Kill everything, then remove every directory (children first) unless they are the
    /// caller's to keep. `remove_tree` returns `Ok` only once `rmdir(2)` succeeded or the
    /// directory was already gone, so success means removed.
    pub(super) fn teardown(&self) -> Result<(), EnvelopeError> {
        if self.keep_dirs {
            return self.kill_all();
        }
        self.remove()
    }

    /// [`Inner::teardown`] that removes the directories whoever owns them.
    pub(super) fn remove(&self) -> Result<(), EnvelopeError> {
        self.leave()?;
        if self.remove_if_empty() {
            return Ok(());
        }
        let killed = self.kill_all();
        let mut first_err = killed.err();
        for dir in self.all_dirs().into_iter().rev() {
            if let Err(e) = remove_tree(&*self.fs, dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Removes a cgroup directory and any child cgroups, retrying `EBUSY` while killed tasks finish
/// exiting. A directory that is already gone is fine. The common case (an empty leaf without
/// children) is one `rmdir(2)`; the children are listed only when the kernel refuses with `EBUSY`
/// (cgroupfs's answer for both "has child cgroups" and "tasks still exiting").
fn remove_tree(fs: &dyn CgroupFs, dir: &Path) -> Result<(), EnvelopeError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_micros(50);
    let mut children_removed = false;
    loop {
        let busy = match fs.rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) => e,
            Err(e) => {
                return Err(EnvelopeError::NotRemoved {
                    path: dir.to_path_buf(),
                    source: e,
                })
            }
        };
        if !children_removed {
            children_removed = true;
            match fs.list_dirs(dir) {
                Ok(children) => {
                    for c in &children {
                        remove_tree(fs, &dir.join(c))?;
                    }
                    if !children.is_empty() {
                        continue;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(EnvelopeError::io("list", dir, e)),
            }
        }
        if Instant::now() >= deadline {
            return Err(EnvelopeError::NotRemoved {
                path: dir.to_path_buf(),
                source: busy,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// The pids listed in `cgroup.procs` files (missing files count as empty: the cgroup is gone).
fn read_pids(fs: &dyn CgroupFs, files: &[PathBuf]) -> Result<Vec<i32>, EnvelopeError> {
    let mut pids = Vec::new();
    for f in files {
        let text = match fs.read(f) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(EnvelopeError::io("read", f, e)),
        };
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let pid = l.trim().parse().map_err(|_| EnvelopeError::Parse {
                path: f.clone(),
                content: text.clone(),
                why: "pid",
            })?;
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

/// The pids in the envelope, refusing when hybox's own process is among them (freezing or killing it
/// would stop the runner itself). Empty: nothing to kill, so the kill (seal, `cgroup.kill`) is
/// skipped: with no task inside, nothing can fork its way in.
pub(crate) fn pids_to_kill(
    fs: &dyn CgroupFs,
    files: &[PathBuf],
) -> Result<Vec<i32>, EnvelopeError> {
    let me = std::process::id() as i32;
    let pids = read_pids(fs, files)?;
    if pids.contains(&me) {
        return Err(EnvelopeError::RunnerInside {
            pid: me,
            path: files[0].clone(),
        });
    }
    Ok(pids)
}

/// SIGKILLs every pid of `files` until none is left (or 2 s passed), re-reading the list after each
/// round: killed tasks take a moment to leave it.
pub(crate) fn kill_loop(fs: &dyn CgroupFs, files: &[PathBuf]) -> Result<(), EnvelopeError> {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_micros(20);
    loop {
        let pids = read_pids(fs, files)?;
        if pids.is_empty() {
            return Ok(());
        }
        if pids.contains(&me) {
            return Err(EnvelopeError::RunnerInside {
                pid: me,
                path: files[0].clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(EnvelopeError::Survivors {
                path: files[0].clone(),
                pids,
            });
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions; ESRCH (already gone) is fine.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Kills every task of a non-empty envelope without a freezer: first `pids.max = 0` (the pids
/// controller then refuses every fork and clone inside, so the set of tasks can only shrink; a value
/// below the current count is allowed, it only applies to new tasks), then SIGKILL rounds until
/// `cgroup.procs` is empty. No task can escape the kill by forking in between.
pub(crate) fn seal_and_kill(
    fs: &dyn CgroupFs,
    pids_dir: &Path,
    files: &[PathBuf],
) -> Result<(), EnvelopeError> {
    let max = pids_dir.join("pids.max");
    if let Err(e) = fs.write(&max, "0") {
        // Gone already (its tasks with it) is fine; anything else means the seal is not in place.
        if fs.exists(pids_dir) {
            return Err(EnvelopeError::io("write", &max, e));
        }
    }
    kill_loop(fs, files)
}

impl Drop for Envelope {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            if let Err(e) = self.inner.teardown() {
                tracing::error!(error = %e, path = %self.rel_path, "envelope teardown on drop");
            }
            registry::unregister(self.id);
        }
    }
}
