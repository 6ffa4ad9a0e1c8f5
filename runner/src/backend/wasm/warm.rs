//! A warm wasm function: loaded once, invoked many times (the serverless shape of `shared/wasm.md`).
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
//! [`WarmFunction::invoke`] (a reload: a compile-cache hit, not a compile).
//!
//! Wire format, both directions: `u32 LE length | message`, where a message is the one-shot framing
//! (`u32 LE json length | JSON | raw bytes`). Load: a [`Job`] (no raw bytes), answered by a
//! [`LoadReply`]. Call: a [`CallRequest`] with the stdin bytes, answered by the one-shot result
//! encoding (stdout then stderr as raw bytes) whose `details` carry `prepare_us`, `instantiate_us`,
//! `drop_us` and `worker_exiting`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTable;
use wasmtime::{
    Engine, InstanceAllocationStrategy, InstancePre, Linker, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::p2::bindings::sync::CommandPre;

use super::worker::{
    self, classify, fuel_budget, wasi_builder, wasm_memory_limit, CappedPipe, Captured,
    ComponentState, Loaded, ModuleState,
};
use super::{Job, WorkerResult, JOB_FD, RESULT_FD, SUPERVISOR_GRACE, WORKER_SUBCOMMAND};
use crate::backend::postmortem;
use crate::backend::process::Spawned;
use crate::backend::{BackendError, EnvelopeJoin};
use crate::envelope::{Envelope, Limits};
use crate::host::HostConfig;
use crate::policy::{Backend, OnUnenforceable, Policy};
use crate::report::{Degradation, Outcome};
use crate::workload::{Format, Workload};

/// The extra argument that turns `hybox __wasm-worker` into the long-lived worker of a warm function.
pub const SERVE_ARG: &str = "--serve";
/// Bytes of each pooled table kept resident between calls (see `load_served`). Linear memory is kept
/// resident only with PAGEMAP_SCAN ([`MEMORY_KEEP_RESIDENT`]): without it wasmtime memsets the whole
/// kept range per call, and a Rust or C guest's stack and data start around 1 MiB, so its first
/// pages are rarely the touched ones; keeping more resident then costs more memset than it saves.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;
/// Instance slots in the worker's pooling allocator. Calls are sequential (one at a time per
/// function), so one slot is in use at a time; a few more let wasmtime decommit a slot lazily.
pub const POOL_SLOTS: u32 = 4;

/// Bytes of each slot's linear memory kept mapped between calls when PAGEMAP_SCAN is available:
/// the pages a call touched (up to this much) stay resident, reset to the module's initial image.
/// The worker's memory (counted in its envelope) grows by at most this per slot used. Measured on
/// hello (`runner/benches/wasm.rs`, warm/*): instantiate + run + drop ~33 us -> 11-14 us.
const MEMORY_KEEP_RESIDENT: usize = 4 << 20;
/// As on the one-shot path: how long after the deadline the worker's watchdog gives up on a guest
/// blocked in a host call, reports the timeout and exits.
pub const WATCHDOG_GRACE: Duration = Duration::from_millis(200);
/// Largest JSON part of a reply the supervisor accepts (the worker runs untrusted code: a reply is
/// bounded before anything is allocated for it).
const MAX_REPLY_JSON: u64 = 1 << 20;

/// The worker's answer to the load job.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoadReply {
    /// Why the guest could not be loaded (compile error, bad artifact, link error).
    pub error: Option<String>,
    /// `cache_hit`, `compile_us`, `load_us`, `wasm_memory_limit`...
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// One call, as the worker receives it; the raw bytes are the guest's stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallRequest {
    /// argv[1..]; argv[0] is the artifact's file name.
    pub args: Vec<String>,
}

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
    pub details: serde_json::Map<String, serde_json::Value>,
}

/// The running worker, seen from the supervisor.
struct Worker {
    child: Spawned,
    requests: File,
    replies: File,
}

impl Worker {
    /// Kills the worker and reaps it.
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
    load_details: serde_json::Map<String, serde_json::Value>,
    degradations: Vec<Degradation>,
    /// OOM kills seen in the envelope so far (to attribute a worker killed during a call).
    oom_kills: u64,
}

