//! Functions: a workload loaded once and invoked many times, bytes in, bytes out, a run report per
//! call (the serverless shape; what `hybox serve` and a plugin host embed).
//!
//! ```no_run
//! use hybox::function::{Function, FunctionOptions};
//!
//! let f = Function::load("examples/hello".as_ref(), None, &FunctionOptions::default())?;
//! let call = f.invoke(b"payload")?;
//! println!("{} ({}): {}", call.report.outcome, call.start, String::from_utf8_lossy(&call.stdout));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! - **wasm**: a pool of warm workers ([`WarmFunction`]), each a long-lived process in its own
//!   envelope holding the engine (pooling allocator), the compiled guest and an `InstancePre`. Every
//!   call gets a fresh store and WASI context (limits, deadline, fuel, `/tmp`); no instance ever
//!   serves two calls. The pool grows on demand up to [`FunctionOptions::max_concurrency`] workers.
//! - **native**: every call is a fresh sandbox (namespaces, mounts, shim, envelope) that is destroyed
//!   after the call. With [`FunctionOptions::native_pool`] > 0, sandboxes are pre-built in the
//!   background ([`Sandbox::prebuild`]: envelope, namespaces, mounts, ids, capabilities, Landlock
//!   and seccomp all in place, the workload's exec waiting on the control socket), so a call only
//!   pays the exec; each pre-built sandbox serves exactly one call and is then destroyed, and the
//!   pool refills. A call that finds the pool empty builds its own sandbox (a cold start).

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use crate::backend::wasm::http::{component_world, World};
use crate::backend::wasm::{HttpFunction, WarmFunction};
use crate::backend::BackendError;
use crate::policy::{Backend, Policy};
use crate::report::{EnvelopeReport, OutputReport, Phases, RunReport, Usage};
use crate::sandbox::{new_run_id, Prebuilt};
use crate::workload::Workload;
use crate::{HostConfig, RunOptions, Sandbox, Stdio};

/// Why a function could not be loaded or a call could not happen. A call that happened, whatever its
/// outcome (trap, timeout, OOM, exit code), is an `Ok` [`Invocation`].
#[derive(Debug, thiserror::Error)]
pub enum FunctionError {
    /// Detection, policy or decision failed.
    #[error("{path}: cannot load the function")]
    Load {
        path: String,
        #[source]
        source: crate::sandbox::Error,
    },
    /// The bundle's policy file could not be read.
    #[error("{path}: cannot load the function's policy")]
    Policy {
        path: String,
        #[source]
        source: crate::policy::PolicyError,
    },
    /// The backend could not prepare the function (worker start, compile, link) or start a call.
    #[error("function `{name}`: the {backend} backend failed")]
    Backend {
        name: String,
        backend: Backend,
        #[source]
        source: BackendError,
    },
    /// A native call's sandbox could not be built.
    #[error("function `{name}`: the call could not start")]
    Run {
        name: String,
        #[source]
        source: crate::sandbox::Error,
    },
    /// The function was shut down; no new calls.
    #[error("function `{0}` is shut down")]
    Closed(String),
    /// A wasi:http function has no stdin and stdout: it answers HTTP requests (`hybox serve`).
    #[error("function `{0}` is a wasi:http function: send it HTTP requests (hybox serve)")]
    HttpOnly(String),
}

/// How a call started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Start {
    /// Everything was ready: a warm wasm worker, or a pre-built native sandbox.
    Warm,
    /// The call paid for a start: a new wasm worker, or a native sandbox built for it.
    Cold,
}

impl std::fmt::Display for Start {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Start::Warm => "warm",
            Start::Cold => "cold",
        })
    }
}

/// One finished call.
#[derive(Debug, Clone)]
pub struct Invocation {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// This call's report (its own run id, outcome, limit fired, phases).
    pub report: RunReport,
    pub start: Start,
}

/// How a function is served.
#[derive(Debug, Clone)]
pub struct FunctionOptions {
    pub host: HostConfig,
    /// Calls that may run at once (wasm: the most warm workers, each in its own envelope).
    pub max_concurrency: usize,
    /// Native: sandboxes kept pre-built, each used for one call (0: every call builds its own).
    pub native_pool: usize,
    /// Force a backend (as `--backend`).
    pub backend: Option<Backend>,
}

