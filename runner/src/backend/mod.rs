//! The two isolation technologies behind one interface: a backend gets a [`Launch`] (everything
//! resolved: policy, artifact, args, env, stdio, the envelope to join, the deadline) and returns a
//! [`BackendRun`] (outcome and what it measured). [`crate::sandbox`] builds the envelope around it and
//! the report from it.

pub mod native;
pub mod postmortem;
pub mod process;
pub mod seccomp;
pub mod seccomp_profile;
pub mod wasm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::host::HostConfig;
use crate::policy::Policy;
use crate::report::{Degradation, Outcome};
use crate::workload::Artifact;

/// How the workload's stdio is wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stdio {
    /// stdin/stdout/stderr are hybox's own (the CLI).
    Inherit,
    /// stdin is these bytes; stdout and stderr are captured up to the policy's caps (library, serve).
    Capture { stdin: Vec<u8> },
    /// As [`Stdio::Inherit`], and stdin is a pty made for this workload alone (`hybox-runc` with
    /// `process.terminal`: its master went to the console socket): a native workload gets it as
    /// its controlling terminal (`Plan::controlling_tty`). Never a terminal of the caller's.
    Terminal,
}

impl Default for Stdio {
    fn default() -> Self {
        Stdio::Capture { stdin: Vec::new() }
    }
}

/// Everything a backend needs for one run, resolved before it starts.
pub struct Launch<'a> {
    pub run_id: &'a str,
    pub policy: &'a Policy,
    pub artifact: &'a Artifact,
    /// `argv[1..]` for the workload (`argv[0]` is the backend's business).
    pub args: &'a [String],
    /// The workload's complete environment.
    pub env: BTreeMap<String, String>,
    pub stdio: &'a Stdio,
    /// When the wall-clock limit fires.
    pub deadline: Instant,
    pub host: &'a HostConfig,
    /// Existing namespaces to join instead of creating them (see `native::join`): a pod's
    /// network, IPC and UTS namespaces; for wasm, a network namespace under `network: loopback`.
    pub joins: &'a [NamespaceJoin],
    /// Fds of the caller the native workload gets as 3, 4, ... (OCI `--preserve-fds`), at most
    /// [`hybox_shim::plan::MAX_PASSED_FDS`]. A wasm run with any is refused.
    pub pass_fds: &'a [std::os::fd::RawFd],
}

pub use native::join::{JoinKind, NamespaceJoin};

pub use crate::envelope::{EnvelopeHandle, EnvelopeJoin};

/// A run a backend has prepared from its [`Launch`] before the run's envelope exists: everything
/// that needs no envelope is done. Native: the host checked, the plan (mounts, ids, rlimits,
/// Landlock, the seccomp programs) built, the shim and the workload opened; nothing runs. Wasm: the
/// worker process started and blocked until it gets its job (its start overlaps the envelope's
/// creation); nothing of the guest has been read.
///
/// The one interface of both backends: [`prepare`] picks the backend, the caller builds the
/// envelope, then [`PreparedRun::run`] or [`PreparedRun::abandon`].
pub trait PreparedRun {
    /// Runs the workload inside `envelope` (`None`: the policy degraded to no envelope): every
    /// process of the run is inside it before it runs anything of the workload. Returns when the
    /// outcome and the output are complete. With `detach`, a process that reported its end but is
    /// still exiting (a native shim whose namespaces the kernel dismantles) is returned as a
    /// [`Reaper`] for the caller to reap off its path; otherwise it is reaped before this returns.
    fn run(
        self: Box<Self>,
        envelope: Option<&EnvelopeHandle>,
        detach: bool,
    ) -> Result<(BackendRun, Option<Reaper>), BackendError>;

    /// The run will not happen (its envelope could not be built): releases everything `prepare`
    /// took (kills and reaps a started worker, removes its scratch directory).
    fn abandon(self: Box<Self>);
}

/// Prepares `launch` on `backend` (see [`PreparedRun`]).
pub fn prepare<'a>(
    backend: crate::policy::Backend,
    launch: &Launch<'a>,
) -> Result<Box<dyn PreparedRun + 'a>, BackendError> {
    Ok(match backend {
        crate::policy::Backend::Native => Box::new(native::prepare(launch)?),
        // A wasm worker's IPC and UTS namespaces are part of its confinement and replace nothing
        // its guest could use (WASI has neither): joining them is refused rather than ignored.
        // A network namespace is joined only where the guest may use sockets at all.
        crate::policy::Backend::Wasm
            if launch.joins.iter().any(|j| j.kind != JoinKind::Network)
                || (!launch.joins.is_empty()
                    && launch.policy.network != crate::policy::Network::Loopback) =>
        {
            return Err(BackendError::Io {
                step: "join namespaces".into(),
                source: std::io::Error::other(
                    "a wasm run joins a network namespace only, and only under network: loopback",
                ),
            })
        }
        // A wasm guest's files are its preopens: there is no fd table to put them in.
        crate::policy::Backend::Wasm if !launch.pass_fds.is_empty() => {
            return Err(BackendError::Io {
                step: "pass fds to the workload".into(),
                source: std::io::Error::other("passing fds is for native runs only"),
            })
        }
        crate::policy::Backend::Wasm => Box::new(wasm::start(launch)?),
    })
}

/// Prepares and runs `launch` in `envelope`, reaping everything before it returns (for tests and
/// benchmarks that drive a backend directly).
pub fn run(
    backend: crate::policy::Backend,
    launch: &Launch,
    envelope: Option<&EnvelopeHandle>,
) -> Result<BackendRun, BackendError> {
    prepare(backend, launch)?
        .run(envelope, false)
        .map(|(run, _)| run)
}

