//! `Sandbox`: one run of one workload under one policy, from decision to report.

use std::time::Instant;

pub use crate::backend::Stdio;
use crate::backend::{BackendError, EnvelopeHandle, Launch};
use crate::decide::{decide, DecideError, Decision};
use crate::envelope::{Envelope, EnvelopeError, IoLimit, Limits};
pub use crate::host::{new_run_id, HostConfig};
use crate::policy::{Backend, OnUnenforceable, Policy};
use crate::report::{Degradation, EnvelopeReport, OutputReport, Phases, RunReport, Usage};
use crate::workload::{Workload, WorkloadError};

/// Everything that can stop a run before the workload's own outcome exists.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Policy(#[from] crate::policy::PolicyError),
    #[error(transparent)]
    Workload(#[from] WorkloadError),
    #[error("cannot choose a backend")]
    Decide(#[from] DecideError),
    /// The run's cgroup could not be built (and the policy does not allow degrading).
    #[error("cannot build the run's envelope")]
    Envelope(#[from] EnvelopeError),
    /// The backend could not start the run (a preflight or host-side step failed).
    #[error("the {0} backend cannot start the run")]
    Backend(Backend, #[source] BackendError),
}

impl Error {
    /// What the user can do about this error, when there is something to say beyond the error
    /// itself (the ways out of a host that gives hybox no cgroup).
    pub fn hint(&self) -> Option<&'static str> {
        match self {
            Error::Envelope(e) if e.is_unavailable() => Some(crate::envelope::NO_CGROUP_HINT),
            _ => None,
        }
    }

    /// The CLI's exit status for this error (see [`crate::exit`]).
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::Policy(_) => crate::exit::USAGE,
            Error::Workload(e) => e.exit_status(),
            Error::Decide(_) => crate::exit::CANNOT_EXECUTE,
            Error::Envelope(_) | Error::Backend(..) => crate::exit::RUNNER_FAILED,
        }
    }
}

/// Per-run options.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Arguments for the workload; empty means the policy's `args`.
    pub args: Vec<String>,
    pub stdio: Stdio,
    pub host: HostConfig,
    /// A run id; a fresh one when `None`.
    pub run_id: Option<String>,
    /// Return as soon as the result is complete (outcome, output, usage) and leave the teardown
    /// (reaping the native shim while the kernel dismantles its namespaces, killing and removing
    /// the envelope) to a background thread, as [`Sandbox::run_prebuilt`] always does. For
    /// long-lived hosts (`hybox serve`) where the caller's latency is what counts; call
    /// [`wait_for_teardowns`] before exiting. Default `false`: everything is gone when
    /// `run` returns.
    pub detach_teardown: bool,
    /// Existing network, IPC or UTS namespaces the run joins instead of creating its own (a wasm
    /// run joins a network namespace only, under `network: loopback`, and is refused any other).
    /// The runner must be root: see `backend::native::join` for the kernel's rules and what the
    /// sandbox can do in them.
    pub join_namespaces: Vec<crate::backend::NamespaceJoin>,
    /// Fds of this process the workload gets as 3, 4, ... (OCI `--preserve-fds`; native runs
    /// only, a wasm run with any is refused), at most [`hybox_shim::plan::MAX_PASSED_FDS`]. They
    /// stay open in this process; every other fd above 2 is closed in the sandbox.
    pub pass_fds: Vec<std::os::fd::RawFd>,
}

/// A finished run: the report, and the captured output (empty when stdio was inherited).
#[derive(Debug, Clone)]
pub struct RunResult {
    pub report: RunReport,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// A workload, a validated policy and the backend decision, ready to run (many times if wanted).
#[derive(Debug, Clone)]
pub struct Sandbox {
    workload: Workload,
    policy: Policy,
    decision: Decision,
}

impl Sandbox {
    /// Decides the backend; fails if no backend can run this workload under this policy.
    pub fn new(
        workload: Workload,
        policy: Policy,
        override_backend: Option<Backend>,
    ) -> Result<Sandbox, Error> {
        let decision = decide(&workload, &policy, override_backend)?;
        Ok(Sandbox {
            workload,
            policy,
            decision,
        })
    }

    pub fn decision(&self) -> &Decision {
        &self.decision
    }
    pub fn policy(&self) -> &Policy {
        &self.policy
    }
    pub fn workload(&self) -> &Workload {
        &self.workload
    }

    /// Runs the workload once. Returns `Err` only when no run happened (the envelope or the sandbox
    /// could not be built before the workload started); every started run ends in a report, whatever
    /// its outcome. The envelope is removed before this returns, whatever happened.
    pub fn run(&self, opts: &RunOptions) -> Result<RunResult, Error> {
        self.run_with(opts, None)
    }

