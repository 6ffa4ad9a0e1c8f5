//! The native backend: an ELF in fresh Linux namespaces behind the shim.
//!
//! [`prepare`] does the runner's side of the setup before the sandbox exists: the preflight (Landlock
//! when the policy requires it), the [`Plan`](hybox_shim::plan::Plan) (mounts, ids, rlimits,
//! Landlock rules, the seccomp BPF compiled here), the fds the child needs, all prepared *before*
//! the clone because the runner may be multithreaded. The child (sharing the runner's memory
//! until its exec on cgroup v1, created inside the envelope by `clone3` on v2; see `spawn`) only does
//! async-signal-safe raw syscalls: move fds into place, `execveat` the shim (embedded: [`shim`]) by fd.
//! The shim waits for "go" while the parent joins it to the envelope, writes the id maps and sends the
//! plan; the parent then waits on the pidfd with the deadline, feeding and draining stdio in the same
//! poll (`stdio`).

pub mod join;
mod plan;
pub mod shim;
pub(crate) mod spawn;
mod stdio;

use stdio::Pump;

use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use hybox_shim::plan::{LandlockStatus, Message, Plan};

use crate::backend::postmortem;
use crate::backend::Stdio;
use crate::backend::{BackendError, BackendRun, EnvelopeHandle, Launch, PreparedRun, Reaper};
use crate::policy::{LandlockMode, OnUnenforceable, Policy};
use crate::report::{Degradation, Outcome};

pub(crate) use plan::set_envelope;
pub use plan::{build_plan, host_ids, PlanError};

/// Prepares a native run (see [`Prepared`]); nothing runs yet.
pub(crate) fn prepare<'a>(launch: &Launch<'a>) -> Result<Prepared<'a>, BackendError> {
    prepare_sandbox(launch, false)
}

impl<'a> PreparedRun for Prepared<'a> {
    fn run(
        self: Box<Self>,
        envelope: Option<&EnvelopeHandle>,
        detach: bool,
    ) -> Result<(BackendRun, Option<Reaper>), BackendError> {
        let (policy, deadline) = (self.policy, self.deadline);
        let stdin = match self.stdio {
            Stdio::Capture { stdin } => stdin.clone(),
            Stdio::Inherit | Stdio::Terminal => Vec::new(),
        };
        let started = self.start(envelope)?;
        let (run, pending) = finish(started, policy, stdin, envelope, deadline, detach)?;
        Ok((run, pending.map(Reaper::new)))
    }

    fn abandon(self: Box<Self>) {}
}

/// A sandbox whose shim has its plan: namespaces, envelope membership and id maps done, the shim
/// building the sandbox (or, with `wait_for_call`, built and waiting for its call).
pub(crate) struct Started {
    pidfd: OwnedFd,
    control: std::fs::File,
    /// The runner's ends of stdin, stdout, stderr (captured stdio).
    stdio: Option<(OwnedFd, OwnedFd, OwnedFd)>,
    degradations: Vec<Degradation>,
    host_ids: (u32, u32),
    t_start: Instant,
    /// How the shim entered the envelope: `clone_into_cgroup` (v2), `migrated` (v1) or `none`.
    cgroup_entry: &'static str,
    /// What the shim said so far (a pre-built sandbox: that it is ready, or why it is not).
    reader: MessageReader,
}

impl Started {
    /// Kills the sandbox (PID 1, and with it the whole pid namespace) and reaps the shim.
    pub(crate) fn kill(self) {
        spawn::pidfd_kill(&self.pidfd);
        let _ = spawn::wait_pidfd(&self.pidfd);
    }
}

/// A pre-built sandbox for a native warm pool: everything done but the exec of the workload, which
/// waits for [`call`] (the shim's workload process blocks on the control socket after seccomp).
///
/// Returns once the shim said the sandbox is ready (or why it will not be, which the call then
/// reports), so a pool never hands out a sandbox that is still being built.
pub(crate) fn prebuild(
    launch: &Launch,
    envelope: Option<&EnvelopeHandle>,
) -> Result<Started, BackendError> {
    let mut started = prepare_sandbox(launch, true)?.start(envelope)?;
    let ctl_fd = started.control.as_raw_fd();
    loop {
        let left = launch.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || !started.reader.messages.is_empty() || started.reader.eof {
            break;
        }
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        let (ctl_ready, pid_ready) = poll_run(
            ctl_fd,
            started.pidfd.as_raw_fd(),
            None,
            ms,
            started.reader.eof,
        );
        if ctl_ready {
            started.reader.read_from(&mut started.control);
        } else if pid_ready {
            // The shim ended without a word; the call reports how.
            break;
        }
    }
    Ok(started)
}