/// A process of a finished run that reported its end and is still exiting (a native shim while the
/// kernel dismantles its namespaces); [`Reaper::reap`] SIGKILLs it (it has nothing left to do) and
/// waits for it.
pub struct Reaper {
    pidfd: std::os::fd::OwnedFd,
}

impl Reaper {
    pub(crate) fn new(pidfd: std::os::fd::OwnedFd) -> Reaper {
        Reaper { pidfd }
    }

    /// Waits for the process's exit, SIGKILLing it first.
    pub fn reap(self) {
        native::spawn::pidfd_kill(&self.pidfd);
        let _ = native::spawn::wait_pidfd(&self.pidfd);
    }
}

/// What a backend reports back.
#[derive(Debug, Clone)]
pub struct BackendRun {
    pub outcome: Outcome,
    /// From launching the sandbox process to the first workload instruction.
    pub start_us: u64,
    /// The workload running.
    pub run_us: u64,
    /// Captured output (empty when inherited) and the byte counts seen (beyond the caps too).
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Backend-specific facts for the report (`landlock`, `cache_hit`, `fuel_consumed`...).
    pub details: crate::report::Details,
    pub degradations: Vec<Degradation>,
}

impl BackendRun {
    pub fn new(outcome: Outcome) -> BackendRun {
        BackendRun {
            outcome,
            start_us: 0,
            run_us: 0,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            details: crate::report::Details::default(),
            degradations: Vec::new(),
        }
    }
}

/// A backend could not start the run at all (nothing of the workload ran). Failures *inside* a started
/// sandbox are outcomes (`Outcome::SetupError`), not errors. [`BackendError::hint`] says how to fix
/// the host or the policy where that is known; the message includes it.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The native sandbox's plan could not be built from the policy (a path, an id, a syscall name).
    #[error("native sandbox plan: {}{}", .0, hint_suffix(.0.hint()))]
    Plan(#[source] native::PlanError),
    /// An envelope the backend builds itself (a warm function's) could not be built.
    #[error("cannot build the envelope")]
    Envelope(#[source] crate::envelope::EnvelopeError),
    /// The kernel refused the sandbox's user namespace: unprivileged user namespaces disabled by
    /// sysctl or AppArmor, a container's seccomp profile, or the namespace limit.
    #[error("user namespaces: {call} failed: {source} (hint: {USERNS_HINT})")]
    UserNamespaces {
        call: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// The policy requires Landlock and this kernel cannot enforce all of hybox's ruleset.
    #[error("landlock: {0} (hint: boot a kernel with Landlock ABI 6 (Linux 6.12+, lsm=...,landlock), or set native.landlock to best_effort)")]
    Landlock(#[source] std::sync::Arc<native::LandlockUnavailable>),
    /// `wasm.os_sandbox` cannot be had on this host; `fix` is what the host could change.
    #[error("wasm.os_sandbox: {why} (hint: {fix}set wasm.os_sandbox to false, or on_unenforceable to \"degrade\")")]
    OsSandbox { why: String, fix: &'static str },
    /// `network: loopback` on wasm needs the worker in its own network namespace, and this host
    /// refused it.
    #[error("network: loopback needs the wasm worker in its own network namespace: {why} (hint: enable unprivileged user namespaces or run as root, set network to \"none\", or on_unenforceable to \"degrade\" (the guest then shares the host's loopback))")]
    PrivateLoopback { why: String },
    /// This process is not hybox (it never declared it dispatches `__wasm-worker`) and
    /// `HostConfig.hybox_path` names no hybox binary: nothing can run the wasm worker.
    #[error("wasm worker: {} is not the hybox binary, so it cannot run the wasm worker (hint: set HostConfig.hybox_path to a hybox binary)", exe.display())]
    WorkerBinary { exe: PathBuf },
    /// This backend does not do what was asked of it.
    #[error("{what}")]
    Unsupported { what: &'static str },
    /// The workload (a warm function's artifact) could not be read or has no variant for this backend.
    #[error("{artifact}: {why}")]
    Workload { artifact: PathBuf, why: String },
    /// A warm worker did not load its function: what it said, or how it failed to answer.
    #[error("warm wasm worker for {artifact}: {why}")]
    WarmLoad { artifact: PathBuf, why: String },
    /// The pipe to a warm worker failed, or it answered what the protocol does not allow.
    #[error("{step}: {source}")]
    WarmWorker {
        step: String,
        #[source]
        source: wasm::protocol::ProtocolError,
    },
    /// A warm worker died during a call (killed, crashed: not by the cgroup OOM killer, which is
    /// an `Oom` outcome); `exit` is how it ended. The next call starts a new worker.
    #[error("the warm wasm worker died during the call (exit: {exit}); the next call starts a new one: {source}")]
    WarmWorkerDied {
        exit: String,
        #[source]
        source: wasm::protocol::ProtocolError,
    },
    /// A host-side step failed before the workload started.
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
}

/// How to enable user namespaces, for [`BackendError::UserNamespaces`].
const USERNS_HINT: &str =
    "enable unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1; on \
     Ubuntu kernel.apparmor_restrict_unprivileged_userns=0 or an AppArmor profile for hybox; \
     user.max_user_namespaces > 0)";

fn hint_suffix(hint: Option<String>) -> String {
    hint.map(|h| format!(" (hint: {h})")).unwrap_or_default()
}

impl BackendError {
    /// An I/O failure of the named host-side step.
    pub(crate) fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
        let step = step.into();
        move |source| BackendError::Io { step, source }
    }
}
