//! The wasm backend: WASI modules and components in wasmtime.
//!
//! The supervisor (this module's [`start`] and `finish`) never compiles or loads guest bytes. It starts a worker
//! process ([`start`]): the running hybox executable itself (by fd, see [`exe`]) re-executed as
//! `hybox __wasm-worker` with an empty environment, or, for the `hybox run` CLI, a fork of the CLI ([`WorkerStart`]). [`Sandbox::run`]
//! starts the worker before it builds the envelope, so the two overlap; [`finish`] then moves the
//! worker into the run's envelope (cgroup) and only then sends it the job over a pipe. The worker
//! ([`worker_main`]) compiles the guest (or loads it from the private compile cache, see
//! [`artifact`]), links it against a WASI context built only from the policy, runs it under store
//! limits, an epoch deadline and optional fuel, and writes the result back over a second pipe. A
//! forked worker, which holds a copy of the job, loads its engine and a cached module while it
//! waits (`worker::prepare`): hybox's own verified bytes, never a compile of the guest's.
//!
//! [`Sandbox::run`]: crate::Sandbox::run
//!
//! Timeouts are enforced three times over: epoch interruption stops running wasm code at the
//! deadline; the worker's watchdog reports a timeout 200 ms later if the guest is blocked in a host
//! call (sleep, poll) that epochs cannot reach; and the supervisor kills the worker
//! ([`SUPERVISOR_GRACE`] after the deadline) if no result came at all.
//!
//! The job and the result travel as [`protocol`] frames, the same frames a warm worker uses.

pub mod artifact;
pub mod exe;
pub mod hardened;
pub mod http;
// The wasi:http host itself (wasmtime-wasi-http on hyper) runs only in the worker process, which is
// the hybox binary: a library built without the `http` feature still starts HTTP functions.
#[cfg(feature = "http")]
mod http_outbound;
#[cfg(feature = "http")]
mod http_worker;
pub mod netns;
pub mod protocol;
pub mod warm;
pub mod worker;

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::{Duration, Instant};

use crate::backend::postmortem;
use crate::backend::Stdio;
use crate::backend::{BackendError, BackendRun, EnvelopeHandle, Launch, PreparedRun, Reaper};
use crate::host::HostConfig;
use crate::policy::{OnUnenforceable, Policy};
use crate::report::{Degradation, Outcome};

pub use crate::host::WorkerStart;
pub use artifact::{cache_clear, cache_list, ArtifactError, CacheEntry};
pub use exe::{this_executable_runs_the_worker, worker_exe, WorkerExe};
pub use http::{HttpCallReport, HttpFunction, World};
pub use protocol::{Job, WorkerResult};
pub use warm::{WarmCall, WarmFunction};
pub use worker::worker_main;

/// The hidden subcommand that runs the worker.
pub const WORKER_SUBCOMMAND: &str = "__wasm-worker";
/// Where the worker finds the job pipe and the result pipe.
pub const JOB_FD: i32 = 3;
pub const RESULT_FD: i32 = 4;
/// How long after the deadline the supervisor waits for the worker's own timeout report before it
/// kills the worker.
pub const SUPERVISOR_GRACE: Duration = Duration::from_secs(2);
/// How long after the deadline a worker's watchdog gives up on the guest thread (a guest blocked in
/// a host call such as `poll_oneoff` is not reached by epoch interruption), reports the timeout
/// itself and exits.
pub const WATCHDOG_GRACE: Duration = Duration::from_millis(200);

impl PreparedRun for Started {
    fn run(
        self: Box<Self>,
        envelope: Option<&EnvelopeHandle>,
        _detach: bool,
    ) -> Result<(BackendRun, Option<Reaper>), BackendError> {
        // The worker is reaped before `finish` returns: nothing is left to detach.
        finish(*self, envelope).map(|run| (run, None))
    }

