//! The backend-specific facts of a run report, typed: one struct per producer, all serialized flat
//! into the report's `details` object (`details.cache_hit`, `details.landlock`, ...), so the JSON a
//! user reads is one object whatever produced it. A field that does not apply to a run is absent
//! from the JSON, never null. `docs/report.md` documents each key.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use hybox_shim::plan::LandlockStatus;

/// Everything in a report's `details`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Details {
    /// Set by the front-end API around a backend's run (`Sandbox`, `Function`).
    #[serde(flatten)]
    pub run: RunDetails,
    /// Set by the native backend.
    #[serde(flatten)]
    pub native: NativeDetails,
    /// Set by the wasm backend (its supervisor and its worker).
    #[serde(flatten)]
    pub wasm: WasmDetails,
}

/// How a run started and ended, as `Sandbox` and `Function` saw it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunDetails {
    /// `cold` (a fresh sandbox or worker), `warm` (a pre-built sandbox or a loaded worker), or the
    /// warm pool's own word for it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub start: Option<String>,
    /// `background` when the teardown happened off the caller's path.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teardown: Option<String>,
    /// The envelope could not be removed: the run happened, and its report says so loudly.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub teardown_error: Option<String>,
    /// A pre-built native sandbox: what building it ahead of the call cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prebuild_us: Option<u64>,
    /// A pre-built sandbox could not be released (it had died while it waited).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub release_error: Option<String>,
    /// A warm call: the worker's run id (its envelope), the round trip through its pipe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_run_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub round_trip_us: Option<u64>,
}

/// The native sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct NativeDetails {
    /// What ran as the sandbox's PID 1 (`hybox-shim`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pid1: Option<String>,
    /// The Landlock status the shim reported right before the exec.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub landlock: Option<LandlockStatus>,
    /// How the shim entered the envelope: `clone_into_cgroup` (created in it, cgroup v2),
    /// `migrated` (joined before it ran anything, v1), or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_entry: Option<String>,
    /// The host uid:gid the sandbox's ids map to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_ids: Option<String>,
    /// The policy's `native.nested` grant: what it opened and what it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nested: Option<NestedGrant>,
    /// The grant that would have allowed the syscall seccomp killed the workload for
    /// (`native.nested` for a sandbox tool run without it), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub missing_grant: Option<String>,
}

/// The `native.nested` grant as a run applied it: the namespaces and syscalls it allowed, and its
/// consequences for the rest of the sandbox (never silent: each one is listed).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NestedGrant {
    /// `native.nested`.
    pub grant: String,
    /// The namespaces the workload may create (`user`, `mount`, ...).
    pub namespaces: Vec<String>,
    /// The syscalls the grant added to the allow-list.
    pub syscalls: Vec<String>,
    /// What the grant changes elsewhere in the sandbox, one sentence each.
    pub consequences: Vec<String>,
}

/// The consequences of the `native.nested` grant, as the report and `hybox explain` state them.
pub const NESTED_CONSEQUENCES: &[&str] = &[
    "landlock: no filesystem rights handled (the kernel refuses mount and pivot_root under a \
     Landlock domain with filesystem rights); the network rules and scopes stay, and files are \
     bounded by the mount namespace's read-only binds",
    "/proc: not masked (the kernel refuses a nested procfs while any part of the outer one is \
     covered); its host-wide files stay owned by an id unmapped in the sandbox",
];

/// The grant a policy lacks when seccomp killed its workload for `syscall`, if a grant allows it.
pub fn missing_grant(syscall: &str, nested: bool) -> Option<String> {
    (!nested && hybox_shim::seccomp::NESTED_SYSCALLS.contains(&syscall)).then(|| {
        format!(
            "native.nested (`{syscall}` is allowed only by it: nested sandboxes, docs/policy.md)"
        )
    })
}

