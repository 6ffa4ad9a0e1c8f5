//! [`SetupError`]: the setup step that failed, one variant per call that can fail, in setup order.
//!
//! Separate because every step module returns it, and because its messages are an interface: the
//! shim sends `to_string()` to the runner as `Message::SetupError`, and the run report shows it as
//! `setup_error(<step>: <ERRNO>)` (e.g. "pivot_root: EINVAL", "chdir /nowhere: ENOENT"). A variant
//! names the call, and the path or resource it was for, so that the message alone says what failed.

use hybox_shim::plan::LandlockStatus;

use crate::sys::Errno;

/// A setup step that failed; nothing of the workload ran.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    // The shim's own process (`setup`, before the mounts).
    #[error("clear the inherited signal mask: {0}")]
    ClearSigmask(Errno),
    #[error("prctl(PR_SET_DUMPABLE): {0}")]
    Dumpable(Errno),
    #[error("read the go byte and the plan's length: {0}")]
    ReadGo(#[source] std::io::Error),
    #[error("read plan: expected the go byte, got {0:#04x}")]
    NotGo(u8),
    #[error("read plan: plan of {0} bytes is too large")]
    PlanTooLarge(u32),
    #[error("read plan: {0}")]
    ReadPlan(#[source] std::io::Error),
    #[error("read plan: {0}")]
    ParsePlan(#[source] serde_json::Error),
    #[error("fcntl(control socket, FD_CLOEXEC): {0}")]
    ControlCloexec(Errno),
    #[error("pass fds to the workload (--preserve-fds): {call}: {errno}")]
    PassFds { call: &'static str, errno: Errno },
    #[error("setresgid: {0}")]
    Setresgid(Errno),
    #[error("setresuid: {0}")]
    Setresuid(Errno),
    #[error("unshare(CLONE_NEWCGROUP): {0}")]
    CgroupNs(Errno),

    // Mounts (`mounts`).
    #[error("make / private: {0}")]
    PrivateRoot(Errno),
    #[error("mount root tmpfs: {0}")]
    RootTmpfs(Errno),
    #[error("mkdir {0}: {1}")]
    MountPointDir(String, Errno),
    #[error("create mount point {0}: {1}")]
    MountPointFile(String, Errno),
    #[error("mount point {0}: a symlink on the way: ELOOP")]
    MountPointSymlink(String),
    #[error("pivot_root: {0}")]
    PivotRoot(Errno),
    #[error("chdir / after pivot_root: {0}")]
    ChdirNewRoot(Errno),
    #[error("mount the writable layer's tmpfs {0}: {1}")]
    OverlayTmpfs(String, Errno),
    #[error("mount overlay {0}: {1}")]
    Overlay(String, Errno),
    #[error("bind {0}: lstat source: {1}")]
    BindSource(String, Errno),
    #[error("bind {0}: source is a symlink: ELOOP")]
    BindSourceSymlink(String),
    #[error("bind {0}: {1}")]
    Bind(String, Errno),
    #[error("remount {} {bind}: {errno}", remount_flags(*.rw))]
    Remount {
        bind: String,
        rw: bool,
        errno: Errno,
    },
    #[error("remount read-only {0}: the read-only flag did not stick")]
    RemountRoCheck(String),
    #[error("symlink {0}: {1}")]
    Symlink(String, Errno),
    #[error("mount /tmp: {0}")]
    Tmp(Errno),
    #[error("tmpfs {0}: mount point: {1}")]
    TmpfsAt(String, Box<SetupError>),
    #[error("mount tmpfs {0}: {1}")]
    Tmpfs(String, Errno),
    #[error("mount /dev: {0}")]
    DevTmpfs(Errno),
    #[error("create {0}: {1}")]
    DevNode(String, Errno),
    #[error("bind {0}: {1}")]
    DevBind(String, Errno),
    #[error("symlink {0}: {1}")]
    DevLink(String, Errno),
    #[error("remount /dev read-only: {0}")]
    DevRo(Errno),
    #[error("mount /proc: {0}")]
    Proc(Errno),
    #[error("mask {0}: {1}")]
    ProcMask(String, Errno),
    #[error("bind {0}: {1}")]
    ProcBind(String, Errno),
    #[error("remount read-only {0}: {1}")]
    ProcRo(String, Errno),
    #[error("umount old root: {0}")]
    DetachOldRoot(Errno),
    #[error("rmdir old root: {0}")]
    RemoveOldRoot(Errno),
    #[error("remount / read-only: {0}")]
    RootRo(Errno),
    #[error("chdir {0}: {1}")]
    Chdir(String, Errno),
    #[error("getcwd: {0}")]
    Getcwd(#[source] std::io::Error),
    #[error("getcwd: expected {expected}, found {found}")]
    WorkdirMoved { expected: String, found: String },

    // Hostname and network (`net`).
    #[error("sethostname: {0}")]
    Hostname(Errno),
    #[error("loopback up: socket: {0}")]
    LoopbackSocket(Errno),
    #[error("loopback up: ioctl(SIOCGIFFLAGS): {0}")]
    LoopbackGetFlags(Errno),
    #[error("loopback up: ioctl(SIOCSIFFLAGS): {0}")]
    LoopbackSetFlags(Errno),

    // The rest of the shim's own process (`process`).
    #[error("setrlimit({0}): {1}")]
    Rlimit(&'static str, Errno),
    #[error("setsid: {0}")]
    Setsid(Errno),
    #[error("make stdin the controlling terminal: ioctl(TIOCSCTTY): {0}")]
    ControllingTty(Errno),

    // Init (`init`).
    #[error("block signals: {0}")]
    BlockSignals(Errno),
    #[error("fork workload: {0}")]
    Fork(Errno),

    // The workload's process (`workload`).
    #[error("unblock signals in the workload: {0}")]
    UnblockSignals(Errno),
    #[error("close_range: {0}")]
    CloseRange(Errno),
    #[error("fcntl(workload fd, keep open across exec): {0}")]
    KeepWorkloadFd(Errno),
    #[error("drop the {set} capability set: {source}")]
    DropCaps {
        set: &'static str,
        #[source]
        source: caps::errors::CapsError,
    },
    #[error("setresgid in the workload: {0}")]
    WorkloadSetresgid(Errno),
    #[error("setresuid in the workload: {0}")]
    WorkloadSetresuid(Errno),
    #[error("prctl(PR_SET_NO_NEW_PRIVS): {0}")]
    NoNewPrivs(Errno),
    #[error("landlock: ruleset: {0}")]
    LandlockRuleset(#[source] landlock::RulesetError),
    #[error("landlock: create ruleset: {0}")]
    LandlockCreate(#[source] landlock::RulesetError),
    #[error("landlock: {path}: {source}")]
    LandlockOpen {
        path: String,
        #[source]
        source: landlock::PathFdError,
    },
    #[error("landlock: add rule for {path}: {source}")]
    LandlockRule {
        path: String,
        #[source]
        source: landlock::RulesetError,
    },
    #[error("landlock: restrict self: {0}")]
    LandlockRestrict(#[source] landlock::RulesetError),
    #[error("landlock: required, but only {0} on this kernel")]
    LandlockRequired(LandlockStatus),
    #[error("seccomp: filter {filter} of {of}: {source}")]
    Seccomp {
        filter: usize,
        of: usize,
        #[source]
        source: seccompiler::Error,
    },
    #[error("wait for the call: {0}")]
    WaitForCall(Errno),
    #[error("wait for the call: the runner closed the control socket")]
    CallSocketClosed,
    #[error("wait for the call: unexpected byte {0:#x}")]
    UnexpectedCallByte(u8),
    #[error("execveat: {0}")]
    Exec(Errno),
}

/// The flags a bind's remount sets, as its error message names them.
fn remount_flags(rw: bool) -> &'static str {
    if rw {
        "nosuid,nodev"
    } else {
        "read-only"
    }
}

pub type Result<T> = std::result::Result<T, SetupError>;