    fn abandon(self: Box<Self>) {
        let mut s = *self;
        if let Some(c) = s.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A worker started for one run, blocked until it receives its job (see [`start`]).
#[derive(Debug)]
pub struct Started {
    /// The worker, once started (on cgroup v2 an exec'd one starts in `finish`, see `pending`).
    child: Option<crate::backend::process::Spawned>,
    pending: Option<Pending>,
    job: Job,
    stdin: Vec<u8>,
    job_w: OwnedFd,
    res_r: OwnedFd,
    tmp: Option<crate::scratch::ScratchDir>,
    start: WorkerStart,
    os_sandbox: bool,
    /// The loopback worker's own namespaces (`netns`), or the joined one, for the report.
    network_ns: Option<&'static str>,
    /// A network namespace to join instead of making one (a Kubernetes pod's, see [`NET_JOINED`]).
    joins: crate::backend::native::join::Joins,
    degradations: Vec<Degradation>,
    t_spawn: Instant,
    deadline: Instant,
}

impl Started {
    /// The worker's pid, once it is started (on cgroup v2 an exec'd worker starts in the envelope,
    /// when the run runs).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The guest's `/tmp` on the host, when the policy grants one.
    pub fn scratch_dir(&self) -> Option<&Path> {
        self.tmp.as_ref().map(crate::scratch::ScratchDir::path)
    }
}

/// Starts the run's worker, which waits for its job: the exec'd worker blocked reading it, the
/// forked one after it has prepared what it can without guest bytes and outside the envelope (its
/// engine, and the module if the compile cache holds it, see `worker::prepare`). Takes nothing
/// from the envelope: [`Sandbox::run`](crate::Sandbox::run) starts the worker first and builds
/// the envelope meanwhile, and [`finish`] moves the worker into it before sending the job.
pub fn start(launch: &Launch) -> Result<Started, BackendError> {
    let policy = launch.policy;
    let degradations = Vec::new();
    // wasm.os_sandbox: the worker in namespaces under Landlock and seccomp (see `hardened`). Only a
    // host without usable user namespaces cannot have it; the worker's own unshare is the probe (no
    // throwaway process per run), and `spawn_hardened_or_degrade` refuses, or degrades if the policy
    // says so.
    let os_sandbox = policy.wasm.os_sandbox;
    let loopback = policy.network == crate::policy::Network::Loopback;
    // `backend::prepare` lets only a network namespace through, and only under `loopback`.
    let joins = crate::backend::native::join::Joins::open(launch.joins).map_err(|source| {
        BackendError::Io {
            step: "open the network namespace to join".into(),
            source,
        }
    })?;
    // Namespaces are made at clone time, where a refusal is an error this side sees: a hardened or
    // loopback worker is always exec'd.
    let start = match os_sandbox || loopback {
        true => WorkerStart::EXEC,
        false => launch.host.wasm_worker_start,
    };
    // Only an exec'd worker needs the executable (a forked one is this process already).
    let exe = match start.forked_entry() {
        Some(_) => None,
        None => Some(exe::worker_exe(launch.host)?),
    };
    // An unusable cache location is not fatal (the worker compiles without it and says so).
    let cache_dir = artifact::cache_dir(launch.host).ok();
    let tmp = match policy.filesystem.tmp {
        Some(_) => Some(
            crate::scratch::scratch_dir("hybox-wasm-tmp-").map_err(|source| BackendError::Io {
                step: "create the /tmp directory for the guest".into(),
                source,
            })?,
        ),
        None => None,
    };
    let (capture, stdin) = match launch.stdio {
        Stdio::Inherit | Stdio::Terminal => (None, &[][..]),
        Stdio::Capture { stdin } => (
            Some((
                policy.resources.stdout_max.bytes(),
                policy.resources.stderr_max.bytes(),
            )),
            stdin.as_slice(),
        ),
    };
    let t_spawn = Instant::now();
    let mut job = Job {
        artifact: launch.artifact.path.clone(),
        format: launch.artifact.format.clone(),
        args: launch.args.to_vec(),
        env: launch
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        policy: policy.clone(),
        capture,
        tmp_dir: tmp.as_ref().map(|t| t.path().to_path_buf()),
        cache_dir,
        timeout_ms: launch
            .deadline
            .saturating_duration_since(t_spawn)
            .as_millis() as u64,
        own_network_namespace: false,
        store_memory_is_cgroup_limit: !launch.host.wasm_memory_headroom,
    };
    // The worker confines itself only when the supervisor started it in namespaces.
    job.policy.wasm.os_sandbox = os_sandbox;
    let io = BackendError::io;
    let (job_r, job_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe")(e.into()))?;
    let (res_r, res_w) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| io("pipe")(e.into()))?;
    let null_stdio = matches!(launch.stdio, Stdio::Capture { .. });
    let mut started = Started {
        child: None,
        pending: None,
        job,
        stdin: stdin.to_vec(),
        job_w,
        res_r,
        tmp,
        start,
        os_sandbox,
        network_ns: None,
        joins,
        degradations,
        t_spawn,
        deadline: launch.deadline,
    };
    let Some(exe) = exe else {
        let entry = start
            .forked_entry()
            .expect("no executable means a forked worker");
        let child = fork_worker(launch.stdio, &job_r, &res_w, &started.job, entry)
            .map_err(io("fork the wasm worker"))?;
        started.child = Some(child);
        return Ok(started);
    };
    let pending = Pending {
        exe,
        job_r,
        res_w,
        null_stdio,
        loopback,
    };
    // cgroup v2: the exec'd worker is cloned straight into the envelope in `finish`, once it exists
    // (no migration, no RCU grace period). v1 has no such clone: the worker starts now and its start
    // overlaps the envelope's creation; `finish` migrates it.
    if launch.host.cgroup_root.join("cgroup.controllers").exists() {
        started.pending = Some(pending);
    } else {
        let (child, _) = started.exec_worker(&pending, None)?;
        started.child = Some(child);
    }
    Ok(started)
}

/// An exec'd worker not started yet (cgroup v2: [`finish`] clones it into the envelope).
#[derive(Debug)]
struct Pending {
    exe: exe::WorkerExe,
    job_r: OwnedFd,
    res_w: OwnedFd,
    null_stdio: bool,
    loopback: bool,
}

impl Started {
    /// Starts the exec'd worker (inside the cgroup v2 directory open at `cgroup`, when given and the
    /// kernel can) and records what it got: the hardened namespaces or a degradation of them, the
    /// loopback worker's own network namespace or a degradation of it. The worker and whether it
    /// was born inside `cgroup`.
    fn exec_worker(
        &mut self,
        p: &Pending,
        cgroup: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(crate::backend::process::Spawned, bool), BackendError> {
        let loopback = p.loopback;
        let joined = self.joins.has(crate::backend::JoinKind::Network);
        let spawn = |os_sandbox: bool, private_net: libc::c_int| {
            spawn_worker(
                &p.exe,
                p.null_stdio,
                &p.job_r,
                &p.res_w,
                Namespaces {
                    os_sandbox,
                    loopback,
                    private_net,
                    joined_net: joined,
                },
                cgroup,
            )
        };
        // A pod's network namespace: the supervisor's thread enters it for the clone (the worker's
        // new user namespace could not: the pod's is owned by another one, see `native::join`),
        // and the worker is cloned without CLONE_NEWNET, so it is born in it; in a user namespace
        // of its own still (the hardened ones, or one alone), so it holds no capability over it.
        let joins = &self.joins;
        let spawn_joined = |os_sandbox: bool| {
            let entered = joins.enter()?;
            let spawned = spawn(os_sandbox, libc::CLONE_NEWUSER);
            // The supervisor must not stay in the pod's namespace: a worker started anyway goes.
            if let Err(e) = entered.leave() {
                if let Ok((mut c, _)) = spawned {
                    let _ = c.kill();
                    let _ = c.wait();
                }
                return Err(e);
            }
            spawned.map(|c| (c, Some(NET_JOINED)))
        };
        // network: loopback means the worker's own `lo` (see `netns`); the hardened worker has its
        // own network namespace already.
        let spawn_exec = |os_sandbox: bool| {
            if joined {
                return spawn_joined(os_sandbox);
            }
            if os_sandbox || !loopback {
                return spawn(os_sandbox, 0).map(|c| (c, None));
            }
            netns::spawn_private(|flags| spawn(false, flags)).map(|(c, what)| (c, Some(what)))
        };
        let spawned = match spawn_exec(self.os_sandbox) {
            // unshare(CLONE_NEWUSER|...) refused between fork and exec: no user namespaces here.
            Err(e) if self.os_sandbox && userns_refused(&e) => {
                self.degradations.push(os_sandbox_unavailable(
                    &self.job.policy,
                    format!("unshare(CLONE_NEWUSER|CLONE_NEWNS|CLONE_NEWNET|...) failed: {e}"),
                    "enable unprivileged user namespaces, ",
                )?);
                self.os_sandbox = false;
                self.job.policy.wasm.os_sandbox = false;
                spawn_exec(false)
            }
            r => r,
        };
        let ((child, inside), network_ns) = match spawned {
            // No network namespace for a loopback worker on this host.
            Err(e) if loopback && !joined && !self.os_sandbox && netns::refused(&e) => {
                self.degradations.push(private_loopback_unavailable(
                    &self.job.policy,
                    format!("clone(CLONE_NEWUSER|CLONE_NEWNET) failed: {e}"),
                )?);
                spawn(false, 0).map(|c| (c, None))
            }
            r => r,
        }
        .map_err(BackendError::io(format!(
            "start the wasm worker {}",
            p.exe.path().display()
        )))?;
        self.network_ns = network_ns;
        // A pod's namespace has the pod's interfaces besides `lo`: the unspecified address is
        // not only loopback there (see `Job::own_network_namespace`).
        self.job.own_network_namespace = !joined && (self.os_sandbox || network_ns.is_some());
        Ok((child, inside))
    }
}

/// Moves the started worker into `envelope`, sends it the job, waits for its result (or kills it
/// past the deadline), and classifies how it ended.
fn finish(
    mut started: Started,
    envelope: Option<&EnvelopeHandle>,
) -> Result<BackendRun, BackendError> {
    // On cgroup v2, an exec'd worker is created inside the envelope now.
    let mut born_inside = false;
    if let Some(p) = started.pending.take() {
        let dir = envelope.and_then(|e| e.clone_into_dir());
        let fd = match &dir {
            Some(d) => Some(std::fs::File::open(d).map_err(|source| BackendError::Io {
                step: format!("open the envelope's cgroup {}", d.display()),
                source,
            })?),
            None => None,
        };
        let (child, inside) = started.exec_worker(&p, fd.as_ref().map(std::os::fd::AsFd::as_fd))?;
        started.child = Some(child);
        born_inside = inside;
    }
    let Started {
        child,
        pending: _,
        job,
        stdin,
        job_w,
        res_r,
        tmp,
        start,
        os_sandbox,
        network_ns,
        joins: _,
        mut degradations,
        t_spawn,
        deadline,
    } = started;
    let mut child = child.expect("the worker was started above or in `start`");
    let io = BackendError::io;
    // Into the envelope before the worker has seen a byte of the guest: it is blocked reading the job.
    let cgroup_entry = match (born_inside, envelope) {
        (true, _) => "clone_into_cgroup",
        (false, Some(_)) => "migrated",
        (false, None) => "none",
    };
    if let (false, Some(env)) = (born_inside, envelope) {
        if let Err(source) = env.join(child.id() as i32) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(BackendError::Io {
                step: "move the wasm worker into the envelope".into(),
                source,
            });
        }
    }
    // The answer is bounded before anything is allocated for it: the worker runs untrusted code.
    let (omax, emax) = job.capture.unwrap_or((0, 0));
    let max = protocol::MAX_ANSWER_JSON
        .saturating_add(omax)
        .saturating_add(emax);
    let reader = std::thread::spawn(move || {
        protocol::read_frame(&mut std::fs::File::from(res_r), max)
            .and_then(|f| f.ok_or(protocol::ProtocolError::Closed)?.result())
    });
    let write = protocol::write_job(&mut std::fs::File::from(job_w), &job, &stdin);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(reader.join());
    });
    let wait = deadline.saturating_duration_since(Instant::now()) + SUPERVISOR_GRACE;
    let (answer, killed) = match rx.recv_timeout(wait) {
        Ok(Ok(answer)) => (Some(answer), false),
        // The reader thread panicked: no answer, as if the worker had sent none.
        Ok(Err(_)) => (None, false),
        Err(_) => {
            // Backstop: the worker did not report in time; kill it (and everything in the envelope).
            let _ = child.kill();
            if let Some(env) = envelope {
                let _ = env.kill_all();
            }
            (None, true)
        }
    };
    let status = child.wait().map_err(io("wait for the wasm worker"))?;
    let total_us = t_spawn.elapsed().as_micros() as u64;
    drop(tmp);
    let answer = answer.unwrap_or(Err(protocol::ProtocolError::Closed));
    let mut run = match (killed, answer) {
        (false, Ok((r, stdout, stderr))) => {
            let mut run = BackendRun::new(r.outcome);
            run.start_us = total_us.saturating_sub(r.run_us);
            run.run_us = r.run_us;
            run.stdout = stdout;
            run.stderr = stderr;
            run.stdout_bytes = r.stdout_bytes;
            run.stderr_bytes = r.stderr_bytes;
            run.stdout_truncated = r.stdout_truncated;
            run.stderr_truncated = r.stderr_truncated;
            run.details.wasm = r.details;
            run.details.wasm.worker_startup_us = Some(r.startup_us);
            run
        }
        (true, _) => {
            let mut run = BackendRun::new(Outcome::Timeout);
            run.details.wasm.timeout_in =
                Some("worker unresponsive (killed by the supervisor)".into());
            run
        }
        (false, Err(why)) => {
            // No result: the worker died. A SIGKILL here is most likely the cgroup OOM killer (the
            // envelope's counters tell); anything else is a setup failure of hybox itself.
            let outcome = match status.signal() {
                // The worker's seccomp filter killed it: name the syscall if the audit record says.
                Some(libc::SIGSYS) if os_sandbox => Outcome::SeccompViolation {
                    syscall: postmortem::seccomp_killed_syscall(child.id() as i32, 1)
                        .unwrap_or_else(|| "unknown (wasm worker)".into()),
                },
                Some(sig) => postmortem::signaled(sig),
                None => Outcome::SetupError {
                    step: format!(
                        "wasm worker exited with {status} without a result ({why}){}",
                        write
                            .as_ref()
                            .err()
                            .map(|e| format!("; sending the job failed: {e}"))
                            .unwrap_or_default()
                    ),
                },
            };
            BackendRun::new(outcome)
        }
    };
    run.details.wasm.backend_process = Some("worker".into());
    run.details.wasm.worker_start = Some(start.as_str().into());
    run.details.wasm.network_namespace = network_ns.map(str::to_string);
    // The worker lists the namespaces it was started in; a joined one is not its own.
    if network_ns == Some(NET_JOINED) {
        if let Some(os) = run.details.wasm.os_sandbox.as_mut() {
            for n in os.namespaces.iter_mut().filter(|n| *n == "net") {
                *n = "net (joined)".into();
            }
        }
    }
    run.details.wasm.cgroup_entry = Some(cgroup_entry.into());
    degradations.extend(os_sandbox_degradation(&run.details.wasm));
    run.degradations.extend(degradations);
    Ok(run)
}

