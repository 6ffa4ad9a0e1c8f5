//! Starting hybox's processes the way `posix_spawn` does: the child shares the caller's memory until
//! its exec (`CLONE_VM | CLONE_VFORK`, `clone_vfork`) instead of getting a copy of it. For a runner
//! as large as hybox, copying its page tables, tearing that copy down again in the child's exec, and
//! the copy-on-write faults the caller then takes cost more than the rest of the start. [`spawn`]
//! starts a program (the wasm worker); `native::spawn` starts the shim with `clone_vfork` too.
//!
//! `std::process::Command` cannot do this once a step must run between clone and exec (it forks), and
//! it cannot create namespaces at clone time; both are needed here.
//!
//! [`fork`] is the other way: a copy of the caller that runs a function instead of a program, for the
//! hybox CLI's one-shot wasm worker, where a second hybox's exec and runtime start would be most of
//! the run (see [`WorkerStart`](crate::backend::wasm::WorkerStart)).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
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

/// What to start: the executable open at `program` (executed by fd, `execveat(AT_EMPTY_PATH)`:
/// the file opened is the file that runs) with `args` (argv[0] is `name`), an empty environment.
pub struct Program<'a> {
    pub program: BorrowedFd<'a>,
    pub name: &'a Path,
    pub args: &'a [&'a str],
    /// Namespaces (`CLONE_NEW*`) the child is created in.
    pub namespaces: libc::c_int,
    /// stdin and stdout on /dev/null (stderr is always inherited).
    pub null_stdin_stdout: bool,
}

struct ChildArgs<'a> {
    exe: RawFd,
    argv: &'a [*const libc::c_char],
    envp: [*const libc::c_char; 1],
    null_stdin_stdout: bool,
    prepare: &'a (dyn Fn() -> io::Result<()> + Sync),
    /// The child's errno when `prepare` or the exec failed (the caller waits until the child has
    /// exec'd or exited, so it reads this after the child wrote it). Only a child that shares the
    /// caller's memory can report here; one that does not writes the errno to `error_pipe`.
    error: AtomicI32,
    /// The write end of a close-on-exec pipe for a child with its own memory ([`spawn_into`]), or -1.
    error_pipe: RawFd,
}

