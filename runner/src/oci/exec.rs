//! `hybox-runc exec`: a process in a running native container (docs/oci.md).
//!
//! The process enters every namespace of the container's sandbox (those of its shim, PID 1 of
//! the container: user, mount, pid, network, IPC, UTS, cgroup — for a pod's container the joined
//! ones too) and its cgroup, and gets the restrictions of the container's own workload from the
//! policy `create` recorded (`policy.json`): no capabilities, no_new_privs, the seccomp
//! allow-list, the Landlock rules, the rlimits, the container's uid and gid. The steps inside are
//! the shim's (`hybox-shim` with an `enter` plan: `shim/src/enter.rs`), so the container's init and
//! an exec'd process are restricted by the same code.
//!
//! The processes, as containerd's shim (a child subreaper) needs them: this one (`exec`, root)
//! forks a helper, which joins the cgroup and the namespaces and forks the process: only a child
//! is in a pid namespace that was joined with setns. The process executes the shim, which waits
//! for its plan on a socket; the helper sends it, waits for the shim's word (its exec next, or the
//! step that failed), reports the pid and exits, so the process is reparented to the nearest
//! subreaper: containerd's shim with `--detach`, which reaps it and reports its status; without
//! `--detach` this process, a subreaper itself, waits for it and exits with its status.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use hybox_shim::plan::{Message, Plan, CONTROL_FD, GO_BYTE};
use oci_spec::runtime::{Process, Spec};

use crate::oci::lifecycle::Context;
use crate::oci::runtime_policy::check_capabilities;
use crate::oci::state::{self, StateDir, Status};
use crate::oci::{procfs, OciError};
use crate::policy::Backend;

/// `exec`'s options (liboci-cli's `Exec`, what containerd's shim passes).
#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    /// `--process`: the process.json. Without it, `command` is the process, as runc builds it:
    /// the container's `config.json` process with these args, `env` added, `cwd` and `user` if set.
    pub process: Option<PathBuf>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: Option<PathBuf>,
    pub user: Option<(u32, Option<u32>)>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub tty: bool,
    /// `--preserve-fds N`: fds 3..3+N of `exec` become the process's 3..3+N, as for `create`.
    pub preserve_fds: i32,
}

/// The namespaces the process enters, in the order it enters them: every one the owner of which
/// is not the container's user namespace first (while the process is still root in the initial
/// user namespace, which may join any), the user namespace last.
const NAMESPACES: [(&str, libc::c_int); 7] = [
    ("cgroup", libc::CLONE_NEWCGROUP),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("net", libc::CLONE_NEWNET),
    ("pid", libc::CLONE_NEWPID),
    ("mnt", libc::CLONE_NEWNS),
    ("user", libc::CLONE_NEWUSER),
];

