//! The raw process plumbing of the native backend: `clone3` into fresh namespaces, the id maps, the
//! pidfd. Everything the child touches between `clone3` and `execveat` is prepared here beforehand; the
//! child itself only makes async-signal-safe raw syscalls (the runner may be multithreaded: no
//! allocation, no locks, no Rust std I/O in the child).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use hybox_shim::plan::{CONTROL_FD, MAX_PASSED_FDS, PASSED_FDS_BASE, WORKLOAD_FD};

use super::join::Joins;
use crate::backend::process::{CloneArgs, CLONE_INTO_CGROUP};

/// Namespaces of a native sandbox. Not CLONE_NEWCGROUP: the shim creates the cgroup namespace after the
/// runner joined it to the run's cgroup, so the namespace is rooted at the run's leaf.
const NAMESPACES: u64 = (libc::CLONE_NEWUSER
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS) as u64;

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `struct __user_cap_header_struct` (linux/capability.h).
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

/// `struct __user_cap_data_struct`; version 3 uses two of them (64 capability bits).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Opens an executable for `execveat` by fd: O_RDONLY|O_CLOEXEC (the exec of a CLOEXEC fd works for
/// ELF files; the file the runner checked is the file that runs).
pub fn open_exec(p: &Path) -> io::Result<OwnedFd> {
    let c = CString::new(p.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path; the returned fd is owned below.
    let fd =
        cvt(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: fd was just opened and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a pointer to two ints.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } as libc::c_long)?;
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Captured stdio: the child's ends (0, 1, 2) and the runner's.
pub struct StdioPipes {
    child: [OwnedFd; 3],
    stdin_w: OwnedFd,
    stdout_r: OwnedFd,
    stderr_r: OwnedFd,
}

impl StdioPipes {
    pub fn new() -> io::Result<StdioPipes> {
        let (in_r, in_w) = pipe()?;
        let (out_r, out_w) = pipe()?;
        let (err_r, err_w) = pipe()?;
        Ok(StdioPipes {
            child: [in_r, out_w, err_w],
            stdin_w: in_w,
            stdout_r: out_r,
            stderr_r: err_r,
        })
    }

    /// The runner's ends; the child's ends close here (so EOF arrives when the sandbox is gone).
    pub fn into_parent(self) -> (OwnedFd, OwnedFd, OwnedFd) {
        (self.stdin_w, self.stdout_r, self.stderr_r)
    }
}

/// A started shim.
pub struct Child {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// The runner's end of the control socket.
    pub control: OwnedFd,
}

/// When hybox runs as root its supplementary groups (often `root` and friends) would stay with the
/// sandbox: `setgroups=deny` in the user namespace stops the shim from clearing them. So the runner
/// drops them itself before clone (glibc's setgroups applies to every thread). A non-root runner's
/// groups map to nothing in the namespace (they show as the overflow gid) and grant only what the
/// caller has anyway.
pub fn drop_supplementary_groups() -> io::Result<()> {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(());
    }
    // SAFETY: a zero-length query.
    let n = unsafe { libc::getgroups(0, std::ptr::null_mut()) };
    if n <= 0 {
        return Ok(());
    }
    nix::unistd::setgroups(&[]).map_err(io::Error::from)
}

