//! The worker process: `hybox __wasm-worker`, started by [`super::run`] and moved into the run's
//! envelope before it reads its job. Everything that touches guest bytes happens here: compile (or
//! load from the cache), link, instantiate, run; never in the supervisor.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::pipe::MemoryInputPipe;
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use super::artifact::{self, Header, Kind};
use super::{Job, WorkerResult, JOB_FD, RESULT_FD};
use crate::policy::{Access, Network, Policy};
use crate::report::Outcome;
use crate::workload::Format;

/// How long after the deadline the worker's watchdog gives up on the guest thread (a guest blocked in a
/// host call such as `poll_oneoff` is not reached by epoch interruption) and reports the timeout itself.
const WATCHDOG_GRACE: Duration = Duration::from_millis(200);

/// The wasmtime line, part of the cache key (also covered by the engine's compatibility hash).
pub const WASMTIME_VERSION: &str = "48.0.8";

/// Fuel per millisecond of `resources.cpu_time` when `wasm.fuel` is not set. One unit of fuel is
/// roughly one wasm operator; Cranelift code on this class of machine retires ~1e9 simple operators per
/// second, so 1e6 per ms makes a CPU-time budget of N ms stop a busy guest after roughly N ms of
/// guest work. A calibration, not a measurement of the guest's actual CPU time: the cgroup figures in
/// `usage` are authoritative.
pub const FUEL_PER_CPU_MS: u64 = 1_000_000;

/// Headroom kept between the cgroup memory limit and the wasm store's memory limit, for wasmtime
/// itself (compiled code, the tokio runtime of WASI, stacks). A guest over-allocating then hits the
/// store limit, which is attributable, before the cgroup OOM killer fires, which is not.
pub const MEMORY_HEADROOM: u64 = 32 << 20;

/// The wasm store's memory limit for a cgroup memory limit: `memory - min(32 MiB, memory / 2)`.
pub fn wasm_memory_limit(cgroup_memory: u64) -> u64 {
    cgroup_memory - MEMORY_HEADROOM.min(cgroup_memory / 2)
}

/// The fuel budget a policy asks for, if any.
pub fn fuel_budget(policy: &Policy) -> Option<u64> {
    policy.wasm.fuel.or_else(|| {
        policy
            .resources
            .cpu_time
            .map(|t| (t.as_std().as_millis() as u64).saturating_mul(FUEL_PER_CPU_MS))
    })
}

/// The engine configuration for a policy. Only the knobs below differ from wasmtime's defaults; the
/// proposals hybox does not need (GC, threads, exceptions, stack switching) are compiled out by cargo
/// features. `pooling` is for long-lived embedders (serve, benchmarks); one-shot runs allocate on demand.
pub fn engine_config(policy: &Policy, pooling: bool) -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true);
    c.max_wasm_stack(policy.wasm.max_stack.bytes() as usize);
    c.consume_fuel(fuel_budget(policy).is_some());
    c.wasm_component_model(true);
    if pooling {
        c.allocation_strategy(InstanceAllocationStrategy::pooling());
    } else {
        c.allocation_strategy(InstanceAllocationStrategy::OnDemand);
        // A one-shot run instantiates its module once: a copy-on-write image of its memory (a
        // memfd written with the data segments, then mapped) only pays off across instances. The
        // data segments are copied into the one instance's memory instead.
        c.memory_init_cow(false);
    }
    c
}

/// Feeds a `Hash` into sha256 (stable, unlike `DefaultHasher`'s promise).
struct ShaHasher(sha2::Sha256);
impl std::hash::Hasher for ShaHasher {
    fn write(&mut self, bytes: &[u8]) {
        sha2::Digest::update(&mut self.0, bytes);
    }
    fn finish(&self) -> u64 {
        0
    }
}

/// Hex fingerprint of everything that makes compiled code valid for an engine: the wasmtime version
/// and its own compatibility hash (target, codegen flags, enabled features such as fuel and epochs).
pub fn engine_fingerprint(engine: &Engine) -> String {
    use std::hash::Hash;
    let mut h = ShaHasher(<sha2::Sha256 as sha2::Digest>::new());
    sha2::Digest::update(
        &mut h.0,
        format!("hybox-cache-v1 wasmtime {WASMTIME_VERSION}\0").as_bytes(),
    );
    engine.precompile_compatibility_hash().hash(&mut h);
    hex::encode(sha2::Digest::finalize(h.0))
}