/// The one call of a pre-built sandbox: releases the exec, feeds `stdin`, waits until `deadline`
/// or until the shim reported the workload's end; the shim may still be exiting, the returned
/// [`Reaper`] waits for it.
pub(crate) fn call(
    mut started: Started,
    policy: &Policy,
    stdin: Vec<u8>,
    envelope: Option<&crate::backend::EnvelopeHandle>,
    deadline: Instant,
) -> Result<(BackendRun, Option<Reaper>), BackendError> {
    started.t_start = Instant::now();
    // If the sandbox died while it waited, the write fails; `finish` then reports what the shim
    // said (its setup error) or how it ended.
    let released = started.control.write_all(&[hybox_shim::plan::CALL_BYTE]);
    let (mut run, pending) = finish(started, policy, stdin, envelope, deadline, true)?;
    if let Err(e) = released {
        run.details.run.release_error = Some(e.to_string());
    }
    Ok((run, pending.map(Reaper::new)))
}

/// A native run prepared before its envelope exists: the host checked, the plan (mounts, ids,
/// rlimits, Landlock rules, the seccomp programs) built and serialized, the shim and the workload
/// opened, the stdio pipes made. Everything that allocates is done here, before the clone, because
/// the runner may be multithreaded. Nothing runs yet; dropped, it closes its fds.
pub(crate) struct Prepared<'a> {
    policy: &'a Policy,
    stdio: &'a Stdio,
    deadline: Instant,
    plan: Plan,
    /// A shim file the host named ([`HostConfig::shim_path`](crate::HostConfig::shim_path)); the
    /// embedded shim otherwise.
    shim_file: Option<OwnedFd>,
    shim_name: String,
    workload: OwnedFd,
    capture: Option<spawn::StdioPipes>,
    /// The namespaces the shim joins instead of creating them (opened here, joined at the clone).
    joins: join::Joins,
    /// The caller's fds the workload gets as 3.. (`Launch::pass_fds`).
    passed: Vec<std::os::fd::RawFd>,
    ids: (u32, u32),
    host_ids: (u32, u32),
    degradations: Vec<Degradation>,
}

/// The runner's side of the setup up to the clone: preflight, the plan, the fds.
fn prepare_sandbox<'a>(
    launch: &Launch<'a>,
    wait_for_call: bool,
) -> Result<Prepared<'a>, BackendError> {
    if launch.host.shim_path.is_none() {
        // Ready by `start`, after the plan and the envelope are built meanwhile.
        shim::prefetch();
    }
    let mut degradations = Vec::new();
    let landlock_mode = preflight(launch.policy, &mut degradations)?;
    // The one check of the count (spawn's fixed-size copy and the shim rely on it).
    if launch.pass_fds.len() > hybox_shim::plan::MAX_PASSED_FDS {
        return Err(io_err(
            "pass fds to the workload",
            std::io::Error::other(format!(
                "{} fds, at most {}",
                launch.pass_fds.len(),
                hybox_shim::plan::MAX_PASSED_FDS
            )),
        ));
    }
    let mut plan = build_plan(launch, landlock_mode).map_err(BackendError::Plan)?;
    plan.wait_for_call = wait_for_call;
    // The embedded shim (a sealed memory file), or a shim file the host names.
    let shim_file = match &launch.host.shim_path {
        Some(p) => Some(
            spawn::open_exec(p).map_err(|e| io_err(&format!("open shim {}", p.display()), e))?,
        ),
        None => None,
    };
    let shim_name = launch.host.shim_path.as_ref().map_or_else(
        || "the embedded hybox-shim".to_string(),
        |p| p.display().to_string(),
    );
    let workload = spawn::open_exec(&launch.artifact.path).map_err(|e| {
        io_err(
            &format!("open workload {}", launch.artifact.path.display()),
            e,
        )
    })?;

    let capture = match launch.stdio {
        Stdio::Inherit | Stdio::Terminal => None,
        Stdio::Capture { .. } => Some(spawn::StdioPipes::new().map_err(|e| io_err("pipe", e))?),
    };
    let joins = join::Joins::open(launch.joins).map_err(|e| io_err("open namespace to join", e))?;
    Ok(Prepared {
        policy: launch.policy,
        stdio: launch.stdio,
        deadline: launch.deadline,
        plan,
        shim_file,
        shim_name,
        workload,
        capture,
        joins,
        passed: launch.pass_fds.to_vec(),
        ids: (launch.policy.native.uid, launch.policy.native.gid),
        host_ids: host_ids(launch.policy),
        degradations,
    })
}

