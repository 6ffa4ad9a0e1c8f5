//! The run report: one struct for both backends, serialised as JSON (`--json`, `--report FILE`), plus a
//! short human summary. The schema is documented in `docs/report.md`.

use std::fmt;

use serde::{Deserialize, Serialize};

pub mod details;

pub use details::Details;

use crate::policy::{Backend, Policy};

/// How a run ended, in one vocabulary for both backends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// The workload exited on its own (native `exit`, wasm `proc_exit` or return from `_start`).
    Exited { code: i32 },
    /// The workload was killed by a signal hybox did not send for a limit.
    Signaled { signal: i32, name: String },
    /// The wall-clock limit fired; hybox killed the whole envelope.
    Timeout,
    /// Memory ran out: the cgroup OOM killer, or the wasm store's memory limit (`detail` says which).
    Oom { detail: String },
    /// The pids limit stopped a fork or thread creation, and the workload died of it.
    PidsLimit,
    /// The CPU-time budget ran out (wasm fuel, or RLIMIT_CPU for native).
    CpuBudget { detail: String },
    /// The seccomp filter stopped a syscall (native), named here.
    SeccompViolation { syscall: String },
    /// The wasm guest trapped; the message is wasmtime's.
    Trap { message: String },
    /// The sandbox could not be built; `step` names the step that failed ("pivot_root: EINVAL").
    SetupError { step: String },
}

impl Outcome {
    /// The process exit status hybox's CLI uses for this outcome: the workload's own code passes
    /// through, 128+N for a signal. See `docs/exit-codes.md`.
    pub fn exit_status(&self) -> i32 {
        match self {
            Outcome::Exited { code } => *code & 0xff,
            Outcome::Signaled { signal, .. } => 128 + signal,
            Outcome::Timeout => crate::exit::TIMEOUT,
            Outcome::Oom { .. } => 128 + libc::SIGKILL,
            Outcome::PidsLimit => crate::exit::PIDS_LIMIT,
            Outcome::CpuBudget { .. } => 128 + libc::SIGXCPU,
            Outcome::SeccompViolation { .. } => 128 + libc::SIGSYS,
            Outcome::Trap { .. } => crate::exit::TRAP,
            Outcome::SetupError { .. } => crate::exit::RUNNER_FAILED,
        }
    }

    /// The limit this outcome is attributed to, if any.
    pub fn limit(&self) -> Option<Limit> {
        match self {
            Outcome::Timeout => Some(Limit::Timeout),
            Outcome::Oom { .. } => Some(Limit::Memory),
            Outcome::PidsLimit => Some(Limit::Pids),
            Outcome::CpuBudget { .. } => Some(Limit::CpuTime),
            Outcome::SeccompViolation { .. } => Some(Limit::Seccomp),
            _ => None,
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Exited { code } => write!(f, "exited({code})"),
            Outcome::Signaled { name, .. } => write!(f, "signaled({name})"),
            Outcome::Timeout => write!(f, "timeout"),
            Outcome::Oom { detail } => write!(f, "oom ({detail})"),
            Outcome::PidsLimit => write!(f, "pids_limit"),
            Outcome::CpuBudget { detail } => write!(f, "cpu_budget ({detail})"),
            Outcome::SeccompViolation { syscall } => write!(f, "seccomp_violation({syscall})"),
            Outcome::Trap { message } => write!(f, "trap({message})"),
            Outcome::SetupError { step } => write!(f, "setup_error({step})"),
        }
    }
}

/// A limit of the policy that can fire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    Timeout,
    Memory,
    Pids,
    CpuTime,
    Seccomp,
    Output,
}

/// Wall-clock time of each phase, in microseconds.
///
/// The additive phases are `process_us`, `cli_us`, `setup_us`, `start_us`, `run_us` and
/// `teardown_us`: they follow each other without overlap, and for `hybox run` they add up to the
/// wall time a user measures around the command except the report's own output and the process's
/// exit ([`Phases::total_us`]; docs/report.md says what is and is not covered). `join_us` is a part
/// of `start_us`, shown on its own because on cgroup v1 a lone run's move into its cgroup can wait
/// for an RCU grace period.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Phases {
    /// Before the front-end's `main`: the process's fork, exec, dynamic loading and runtime start,
    /// estimated from the scheduler's own accounting (`/proc/self/schedstat`: time on a CPU plus time
    /// waiting for one since the fork). 0 for library callers, who have no such phase.
    #[serde(default)]
    pub process_us: u64,
    /// The front-end's own work before the run: from `main` to `Sandbox::run` (arguments, policy
    /// file, workload detection, decision, signal handling). 0 for library callers.
    #[serde(default)]
    pub cli_us: u64,
    /// Launch, envelope creation, plan building (`Sandbox::run` up to the backend's run).
    pub setup_us: u64,
    /// From launching the sandbox process to the first workload instruction (exec / `_start`), not
    /// counting what overlapped `setup_us` (a wasm worker is launched before the envelope is built).
    pub start_us: u64,
    /// Of `start_us`: moving the sandbox's process into its cgroup (`cgroup.procs` writes). 0 when
    /// nothing migrated (cgroup v2's `CLONE_INTO_CGROUP`, no envelope). Not added to the total.
    #[serde(default)]
    pub join_us: u64,
    /// The workload running.
    pub run_us: u64,
    /// From the workload's end to the report: reaping, killing what is left, collecting usage,
    /// removing the envelope.
    pub teardown_us: u64,
}

