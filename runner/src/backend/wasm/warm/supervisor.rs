//! A warm function's worker process, seen from the supervisor: started (`hybox __wasm-worker
//! --serve`, an empty environment, only its two pipes), given its load job, sent calls, killed.
//! Moving it into the function's envelope between its start and its load is the caller's
//! ([`super::WarmFunction`]).

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitStatus;
use std::time::Duration;

use super::SERVE_ARG;
use crate::backend::process::Spawned;
use crate::backend::wasm::protocol::{self, CallRequest, Frame, LoadReply, ProtocolError};
use crate::backend::wasm::{place_worker_fds, Job, WorkerExe, WORKER_SUBCOMMAND};
use crate::backend::BackendError;

/// The running worker: the process and its pidfd, the request pipe's write end, the reply pipe's
/// read end.
pub(super) struct Worker {
    child: Spawned,
    /// Readable once the worker has ended (pidfd_open(2)): how a worker that died while idle (the
    /// OOM killer, an admin's SIGKILL, a crash) is noticed before a call is handed to it.
    pidfd: OwnedFd,
    requests: File,
    replies: File,
}

impl Worker {
    /// Starts the worker, blocked reading its load job; in `private_net`'s namespaces (a loopback
    /// worker's own network namespace, see `netns`) with `lo` up, unless 0.
    pub(super) fn spawn(exe: &WorkerExe, private_net: libc::c_int) -> std::io::Result<Worker> {
        let (req_r, req_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let (rep_r, rep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
        let mut child = spawn_serve_worker(exe, &req_r, &rep_w, private_net)?;
        // SAFETY: pidfd_open of our own unreaped child (its pid cannot be reused before we reap it).
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::new(e.kind(), format!("pidfd_open: {e}")));
        }
        // SAFETY: a fresh fd the kernel just returned, owned by nobody else.
        let pidfd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        Ok(Worker {
            child,
            pidfd,
            requests: File::from(req_w),
            replies: File::from(rep_r),
        })
    }

    /// The worker's pid.
    pub(super) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the worker has ended (its pidfd is readable), without waiting.
    pub(super) fn has_ended(&self) -> bool {
        let mut p = libc::pollfd {
            fd: self.pidfd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: poll of one pollfd that lives across the call, no timeout.
        let r = unsafe { libc::poll(&mut p, 1, 0) };
        r > 0 && p.revents & (libc::POLLIN | libc::POLLHUP) != 0
    }

    /// Kills the worker and reaps it.
    pub(super) fn kill(self) {
        let _ = self.reap();
    }

    /// Kills the worker and reaps it; how it ended.
    pub(super) fn reap(mut self) -> std::io::Result<ExitStatus> {
        let _ = self.child.kill();
        self.child.wait()
    }

    /// Sends the load job and waits up to `wait` for the answer: the load's details, or why the
    /// guest did not load (the worker is then killed).
    pub(super) fn load(
        mut self,
        job: &Job,
        wait: Duration,
    ) -> Result<(Worker, crate::report::details::WasmDetails), BackendError> {
        let warm_load = |why: String| BackendError::WarmLoad {
            artifact: job.artifact.clone(),
            why,
        };
        if let Err(source) = protocol::write_job(&mut self.requests, job, &[]) {
            self.kill();
            return Err(BackendError::WarmWorker {
                step: "send the load job to the warm wasm worker".into(),
                source,
            });
        }
        let frame =
            match protocol::read_frame_within(&mut self.replies, wait, protocol::MAX_ANSWER_JSON) {
                Ok(Some(f)) => f,
                Ok(None) => {
                    self.kill();
                    return Err(warm_load(format!(
                        "no answer to the load job within {wait:?}"
                    )));
                }
                Err(source) => {
                    let status = self.reap();
                    return Err(BackendError::WarmWorker {
                        step: format!(
                            "read the load answer of the warm wasm worker (worker exit: {status:?})"
                        ),
                        source,
                    });
                }
            };
        match frame.message::<LoadReply>("load answer") {
            Ok(LoadReply {
                error: None,
                details,
            }) => Ok((self, details)),
            Ok(LoadReply {
                error: Some(why), ..
            }) => {
                self.kill();
                Err(warm_load(why))
            }
            Err(source) => {
                self.kill();
                Err(BackendError::WarmWorker {
                    step: "read the load answer of the warm wasm worker".into(),
                    source,
                })
            }
        }
    }

    /// Sends one call (its stdin as the frame's raw bytes) and waits up to `wait` for the answer,
    /// of at most `max` bytes. `Ok(None)`: no answer in time.
    pub(super) fn call(
        &mut self,
        req: &CallRequest,
        stdin: &[u8],
        wait: Duration,
        max: u64,
    ) -> Result<Option<Frame>, ProtocolError> {
        protocol::write_frame(&mut self.requests, req, &[stdin])?;
        protocol::read_frame_within(&mut self.replies, wait, max)
    }
}

/// Starts `hybox __wasm-worker --serve` with the request pipe at fd 3, the reply pipe at fd 4, no other
/// fds, an empty environment, stdin and stdout on /dev/null (the guest's stdio is captured per call),
/// stderr inherited for the worker's own diagnostics.
fn spawn_serve_worker(
    exe: &WorkerExe,
    req_r: &OwnedFd,
    rep_w: &OwnedFd,
    private_net: libc::c_int,
) -> std::io::Result<Spawned> {
    let (j, r) = (req_r.as_raw_fd(), rep_w.as_raw_fd());
    let program = crate::backend::process::Program {
        program: exe.fd(),
        name: exe.path(),
        args: &[WORKER_SUBCOMMAND, SERVE_ARG],
        namespaces: private_net,
        null_stdin_stdout: true,
    };
    let prepare = move || {
        if private_net != 0 {
            crate::backend::wasm::netns::loopback_up()?;
        }
        // SAFETY: in the child before exec, with both pipe ends open.
        unsafe { place_worker_fds(j, r, true) }
    };
    // SAFETY: `prepare` makes only raw syscalls (socket, ioctl, close, fcntl, dup2, close_range),
    // allocates nothing and cannot panic.
    unsafe { crate::backend::process::spawn(&program, &prepare) }
}