impl Prepared<'_> {
    /// The runner's side from the clone to the plan sent: the shim started in its namespaces
    /// (created inside `envelope` on cgroup v2, joined to it before it runs anything on v1), the
    /// id maps written, the plan sent with "go".
    fn start(self, envelope: Option<&EnvelopeHandle>) -> Result<Started, BackendError> {
        let Prepared {
            policy,
            mut plan,
            shim_file,
            shim_name,
            workload,
            capture,
            joins,
            passed,
            ids: (uid, gid),
            host_ids: (host_uid, host_gid),
            degradations,
            ..
        } = self;
        let shim = match &shim_file {
            Some(f) => f.as_fd(),
            None => shim::embedded().map_err(|e| io_err("load hybox-shim", e))?,
        };
        plan::set_envelope(&mut plan, policy.resources.pids, envelope.is_some());
        let plan_json = serde_json::to_vec(&plan)
            .map_err(|e| io_err("serialize plan", std::io::Error::other(e)))?;
        spawn::drop_supplementary_groups().map_err(|e| io_err("setgroups([]) before clone", e))?;

        let t_start = Instant::now();
        let clone_err = |e: std::io::Error| match e.raw_os_error() {
            // EPERM: userns disallowed (sysctl, AppArmor, seccomp of a container); ENOSPC/EUSERS: the
            // user namespace limit (user.max_user_namespaces) is 0 or reached.
            Some(libc::EPERM) | Some(libc::ENOSPC) | Some(libc::EUSERS) => userns_refused(&e),
            _ => io_err("clone3", e),
        };
        // cgroup v2: the shim is created inside the envelope; otherwise it is joined before release.
        let into = match envelope.and_then(|e| e.clone_into_dir()) {
            Some(dir) => {
                let fd = std::fs::File::open(&dir)
                    .map_err(|e| io_err(&format!("open cgroup {}", dir.display()), e))?;
                spawn::spawn_into(
                    shim,
                    &workload,
                    capture.as_ref(),
                    &fd.into(),
                    &joins,
                    &passed,
                )
                .map_err(clone_err)?
            }
            None => None,
        };
        let cgroup_entry = match (&into, envelope) {
            (Some(_), _) => "clone_into_cgroup",
            (None, Some(_)) => "migrated",
            (None, None) => "none",
        };
        let born_inside = into.is_some();
        let child = match into {
            Some(c) => c,
            None => spawn::spawn(shim, &workload, capture.as_ref(), &joins, &passed)
                .map_err(clone_err)?,
        };
        drop(workload);
        drop(shim_file);
        drop(joins);
        let spawn::Child {
            pid,
            pidfd,
            control,
        } = child;
        let mut control = std::fs::File::from(control);

        // From here, any failure must kill the child: it holds namespaces and maybe a cgroup slot.
        let setup = (|| -> Result<(), BackendError> {
            if let Some(env) = envelope.filter(|_| !born_inside) {
                env.join(pid).map_err(|e| io_err("join envelope", e))?;
            }
            nix::sys::socket::setsockopt(&control, nix::sys::socket::sockopt::PassCred, &true)
                .map_err(|e| io_err("SO_PASSCRED", e.into()))?;
            spawn::write_id_maps(pid, uid, gid, host_uid, host_gid)
                .map_err(|e| io_err("write id maps", e))?;
            let mut msg = Vec::with_capacity(plan_json.len() + 5);
            msg.push(hybox_shim::plan::GO_BYTE);
            msg.extend_from_slice(&(plan_json.len() as u32).to_le_bytes());
            msg.extend_from_slice(&plan_json);
            control
                .write_all(&msg)
                .map_err(|e| io_err("send plan", e))?;
            Ok(())
        })();
        if let Err(e) = setup {
            spawn::pidfd_kill(&pidfd);
            // A child that ended by itself before our SIGKILL failed to start the shim: say so, rather
            // than the step of ours that found it gone.
            return Err(match spawn::wait_pidfd(&pidfd) {
                Ok(spawn::WaitStatus::Exited(code)) => match spawn::start_failure(code) {
                    Some(why) => io_err(
                        &format!("start {shim_name}"),
                        std::io::Error::other(format!("{why} (exit {code})")),
                    ),
                    None => e,
                },
                _ => e,
            });
        }
        Ok(Started {
            pidfd,
            control,
            stdio: capture.map(|p| p.into_parent()),
            degradations,
            host_ids: (host_uid, host_gid),
            t_start,
            cgroup_entry,
            reader: MessageReader::default(),
        })
    }
}

