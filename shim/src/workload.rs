//! What happens in the workload's own process, forked by init: its signal mask, fds, capabilities,
//! ids, no_new_privs, Landlock and seccomp (last), then the `execveat` of the runner-opened fd.
//!
//! Separate from `init` because this process drops everything init keeps: init stays privileged
//! within the sandbox's user namespace and unconfined by seccomp, the workload's process ends with
//! no capabilities, no way to gain any, its filesystem and network access restricted by Landlock and
//! its syscalls by the allow-list. [`run`] reads as the steps in order.

use std::ffi::CString;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use hybox_shim::plan::{
    LandlockMode, LandlockStatus, Message, Plan, MAX_PASSED_FDS, PASSED_FDS_BASE, WORKLOAD_FD,
};

use crate::control::{self, send};
use crate::error::{Result, SetupError};
use crate::sys::{check, sigprocmask, sigset, Errno};

/// The workload's steps in order, then the exec. Returns only on failure.
pub fn run(plan: &Plan) -> SetupError {
    match prepare(plan) {
        Ok(()) => exec(plan),
        Err(e) => e,
    }
}

pub fn prepare(plan: &Plan) -> Result<()> {
    // Undo init's mask: the workload starts with every signal deliverable.
    sigprocmask(libc::SIG_SETMASK, &sigset(&[])).map_err(SetupError::UnblockSignals)?;
    // Every fd above 2 closes at exec: a leaked runner fd to a host directory is a way out of the
    // mount namespace (CVE-2024-21626). The control socket stays usable until the exec.
    close_fds_on_exec()?;
    // The fds the workload is given (OCI `--preserve-fds`) become 3.., the only ones above 2 that
    // survive the exec; the control socket and the workload fd move above them first.
    pass_fds(plan)?;
    if plan.keep_workload_fd && !plan.enter {
        // A script: the kernel passes `/dev/fd/4` to the interpreter, so the fd must survive exec.
        keep_workload_fd()?;
    }
    // The bounding set first: dropping it needs CAP_SETPCAP, which clearing the permitted and
    // effective sets takes away. Ambient with it: those would be raised again at exec.
    drop_caps(&[caps::CapSet::Bounding, caps::CapSet::Ambient])?;
    // The ids again, in this process, right before its last capabilities go (see `set_ids`).
    set_ids(plan.uid, plan.gid)?;
    // No capability left in any set: the workload can do nothing its uid could not.
    drop_caps(&[
        caps::CapSet::Inheritable,
        caps::CapSet::Permitted,
        caps::CapSet::Effective,
    ])?;
    // No privilege gain through exec: setuid binaries and file capabilities grant nothing.
    no_new_privs()?;
    // Filesystem access only beneath the policy's paths, TCP denied unless allowed, no abstract unix
    // sockets or signals outside the sandbox.
    let status = landlock(plan)?;
    // Seccomp last: after it, nothing but the allow-list (and not seccomp(2) itself).
    install_seccomp(plan)?;
    // A pre-built sandbox (native warm pool) waits here for its one call, every step but the exec
    // done. Why the wait is safe at this point:
    // - nothing is left to undo or to add: ids, capabilities, no_new_privs, Landlock and seccomp are
    //   all in force already, so the wait cannot reorder a step (only the exec follows);
    // - the wait is one `read(2)` of one byte from the runner's own control socket (an fd that was
    //   already open and is CLOEXEC since `close_fds_on_exec`, so the workload never inherits it);
    //   `read` is on every seccomp allow-list because the workload needs it, and Landlock does not
    //   govern an fd that is already open;
    // - this process is not dumpable and has no workload code in it yet; the only input it takes
    //   is the byte, compared with a constant; anything else, or the runner closing the socket,
    //   ends it with a setup error (and the runner destroys a pre-built sandbox it no longer wants
    //   by killing PID 1, which takes the whole pid namespace with it);
    // - the call's own inputs (stdin) arrive on the stdio pipes, which were fds 0-2 all along.
    if plan.wait_for_call {
        // The runner counts the sandbox as ready (a pool hands it out) from here on.
        send(&Message::Ready);
        control::wait_for_call()?;
    }
    send(&Message::Exec { landlock: status });
    Ok(())
}

/// `close_range(3, ~0, CLOSE_RANGE_CLOEXEC)`: every fd above stdio is closed by the exec.
fn close_fds_on_exec() -> Result<()> {
    check(
        // SAFETY: close_range with constant arguments; it only sets flags on this process's fds.
        unsafe {
            libc::syscall(
                libc::SYS_close_range,
                3u32,
                u32::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            )
        } as libc::c_int,
    )
    .map(drop)
    .map_err(SetupError::CloseRange)
}

/// The workload fd: [`WORKLOAD_FD`], or where [`pass_fds`] moved it.
static WORKLOAD: AtomicI32 = AtomicI32::new(WORKLOAD_FD);

