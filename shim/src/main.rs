//! hybox-shim: PID 1 of a native sandbox.
//!
//! The runner starts this binary (by fd, `execveat`; hybox embeds it, statically linked) as the first
//! process of fresh user, mount, pid, net, ipc and uts namespaces. The shim first waits for the go
//! byte on [`CONTROL_FD`], which the runner sends once it wrote the id maps and joined this process to
//! the run's cgroup (so the shim's own start overlaps that work), then reads the [`Plan`], builds the
//! sandbox in the order of `shared/security.md` ([`setup`] for the shared part, [`exec_workload`] for the workload's own process), then stays as
//! init: it reaps orphans, forwards SIGTERM/SIGINT/SIGHUP/SIGQUIT to the workload and, when the
//! workload ends, reports its status to the runner and exits (which kills whatever is left in the pid
//! namespace).
//!
//! Which process gets what:
//! - the shim (init) keeps its capabilities *within the sandbox's user namespace* (they grant nothing
//!   on the host: the namespace maps one unprivileged host id) and runs without seccomp: it executes no
//!   workload input, only `sigwaitinfo`/`waitpid`/`kill`/`write`. It is non-dumpable, so the workload
//!   (another uid, no capabilities) can neither ptrace it nor open its `/proc/1/exe`, `/proc/1/mem` or
//!   fds (CVE-2019-5736); and as a pid namespace's init it only receives signals it handles.
//! - the workload's process (forked by the shim) drops everything: close_range, ids, capabilities,
//!   no_new_privs, Landlock, and seccomp last, then `execveat` of the runner-opened fd.

use std::ffi::{CStr, CString};
use std::fmt;
use std::io::{Read, Write};
use std::os::fd::{BorrowedFd, FromRawFd};
use std::path::{Path, PathBuf};

use hybox_shim::plan::{
    Bind, LandlockMode, LandlockStatus, Message, Plan, CONTROL_FD, GO_BYTE, MAX_PLAN_BYTES,
    WORKLOAD_FD,
};

/// The type of setrlimit's resource argument: glibc declares its own enum type, musl an int.
#[cfg(target_env = "gnu")]
type RlimitResource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type RlimitResource = libc::c_int;

/// statvfs's `ST_RELATIME` (linux/statfs.h), which the libc crate has for glibc only.
const ST_RELATIME: libc::c_ulong = 0x400;

/// An errno, displayed by name ("EINVAL") as the setup error vocabulary promises.
#[derive(Debug, Clone, Copy)]
struct Errno(i32);

