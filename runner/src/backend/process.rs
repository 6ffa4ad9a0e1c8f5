//! Starting hybox's processes the way `posix_spawn` does: the child shares the caller's memory until
//! its exec (`CLONE_VM | CLONE_VFORK`, `clone_vfork`) instead of getting a copy of it. For a runner
//! as large as hybox, copying its page tables, tearing that copy down again in the child's exec, and
//! the copy-on-write faults the caller then takes cost more than the rest of the start. [`spawn`]
//! starts a program (the wasm worker); `native::spawn` starts the shim with `clone_vfork` too.
//!
//! `std::process::Command` cannot do this once a step must run between clone and exec (it forks), and
//! it cannot create namespaces at clone time; both are needed here.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicI32, Ordering};

/// The stack the child runs on until its exec (it needs well under 4 KiB).
const CHILD_STACK_BYTES: usize = 64 * 1024;

/// Every signal blocked in the calling thread while it clones, restored on drop. The child inherits
/// the full mask and keeps it through its exec, so no handler of the caller's can run in the child
/// (which, sharing the caller's memory, would run it on the caller's data); the program started sets
/// its own mask first thing ([`unblock_all_signals`]).
pub(crate) struct SignalsBlocked(libc::sigset_t);

impl SignalsBlocked {
    pub(crate) fn new() -> io::Result<SignalsBlocked> {
        // SAFETY: sigset_t is plain data, initialised by sigfillset / written by pthread_sigmask.
        unsafe {
            let mut all: libc::sigset_t = std::mem::zeroed();
            let mut old: libc::sigset_t = std::mem::zeroed();
            libc::sigfillset(&mut all);
            match libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old) {
                0 => Ok(SignalsBlocked(old)),
                e => Err(io::Error::from_raw_os_error(e)),
            }
        }
    }
}

impl Drop for SignalsBlocked {
    fn drop(&mut self) {
        // SAFETY: restores the mask saved by `new`.
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &self.0, std::ptr::null_mut()) };
    }
}

/// The first thing a helper started by [`spawn`] does: it was started with every signal blocked.
pub fn unblock_all_signals() {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
}

