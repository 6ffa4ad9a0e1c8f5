//! The shim's end of the control socket ([`CONTROL_FD`]): the go byte and the [`Plan`] in, the
//! [`Message`]s out, and a pre-built sandbox's wait for its call.
//!
//! Separate because it is the one conversation with the runner (the wire format is described in
//! `hybox_shim::plan`), used by setup, init and the workload's process alike.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use hybox_shim::plan::{Message, Plan, CALL_BYTE, CONTROL_FD, GO_BYTE, MAX_PLAN_BYTES};

use crate::error::{Result, SetupError};
use crate::sys::{check, Errno};

/// The control socket's fd: [`CONTROL_FD`], until the workload's process moves it out of the way of
/// the fds it is given ([`move_above`]).
static FD: AtomicI32 = AtomicI32::new(CONTROL_FD);

/// The control socket as a `File` that is never closed by a drop (`send` uses it until the end).
fn socket() -> std::mem::ManuallyDrop<std::fs::File> {
    // SAFETY: the fd was dup2'd here by the runner's child (or moved by `move_above`) and this
    // process owns it; ManuallyDrop keeps it open.
    std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(FD.load(Ordering::Relaxed)) })
}

/// Moves the control socket to the lowest free fd at or above `min` (close-on-exec), so that
/// `CONTROL_FD` can be given to the workload; its old number is left to be overwritten.
pub fn move_above(min: i32) -> Result<()> {
    // SAFETY: fcntl on an fd this process owns.
    let fd = check(unsafe { libc::fcntl(FD.load(Ordering::Relaxed), libc::F_DUPFD_CLOEXEC, min) })
        .map_err(|errno| SetupError::PassFds {
            call: "fcntl(control socket, F_DUPFD_CLOEXEC)",
            errno,
        })?;
    FD.store(fd, Ordering::Relaxed);
    Ok(())
}

/// Waits for the go byte, then reads the plan. The runner sends them once the id maps are written and
/// this process is in the run's cgroup; until then the shim waits here, having done nothing.
pub fn read_plan() -> Result<Plan> {
    let mut f = socket();
    let mut head = [0u8; 5];
    f.read_exact(&mut head).map_err(SetupError::ReadGo)?;
    if head[0] != GO_BYTE {
        return Err(SetupError::NotGo(head[0]));
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_PLAN_BYTES {
        return Err(SetupError::PlanTooLarge(len));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf).map_err(SetupError::ReadPlan)?;
    // Only the workload's process and the shim use the socket; the workload itself must not inherit
    // it (with the socket, the workload could forge the shim's messages). The workload's close_range
    // marks it close-on-exec again; this makes it so from the start.
    // SAFETY: fcntl on an fd this process owns.
    check(unsafe { libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC) })
        .map_err(SetupError::ControlCloexec)?;
    serde_json::from_slice(&buf).map_err(SetupError::ParsePlan)
}

/// Sends one message (a JSON line) to the runner.
pub fn send(msg: &Message) {
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    // The result is ignored on purpose: the write fails only when the runner is gone, and then there
    // is nobody to tell; the shim's exit status (125 for a setup error, the workload's status
    // otherwise) still carries the outcome to whoever reaps it.
    let _ = socket().write_all(&line);
}

/// Reports a setup error and exits with 125 (the status the runner reads as "setup failed").
pub fn fail(e: SetupError) -> ! {
    send(&Message::SetupError {
        step: e.to_string(),
    });
    std::process::exit(125)
}

/// A pre-built sandbox's wait: one `read(2)` of [`CALL_BYTE`] from the control socket.
pub fn wait_for_call() -> Result<()> {
    let mut b = 0u8;
    loop {
        // SAFETY: reading one byte into a live u8 from an fd this process owns.
        let n = unsafe { libc::read(FD.load(Ordering::Relaxed), (&mut b as *mut u8).cast(), 1) };
        match n {
            1 => break,
            0 => return Err(SetupError::CallSocketClosed),
            _ => match Errno::last() {
                Errno(libc::EINTR) => continue,
                e => return Err(SetupError::WaitForCall(e)),
            },
        }
    }
    if b != CALL_BYTE {
        return Err(SetupError::UnexpectedCallByte(b));
    }
    Ok(())
}