/// A compiled guest.
pub enum Loaded {
    Module(Module),
    Component(Component),
}

/// Compiles guest bytes (binary or text) of the given kind.
pub fn compile(engine: &Engine, kind: Kind, bytes: &[u8]) -> wasmtime::Result<Loaded> {
    Ok(match kind {
        Kind::Module => Loaded::Module(Module::new(engine, bytes)?),
        Kind::Component => Loaded::Component(Component::new(engine, bytes)?),
    })
}

fn serialize(l: &Loaded) -> wasmtime::Result<Vec<u8>> {
    match l {
        Loaded::Module(m) => m.serialize(),
        Loaded::Component(c) => c.serialize(),
    }
}

/// Deserialises a payload whose MAC was verified with this host's key.
fn deserialize_verified(engine: &Engine, kind: Kind, payload: &[u8]) -> wasmtime::Result<Loaded> {
    Ok(match kind {
        // SAFETY: `payload` comes from an artifact whose HMAC verified with this host's private key
        // (artifact::verify), so hybox itself wrote it with `serialize` for this engine configuration.
        Kind::Module => Loaded::Module(unsafe { Module::deserialize(engine, payload) }?),
        // SAFETY: as above.
        Kind::Component => Loaded::Component(unsafe { Component::deserialize(engine, payload) }?),
    })
}

/// The kind of guest a detected format holds.
pub fn kind_of(format: &Format) -> Option<Kind> {
    match format {
        Format::WasmModule | Format::WasmText { component: false } => Some(Kind::Module),
        Format::WasmComponent | Format::WasmText { component: true } => Some(Kind::Component),
        _ => None,
    }
}

/// Tracks which store limit refused a growth, so the outcome can name it.
pub struct Limiter {
    pub memory: usize,
    pub table_elements: usize,
    pub instances: usize,
    pub hit: Option<Outcome>,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory {
            let detail =
                format!("wasm memory limit: the guest asked for {desired} bytes of linear memory, the limit is {}", self.memory);
            self.hit = Some(Outcome::Oom {
                detail: detail.clone(),
            });
            // An error (not `Ok(false)`) traps the guest at once: a Rust/C guest would otherwise turn
            // the failed grow into an unattributable `unreachable`.
            return Err(wasmtime::Error::msg(detail));
        }
        Ok(true)
    }
    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements {
            let detail = format!(
                "wasm table limit: the guest asked for {desired} table elements, the limit is {}",
                self.table_elements
            );
            self.hit = Some(Outcome::Oom {
                detail: detail.clone(),
            });
            return Err(wasmtime::Error::msg(detail));
        }
        Ok(true)
    }
    fn instances(&self) -> usize {
        self.instances
    }
    fn tables(&self) -> usize {
        self.instances.saturating_mul(4)
    }
    fn memories(&self) -> usize {
        self.instances
    }
}

/// A captured stdout/stderr: keeps up to `cap` bytes, counts every byte, and never fails the guest's
/// write (the guest keeps running; the report says the output was truncated).
#[derive(Clone)]
pub struct CappedPipe {
    cap: usize,
    inner: Arc<Mutex<(Vec<u8>, u64)>>,
}