    /// [`Sandbox::run`] in an envelope the caller built (a container runtime's, at the cgroup path
    /// its caller named: [`Envelope::create_at`]) instead of one from the policy and
    /// `opts.host`. The run's end tears it down as that envelope's kind says (`create_at`'s keeps
    /// its directories for the caller to read and remove).
    pub fn run_in(&self, opts: &RunOptions, envelope: Envelope) -> Result<RunResult, Error> {
        self.run_with(opts, Some(envelope))
    }

    fn run_with(&self, opts: &RunOptions, given: Option<Envelope>) -> Result<RunResult, Error> {
        let t0 = Instant::now();
        let run_id = opts.run_id.clone().unwrap_or_else(new_run_id);
        let backend = self.decision.backend;
        let artifact = self
            .workload
            .variant(backend)
            .expect("decide() only picks a backend the workload has");
        let args = if opts.args.is_empty() {
            self.policy.args.clone()
        } else {
            opts.args.clone()
        };
        let launch = Launch {
            run_id: &run_id,
            policy: &self.policy,
            artifact,
            args: &args,
            env: self.policy.workload_env(),
            stdio: &opts.stdio,
            deadline: Instant::now() + self.policy.resources.timeout.as_std(),
            host: &opts.host,
            joins: &opts.join_namespaces,
            pass_fds: &opts.pass_fds,
        };
        // The backend prepares first, the envelope is built meanwhile: a wasm worker is started
        // and waits for its job (its start, and a forked worker's engine and cached module, overlap
        // the envelope's creation); native builds its plan. Nothing of the workload runs before
        // `run` has put the backend's process in the envelope.
        let prepared =
            crate::backend::prepare(backend, &launch).map_err(|e| Error::Backend(backend, e))?;
        // The envelope: built from the policy, every limit read back, before anything of the workload runs.
        let built = match given {
            Some(e) => Ok((Some(e), Vec::new())),
            None => self.envelope(&opts.host, &run_id),
        };
        let (envelope, degradations) = match built {
            Ok(e) => e,
            Err(e) => {
                prepared.abandon();
                return Err(e);
            }
        };
        let t_backend = Instant::now();
        let setup_us = t_backend.duration_since(t0).as_micros() as u64;
        let handle = envelope.as_ref().map(|e| e as &EnvelopeHandle);
        let (result, teardown) = match prepared.run(handle, opts.detach_teardown) {
            Ok((run, reaper)) if opts.detach_teardown => (Ok(run), Teardown::Background(reaper)),
            Ok((run, _)) => (Ok(run), Teardown::Now),
            Err(e) => (Err(e), Teardown::Now),
        };
        self.complete(
            run_id,
            (envelope, degradations),
            result,
            (setup_us, Some(t_backend)),
            &opts.stdio,
            teardown,
        )
    }

    /// The run's envelope, or none when the host cannot build one and the policy allows degrading.
    fn envelope(
        &self,
        host: &HostConfig,
        run_id: &str,
    ) -> Result<(Option<Envelope>, Vec<Degradation>), Error> {
        let mut degradations = Vec::new();
        let limits = Limits::from(&self.policy.resources);
        let envelope =
            match Envelope::create(&host.cgroup_root, &host.cgroup_parent, run_id, &limits)
                .and_then(|mut e| {
                    let io = IoLimit::from_policy(&self.policy.resources.io)?;
                    e.limit_io(&host.cgroup_root, &io)?;
                    Ok(e)
                }) {
                Ok(e) => Some(e),
                Err(e)
                    if e.is_unavailable()
                        && self.policy.on_unenforceable == OnUnenforceable::Degrade =>
                {
                    degradations.push(Degradation {
                        what: "envelope".into(),
                        why: e.to_string(),
                    });
                    None
                }
                Err(e) => return Err(Error::Envelope(e)),
            };
        Ok((envelope, degradations))
    }

