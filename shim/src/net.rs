//! The sandbox's own UTS and network namespaces: its hostname, and its loopback interface brought up
//! when the policy allows loopback networking.
//!
//! Separate from the mounts because it touches no path: the network namespace the runner created
//! holds only `lo`, down, and no route; bringing `lo` up is the only network setup there is.

use crate::error::{Result, SetupError};
use crate::sys::{check, Errno};

/// The policy's hostname, in the sandbox's own UTS namespace (the host's name does not leak in).
pub fn set_hostname(hostname: &str) -> Result<()> {
    // SAFETY: pointer and length of a live byte slice.
    check(unsafe { libc::sethostname(hostname.as_ptr().cast(), hostname.len()) })
        .map(drop)
        .map_err(SetupError::Hostname)
}

/// Sets IFF_UP on `lo` (SIOCGIFFLAGS, then SIOCSIFFLAGS). The namespace starts with `lo` down, so
/// without this even loopback connections fail.
pub fn loopback_up() -> Result<()> {
    let fd = check(
        // SAFETY: socket with constant arguments.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
    )
    .map_err(SetupError::LoopbackSocket)?;
    let result = set_up(fd);
    // The result of close is ignored on purpose: the socket only carried two ioctls, so there is
    // nothing close could report, and on Linux the fd is released even when close fails.
    // SAFETY: fd is this function's socket, not used again.
    unsafe { libc::close(fd) };
    result
}

fn set_up(fd: libc::c_int) -> Result<()> {
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: a socket fd, a request constant and a pointer to a live ifreq.
    if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) } == -1 {
        return Err(SetupError::LoopbackGetFlags(Errno::last()));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
    // SAFETY: as above.
    if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) } == -1 {
        return Err(SetupError::LoopbackSetFlags(Errno::last()));
    }
    Ok(())
}