/// The worker applies Landlock best-effort (an older kernel enforces part of the ruleset: no TCP
/// rules before ABI 4, no scoping before ABI 6); whatever it could not enforce is a degradation of
/// `wasm.os_sandbox` and the report must say so, not only its `details`.
pub(crate) fn os_sandbox_degradation(
    details: &crate::report::details::WasmDetails,
) -> Option<Degradation> {
    let landlock = details.os_sandbox.as_ref()?.landlock;
    (landlock != hybox_shim::plan::LandlockStatus::FullyEnforced).then(|| Degradation {
        what: "wasm.os_sandbox landlock".into(),
        why: format!(
            "Landlock {} on this kernel (ABI {}; hybox's worker ruleset needs ABI 6 for full \
             enforcement); namespaces, no capabilities and seccomp still apply",
            landlock.as_str().replace('_', " "),
            crate::host::landlock_abi()
                .map(|a| a.to_string())
                .unwrap_or_else(|_| "none".into())
        ),
    })
}

/// `wasm.os_sandbox` cannot be had on this host (`why`): refuse with an actionable message, or, if the
/// policy allows degrading, return the degradation the report must list. `fix` is what the host could
/// change, prepended to the policy-side alternatives.
pub(crate) fn os_sandbox_unavailable(
    policy: &crate::policy::Policy,
    why: String,
    fix: &'static str,
) -> Result<Degradation, BackendError> {
    match policy.on_unenforceable {
        OnUnenforceable::Fail => Err(BackendError::OsSandbox { why, fix }),
        OnUnenforceable::Degrade => Ok(Degradation {
            what: "wasm.os_sandbox".into(),
            why,
        }),
    }
}