impl CappedPipe {
    pub fn new(cap: usize) -> CappedPipe {
        CappedPipe {
            cap,
            inner: Arc::new(Mutex::new((Vec::new(), 0))),
        }
    }
    fn push(&self, b: &[u8]) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.1 += b.len() as u64;
        let room = self.cap.saturating_sub(g.0.len());
        g.0.extend_from_slice(&b[..b.len().min(room)]);
    }
    /// How many bytes are kept at most.
    pub fn cap(&self) -> usize {
        self.cap
    }
    /// The kept bytes and the total count.
    pub fn snapshot(&self) -> (Vec<u8>, u64) {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl IsTerminal for CappedPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for CappedPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for CappedPipe {
    async fn ready(&mut self) {}
}

#[wasmtime_wasi::async_trait]
impl OutputStream for CappedPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for CappedPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Store data for a core module (WASI p1).
pub struct ModuleState {
    pub wasi: wasmtime_wasi::p1::WasiP1Ctx,
    pub limiter: Limiter,
}

/// Store data for a component (WASI p2).
pub struct ComponentState {
    pub ctx: WasiCtx,
    pub table: ResourceTable,
    pub limiter: Limiter,
}

impl WasiView for ComponentState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

/// Captured stdio of one run.
#[derive(Clone)]
pub struct Captured {
    pub stdout: CappedPipe,
    pub stderr: CappedPipe,
}

/// Builds the WASI context from the job: only what the policy grants.
pub fn wasi_builder(
    job: &Job,
    stdin: Vec<u8>,
    captured: Option<&Captured>,
) -> Result<WasiCtxBuilder, String> {
    let mut b = WasiCtxBuilder::new();
    // Blocking host calls go through tokio (not on-thread) so the watchdog stays responsive.
    b.allow_blocking_current_thread(false);
    let argv0 = job
        .artifact
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "guest".into());
    b.arg(argv0);
    for a in &job.args {
        b.arg(a);
    }
    for (k, v) in &job.env {
        b.env(k, v);
    }
    for m in &job.policy.filesystem.mounts {
        if !m.host.is_dir() {
            return Err(format!(
                "preopen {}: wasm grants must be directories ({} is not one)",
                m.guest.display(),
                m.host.display()
            ));
        }
        let perms = match m.mode {
            Access::Ro => FsPerms::ReadOnly,
            Access::Rw => FsPerms::ReadWrite,
        };
        b.preopened_dir(&m.host, m.guest.to_string_lossy(), perms)
            .map_err(|e| {
                format!(
                    "preopen {} -> {}: {e:#}",
                    m.host.display(),
                    m.guest.display()
                )
            })?;
    }
    if let Some(t) = &job.tmp_dir {
        b.preopened_dir(t, "/tmp", FsPerms::ReadWrite)
            .map_err(|e| format!("preopen /tmp ({}): {e:#}", t.display()))?;
    }
    match captured {
        Some(c) => {
            b.stdin(MemoryInputPipe::new(stdin));
            b.stdout(c.stdout.clone());
            b.stderr(c.stderr.clone());
        }
        None => {
            b.inherit_stdio();
        }
    }
    // Sockets exist only for components (p1 has no connect); deny all unless loopback is granted.
    b.allow_ip_name_lookup(false);
    if job.policy.network == Network::Loopback {
        b.allow_tcp(true).allow_udp(true);
        b.socket_addr_check(|addr, _| Box::pin(async move { addr.ip().is_loopback() }));
    } else {
        b.allow_tcp(false).allow_udp(false);
        b.socket_addr_check(|_, _| Box::pin(async { false }));
    }
    Ok(b)
}

pub(crate) fn limiter(job: &Job) -> Limiter {
    let p = &job.policy;
    Limiter {
        memory: usize::try_from(wasm_memory_limit(p.resources.memory.bytes()))
            .unwrap_or(usize::MAX),
        table_elements: usize::try_from(p.wasm.max_table_elements).unwrap_or(usize::MAX),
        instances: p.wasm.max_instances as usize,
        hit: None,
    }
}

/// What the guest thread reports back to the worker's main thread.
struct GuestDone {
    outcome: Outcome,
    startup_us: u64,
    run_us: u64,
    details: serde_json::Map<String, serde_json::Value>,
}

/// Entry point of `hybox __wasm-worker`: reads the job from fd 3, runs it, writes the result to fd 4.
/// Returns the worker's exit code (0 when a result was written, whatever the guest did).
pub fn worker_main() -> i32 {
    // Started by `backend::process::spawn` with every signal blocked.
    crate::backend::process::unblock_all_signals();
    // `hybox __wasm-worker --serve`: the long-lived worker of a warm function (see `super::warm`).
    if std::env::args_os()
        .nth(2)
        .is_some_and(|a| a == super::warm::SERVE_ARG)
    {
        return super::warm::serve_main();
    }
    // `hybox __wasm-worker --http`: the worker of a wasi:http function (see `super::http`).
    if std::env::args_os()
        .nth(2)
        .is_some_and(|a| a == super::http::HTTP_ARG)
    {
        return super::http_worker::serve_main();
    }
    run_job()
}

/// What a forked worker prepares while the supervisor builds the envelope, before it is in it: only
/// hybox's own work on hybox's own bytes. The engine, and the guest's module when the compile cache
/// holds it (an artifact hybox compiled earlier, verified with this host's key before it is
/// deserialized; the guest's code is not run, nor its memory created). Compiling guest bytes is
/// never done here: on a cache miss the module is compiled after the job arrives, in the envelope.
/// What this costs in memory (the engine, the module's code) is charged to hybox's own cgroup, not
/// the run's.
pub(crate) struct Prepared {
    engine: Engine,
    /// The module and the load's details, on a cache hit.
    loaded: Option<(Loaded, serde_json::Map<String, serde_json::Value>)>,
}

