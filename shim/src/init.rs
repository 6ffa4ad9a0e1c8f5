//! The shim as the sandbox's init (PID 1 of its pid namespace), once `setup` is done: it forks the
//! workload's process, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to it, reaps every orphan, and when
//! the workload ends reports how (`Exited` or `Signaled`) and exits with the same status.
//!
//! Separate from `workload`, which is what the forked child does: the two processes share nothing
//! after the fork but the control socket. Init executes no workload input, only
//! `sigwaitinfo`/`waitpid`/`kill`/`write`, so it runs without seccomp; its exit kills whatever is
//! left in the pid namespace.

use hybox_shim::plan::{Message, Plan, WORKLOAD_FD};

use crate::control::{fail, send};
use crate::error::SetupError;
use crate::sys::{sigprocmask, sigset, Errno};
use crate::workload;

/// The signals init passes on to the workload (a pid namespace's init receives only the signals it
/// handles, so without forwarding they would be lost).
const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Forks the workload, forwards signals, reaps, reports, exits.
pub fn supervise(plan: &Plan) -> ! {
    let mut waited = vec![libc::SIGCHLD];
    waited.extend(FORWARDED);
    let set = sigset(&waited);
    // Block before fork so no SIGCHLD is lost; the child unblocks before exec.
    if let Err(e) = sigprocmask(libc::SIG_BLOCK, &set) {
        fail(SetupError::BlockSignals(e));
    }
    // SAFETY: the shim is single-threaded, so the child may do anything after fork.
    let child = unsafe { libc::fork() };
    if child == -1 {
        fail(SetupError::Fork(Errno::last()));
    }
    if child == 0 {
        let e = workload::run(plan);
        send(&Message::SetupError {
            step: e.to_string(),
        });
        // SAFETY: leave without running the atexit handlers this copy of the process inherited.
        unsafe { libc::_exit(125) };
    }
    // The workload's fd is the child's business now. The result is ignored on purpose: close can only
    // fail here with EBADF (nothing open to close) or EINTR (Linux has released the fd anyway), and
    // init never executes anything, so an fd it keeps open gives nobody access to it.
    // SAFETY: closing an fd this process owns and does not use again.
    unsafe { libc::close(WORKLOAD_FD) };
    // The fds given to the workload are its own: init keeps no copy (a pipe's reader sees its end
    // when the workload closes it). Ignored results as above.
    for i in 0..plan.passed_fds as i32 {
        // SAFETY: closing fds this process received for the workload and does not use.
        unsafe { libc::close(hybox_shim::plan::PASSED_FDS_BASE + i) };
    }
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: live sigset_t and siginfo_t.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig == -1 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // The result is ignored on purpose: kill can only fail with ESRCH once the child is
            // reaped, and init reaps it only to report and exit (a zombie still accepts signals).
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        reap(child);
    }
}

/// Reaps every child that has ended; when the workload is among them, reports it and exits with its
/// status (128 + the signal for a signal death, as a shell would).
fn reap(child: libc::pid_t) {
    loop {
        let mut status = 0;
        // SAFETY: a pointer to a live int.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if pid != child {
            continue;
        }
        if libc::WIFEXITED(status) {
            let code = libc::WEXITSTATUS(status);
            send(&Message::Exited { code });
            std::process::exit(code);
        }
        if libc::WIFSIGNALED(status) {
            let signal = libc::WTERMSIG(status);
            send(&Message::Signaled { signal });
            std::process::exit(128 + signal);
        }
    }
}