/// `network: loopback` cannot be private on this host (no network namespace for the worker): refuse,
/// or, if the policy allows degrading, the degradation the report must list.
pub(crate) fn private_loopback_unavailable(
    policy: &crate::policy::Policy,
    why: String,
) -> Result<Degradation, BackendError> {
    match policy.on_unenforceable {
        OnUnenforceable::Fail => Err(BackendError::PrivateLoopback { why }),
        OnUnenforceable::Degrade => Ok(Degradation {
            what: "network loopback".into(),
            why: format!("{why}: the guest shares the host's loopback"),
        }),
    }
}

/// Whether a failed worker spawn is the kernel refusing the user namespace (EPERM: disallowed by
/// sysctl, AppArmor or a container's seccomp; ENOSPC/EUSERS: the namespace limit; EINVAL: a kernel
/// without user namespaces).
fn userns_refused(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EPERM) | Some(libc::ENOSPC) | Some(libc::EUSERS) | Some(libc::EINVAL)
    )
}

/// The report's `network_namespace` of a worker that joined a pod's network namespace.
pub const NET_JOINED: &str =
    "joined the pod's network namespace (the guest may use loopback addresses only)";

/// Which namespaces an exec'd worker is cloned into.
#[derive(Debug, Clone, Copy)]
struct Namespaces {
    /// The hardened ones ([`hardened::CLONE_FLAGS`]).
    os_sandbox: bool,
    /// `network: loopback`: `lo` is brought up in a network namespace of the worker's own.
    loopback: bool,
    /// Without `os_sandbox`: a loopback worker's own namespaces (`netns`), a joining worker's own
    /// user namespace, or 0.
    private_net: libc::c_int,
    /// The calling thread is in the network namespace to use (a pod's): no CLONE_NEWNET, and its
    /// `lo` is the pod's, up already.
    joined_net: bool,
}