/// A started helper process; reaped by [`Spawned::wait`].
#[derive(Debug)]
pub struct Spawned {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl Spawned {
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// SIGKILL (a no-op once reaped: the pid may belong to someone else by then).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: kill with our unreaped child's pid (a zombie keeps it) and a signal constant.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for the process to end (once; later calls return the same status).
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        if let Some(s) = self.status {
            return Ok(s);
        }
        let mut raw = 0;
        loop {
            // SAFETY: waitpid on our own child with a live out-parameter.
            if unsafe { libc::waitpid(self.pid, &mut raw, 0) } == self.pid {
                let s = ExitStatus::from_raw(raw);
                self.status = Some(s);
                return Ok(s);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

/// Runs `child` in a new process that shares this memory until it executes a program or exits
/// (`CLONE_VM | CLONE_VFORK`, as `posix_spawn` does), on a stack of its own, with every signal blocked
/// ([`SignalsBlocked`]). `flags` adds namespaces, `CLONE_PIDFD` (then `pidfd` receives the child's
/// pidfd) and the exit signal. Returns once the child has exec'd or exited, with its pid.
///
/// # Safety
/// `child` runs while the calling thread is suspended, on this process's memory: raw,
/// async-signal-safe syscalls only (no allocation, no locks, no Rust std I/O), and it must end in an
/// exec or `_exit`, never return or unwind.
pub(crate) unsafe fn clone_vfork(
    flags: libc::c_int,
    child: &dyn Fn(),
    pidfd: Option<&mut RawFd>,
) -> io::Result<libc::pid_t> {
    extern "C" fn trampoline(arg: *mut libc::c_void) -> libc::c_int {
        // SAFETY: `arg` points to the `&dyn Fn()` that `clone_vfork` keeps alive until this child
        // exec'd or exited.
        let child = unsafe { &*arg.cast::<&dyn Fn()>() };
        child();
        // `child` ends in an exec or `_exit`; this is never reached.
        127
    }
    // 16-byte aligned; the stack grows down from its end.
    let mut stack = vec![0u128; CHILD_STACK_BYTES / 16];
    let top = stack.as_mut_ptr_range().end.cast::<libc::c_void>();
    let ptid = pidfd.map_or(std::ptr::null_mut(), |p| p as *mut RawFd);
    let blocked = SignalsBlocked::new()?;
    // SAFETY: glibc's clone runs `trampoline` on `stack` in a child that shares this address space;
    // with CLONE_VFORK this thread resumes only once the child exec'd or exited, so `child` and
    // `stack` outlive every use of them; `ptid` receives the pidfd with CLONE_PIDFD.
    let pid = unsafe {
        libc::clone(
            trampoline,
            top,
            flags | libc::CLONE_VM | libc::CLONE_VFORK,
            (&child as *const &dyn Fn()).cast_mut().cast(),
            ptid,
        )
    };
    let clone_error = io::Error::last_os_error();
    drop(blocked);
    drop(stack);
    if pid < 0 {
        return Err(clone_error);
    }
    Ok(pid)
}

/// What to start: `program` with `args` (argv[0] is the program's path), an empty environment.
pub struct Program<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    /// Namespaces (`CLONE_NEW*`) the child is created in.
    pub namespaces: libc::c_int,
    /// stdin and stdout on /dev/null (stderr is always inherited).
    pub null_stdin_stdout: bool,
}

struct ChildArgs<'a> {
    path: &'a CString,
    argv: &'a [*const libc::c_char],
    envp: [*const libc::c_char; 1],
    null_stdin_stdout: bool,
    prepare: &'a (dyn Fn() -> io::Result<()> + Sync),
    /// The child's errno when `prepare` or the exec failed (the caller waits until the child has
    /// exec'd or exited, so it reads this after the child wrote it).
    error: AtomicI32,
}

/// Starts `program`. `prepare` runs in the child right before the exec: it arranges the fds and, in
/// new namespaces, whatever must be done with the namespace's capabilities before they go.
///
/// # Safety
/// `prepare` runs in a child that shares this process's memory while the calling thread is
/// suspended: it may only make raw, async-signal-safe syscalls (no allocation, no locks, no Rust std
/// I/O) and must not unwind.
pub unsafe fn spawn(
    p: &Program<'_>,
    prepare: &(dyn Fn() -> io::Result<()> + Sync),
) -> io::Result<Spawned> {
    let path = CString::new(p.program.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let args: Vec<CString> = p
        .args
        .iter()
        .map(|a| CString::new(*a).map_err(io::Error::other))
        .collect::<Result<_, _>>()?;
    let mut argv: Vec<*const libc::c_char> = std::iter::once(path.as_ptr())
        .chain(args.iter().map(|a| a.as_ptr()))
        .collect();
    argv.push(std::ptr::null());
    let child = ChildArgs {
        path: &path,
        argv: &argv,
        envp: [std::ptr::null()],
        null_stdin_stdout: p.null_stdin_stdout,
        prepare,
        error: AtomicI32::new(0),
    };
    let flags = p.namespaces | libc::SIGCHLD;
    // SAFETY: `child_entry` makes only raw syscalls on `child`, prepared above, and execs or exits;
    // `prepare` is bound by this function's own contract.
    let pid = unsafe { clone_vfork(flags, &|| child_entry(&child), None) }?;
    let mut spawned = Spawned { pid, status: None };
    match child.error.load(Ordering::Acquire) {
        0 => Ok(spawned),
        errno => {
            let _ = spawned.wait();
            Err(io::Error::from_raw_os_error(errno))
        }
    }
}

/// The child of [`spawn`]: `prepare`, stdio on /dev/null if asked, `execve`.
fn child_entry(c: &ChildArgs) -> ! {
    let fail = |e: io::Error| -> ! {
        c.error
            .store(e.raw_os_error().unwrap_or(libc::EINVAL), Ordering::Release);
        // SAFETY: ends this child without running any of the parent's exit handlers.
        unsafe { libc::_exit(127) }
    };
    if let Err(e) = (c.prepare)() {
        fail(e);
    }
    // After `prepare` has put its fds in place: one of them may have been 0 or 1 in the caller.
    if c.null_stdin_stdout {
        // SAFETY: open of a static NUL-terminated path; dup2/close between fds of this process.
        unsafe {
            let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
            if null < 0 || libc::dup2(null, 0) < 0 || libc::dup2(null, 1) < 0 {
                fail(io::Error::last_os_error());
            }
            if null > 1 {
                libc::close(null);
            }
        }
    }
    // SAFETY: a NUL-terminated path and NULL-terminated argv/envp arrays prepared before the clone.
    unsafe { libc::execve(c.path.as_ptr(), c.argv.as_ptr(), c.envp.as_ptr()) };
    fail(io::Error::last_os_error())
}