fn io_err(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackendError {
    let step = step.into();
    move |source| BackendError::Io { step, source }
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
        ) {
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
            Some(_) => Some(
                crate::scratch::scratch_dir("hybox-warm-tmp-")
                    .map_err(io_err("create the /tmp base directory for the guest"))?,
            ),
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
        };
        let mut f = WarmFunction {
            run_id,
            policy: policy.clone(),
            host: host.clone(),
            job,
            worker: None,
            envelope,
            _tmp: tmp,
            load_details: serde_json::Map::new(),
            degradations,
            oom_kills: 0,
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
        self.worker.as_ref().map(|w| w.child.id())
    }

    /// What the last load reported (`cache_hit`, `compile_us`, `load_us`, ...).
    pub fn load_details(&self) -> &serde_json::Map<String, serde_json::Value> {
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
        let exe = super::worker_binary(&self.host)?;
        let (req_r, req_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("pipe")(e.into()))?;
        let (rep_r, rep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| io_err("pipe")(e.into()))?;
        let child = spawn_serve_worker(&exe, &req_r, &rep_w).map_err(io_err(format!(
            "start the warm wasm worker {}",
            exe.display()
        )))?;
        drop(req_r);
        drop(rep_w);
        let mut w = Worker {
            child,
            requests: File::from(req_w),
            replies: File::from(rep_r),
        };
        // Into the envelope before the worker has seen a byte of the guest: it is blocked reading.
        if let Some(env) = &self.envelope {
            if let Err(e) = env.join(w.child.id() as i32) {
                w.kill();
                return Err(io_err("move the warm wasm worker into the envelope")(e));
            }
        }
        let msg = super::encode_job(&self.job, &[]);
        if let Err(e) = write_msg(&mut w.requests, &msg) {
            w.kill();
            return Err(io_err("send the load job to the warm wasm worker")(e));
        }
        // Loading includes a compile on a cache miss: give it the policy's whole timeout.
        let wait = self.policy.resources.timeout.as_std() + SUPERVISOR_GRACE;
        let reply = match read_reply(&mut w.replies, wait, MAX_REPLY_JSON) {
            Ok(Some(b)) => b,
            Ok(None) => {
                w.kill();
                return Err(BackendError::WarmLoad {
                    artifact: self.job.artifact.clone(),
                    why: format!("no answer to the load job within {wait:?}"),
                });
            }
            Err(e) => {
                let _ = w.child.kill();
                let status = w.child.wait();
                return Err(io_err(format!(
                    "read the load answer of the warm wasm worker (worker exit: {status:?})"
                ))(e));
            }
        };
        let parsed = super::unframe(&reply).and_then(|(json, _)| {
            serde_json::from_slice::<LoadReply>(json).map_err(|e| e.to_string())
        });
        match parsed {
            Ok(LoadReply {
                error: None,
                details,
            }) => {
                self.load_details = details;
                Ok(w)
            }
            Ok(LoadReply {
                error: Some(why), ..
            }) => {
                w.kill();
                Err(BackendError::WarmLoad {
                    artifact: self.job.artifact.clone(),
                    why,
                })
            }
            Err(why) => {
                w.kill();
                Err(BackendError::WarmLoad {
                    artifact: self.job.artifact.clone(),
                    why: format!("bad load answer: {why}"),
                })
            }
        }
    }

    /// One call: `args` are argv[1..], `stdin` the guest's whole stdin; stdout/stderr are captured
    /// with the policy's caps; a fresh store (limits, deadline, fuel) and a fresh `/tmp` per call.
    ///
    /// A guest failure (trap, timeout, memory limit, fuel, exit code) is an `Ok` outcome. If the worker
    /// dies during the call (killed, crashed), this returns an error for this call (or an `Oom`
    /// outcome when the envelope's OOM counter says the cgroup OOM killer did it), and the next
    /// `invoke` starts a new worker. A worker that fails to start again is an error of that `invoke`.
    pub fn invoke(&mut self, args: &[String], stdin: &[u8]) -> Result<WarmCall, BackendError> {
        let worker_started = self.worker.is_none();
        let mut w = match self.worker.take() {
            Some(w) => w,
            None => self.start()?,
        };
        let req = CallRequest {
            args: args.to_vec(),
        };
        let msg = super::frame(
            &serde_json::to_vec(&req).expect("a call request always serialises"),
            &[stdin],
        );
        let t0 = Instant::now();
        let sent = write_msg(&mut w.requests, &msg);
        let wait = self.policy.resources.timeout.as_std() + WATCHDOG_GRACE + SUPERVISOR_GRACE;
        let (omax, emax) = self.job.capture.unwrap_or((0, 0));
        let reply = match sent {
            Ok(()) => read_reply(&mut w.replies, wait, MAX_REPLY_JSON + omax + emax),
            Err(e) => Err(e),
        };
        let round_trip_us = t0.elapsed().as_micros() as u64;
        let bytes = match reply {
            Ok(Some(b)) => b,
            Ok(None) => {
                // Backstop: no reply in time. Kill the worker and everything in the envelope.
                w.kill();
                if let Some(env) = &self.envelope {
                    let _ = env.kill_all();
                }
                let mut call = WarmCall::empty(Outcome::Timeout, round_trip_us, worker_started);
                call.details.insert(
                    "timeout_in".into(),
                    "worker unresponsive (killed by the supervisor)".into(),
                );
                return Ok(call);
            }
            Err(e) => return self.worker_died(w, e, round_trip_us, worker_started),
        };
        let (r, stdout, stderr) = match super::decode_result(&bytes) {
            Ok(x) => x,
            Err(why) => {
                w.kill();
                return Err(BackendError::Io {
                    step: "read the warm wasm worker's reply".into(),
                    source: std::io::Error::new(std::io::ErrorKind::InvalidData, why),
                });
            }
        };
        let num = |k: &str| r.details.get(k).and_then(|v| v.as_u64()).unwrap_or(0);
        let exiting = r
            .details
            .get("worker_exiting")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let call = WarmCall {
            prepare_us: num("prepare_us"),
            instantiate_us: r.startup_us,
            drop_us: num("drop_us"),
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
        mut w: Worker,
        e: std::io::Error,
        round_trip_us: u64,
        worker_started: bool,
    ) -> Result<WarmCall, BackendError> {
        let _ = w.child.kill();
        let status = w.child.wait();
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
            call.details
                .insert("worker_killed".into(), "cgroup OOM killer".into());
            return Ok(call);
        }
        Err(io_err(format!(
            "the warm wasm worker died during the call (exit: {}); the next call starts a new one",
            match status {
                Ok(s) => s.to_string(),
                Err(e) => format!("unknown: {e}"),
            }
        ))(e))
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
            details: serde_json::Map::new(),
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

/// Starts `hybox __wasm-worker --serve` with the request pipe at fd 3, the reply pipe at fd 4, no other
/// fds, an empty environment, stdin and stdout on /dev/null (the guest's stdio is captured per call),
/// stderr inherited for the worker's own diagnostics.
fn spawn_serve_worker(exe: &Path, req_r: &OwnedFd, rep_w: &OwnedFd) -> std::io::Result<Spawned> {
    let (j, r) = (req_r.as_raw_fd(), rep_w.as_raw_fd());
    let program = crate::backend::process::Program {
        program: exe,
        args: &[WORKER_SUBCOMMAND, SERVE_ARG],
        namespaces: 0,
        null_stdin_stdout: true,
    };
    // SAFETY: in the child before exec, with both pipe ends open.
    let prepare = move || unsafe { super::place_worker_fds(j, r) };
    // SAFETY: `prepare` makes only raw syscalls (fcntl, dup2, close_range), allocates nothing and
    // cannot panic.
    unsafe { crate::backend::process::spawn(&program, &prepare) }
}

/// Writes one `u32 LE length | message`.
fn write_msg(out: &mut impl Write, msg: &[u8]) -> std::io::Result<()> {
    let len = u32::try_from(msg.len())
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "message over 4 GiB"))?;
    let mut buf = Vec::with_capacity(4 + msg.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(msg);
    out.write_all(&buf)
}

/// Reads one message; `Ok(None)` on a clean end of stream before its first byte.
fn read_msg(input: &mut File, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as u64;
    if len > max {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message of {len} bytes, at most {max} expected"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    Ok(Some(buf))
}

/// Waits up to `wait` for a reply to start, then reads it. `Ok(None)`: nothing within `wait`; an
/// end of stream (the worker died) is an error.
fn read_reply(input: &mut File, wait: Duration, max: u64) -> std::io::Result<Option<Vec<u8>>> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: input.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            if left.is_zero() {
                return Ok(None);
            }
            continue;
        }
        // Readable or hung up: read (a hang-up without data is an end of stream, an error here).
        return match read_msg(input, max)? {
            Some(b) => Ok(Some(b)),
            None => Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the worker closed its reply pipe",
            )),
        };
    }
}