/// Starts the shim in fresh namespaces, held at its first read of the control socket until the runner
/// sends the go byte and the plan. With `cgroup` (a cgroup v2 leaf's directory fd) the child is
/// created inside that cgroup (`CLONE_INTO_CGROUP`): it is never outside the envelope, and no
/// migration is needed (a migration takes the cgroup threadgroup lock for writing, which waits for an
/// RCU grace period, milliseconds on a busy host). Returns `Ok(None)` when the kernel does not support
/// that flag, so the caller can fall back to [`spawn`] and join after.
pub fn spawn_into(
    shim: BorrowedFd<'_>,
    workload: &OwnedFd,
    stdio: Option<&StdioPipes>,
    cgroup: &OwnedFd,
    joins: &Joins,
    passed: &[RawFd],
) -> io::Result<Option<Child>> {
    let (parent_sock, args) = prepare(shim, workload, stdio, passed)?;
    let mut pidfd: RawFd = -1;
    let mut clone_args = CloneArgs {
        flags: (NAMESPACES & !joins.flags()) | libc::CLONE_PIDFD as u64 | CLONE_INTO_CGROUP,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..Default::default()
    };
    let blocked = crate::backend::process::SignalsBlocked::new()?;
    // The joined namespaces are this thread's for the clone only (see `join`).
    let entered = joins.enter()?;
    // SAFETY: clone3 without a stack behaves like fork (a copy of the address space); the child only
    // makes raw syscalls on memory prepared before the call, then execs or _exits.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut clone_args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if pid == 0 {
        // SAFETY: the child of a fork-like clone, with `args` prepared before it.
        unsafe { child_after_clone(&args) }
    }
    // errno first: the setns back may change it.
    let pid = cvt(pid);
    let left = entered.leave();
    let pid = match pid {
        Ok(pid) => pid,
        // EINVAL (an unknown flag) or E2BIG (a clone_args without the cgroup field): kernel < 5.7.
        Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL) | Some(libc::E2BIG)) => {
            return Ok(None)
        }
        Err(e) => return Err(e),
    };
    drop(blocked);
    drop(args);
    // SAFETY: the kernel stored a fresh pidfd for us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if let Err(e) = left {
        pidfd_kill(&pidfd);
        let _ = wait_pidfd(&pidfd);
        return Err(io::Error::new(
            e.kind(),
            format!("setns back after the clone: {e}"),
        ));
    }
    Ok(Some(Child {
        pid: pid as i32,
        pidfd,
        control: parent_sock,
    }))
}

/// Starts the shim in fresh namespaces, in the runner's own cgroup (the caller joins it to the
/// envelope before releasing it), held like [`spawn_into`]'s.
///
/// The child shares the runner's memory until it has executed the shim (`CLONE_VM | CLONE_VFORK`, as
/// `posix_spawn` does), instead of getting a copy: copying a large runner's page tables, tearing the
/// copy down again in the child's exec, and the copy-on-write faults the runner then takes on every
/// page it touches cost more than the rest of the clone. The runner's calling thread is suspended
/// until the exec; the kernel dismantles nothing of it afterwards.
pub fn spawn(
    shim: BorrowedFd<'_>,
    workload: &OwnedFd,
    stdio: Option<&StdioPipes>,
    joins: &Joins,
    passed: &[RawFd],
) -> io::Result<Child> {
    let (parent_sock, args) = prepare(shim, workload, stdio, passed)?;
    let mut pidfd: RawFd = -1;
    let flags = (NAMESPACES & !joins.flags()) as libc::c_int | libc::CLONE_PIDFD | libc::SIGCHLD;
    // The joined namespaces are this thread's for the clone only (see `join`).
    let entered = joins.enter()?;
    // SAFETY: `child_after_clone` makes only raw syscalls on `args`, prepared above and alive until
    // the clone returns, and ends in `execveat` or `_exit`.
    let pid = unsafe {
        crate::backend::process::clone_vfork(flags, &|| child_after_clone(&args), Some(&mut pidfd))
    };
    let left = entered.leave();
    let pid = pid?;
    drop(args);
    // SAFETY: the kernel stored a fresh pidfd for us.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    if let Err(e) = left {
        pidfd_kill(&pidfd);
        let _ = wait_pidfd(&pidfd);
        return Err(io::Error::new(
            e.kind(),
            format!("setns back after the clone: {e}"),
        ));
    }
    Ok(Child {
        pid: pid as i32,
        pidfd,
        control: parent_sock,
    })
}