/// Starts `program`. `prepare` runs in the child right before the exec: it arranges the fds (it may
/// mark any fd close-on-exec, but must close none above 2 it did not place: the program's own fd is
/// one) and, in new namespaces, whatever must be done with the namespace's capabilities before they go.
///
/// # Safety
/// `prepare` runs in a child that shares this process's memory while the calling thread is
/// suspended: it may only make raw, async-signal-safe syscalls (no allocation, no locks, no Rust std
/// I/O) and must not unwind.
pub unsafe fn spawn(
    p: &Program<'_>,
    prepare: &(dyn Fn() -> io::Result<()> + Sync),
) -> io::Result<Spawned> {
    let (path, args) = strings(p)?;
    let argv = argv(&path, &args);
    let child = ChildArgs {
        exe: p.program.as_raw_fd(),
        argv: &argv,
        envp: [std::ptr::null()],
        null_stdin_stdout: p.null_stdin_stdout,
        prepare,
        error: AtomicI32::new(0),
        error_pipe: -1,
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

fn strings(p: &Program<'_>) -> io::Result<(CString, Vec<CString>)> {
    let path = CString::new(p.name.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let args: Vec<CString> = p
        .args
        .iter()
        .map(|a| CString::new(*a).map_err(io::Error::other))
        .collect::<Result<_, _>>()?;
    Ok((path, args))
}

fn argv(path: &CString, args: &[CString]) -> Vec<*const libc::c_char> {
    let mut argv: Vec<*const libc::c_char> = std::iter::once(path.as_ptr())
        .chain(args.iter().map(|a| a.as_ptr()))
        .collect();
    argv.push(std::ptr::null());
    argv
}

/// `CLONE_INTO_CGROUP` (Linux 5.7, linux/sched.h): the child starts in the cgroup v2 directory
/// whose fd is `clone_args.cgroup`, so it is never outside it and nothing is migrated.
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (linux/sched.h), up to the `cgroup` field (version 2).
#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub(crate) flags: u64,
    pub(crate) pidfd: u64,
    pub(crate) child_tid: u64,
    pub(crate) parent_tid: u64,
    pub(crate) exit_signal: u64,
    pub(crate) stack: u64,
    pub(crate) stack_size: u64,
    pub(crate) tls: u64,
    pub(crate) set_tid: u64,
    pub(crate) set_tid_size: u64,
    pub(crate) cgroup: u64,
}

/// Starts `program` as [`spawn`] does, but created inside the cgroup v2 directory open at `cgroup`
/// (`clone3(CLONE_INTO_CGROUP)`): the process is never outside that cgroup, and no migration is
/// needed (a migration takes the cgroup threadgroup lock for writing, which waits for an RCU grace
/// period, milliseconds on a busy host). The child gets a copy of the address space (clone3 takes
/// no function to run on a new stack) and the caller waits until it has exec'd or exited
/// (`CLONE_VFORK`); a failure of `prepare` or of the exec comes back through a close-on-exec pipe.
/// `Ok(None)` when the kernel does not know the flag (before 5.7): the caller spawns and migrates.
///
/// # Safety
/// As [`spawn`]: `prepare` may only make raw, async-signal-safe syscalls (the caller may be
/// multithreaded and the child is a copy of it) and must not unwind.
pub unsafe fn spawn_into(
    p: &Program<'_>,
    prepare: &(dyn Fn() -> io::Result<()> + Sync),
    cgroup: BorrowedFd<'_>,
) -> io::Result<Option<Spawned>> {
    let (path, args) = strings(p)?;
    let argv = argv(&path, &args);
    let mut fds = [0; 2];
    // SAFETY: a pointer to two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (err_r, err_w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let child = ChildArgs {
        exe: p.program.as_raw_fd(),
        argv: &argv,
        envp: [std::ptr::null()],
        null_stdin_stdout: p.null_stdin_stdout,
        prepare,
        error: AtomicI32::new(0),
        error_pipe: err_w.as_raw_fd(),
    };
    let mut clone_args = CloneArgs {
        flags: p.namespaces as u64 | libc::CLONE_VFORK as u64 | CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    let blocked = SignalsBlocked::new()?;
    // SAFETY: clone3 without a stack behaves like fork (a copy of the address space); the child
    // only makes raw syscalls on memory prepared before the call, then execs or _exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut clone_args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        child_entry(&child);
    }
    let clone_error = io::Error::last_os_error();
    drop(blocked);
    drop(err_w);
    if pid < 0 {
        return match clone_error.raw_os_error() {
            // EINVAL (an unknown flag) or E2BIG (a clone_args without the cgroup field): < 5.7.
            Some(libc::EINVAL) | Some(libc::E2BIG) => Ok(None),
            _ => Err(clone_error),
        };
    }
    let mut spawned = Spawned {
        pid: pid as libc::pid_t,
        status: None,
    };
    let mut errno = [0u8; 4];
    match std::io::Read::read(&mut std::fs::File::from(err_r), &mut errno) {
        Ok(4) => {
            let _ = spawned.wait();
            Err(io::Error::from_raw_os_error(i32::from_ne_bytes(errno)))
        }
        _ => Ok(Some(spawned)),
    }
}

/// The child of [`spawn`]: `prepare`, stdio on /dev/null if asked, `execveat` of the program's fd.
fn child_entry(c: &ChildArgs) -> ! {
    // The error pipe above every fd `prepare` places (it may hold one of the numbers it takes).
    let pipe = match c.error_pipe {
        // SAFETY: fcntl on an fd of this process.
        fd if fd >= 0 => unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100) },
        _ => -1,
    };
    let fail = move |e: io::Error| -> ! {
        let errno = e.raw_os_error().unwrap_or(libc::EINVAL);
        c.error.store(errno, Ordering::Release);
        if pipe >= 0 {
            // SAFETY: write of 4 bytes from a live local to the pipe's write end.
            unsafe { libc::write(pipe, errno.to_ne_bytes().as_ptr().cast(), 4) };
        }
        // SAFETY: ends this child without running any of the parent's exit handlers.
        unsafe { libc::_exit(127) }
    };
    // The executable's fd above every fd `prepare` places (it may be one of the numbers it takes).
    // SAFETY: fcntl on an fd of this process.
    let exe = unsafe { libc::fcntl(c.exe, libc::F_DUPFD_CLOEXEC, 100) };
    if exe < 0 {
        fail(io::Error::last_os_error());
    }
    if let Err(e) = (c.prepare)() {
        fail(e);
    }
    // After `prepare` has put its fds in place: one of them may have been 0 or 1 in the caller.
    if c.null_stdin_stdout {
        if let Err(e) = stdin_stdout_to_dev_null() {
            fail(e);
        }
    }
    // SAFETY: an open fd, an empty NUL-terminated path and NULL-terminated argv/envp arrays prepared
    // before the clone. `prepare` leaves `exe` open (close-on-exec: it goes at the exec).
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            exe,
            c"".as_ptr(),
            c.argv.as_ptr(),
            c.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    fail(io::Error::last_os_error())
}