pub(crate) fn prepare(job: &Job) -> Option<Prepared> {
    let engine = Engine::new(&engine_config(&job.policy, false)).ok()?;
    let mut details = serde_json::Map::new();
    let loaded = load_cached(&engine, job, &mut details).map(|l| (l, details));
    Some(Prepared { engine, loaded })
}

/// The forked one-shot worker ([`crate::host::WorkerStart::fork`]): [`prepare`] from the copy of the job
/// it holds, then as [`run_job`]. The job it then reads (sent once it is in the envelope) is the same
/// job; it is what the run uses.
pub(crate) fn run_forked(job: &Job) -> i32 {
    let t0 = Instant::now();
    let prepared = prepare(job);
    run_job_prepared(t0, prepared)
}

/// The one-shot worker: reads its job from [`JOB_FD`], runs it, writes the result to [`RESULT_FD`];
/// returns the process's exit code. In `hybox __wasm-worker` after the exec.
pub(crate) fn run_job() -> i32 {
    run_job_prepared(Instant::now(), None)
}

fn run_job_prepared(t0: Instant, prepared: Option<Prepared>) -> i32 {
    let (mut job_in, mut result_out) =
        // SAFETY: the supervisor placed the job pipe's read end at JOB_FD and the result pipe's write end
        // at RESULT_FD before exec (see `super::spawn_worker`); nothing else in this process owns them.
        unsafe { (File::from_raw_fd(JOB_FD), File::from_raw_fd(RESULT_FD)) };
    let mut buf = Vec::new();
    if let Err(e) = job_in.read_to_end(&mut buf) {
        eprintln!("hybox wasm worker: reading the job: {e}");
        return 125;
    }
    drop(job_in);
    let (job, stdin) = match super::decode_job(&buf) {
        Ok(j) => j,
        Err(e) => {
            eprintln!("hybox wasm worker: bad job: {e}");
            return 125;
        }
    };
    // Where the worker's startup goes, for the report (`worker_phases`, microseconds since t0).
    let mut phases = serde_json::Map::new();
    let mark = |phases: &mut serde_json::Map<String, serde_json::Value>, name: &str| {
        phases.insert(name.into(), (t0.elapsed().as_micros() as u64).into());
    };
    mark(&mut phases, "job_read");
    // wasm.os_sandbox: Landlock and seccomp before any guest byte is read (see `super::hardened`).
    let os_sandbox = match job
        .policy
        .wasm
        .os_sandbox
        .then(|| super::hardened::confine(&job))
    {
        Some(Err(step)) => return setup_failed(&mut result_out, None, step),
        Some(Ok(detail)) => Some(detail),
        None => None,
    };
    mark(&mut phases, "confined");
    let deadline = t0 + Duration::from_millis(job.timeout_ms);
    let captured = job.capture.map(|(o, e)| Captured {
        stdout: CappedPipe::new(o as usize),
        stderr: CappedPipe::new(e as usize),
    });
    let (engine, preloaded) = match prepared {
        Some(p) => {
            phases.insert("prepared_before_job".into(), true.into());
            (p.engine, p.loaded)
        }
        None => match Engine::new(&engine_config(&job.policy, false)) {
            Ok(e) => (e, None),
            Err(e) => {
                let step = format!("wasm engine: {e:#}");
                return setup_failed(&mut result_out, captured.as_ref(), step);
            }
        },
    };
    mark(&mut phases, "engine_ready");
    // The epoch ticker: silent until the deadline, then an increment every 10 ms, so running wasm
    // code traps at the deadline (store epoch deadline 1) even if its store was created after the
    // first increment (a slow compile). No ticking, so no cost, before the deadline.
    {
        let engine = engine.clone();
        std::thread::spawn(move || {
            std::thread::sleep(deadline.saturating_duration_since(Instant::now()));
            loop {
                engine.increment_epoch();
                std::thread::sleep(Duration::from_millis(10));
            }
        });
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let guest_job = job.clone();
    let guest_captured = captured.clone();
    // The guest runs on its own thread with a native stack comfortably above max_wasm_stack, so
    // wasmtime's stack limit (not the guard page) is what stops deep recursion.
    let stack = (job.policy.wasm.max_stack.bytes() as usize).saturating_add(8 << 20);
    let spawned = std::thread::Builder::new()
        .name("guest".into())
        .stack_size(stack)
        .spawn(move || {
            let done = run_guest(
                &engine,
                &guest_job,
                stdin,
                guest_captured.as_ref(),
                t0,
                preloaded,
            );
            let _ = tx.send(done);
        });
    if let Err(e) = spawned {
        let step = format!("spawn guest thread: {e}");
        return setup_failed(&mut result_out, captured.as_ref(), step);
    }
    let wait = deadline.saturating_duration_since(Instant::now()) + WATCHDOG_GRACE;
    let done = match rx.recv_timeout(wait) {
        Ok(d) => d,
        Err(_) => {
            // The guest is blocked in a host call (sleep, poll) that epochs cannot interrupt. Report the
            // timeout; returning ends this process and with it the blocked thread.
            let mut details = serde_json::Map::new();
            details.insert("timeout_in".into(), "host call (worker watchdog)".into());
            GuestDone {
                outcome: Outcome::Timeout,
                startup_us: 0,
                run_us: t0.elapsed().as_micros() as u64,
                details,
            }
        }
    };
    let mut details = done.details;
    if let Some(serde_json::Value::Object(guest)) = details.remove("worker_phases") {
        phases.extend(guest);
    }
    details.insert("worker_phases".into(), phases.into());
    if let Some(d) = os_sandbox {
        details.insert("os_sandbox".into(), d);
    }
    let r = result_for(
        done.outcome,
        captured.as_ref(),
        done.startup_us,
        done.run_us,
        details,
    );
    write_result(&mut result_out, &r, captured.as_ref())
}

/// The worker's result: outcome, timings, and the captured streams' sizes against their caps.
pub(crate) fn result_for(
    outcome: Outcome,
    captured: Option<&Captured>,
    startup_us: u64,
    run_us: u64,
    details: serde_json::Map<String, serde_json::Value>,
) -> WorkerResult {
    let (o, e) = captured
        .map(|c| (c.stdout.snapshot().1, c.stderr.snapshot().1))
        .unwrap_or((0, 0));
    let (omax, emax) = captured
        .map(|c| (c.stdout.cap() as u64, c.stderr.cap() as u64))
        .unwrap_or((u64::MAX, u64::MAX));
    WorkerResult {
        outcome,
        startup_us,
        run_us,
        stdout_bytes: o,
        stderr_bytes: e,
        stdout_truncated: o > omax,
        stderr_truncated: e > emax,
        details,
    }
}

/// Reports a `setup_error` naming `step` (nothing of the guest ran).
fn setup_failed(out: &mut File, captured: Option<&Captured>, step: String) -> i32 {
    let r = result_for(Outcome::SetupError { step }, None, 0, 0, Default::default());
    write_result(out, &r, captured)
}

fn write_result(out: &mut File, r: &WorkerResult, captured: Option<&Captured>) -> i32 {
    let (so, se) = captured
        .map(|c| (c.stdout.snapshot().0, c.stderr.snapshot().0))
        .unwrap_or_default();
    let bytes = super::encode_result(r, &so, &se);
    match out.write_all(&bytes) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hybox wasm worker: writing the result: {e}");
            125
        }
    }
}