impl Default for FunctionOptions {
    fn default() -> Self {
        FunctionOptions {
            host: HostConfig::default(),
            max_concurrency: 2,
            native_pool: 0,
            backend: None,
        }
    }
}

/// A function: a workload, its policy and the decision, with whatever the backend keeps warm.
pub struct Function {
    name: String,
    sandbox: Sandbox,
    host: HostConfig,
    max_concurrency: usize,
    inner: Inner,
}

enum Inner {
    Wasm(WasmPool),
    /// A component exporting `wasi:http/incoming-handler`: one worker serving every request.
    Http(Box<HttpFunction>),
    Native(Option<Arc<NativePool>>),
}

/// Pre-built native sandboxes, each for exactly one call, refilled in the background.
struct NativePool {
    state: Mutex<NativeState>,
    changed: Condvar,
    target: usize,
    refill: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Sandboxes pre-built at once, at most: a build spends much of its time in the sandbox's own
/// process (the shim's mounts), so two builders keep a 2-core machine busy where one leaves it idle.
const POOL_BUILDERS: usize = 2;

struct NativeState {
    ready: std::collections::VecDeque<Prebuilt>,
    /// Sandboxes a builder is working on.
    building: usize,
    closed: bool,
    /// The last pre-build failure (the pool retries after a pause; calls go cold meanwhile).
    last_error: Option<String>,
}

impl NativePool {
    fn start(sandbox: &Sandbox, host: &HostConfig, target: usize) -> std::io::Result<Arc<Self>> {
        let pool = Arc::new(NativePool {
            state: Mutex::new(NativeState {
                ready: std::collections::VecDeque::new(),
                building: 0,
                closed: false,
                last_error: None,
            }),
            changed: Condvar::new(),
            target,
            refill: Mutex::new(Vec::new()),
        });
        for _ in 0..POOL_BUILDERS.min(target.max(1)) {
            let (p, sandbox, host) = (pool.clone(), sandbox.clone(), host.clone());
            let spawned = std::thread::Builder::new()
                .name("hybox-native-pool".into())
                .spawn(move || p.refill_loop(&sandbox, &host));
            match spawned {
                Ok(h) => pool
                    .refill
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(h),
                Err(e) => {
                    pool.shutdown();
                    return Err(e);
                }
            }
        }
        Ok(pool)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NativeState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `target` sandboxes ready until the pool closes.
    fn refill_loop(&self, sandbox: &Sandbox, host: &HostConfig) {
        loop {
            {
                let mut g = self.lock();
                while !g.closed && g.ready.len() + g.building >= self.target {
                    g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
                }
                if g.closed {
                    return;
                }
                g.building += 1;
            }
            let built = sandbox.prebuild(host);
            // Counted as building until it is ready or failed, under one lock: the builders never
            // overshoot the target.
            let mut g = self.lock();
            g.building -= 1;
            match built {
                Ok(p) => {
                    if g.closed {
                        drop(g);
                        drop(p);
                        return;
                    }
                    g.ready.push_back(p);
                    g.last_error = None;
                    self.changed.notify_all();
                }
                Err(e) => {
                    let why = crate::error_chain(&e);
                    tracing::warn!("native pool: pre-building a sandbox failed: {why}");
                    g.last_error = Some(why);
                    drop(g);
                    self.changed.notify_all();
                    std::thread::sleep(std::time::Duration::from_millis(500));
                }
            }
        }
    }

    /// A ready sandbox, if there is one (a builder is woken to replace it).
    fn take(&self) -> Result<Option<Prebuilt>, ()> {
        let mut g = self.lock();
        if g.closed {
            return Err(());
        }
        let p = g.ready.pop_front();
        self.changed.notify_all();
        Ok(p)
    }

    fn shutdown(&self) {
        let ready = {
            let mut g = self.lock();
            g.closed = true;
            std::mem::take(&mut g.ready)
        };
        self.changed.notify_all();
        drop(ready);
        let handles = std::mem::take(&mut *self.refill.lock().unwrap_or_else(|e| e.into_inner()));
        for h in handles {
            let _ = h.join();
        }
    }

    fn drained(&self) -> bool {
        self.lock().ready.is_empty()
            && self
                .refill
                .lock()
                .map(|hs| hs.iter().all(|h| h.is_finished()))
                .unwrap_or(false)
    }
}

/// Idle warm workers, and how many exist.
struct WasmPool {
    state: Mutex<PoolState>,
    freed: Condvar,
    artifact: std::path::PathBuf,
}

struct PoolState {
    idle: Vec<WarmFunction>,
    /// Workers that exist (idle or in a call).
    live: usize,
    closed: bool,
}

impl Function {
    /// Loads `path` (a bundle directory or a single artifact) under `policy` (default: the bundle's
    /// own policy, else the built-in default): detection, decision, and for wasm the first warm
    /// worker (the compile happens here, inside that worker's envelope), for a native pool the
    /// first pre-built sandboxes.
    pub fn load(
        path: &Path,
        policy: Option<Policy>,
        opts: &FunctionOptions,
    ) -> Result<Function, FunctionError> {
        let shown = path.display().to_string();
        let workload = Workload::detect(path).map_err(|e| FunctionError::Load {
            path: shown.clone(),
            source: e.into(),
        })?;
        let policy = match (policy, &workload) {
            (Some(p), _) => p,
            (None, Workload::Bundle(b)) if b.policy.is_some() => {
                let p = b.policy.as_deref().unwrap_or(Path::new(""));
                Policy::from_file(p).map_err(|e| FunctionError::Policy {
                    path: p.display().to_string(),
                    source: e,
                })?
            }
            (None, _) => Policy::default(),
        };
        let name = match &workload {
            Workload::Bundle(b) => b.manifest.name.clone(),
            Workload::Single(a) => a
                .path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "function".into()),
        };
        let sandbox =
            Sandbox::new(workload, policy, opts.backend).map_err(|e| FunctionError::Load {
                path: shown.clone(),
                source: e,
            })?;
        let backend = sandbox.decision().backend;
        let artifact = sandbox
            .workload()
            .variant(backend)
            .map(|a| a.path.clone())
            .unwrap_or_default();
        let backend_err = |source| FunctionError::Backend {
            name: name.clone(),
            backend,
            source,
        };
        let inner = match backend {
            // Which world is read from the component's exports, never from a flag.
            Backend::Wasm if component_world(&artifact) == Some(World::HttpProxy) => {
                Inner::Http(Box::new(
                    HttpFunction::load(
                        &artifact,
                        sandbox.policy(),
                        &opts.host,
                        opts.max_concurrency.max(1),
                    )
                    .map_err(backend_err)?,
                ))
            }
            Backend::Wasm => {
                // The first worker now: a compile error or a link error is a load error.
                let first = WarmFunction::load(&artifact, sandbox.policy(), &opts.host)
                    .map_err(backend_err)?;
                Inner::Wasm(WasmPool {
                    state: Mutex::new(PoolState {
                        idle: vec![first],
                        live: 1,
                        closed: false,
                    }),
                    freed: Condvar::new(),
                    artifact,
                })
            }
            Backend::Native if opts.native_pool > 0 => Inner::Native(Some(
                NativePool::start(&sandbox, &opts.host, opts.native_pool).map_err(|e| {
                    backend_err(BackendError::Io {
                        step: "start the native pool's builder threads".into(),
                        source: e,
                    })
                })?,
            )),
            Backend::Native => Inner::Native(None),
        };
        Ok(Function {
            name,
            sandbox,
            host: opts.host.clone(),
            max_concurrency: opts.max_concurrency.max(1),
            inner,
        })
    }