impl Errno {
    fn last() -> Errno {
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

/// A setup step that failed: one variant per step of `shared/security.md`, each naming the step and
/// the errno. The message is what the run report shows as `setup_error(...)`.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("read plan: {0}")]
    ReadPlan(String),
    #[error("prctl(PR_SET_DUMPABLE): {0}")]
    Dumpable(Errno),
    #[error("unshare(CLONE_NEWCGROUP): {0}")]
    CgroupNs(Errno),
    #[error("make / private: {0}")]
    PrivateRoot(Errno),
    #[error("mount root tmpfs: {0}")]
    RootTmpfs(Errno),
    #[error("pivot_root: {0}")]
    PivotRoot(Errno),
    #[error("mount point {0}: {1}")]
    MountPoint(String, Errno),
    #[error("bind {0}: {1}")]
    Bind(String, Errno),
    #[error("remount read-only {0}: {1}")]
    RemountRo(String, Errno),
    #[error("remount read-only {0}: the read-only flag did not stick")]
    RemountRoCheck(String),
    #[error("symlink {0}: {1}")]
    Symlink(String, Errno),
    #[error("mount /tmp: {0}")]
    Tmp(Errno),
    #[error("mount /proc: {0}")]
    Proc(Errno),
    #[error("mask {0}: {1}")]
    ProcMask(String, Errno),
    #[error("mount /dev: {0}")]
    Dev(Errno),
    #[error("umount old root: {0}")]
    DetachOldRoot(Errno),
    #[error("remount / read-only: {0}")]
    RootRo(Errno),
    #[error("chdir {0}: {1}")]
    Chdir(String, Errno),
    #[error("getcwd: expected {expected}, found {found}")]
    Getcwd { expected: String, found: String },
    #[error("sethostname: {0}")]
    Hostname(Errno),
    #[error("loopback up: {0}")]
    Loopback(Errno),
    #[error("setrlimit({0}): {1}")]
    Rlimit(&'static str, Errno),
    #[error("setsid: {0}")]
    Setsid(Errno),
    #[error("block signals: {0}")]
    Sigmask(Errno),
    #[error("fork workload: {0}")]
    Fork(Errno),
    #[error("close_range: {0}")]
    CloseRange(Errno),
    #[error("drop capability bounding set: {0}")]
    CapsBounding(String),
    #[error("setresgid: {0}")]
    Setresgid(Errno),
    #[error("setresuid: {0}")]
    Setresuid(Errno),
    #[error("drop capabilities: {0}")]
    Caps(String),
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(Errno),
    #[error("landlock: {0}")]
    Landlock(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("wait for the call: {0}")]
    WaitForCall(String),
    #[error("execveat: {0}")]
    Exec(Errno),
}

type Result<T> = std::result::Result<T, SetupError>;

/// Runs a raw libc call: `-1` → the errno, mapped by `err` into the step's variant.
fn check(ret: libc::c_int, err: impl FnOnce(Errno) -> SetupError) -> Result<libc::c_int> {
    if ret == -1 {
        Err(err(Errno::last()))
    } else {
        Ok(ret)
    }
}

fn cstr(p: &Path) -> CString {
    // Paths from the plan come from validated policy paths and JSON strings: no interior NUL. Should one
    // appear, the empty path makes the syscall fail with ENOENT rather than touch another path.
    CString::new(p.as_os_str().as_encoded_bytes()).unwrap_or_default()
}

fn mount(
    src: Option<&Path>,
    dst: &Path,
    fstype: Option<&CStr>,
    flags: libc::c_ulong,
    data: Option<&CStr>,
) -> std::result::Result<(), Errno> {
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
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

fn send(msg: &Message) {
    let mut line = serde_json::to_vec(msg).unwrap_or_default();
    line.push(b'\n');
    // SAFETY: CONTROL_FD is the control socket this process owns; ManuallyDrop keeps it open.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(CONTROL_FD) });
    // If the runner is gone there is nobody to tell; the exit status still carries the outcome.
    let _ = f.write_all(&line);
}

fn main() {
    match setup() {
        Ok((plan, landlock_hint)) => supervise(&plan, landlock_hint),
        Err(e) => {
            send(&Message::SetupError {
                step: e.to_string(),
            });
            std::process::exit(125);
        }
    }
}

/// Steps 6-10 of `shared/security.md`, in order, for the whole sandbox. Returns the plan for the
/// workload's own steps.
fn setup() -> Result<(Plan, ())> {
    // The runner cloned us with every signal blocked (so none of its handlers could run in the child
    // before this exec); the shim's own mask is set below, on top of an empty one.
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    // 6. Non-dumpable until exec: no ptrace, no /proc/1/{mem,exe,fd} for anyone but real root.
    check(
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) },
        SetupError::Dumpable,
    )?;
    let plan = read_plan()?;
    // Become the sandbox's ids now, keeping the namespace's capabilities (the runner raised them as
    // ambient; the uid we start with is not the namespace's 0, so the switch does not clear them): the
    // sandbox's own tmpfs only accepts files owned by ids mapped in its user namespace.
    check(
        // SAFETY: integer ids.
        unsafe { libc::setresgid(plan.gid, plan.gid, plan.gid) },
        SetupError::Setresgid,
    )?;
    check(
        // SAFETY: integer ids.
        unsafe { libc::setresuid(plan.uid, plan.uid, plan.uid) },
        SetupError::Setresuid,
    )?;

    // The cgroup namespace is rooted where the runner put us (the run's leaf), so it is created here,
    // after the join, not at clone time.
    check(
        // SAFETY: unshare with a flag constant.
        unsafe { libc::unshare(libc::CLONE_NEWCGROUP) },
        SetupError::CgroupNs,
    )?;

    // 7. Mounts.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(SetupError::PrivateRoot)?;
    let base = Path::new("/tmp");
    let data =
        CString::new(format!("size={},mode=0755", plan.root_tmpfs_bytes)).unwrap_or_default();
    mount(
        Some(Path::new("tmpfs")),
        base,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&data),
    )
    .map_err(SetupError::RootTmpfs)?;
    mkdir(&base.join(".oldroot"), 0o700)?;
    pivot_root(base, &base.join(".oldroot"))?;
    // From here on the host's tree is under /.oldroot; the tmpfs is /.
    let old = Path::new("/.oldroot");
    for b in plan.rootfs.iter().chain(&plan.mounts) {
        bind(old, b)?;
    }
    for (target, link) in &plan_links(&plan) {
        let (t, l) = (cstr(target), cstr(link));
        // SAFETY: two NUL-terminated paths.
        check(unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) }, |e| {
            SetupError::Symlink(link.display().to_string(), e)
        })?;
    }
    if let Some(size) = plan.tmp_bytes {
        mkdir_p(Path::new("/tmp"))?;
        let data = CString::new(format!("size={size},mode=1777")).unwrap_or_default();
        mount(
            Some(Path::new("tmpfs")),
            Path::new("/tmp"),
            Some(c"tmpfs"),
            libc::MS_NOSUID | libc::MS_NODEV,
            Some(&data),
        )
        .map_err(SetupError::Tmp)?;
    }
    mount_dev(old)?;
    mount_proc()?;
    // Detach the host's tree: nothing of it stays reachable by path.
    let oldc = cstr(old);
    check(
        // SAFETY: a NUL-terminated path and a flag.
        unsafe { libc::umount2(oldc.as_ptr(), libc::MNT_DETACH) },
        SetupError::DetachOldRoot,
    )?;
    check(
        // SAFETY: a NUL-terminated path.
        unsafe { libc::rmdir(oldc.as_ptr()) },
        SetupError::DetachOldRoot,
    )?;
    // The root tmpfs only holds mount points: make it read-only.
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(SetupError::RootRo)?;
    let wd = cstr(&plan.workdir);
    // SAFETY: a NUL-terminated path.
    check(unsafe { libc::chdir(wd.as_ptr()) }, |e| {
        SetupError::Chdir(plan.workdir.display().to_string(), e)
    })?;
    let found = std::env::current_dir()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| e.to_string());
    if Path::new(&found) != plan.workdir {
        return Err(SetupError::Getcwd {
            expected: plan.workdir.display().to_string(),
            found,
        });
    }

    // 8. Hostname; loopback only if the policy allows it (the namespace starts with `lo` down).
    check(
        // SAFETY: pointer and length of a live byte slice.
        unsafe { libc::sethostname(plan.hostname.as_ptr().cast(), plan.hostname.len()) },
        SetupError::Hostname,
    )?;
    if plan.loopback {
        loopback_up()?;
    }

    // 9. rlimits (inherited by the workload). Never RLIMIT_AS.
    let r = &plan.rlimits;
    let mut limits: Vec<(&'static str, RlimitResource, u64)> = vec![
        ("RLIMIT_NOFILE", libc::RLIMIT_NOFILE, r.nofile),
        ("RLIMIT_FSIZE", libc::RLIMIT_FSIZE, r.fsize),
        ("RLIMIT_CORE", libc::RLIMIT_CORE, 0),
        ("RLIMIT_NPROC", libc::RLIMIT_NPROC, r.nproc),
        ("RLIMIT_MEMLOCK", libc::RLIMIT_MEMLOCK, r.memlock),
        ("RLIMIT_MSGQUEUE", libc::RLIMIT_MSGQUEUE, r.msgqueue),
        ("RLIMIT_RTPRIO", libc::RLIMIT_RTPRIO, 0),
        ("RLIMIT_STACK", libc::RLIMIT_STACK, r.stack),
    ];
    if let Some(cpu) = r.cpu_secs {
        limits.push(("RLIMIT_CPU", libc::RLIMIT_CPU, cpu));
    }
    for (name, res, v) in limits {
        let lim = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        // SAFETY: a resource constant and a pointer to a live rlimit.
        check(unsafe { libc::setrlimit(res, &lim) }, |e| {
            SetupError::Rlimit(name, e)
        })?;
    }

    // 10. A new session: no controlling terminal (TIOCSTI needs one; stdio are runner-owned).
    // SAFETY: no arguments.
    check(unsafe { libc::setsid() }, SetupError::Setsid)?;
    Ok((plan, ()))
}