/// Loads the guest: from a hybox artifact, from the cache, or by compiling (and caching) it.
pub(crate) fn load(
    engine: &Engine,
    job: &Job,
    details: &mut serde_json::Map<String, serde_json::Value>,
) -> Result<(Loaded, Kind), Outcome> {
    load_or_compile(engine, job, details, true)
        .map(|l| l.expect("loads or compiles when compiling is allowed"))
}

/// The guest when it can be had without compiling: a precompiled hybox artifact or a compile-cache
/// hit, both verified with this host's key. `None` on a miss, a rejected entry or any error (the
/// full [`load`] then does it again, and reports).
fn load_cached(
    engine: &Engine,
    job: &Job,
    details: &mut serde_json::Map<String, serde_json::Value>,
) -> Option<Loaded> {
    match load_or_compile(engine, job, details, false) {
        Ok(Some((l, _))) => Some(l),
        _ => None,
    }
}

fn load_or_compile(
    engine: &Engine,
    job: &Job,
    details: &mut serde_json::Map<String, serde_json::Value>,
    compile_allowed: bool,
) -> Result<Option<(Loaded, Kind)>, Outcome> {
    let setup = |step: String| Outcome::SetupError { step };
    let t_load = Instant::now();
    let mut load_phases = serde_json::Map::new();
    let mut mark = |name: &str| {
        load_phases.insert(name.into(), (t_load.elapsed().as_micros() as u64).into());
    };
    let bytes = std::fs::read(&job.artifact)
        .map_err(|e| setup(format!("read {}: {e}", job.artifact.display())))?;
    mark("source_read");
    let fp = engine_fingerprint(engine);
    mark("fingerprint");
    let dir = job.cache_dir.as_deref();
    if job.format == Format::HyboxArtifact {
        let dir = dir.ok_or_else(|| {
            setup("load artifact: no cache directory holds this host's key".into())
        })?;
        let key =
            artifact::load_or_create_key(dir).map_err(|e| setup(format!("load artifact: {e}")))?;
        let (header, payload) = artifact::verify(&key, &bytes, &fp).map_err(|why| {
            setup(format!(
                "load artifact {}: refused to load precompiled code: {why}",
                job.artifact.display()
            ))
        })?;
        details.insert("cache_hit".into(), false.into());
        details.insert("precompiled".into(), true.into());
        let l = deserialize_verified(engine, header.kind, payload)
            .map_err(|e| setup(format!("load artifact: {e:#}")))?;
        return Ok(Some((l, header.kind)));
    }
    let kind =
        kind_of(&job.format).ok_or_else(|| setup(format!("not a wasm guest: {:?}", job.format)))?;
    let src = artifact::sha256_hex(&bytes);
    mark("source_hashed");
    // The cache is an optimisation: if it is unusable the guest is compiled anyway, and the report
    // says why the cache was skipped.
    let key = match dir.map(artifact::load_or_create_key) {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            details.insert("cache_error".into(), e.to_string().into());
            None
        }
        None => None,
    };
    if let (Some(dir), Some(key)) = (dir, key.as_ref()) {
        let entry = artifact::entry_path(dir, &src, &fp);
        details.insert("cache_entry".into(), entry.display().to_string().into());
        mark("key_read");
        if let Ok(cached) = artifact::MappedFile::open(&entry) {
            mark("entry_read");
            let verified = artifact::verify(key, &cached, &fp);
            mark("entry_verified");
            match verified {
                Ok((h, payload)) if h.source_sha256 == src && h.kind == kind => {
                    match deserialize_verified(engine, kind, payload) {
                        Ok(l) => {
                            mark("deserialized");
                            details.insert("load_phases".into(), load_phases.into());
                            details.insert("cache_hit".into(), true.into());
                            return Ok(Some((l, kind)));
                        }
                        Err(e) => {
                            details.insert(
                                "cache_rejected".into(),
                                format!("deserialize: {e:#}").into(),
                            );
                        }
                    }
                }
                Ok(_) => {
                    details.insert(
                        "cache_rejected".into(),
                        "entry is for another source or kind".into(),
                    );
                }
                Err(why) => {
                    details.insert("cache_rejected".into(), why.into());
                }
            }
            if !compile_allowed {
                return Ok(None);
            }
            // Never leave a rejected entry behind: it is replaced below.
            let _ = std::fs::remove_file(&entry);
        }
    }
    if !compile_allowed {
        return Ok(None);
    }
    details.insert("cache_hit".into(), false.into());
    let t = Instant::now();
    let loaded = compile(engine, kind, &bytes).map_err(|e| setup(format!("compile: {e:#}")))?;
    details.insert("compile_us".into(), (t.elapsed().as_micros() as u64).into());
    if let (Some(dir), Some(key)) = (dir, key.as_ref()) {
        let header = Header {
            kind,
            engine: fp.clone(),
            source_sha256: src.clone(),
            hybox: env!("CARGO_PKG_VERSION").into(),
        };
        match serialize(&loaded) {
            Ok(payload) => {
                if let Err(e) = artifact::write_atomic(
                    &artifact::entry_path(dir, &src, &fp),
                    &artifact::encode(key, &header, &payload),
                ) {
                    details.insert("cache_error".into(), e.to_string().into());
                }
            }
            Err(e) => {
                details.insert("cache_error".into(), format!("serialize: {e:#}").into());
            }
        }
    }
    Ok(Some((loaded, kind)))
}