/// Feeds and drains stdio, waits for the shim (killing the envelope at `deadline`), classifies.
/// With `early`, returns as soon as the shim reported the workload's end and closed its files,
/// with the shim's pidfd to reap (its namespaces' teardown is left to the caller, off the call's
/// path); otherwise waits for the shim's exit and returns no pidfd.
fn finish(
    started: Started,
    policy: &Policy,
    stdin: Vec<u8>,
    envelope: Option<&crate::backend::EnvelopeHandle>,
    deadline: Instant,
    early: bool,
) -> Result<(BackendRun, Option<OwnedFd>), BackendError> {
    let Started {
        pidfd,
        mut control,
        stdio,
        mut degradations,
        host_ids: (host_uid, host_gid),
        t_start,
        cgroup_entry,
        mut reader,
    } = started;
    let kill = |pidfd: &OwnedFd| spawn::pidfd_kill(pidfd);

    // stdio is pumped by this thread, in the same poll as the control socket and the pidfd: no
    // thread per pipe to create and to switch to while the workload starts.
    let mut pump = stdio.map(|(stdin_w, out_r, err_r)| {
        Pump::new(
            stdin_w,
            stdin,
            out_r,
            policy.resources.stdout_max.bytes(),
            err_r,
            policy.resources.stderr_max.bytes(),
        )
    });

    // Wait: control messages and the pidfd, until the deadline.
    let mut exec_at: Option<Instant> = None;
    let mut timed_out = false;
    let ctl_fd = control.as_raw_fd();
    let status = loop {
        let now = Instant::now();
        let timeout_ms = if timed_out {
            -1
        } else {
            deadline
                .saturating_duration_since(now)
                .as_millis()
                .min(i32::MAX as u128) as i32
        };
        let (ctl_ready, pid_ready) = poll_run(
            ctl_fd,
            pidfd.as_raw_fd(),
            pump.as_mut(),
            timeout_ms,
            reader.eof,
        );
        if ctl_ready {
            reader.read_from(&mut control);
            if exec_at.is_none()
                && reader
                    .messages
                    .iter()
                    .any(|m| matches!(m, Message::Exec { .. }))
            {
                exec_at = Some(Instant::now());
            }
        }
        if pid_ready {
            break Some(spawn::wait_pidfd(&pidfd).map_err(|e| io_err("waitid", e))?);
        }
        if early && !timed_out && reader.messages.iter().any(Message::is_final) {
            // The shim reported how the workload ended and is exiting: its files (stdio, this
            // socket) close first, the namespaces' teardown comes after and is not the caller's.
            break None;
        }
        if !ctl_ready && !timed_out && Instant::now() >= deadline {
            // Kill everything in the envelope, then pid 1 (which takes the whole pid namespace with it).
            timed_out = true;
            if let Some(env) = envelope {
                let _ = env.kill_all();
            }
            kill(&pidfd);
        }
    };
    let t_end = Instant::now();
    // Messages written right before the shim exited.
    while !reader.eof {
        reader.read_from(&mut control);
    }
    // The output up to its end: every writer is gone or going (the pid namespace dies with the shim).
    let (out, err) = match pump {
        Some(p) => p.finish(),
        None => Default::default(),
    };

    let mut outcome = classify(&reader.messages, status, timed_out);
    // Still exiting (early return): the caller reaps it.
    let pending = if status.is_none() { Some(pidfd) } else { None };
    if let (Outcome::SeccompViolation { syscall }, Some(wpid)) = (&mut outcome, reader.exec_pid) {
        if let Some(name) = postmortem::seccomp_killed_syscall(wpid, 20) {
            *syscall = name;
        }
    }
    let mut run = BackendRun::new(outcome);
    let exec_at = exec_at.unwrap_or(t_end);
    run.start_us = exec_at.duration_since(t_start).as_micros() as u64;
    run.run_us = t_end.duration_since(exec_at).as_micros() as u64;
    (run.stdout, run.stdout_bytes, run.stdout_truncated) = out;
    (run.stderr, run.stderr_bytes, run.stderr_truncated) = err;
    let landlock = reader
        .messages
        .iter()
        .find_map(|m| match m {
            Message::Exec { landlock } => Some(*landlock),
            _ => None,
        })
        .unwrap_or(LandlockStatus::NotReached);
    if landlock.is_degraded() {
        degradations.push(Degradation {
            what: "landlock".into(),
            why: format!("{landlock} on this kernel"),
        });
    }
    run.details.native.landlock = Some(landlock);
    run.details.native.pid1 = Some("hybox-shim".into());
    if policy.native.nested {
        run.details.native.nested = Some(crate::report::details::NestedGrant::granted());
    }
    if let Outcome::SeccompViolation { syscall } = &run.outcome {
        // A sandbox tool run without the grant dies on its first nested-sandbox syscall: name it.
        run.details.native.missing_grant =
            crate::report::details::missing_grant(syscall, policy.native.nested);
    }
    // How the shim entered the envelope: created in it (cgroup v2), or migrated before release (v1).
    run.details.native.cgroup_entry = Some(cgroup_entry.into());
    run.details.native.host_ids = Some(format!("{host_uid}:{host_gid}"));
    run.degradations = degradations;
    Ok((run, pending))
}