    /// The bundle's name (or the artifact's file stem).
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn backend(&self) -> Backend {
        self.sandbox.decision().backend
    }
    pub fn reasons(&self) -> &[String] {
        &self.sandbox.decision().reasons
    }
    pub fn policy(&self) -> &Policy {
        self.sandbox.policy()
    }
    /// The artifact the chosen backend runs.
    pub fn artifact(&self) -> &Path {
        self.sandbox
            .workload()
            .variant(self.backend())
            .map(|a| a.path.as_path())
            .unwrap_or_else(|| self.sandbox.workload().path())
    }
    /// Native: how many pre-built sandboxes the pool keeps (0: no pool, every call is cold).
    pub fn native_pool(&self) -> usize {
        match &self.inner {
            Inner::Native(Some(p)) => p.target,
            _ => 0,
        }
    }
    /// Native: the pool's last pre-build failure, if the latest attempt failed.
    pub fn pool_error(&self) -> Option<String> {
        match &self.inner {
            Inner::Native(Some(p)) => p.lock().last_error.clone(),
            _ => None,
        }
    }
    pub fn max_concurrency(&self) -> usize {
        self.max_concurrency
    }
    /// The HTTP function behind this one, if its component is a wasi:http proxy.
    pub fn http(&self) -> Option<&HttpFunction> {
        match &self.inner {
            Inner::Http(h) => Some(h),
            _ => None,
        }
    }

