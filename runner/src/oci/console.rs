//! `process.terminal`: the monitor opens a pty, sends its master over `create`'s
//! `--console-socket` (an `SCM_RIGHTS` message whose data is the pty's name, as runc sends it:
//! containerd's shim then copies between the master and the user's terminal), and makes the slave
//! its stdin, stdout and stderr, which the container's process inherits.

use std::io::IoSlice;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// In the monitor, before it reports readiness: the pty, its master sent, the slave as stdio.
pub fn give_pty(socket: &Path) -> std::io::Result<()> {
    let pty = nix::pty::openpty(None, None).map_err(std::io::Error::from)?;
    let name = pty_name(&pty.slave)?;
    let stream = UnixStream::connect(socket)?;
    let fds = [pty.master.as_raw_fd()];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &[IoSlice::new(name.as_bytes())],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(std::io::Error::from)?;
    drop(pty.master);
    for target in 0..=2 {
        // SAFETY: dup2 onto the standard fds of this (single-threaded, freshly forked) monitor;
        // the slave stays open until the loop ends.
        if unsafe { libc::dup2(pty.slave.as_raw_fd(), target) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    drop::<OwnedFd>(pty.slave);
    Ok(())
}

/// The slave's path (`/dev/pts/N`), the data of the message containerd reads with the fd.
fn pty_name(slave: &OwnedFd) -> std::io::Result<String> {
    let link = format!("/proc/self/fd/{}", slave.as_raw_fd());
    Ok(std::fs::read_link(link)?.display().to_string())
}