/// Starts `hybox __wasm-worker` with the job pipe at fd 3, the result pipe at fd 4, no other fds, an
/// empty environment, and stdio as asked; in the hardened namespaces with `os_sandbox`, else in
/// `private_net`'s (a loopback worker's own network namespace, `netns`) with `lo` up.
fn spawn_worker(
    exe: &exe::WorkerExe,
    null_stdin_stdout: bool,
    job_r: &OwnedFd,
    res_w: &OwnedFd,
    ns: Namespaces,
    cgroup: Option<std::os::fd::BorrowedFd<'_>>,
) -> std::io::Result<(crate::backend::process::Spawned, bool)> {
    let (j, r) = (job_r.as_raw_fd(), res_w.as_raw_fd());
    let Namespaces {
        os_sandbox,
        loopback,
        private_net,
        joined_net,
    } = ns;
    let program = crate::backend::process::Program {
        program: exe.fd(),
        name: exe.path(),
        args: &[WORKER_SUBCOMMAND],
        namespaces: match (os_sandbox, joined_net) {
            (true, false) => hardened::CLONE_FLAGS,
            (true, true) => hardened::CLONE_FLAGS & !libc::CLONE_NEWNET,
            (false, _) => private_net,
        },
        null_stdin_stdout,
    };
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    let prepare = move || {
        crate::backend::process::die_with_parent(parent)?;
        if os_sandbox {
            hardened::in_new_namespaces(loopback && !joined_net)?;
        } else if private_net & libc::CLONE_NEWNET != 0 {
            netns::loopback_up()?;
        }
        // SAFETY: in the child before exec, with both pipe ends open.
        unsafe { place_worker_fds(j, r, true) }
    };
    if let Some(cgroup) = cgroup {
        // SAFETY: as below; the child is a copy of this process instead of sharing its memory.
        if let Some(c) = unsafe { crate::backend::process::spawn_into(&program, &prepare, cgroup) }?
        {
            return Ok((c, true));
        }
    }
    // SAFETY: `prepare` makes only raw syscalls (socket, ioctl, prctl, fcntl, dup2, close_range),
    // allocates nothing and cannot panic.
    unsafe { crate::backend::process::spawn(&program, &prepare) }.map(|c| (c, false))
}