// ---------------------------------------------------------------------------------------------------
// The worker side: `hybox __wasm-worker --serve`.

/// The compiled guest, linked once.
enum Pre {
    Module(InstancePre<ModuleState>),
    Component(CommandPre<ComponentState>),
}

/// The watchdog's view of the call in progress (shared by the guest thread and the main thread).
#[derive(Default)]
struct Watch {
    /// The running call's deadline; `None` between calls.
    deadline: Option<Instant>,
    /// The running call's captured output (for the watchdog's timeout reply).
    captured: Option<Captured>,
    /// Set by the watchdog when it answered the call itself; the guest thread must not answer.
    claimed: bool,
    /// The request stream ended (or failed): the worker exits.
    shutdown: Option<i32>,
}

type Shared = Arc<(Mutex<Watch>, Condvar)>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Watch> {
    s.0.lock().unwrap_or_else(|e| e.into_inner())
}

/// The loaded function inside the worker.
struct Served {
    engine: Engine,
    job: Job,
    pre: Pre,
    fuel: Option<u64>,
    tmp_base: Option<PathBuf>,
    /// `tmp_base` opened once: each call's directory is made and removed relative to it (one short
    /// syscall each, instead of walking the whole path several times per call).
    tmp_base_dir: Option<std::os::fd::OwnedFd>,
    calls: u64,
    /// The next call's `/tmp`, created ahead of it.
    prepared_tmp: Option<PathBuf>,
    /// The prepared directory [`Served::call_tmp`] handed to the current call.
    handed_out: Option<PathBuf>,
}