/// The child's exit code when it could not prepare the shim's capabilities or fds.
const CHILD_PREPARE_FAILED: libc::c_int = 126;
/// The child's exit code when `execveat` of the shim failed.
const CHILD_EXEC_FAILED: libc::c_int = 127;

/// Why the shim never ran, from the exit code of a child that ended before sending anything.
pub fn start_failure(code: i32) -> Option<&'static str> {
    match code {
        CHILD_PREPARE_FAILED => Some("preparing the shim's capabilities or fds failed"),
        CHILD_EXEC_FAILED => Some("execveat of the shim failed"),
        _ => None,
    }
}

/// Everything the child touches between the clone and `execveat`, prepared before it.
struct ChildArgs {
    sock: RawFd,
    workload: RawFd,
    shim: RawFd,
    stdio: Option<[RawFd; 3]>,
    /// The fds the workload is given (`Plan::passed_fds`), `n_passed` of them.
    passed: [RawFd; MAX_PASSED_FDS],
    n_passed: usize,
    argv: [*const libc::c_char; 2],
    envp: [*const libc::c_char; 1],
    // The fds above stay open while the child may use them: the child's socket end is owned here.
    _child_sock: OwnedFd,
}

fn prepare(
    shim: BorrowedFd<'_>,
    workload: &OwnedFd,
    stdio: Option<&StdioPipes>,
    passed: &[RawFd],
) -> io::Result<(OwnedFd, ChildArgs)> {
    // At most MAX_PASSED_FDS: `prepare_sandbox` refuses more before anything is opened.
    let mut passed_fds = [-1; MAX_PASSED_FDS];
    passed_fds[..passed.len()].copy_from_slice(passed);
    let mut socks = [0; 2];
    // SAFETY: a pointer to two ints.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            socks.as_mut_ptr(),
        )
    } as libc::c_long)?;
    // SAFETY: both fds were just created.
    let (parent_sock, child_sock) = unsafe {
        (
            OwnedFd::from_raw_fd(socks[0]),
            OwnedFd::from_raw_fd(socks[1]),
        )
    };
    let args = ChildArgs {
        sock: child_sock.as_raw_fd(),
        workload: workload.as_raw_fd(),
        shim: shim.as_raw_fd(),
        stdio: stdio.map(|s| {
            [
                s.child[0].as_raw_fd(),
                s.child[1].as_raw_fd(),
                s.child[2].as_raw_fd(),
            ]
        }),
        passed: passed_fds,
        n_passed: passed.len(),
        argv: [c"hybox-shim".as_ptr(), std::ptr::null()],
        envp: [std::ptr::null()],
        _child_sock: child_sock,
    };
    Ok((parent_sock, args))
}

