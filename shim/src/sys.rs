//! Thin wrappers over the raw libc calls the shim makes: [`Errno`] (an errno shown by name), [`check`]
//! (a `-1` return into the errno), [`cstr`] (a path as a C string) and the few calls used by more than
//! one module (`mount`, creating an empty file, `symlink`, signal sets).
//!
//! Separate so that the modules of the setup steps read as steps: every `unsafe` block for these
//! calls, with its `SAFETY:` argument, is here once. Nothing here knows which step it serves; the
//! callers map an [`Errno`] into the step's own [`SetupError`](crate::error::SetupError) variant.

use std::ffi::{CStr, CString};
use std::fmt;
use std::path::Path;

/// An errno, displayed by name ("EINVAL") as the setup error vocabulary promises
/// (`<step>: <ERRNO>`, e.g. "pivot_root: EINVAL").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The calling thread's errno, right after a failed call.
    pub fn last() -> Errno {
        Errno(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            libc::EPERM => "EPERM",
            libc::ENOENT => "ENOENT",
            libc::ESRCH => "ESRCH",
            libc::EINTR => "EINTR",
            libc::EIO => "EIO",
            libc::E2BIG => "E2BIG",
            libc::ENOEXEC => "ENOEXEC",
            libc::EBADF => "EBADF",
            libc::ECHILD => "ECHILD",
            libc::EAGAIN => "EAGAIN",
            libc::ENOMEM => "ENOMEM",
            libc::EACCES => "EACCES",
            libc::EFAULT => "EFAULT",
            libc::EBUSY => "EBUSY",
            libc::EEXIST => "EEXIST",
            libc::EXDEV => "EXDEV",
            libc::ENODEV => "ENODEV",
            libc::ENOTDIR => "ENOTDIR",
            libc::EISDIR => "EISDIR",
            libc::EINVAL => "EINVAL",
            libc::EMFILE => "EMFILE",
            libc::ETXTBSY => "ETXTBSY",
            libc::ENOSPC => "ENOSPC",
            libc::EROFS => "EROFS",
            libc::ENAMETOOLONG => "ENAMETOOLONG",
            libc::ENOSYS => "ENOSYS",
            libc::ELOOP => "ELOOP",
            libc::EOPNOTSUPP => "EOPNOTSUPP",
            n => return write!(f, "errno {n}"),
        };
        f.write_str(name)
    }
}

/// A raw libc call's result: `-1` → the errno.
pub fn check(ret: libc::c_int) -> Result<libc::c_int, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// A path as a C string.
pub fn cstr(p: &Path) -> CString {
    // Paths from the plan come from validated policy paths and JSON strings: no interior NUL. Should one
    // appear, the empty path makes the syscall fail with ENOENT rather than touch another path.
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

/// `mount(2)`; `None` is a null pointer.
pub fn mount(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> Result<(), Errno> {
    let src = src.map(cstr);
    let dst = cstr(dst);
    // SAFETY: every pointer is either null or a NUL-terminated string that outlives the call.
    let ret = unsafe {
        libc::mount(
            src.as_ref().map_or(std::ptr::null(), |s| s.as_ptr()),
            dst.as_ptr(),
            fstype.map_or(std::ptr::null(), |s| s.as_ptr()),
            flags,
            data.map_or(std::ptr::null(), |s| s.as_ptr().cast()),
        )
    };
    check(ret).map(drop)
}

/// Creates an empty file (or opens an existing one) at `p`: the mount point of a file bind.
pub fn create_file(p: &Path, mode: libc::mode_t) -> Result<(), Errno> {
    let c = cstr(p);
    // SAFETY: a NUL-terminated path; the fd is closed right away.
    let fd = check(unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode,
        )
    })?;
    // The result of close is ignored on purpose: nothing was written through this fd, so there is no
    // data whose loss close could report, and on Linux the fd is released even when close fails.
    // SAFETY: fd was just opened by this function and is not used again.
    unsafe { libc::close(fd) };
    Ok(())
}

/// `symlink(2)`: a link at `link` whose content is `target`.
pub fn symlink(target: &Path, link: &Path) -> Result<(), Errno> {
    let (t, l) = (cstr(target), cstr(link));
    // SAFETY: two NUL-terminated paths.
    check(unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) }).map(drop)
}

/// A signal set holding exactly `signals`.
pub fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a live sigset_t; sigemptyset and sigaddset only fail for an invalid signal
    // number, and the callers pass libc's constants.
    unsafe {
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
    }
    set
}

/// `sigprocmask(how, set)`, the old mask not needed.
pub fn sigprocmask(how: libc::c_int, set: &libc::sigset_t) -> Result<(), Errno> {
    // SAFETY: a live sigset_t; a null old-mask pointer is allowed.
    check(unsafe { libc::sigprocmask(how, set, std::ptr::null_mut()) }).map(drop)
}

/// The device number of the character device open as `fd`, if it is one (`fstat`).
pub fn char_device_of(fd: libc::c_int) -> Option<libc::dev_t> {
    // SAFETY: all-zero is a valid `stat`; fstat writes it and reads nothing else.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` outlives the call; a bad fd is an error return, not UB.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return None;
    }
    (st.st_mode & libc::S_IFMT == libc::S_IFCHR).then_some(st.st_rdev)
}
