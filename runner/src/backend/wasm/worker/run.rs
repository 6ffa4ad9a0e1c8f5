//! A one-shot worker's run: the job read, the worker confined (`wasm.os_sandbox`), the engine
//! and the epoch ticker started, the guest loaded, linked, instantiated and run on its own thread
//! under the store limits, the outcome classified and the result written.

use std::fs::File;
use std::os::fd::FromRawFd;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, ResourceTable};
use wasmtime::{Engine, Linker, Module, Store, Trap};
use wasmtime_wasi::{I32Exit, WasiCtxBuilder};

use super::engine::{engine_config, fuel_budget, limiter, load, Loaded};
use super::stdio::{CappedPipe, Captured};
use super::wasi::{wasi_builder, ComponentState, ModuleState};
use super::Prepared;
use crate::backend::wasm::protocol;
use crate::backend::wasm::{Job, WorkerResult, JOB_FD, RESULT_FD, WATCHDOG_GRACE};
use crate::report::Outcome;

/// What the guest thread reports back to the worker's main thread.
struct GuestDone {
    outcome: Outcome,
    startup_us: u64,
    run_us: u64,
    details: crate::report::details::WasmDetails,
}

pub(super) fn run_job_prepared(t0: Instant, prepared: Option<Prepared>) -> i32 {
    let (mut job_in, mut result_out) =
        // SAFETY: the supervisor placed the job pipe's read end at JOB_FD and the result pipe's write end
        // at RESULT_FD before exec (see `spawn_worker` in the wasm backend); nothing else in this process owns them.
        unsafe { (File::from_raw_fd(JOB_FD), File::from_raw_fd(RESULT_FD)) };
    let job = protocol::read_frame(&mut job_in, u32::MAX as u64)
        .and_then(|f| f.ok_or(protocol::ProtocolError::Closed)?.job());
    drop(job_in);
    let (job, stdin) = match job {
        Ok(j) => j,
        Err(e) => {
            eprintln!("hybox wasm worker: bad job: {e}");
            return 125;
        }
    };
    // Where the worker's startup goes, for the report (`worker_phases`, microseconds since t0).
    let mut phases = crate::report::details::WorkerPhases::default();
    let mark = |phases: &mut crate::report::details::WorkerPhases, name: &str| {
        phases.mark(name, t0.elapsed().as_micros() as u64);
    };
    mark(&mut phases, "job_read");
    // wasm.os_sandbox: Landlock and seccomp before any guest byte is read (see `hardened`).
    let os_sandbox = match job
        .policy
        .wasm
        .os_sandbox
        .then(|| crate::backend::wasm::hardened::confine(&job))
    {
        Some(Err(e)) => return setup_failed(&mut result_out, None, e.to_string()),
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
            phases.prepared_before_job = true;
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
            let details = crate::report::details::WasmDetails {
                timeout_in: Some("host call (worker watchdog)".into()),
                ..Default::default()
            };
            GuestDone {
                outcome: Outcome::Timeout,
                startup_us: 0,
                run_us: t0.elapsed().as_micros() as u64,
                details,
            }
        }
    };
    let mut details = done.details;
    if let Some(guest) = details.worker_phases.take() {
        phases.steps.extend(guest.steps);
    }
    details.worker_phases = Some(phases);
    if let Some(d) = os_sandbox {
        details.os_sandbox = Some(d);
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
    details: crate::report::details::WasmDetails,
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
    match protocol::write_result(out, r, &so, &se) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("hybox wasm worker: writing the result: {e}");
            125
        }
    }
}

fn run_guest(
    engine: &Engine,
    job: &Job,
    stdin: Vec<u8>,
    captured: Option<&Captured>,
    t0: Instant,
    preloaded: Option<(Loaded, crate::report::details::WasmDetails)>,
) -> GuestDone {
    let (preloaded, mut details) = match preloaded {
        Some((l, d)) => (Some(l), d),
        None => (None, crate::report::details::WasmDetails::default()),
    };
    let fail = |outcome: Outcome, details: crate::report::details::WasmDetails| GuestDone {
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
    let mut guest_phases = crate::report::details::WorkerPhases::default();
    guest_phases.mark("guest_loaded", t0.elapsed().as_micros() as u64);
    details.worker_phases = Some(guest_phases);
    let builder = match wasi_builder(job, stdin, captured) {
        Ok(b) => b,
        Err(e) => {
            let step = e.to_string();
            return fail(Outcome::SetupError { step }, details);
        }
    };
    let fuel = fuel_budget(&job.policy);
    details.wasm_memory_limit = Some(limiter(job).memory as u64);
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
    mut details: crate::report::details::WasmDetails,
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
            details.instance_kind = Some(kind.into());
            Outcome::Exited { code: 0 }
        }
        Err(e) => classify(e, store.data().limiter.hit.clone(), fuel),
    };
    if let (Some(f), Ok(left)) = (fuel, store.get_fuel()) {
        details.fuel_consumed = Some(f.saturating_sub(left));
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
    mut details: crate::report::details::WasmDetails,
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
    details.instance_kind = Some("component".into());
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
        details.fuel_consumed = Some(f.saturating_sub(left));
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
