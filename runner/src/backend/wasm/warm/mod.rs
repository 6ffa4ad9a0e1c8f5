//! A warm wasm function: loaded once, invoked many times (the serverless shape: one compiled
//! guest, a fresh instance per call).
//!
//! The supervisor ([`WarmFunction`]) creates the function's own envelope, starts one long-lived worker
//! (`hybox __wasm-worker --serve`), moves it into the envelope and only then sends it the load job, so
//! the untrusted compile (or the HMAC-verified cache load) happens inside the envelope, never in the
//! supervisor, exactly as on the one-shot path. The worker keeps one `Engine` with the pooling
//! allocator, the compiled guest and one `InstancePre`; every call gets a fresh `Store` with a fresh WASI
//! context, fresh store limits, a fresh epoch deadline and fresh fuel, and a fresh `/tmp` directory.
//! Nothing of an instance survives its call: a trap, a timeout or a memory-limit hit in one call cannot
//! poison the next.
//!
//! Timeouts, per call, as on the one-shot path: the worker's watchdog (its main thread) bumps the engine
//! epoch at the call's deadline, so running wasm traps; if the guest is blocked in a host call epochs
//! cannot reach, the watchdog reports the timeout [`WATCHDOG_GRACE`] later and the worker exits (the
//! blocked thread dies with it); if no reply comes at all, the supervisor kills the worker
//! ([`SUPERVISOR_GRACE`] later). A worker that exited or died is restarted by the next
//! [`WarmFunction::invoke`] (a reload: a compile-cache hit, not a compile); one that died between
//! calls is noticed by its pidfd before that call is handed to it, so the call runs on the new one.
//!
//!
//! The supervisor's side is here and in `supervisor` (the worker process: started, moved into the
//! envelope, loaded, called, killed); the worker's side is `serve`. Requests and answers are the
//! frames of [`super::protocol`]: the load is a [`Job`] answered by a `LoadReply`, a call a
//! `CallRequest` with the stdin bytes answered by a result whose `details` carry `prepare_us`,
//! `instantiate_us`, `drop_us` and `worker_exiting`.

mod serve;
mod supervisor;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::time::Instant;

use super::protocol::{CallRequest, ProtocolError, MAX_ANSWER_JSON};
use super::worker;
use super::{Job, SUPERVISOR_GRACE};
use crate::backend::postmortem;
use crate::backend::{BackendError, EnvelopeJoin};
use crate::envelope::{Envelope, IoLimit, Limits};
use crate::host::HostConfig;
use crate::policy::{Backend, OnUnenforceable, Policy};
use crate::report::{Degradation, Outcome};
use crate::workload::{Format, Workload};
use supervisor::Worker;

pub use serve::serve_main;

/// The extra argument that turns `hybox __wasm-worker` into the long-lived worker of a warm function.
pub const SERVE_ARG: &str = "--serve";
/// Instance slots in the worker's pooling allocator. Calls are sequential (one at a time per
/// function), so one slot is in use at a time; a few more let wasmtime decommit a slot lazily.
pub const POOL_SLOTS: u32 = 4;
pub use super::WATCHDOG_GRACE;

/// What one call did.
#[derive(Debug, Clone)]
pub struct WarmCall {
    /// Mapped exactly as on the one-shot path ([`worker::classify`]).
    pub outcome: Outcome,
    /// Captured output, at most `resources.stdout_max` / `stderr_max` bytes.
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes the guest wrote (beyond the caps too).
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    /// Worker side: fresh WASI context, `/tmp` directory, store, limits, deadline and fuel.
    pub prepare_us: u64,
    /// Worker side: `InstancePre::instantiate` (a pooling-allocator slot).
    pub instantiate_us: u64,
    /// Worker side: the guest's `_start` (or `wasi:cli/run`).
    pub run_us: u64,
    /// Worker side: dropping the store (the slot goes back to the pool).
    pub drop_us: u64,
    /// Supervisor side: request written to reply read, the whole call as a caller sees it.
    pub round_trip_us: u64,
    /// Whether this call started a new worker (the first call, or after a worker exit).
    pub worker_started: bool,
    /// Backend facts (`fuel_consumed`, `timeout_in`, ...).
    pub details: crate::report::details::WasmDetails,
}