fn plan_links(plan: &Plan) -> Vec<(PathBuf, PathBuf)> {
    plan.links
        .iter()
        .map(|l| (l.target.clone(), l.path.clone()))
        .collect()
}

fn read_plan() -> Result<Plan> {
    // SAFETY: CONTROL_FD was dup2'd here by the runner's child; ManuallyDrop keeps it open for `send`.
    let mut f = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(CONTROL_FD) });
    // The go byte, then the plan's length: the runner sends them once the id maps are written and
    // this process is in the run's cgroup. Until then the shim waits here, having done nothing.
    let mut head = [0u8; 5];
    f.read_exact(&mut head)
        .map_err(|e| SetupError::ReadPlan(e.to_string()))?;
    if head[0] != GO_BYTE {
        return Err(SetupError::ReadPlan(format!(
            "expected the go byte, got {:#04x}",
            head[0]
        )));
    }
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
    if len > MAX_PLAN_BYTES {
        return Err(SetupError::ReadPlan(format!(
            "plan of {len} bytes is too large"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    f.read_exact(&mut buf)
        .map_err(|e| SetupError::ReadPlan(e.to_string()))?;
    // Only the workload's process and the shim use the socket; the workload itself must not inherit it.
    // SAFETY: fcntl on an fd we own.
    unsafe { libc::fcntl(CONTROL_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
    serde_json::from_slice(&buf).map_err(|e| SetupError::ReadPlan(e.to_string()))
}

fn mkdir(p: &Path, mode: libc::mode_t) -> Result<()> {
    let c = cstr(p);
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkdir(c.as_ptr(), mode) } == -1 {
        let e = Errno::last();
        if e.0 != libc::EEXIST {
            return Err(SetupError::MountPoint(p.display().to_string(), e));
        }
    }
    Ok(())
}

fn mkdir_p(p: &Path) -> Result<()> {
    let mut cur = PathBuf::from("/");
    for c in p.components().skip(1) {
        cur.push(c);
        mkdir(&cur, 0o755)?;
    }
    Ok(())
}

fn pivot_root(new: &Path, put_old: &Path) -> Result<()> {
    let (n, o) = (cstr(new), cstr(put_old));
    check(
        // SAFETY: two NUL-terminated paths; pivot_root has no libc wrapper.
        unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) } as libc::c_int,
        SetupError::PivotRoot,
    )?;
    // SAFETY: a NUL-terminated path.
    check(unsafe { libc::chdir(c"/".as_ptr()) }, SetupError::PivotRoot)?;
    Ok(())
}

/// The mount flags a bind must keep when remounted: in a user namespace the kernel locks the flags a
/// mount had when the namespace was created (nosuid, nodev, noexec, atime), so a remount that drops
/// one fails with EPERM.
fn locked_flags(p: &Path) -> libc::c_ulong {
    let c = cstr(p);
    // SAFETY: a zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a live statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == -1 {
        return 0;
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (ST_RELATIME, libc::MS_RELATIME),
        (libc::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

fn is_rdonly(p: &Path) -> bool {
    locked_flags(p) & libc::MS_RDONLY != 0
}

fn bind(old: &Path, b: &Bind) -> Result<()> {
    let src = old.join(b.host.strip_prefix("/").unwrap_or(&b.host));
    let shown = format!("{} -> {}", b.host.display(), b.guest.display());
    // Do not follow a symlink at the source: the runner resolved and validated the path, and a link
    // swapped in since must not redirect the bind (the kernel would follow it).
    let meta = match std::fs::symlink_metadata(&src) {
        Ok(m) => m,
        Err(e) if !b.required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(SetupError::Bind(
                shown,
                Errno(e.raw_os_error().unwrap_or(libc::ENOENT)),
            ))
        }
    };
    if meta.file_type().is_symlink() {
        return Err(SetupError::Bind(shown, Errno(libc::ELOOP)));
    }
    if let Some(parent) = b.guest.parent() {
        mkdir_p(parent)?;
    }
    if meta.is_dir() {
        mkdir(&b.guest, 0o755)?;
    } else {
        let c = cstr(&b.guest);
        // SAFETY: a NUL-terminated path; the fd is closed right away.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o644,
            )
        };
        if fd == -1 {
            return Err(SetupError::MountPoint(
                b.guest.display().to_string(),
                Errno::last(),
            ));
        }
        // SAFETY: fd was just opened.
        unsafe { libc::close(fd) };
    }
    mount(
        Some(&src),
        &b.guest,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| SetupError::Bind(shown.clone(), e))?;
    let mut flags = libc::MS_REMOUNT
        | libc::MS_BIND
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | locked_flags(&b.guest);
    if !b.rw {
        flags |= libc::MS_RDONLY;
    }
    mount(None, &b.guest, None, flags, None)
        .map_err(|e| SetupError::RemountRo(shown.clone(), e))?;
    if !b.rw && !is_rdonly(&b.guest) {
        return Err(SetupError::RemountRoCheck(shown));
    }
    Ok(())
}

/// A fresh procfs of the sandbox's pid namespace, with the host-wide knobs masked.
fn mount_proc() -> Result<()> {
    mkdir(Path::new("/proc"), 0o555)?;
    mount(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(SetupError::Proc)?;
    // Files that reach the whole host: masked with /dev/null (what runc and bwrap do).
    for f in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/sysrq-trigger",
        "/proc/timer_list",
        "/proc/kallsyms",
    ] {
        if Path::new(f).exists() {
            mount(
                Some(Path::new("/dev/null")),
                Path::new(f),
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(|e| SetupError::ProcMask(f.into(), e))?;
        }
    }
    // Kernel tunables: read-only.
    for d in ["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"] {
        if Path::new(d).exists() {
            let p = Path::new(d);
            mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None)
                .map_err(|e| SetupError::ProcMask(d.into(), e))?;
            let flags = libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | locked_flags(p);
            mount(None, p, None, flags, None).map_err(|e| SetupError::ProcMask(d.into(), e))?;
        }
    }
    Ok(())
}

/// A minimal /dev: the five harmless character devices (binds of the host's nodes: a user namespace
/// cannot mknod), the /dev/fd links, and a small /dev/shm.
fn mount_dev(old: &Path) -> Result<()> {
    mkdir(Path::new("/dev"), 0o755)?;
    mount(
        Some(Path::new("tmpfs")),
        Path::new("/dev"),
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"size=1048576,mode=0755"),
    )
    .map_err(SetupError::Dev)?;
    for d in ["null", "zero", "full", "random", "urandom"] {
        let dst = Path::new("/dev").join(d);
        let c = cstr(&dst);
        // SAFETY: a NUL-terminated path; the fd is closed right away.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                0o666,
            )
        };
        if fd == -1 {
            return Err(SetupError::Dev(Errno::last()));
        }
        // SAFETY: fd was just opened.
        unsafe { libc::close(fd) };
        mount(
            Some(&old.join("dev").join(d)),
            &dst,
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(SetupError::Dev)?;
    }
    for (t, l) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        let (t, l) = (
            CString::new(t).unwrap_or_default(),
            CString::new(l).unwrap_or_default(),
        );
        check(
            // SAFETY: two NUL-terminated paths.
            unsafe { libc::symlink(t.as_ptr(), l.as_ptr()) },
            SetupError::Dev,
        )?;
    }
    // Read-only: the tmpfs belongs to the sandbox's uid, which must not add nodes or replace links.
    mount(
        None,
        Path::new("/dev"),
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        None,
    )
    .map_err(SetupError::Dev)?;
    Ok(())
}