fn workload_fd() -> libc::c_int {
    WORKLOAD.load(Ordering::Relaxed)
}

/// Gives the workload the plan's `passed_fds`, found at [`PASSED_FDS_BASE`].., as fds 3..: the
/// control socket (3) and the workload fd (4) move above them, then each is `dup2`ed down (a
/// `dup2` clears close-on-exec on its target, which `close_fds_on_exec` set on everything). The
/// sources are not closed: close-on-exec, they go at the exec with everything else.
fn pass_fds(plan: &Plan) -> Result<()> {
    let n = plan.passed_fds as usize;
    if n == 0 {
        return Ok(());
    }
    if n > MAX_PASSED_FDS {
        return Err(SetupError::PassFds {
            call: "more fds than MAX_PASSED_FDS",
            errno: Errno(libc::EMFILE),
        });
    }
    let above = PASSED_FDS_BASE + n as i32;
    control::move_above(above)?;
    // A process entering a running sandbox (`exec`) executes a path: it has no workload fd.
    if !plan.enter {
        // SAFETY: fcntl on the workload fd, open in this process until exec.
        let w = check(unsafe { libc::fcntl(WORKLOAD_FD, libc::F_DUPFD_CLOEXEC, above) }).map_err(
            |errno| SetupError::PassFds {
                call: "fcntl(workload fd, F_DUPFD_CLOEXEC)",
                errno,
            },
        )?;
        WORKLOAD.store(w, Ordering::Relaxed);
    }
    // Upwards: target 3+i is below source 5+i, and any source it overwrites (5+j, j = i-2) was
    // moved already.
    for i in 0..n as i32 {
        // SAFETY: dup2 between fds of this process; the source was placed by the runner.
        check(unsafe { libc::dup2(PASSED_FDS_BASE + i, 3 + i) }).map_err(|errno| {
            SetupError::PassFds {
                call: "dup2",
                errno,
            }
        })?;
    }
    Ok(())
}

/// Clears the workload fd's close-on-exec flag, so that the interpreter of a script can open it.
fn keep_workload_fd() -> Result<()> {
    // SAFETY: fcntl on the workload fd, open in this process until exec.
    check(unsafe { libc::fcntl(workload_fd(), libc::F_SETFD, 0) })
        .map(drop)
        .map_err(SetupError::KeepWorkloadFd)
}

/// Empties each of `sets`.
fn drop_caps(sets: &[caps::CapSet]) -> Result<()> {
    for &set in sets {
        caps::clear(None, set).map_err(|source| SetupError::DropCaps {
            set: cap_set_name(set),
            source,
        })?;
    }
    Ok(())
}

fn cap_set_name(set: caps::CapSet) -> &'static str {
    match set {
        caps::CapSet::Ambient => "ambient",
        caps::CapSet::Bounding => "bounding",
        caps::CapSet::Effective => "effective",
        caps::CapSet::Inheritable => "inheritable",
        caps::CapSet::Permitted => "permitted",
    }
}

/// setresgid, then setresuid, to the sandbox's ids: real, effective and saved, so none is left to
/// switch back to. Init already became these ids in `setup` (`process::become_sandbox_ids`), so
/// here they are asserted again rather than changed. There is no `setgroups`: it is denied in this
/// user namespace (the runner wrote `setgroups=deny`), so the supplementary groups are the runner's
/// own (cleared before clone when it runs as root).
fn set_ids(uid: u32, gid: u32) -> Result<()> {
    // SAFETY: integer ids.
    check(unsafe { libc::setresgid(gid, gid, gid) }).map_err(SetupError::WorkloadSetresgid)?;
    // SAFETY: integer ids.
    check(unsafe { libc::setresuid(uid, uid, uid) }).map_err(SetupError::WorkloadSetresuid)?;
    Ok(())
}

/// `PR_SET_NO_NEW_PRIVS`: exec can no longer grant privileges (setuid bits, file capabilities); it is
/// also what lets an unprivileged process install Landlock and seccomp.
fn no_new_privs() -> Result<()> {
    // SAFETY: prctl with integer arguments.
    check(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) })
        .map(drop)
        .map_err(SetupError::NoNewPrivs)
}

/// The plan's seccomp filters, in order (the runner compiled them; see `hybox_shim::seccomp`).
fn install_seccomp(plan: &Plan) -> Result<()> {
    let of = plan.seccomp.len();
    for (i, packed) in plan.seccomp.iter().enumerate() {
        let prog = hybox_shim::plan::unpack_filter(packed);
        seccompiler::apply_filter(&prog).map_err(|source| SetupError::Seccomp {
            filter: i + 1,
            of,
            source,
        })?;
    }
    Ok(())
}

/// `argv`/`envp` of the plan as C strings, and NULL-terminated pointer arrays into them.
pub struct CArgs {
    _strings: (Vec<CString>, Vec<CString>),
    pub argv: Vec<*const libc::c_char>,
    pub envp: Vec<*const libc::c_char>,
}

