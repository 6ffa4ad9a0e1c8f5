//! The two isolation technologies behind one interface: a backend gets a [`Launch`] (everything
//! resolved: policy, artifact, args, env, stdio, the envelope to join, the deadline) and returns a
//! [`BackendRun`] (outcome and what it measured). [`crate::sandbox`] builds the envelope around it and
//! the report from it.

pub mod native;
pub mod process;
pub mod seccomp;
pub mod wasm;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use crate::policy::Policy;
use crate::report::{Degradation, Outcome};
use crate::workload::Artifact;
use crate::{HostConfig, Stdio};

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
    /// The cgroup directory (or directories, v1) the workload's process must join before it runs any
    /// workload code; `None` when the policy degraded to no envelope.
    pub envelope: Option<&'a crate::backend::EnvelopeHandle>,
    /// When the wall-clock limit fires.
    pub deadline: Instant,
    pub host: &'a HostConfig,
}

/// The envelope as a backend sees it: where to put its process, and how to kill everything.
pub trait EnvelopeJoin: Send + Sync {
    /// Moves `pid` into the run's cgroup (all controllers).
    fn join(&self, pid: i32) -> std::io::Result<()>;
    /// The `cgroup.procs` files a child can write itself into (one per v1 controller, one on v2).
    fn procs_files(&self) -> Vec<PathBuf>;
    /// Kills every process in the envelope (timeout, teardown).
    fn kill_all(&self) -> std::io::Result<()>;
    /// The cgroup v2 leaf a child can be created in directly (`CLONE_INTO_CGROUP`); `None` on v1,
    /// where every controller has its own hierarchy and the child must be migrated with [`join`].
    ///
    /// [`join`]: EnvelopeJoin::join
    fn clone_into_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// A shared reference to the run's envelope, type-erased for the backends.
pub type EnvelopeHandle = dyn EnvelopeJoin;

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
    pub details: serde_json::Map<String, serde_json::Value>,
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
            details: serde_json::Map::new(),
            degradations: Vec::new(),
        }
    }
}

/// A backend could not start the run at all (nothing of the workload ran). Failures *inside* a started
/// sandbox are outcomes (`Outcome::SetupError`), not errors.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The host cannot provide what the policy requires; `hint` says how to fix it.
    #[error("{what}: {why}{}", hint.as_ref().map(|h| format!(" (hint: {h})")).unwrap_or_default())]
    Preflight {
        what: String,
        why: String,
        hint: Option<String>,
    },
    /// A host-side step failed before the workload started.
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
}

/// The warm invoker for `hybox bench`'s `wasm-warm` mode, if this build has one.
pub fn warm_factory() -> Option<&'static crate::bench::WarmFactory> {
    Some(&wasm::warm::bench_invoker)
}
