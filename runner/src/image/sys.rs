//! The few system calls the image code needs that nix does not wrap safely: an xattr on an fd, and
//! the mounts of a run's root.

use std::ffi::CString;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::path::Path;

use nix::errno::Errno;

/// `fsetxattr(fd, name, value, 0)`.
pub(crate) fn fsetxattr(fd: BorrowedFd<'_>, name: &str, value: &[u8]) -> Result<(), Errno> {
    let name = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: fd is a live descriptor borrowed for the call; name is a NUL-terminated string and
    // value a valid buffer of value.len() bytes, both outliving the call; the kernel only reads them.
    let r = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}

/// `lgetxattr(path, name)`: whether the attribute is set to `value` (tests and inspection).
pub fn has_xattr(path: &Path, name: &str, value: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let (Ok(p), Ok(n)) = (
        CString::new(path.as_os_str().as_bytes()),
        CString::new(name),
    ) else {
        return false;
    };
    let mut buf = [0u8; 16];
    // SAFETY: p and n are NUL-terminated strings and buf a writable buffer of buf.len() bytes, all
    // alive for the call; the kernel writes at most buf.len() bytes into buf.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    r >= 0 && &buf[..r as usize] == value
}

/// `lgetxattr(path, name)`: the attribute's value (at most 64 bytes), `None` if it is not set.
pub(crate) fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: p and n are NUL-terminated strings and buf a writable buffer of buf.len() bytes, all
    // alive for the call; the kernel writes at most buf.len() bytes into buf.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

/// `lsetxattr(path, name, value, 0)` (the union's tests).
#[cfg(test)]
pub(crate) fn set_xattr(path: &Path, name: &str, value: &[u8]) -> Result<(), Errno> {
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    let n = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: NUL-terminated strings and a valid buffer of value.len() bytes, alive for the call.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Errno::last())
    }
}