pub fn c_args(plan: &Plan) -> CArgs {
    let cs = |v: &[String]| -> Vec<CString> {
        v.iter()
            .map(|a| CString::new(a.as_str()).unwrap_or_default())
            .collect()
    };
    let (argv, envp) = (cs(&plan.argv), cs(&plan.env));
    let ptrs = |v: &[CString]| -> Vec<*const libc::c_char> {
        v.iter()
            .map(|a| a.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect()
    };
    let (argv_p, envp_p) = (ptrs(&argv), ptrs(&envp));
    CArgs {
        _strings: (argv, envp),
        argv: argv_p,
        envp: envp_p,
    }
}

/// `execveat` by fd: the workload's path is never resolved inside the sandbox, and the runner's
/// check of the file is the file that runs. `envp` is the plan's complete environment (nothing of
/// the shim's own). Returns only on failure.
fn exec(plan: &Plan) -> SetupError {
    let args = c_args(plan);
    // SAFETY: NULL-terminated arrays of NUL-terminated strings that outlive the call; an empty path with
    // AT_EMPTY_PATH executes the fd itself.
    unsafe {
        libc::syscall(
            libc::SYS_execveat,
            workload_fd(),
            c"".as_ptr(),
            args.argv.as_ptr(),
            args.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        )
    };
    SetupError::Exec(Errno::last())
}

/// Landlock: read (and execute) beneath the plan's read paths, everything beneath its write paths,
/// execute and read of the workload file itself; TCP bind/connect handled (so denied) when the
/// policy says so; abstract unix sockets and signals scoped to the sandbox. Best effort on an older
/// kernel unless the policy requires full enforcement.
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
    let mut ruleset = Ruleset::default().set_compatibility(CompatLevel::BestEffort);
    if ll.filesystem {
        ruleset = ruleset
            .handle_access(AccessFs::from_all(abi))
            .map_err(SetupError::LandlockRuleset)?;
    }
    if ll.deny_tcp {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(SetupError::LandlockRuleset)?;
    }
    ruleset = ruleset
        .scope(Scope::AbstractUnixSocket | Scope::Signal)
        .map_err(SetupError::LandlockRuleset)?;
    let mut created = ruleset.create().map_err(SetupError::LandlockCreate)?;
    if !ll.filesystem {
        // The `native.nested` grant: no filesystem rights are handled (`LandlockPlan::filesystem`),
        // so there is no path rule to add; the mount namespace's read-only binds bound the files.
        let status = created
            .restrict_self()
            .map_err(SetupError::LandlockRestrict)?;
        return landlock_status(ll, status.ruleset);
    }
    let shown = |p: &PathBuf| p.display().to_string();
    let open = |p: &PathBuf| {
        PathFd::new(p).map_err(|source| SetupError::LandlockOpen {
            path: shown(p),
            source,
        })
    };
    let rule_err = |p: &PathBuf| {
        let path = shown(p);
        move |source| SetupError::LandlockRule { path, source }
    };
    // A path whose metadata cannot be read is given the file rights, the narrower of the two.
    let is_dir = |p: &PathBuf| std::fs::metadata(p).map(|m| m.is_dir()).unwrap_or(false);
    for p in &ll.read {
        let fd = open(p)?;
        let access = if is_dir(p) {
            AccessFs::from_read(abi)
        } else {
            AccessFs::from_file(abi) & AccessFs::from_read(abi)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(rule_err(p))?;
    }
    for p in &ll.write {
        let fd = open(p)?;
        let access = if is_dir(p) {
            AccessFs::from_all(abi)
        } else {
            AccessFs::from_file(abi)
        };
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(rule_err(p))?;
    }
    // The workload file itself (outside the mount tree): execute and read (the loader maps it).
    // A process entering a running sandbox has no workload fd: it executes a path inside it, which
    // the read rules above cover or not, exactly as they do for the container's own processes.
    if !plan.enter {
        // SAFETY: the workload fd is open in this process until exec.
        let wfd = unsafe { BorrowedFd::borrow_raw(workload_fd()) };
        created = created
            .add_rule(PathBeneath::new(
                wfd,
                AccessFs::Execute | AccessFs::ReadFile,
            ))
            .map_err(|source| SetupError::LandlockRule {
                path: "the workload fd".into(),
                source,
            })?;
    }
    let status = created
        .restrict_self()
        .map_err(SetupError::LandlockRestrict)?;
    landlock_status(ll, status.ruleset)
}

/// What the kernel enforced, or the error when the policy requires more.
fn landlock_status(
    ll: &hybox_shim::plan::LandlockPlan,
    status: landlock::RulesetStatus,
) -> Result<LandlockStatus> {
    let s = LandlockStatus::from(status);
    if ll.mode == LandlockMode::Required && s != LandlockStatus::FullyEnforced {
        return Err(SetupError::LandlockRequired(s));
    }
    Ok(s)
}