    /// Pre-builds a native sandbox for one later call ([`Sandbox::run_prebuilt`]): its own envelope,
    /// namespaces, mounts, ids, capabilities dropped, no_new_privs, Landlock and seccomp all in
    /// place, stdio pipes ready; only the exec of the workload waits for the call. Native only.
    pub fn prebuild(&self, host: &HostConfig) -> Result<Prebuilt, Error> {
        let t0 = Instant::now();
        let run_id = new_run_id();
        let backend = self.decision.backend;
        if backend != Backend::Native {
            return Err(Error::Backend(
                backend,
                BackendError::Unsupported {
                    what: "only the native backend pre-builds sandboxes (wasm keeps warm workers)",
                },
            ));
        }
        let artifact = self
            .workload
            .variant(backend)
            .expect("decide() only picks a backend the workload has");
        let (envelope, degradations) = self.envelope(host, &run_id)?;
        let stdio = Stdio::Capture { stdin: Vec::new() };
        let launch = Launch {
            run_id: &run_id,
            policy: &self.policy,
            artifact,
            args: &self.policy.args,
            env: self.policy.workload_env(),
            stdio: &stdio,
            deadline: Instant::now() + self.policy.resources.timeout.as_std(),
            host,
            joins: &[],
            pass_fds: &[],
        };
        let handle = envelope.as_ref().map(|e| e as &EnvelopeHandle);
        match crate::backend::native::prebuild(&launch, handle) {
            Ok(started) => Ok(Prebuilt {
                run_id,
                envelope,
                degradations,
                started: Some(started),
                prebuild_us: t0.elapsed().as_micros() as u64,
            }),
            Err(e) => {
                if let Some(env) = envelope {
                    let _ = env.destroy();
                }
                Err(Error::Backend(backend, e))
            }
        }
    }

    /// The one call of a pre-built sandbox: `stdin` is the workload's whole stdin (captured
    /// output), the policy's timeout starts now. The sandbox and its envelope are destroyed
    /// whatever happened: in the background once the result is complete when the shim is still
    /// exiting (see [`pending_teardowns`]), before this returns otherwise.
    pub fn run_prebuilt(&self, mut p: Prebuilt, stdin: Vec<u8>) -> Result<RunResult, Error> {
        let started = p.started.take().expect("a Prebuilt is used once");
        let envelope = p.envelope.take();
        let degradations = std::mem::take(&mut p.degradations);
        let run_id = std::mem::take(&mut p.run_id);
        let deadline = Instant::now() + self.policy.resources.timeout.as_std();
        let (result, exiting) = match crate::backend::native::call(
            started,
            &self.policy,
            stdin.clone(),
            envelope.as_ref().map(|e| e as &EnvelopeHandle),
            deadline,
        ) {
            Ok((run, exiting)) => (Ok(run), exiting),
            Err(e) => (Err(e), None),
        };
        // Setup was paid ahead of the call (`prebuild_us` in the details); start_us is the exec.
        let mut r = self.complete(
            run_id,
            (envelope, degradations),
            result.map(|mut run| {
                run.details.run.prebuild_us = Some(p.prebuild_us);
                run
            }),
            (0, None),
            &Stdio::Capture { stdin },
            match exiting {
                Some(reaper) => Teardown::Background(Some(reaper)),
                None => Teardown::Now,
            },
        )?;
        r.report.details.run.start = Some("warm".into());
        Ok(r)
    }