    /// One call: `payload` is the workload's stdin; stdout and stderr are captured up to the policy's
    /// caps. Blocking (run it on a blocking thread in async code). At most
    /// [`FunctionOptions::max_concurrency`] wasm calls run at once; more wait for a worker.
    pub fn invoke(&self, payload: &[u8]) -> Result<Invocation, FunctionError> {
        match &self.inner {
            Inner::Wasm(pool) => self.invoke_wasm(pool, payload),
            Inner::Http(_) => Err(FunctionError::HttpOnly(self.name.clone())),
            Inner::Native(pool) => {
                if let Some(pool) = pool {
                    let prebuilt = pool
                        .take()
                        .map_err(|()| FunctionError::Closed(self.name.clone()))?;
                    if let Some(p) = prebuilt {
                        let run = self
                            .sandbox
                            .run_prebuilt(p, payload.to_vec())
                            .map_err(|e| FunctionError::Run {
                                name: self.name.clone(),
                                source: e,
                            })?;
                        return Ok(Invocation {
                            stdout: run.stdout,
                            stderr: run.stderr,
                            report: run.report,
                            start: Start::Warm,
                        });
                    }
                    // None ready (a burst): this call builds its own sandbox, cold.
                }
                let run = self
                    .sandbox
                    .run(&RunOptions {
                        stdio: Stdio::Capture {
                            stdin: payload.to_vec(),
                        },
                        host: self.host.clone(),
                        // As for a pre-built sandbox: the teardown is not the caller's latency.
                        detach_teardown: true,
                        ..RunOptions::default()
                    })
                    .map_err(|e| FunctionError::Run {
                        name: self.name.clone(),
                        source: e,
                    })?;
                let mut report = run.report;
                report.details.run.start = Some("cold".into());
                Ok(Invocation {
                    stdout: run.stdout,
                    stderr: run.stderr,
                    report,
                    start: Start::Cold,
                })
            }
        }
    }

