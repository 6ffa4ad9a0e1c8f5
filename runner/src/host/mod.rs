//! Facts about and choices for the host hybox runs on, below every other layer: where hybox finds
//! its parts and keeps its state ([`HostConfig`]), how a one-shot wasm worker starts
//! ([`WorkerStart`]), and run ids; in submodules, what the host offers, each probed in one place
//! that the backends, the envelope and `hybox doctor` all read:
//! - [`cgroup`]: the cgroup layout (v1, v2 or hybrid) and how cgroups are mounted;
//! - [`landlock`]: the kernel's Landlock ABI;
//! - [`kernel`]: the process's euid, the user-namespace sysctls, the seccomp actions.

pub mod cgroup;
pub mod kernel;
pub mod landlock;

pub use landlock::landlock_abi;

use std::path::PathBuf;

/// Where hybox finds its parts and keeps its state on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostConfig {
    /// A `hybox-shim` file to run as the native sandbox's init instead of the shim embedded in this
    /// binary (see `backend::native::shim`); for work on the shim.
    pub shim_path: Option<PathBuf>,
    /// Parent of the per-run cgroups. Default `hybox`.
    pub cgroup_parent: String,
    /// The cgroup filesystem root. Default `/sys/fs/cgroup`.
    pub cgroup_root: PathBuf,
    /// Private compile cache. Default `$HYBOX_CACHE_DIR`, else `$XDG_CACHE_HOME/hybox`, else
    /// `~/.cache/hybox` (hybox-runc: `backend::wasm::artifact::runtime_cache_dir`).
    pub cache_dir: Option<PathBuf>,
    /// A `hybox` binary to execute as the wasm worker (`hybox __wasm-worker`). Default: the running
    /// executable itself, by fd (`/proc/self/exe`), when it is hybox (its `main` declared so with
    /// `backend::wasm::this_executable_runs_the_worker`); a library embedder's own program is not
    /// hybox and must set this for wasm runs.
    pub hybox_path: Option<PathBuf>,
    /// How a one-shot wasm run starts its worker. Default [`WorkerStart::EXEC`]; the hybox CLI
    /// uses [`WorkerStart::fork`] (read its contract before choosing it).
    pub wasm_worker_start: WorkerStart,
    /// Keep the wasm store's memory limit `MEMORY_HEADROOM` (32 MiB)
    /// below the envelope's (default `true`): a guest that over-allocates is then stopped by the
    /// store, with an outcome that names the limit, before the kernel's OOM killer fires. `false`
    /// makes the store's limit the envelope's own, so that a guest that over-allocates is ended by
    /// the kernel's OOM kill of the envelope, as a native workload is: hybox-runc's containers,
    /// whose caller (containerd: Kubernetes' `OOMKilled`, Docker's `OOMKilled`) learns of an OOM
    /// only from the cgroup's OOM events.
    pub wasm_memory_headroom: bool,
}

impl Default for HostConfig {
    fn default() -> Self {
        HostConfig {
            shim_path: None,
            cgroup_parent: "hybox".into(),
            cgroup_root: PathBuf::from("/sys/fs/cgroup"),
            cache_dir: None,
            hybox_path: None,
            wasm_worker_start: WorkerStart::EXEC,
            wasm_memory_headroom: true,
        }
    }
}

/// How the supervisor starts a one-shot worker ([`HostConfig::wasm_worker_start`]).
///
/// Both give the worker the same job pipe and result pipe, the same envelope (joined before the job
/// is sent), no fd of the caller's but stdio, and an empty environment. The hardened worker
/// (`wasm.os_sandbox`) is always exec'd, whatever this says: it is the posture for untrusted plugins,
/// and a fresh image of hybox, nothing of the caller's memory, is worth its cost there.
///
/// [`WorkerStart::EXEC`] is the default. [`WorkerStart::fork`] is `unsafe`: its soundness depends on
/// the caller (see its contract), which only the caller can know.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerStart(pub(crate) StartKind);

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum StartKind {
    /// A fresh process image (see [`WorkerStart::EXEC`]).
    #[default]
    Exec,
    /// A fork of the caller (see [`WorkerStart::fork`]), which runs this entry point.
    Fork(ForkedWorker),
}

/// The forked worker's entry point. Held here, not called by name from the backend, so that only a
/// program that chooses [`WorkerStart::fork`] links the worker (wasmtime, WASI, the compiler):
/// `hybox-runc`, which never forks a worker, is a third of the hybox binary's size and starts
/// faster (docs/oci.md).
#[derive(Clone, Copy)]
pub(crate) struct ForkedWorker(pub(crate) fn(&crate::backend::wasm::Job) -> i32);

impl std::fmt::Debug for ForkedWorker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ForkedWorker")
    }
}

// There is one worker entry point: every `ForkedWorker` is the same.
impl PartialEq for ForkedWorker {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl Eq for ForkedWorker {}

impl WorkerStart {
    /// `hybox __wasm-worker`, a fresh process image: nothing of the caller's memory is in it. The
    /// default, and the only right choice for a host that embeds hybox as a library (its memory may
    /// hold secrets, and its other threads may hold locks).
    pub const EXEC: WorkerStart = WorkerStart(StartKind::Exec);

    /// A fork of the caller that runs the worker without an exec, which saves the second hybox's
    /// exec and runtime start (about 2.5 ms of a ~10 ms run on this class of machine). The worker
    /// then holds a copy of the caller's memory, its environment zeroed, and shares its
    /// address-space layout. The hybox CLI uses it: its memory is the policy and the paths it was
    /// given, and its only other thread (the signal teardown) holds no lock.
    ///
    /// # Safety
    /// Only one thread survives a fork. Every run that uses this must happen while no other
    /// thread of the process can hold a lock the forked worker needs (the allocator's, stdio's,
    /// the environment's, a logger's), and the process's memory must hold nothing the guest's
    /// worker may not see (secrets: the worker holds a copy until it exits).
    pub unsafe fn fork() -> WorkerStart {
        WorkerStart(StartKind::Fork(ForkedWorker(
            crate::backend::wasm::worker::run_forked,
        )))
    }

    /// Whether this is [`WorkerStart::fork`].
    pub fn is_fork(self) -> bool {
        matches!(self.0, StartKind::Fork(_))
    }

    /// The forked worker's entry point, for [`WorkerStart::fork`].
    pub(crate) fn forked_entry(self) -> Option<ForkedWorker> {
        match self.0 {
            StartKind::Fork(e) => Some(e),
            StartKind::Exec => None,
        }
    }

    /// `exec` or `fork`, as the report's `details.worker_start` says.
    pub fn as_str(self) -> &'static str {
        match self.0 {
            StartKind::Exec => "exec",
            StartKind::Fork(_) => "fork",
        }
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