/// A wasm function loaded once and invoked many times: a long-lived worker process inside the
/// function's own envelope holding the engine (pooling allocator), the compiled module and an
/// `InstancePre`.
///
/// Dropping it kills the worker and destroys the envelope (every process in it, then the cgroup).
pub struct WarmFunction {
    run_id: String,
    policy: Policy,
    host: HostConfig,
    job: Job,
    // Field order matters for Drop: the worker goes first, then the envelope, then the tmp base.
    worker: Option<Worker>,
    envelope: Option<Envelope>,
    _tmp: Option<crate::scratch::ScratchDir>,
    load_details: crate::report::details::WasmDetails,
    degradations: Vec<Degradation>,
    /// OOM kills seen in the envelope so far (to attribute a worker killed during a call).
    oom_kills: u64,
    /// `network: loopback` degraded to the host's loopback (no network namespace on this host).
    shared_loopback: bool,
}

impl WarmFunction {
    /// Creates the function's envelope from `policy.resources`, starts the worker in it and loads
    /// `artifact` (a module, component, their text, or a hybox artifact; a bundle's wasm variant).
    /// Compile errors and link errors are errors here, before any call.
    pub fn load(
        artifact: &Path,
        policy: &Policy,
        host: &HostConfig,
    ) -> Result<WarmFunction, BackendError> {
        let preflight = |why: String| BackendError::Workload {
            artifact: artifact.to_path_buf(),
            why,
        };
        let workload = Workload::detect(artifact).map_err(|e| preflight(e.to_string()))?;
        let art = workload
            .variant(Backend::Wasm)
            .ok_or_else(|| preflight("no wasm variant".into()))?
            .clone();
        if art.format != Format::HyboxArtifact && worker::kind_of(&art.format).is_none() {
            return Err(preflight(format!("not a wasm guest ({})", art.format)));
        }
        let mut degradations = Vec::new();
        if policy.wasm.os_sandbox {
            degradations.push(super::os_sandbox_unavailable(
                policy,
                "namespaces and a seccomp filter around the warm wasm worker are not implemented in this build".into(),
                "",
            )?);
        }
        let run_id = format!("warm-{}", crate::host::new_run_id());
        let envelope = match Envelope::create(
            &host.cgroup_root,
            &host.cgroup_parent,
            &run_id,
            &Limits::from(&policy.resources),
        )
        .and_then(|mut e| {
            e.limit_io(
                &host.cgroup_root,
                &IoLimit::from_policy(&policy.resources.io)?,
            )?;
            Ok(e)
        }) {
            Ok(e) => Some(e),
            Err(e) if e.is_unavailable() && policy.on_unenforceable == OnUnenforceable::Degrade => {
                degradations.push(Degradation {
                    what: "envelope".into(),
                    why: e.to_string(),
                });
                None
            }
            Err(e) => return Err(BackendError::Envelope(e)),
        };
        // The base of the per-call `/tmp` directories (the worker creates one per call inside it and
        // removes it after the call); removed with everything in it when the function is dropped.
        let tmp = match policy.filesystem.tmp {
            Some(_) => Some(crate::scratch::scratch_dir("hybox-warm-tmp-").map_err(
                BackendError::io("create the /tmp base directory for the guest"),
            )?),
            None => None,
        };
        let job = Job {
            artifact: art.path.clone(),
            format: art.format.clone(),
            args: Vec::new(),
            env: policy.workload_env().into_iter().collect(),
            policy: policy.clone(),
            capture: Some((
                policy.resources.stdout_max.bytes(),
                policy.resources.stderr_max.bytes(),
            )),
            tmp_dir: tmp.as_ref().map(|t| t.path().to_path_buf()),
            cache_dir: super::artifact::cache_dir(host).ok(),
            timeout_ms: policy.resources.timeout.as_std().as_millis() as u64,
            own_network_namespace: false,
            store_memory_is_cgroup_limit: false,
        };
        let mut f = WarmFunction {
            run_id,
            policy: policy.clone(),
            host: host.clone(),
            job,
            worker: None,
            envelope,
            _tmp: tmp,
            load_details: crate::report::details::WasmDetails::default(),
            degradations,
            oom_kills: 0,
            shared_loopback: false,
        };
        f.worker = Some(f.start()?);
        Ok(f)
    }