impl Phases {
    /// The sum of the additive phases (everything but `join_us`, which is part of `start_us`).
    pub fn total_us(&self) -> u64 {
        self.process_us
            + self.cli_us
            + self.setup_us
            + self.start_us
            + self.run_us
            + self.teardown_us
    }
}

/// What the run used, read from the envelope (cgroup) at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_user_us: u64,
    pub cpu_system_us: u64,
    /// Peak memory of the whole run (`memory.peak` / `memory.max_usage_in_bytes`).
    pub peak_memory_bytes: u64,
    /// OOM kills in the envelope.
    pub oom_kills: u64,
    /// Times a fork/clone failed because of `pids.max`.
    pub pids_limit_hits: u64,
    /// Where these figures come from (`cgroup v1`, `cgroup v2`, or `rusage` without an envelope).
    pub source: String,
}

/// The envelope a run used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum EnvelopeReport {
    /// A per-run cgroup; every limit written was read back.
    Cgroup {
        version: String,
        path: String,
        memory_bytes: u64,
        cpu_quota_us: Option<u64>,
        cpu_period_us: u64,
        pids_max: u64,
        /// Disk I/O throttles (`resources.io`), as read back; absent when the policy sets none.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        io: Vec<IoThrottle>,
    },
    /// No cgroup (only when the policy allows degrading); see `degradations`.
    None,
}

/// One block device's disk I/O throttle in the envelope, as the kernel reads it back; an absent
/// value is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IoThrottle {
    /// `MAJOR:MINOR`.
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_iops: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_iops: Option<u64>,
}

/// Bytes the workload wrote, and whether capture truncated them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputReport {
    /// `inherited` (the CLI passes stdio through) or `captured`.
    pub mode: String,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Something the policy asked for that this host could not enforce, accepted because the policy says
/// `on_unenforceable: degrade` or marks the mechanism best-effort (`native.landlock: best_effort`, the
/// Landlock layer of `wasm.os_sandbox`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degradation {
    /// What was not enforced (`envelope`, `landlock`, `cpu quota`...).
    pub what: String,
    /// Why, in the host's words.
    pub why: String,
}

/// The full record of one run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunReport {
    pub hybox_version: String,
    pub run_id: String,
    pub artifact: String,
    /// What detection found (`wasm module`, `ELF x86_64 static`...).
    pub workload: String,
    pub backend: Backend,
    /// Why this backend: every rule of the decision that applied.
    pub reasons: Vec<String>,
    pub outcome: Outcome,
    /// The exit status hybox itself returns for this run.
    pub exit_status: i32,
    /// The limit that ended the run, if one did.
    pub limit_fired: Option<Limit>,
    pub phases: Phases,
    pub usage: Usage,
    pub envelope: EnvelopeReport,
    pub output: OutputReport,
    pub degradations: Vec<Degradation>,
    /// Extra syscalls the policy granted beyond the default allow-list (native).
    pub granted_syscalls: Vec<String>,
    /// Backend-specific facts (Landlock status, cache hit, fuel consumed...), typed per producer
    /// and serialized as one flat object ([`details`]).
    pub details: Details,
    /// The effective policy (after CLI overrides).
    pub policy: Policy,
}

impl RunReport {
    /// A few lines for humans (stderr of the CLI).
    pub fn summary(&self) -> String {
        let mut s = format!(
            "hybox: {} on {}: {}",
            self.artifact, self.backend, self.outcome
        );
        if let Some(l) = self.limit_fired {
            s.push_str(&format!(
                " [limit: {}]",
                serde_json::to_value(l)
                    .unwrap_or_default()
                    .as_str()
                    .unwrap_or("?")
            ));
        }
        s.push_str(&format!(
            "\nhybox: run {} phases{} setup {:.1}ms start {:.1}ms (join {:.1}ms) run {:.1}ms teardown {:.1}ms; cpu user {:.1}ms sys {:.1}ms; peak memory {} KiB ({})",
            self.run_id,
            if self.phases.process_us + self.phases.cli_us > 0 {
                format!(
                    " process {:.1}ms cli {:.1}ms",
                    self.phases.process_us as f64 / 1e3,
                    self.phases.cli_us as f64 / 1e3
                )
            } else {
                String::new()
            },
            self.phases.setup_us as f64 / 1e3,
            self.phases.start_us as f64 / 1e3,
            self.phases.join_us as f64 / 1e3,
            self.phases.run_us as f64 / 1e3,
            self.phases.teardown_us as f64 / 1e3,
            self.usage.cpu_user_us as f64 / 1e3,
            self.usage.cpu_system_us as f64 / 1e3,
            self.usage.peak_memory_bytes / 1024,
            self.usage.source,
        ));
        for d in &self.degradations {
            s.push_str(&format!("\nhybox: degraded: {}: {}", d.what, d.why));
        }
        s
    }
}