/// Puts /dev/null at fds 0 and 1 (stderr stays). Raw syscalls only, no allocation: usable between
/// `clone_vfork` and exec as well as in a forked child.
pub(crate) fn stdin_stdout_to_dev_null() -> io::Result<()> {
    // SAFETY: open of a static NUL-terminated path; dup2/close between fds of this process.
    unsafe {
        // Not O_CLOEXEC: when fd 0 was free the open lands there, dup2(0, 0) keeps the flag, and
        // stdin would close at the exec.
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null < 0 {
            return Err(io::Error::last_os_error());
        }
        let placed = libc::dup2(null, 0) >= 0 && libc::dup2(null, 1) >= 0;
        let error = io::Error::last_os_error();
        if null > 1 {
            libc::close(null);
        }
        if !placed {
            return Err(error);
        }
    }
    Ok(())
}

/// In a child before it runs anything: SIGKILL when the thread that started it ends (the
/// supervisor waits for the child on that thread, so that is the supervisor's death), so that a
/// supervisor killed with SIGKILL (an OCI monitor, a `hybox run`) leaves no child running in the
/// envelope. `parent` is the supervisor's pid before the fork: a child whose parent is already gone
/// ends at once. Async-signal-safe (prctl, getppid, kill).
pub(crate) fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: getppid cannot fail.
    if unsafe { libc::getppid() } != parent {
        // SAFETY: signalling this very process.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
    Ok(())
}

/// Runs `body` in a forked copy of this process (no exec) and returns its handle; the child exits
/// with `body`'s return value (101 if it panics). In the child, before `prepare` and `body`:
/// - every signal handler of the caller is reset to the default (a handler such as the CLI's signal
///   teardown would otherwise act on the caller's behalf: write to its self-pipe), and the signal
///   mask is emptied;
/// - the caller's environment is zeroed in place and cleared, so the copy does not carry the user's
///   variables (a program started by [`spawn`] gets an empty environment; this is the same).
///
/// `prepare` arranges the child's fds; if it fails, the child writes why to stderr and exits 125.
/// The child ends with `_exit` after flushing Rust's stdout: no exit handler or destructor of the
/// caller's runs twice (a `TempDir` of the caller's is not removed by the child).
///
/// # Safety
/// Only one thread survives a fork. The caller must know that no other thread of the process holds
/// a lock `prepare` or `body` needs (glibc's malloc is reset for the child by glibc itself). The hybox
/// CLI qualifies: its only other thread is the signal teardown, blocked reading its self-pipe. (A
/// panic in the child takes std's backtrace lock: a thread of the caller's panicking at the moment
/// of the fork would make the child's panic wait forever.)
pub(crate) unsafe fn fork(
    prepare: &dyn Fn() -> io::Result<()>,
    body: &dyn Fn() -> i32,
) -> io::Result<Spawned> {
    // Rust's own stdout buffer is copied too; flushed first so the child does not print it again.
    let _ = std::io::Write::flush(&mut std::io::stdout());
    let blocked = SignalsBlocked::new()?;
    // SAFETY: fork; the child runs only this function's child branch and ends in `_exit`.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        reset_signal_handlers();
        scrub_environment();
        unblock_all_signals();
        let code = match prepare() {
            Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(body)).unwrap_or(101),
            Err(e) => {
                eprintln!("hybox: preparing the forked child: {e}");
                125
            }
        };
        let _ = std::io::Write::flush(&mut std::io::stdout());
        // SAFETY: ends the child without the caller's exit handlers.
        unsafe { libc::_exit(code) }
    }
    let fork_error = io::Error::last_os_error();
    drop(blocked);
    if pid < 0 {
        return Err(fork_error);
    }
    Ok(Spawned { pid, status: None })
}

/// In a forked child: every caught signal back to its default action (ignored ones stay ignored, as
/// across an exec).
fn reset_signal_handlers() {
    for sig in 1..=libc::SIGRTMAX() {
        if sig == libc::SIGKILL || sig == libc::SIGSTOP {
            continue;
        }
        // SAFETY: sigaction queries then sets a plain-data struct for a valid signal number.
        unsafe {
            let mut old: libc::sigaction = std::mem::zeroed();
            if libc::sigaction(sig, std::ptr::null(), &mut old) == 0
                && old.sa_sigaction != libc::SIG_DFL
                && old.sa_sigaction != libc::SIG_IGN
            {
                let mut dfl: libc::sigaction = std::mem::zeroed();
                dfl.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(sig, &dfl, std::ptr::null_mut());
            }
        }
    }
}

