//! A captured native run's stdio, pumped by the thread that waits for the shim: stdin fed from the
//! caller's bytes, stdout and stderr drained into capped buffers, all three non-blocking and polled
//! together with the control socket and the pidfd (`poll_run`), so a run needs no thread per pipe.

use std::os::fd::{AsRawFd, OwnedFd};

/// A captured stream as the run reports it: (the bytes kept, how many were written, truncated).
pub(super) type Output = (Vec<u8>, u64, bool);

/// Captured output of one stream: the first `max` bytes kept, all of them counted.
#[derive(Default)]
struct Captured {
    kept: Vec<u8>,
    total: u64,
    max: u64,
}

impl Captured {
    fn take(&mut self, bytes: &[u8]) {
        let room = self.max.saturating_sub(self.kept.len() as u64) as usize;
        self.kept.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.total += bytes.len() as u64;
    }

    fn done(self) -> Output {
        let truncated = self.total > self.kept.len() as u64;
        (self.kept, self.total, truncated)
    }
}

/// The runner's ends of a captured run's stdio, non-blocking: stdin fed from `input`, stdout and
/// stderr drained into [`Captured`] buffers. A pipe is closed (`None`) once done.
pub(super) struct Pump {
    stdin: Option<OwnedFd>,
    input: Vec<u8>,
    written: usize,
    out: Option<OwnedFd>,
    err: Option<OwnedFd>,
    captured: [Captured; 2],
    chunk: Vec<u8>,
}

impl Pump {
    pub(super) fn new(
        stdin: OwnedFd,
        input: Vec<u8>,
        out: OwnedFd,
        out_max: u64,
        err: OwnedFd,
        err_max: u64,
    ) -> Pump {
        for fd in [&stdin, &out, &err] {
            // SAFETY: fcntl on fds we own; O_NONBLOCK only changes how our reads and writes wait.
            unsafe {
                let fl = libc::fcntl(fd.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
        }
        Pump {
            // Nothing to write: the workload sees the end of its stdin at once.
            stdin: (!input.is_empty()).then_some(stdin),
            input,
            written: 0,
            out: Some(out),
            err: Some(err),
            captured: [
                Captured {
                    max: out_max,
                    ..Default::default()
                },
                Captured {
                    max: err_max,
                    ..Default::default()
                },
            ],
            chunk: vec![0u8; 64 * 1024],
        }
    }

    /// stdin (for writing), stdout, stderr (for reading), in that order, -1 for a closed one.
    pub(super) fn pollfds(&self) -> [libc::pollfd; 3] {
        let fd = |f: &Option<OwnedFd>| f.as_ref().map_or(-1, |f| f.as_raw_fd());
        [
            libc::pollfd {
                fd: fd(&self.stdin),
                events: libc::POLLOUT,
                revents: 0,
            },
            libc::pollfd {
                fd: fd(&self.out),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: fd(&self.err),
                events: libc::POLLIN,
                revents: 0,
            },
        ]
    }

    /// Acts on what `poll` reported for [`Pump::pollfds`].
    pub(super) fn serve(&mut self, ready: &[libc::pollfd]) {
        if ready[0].revents != 0 {
            self.feed();
        }
        for (i, r) in ready[1..].iter().enumerate() {
            if r.revents != 0 {
                self.drain(i);
            }
        }
    }

    fn feed(&mut self) {
        let Some(fd) = &self.stdin else { return };
        while self.written < self.input.len() {
            let rest = &self.input[self.written..];
            // SAFETY: a write from a live buffer to an fd we own.
            let n = unsafe { libc::write(fd.as_raw_fd(), rest.as_ptr().cast(), rest.len()) };
            if n > 0 {
                self.written += n as usize;
                continue;
            }
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EAGAIN) => return,
                Some(libc::EINTR) => continue,
                // EPIPE: the workload does not read its stdin, which is not an error of the run.
                _ => break,
            }
        }
        self.stdin = None;
    }

    /// Reads stream `i` (0 stdout, 1 stderr) until it would block or ends.
    fn drain(&mut self, i: usize) {
        let slot = if i == 0 { &mut self.out } else { &mut self.err };
        let Some(fd) = slot.as_ref() else { return };
        loop {
            // SAFETY: a read into a live buffer from an fd we own.
            let n = unsafe {
                libc::read(
                    fd.as_raw_fd(),
                    self.chunk.as_mut_ptr().cast(),
                    self.chunk.len(),
                )
            };
            if n > 0 {
                self.captured[i].take(&self.chunk[..n as usize]);
                continue;
            }
            if n < 0 {
                match std::io::Error::last_os_error().raw_os_error() {
                    Some(libc::EAGAIN) => return,
                    Some(libc::EINTR) => continue,
                    _ => {}
                }
            }
            // The end (or an error): closed.
            *slot = None;
            return;
        }
    }

    /// Stops feeding stdin and drains stdout and stderr to their ends: ((stdout...), (stderr...)).
    pub(super) fn finish(mut self) -> (Output, Output) {
        self.stdin = None;
        while self.out.is_some() || self.err.is_some() {
            let mut fds = self.pollfds();
            // SAFETY: a pointer to three live pollfds (closed ones are -1 and ignored).
            let n = unsafe { libc::poll(fds.as_mut_ptr(), 3, -1) };
            if n < 0 && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
                break;
            }
            if n > 0 {
                self.serve(&fds);
            }
        }
        let [out, err] = self.captured;
        (out.done(), err.done())
    }
}