/// Builds the engine with a pooling allocator sized from the policy, loads (cache or compile) and
/// links the guest.
fn load_served(
    mut job: Job,
    details: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<Served, String> {
    let policy = &job.policy;
    let memory = wasm_memory_limit(policy.resources.memory.bytes());
    // Pool slots may not be larger than the wasm memory limit the one-shot path applies (rounded
    // up to whole 64 KiB wasm pages); the store limiter enforces the exact limit and names it.
    let page = 64 * 1024;
    let slot_memory = usize::try_from(memory.div_ceil(page) * page).unwrap_or(usize::MAX);
    let per_component = policy.wasm.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(POOL_SLOTS)
        .total_core_instances(POOL_SLOTS.saturating_mul(per_component))
        .total_memories(POOL_SLOTS.saturating_mul(per_component))
        .total_tables(POOL_SLOTS.saturating_mul(per_component))
        .max_memory_size(slot_memory)
        .table_elements(usize::try_from(policy.wasm.max_table_elements).unwrap_or(usize::MAX))
        // A freed slot's table is reset with memset and kept mapped instead of being
        // returned to the kernel with madvise: the next call then takes no page faults on them.
        // wasmtime still resets them to the module's initial image (nothing leaks between calls).
        // Measured on hello (runner/benches/wasm.rs, warm/*): the table's first 64 KiB save about
        // 8 us of ~40 per call; 64 KiB of linear memory changed nothing measurable and 1 MiB cost
        // +20 us (memset).
        .table_keep_resident(TABLE_KEEP_RESIDENT);
    // With the kernel's PAGEMAP_SCAN (Linux 6.7+) wasmtime finds the pages a call dirtied and resets
    // only those to the module's initial image, keeping them mapped: the next call takes no page
    // faults and the reset no madvise (whose TLB shootdowns reach every core the worker ran on).
    // Without it, keeping memory resident would memset all of it per call, so it stays off.
    let pagemap_scan = PoolingAllocationConfig::is_pagemap_scan_available();
    if pagemap_scan {
        pool.linear_memory_keep_resident(MEMORY_KEEP_RESIDENT)
            .pagemap_scan(wasmtime::Enabled::Yes);
    }
    details.insert("pagemap_scan".into(), pagemap_scan.into());
    details.insert(
        "memory_keep_resident_bytes".into(),
        (if pagemap_scan {
            MEMORY_KEEP_RESIDENT
        } else {
            0
        })
        .into(),
    );
    let mut config = worker::engine_config(policy, false);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(|e| format!("wasm engine: {e:#}"))?;
    let t = Instant::now();
    let (loaded, _) = worker::load(&engine, &job, details).map_err(|o| o.to_string())?;
    details.insert("load_us".into(), (t.elapsed().as_micros() as u64).into());
    details.insert("wasm_memory_limit".into(), memory.into());
    details.insert("pool_slots".into(), POOL_SLOTS.into());
    let pre = match loaded {
        Loaded::Module(m) => {
            let mut linker: Linker<ModuleState> = Linker::new(&engine);
            wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut ModuleState| &mut s.wasi)
                .map_err(|e| format!("link WASI p1: {e:#}"))?;
            Pre::Module(
                linker
                    .instantiate_pre(&m)
                    .map_err(|e| format!("link: {e:#}"))?,
            )
        }
        Loaded::Component(c) => {
            let mut linker: wasmtime::component::Linker<ComponentState> =
                wasmtime::component::Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                .map_err(|e| format!("link WASI p2: {e:#}"))?;
            let pre = linker
                .instantiate_pre(&c)
                .map_err(|e| format!("link: {e:#}"))?;
            Pre::Component(
                CommandPre::new(pre)
                    .map_err(|e| format!("link: not a wasi:cli/command component: {e:#}"))?,
            )
        }
    };
    let fuel = fuel_budget(&job.policy);
    let tmp_base = job.tmp_dir.take();
    // No fd (e.g. not openable here): the calls' directories are made and removed by path.
    let tmp_base_dir = tmp_base
        .as_ref()
        .and_then(|b| std::fs::File::open(b).ok())
        .map(std::os::fd::OwnedFd::from);
    Ok(Served {
        engine,
        job,
        pre,
        fuel,
        tmp_base,
        tmp_base_dir,
        calls: 0,
        prepared_tmp: None,
        handed_out: None,
    })
}