fn io_err(step: &str, source: std::io::Error) -> BackendError {
    BackendError::Io {
        step: step.into(),
        source,
    }
}

/// How the run ended. The shim's own report wins; its exit status is the fallback (e.g. killed).
///
/// OOM and pids classification is the caller's: a `Signaled { SIGKILL }` hybox did not send is the raw
/// fact; `sandbox.rs` asks the envelope's usage (`oom_kills`, `pids_limit_hits`) to refine it.
fn classify(messages: &[Message], status: Option<spawn::WaitStatus>, timed_out: bool) -> Outcome {
    if timed_out {
        return Outcome::Timeout;
    }
    for m in messages.iter().rev() {
        match m {
            Message::SetupError { step } => return Outcome::SetupError { step: step.clone() },
            Message::Exited { code } => return Outcome::Exited { code: *code },
            Message::Signaled { signal } if *signal == libc::SIGSYS => {
                // SECCOMP_RET_KILL_PROCESS. The syscall number is in the kernel's audit record
                // (type=1326), not in anything a parent can wait for; `run` fills it in from there.
                return Outcome::SeccompViolation {
                    syscall: "unknown".into(),
                };
            }
            Message::Signaled { signal } => return postmortem::signaled(*signal),
            Message::Exec { .. } | Message::Ready => {}
        }
    }
    match status {
        Some(spawn::WaitStatus::Exited(125)) => Outcome::SetupError {
            step: "hybox-shim exited before reporting (125)".into(),
        },
        Some(spawn::WaitStatus::Exited(code)) => Outcome::SetupError {
            step: match spawn::start_failure(code).filter(|_| messages.is_empty()) {
                // Nothing was said: the child failed before the shim ran (its exec raced our setup).
                Some(why) => format!("start hybox-shim: {why} (exit {code})"),
                None => format!("hybox-shim exited with {code} before the workload ended"),
            },
        },
        Some(spawn::WaitStatus::Signaled(sig)) => postmortem::signaled(sig),
        None => Outcome::SetupError {
            step: "hybox-shim ended without a report".into(),
        },
    }
}

#[derive(Default)]
struct MessageReader {
    buf: Vec<u8>,
    exec_pid: Option<i32>,
    messages: Vec<Message>,
    eof: bool,
}