    fn invoke_wasm(&self, pool: &WasmPool, payload: &[u8]) -> Result<Invocation, FunctionError> {
        let t0 = Instant::now();
        // A worker: an idle one, else a new one if below the limit, else wait for one.
        let mut worker = {
            let mut g = pool.state.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if g.closed {
                    return Err(FunctionError::Closed(self.name.clone()));
                }
                if let Some(w) = g.idle.pop() {
                    break Some(w);
                }
                if g.live < self.max_concurrency {
                    g.live += 1;
                    break None;
                }
                g = pool.freed.wait(g).unwrap_or_else(|e| e.into_inner());
            }
        };
        let mut started_here = false;
        if worker.is_none() {
            match WarmFunction::load(&pool.artifact, self.sandbox.policy(), &self.host) {
                Ok(w) => {
                    worker = Some(w);
                    started_here = true;
                }
                Err(e) => {
                    let mut g = pool.state.lock().unwrap_or_else(|e| e.into_inner());
                    g.live -= 1;
                    pool.freed.notify_one();
                    return Err(FunctionError::Backend {
                        name: self.name.clone(),
                        backend: Backend::Wasm,
                        source: e,
                    });
                }
            }
        }
        let mut w = worker.expect("a worker was taken or started above");
        let setup_us = t0.elapsed().as_micros() as u64;
        let result = w.invoke(&self.sandbox.policy().args, payload);
        let inv = result.map(|call| {
            let t_usage = Instant::now();
            // The worker's envelope is shared by all of its calls: its counters are cumulative
            // and cpuacct cannot attribute a call of microseconds, so they are not read per call
            // (that would be several cgroupfs reads on every call's path). What fired in a call
            // (timeout, memory limit, fuel, a cgroup OOM kill of the worker) is in its outcome.
            let (usage, envelope) = match w.envelope() {
                Some(e) => (
                    Usage {
                        source: "not per call: a warm worker's envelope is shared by its calls"
                            .into(),
                        ..Usage::default()
                    },
                    e.report(),
                ),
                None => (
                    Usage {
                        source: "none (no envelope)".into(),
                        ..Usage::default()
                    },
                    EnvelopeReport::None,
                ),
            };
            let start = if started_here || call.worker_started {
                Start::Cold
            } else {
                Start::Warm
            };
            let mut details = crate::report::Details {
                wasm: call.details.clone(),
                ..Default::default()
            };
            details.run.start = Some(start.to_string());
            details.run.worker_run_id = Some(w.run_id().into());
            details.run.round_trip_us = Some(call.round_trip_us);
            details.wasm.prepare_us = Some(call.prepare_us);
            let policy = self.sandbox.policy();
            let report = RunReport {
                hybox_version: env!("CARGO_PKG_VERSION").to_string(),
                run_id: new_run_id(),
                artifact: self.sandbox.workload().path().display().to_string(),
                workload: self.sandbox.workload().describe(),
                backend: Backend::Wasm,
                reasons: self.sandbox.decision().reasons.clone(),
                exit_status: call.outcome.exit_status(),
                limit_fired: call.outcome.limit(),
                outcome: call.outcome.clone(),
                phases: Phases {
                    setup_us: setup_us + call.prepare_us,
                    start_us: call.instantiate_us,
                    run_us: call.run_us,
                    teardown_us: call.drop_us + t_usage.elapsed().as_micros() as u64,
                },
                usage,
                envelope,
                output: OutputReport {
                    mode: "captured".into(),
                    stdout_bytes: call.stdout_bytes,
                    stderr_bytes: call.stderr_bytes,
                    stdout_truncated: call.stdout_truncated,
                    stderr_truncated: call.stderr_truncated,
                },
                degradations: w.degradations().to_vec(),
                granted_syscalls: Vec::new(),
                details,
                policy: policy.clone(),
            };
            Invocation {
                stdout: call.stdout,
                stderr: call.stderr,
                report,
                start,
            }
        });
        // Back to the pool (a worker that died restarts on its next call), unless shut down.
        let mut g = pool.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.closed {
            g.live -= 1;
            drop(g);
            drop(w);
        } else {
            g.idle.push(w);
        }
        pool.freed.notify_one();
        inv.map_err(|e| FunctionError::Backend {
            name: self.name.clone(),
            backend: Backend::Wasm,
            source: e,
        })
    }

    /// Refuses new calls and tears down everything kept warm (idle workers and their envelopes,
    /// pre-built sandboxes). Calls in progress finish; their workers are torn down as they return.
    pub fn shutdown(&self) {
        match &self.inner {
            Inner::Wasm(pool) => {
                let idle = {
                    let mut g = pool.state.lock().unwrap_or_else(|e| e.into_inner());
                    g.closed = true;
                    g.live -= g.idle.len();
                    std::mem::take(&mut g.idle)
                };
                pool.freed.notify_all();
                drop(idle);
            }
            Inner::Native(Some(pool)) => pool.shutdown(),
            // Requests in flight finish; the worker and its envelope go with the function.
            Inner::Native(None) | Inner::Http(_) => {}
        }
    }

    /// Whether every worker or pre-built sandbox is gone (after [`Function::shutdown`], once the calls
    /// in progress returned).
    pub fn drained(&self) -> bool {
        match &self.inner {
            Inner::Wasm(pool) => pool.state.lock().map(|g| g.live == 0).unwrap_or(false),
            Inner::Native(Some(pool)) => pool.drained(),
            Inner::Native(None) | Inner::Http(_) => true,
        }
    }
}

impl Drop for Function {
    fn drop(&mut self) {
        self.shutdown();
        // Calls leave their teardown to background threads (`RunOptions::detach_teardown`): a host
        // that drops its functions and exits must not leave sandboxes or envelopes behind.
        crate::sandbox::wait_for_teardowns(std::time::Duration::from_secs(5));
    }
}