/// Runs `exec ID`; returns `exec`'s exit status (0 with `--detach`, else the process's).
pub fn exec(ctx: &Context, id: &str, opts: &ExecOptions) -> Result<i32, OciError> {
    crate::oci::lifecycle::single_threaded()?;
    let sd = StateDir::new(&ctx.root, id)?;
    let record = sd.record()?;
    let status = sd.status(&record);
    if record.backend == Backend::Wasm {
        return Err(OciError::Unsupported {
            what: format!("container \"{id}\""),
            why: "exec is not supported for wasm containers (a wasm guest has no processes to add to)"
                .into(),
        });
    }
    if status != Status::Running {
        return Err(OciError::NotRunning {
            id: id.into(),
            status: status.to_string(),
        });
    }
    let (file, process) = match &opts.process {
        Some(file) => (file.clone(), read_process(file)?),
        None => (
            PathBuf::from("the exec command line"),
            command_process(&record.bundle, opts)?,
        ),
    };
    let file = file.as_path();
    let terminal = opts.tty || process.terminal() == Some(true);
    match (terminal, &opts.console_socket) {
        (true, None) => {
            return Err(refused(
                file,
                "terminal",
                "a terminal needs --console-socket",
            ));
        }
        (false, Some(_)) => {
            return Err(OciError::Unsupported {
                what: "--console-socket".into(),
                why: "given for a process without a terminal".into(),
            })
        }
        _ => {}
    }
    crate::oci::lifecycle::check_preserved_fds(opts.preserve_fds)?;
    let mut plan = plan_for(&sd, file, &process, terminal)?;
    plan.passed_fds = opts.preserve_fds as u32;
    let plan_json = serde_json::to_vec(&plan).map_err(|e| OciError::Exec {
        id: id.into(),
        step: format!("serialize the plan: {e}"),
    })?;
    let fail = |step: String| OciError::Exec {
        id: id.into(),
        step,
    };
    let (shim_pid, nsfds) = sandbox_namespaces(&record).map_err(fail)?;
    let shim = crate::backend::native::shim::embedded()
        .map_err(|e| fail(format!("load hybox-shim: {e}")))?;
    let root = crate::HostConfig::default().cgroup_root;
    let cgroup = record
        .cgroup
        .clone()
        .ok_or_else(|| fail("the state records no cgroup".into()))?;
    let envelope = crate::envelope::Envelope::open_at(&root, &cgroup)
        .map_err(|e| fail(format!("the container's cgroup {cgroup}: {e}")))?;
    if !opts.detach {
        // The process is reparented to this one when the helper exits: waited for below.
        // SAFETY: prctl with integer arguments.
        if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
            return Err(fail(format!(
                "PR_SET_CHILD_SUBREAPER: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    let (result_r, result_w) = pipe().map_err(|e| fail(format!("pipe: {e}")))?;
    // SAFETY: this process is single-threaded (checked above): the child may run any code.
    let helper = unsafe { libc::fork() };
    if helper < 0 {
        return Err(fail(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if helper == 0 {
        drop(result_r);
        let said = match enter_and_fork(opts, &envelope, &nsfds, shim.as_raw_fd(), &plan_json) {
            Ok(pid) => format!("p{pid}"),
            Err((pid, step)) => format!("e{}:{step}", pid.unwrap_or(0)),
        };
        let _ = std::fs::File::from(result_w).write_all(said.as_bytes());
        // SAFETY: the helper ends here without running the destructors it shares with `exec`.
        unsafe { libc::_exit(0) };
    }
    drop(result_w);
    let mut said = String::new();
    let _ = std::fs::File::from(result_r).read_to_string(&mut said);
    // SAFETY: reaping our own child; a null status pointer is allowed.
    unsafe { libc::waitpid(helper, std::ptr::null_mut(), 0) };
    let pid: i32 = match said.split_at_checked(1) {
        Some(("p", pid)) => pid
            .parse()
            .map_err(|_| fail(format!("helper said {said:?}")))?,
        Some(("e", rest)) => {
            let (pid, step) = rest.split_once(':').unwrap_or(("0", rest));
            // A process that failed to start is this subreaper's child now (without --detach):
            // reaped here, not left a zombie in the container's cgroup.
            if let Ok(pid) = pid.parse::<i32>() {
                if pid > 0 && !opts.detach {
                    // SAFETY: reaping a child reparented to us; a null status pointer is allowed.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                }
            }
            return Err(fail(step.to_string()));
        }
        _ => return Err(fail("the helper ended without a word".into())),
    };
    ctx.log.debug(&format!(
        "container {id}: exec'd pid {pid} (sandbox init {shim_pid})"
    ));
    if let Some(pf) = &opts.pid_file {
        state::write_atomic(pf, pid.to_string().as_bytes())?;
    }
    if opts.detach {
        return Ok(0);
    }
    let mut st = 0;
    // SAFETY: waiting for a child reparented to this subreaper; st is a live int.
    if unsafe { libc::waitpid(pid, &mut st, 0) } != pid {
        return Err(fail(format!(
            "wait for pid {pid}: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(if libc::WIFEXITED(st) {
        libc::WEXITSTATUS(st)
    } else {
        128 + libc::WTERMSIG(st)
    })
}

/// `exec ID COMMAND...` (no `--process`): the container's own process (`BUNDLE/config.json`, as
/// runc takes it) with `COMMAND` as its args, `--env` added, `--cwd` and `--user` when given;
/// no terminal unless `--tty`. It is then checked like a process.json.
fn command_process(bundle: &Path, opts: &ExecOptions) -> Result<Process, OciError> {
    if opts.command.is_empty() {
        return Err(OciError::Unsupported {
            what: "exec without --process or a command".into(),
            why: "give the process as --process FILE or as the command after the container id"
                .into(),
        });
    }
    let config = bundle.join("config.json");
    let mut p = match Spec::load(&config) {
        Ok(spec) => spec.process().clone().unwrap_or_default(),
        Err(e) => {
            return Err(OciError::ConfigRead {
                path: config,
                source: std::io::Error::other(e.to_string()),
            })
        }
    };
    p.set_args(Some(opts.command.clone()));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(opts.env.iter().map(|(k, v)| format!("{k}={v}")));
    p.set_env(Some(env));
    if let Some(cwd) = &opts.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some((uid, gid)) = opts.user {
        let mut user = p.user().clone();
        user.set_uid(uid);
        if let Some(gid) = gid {
            user.set_gid(gid);
        }
        p.set_user(user);
    }
    p.set_terminal(Some(false));
    Ok(p)
}

fn refused(file: &Path, field: &str, message: impl Into<String>) -> OciError {
    OciError::ProcessRefused {
        file: file.display().to_string(),
        field: format!("process.{field}"),
        message: message.into(),
    }
}

/// process.json, its JSON path named when it is not a runtime spec `Process`.
fn read_process(file: &Path) -> Result<Process, OciError> {
    let text = std::fs::read_to_string(file).map_err(|source| OciError::ConfigRead {
        path: file.to_path_buf(),
        source,
    })?;
    let mut de = serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(&mut de).map_err(|e| OciError::ConfigParse {
        path: file.to_path_buf(),
        field: e.path().to_string(),
        message: e.inner().to_string(),
    })
}

/// The shim's `enter` plan: the container's recorded policy with process.json's args, env, cwd
/// and ids, built by the native backend's own plan builder (the same Landlock rules, seccomp
/// programs and rlimits as the container's init).
fn plan_for(sd: &StateDir, file: &Path, p: &Process, terminal: bool) -> Result<Plan, OciError> {
    let mut policy = sd.policy()?;
    let args = p
        .args()
        .as_ref()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| refused(file, "args", "expected at least the program to run"))?;
    let cwd = p.cwd();
    if !cwd.is_absolute() || cwd.components().any(|c| c == Component::ParentDir) {
        return Err(refused(
            file,
            "cwd",
            format!("expected an absolute path without '..', found {cwd:?}"),
        ));
    }
    let mut env = std::collections::BTreeMap::new();
    for (i, kv) in p.env().iter().flatten().enumerate() {
        match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                env.insert(k.to_string(), v.to_string());
            }
            _ => {
                return Err(refused(
                    file,
                    &format!("env[{i}]"),
                    format!("expected NAME=VALUE, found {kv:?}"),
                ))
            }
        }
    }
    // The container's user namespace maps one uid and one gid, the init's: the only ids a
    // process in it can have.
    let (uid, gid) = (p.user().uid(), p.user().gid());
    if uid != policy.native.uid || gid != policy.native.gid {
        return Err(refused(
            file,
            "user",
            format!(
                "uid {uid} gid {gid}: the container's user namespace maps only uid {} gid {} (its \
                 init's)",
                policy.native.uid, policy.native.gid
            ),
        ));
    }
    if let Some(caps) = p.capabilities() {
        check_capabilities(caps).map_err(|(field, m)| OciError::ProcessRefused {
            file: file.display().to_string(),
            field,
            message: m,
        })?;
    }
    for (i, r) in p.rlimits().iter().flatten().enumerate() {
        let name = serde_json::to_value(r.typ()).ok();
        if name.as_ref().and_then(|v| v.as_str()) == Some("RLIMIT_NOFILE") {
            if !(16..=1 << 20).contains(&r.soft()) {
                return Err(refused(
                    file,
                    &format!("rlimits[{i}].soft"),
                    format!("expected RLIMIT_NOFILE in 16..=1048576, found {}", r.soft()),
                ));
            }
            policy.native.rlimits.nofile = r.soft();
        }
    }
    policy.filesystem.workdir = cwd.clone();
    // The container's program (its argv0 link) stands in for the artifact: the plan takes only
    // its format from it (a script's fd would be kept), and `enter` plans execute argv[0] instead.
    let argv0_dir = sd.dir.join(state::ARGV0_DIR);
    let program = std::fs::read_dir(&argv0_dir)
        .ok()
        .and_then(|mut d| d.next())
        .and_then(|e| e.ok())
        .map(|e| e.path())
        .ok_or_else(|| {
            OciError::io(format!("read {}", argv0_dir.display()))(std::io::Error::from(
                std::io::ErrorKind::NotFound,
            ))
        })?;
    let artifact = crate::workload::Artifact::detect(&program).map_err(OciError::Workload)?;
    let host = crate::HostConfig::default();
    // With a terminal the process's stdio are the pty the helper makes: its controlling terminal.
    let stdio = if terminal {
        crate::backend::Stdio::Terminal
    } else {
        crate::backend::Stdio::Inherit
    };
    let launch = crate::backend::Launch {
        run_id: &sd.id,
        policy: &policy,
        artifact: &artifact,
        args: &args[1..],
        env,
        stdio: &stdio,
        deadline: std::time::Instant::now(),
        host: &host,
        joins: &[],
        pass_fds: &[],
    };
    let mut plan = crate::backend::native::build_plan(&launch, policy.native.landlock)
        .map_err(|e| OciError::io("build the process's plan")(std::io::Error::other(e)))?;
    plan.argv[0] = args[0].clone();
    plan.enter = true;
    plan.keep_workload_fd = false;
    // The container is in its envelope: RLIMIT_NPROC one above the pids limit, as the init's.
    crate::backend::native::set_envelope(&mut plan, policy.resources.pids, true);
    Ok(plan)
}

/// The sandbox's init (the monitor's child in another pid namespace) and its namespaces, opened;
/// checked again after the opening, so a pid reused in between is not entered.
fn sandbox_namespaces(r: &state::Record) -> Result<(i32, Vec<(libc::c_int, OwnedFd)>), String> {
    let ns = |pid: i32, n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).ok();
    let shim = procfs::children(r.pid)
        .into_iter()
        .find(|&c| ns(c, "pid").is_some() && ns(c, "pid") != ns(r.pid, "pid"))
        .ok_or("the container's sandbox is not running (yet)")?;
    let start = procfs::stat(shim).map(|s| s.start_time);
    let mut fds = Vec::new();
    for (name, flag) in NAMESPACES {
        let p = format!("/proc/{shim}/ns/{name}");
        let f = std::fs::File::open(&p).map_err(|e| format!("open {p}: {e}"))?;
        fds.push((flag, OwnedFd::from(f)));
    }
    if procfs::stat(shim).map(|s| s.start_time) != start || !procfs::alive(r.pid, r.pid_start_time)
    {
        return Err("the container's sandbox ended".into());
    }
    Ok((shim, fds))
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0; 2];
    // SAFETY: a pointer to two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The helper (a forked, single-threaded child of `exec`): the pty, the cgroup, the namespaces,
/// then the process; returns its pid once its shim said it executes the program next.
fn enter_and_fork(
    opts: &ExecOptions,
    envelope: &crate::envelope::Envelope,
    nsfds: &[(libc::c_int, OwnedFd)],
    shim: libc::c_int,
    plan_json: &[u8],
) -> Result<i32, (Option<i32>, String)> {
    let early = |s: String| (None, s);
    // Root's supplementary groups would stay with the process: the container's user namespace
    // has setgroups denied, so nothing inside could clear them.
    crate::backend::native::spawn::drop_supplementary_groups()
        .map_err(|e| early(format!("setgroups([]): {e}")))?;
    // Not dumpable: while it holds root's or the container's capabilities, nothing of the
    // container may ptrace it or open its /proc files.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    if let Some(sock) = &opts.console_socket {
        crate::oci::console::give_pty(sock)
            .map_err(|e| early(format!("console socket {}: {e}", sock.display())))?;
    }
    // The container's cgroup: the process's memory and tasks count against its limits.
    envelope
        .enter()
        .map_err(|e| early(format!("join the container's cgroup: {e}")))?;
    for (flag, fd) in nsfds {
        // SAFETY: setns with an nsfs fd this process owns.
        if unsafe { libc::setns(fd.as_raw_fd(), *flag) } != 0 {
            let name = NAMESPACES
                .iter()
                .find(|(_, f)| f == flag)
                .map_or("?", |n| n.0);
            return Err(early(format!(
                "setns into the container's {name} namespace: {}",
                std::io::Error::last_os_error()
            )));
        }
    }
    let mut socks = [0; 2];
    // SAFETY: a pointer to two ints.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
            socks.as_mut_ptr(),
        )
    } != 0
    {
        return Err(early(format!(
            "socketpair: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: both fds were just created.
    let (mine, theirs) = unsafe {
        (
            OwnedFd::from_raw_fd(socks[0]),
            OwnedFd::from_raw_fd(socks[1]),
        )
    };
    // SAFETY: the helper is single-threaded: the child may run any code before its exec.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(early(format!("fork: {}", std::io::Error::last_os_error())));
    }
    if pid == 0 {
        // SAFETY: in the fork's child, on fds it owns; ends in exec or _exit.
        unsafe { exec_shim(theirs.as_raw_fd(), shim, opts.preserve_fds) }
    }
    drop(theirs);
    let mut control = std::fs::File::from(mine);
    let mut msg = Vec::with_capacity(plan_json.len() + 5);
    msg.push(GO_BYTE);
    msg.extend_from_slice(&(plan_json.len() as u32).to_le_bytes());
    msg.extend_from_slice(plan_json);
    let sent = control.write_all(&msg);
    // Until EOF: the shim's words, then the socket closes at its exec (or its exit).
    let mut words = String::new();
    let _ = control.read_to_string(&mut words);
    for line in words.lines() {
        if let Ok(Message::SetupError { step }) = serde_json::from_str::<Message>(line) {
            return Err((Some(pid), format!("the process could not start: {step}")));
        }
    }
    let exec_next = words
        .lines()
        .any(|l| matches!(serde_json::from_str(l), Ok(Message::Exec { .. })));
    match (sent, exec_next) {
        (_, true) => Ok(pid),
        (Err(e), false) => Err((Some(pid), format!("send the plan: {e}"))),
        (Ok(()), false) => Err((Some(pid), "the process's shim ended without a word".into())),
    }
}

/// The process: keeps the capabilities it has in the container's user namespace across the exec
/// of the shim (raised as ambient: its uid is not that namespace's root, so the exec would clear
/// them otherwise; the shim drops every one before the program runs), puts the control socket at
/// [`CONTROL_FD`], the `passed` fds it inherited at 3.. at `PASSED_FDS_BASE`.. (for the shim to
/// give them back as 3..), and executes the shim by fd.
///
/// # Safety
/// Only in the child of a fork of a single-threaded process, with `sock` and `shim` open.
unsafe fn exec_shim(sock: libc::c_int, shim: libc::c_int, passed: i32) -> ! {
    // SAFETY: raw calls on this process's own capabilities and fds; see the contract.
    unsafe {
        // capget/capset, version 3 (two 32-bit words per set): inheritable = permitted, which
        // raising a capability as ambient requires.
        let mut hdr = [0x2008_0522u32, 0];
        let mut data = [[0u32; 3]; 2];
        if libc::syscall(libc::SYS_capget, hdr.as_mut_ptr(), data.as_mut_ptr()) != 0 {
            libc::_exit(126);
        }
        data[0][2] = data[0][1];
        data[1][2] = data[1][1];
        if libc::syscall(libc::SYS_capset, hdr.as_mut_ptr(), data.as_ptr()) != 0 {
            libc::_exit(126);
        }
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAP_AMBIENT, libc::PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0 {
                break;
            }
        }
        // Every source high first (3 is one of the passed fds and CONTROL_FD too).
        let mut high = [-1; hybox_shim::plan::MAX_PASSED_FDS];
        for (i, h) in high.iter_mut().take(passed.max(0) as usize).enumerate() {
            *h = libc::fcntl(3 + i as libc::c_int, libc::F_DUPFD_CLOEXEC, 100);
            if *h < 0 {
                libc::_exit(126);
            }
        }
        let hi = libc::fcntl(sock, libc::F_DUPFD_CLOEXEC, 100);
        if hi < 0 || libc::dup2(hi, CONTROL_FD) < 0 {
            libc::_exit(126);
        }
        for (i, h) in high.iter().take(passed.max(0) as usize).enumerate() {
            if libc::dup2(*h, hybox_shim::plan::PASSED_FDS_BASE + i as libc::c_int) < 0 {
                libc::_exit(126);
            }
        }
        let argv = [c"hybox-shim".as_ptr(), std::ptr::null()];
        let envp = [std::ptr::null::<libc::c_char>()];
        libc::syscall(
            libc::SYS_execveat,
            shim,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(127)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A state dir as `create` leaves it: the recorded policy and the argv0 link.
    fn state_dir(dir: &Path) -> StateDir {
        let sd = StateDir::new(dir, "c1").unwrap();
        sd.create().unwrap();
        let rt = crate::oci::runtime_policy::RuntimePolicy::from_json_str(
            crate::oci::runtime_policy::BUILTIN,
            "builtin",
        )
        .unwrap();
        // A bundle whose process.user is root, as ctr's, Docker's and the CRI's are.
        let mut policy = rt.policy;
        (policy.native.uid, policy.native.gid) = (0, 0);
        sd.write_policy(&policy).unwrap();
        let argv0 = sd.dir.join(state::ARGV0_DIR);
        std::fs::create_dir(&argv0).unwrap();
        std::os::unix::fs::symlink("/proc/self/exe", argv0.join("sh")).unwrap();
        sd
    }

    #[test]
    fn the_recorded_exec_processes_become_enter_plans() {
        let dir = tempfile::tempdir().unwrap();
        let sd = state_dir(dir.path());
        for name in [
            "ctr-exec-process",
            "docker-exec-process",
            "cri-exec-process",
        ] {
            let file = Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../tests/fixtures/oci")
                .join(format!("{name}.json"));
            let p = read_process(&file).unwrap();
            let plan = plan_for(&sd, &file, &p, false).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert!(plan.enter && !plan.keep_workload_fd, "{name}");
            assert_eq!(plan.argv, *p.args().as_ref().unwrap(), "{name}");
            assert_eq!(plan.workdir, *p.cwd(), "{name}");
            assert!(!plan.seccomp.is_empty(), "{name}: the allow-list");
            assert_eq!((plan.uid, plan.gid), (0, 0), "{name}");
        }
    }

    #[test]
    fn an_exec_process_gets_the_containers_seccomp_profile_before_the_allow_list() {
        let dir = tempfile::tempdir().unwrap();
        let sd = state_dir(dir.path());
        let file = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../tests/fixtures/oci/ctr-exec-process.json");
        let p = read_process(&file).unwrap();
        let without = plan_for(&sd, &file, &p, false).unwrap().seccomp;
        let mut policy = sd.policy().unwrap();
        let profile: crate::policy::SeccompProfile = serde_json::from_value(serde_json::json!({
            "default_action": "allow",
            "rules": [{"names": ["mkdirat"], "action": {"errno": 13}}]
        }))
        .unwrap();
        policy.native.seccomp.profile = Some(profile.clone());
        sd.write_policy(&policy).unwrap();
        let with = plan_for(&sd, &file, &p, false).unwrap().seccomp;
        // hybox's own programs unchanged, the allow-list still last (it denies seccomp(2)), the
        // profile's right before it.
        assert_eq!(with.len(), without.len() + 1);
        assert_eq!(with.last(), without.last());
        assert_eq!(with[..without.len() - 1], without[..without.len() - 1]);
        let compiled = crate::backend::seccomp_profile::compile(&profile).unwrap();
        assert_eq!(
            with[without.len() - 1],
            hybox_shim::plan::pack_filter(&compiled)
        );
    }

    #[test]
    fn an_unmapped_uid_and_a_privileged_capability_are_refused_naming_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let sd = state_dir(dir.path());
        let base: serde_json::Value = serde_json::from_str(include_str!(
            "../../../tests/fixtures/oci/ctr-exec-process.json"
        ))
        .unwrap();
        let field_of = |edit: &dyn Fn(&mut serde_json::Value)| {
            let mut v = base.clone();
            edit(&mut v);
            let f = dir.path().join("p.json");
            std::fs::write(&f, v.to_string()).unwrap();
            match plan_for(&sd, &f, &read_process(&f).unwrap(), false) {
                Err(OciError::ProcessRefused { field, .. }) => field,
                other => panic!("expected a refusal, got {other:?}"),
            }
        };
        assert_eq!(
            field_of(&|v| v["user"]["uid"] = 1000.into()),
            "process.user"
        );
        assert_eq!(
            field_of(&|v| v["capabilities"]["permitted"] = serde_json::json!(["CAP_SYS_ADMIN"])),
            "process.capabilities.permitted"
        );
        assert_eq!(field_of(&|v| v["cwd"] = "rel".into()), "process.cwd");
    }
}