impl MessageReader {
    /// Reads what is there. The socket has SO_PASSCRED set, so each read also says which process wrote
    /// it, as a pid of the runner's namespace: the `Exec` message comes from the workload's process
    /// itself, which gives its host pid (for the seccomp audit record) without a race.
    fn read_from(&mut self, f: &mut std::fs::File) {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixCredentials};
        let mut chunk = [0u8; 4096];
        let mut cmsg = nix::cmsg_space!(UnixCredentials);
        let mut iov = [std::io::IoSliceMut::new(&mut chunk)];
        let (n, pid) = match recvmsg::<()>(
            f.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(msg) => {
                let pid = msg.cmsgs().ok().and_then(|mut c| {
                    c.find_map(|m| match m {
                        ControlMessageOwned::ScmCredentials(c) => Some(c.pid()),
                        _ => None,
                    })
                });
                (msg.bytes, pid)
            }
            Err(nix::errno::Errno::EINTR) => return,
            Err(_) => (0, None),
        };
        if n == 0 {
            self.eof = true;
            return;
        }
        self.buf.extend_from_slice(&chunk[..n]);
        while let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.buf.drain(..=i).collect();
            if let Ok(m) = serde_json::from_slice::<Message>(&line) {
                if matches!(m, Message::Exec { .. }) {
                    self.exec_pid = pid;
                }
                self.messages.push(m);
            }
        }
    }
}

/// One pass of the run's wait: polls the control socket (unless at its end), the pidfd and the stdio
/// pipes still open, feeds and drains what is ready, and returns whether the control socket and the
/// pidfd are ready.
fn poll_run(
    ctl: RawFd,
    pidfd: RawFd,
    pump: Option<&mut Pump>,
    timeout_ms: i32,
    ctl_eof: bool,
) -> (bool, bool) {
    let mut fds = vec![
        libc::pollfd {
            fd: if ctl_eof { -1 } else { ctl },
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: pidfd,
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    if let Some(p) = &pump {
        fds.extend(p.pollfds());
    }
    // SAFETY: a pointer to `fds.len()` live pollfds.
    let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    if n <= 0 {
        return (false, false);
    }
    if let Some(p) = pump {
        p.serve(&fds[2..]);
    }
    (fds[0].revents != 0, fds[1].revents != 0)
}

/// The preflight error for a host that refuses to create the sandbox's user namespace.
fn userns_refused(e: &std::io::Error) -> BackendError {
    BackendError::UserNamespaces {
        call: "clone3(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWPID|CLONE_NEWNET|...)",
        source: std::io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(libc::EPERM)),
    }
}

/// Checks the host can build this sandbox; returns the Landlock mode to use.
fn preflight(
    policy: &Policy,
    degradations: &mut Vec<Degradation>,
) -> Result<LandlockMode, BackendError> {
    // User namespaces are not probed here with a throwaway clone (a whole extra process per run):
    // the sandbox's own clone3 is the probe, and `userns_refused` turns its failure into the same
    // actionable error.
    let mode = policy.native.landlock;
    if mode == LandlockMode::Required {
        static LANDLOCK: OnceLock<Result<(), Arc<LandlockUnavailable>>> = OnceLock::new();
        if let Err(e) = LANDLOCK.get_or_init(|| probe_landlock().map_err(Arc::new)) {
            if policy.on_unenforceable == OnUnenforceable::Degrade {
                degradations.push(Degradation {
                    what: "landlock".into(),
                    why: e.to_string(),
                });
                return Ok(LandlockMode::BestEffort);
            }
            return Err(BackendError::Landlock(e.clone()));
        }
    }
    Ok(mode)
}

/// This kernel cannot enforce all of the shim's Landlock ruleset (ABI 6: filesystem, TCP, scoping).
#[derive(Debug, thiserror::Error)]
#[error("Landlock ABI 6 is not available: {0}")]
pub struct LandlockUnavailable(#[source] landlock::RulesetError);

/// Whether the kernel fully supports the Landlock features the shim uses (ABI 6: fs, TCP, scoping).
fn probe_landlock() -> Result<(), LandlockUnavailable> {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr, Scope, ABI,
    };
    let abi = ABI::V6;
    Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp))
        .and_then(|r| r.scope(Scope::AbstractUnixSocket | Scope::Signal))
        .and_then(|r| r.create())
        .map(drop)
        .map_err(LandlockUnavailable)
}