fn run_guest(
    engine: &Engine,
    job: &Job,
    stdin: Vec<u8>,
    captured: Option<&Captured>,
    t0: Instant,
    preloaded: Option<(Loaded, serde_json::Map<String, serde_json::Value>)>,
) -> GuestDone {
    let (preloaded, mut details) = match preloaded {
        Some((l, d)) => (Some(l), d),
        None => (None, serde_json::Map::new()),
    };
    let fail = |outcome: Outcome, details: serde_json::Map<String, serde_json::Value>| GuestDone {
        outcome,
        startup_us: t0.elapsed().as_micros() as u64,
        run_us: 0,
        details,
    };
    let loaded = match preloaded {
        Some(l) => l,
        None => match load(engine, job, &mut details) {
            Ok((l, _)) => l,
            Err(o) => return fail(o, details),
        },
    };
    details.insert(
        "worker_phases".into(),
        serde_json::json!({"guest_loaded": t0.elapsed().as_micros() as u64}),
    );
    let builder = match wasi_builder(job, stdin, captured) {
        Ok(b) => b,
        Err(step) => return fail(Outcome::SetupError { step }, details),
    };
    let fuel = fuel_budget(&job.policy);
    details.insert(
        "wasm_memory_limit".into(),
        (limiter(job).memory as u64).into(),
    );
    match loaded {
        Loaded::Module(m) => run_module(engine, job, &m, builder, fuel, t0, details),
        Loaded::Component(c) => run_component(engine, job, &c, builder, fuel, t0, details),
    }
}

