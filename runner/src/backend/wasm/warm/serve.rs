//! The worker's side of a warm function: `hybox __wasm-worker --serve`. It reads its load job,
//! builds one engine with a pooling allocator sized from the policy, loads (cache or compile) and
//! links the guest once, answers the load, then serves calls one at a time on a guest thread while
//! its main thread is the watchdog of each call's deadline.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::ResourceTable;
use wasmtime::{
    Engine, InstanceAllocationStrategy, InstancePre, Linker, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::p2::bindings::sync::CommandPre;

use super::{POOL_SLOTS, WATCHDOG_GRACE};
use crate::backend::wasm::protocol::{self, LoadReply};
use crate::backend::wasm::worker::{
    self, classify, fuel_budget, wasi_builder, wasm_memory_limit, CappedPipe, Captured,
    ComponentState, Loaded, ModuleState,
};
use crate::backend::wasm::{Job, WorkerResult, JOB_FD, RESULT_FD};
use crate::report::Outcome;

/// Bytes of each pooled table kept resident between calls (see `load_served`). Linear memory is kept
/// resident only with PAGEMAP_SCAN ([`MEMORY_KEEP_RESIDENT`]): without it wasmtime memsets the whole
/// kept range per call, and a Rust or C guest's stack and data start around 1 MiB, so its first
/// pages are rarely the touched ones; keeping more resident then costs more memset than it saves.
const TABLE_KEEP_RESIDENT: usize = 64 << 10;

/// Bytes of each slot's linear memory kept mapped between calls when PAGEMAP_SCAN is available:
/// the pages a call touched (up to this much) stay resident, reset to the module's initial image.
/// The worker's memory (counted in its envelope) grows by at most this per slot used. Measured on
/// hello (`runner/benches/wasm.rs`, warm/*): instantiate + run + drop ~33 us -> 11-14 us.
const MEMORY_KEEP_RESIDENT: usize = 4 << 20;

/// Why the worker could not load its function (sent to the supervisor as the load answer's error).
#[derive(Debug, thiserror::Error)]
enum LoadError {
    #[error("wasm engine: {0:#}")]
    Engine(wasmtime::Error),
    /// Reading, verifying or compiling the guest failed (the setup error a one-shot run reports).
    #[error("{0}")]
    Load(Outcome),
    /// The WASI imports could not be added to the linker (`p1` or `p2`).
    #[error("link WASI {0}: {1:#}")]
    LinkWasi(&'static str, wasmtime::Error),
    /// The guest imports what the linker does not provide.
    #[error("link: {0:#}")]
    Link(wasmtime::Error),
    /// A component that does not export `wasi:cli/run`.
    #[error("link: not a wasi:cli/command component: {0:#}")]
    NotACommand(wasmtime::Error),
}

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
    details: &mut crate::report::details::WasmDetails,
) -> Result<Served, LoadError> {
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
    details.pagemap_scan = Some(pagemap_scan);
    details.memory_keep_resident_bytes = Some(if pagemap_scan {
        MEMORY_KEEP_RESIDENT as u64
    } else {
        0
    });
    let mut config = worker::engine_config(policy, false);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    let engine = Engine::new(&config).map_err(LoadError::Engine)?;
    let t = Instant::now();
    let (loaded, _) = worker::load(&engine, &job, details).map_err(LoadError::Load)?;
    details.load_us = Some(t.elapsed().as_micros() as u64);
    details.wasm_memory_limit = Some(memory);
    details.pool_slots = Some(POOL_SLOTS.into());
    let pre = match loaded {
        Loaded::Module(m) => {
            let mut linker: Linker<ModuleState> = Linker::new(&engine);
            wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut ModuleState| &mut s.wasi)
                .map_err(|e| LoadError::LinkWasi("p1", e))?;
            Pre::Module(linker.instantiate_pre(&m).map_err(LoadError::Link)?)
        }
        Loaded::Component(c) => {
            let mut linker: wasmtime::component::Linker<ComponentState> =
                wasmtime::component::Linker::new(&engine);
            wasmtime_wasi::p2::add_to_linker_sync(&mut linker)
                .map_err(|e| LoadError::LinkWasi("p2", e))?;
            let pre = linker.instantiate_pre(&c).map_err(LoadError::Link)?;
            Pre::Component(CommandPre::new(pre).map_err(LoadError::NotACommand)?)
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
    let job = match protocol::read_frame(&mut requests, u32::MAX as u64) {
        Ok(Some(f)) => match f.job() {
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
    let mut details = crate::report::details::WasmDetails::default();
    let loaded = load_served(job, &mut details);
    let (served, error) = match loaded {
        Ok(s) => (Some(s), None),
        Err(e) => (None, Some(e.to_string())),
    };
    let reply = LoadReply { error, details };
    if let Err(e) = protocol::write_frame(&mut replies, &reply, &[]) {
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
            let details = crate::report::details::WasmDetails {
                timeout_in: Some("host call (worker watchdog)".into()),
                worker_exiting: Some(true),
                ..Default::default()
            };
            let captured = g.captured.clone();
            let r = worker::result_for(
                Outcome::Timeout,
                captured.as_ref(),
                0,
                (now - deadline + WATCHDOG_GRACE).as_micros() as u64,
                details,
            );
            let (so, se) = snapshots(captured.as_ref());
            let mut out = replies;
            return match protocol::write_result(&mut out, &r, &so, &se) {
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
        let frame = match protocol::read_frame(&mut requests, u32::MAX as u64) {
            Ok(Some(f)) => f,
            Ok(None) => break 0,
            Err(e) => {
                eprintln!("hybox wasm worker: reading a request: {e}");
                break 125;
            }
        };
        let (req, stdin) = match frame.call() {
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
        let mut out = replies;
        if let Err(e) = protocol::write_result(&mut out, &r, &so, &se) {
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
        let mut details = crate::report::details::WasmDetails::default();
        let (omax, emax) = self.job.capture.unwrap_or((0, 0));
        let captured = Captured {
            stdout: CappedPipe::new(omax as usize),
            stderr: CappedPipe::new(emax as usize),
        };
        let setup = |step: String, details| {
            (
                worker::result_for(Outcome::SetupError { step }, None, 0, 0, details),
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
            Err(e) => return setup(e.to_string(), details),
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
            details.fuel_consumed = Some(f.saturating_sub(left));
        }
        details.prepare_us = Some(prepare_us);
        details.instantiate_us = Some(instantiate_us);
        details.drop_us = Some(drop_us);
        let r = worker::result_for(outcome, Some(&captured), instantiate_us, run_us, details);
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