extern "C" {
    /// The process's environment (POSIX); not exported by the `libc` crate for Linux.
    static mut environ: *mut *mut libc::c_char;
}

/// In a forked child: overwrite every `NAME=value` string of the environment with zeros, then clear
/// it. Clearing alone would leave the strings readable in memory.
fn scrub_environment() {
    // SAFETY: the single thread of a fresh child walks the NULL-terminated `environ` array, zeroing
    // each NUL-terminated string in place (on the initial stack or the heap, both writable), then
    // empties it with clearenv; nothing else reads the environment concurrently.
    unsafe {
        let mut p = environ;
        while !p.is_null() && !(*p).is_null() {
            let s = *p;
            std::ptr::write_bytes(s, 0, libc::strlen(s));
            p = p.add(1);
        }
        libc::clearenv();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bits a forked child reports back through its exit code.
    const ENV_NOT_EMPTY: i32 = 1;
    const ENV_STRING_READABLE: i32 = 2;
    const HANDLER_KEPT: i32 = 4;
    const MASK_NOT_EMPTY: i32 = 8;

    #[test]
    fn a_forked_child_carries_no_environment_handler_or_mask_of_the_caller() {
        // A handler of the caller's (as the CLI's signal teardown installs) and a string of its
        // environment whose bytes the child must not be able to read.
        // SAFETY: registers a handler that does nothing; SIGUSR2 is used by nothing else in hybox.
        unsafe { signal_hook::low_level::register(libc::SIGUSR2, || {}) }.unwrap();
        // SAFETY: reads the first entry of the caller's environment (cargo test always has one).
        let first = unsafe { *environ };
        assert!(!first.is_null());
        // SAFETY: a NUL-terminated string of the environment, not modified in this process.
        let len = unsafe { libc::strlen(first) };
        let body = move || {
            let mut bits = 0;
            // SAFETY: the child is single-threaded; these read plain data of its own.
            unsafe {
                if !environ.is_null() && !(*environ).is_null() {
                    bits |= ENV_NOT_EMPTY;
                }
                if std::slice::from_raw_parts(first.cast::<u8>(), len)
                    .iter()
                    .any(|&b| b != 0)
                {
                    bits |= ENV_STRING_READABLE;
                }
                let mut old: libc::sigaction = std::mem::zeroed();
                libc::sigaction(libc::SIGUSR2, std::ptr::null(), &mut old);
                if old.sa_sigaction != libc::SIG_DFL {
                    bits |= HANDLER_KEPT;
                }
                let mut mask: libc::sigset_t = std::mem::zeroed();
                libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut mask);
                if libc::sigismember(&mask, libc::SIGTERM) == 1 {
                    bits |= MASK_NOT_EMPTY;
                }
            }
            bits
        };
        // SAFETY: the child's body reads only its own memory (no lock another test could hold).
        let mut child = unsafe { fork(&|| Ok(()), &body) }.unwrap();
        let status = child.wait().unwrap();
        assert_eq!(status.code(), Some(0), "bits: {status:?}");
        // The caller's own environment is untouched.
        // SAFETY: the same environment string, in this process, where nothing modified it.
        let ours = unsafe { std::slice::from_raw_parts(first.cast::<u8>(), len) };
        assert!(ours.iter().any(|&b| b != 0));

        // Its exit code: the body's, 125 when `prepare` failed, 101 when the body panicked. (In this
        // test, not one of its own: a panic in a forked child waits for std's backtrace lock, which
        // another test thread panicking at the moment of the fork would hold forever; see `fork`.)
        let code = |prepare: &dyn Fn() -> io::Result<()>, body: &dyn Fn() -> i32| {
            // SAFETY: trivial bodies that take no lock.
            let mut c = unsafe { fork(prepare, body) }.unwrap();
            c.wait().unwrap().code()
        };
        assert_eq!(code(&|| Ok(()), &|| 7), Some(7));
        assert_eq!(
            code(&|| Err(io::Error::from_raw_os_error(libc::EBADF)), &|| 0),
            Some(125)
        );
        assert_eq!(code(&|| Ok(()), &|| panic!("in the child")), Some(101));
    }
}