fn loopback_up() -> Result<()> {
    let fd = check(
        // SAFETY: socket with constant arguments.
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) },
        SetupError::Loopback,
    )?;
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in b"lo".iter().enumerate() {
        ifr.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: a socket fd, a request constant and a pointer to a live ifreq.
    let r = unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr) };
    let r = if r == -1 {
        r
    } else {
        // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
        unsafe { ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short };
        // SAFETY: as above.
        unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr) }
    };
    let e = Errno::last();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r == -1 {
        return Err(SetupError::Loopback(e));
    }
    Ok(())
}

const FORWARDED: [libc::c_int; 4] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT];

/// Init: forks the workload, forwards signals, reaps, reports.
fn supervise(plan: &Plan, _: ()) -> ! {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: set is a live sigset_t; signal numbers are constants.
    unsafe {
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        for s in FORWARDED {
            libc::sigaddset(&mut set, s);
        }
    }
    // Block before fork so no SIGCHLD is lost; the child unblocks before exec.
    // SAFETY: a live sigset_t; the old mask is not needed.
    if unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) } == -1 {
        fail(SetupError::Sigmask(Errno::last()));
    }
    // SAFETY: the shim is single-threaded, so the child may do anything after fork.
    let child = unsafe { libc::fork() };
    if child == -1 {
        fail(SetupError::Fork(Errno::last()));
    }
    if child == 0 {
        let e = exec_workload(plan);
        send(&Message::SetupError {
            step: e.to_string(),
        });
        // SAFETY: leave without running the parent's atexit handlers.
        unsafe { libc::_exit(125) };
    }
    // The workload's fd is the child's business now.
    // SAFETY: closing an fd this process owns.
    unsafe { libc::close(WORKLOAD_FD) };
    loop {
        // SAFETY: a zeroed siginfo_t is a valid out-parameter.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: live sigset_t and siginfo_t.
        let sig = unsafe { libc::sigwaitinfo(&set, &mut info) };
        if sig == -1 {
            continue;
        }
        if sig != libc::SIGCHLD {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child, sig) };
            continue;
        }
        loop {
            let mut status = 0;
            // SAFETY: a pointer to a live int.
            let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
            if pid <= 0 {
                break;
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
}

fn fail(e: SetupError) -> ! {
    send(&Message::SetupError {
        step: e.to_string(),
    });
    std::process::exit(125)
}

/// Steps 11-17 in the workload's own process. Returns only on failure.
fn exec_workload(plan: &Plan) -> SetupError {
    match prepare_workload(plan) {
        Ok(()) => {}
        Err(e) => return e,
    }
    unreachable_exec(plan)
}

fn prepare_workload(plan: &Plan) -> Result<()> {
    // SAFETY: sigset_t is plain data; an empty set unblocks everything the shim blocked.
    let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: live sigset_t.
    unsafe { libc::sigemptyset(&mut empty) };
    check(
        // SAFETY: live sigset_t.
        unsafe { libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut()) },
        SetupError::Sigmask,
    )?;

    // 11. Every fd above 2 closes at exec (CVE-2024-21626: a leaked runner fd to a host directory is a
    // way out of the mount namespace). The control socket stays usable until then.
    check(
        // SAFETY: close_range with constant flags.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        } as libc::c_int,
        SetupError::CloseRange,
    )?;
    if plan.keep_workload_fd {
        // A script: the kernel passes `/dev/fd/4` to the interpreter, so the fd must survive exec.
        // SAFETY: fcntl on the workload fd.
        unsafe { libc::fcntl(WORKLOAD_FD, libc::F_SETFD, 0) };
    }

    // 12-13. The bounding and ambient sets need CAP_SETPCAP, gone after setresuid, so they go first.
    // setgroups() is denied in this user namespace (the runner wrote setgroups=deny), so the
    // supplementary groups are the runner's own (cleared before clone when it runs as root).
    for set in [caps::CapSet::Bounding, caps::CapSet::Ambient] {
        caps::clear(None, set).map_err(|e| SetupError::CapsBounding(e.to_string()))?;
    }
    check(
        // SAFETY: integer ids.
        unsafe { libc::setresgid(plan.gid, plan.gid, plan.gid) },
        SetupError::Setresgid,
    )?;
    check(
        // SAFETY: integer ids.
        unsafe { libc::setresuid(plan.uid, plan.uid, plan.uid) },
        SetupError::Setresuid,
    )?;
    for set in [
        caps::CapSet::Inheritable,
        caps::CapSet::Permitted,
        caps::CapSet::Effective,
    ] {
        caps::clear(None, set).map_err(|e| SetupError::Caps(e.to_string()))?;
    }

    // 14. No privilege gain through exec (setuid binaries, file capabilities).
    check(
        // SAFETY: prctl with integer arguments.
        unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) },
        SetupError::NoNewPrivs,
    )?;

    // 15. Landlock.
    let status = landlock(plan)?;

    // 16. Seccomp last: after it, nothing but the allow-list (and not seccomp(2) itself).
    for packed in &plan.seccomp {
        let prog = hybox_shim::plan::unpack_filter(packed);
        seccompiler::apply_filter(&prog).map_err(|e| SetupError::Seccomp(e.to_string()))?;
    }
    // A pre-built sandbox (native warm pool) waits here for its one call, every step of
    // `shared/security.md` but the exec done. Why the wait is safe at this point:
    // - nothing is left to undo or to add: ids, capabilities, no_new_privs, Landlock and seccomp are
    //   all in force already, so the wait cannot reorder a step (the order stays 6-16, then 17);
    // - the wait is one `read(2)` of one byte from the runner's own control socket (an fd that was
    //   already open and is CLOEXEC since step 11, so the workload never inherits it); `read` is on
    //   every seccomp allow-list because the workload needs it, and Landlock does not govern an fd
    //   that is already open;
    // - this process is not dumpable and has no workload code in it yet; the only input it takes
    //   is the byte, compared with a constant; anything else, or the runner closing the socket,
    //   ends it with a setup error (and the runner destroys a pre-built sandbox it no longer wants
    //   by killing PID 1, which takes the whole pid namespace with it);
    // - the call's own inputs (stdin) arrive on the stdio pipes, which were fds 0-2 all along.
    if plan.wait_for_call {
        // The runner counts the sandbox as ready (a pool hands it out) from here on.
        send(&Message::Ready);
        let mut b = 0u8;
        loop {
            // SAFETY: reading one byte into a live u8 from an fd this process owns.
            let n = unsafe { libc::read(CONTROL_FD, (&mut b as *mut u8).cast(), 1) };
            if n == -1 && Errno::last().0 == libc::EINTR {
                continue;
            }
            if n != 1 {
                return Err(SetupError::WaitForCall(if n == 0 {
                    "the runner closed the control socket".into()
                } else {
                    Errno::last().to_string()
                }));
            }
            break;
        }
        if b != hybox_shim::plan::CALL_BYTE {
            return Err(SetupError::WaitForCall(format!("unexpected byte {b:#x}")));
        }
    }
    send(&Message::Exec { landlock: status });
    Ok(())
}