fn prepare_store<T>(store: &mut Store<T>, fuel: Option<u64>) -> wasmtime::Result<()> {
    store.set_epoch_deadline(1);
    if let Some(f) = fuel {
        store.set_fuel(f)?;
    }
    Ok(())
}

fn run_module(
    engine: &Engine,
    job: &Job,
    module: &Module,
    mut builder: WasiCtxBuilder,
    fuel: Option<u64>,
    t0: Instant,
    mut details: serde_json::Map<String, serde_json::Value>,
) -> GuestDone {
    let mut linker: Linker<ModuleState> = Linker::new(engine);
    let setup = |step: String, details| GuestDone {
        outcome: Outcome::SetupError { step },
        startup_us: t0.elapsed().as_micros() as u64,
        run_us: 0,
        details,
    };
    if let Err(e) =
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut ModuleState| &mut s.wasi)
    {
        return setup(format!("link WASI p1: {e:#}"), details);
    }
    let pre = match linker.instantiate_pre(module) {
        Ok(p) => p,
        Err(e) => return setup(format!("link: {e:#}"), details),
    };
    let mut store = Store::new(
        engine,
        ModuleState {
            wasi: builder.build_p1(),
            limiter: limiter(job),
        },
    );
    store.limiter(|s| &mut s.limiter);
    if let Err(e) = prepare_store(&mut store, fuel) {
        return setup(format!("store: {e:#}"), details);
    }
    let start = Instant::now();
    let startup_us = t0.elapsed().as_micros() as u64;
    let result = (|| -> wasmtime::Result<&'static str> {
        let instance = pre.instantiate(&mut store)?;
        if let Some(f) = instance.get_func(&mut store, "_start") {
            f.typed::<(), ()>(&store)?.call(&mut store, ())?;
            return Ok("command");
        }
        // A reactor has no `_start`: hybox runs its initialiser (`_initialize`) and reports exit 0,
        // which proves the module instantiates and initialises under the policy. Calling its other
        // exports is `hybox serve`'s business.
        if let Some(f) = instance.get_func(&mut store, "_initialize") {
            f.typed::<(), ()>(&store)?.call(&mut store, ())?;
            return Ok("reactor");
        }
        Err(wasmtime::Error::msg(
            "no `_start` or `_initialize` export: not a WASI command or reactor",
        ))
    })();
    let run_us = start.elapsed().as_micros() as u64;
    let outcome = match result {
        Ok(kind) => {
            details.insert("instance_kind".into(), kind.into());
            Outcome::Exited { code: 0 }
        }
        Err(e) => classify(e, store.data().limiter.hit.clone(), fuel),
    };
    if let (Some(f), Ok(left)) = (fuel, store.get_fuel()) {
        details.insert("fuel_consumed".into(), f.saturating_sub(left).into());
    }
    GuestDone {
        outcome,
        startup_us,
        run_us,
        details,
    }
}

