//! The executable a wasm worker is started from: the running executable itself, by fd.
//!
//! The worker is `hybox __wasm-worker`, so the supervisor must exec a binary that dispatches that
//! subcommand. Finding it by name (a `hybox` beside the current executable) breaks as soon as the
//! binary is installed under another name (`hybox-0.1`, a distro's versioned name, a copy), and a
//! path names whatever file is there at exec time, not the one that is running. So the worker is
//! executed from `/proc/self/exe` opened once (the kernel's magic link resolves to the inode this
//! process was started from, even after the file on disk was replaced or removed), with
//! `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`.
//!
//! Only an executable that dispatches `__wasm-worker` may be re-executed this way: the hybox binary
//! says so with [`this_executable_runs_the_worker`] first thing in `main`. A library embedder's own
//! process is not hybox: it sets [`HostConfig::hybox_path`](crate::HostConfig::hybox_path) to a
//! hybox binary, else a wasm run fails with [`BackendError::WorkerBinary`] saying so.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use crate::backend::BackendError;
use crate::host::HostConfig;

/// Whether this process's executable dispatches `__wasm-worker` (the hybox binary's `main` says so).
static RUNS_THE_WORKER: AtomicBool = AtomicBool::new(false);

/// `/proc/self/exe`, opened at the first use and kept for the process's life (close-on-exec), with
/// its device and inode (to tell whether the fd number still holds it: a process that closes every
/// fd it does not know, as a daemon or the OCI monitor does after its fork, may have closed it and
/// had the number reused) and the path it named then (for argv[0] and messages).
static SELF_EXE: OnceLock<Result<SelfExe, i32>> = OnceLock::new();

struct SelfExe {
    fd: OwnedFd,
    id: (u64, u64),
    path: PathBuf,
}

/// The device and inode of an open file.
fn file_id(fd: BorrowedFd<'_>) -> Option<(u64, u64)> {
    // SAFETY: a zeroed stat is a valid out-parameter for fstat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat of an fd number with a live out-parameter; a closed fd gives EBADF.
    (unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } == 0).then_some((st.st_dev, st.st_ino))
}

/// Declares that this process's executable is hybox (its `main` dispatches `__wasm-worker` before
/// anything else), so wasm workers are this very executable, whatever it is called. Opens
/// `/proc/self/exe` right away: nothing done to the file on disk later changes what runs.
pub fn this_executable_runs_the_worker() {
    RUNS_THE_WORKER.store(true, Ordering::Release);
    let _ = self_exe();
}

/// Whether this process's executable runs the worker itself ([`this_executable_runs_the_worker`]).
pub fn runs_the_worker() -> bool {
    RUNS_THE_WORKER.load(Ordering::Acquire)
}

/// The name of the hybox binary a program without the worker (`hybox-runc`) runs its wasm workers
/// from: in the same directory as that program, as both are installed (docs/oci.md).
pub const SIBLING: &str = "hybox";

/// Opens the hybox binary beside this process's executable ([`SIBLING`]), for `execveat`: what a
/// program that does not run the worker itself starts wasm workers from. Its fd, or why it cannot
/// be used (naming the file).
pub fn open_sibling() -> Result<OwnedFd, String> {
    let me = std::fs::read_link("/proc/self/exe").map_err(|e| format!("/proc/self/exe: {e}"))?;
    let path = me.with_file_name(SIBLING);
    let why = |e: &dyn std::fmt::Display| {
        format!(
            "the wasm worker's binary {} (the hybox binary, installed beside {}): {e}",
            path.display(),
            me.display()
        )
    };
    let fd = open_exec(&path).map_err(|e| why(&e))?;
    // Checked now, not at the exec: the caller reports a missing worker before anything runs.
    let mode = nix::sys::stat::fstat(&fd).map_err(|e| why(&e))?.st_mode;
    if mode & 0o111 == 0 {
        return Err(why(&"not executable"));
    }
    Ok(fd)
}

fn self_exe() -> &'static Result<SelfExe, i32> {
    SELF_EXE.get_or_init(|| {
        let path = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "hybox".into());
        let fd = open_exec(Path::new("/proc/self/exe"))
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
        let id = file_id(fd.as_fd()).ok_or(libc::EBADF)?;
        Ok(SelfExe { fd, id, path })
    })
}

/// Opens an executable for `execveat` by fd: `O_RDONLY | O_CLOEXEC` (an ELF file executes from a
/// close-on-exec fd; only a script would need the fd to survive the exec).
fn open_exec(p: &Path) -> std::io::Result<OwnedFd> {
    use std::os::unix::fs::OpenOptionsExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(p)?;
    Ok(OwnedFd::from(f))
}

/// What a worker is executed from.
#[derive(Debug)]
pub enum WorkerExe {
    /// This very executable (`/proc/self/exe`, opened once).
    SelfExe {
        fd: BorrowedFd<'static>,
        path: &'static Path,
    },
    /// `HostConfig::hybox_path`, or `/proc/self/exe` again when the fd kept open was closed by
    /// someone else; opened for this start.
    Override { fd: OwnedFd, path: PathBuf },
}

impl WorkerExe {
    /// The fd to `execveat`.
    pub fn fd(&self) -> BorrowedFd<'_> {
        match self {
            WorkerExe::SelfExe { fd, .. } => *fd,
            WorkerExe::Override { fd, .. } => fd.as_fd(),
        }
    }

    /// The path it was opened from: the worker's argv[0], and what error messages name.
    pub fn path(&self) -> &Path {
        match self {
            WorkerExe::SelfExe { path, .. } => path,
            WorkerExe::Override { path, .. } => path,
        }
    }
}

/// The executable to start a worker from: `host.hybox_path` if set (opened now, so the file checked
/// is the file that runs), else this executable if it is hybox, else an error naming what to set.
pub fn worker_exe(host: &HostConfig) -> Result<WorkerExe, BackendError> {
    if let Some(p) = &host.hybox_path {
        let fd = open_exec(p).map_err(|source| BackendError::Io {
            step: format!(
                "open the wasm worker binary {} (HostConfig.hybox_path)",
                p.display()
            ),
            source,
        })?;
        return Ok(WorkerExe::Override {
            fd,
            path: p.clone(),
        });
    }
    if !runs_the_worker() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap_or_else(|_| "this program".into());
        return Err(BackendError::WorkerBinary { exe });
    }
    let reopen = |path: PathBuf| {
        // The magic link still names the inode this process runs from, whatever is on disk now.
        open_exec(Path::new("/proc/self/exe"))
            .map(|fd| WorkerExe::Override { fd, path })
            .map_err(|source| BackendError::Io {
                step: "open /proc/self/exe, the wasm worker's executable".into(),
                source,
            })
    };
    match self_exe() {
        Ok(e) if file_id(e.fd.as_fd()) == Some(e.id) => Ok(WorkerExe::SelfExe {
            fd: e.fd.as_fd(),
            path: &e.path,
        }),
        // The fd number no longer holds it (closed, maybe reused by someone else's file).
        Ok(e) => reopen(e.path.clone()),
        Err(_) => reopen("hybox".into()),
    }
}