/// Step 17, `execveat` by fd: the workload's path is never resolved inside the sandbox, and the runner's
/// check of the file is the file that runs. Returns only on failure.
fn unreachable_exec(plan: &Plan) -> SetupError {
    let argv: Vec<CString> = plan
        .argv
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    let envp: Vec<CString> = plan
        .env
        .iter()
        .map(|a| CString::new(a.as_str()).unwrap_or_default())
        .collect();
    let mut argv_p: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    argv_p.push(std::ptr::null());
    let mut envp_p: Vec<*const libc::c_char> = envp.iter().map(|a| a.as_ptr()).collect();
    envp_p.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call; an empty path with
    // AT_EMPTY_PATH executes the fd itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            WORKLOAD_FD,
            c"".as_ptr(),
            argv_p.as_ptr(),
            envp_p.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    SetupError::Exec(Errno::last())
}

fn landlock(plan: &Plan) -> Result<LandlockStatus> {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, PathBeneath, PathFd, Ruleset,
        RulesetAttr, RulesetCreatedAttr, Scope, ABI,
    };
    let ll = &plan.landlock;
    if ll.mode == LandlockMode::Off {
        return Ok(LandlockStatus::Off);
    }
    let abi = ABI::V6;
    let err = |e: landlock::RulesetError| SetupError::Landlock(e.to_string());
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?;
    if ll.deny_tcp {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(err)?;
    }
    ruleset = ruleset
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(err)?;
    let mut created = ruleset.create().map_err(err)?;
    let open = |p: &PathBuf| {
        PathFd::new(p).map_err(|e| SetupError::Landlock(format!("{}: {e}", p.display())))
    };
    for p in &ll.read {
        let fd = open(p)?;
        let access = if std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false) {
            AccessFs::from_read(abi)
        } else {
            AccessFs::from_file(abi) & AccessFs::from_read(abi)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(err)?;
    }
    for p in &ll.write {
        let fd = open(p)?;
        let access = if std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false) {
            AccessFs::from_all(abi)
        } else {
            AccessFs::from_file(abi)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(err)?;
    }
    // The workload file itself (outside the mount tree): execute and read (the loader maps it).
    // SAFETY: WORKLOAD_FD is open in this process until exec.
    let wfd = unsafe { BorrowedFd::borrow_raw(WORKLOAD_FD) };
    created = created
        .add_rule(PathBeneath::new(
            wfd,
            AccessFs::Execute | AccessFs::ReadFile,
        ))
        .map_err(err)?;
    let status = created.restrict_self().map_err(err)?;
    let s = LandlockStatus::from(status.ruleset);
    if ll.mode == LandlockMode::Required && s != LandlockStatus::FullyEnforced {
        return Err(SetupError::Landlock(format!(
            "required, but only {s} on this kernel"
        )));
    }
    Ok(s)
}