    /// Usage and limit hits from the envelope, the envelope removed, the report built.
    ///
    /// `t_backend` is when the backend's run began (after `setup_us`); with it the phases partition
    /// the whole call: `start_us` loses what overlapped setup (a wasm worker launched before the
    /// envelope was built) and `teardown_us` is everything from the workload's end to the report.
    fn complete(
        &self,
        run_id: String,
        (envelope, degradations): (Option<Envelope>, Vec<Degradation>),
        result: Result<crate::backend::BackendRun, BackendError>,
        (setup_us, t_backend): (u64, Option<Instant>),
        stdio: &Stdio,
        teardown: Teardown,
    ) -> Result<RunResult, Error> {
        let backend = self.decision.backend;
        let t_teardown = Instant::now();
        let mut run = match result {
            Ok(run) => run,
            Err(e) => {
                if let Some(env) = envelope {
                    let _ = env.destroy();
                }
                return Err(Error::Backend(backend, e));
            }
        };
        // Usage and limit hits come from the envelope, read before it is removed.
        let (usage, envelope_report) = match &envelope {
            Some(e) => (e.usage(), e.report()),
            None => (
                Usage {
                    source: "none (no envelope)".into(),
                    ..Usage::default()
                },
                EnvelopeReport::None,
            ),
        };
        run.outcome = crate::backend::postmortem::attribute(run.outcome, &usage, &self.policy);
        let join_us = envelope.as_ref().map_or(0, Envelope::join_us);
        if let Teardown::Background(reaper) = teardown {
            // The workload ended and its output is complete; a native shim may still be tearing
            // down its namespaces. Reaping it and removing the envelope happen off the caller's path.
            run.details.run.teardown = Some("background".into());
            background_teardown(reaper, envelope);
        } else if let Some(env) = envelope {
            if let Err(e) = env.destroy() {
                // The run happened and its report must survive; a failed teardown is loud in it.
                tracing::error!("envelope teardown failed: {e}");
                run.details.run.teardown_error = Some(e.to_string());
            }
        }
        run.degradations.splice(0..0, degradations);
        let (start_us, teardown_us) = match t_backend {
            Some(tb) => {
                let backend_us = t_teardown.duration_since(tb).as_micros() as u64;
                let start_us = run.start_us.min(backend_us.saturating_sub(run.run_us));
                let total_us = tb.elapsed().as_micros() as u64;
                (start_us, total_us.saturating_sub(start_us + run.run_us))
            }
            None => (run.start_us, t_teardown.elapsed().as_micros() as u64),
        };
        let mut granted_syscalls = self.policy.native.seccomp.allow.clone();
        if backend != Backend::Native {
            granted_syscalls.clear();
        }
        let report = RunReport {
            hybox_version: env!("CARGO_PKG_VERSION").to_string(),
            run_id,
            artifact: self.workload.path().display().to_string(),
            workload: self.workload.describe(),
            backend,
            reasons: self.decision.reasons.clone(),
            exit_status: run.outcome.exit_status(),
            limit_fired: run.outcome.limit(),
            outcome: run.outcome,
            phases: Phases {
                setup_us,
                start_us,
                join_us,
                run_us: run.run_us,
                teardown_us,
                ..Phases::default()
            },
            usage,
            envelope: envelope_report,
            output: OutputReport {
                mode: match stdio {
                    Stdio::Inherit | Stdio::Terminal => "inherited".into(),
                    Stdio::Capture { .. } => "captured".into(),
                },
                stdout_bytes: run.stdout_bytes,
                stderr_bytes: run.stderr_bytes,
                stdout_truncated: run.stdout_truncated,
                stderr_truncated: run.stderr_truncated,
            },
            degradations: run.degradations,
            granted_syscalls,
            details: run.details,
            policy: self.policy.clone(),
        };
        Ok(RunResult {
            report,
            stdout: run.stdout,
            stderr: run.stderr,
        })
    }
}

static PENDING_TEARDOWNS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Teardowns of finished runs still going on in the background (pre-built sandboxes, and runs with
/// [`RunOptions::detach_teardown`]); wait for 0 before exiting ([`wait_for_teardowns`]);
/// [`crate::envelope::teardown_all`] is the backstop.
pub fn pending_teardowns() -> usize {
    PENDING_TEARDOWNS.load(std::sync::atomic::Ordering::SeqCst)
}

/// Blocks until no teardown is pending or `timeout` has passed; `true` when none is left.
pub fn wait_for_teardowns(timeout: std::time::Duration) -> bool {
    let give_up = Instant::now() + timeout;
    while pending_teardowns() > 0 {
        if Instant::now() >= give_up {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
    true
}

/// Where what is left of a run once its result is complete is torn down.
enum Teardown {
    /// On the caller's path: the envelope is gone when the result is returned.
    Now,
    /// In the background: reap the native shim (if it is still exiting), then kill and remove the
    /// envelope ([`pending_teardowns`] counts these).
    Background(Option<crate::backend::Reaper>),
}

fn background_teardown(reaper: Option<crate::backend::Reaper>, envelope: Option<Envelope>) {
    use std::sync::atomic::Ordering;
    PENDING_TEARDOWNS.fetch_add(1, Ordering::SeqCst);
    let work = move || {
        if let Some(reaper) = reaper {
            reaper.reap();
        }
        if let Some(env) = envelope {
            if let Err(e) = env.destroy() {
                tracing::error!("envelope teardown failed: {e}");
            }
        }
        PENDING_TEARDOWNS.fetch_sub(1, Ordering::SeqCst);
    };
    // If no thread can be started, the teardown happens here, on the caller's path.
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(work)));
    let s2 = slot.clone();
    let spawned = std::thread::Builder::new()
        .name("hybox-teardown".into())
        .spawn(move || {
            if let Some(w) = s2.lock().ok().and_then(|mut g| g.take()) {
                w();
            }
        });
    if spawned.is_err() {
        if let Some(w) = slot.lock().ok().and_then(|mut g| g.take()) {
            w();
        }
    }
}

/// A native sandbox built ahead of its call ([`Sandbox::prebuild`]), used by exactly one
/// [`Sandbox::run_prebuilt`]. Dropped unused, it is killed and its envelope removed.
pub struct Prebuilt {
    run_id: String,
    envelope: Option<Envelope>,
    degradations: Vec<Degradation>,
    started: Option<crate::backend::native::Started>,
    prebuild_us: u64,
}

impl Prebuilt {
    /// How long building it took (paid ahead of the call).
    pub fn prebuild_us(&self) -> u64 {
        self.prebuild_us
    }
}

impl Drop for Prebuilt {
    fn drop(&mut self) {
        if let Some(s) = self.started.take() {
            s.kill();
        }
        if let Some(env) = self.envelope.take() {
            if let Err(e) = env.destroy() {
                tracing::error!("pre-built sandbox envelope teardown failed: {e}");
            }
        }
    }
}