/// Entry point of `hybox __wasm-worker --serve`: reads the load job, then serves calls until the
/// request pipe closes. Returns the worker's exit code.
pub fn serve_main() -> i32 {
    // SAFETY: the supervisor placed the request pipe's read end at JOB_FD and the reply pipe's write
    // end at RESULT_FD before exec (see `spawn_serve_worker`); nothing else in this process owns them.
    let (mut requests, mut replies) =
        unsafe { (File::from_raw_fd(JOB_FD), File::from_raw_fd(RESULT_FD)) };
    let job = match read_msg(&mut requests, u32::MAX as u64) {
        Ok(Some(m)) => match super::decode_job(&m) {
            Ok((job, _)) => job,
            Err(e) => {
                eprintln!("hybox wasm worker: bad load job: {e}");
                return 125;
            }
        },
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("hybox wasm worker: reading the load job: {e}");
            return 125;
        }
    };
    let mut details = serde_json::Map::new();
    let loaded = load_served(job, &mut details);
    let (served, error) = match loaded {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e)),
    };
    let reply = LoadReply { error, details };
    let msg = super::frame(
        &serde_json::to_vec(&reply).expect("a load reply always serialises"),
        &[],
    );
    if let Err(e) = write_msg(&mut replies, &msg) {
        eprintln!("hybox wasm worker: writing the load answer: {e}");
        return 125;
    }
    let Some(served) = served else { return 0 };
    let engine = served.engine.clone();
    let shared: Shared = Arc::new((Mutex::new(Watch::default()), Condvar::new()));
    let replies = Arc::new(replies);
    // The guest thread reads requests and runs the calls, with a native stack comfortably above
    // max_wasm_stack (as on the one-shot path) so wasmtime's stack limit, not the guard page, stops
    // deep recursion.
    let stack = (served.job.policy.wasm.max_stack.bytes() as usize).saturating_add(8 << 20);
    let spawned = {
        let shared = shared.clone();
        let replies = replies.clone();
        std::thread::Builder::new()
            .name("guest".into())
            .stack_size(stack)
            .spawn(move || serve_loop(served, requests, &replies, &shared))
    };
    if let Err(e) = spawned {
        eprintln!("hybox wasm worker: spawn guest thread: {e}");
        return 125;
    }
    watchdog(&engine, &shared, &replies)
}