impl NestedGrant {
    /// The grant, from the filter's own lists (`hybox_shim::seccomp`).
    pub fn granted() -> NestedGrant {
        use hybox_shim::seccomp::{NESTED_NAMESPACES, NESTED_SYSCALLS};
        NestedGrant {
            grant: "native.nested".into(),
            namespaces: NESTED_NAMESPACES
                .iter()
                .map(|(n, _)| n.to_string())
                .collect(),
            syscalls: NESTED_SYSCALLS.iter().map(|s| s.to_string()).collect(),
            consequences: NESTED_CONSEQUENCES.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The wasm backend: the supervisor's facts and what its worker reported.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct WasmDetails {
    /// `worker`: the guest ran in a worker process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub backend_process: Option<String>,
    /// `exec` (a fresh `hybox __wasm-worker`) or `fork` (a fork of the CLI).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_start: Option<String>,
    /// Worker start to the guest's first instruction.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_startup_us: Option<u64>,
    /// Microseconds since the worker started, per step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_phases: Option<WorkerPhases>,
    /// Where a timeout caught the guest: wasm code (epoch), a host call (the worker's watchdog),
    /// or an unresponsive worker (the supervisor's kill).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout_in: Option<String>,
    /// The compile cache: hit, the entry, why an entry was rejected or could not be written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_hit: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_entry: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_rejected: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_error: Option<String>,
    /// The artifact was hybox's own precompiled form.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precompiled: Option<bool>,
    /// Compiling the guest (a cache miss).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compile_us: Option<u64>,
    /// Microseconds into a cache hit's load, per step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_phases: Option<BTreeMap<String, u64>>,
    /// `module (p1)`, `component`, ...
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance_kind: Option<String>,
    /// The store's memory limit (the cgroup's minus wasmtime's headroom).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wasm_memory_limit: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fuel_consumed: Option<u64>,
    /// `wasm.os_sandbox`: what confined the worker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub os_sandbox: Option<OsSandboxDetails>,
    /// A warm worker: its load, its pooling allocator, each call's steps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub load_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_slots: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pagemap_scan: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_keep_resident_bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prepare_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instantiate_us: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub drop_us: Option<u64>,
    /// A warm worker that ends after this call (its guest is blocked in a host call).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_exiting: Option<bool>,
    /// What killed a warm worker during this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_killed: Option<String>,
    /// A warm worker that died between calls (noticed by its pidfd), replaced before this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub worker_replaced: Option<String>,
    /// Under `network: loopback`: the worker's own namespaces (its own `lo`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub network_namespace: Option<String>,
    /// How the worker entered the envelope, the same key and words as the native shim's
    /// ([`NativeDetails::cgroup_entry`]; one of the two is set in a run): `clone_into_cgroup`
    /// (created in it, cgroup v2), `migrated`, or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup_entry: Option<String>,
    /// An HTTP function's request: the bytes its guest wrote to stderr (stdout is the response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stderr_bytes: Option<u64>,
}

impl Details {
    /// The details as the report's JSON shows them (one flat object).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }
}

/// A worker's steps, in microseconds since it started (`job_read`, `confined`, `engine_ready`,
/// `guest_loaded`, ...).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerPhases {
    #[serde(flatten)]
    pub steps: BTreeMap<String, u64>,
    /// A forked worker loaded its engine and the cached module before it joined the envelope.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prepared_before_job: bool,
}

impl WorkerPhases {
    pub fn mark(&mut self, step: &str, us: u64) {
        self.steps.insert(step.to_string(), us);
    }
}

/// What confined a `wasm.os_sandbox` worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OsSandboxDetails {
    pub namespaces: Vec<String>,
    pub seccomp: String,
    pub landlock: LandlockStatus,
    pub capabilities: String,
    pub no_new_privs: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn details_serialize_flat_and_absent_fields_are_omitted() {
        let mut d = Details::default();
        d.run.start = Some("cold".into());
        d.native.landlock = Some(LandlockStatus::FullyEnforced);
        d.wasm.cache_hit = Some(true);
        let mut p = WorkerPhases::default();
        p.mark("job_read", 12);
        p.prepared_before_job = true;
        d.wasm.worker_phases = Some(p);
        let v = serde_json::to_value(&d).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"start": "cold", "landlock": "fully_enforced", "cache_hit": true,
                "worker_phases": {"job_read": 12, "prepared_before_job": true}})
        );
        let back: Details = serde_json::from_value(v).unwrap();
        assert_eq!(back, d);
        assert_eq!(
            serde_json::to_value(Details::default()).unwrap(),
            serde_json::json!({})
        );
    }

    #[test]
    fn a_kill_for_a_nested_syscall_names_the_grant_only_without_it() {
        assert!(missing_grant("unshare", false)
            .unwrap()
            .starts_with("native.nested"));
        assert!(missing_grant("mount", false).is_some());
        assert_eq!(missing_grant("mount", true), None);
        // Never grantable, with or without: no grant to name.
        assert_eq!(missing_grant("ptrace", false), None);
        let g = NestedGrant::granted();
        assert_eq!(g.syscalls.len(), hybox_shim::seccomp::NESTED_SYSCALLS.len());
        assert_eq!(g.consequences.len(), 2);
    }
}