/// The child between the clone and `execveat` of the shim (which then waits for the go byte).
///
/// # Safety
/// Only call in the child of the clone, with `args` prepared before it. It makes raw syscalls only:
/// the runner may be multithreaded (no allocation, no locks, no Rust std I/O) and, for [`spawn`],
/// shares this memory.
unsafe fn child_after_clone(args: &ChildArgs) -> ! {
    // SAFETY: raw syscalls on fds and memory owned by this process; see the function's contract.
    unsafe {
        // Die with the runner (kept across the exec: no set-id, no file capabilities).
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        // The shim runs as a uid that is not 0 in the namespace (uid 0 is not mapped: one host id is
        // all the sandbox gets), so execve would drop the capabilities the new user namespace gave us.
        // Raising them as ambient keeps them across the exec of the shim (capabilities(7)); they are
        // capabilities over this namespace only, and the shim clears them for the workload.
        let mut hdr = CapHeader {
            version: 0x2008_0522,
            pid: 0,
        };
        let mut data = [CapData::default(); 2];
        if libc::syscall(
            libc::SYS_capget,
            &mut hdr as *mut CapHeader,
            data.as_mut_ptr(),
        ) != 0
        {
            libc::_exit(CHILD_PREPARE_FAILED);
        }
        data[0].inheritable = data[0].permitted;
        data[1].inheritable = data[1].permitted;
        if libc::syscall(libc::SYS_capset, &mut hdr as *mut CapHeader, data.as_ptr()) != 0 {
            libc::_exit(CHILD_PREPARE_FAILED);
        }
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0 {
                break;
            }
        }
        // Move every fd high first (CLOEXEC), so the dup2s below cannot clobber one another.
        let hi = |fd: RawFd| libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 100);
        let (sock, wl, shim) = (hi(args.sock), hi(args.workload), hi(args.shim));
        let stdio = args.stdio.map(|s| [hi(s[0]), hi(s[1]), hi(s[2])]);
        if sock < 0 || wl < 0 || shim < 0 {
            libc::_exit(CHILD_PREPARE_FAILED);
        }
        let mut passed = [-1; MAX_PASSED_FDS];
        for (to, from) in passed.iter_mut().zip(&args.passed[..args.n_passed]) {
            *to = hi(*from);
            if *to < 0 {
                libc::_exit(CHILD_PREPARE_FAILED);
            }
        }
        // At PASSED_FDS_BASE.. for the shim (a dup2 clears close-on-exec on its target).
        for (i, fd) in passed[..args.n_passed].iter().enumerate() {
            if libc::dup2(*fd, PASSED_FDS_BASE + i as RawFd) < 0 {
                libc::_exit(CHILD_PREPARE_FAILED);
            }
        }
        if libc::dup2(sock, CONTROL_FD) < 0 || libc::dup2(wl, WORKLOAD_FD) < 0 {
            libc::_exit(CHILD_PREPARE_FAILED);
        }
        if let Some(s) = stdio {
            for (i, fd) in s.iter().enumerate() {
                if *fd < 0 || libc::dup2(*fd, i as RawFd) < 0 {
                    libc::_exit(CHILD_PREPARE_FAILED);
                }
            }
        }
        libc::syscall(
            libc::SYS_execveat,
            shim,
            c"".as_ptr(),
            args.argv.as_ptr(),
            args.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(CHILD_EXEC_FAILED)
    }
}

/// Writes `setgroups=deny`, then the one-id `uid_map` and `gid_map` (sandbox id → one unprivileged
/// host id, never 0).
pub fn write_id_maps(pid: i32, uid: u32, gid: u32, host_uid: u32, host_gid: u32) -> io::Result<()> {
    if host_uid == 0 || host_gid == 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "refusing to map the sandbox to host id 0",
        ));
    }
    let proc = Path::new("/proc").join(pid.to_string());
    std::fs::write(proc.join("setgroups"), "deny")?;
    std::fs::write(proc.join("uid_map"), format!("{uid} {host_uid} 1\n"))?;
    std::fs::write(proc.join("gid_map"), format!("{gid} {host_gid} 1\n"))?;
    Ok(())
}

/// SIGKILL through the pidfd (no pid reuse race).
pub fn pidfd_kill(pidfd: &OwnedFd) {
    // SAFETY: a pidfd we own, a signal constant, no siginfo.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
}

/// How the shim ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitStatus {
    Exited(i32),
    Signaled(i32),
}

/// Reaps the shim.
pub fn wait_pidfd(pidfd: &OwnedFd) -> io::Result<WaitStatus> {
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: P_PIDFD with a pidfd we own and a live siginfo_t.
        let r = unsafe {
            libc::waitid(
                libc::P_PIDFD,
                pidfd.as_raw_fd() as libc::id_t,
                &mut info,
                libc::WEXITED,
            )
        };
        if r == -1 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // SAFETY: waitid filled a SIGCHLD siginfo.
        let status = unsafe { info.si_status() };
        return Ok(if info.si_code == libc::CLD_EXITED {
            WaitStatus::Exited(status)
        } else {
            WaitStatus::Signaled(status)
        });
    }
}