/// The main thread: bumps the epoch at a call's deadline (running wasm traps) and, if the guest
/// thread still has not answered [`WATCHDOG_GRACE`] later (blocked in a host call), answers with a
/// timeout and returns, which ends the worker and the blocked thread with it.
fn watchdog(engine: &Engine, shared: &Shared, replies: &File) -> i32 {
    let mut g = lock(shared);
    loop {
        if let Some(code) = g.shutdown {
            return code;
        }
        let Some(deadline) = g.deadline else {
            g = shared.1.wait(g).unwrap_or_else(|e| e.into_inner());
            continue;
        };
        let now = Instant::now();
        if now < deadline {
            g = shared
                .1
                .wait_timeout(g, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
            continue;
        }
        // Under the lock: the guest thread sets a new call's epoch deadline under the same lock, so
        // this increment can only reach the call whose deadline passed.
        engine.increment_epoch();
        if now >= deadline + WATCHDOG_GRACE {
            g.claimed = true;
            let mut details = serde_json::Map::new();
            details.insert("timeout_in".into(), "host call (worker watchdog)".into());
            details.insert("worker_exiting".into(), true.into());
            let captured = g.captured.clone();
            let r = super::worker::result_for(
                Outcome::Timeout,
                captured.as_ref(),
                0,
                (now - deadline + WATCHDOG_GRACE).as_micros() as u64,
                details,
            );
            let (so, se) = snapshots(captured.as_ref());
            let msg = super::encode_result(&r, &so, &se);
            let mut out = replies;
            return match write_msg(&mut out, &msg) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("hybox wasm worker: writing the timeout reply: {e}");
                    125
                }
            };
        }
        g = shared
            .1
            .wait_timeout(g, Duration::from_millis(10))
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn snapshots(c: Option<&Captured>) -> (Vec<u8>, Vec<u8>) {
    c.map(|c| (c.stdout.snapshot().0, c.stderr.snapshot().0))
        .unwrap_or_default()
}

/// The guest thread: one request at a time until the pipe closes.
fn serve_loop(mut served: Served, mut requests: File, replies: &File, shared: &Shared) {
    let code = loop {
        let msg = match read_msg(&mut requests, u32::MAX as u64) {
            Ok(Some(m)) => m,
            Ok(None) => break 0,
            Err(e) => {
                eprintln!("hybox wasm worker: reading a request: {e}");
                break 125;
            }
        };
        let parsed = super::unframe(&msg).and_then(|(json, stdin)| {
            serde_json::from_slice::<CallRequest>(json)
                .map(|r| (r, stdin.to_vec()))
                .map_err(|e| format!("request: {e}"))
        });
        let (req, stdin) = match parsed {
            Ok(x) => x,
            Err(e) => {
                eprintln!("hybox wasm worker: bad request: {e}");
                break 125;
            }
        };
        let tmp = served.call_tmp();
        let (r, captured) = served.call(req.args, stdin, tmp.as_deref(), shared);
        // The call is over for the watchdog; if it already answered (blocked host call), stop here:
        // the worker is exiting.
        {
            let mut g = lock(shared);
            g.deadline = None;
            g.captured = None;
            if g.claimed {
                return;
            }
        }
        let (so, se) = snapshots(captured.as_ref());
        let msg = super::encode_result(&r, &so, &se);
        let mut out = replies;
        if let Err(e) = write_msg(&mut out, &msg) {
            eprintln!("hybox wasm worker: writing a reply: {e}");
            break 125;
        }
        // After the reply, off the caller's path: nothing a call wrote in /tmp survives it, and
        // the next call's fresh, empty /tmp is made ready (directory operations on the host's
        // filesystem cost more than the rest of a small call).
        if let Some(t) = tmp {
            served.remove_call_tmp(&t);
        }
        served.prepare_tmp();
    };
    let mut g = lock(shared);
    g.shutdown = Some(code);
    shared.1.notify_all();
}

impl Served {
    /// A fresh, empty `/tmp` directory for the next call, if the policy grants `/tmp`: the one
    /// [`Served::prepare_tmp`] created after the previous call, else a new path `call` creates.
    fn call_tmp(&mut self) -> Option<PathBuf> {
        if let Some(p) = self.prepared_tmp.take() {
            self.handed_out = Some(p.clone());
            return Some(p);
        }
        self.handed_out = None;
        self.calls += 1;
        let base = self.tmp_base.as_ref()?;
        // Unique across workers too (a restarted worker counts from 1 again).
        let dir = base.join(format!("call-{}-{}", std::process::id(), self.calls));
        Some(dir)
    }

    /// Creates the next call's `/tmp` directory ahead of the call (a new name, never used before).
    fn prepare_tmp(&mut self) {
        if self.prepared_tmp.is_some() {
            return;
        }
        let Some(base) = self.tmp_base.as_ref() else {
            return;
        };
        self.calls += 1;
        let name = format!("call-{}-{}", std::process::id(), self.calls);
        let made = match &self.tmp_base_dir {
            Some(fd) => nix::sys::stat::mkdirat(
                fd,
                name.as_str(),
                nix::sys::stat::Mode::from_bits_truncate(0o777),
            )
            .is_ok(),
            None => std::fs::create_dir(base.join(&name)).is_ok(),
        };
        if made {
            self.prepared_tmp = Some(base.join(name));
        }
    }

    /// Removes a call's `/tmp`: an empty one (the common case) with one `rmdir`, one the call wrote
    /// to with everything in it.
    fn remove_call_tmp(&self, dir: &Path) {
        if let (Some(fd), Some(name)) = (&self.tmp_base_dir, dir.file_name()) {
            if nix::unistd::unlinkat(fd, name, nix::unistd::UnlinkatFlags::RemoveDir).is_ok() {
                return;
            }
        }
        let _ = std::fs::remove_dir_all(dir);
    }

    fn call(
        &mut self,
        args: Vec<String>,
        stdin: Vec<u8>,
        tmp: Option<&Path>,
        shared: &Shared,
    ) -> (WorkerResult, Option<Captured>) {
        let t0 = Instant::now();
        let mut details = serde_json::Map::new();
        let (omax, emax) = self.job.capture.unwrap_or((0, 0));
        let captured = Captured {
            stdout: CappedPipe::new(omax as usize),
            stderr: CappedPipe::new(emax as usize),
        };
        let setup = |step: String, details| {
            (
                super::worker::result_for(Outcome::SetupError { step }, None, 0, 0, details),
                None,
            )
        };
        if let Some(t) = tmp {
            // The prepared directory exists and is empty (it was created after the previous call
            // and nothing has had it since); any other is created here.
            if let Err(e) = std::fs::create_dir(t).or_else(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists
                    && self.handed_out.as_deref() == Some(t)
                {
                    Ok(())
                } else {
                    Err(e)
                }
            }) {
                return setup(
                    format!("create /tmp for the call ({}): {e}", t.display()),
                    details,
                );
            }
        }
        self.job.args = args;
        self.job.tmp_dir = tmp.map(Path::to_path_buf);
        let mut builder = match wasi_builder(&self.job, stdin, Some(&captured)) {
            Ok(b) => b,
            Err(step) => return setup(step, details),
        };
        let limiter = worker::limiter(&self.job);
        let timeout = Duration::from_millis(self.job.timeout_ms);
        let fuel = self.fuel;
        let (outcome, instantiate_us, run_us, prepare_us, drop_us, left) = match &self.pre {
            Pre::Module(pre) => {
                let mut store = Store::new(
                    &self.engine,
                    ModuleState {
                        wasi: builder.build_p1(),
                        limiter,
                    },
                );
                store.limiter(|s| &mut s.limiter);
                if let Some(f) = fuel {
                    if let Err(e) = store.set_fuel(f) {
                        return setup(format!("store: {e:#}"), details);
                    }
                }
                begin(shared, &mut store, timeout, &captured);
                let prepare_us = t0.elapsed().as_micros() as u64;
                let t1 = Instant::now();
                let instance = pre.instantiate(&mut store);
                let instantiate_us = t1.elapsed().as_micros() as u64;
                let t2 = Instant::now();
                let result =
                    instance.and_then(|instance| match instance.get_func(&mut store, "_start") {
                        Some(f) => f.typed::<(), ()>(&store)?.call(&mut store, ()),
                        None => Err(wasmtime::Error::msg(
                            "no `_start` export: a warm function must be a WASI command",
                        )),
                    });
                let run_us = t2.elapsed().as_micros() as u64;
                let outcome = match result {
                    Ok(()) => Outcome::Exited { code: 0 },
                    Err(e) => classify(e, store.data().limiter.hit.clone(), fuel),
                };
                let left = store.get_fuel().ok();
                let t3 = Instant::now();
                drop(store);
                let drop_us = t3.elapsed().as_micros() as u64;
                (outcome, instantiate_us, run_us, prepare_us, drop_us, left)
            }
            Pre::Component(pre) => {
                let mut store = Store::new(
                    &self.engine,
                    ComponentState {
                        ctx: builder.build(),
                        table: ResourceTable::new(),
                        limiter,
                    },
                );
                store.limiter(|s| &mut s.limiter);
                if let Some(f) = fuel {
                    if let Err(e) = store.set_fuel(f) {
                        return setup(format!("store: {e:#}"), details);
                    }
                }
                begin(shared, &mut store, timeout, &captured);
                let prepare_us = t0.elapsed().as_micros() as u64;
                let t1 = Instant::now();
                let cmd = pre.instantiate(&mut store);
                let instantiate_us = t1.elapsed().as_micros() as u64;
                let t2 = Instant::now();
                let result = cmd.and_then(|cmd| cmd.wasi_cli_run().call_run(&mut store));
                let run_us = t2.elapsed().as_micros() as u64;
                let outcome = match result {
                    Ok(Ok(())) => Outcome::Exited { code: 0 },
                    // wasi:cli/run returning `err` is exit status 1 by definition.
                    Ok(Err(())) => Outcome::Exited { code: 1 },
                    Err(e) => classify(e, store.data().limiter.hit.clone(), fuel),
                };
                let left = store.get_fuel().ok();
                let t3 = Instant::now();
                drop(store);
                let drop_us = t3.elapsed().as_micros() as u64;
                (outcome, instantiate_us, run_us, prepare_us, drop_us, left)
            }
        };
        if let (Some(f), Some(left)) = (fuel, left) {
            details.insert("fuel_consumed".into(), f.saturating_sub(left).into());
        }
        details.insert("prepare_us".into(), prepare_us.into());
        details.insert("instantiate_us".into(), instantiate_us.into());
        details.insert("drop_us".into(), drop_us.into());
        let r =
            super::worker::result_for(outcome, Some(&captured), instantiate_us, run_us, details);
        (r, Some(captured))
    }
}

/// Registers the call with the watchdog and sets the store's epoch deadline under the same lock (so
/// a late increment for the previous call cannot reach this one).
fn begin<T>(shared: &Shared, store: &mut Store<T>, timeout: Duration, captured: &Captured) {
    let mut g = lock(shared);
    store.set_epoch_deadline(1);
    g.deadline = Some(Instant::now() + timeout);
    g.captured = Some(captured.clone());
    g.claimed = false;
    shared.1.notify_all();
}
