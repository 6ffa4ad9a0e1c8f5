//! `Sandbox`: one run of one workload under one policy, from decision to report.

use std::path::PathBuf;
use std::time::Instant;

use crate::decide::{decide, DecideError, Decision};
use crate::policy::{Backend, Policy};
use crate::report::RunReport;
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
    /// The chosen backend is not built into this hybox yet, or not usable on this host.
    #[error("the {backend} backend is not available: {why}")]
    BackendUnavailable { backend: Backend, why: String },
}

impl Error {
    /// The CLI's exit status for this error (see [`crate::exit`]).
    pub fn exit_status(&self) -> i32 {
        match self {
            Error::Policy(_) => crate::exit::USAGE,
            Error::Workload(e) => e.exit_status(),
            Error::Decide(_) | Error::BackendUnavailable { .. } => crate::exit::CANNOT_EXECUTE,
        }
    }
}

/// How the workload's stdio is wired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stdio {
    /// stdin/stdout/stderr are hybox's own (the CLI).
    Inherit,
    /// stdin is these bytes; stdout and stderr are captured up to the policy's caps (library, serve).
    Capture { stdin: Vec<u8> },
}

impl Default for Stdio {
    fn default() -> Self {
        Stdio::Capture { stdin: Vec::new() }
    }
}

/// Where hybox finds its parts and keeps its state on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// The `hybox-shim` binary (native backend). Default: next to the current executable.
    pub shim_path: Option<PathBuf>,
    /// Parent of the per-run cgroups. Default `hybox`.
    pub cgroup_parent: String,
    /// The cgroup filesystem root. Default `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Private compile cache. Default `$XDG_CACHE_HOME/hybox` or `~/.cache/hybox`.
    pub cache_dir: Option<PathBuf>,
    /// The `hybox` binary re-executed as the wasm worker (`hybox __wasm-worker`). Default: the current
    /// executable if it is named `hybox`, else `hybox` next to it.
    pub hybox_path: Option<PathBuf>,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            shim_path: None,
            cgroup_parent: "hybox".into(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cache_dir: None,
            hybox_path: None,
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

    /// Runs the workload once. Returns `Err` only when no run happened (the sandbox could not be
    /// built before the workload started); every started run ends in a report, whatever its outcome.
    pub fn run(&self, _opts: &RunOptions) -> Result<RunResult, Error> {
        let _t0 = Instant::now();
        Err(Error::BackendUnavailable {
            backend: self.decision.backend,
            why: "this build of hybox does not include it yet (it refuses rather than run unisolated)".into(),
        })
    }
}

/// A fresh run id: time-ordered, unique on this host (pid + counter + clock).
pub fn new_run_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!(
        "{:x}-{:x}-{:x}",
        now.as_millis(),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}