fn run_component(
    engine: &Engine,
    job: &Job,
    component: &Component,
    mut builder: WasiCtxBuilder,
    fuel: Option<u64>,
    t0: Instant,
    mut details: serde_json::Map<String, serde_json::Value>,
) -> GuestDone {
    use wasmtime_wasi::p2::bindings::sync::CommandPre;
    let setup = |step: String, details| GuestDone {
        outcome: Outcome::SetupError { step },
        startup_us: t0.elapsed().as_micros() as u64,
        run_us: 0,
        details,
    };
    let mut linker: wasmtime::component::Linker<ComponentState> =
        wasmtime::component::Linker::new(engine);
    if let Err(e) = wasmtime_wasi::p2::add_to_linker_sync(&mut linker) {
        return setup(format!("link WASI p2: {e:#}"), details);
    }
    // A component importing anything the linker does not provide (an interface the policy does not
    // grant, or a non-WASI host API) fails here, before any of its code runs; wasmtime's message names
    // the import.
    let pre = match linker.instantiate_pre(component) {
        Ok(p) => p,
        Err(e) => return setup(format!("link: {e:#}"), details),
    };
    let pre = match CommandPre::new(pre) {
        Ok(p) => p,
        Err(e) => {
            return setup(
                format!("link: not a wasi:cli/command component: {e:#}"),
                details,
            )
        }
    };
    let mut store = Store::new(
        engine,
        ComponentState {
            ctx: builder.build(),
            table: ResourceTable::new(),
            limiter: limiter(job),
        },
    );
    store.limiter(|s| &mut s.limiter);
    if let Err(e) = prepare_store(&mut store, fuel) {
        return setup(format!("store: {e:#}"), details);
    }
    details.insert("instance_kind".into(), "component".into());
    let start = Instant::now();
    let startup_us = t0.elapsed().as_micros() as u64;
    let result = pre
        .instantiate(&mut store)
        .and_then(|cmd| cmd.wasi_cli_run().call_run(&mut store));
    let run_us = start.elapsed().as_micros() as u64;
    let outcome = match result {
        Ok(Ok(())) => Outcome::Exited { code: 0 },
        // wasi:cli/run returning `err` is exit status 1 by definition.
        Ok(Err(())) => Outcome::Exited { code: 1 },
        Err(e) => classify(e, store.data().limiter.hit.clone(), fuel),
    };
    if let (Some(f), Ok(left)) = (fuel, store.get_fuel()) {
        details.insert("fuel_consumed".into(), f.saturating_sub(left).into());
    }
    GuestDone {
        outcome,
        startup_us,
        run_us,
        details,
    }
}

/// Maps a wasmtime error to the shared outcome vocabulary.
pub fn classify(e: wasmtime::Error, limit_hit: Option<Outcome>, fuel: Option<u64>) -> Outcome {
    if let Some(exit) = e.downcast_ref::<I32Exit>() {
        return Outcome::Exited { code: exit.0 };
    }
    if let Some(hit) = limit_hit {
        return hit;
    }
    match e.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Outcome::Timeout,
        Some(Trap::OutOfFuel) => Outcome::CpuBudget {
            detail: format!("wasm fuel exhausted ({} units)", fuel.unwrap_or_default()),
        },
        Some(t) => Outcome::Trap {
            message: format!("wasm trap: {t}"),
        },
        // A host function failed (e.g. a WASI call returned a fatal error): report its chain.
        None => Outcome::Trap {
            message: format!("{e:#}"),
        },
    }
}

/// Compiles `input` into a hybox artifact at `output`, signed with this host's key (for a future
/// `hybox compile`). Compiles in this process: call it only on bytes the caller chose to compile.
pub fn precompile_in_process(
    input: &Path,
    output: &Path,
    policy: &Policy,
    cache_dir: &Path,
) -> Result<(), artifact::ArtifactError> {
    let err = |why: String| artifact::ArtifactError::Compile {
        path: input.display().to_string(),
        why,
    };
    let bytes = std::fs::read(input).map_err(|e| err(format!("read: {e}")))?;
    let format = crate::workload::sniff(&bytes).map_err(err)?;
    let kind = kind_of(&format)
        .ok_or_else(|| err(format!("not a wasm module or component ({format})")))?;
    let engine =
        Engine::new(&engine_config(policy, false)).map_err(|e| err(format!("engine: {e:#}")))?;
    let loaded = compile(&engine, kind, &bytes).map_err(|e| err(format!("compile: {e:#}")))?;
    let payload = serialize(&loaded).map_err(|e| err(format!("serialize: {e:#}")))?;
    let key = artifact::load_or_create_key(cache_dir)?;
    let header = Header {
        kind,
        engine: engine_fingerprint(&engine),
        source_sha256: artifact::sha256_hex(&bytes),
        hybox: env!("CARGO_PKG_VERSION").into(),
    };
    artifact::write_atomic(output, &artifact::encode(&key, &header, &payload))
}