    /// The function's run id (its envelope is `<cgroup_parent>/<run_id>.owner-...`).
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The worker's pid, if it is running.
    pub fn worker_pid(&self) -> Option<u32> {
        self.worker.as_ref().map(Worker::pid)
    }

    /// What the last load reported (`cache_hit`, `compile_us`, `load_us`, ...).
    pub fn load_details(&self) -> &crate::report::details::WasmDetails {
        &self.load_details
    }

    /// What the policy asked for that this function does not provide.
    pub fn degradations(&self) -> &[Degradation] {
        &self.degradations
    }

    /// The envelope, if there is one (usage is cumulative over every call).
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_ref()
    }

    /// Starts the worker, moves it into the envelope, sends the load job and waits for the answer.
    fn start(&mut self) -> Result<Worker, BackendError> {
        // A worker that died mid-call (killed by the watchdog or the supervisor, OOM) could not
        // remove that call's `/tmp`: nothing of it may reach a call of the next worker.
        if let Some(base) = &self._tmp {
            if let Ok(entries) = std::fs::read_dir(base.path()) {
                for e in entries.flatten() {
                    let _ = std::fs::remove_dir_all(e.path());
                }
            }
        }
        let exe = super::worker_exe(&self.host)?;
        let started = BackendError::io(format!(
            "start the warm wasm worker {}",
            exe.path().display()
        ));
        let w = if self.policy.network == crate::policy::Network::Loopback && !self.shared_loopback
        {
            match super::netns::spawn_private(|flags| Worker::spawn(&exe, flags)) {
                Ok((w, _)) => w,
                Err(e) if super::netns::refused(&e) => {
                    self.degradations.push(super::private_loopback_unavailable(
                        &self.policy,
                        format!("clone(CLONE_NEWUSER|CLONE_NEWNET) failed: {e}"),
                    )?);
                    self.shared_loopback = true;
                    Worker::spawn(&exe, 0).map_err(started)?
                }
                Err(e) => return Err(started(e)),
            }
        } else {
            Worker::spawn(&exe, 0).map_err(started)?
        };
        self.job.own_network_namespace =
            self.policy.network == crate::policy::Network::Loopback && !self.shared_loopback;
        // Into the envelope before the worker has seen a byte of the guest: it is blocked reading.
        if let Some(env) = &self.envelope {
            if let Err(e) = env.join(w.pid() as i32) {
                w.kill();
                return Err(BackendError::io(
                    "move the warm wasm worker into the envelope",
                )(e));
            }
        }
        // Loading includes a compile on a cache miss: give it the policy's whole timeout.
        let wait = self.policy.resources.timeout.as_std() + SUPERVISOR_GRACE;
        let (w, details) = w.load(&self.job, wait)?;
        self.load_details = details;
        Ok(w)
    }

    /// One call: `args` are argv[1..], `stdin` the guest's whole stdin; stdout/stderr are captured
    /// with the policy's caps; a fresh store (limits, deadline, fuel) and a fresh `/tmp` per call.
    ///
    /// A worker that died since the last call is noticed (its pidfd) and replaced before this call
    /// is handed to it (`details.worker_replaced` says why). A guest failure (trap, timeout, memory
    /// limit, fuel, exit code) is an `Ok` outcome. If the worker dies during the call (killed, crashed), this returns an error for this call (or an `Oom`
    /// outcome when the envelope's OOM counter says the cgroup OOM killer did it), and the next
    /// `invoke` starts a new worker. A worker that fails to start again is an error of that `invoke`.
    pub fn invoke(&mut self, args: &[String], stdin: &[u8]) -> Result<WarmCall, BackendError> {
        // A worker that died since its last call (the OOM killer, an admin's SIGKILL, a crash) is
        // never handed this call: it is reaped here and replaced below.
        let replaced = self
            .worker
            .take_if(|w| w.has_ended())
            .map(|dead| match dead.reap() {
                Ok(status) => format!("the previous worker died while idle ({status})"),
                Err(e) => format!("the previous worker died while idle (status unknown: {e})"),
            });
        let worker_started = self.worker.is_none();
        let mut w = match self.worker.take() {
            Some(w) => w,
            None => self.start()?,
        };
        let req = CallRequest {
            args: args.to_vec(),
        };
        let wait = self.policy.resources.timeout.as_std() + WATCHDOG_GRACE + SUPERVISOR_GRACE;
        let (omax, emax) = self.job.capture.unwrap_or((0, 0));
        let max = MAX_ANSWER_JSON.saturating_add(omax).saturating_add(emax);
        let t0 = Instant::now();
        let reply = w.call(&req, stdin, wait, max);
        let round_trip_us = t0.elapsed().as_micros() as u64;
        let frame = match reply {
            Ok(Some(f)) => f,
            Ok(None) => {
                // Backstop: no reply in time. Kill the worker and everything in the envelope.
                w.kill();
                if let Some(env) = &self.envelope {
                    let _ = env.kill_all();
                }
                let mut call = WarmCall::empty(Outcome::Timeout, round_trip_us, worker_started);
                call.details.timeout_in =
                    Some("worker unresponsive (killed by the supervisor)".into());
                return Ok(call);
            }
            Err(e) => return self.worker_died(w, e, round_trip_us, worker_started),
        };
        let (r, stdout, stderr) = match frame.result() {
            Ok(x) => x,
            Err(source) => {
                w.kill();
                return Err(BackendError::WarmWorker {
                    step: "read the warm wasm worker's reply".into(),
                    source,
                });
            }
        };
        let exiting = r.details.worker_exiting.unwrap_or(false);
        let mut call = WarmCall {
            prepare_us: r.details.prepare_us.unwrap_or(0),
            instantiate_us: r.startup_us,
            drop_us: r.details.drop_us.unwrap_or(0),
            run_us: r.run_us,
            outcome: r.outcome,
            stdout,
            stderr,
            stdout_bytes: r.stdout_bytes,
            stderr_bytes: r.stderr_bytes,
            stdout_truncated: r.stdout_truncated,
            stderr_truncated: r.stderr_truncated,
            round_trip_us,
            worker_started,
            details: r.details,
        };
        if let Some(why) = replaced {
            call.details.worker_replaced = Some(why);
        }
        if exiting {
            // The watchdog gave up on a blocked guest thread; the worker ends after this reply.
            w.kill();
        } else {
            self.worker = Some(w);
        }
        Ok(call)
    }

    fn worker_died(
        &mut self,
        w: Worker,
        e: ProtocolError,
        round_trip_us: u64,
        worker_started: bool,
    ) -> Result<WarmCall, BackendError> {
        let status = w.reap();
        let oom = self
            .envelope
            .as_ref()
            .map(|env| env.usage().oom_kills)
            .unwrap_or(0);
        let new_ooms = oom.saturating_sub(self.oom_kills);
        self.oom_kills = oom;
        let signal = status.as_ref().ok().and_then(|s| s.signal());
        if let Some(outcome) =
            postmortem::oom_killed(signal, new_ooms, self.policy.resources.memory)
        {
            let mut call = WarmCall::empty(outcome, round_trip_us, worker_started);
            call.details.worker_killed = Some("cgroup OOM killer".into());
            return Ok(call);
        }
        Err(BackendError::WarmWorkerDied {
            exit: match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown: {e}"),
            },
            source: e,
        })
    }
}

impl WarmCall {
    fn empty(outcome: Outcome, round_trip_us: u64, worker_started: bool) -> WarmCall {
        WarmCall {
            outcome,
            stdout: Vec::new(),
            stderr: Vec::new(),
            stdout_bytes: 0,
            stderr_bytes: 0,
            stdout_truncated: false,
            stderr_truncated: false,
            prepare_us: 0,
            instantiate_us: 0,
            run_us: 0,
            drop_us: 0,
            round_trip_us,
            worker_started,
            details: crate::report::details::WasmDetails::default(),
        }
    }
}

impl Drop for WarmFunction {
    fn drop(&mut self) {
        if let Some(w) = self.worker.take() {
            w.kill();
        }
        if let Some(env) = self.envelope.take() {
            // destroy() kills anything left in the cgroup, removes it and verifies it is gone.
            if let Err(e) = env.destroy() {
                tracing::error!(error = %e, run_id = %self.run_id, "warm function envelope teardown");
            }
        }
    }
}