/// Forks the caller into a one-shot worker ([`WorkerStart::fork`]): the same fds and stdio as
/// [`spawn_worker`] gives the exec'd worker, then [`worker::run_job`].
fn fork_worker(
    stdio: &Stdio,
    job_r: &OwnedFd,
    res_w: &OwnedFd,
    job: &Job,
    entry: crate::host::ForkedWorker,
) -> std::io::Result<crate::backend::process::Spawned> {
    let (j, r) = (job_r.as_raw_fd(), res_w.as_raw_fd());
    let null_stdin_stdout = matches!(stdio, Stdio::Capture { .. });
    // SAFETY: getpid cannot fail.
    let parent = unsafe { libc::getpid() };
    let prepare = move || {
        crate::backend::process::die_with_parent(parent)?;
        // SAFETY: in the forked child, with both pipe ends open.
        unsafe { place_worker_fds(j, r, false)? };
        if null_stdin_stdout {
            crate::backend::process::stdin_stdout_to_dev_null()?;
        }
        Ok(())
    };
    // SAFETY: the caller chose `WorkerStart::fork`, whose contract is that no other thread of this
    // process holds a lock the worker needs.
    unsafe { crate::backend::process::fork(&prepare, &|| (entry.0)(job)) }
}

/// In the worker before it runs: the job pipe becomes [`JOB_FD`], the result pipe [`RESULT_FD`], and
/// every other fd above them goes: closed now in a forked worker (`at_exec` false, no exec follows),
/// marked close-on-exec in one about to exec (`at_exec`), so the executable's own fd, held above
/// them, stays usable by `execveat` and goes with the rest at the exec. Async-signal-safe (fcntl,
/// dup2, close_range); allocates nothing.
///
/// # Safety
/// Call only in a forked child before exec, with `job` and `result` open fds.
pub(crate) unsafe fn place_worker_fds(
    job: RawFd,
    result: RawFd,
    at_exec: bool,
) -> std::io::Result<()> {
    // SAFETY: plain fd syscalls on fds the caller owns; no memory is touched.
    unsafe {
        // Move both ends above the target numbers first so neither dup2 clobbers the other.
        let j2 = libc::fcntl(job, libc::F_DUPFD_CLOEXEC, 10);
        let r2 = libc::fcntl(result, libc::F_DUPFD_CLOEXEC, 10);
        if j2 < 0 || r2 < 0 || libc::dup2(j2, JOB_FD) < 0 || libc::dup2(r2, RESULT_FD) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // Nothing else leaks into the worker (close_range(2): Linux 5.9, CLOSE_RANGE_CLOEXEC 5.11).
        let flags = if at_exec {
            libc::CLOSE_RANGE_CLOEXEC
        } else {
            0
        };
        // By number: musl's libc has no close_range wrapper.
        if libc::syscall(
            libc::SYS_close_range,
            RESULT_FD as libc::c_uint + 1,
            libc::c_uint::MAX,
            flags as libc::c_uint,
        ) < 0
        {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Compiles `input` (module, component, or their text) into a hybox artifact at `output`, MAC'ed with
/// this host's key, for the engine configuration `policy` implies (fuel on or off changes the code).
/// Only artifacts written here (or by the compile cache) on this host load later. For `hybox compile`.
pub fn precompile(
    input: &Path,
    output: &Path,
    policy: &Policy,
    host: &HostConfig,
) -> Result<(), ArtifactError> {
    let dir = artifact::cache_dir(host)?;
    worker::precompile_in_process(input, output, policy, &dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partially_enforced_worker_landlock_is_a_degradation() {
        use hybox_shim::plan::LandlockStatus;
        let details = |landlock| crate::report::details::WasmDetails {
            os_sandbox: Some(crate::report::details::OsSandboxDetails {
                namespaces: vec![],
                seccomp: String::new(),
                landlock,
                capabilities: String::new(),
                no_new_privs: true,
            }),
            ..Default::default()
        };
        assert_eq!(
            os_sandbox_degradation(&details(LandlockStatus::FullyEnforced)),
            None
        );
        let d = os_sandbox_degradation(&details(LandlockStatus::PartiallyEnforced)).unwrap();
        assert_eq!(d.what, "wasm.os_sandbox landlock");
        assert!(d.why.contains("partially enforced"), "{}", d.why);
        assert!(os_sandbox_degradation(&details(LandlockStatus::NotEnforced)).is_some());
        assert_eq!(
            os_sandbox_degradation(&crate::report::details::WasmDetails::default()),
            None
        );
    }
}
