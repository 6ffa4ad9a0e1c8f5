//! The worker process: `hybox __wasm-worker`, started by the supervisor ([`super::start`]) and moved into the run's
//! envelope before it reads its job. Everything that touches guest bytes happens here: compile (or
//! load from the cache), link, instantiate, run; never in the supervisor.
//!
//! - `engine`: the engine from the policy, the guest compiled or loaded for it, the store limits;
//! - `wasi`: the guest's WASI context, from the policy alone;
//! - `stdio`: the captured stdout and stderr;
//! - `run`: a one-shot run, from the job to the result.
//!
//! The warm worker (`hybox __wasm-worker --serve`, [`super::warm`]) uses the same engine, WASI
//! context and stdio, around a loop of calls.

mod engine;
mod run;
mod stdio;
mod wasi;

use std::time::Instant;

use wasmtime::Engine;

use crate::backend::wasm::Job;

pub use engine::{
    compile, engine_config, engine_fingerprint, fuel_budget, kind_of, precompile_in_process,
    wasm_memory_limit, Limiter, Loaded, FUEL_PER_CPU_MS, MEMORY_HEADROOM, WASMTIME_VERSION,
};
pub(crate) use engine::{limiter, load};
pub use run::classify;
pub(crate) use run::result_for;
pub use stdio::{CappedPipe, Captured};
pub use wasi::{wasi_builder, ComponentState, ModuleState, WasiError};

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
        #[cfg(feature = "http")]
        return super::http_worker::serve_main();
        #[cfg(not(feature = "http"))]
        {
            eprintln!(
                "hybox wasm worker: this hybox was built without the `http` feature (wasi:http)"
            );
            return crate::exit::RUNNER_FAILED;
        }
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
    loaded: Option<(Loaded, crate::report::details::WasmDetails)>,
}

pub(crate) fn prepare(job: &Job) -> Option<Prepared> {
    let engine = Engine::new(&engine_config(&job.policy, false)).ok()?;
    let mut details = crate::report::details::WasmDetails::default();
    let loaded = engine::load_cached(&engine, job, &mut details).map(|l| (l, details));
    Some(Prepared { engine, loaded })
}

/// The forked one-shot worker ([`crate::host::WorkerStart::fork`]): [`prepare`] from the copy of the job
/// it holds, then as [`run_job`]. The job it then reads (sent once it is in the envelope) is the same
/// job; it is what the run uses.
pub(crate) fn run_forked(job: &Job) -> i32 {
    let t0 = Instant::now();
    let prepared = prepare(job);
    run::run_job_prepared(t0, prepared)
}

/// The one-shot worker: reads its job from [`JOB_FD`](super::JOB_FD), runs it, writes the result
/// to [`RESULT_FD`](super::RESULT_FD);
/// returns the process's exit code. In `hybox __wasm-worker` after the exec.
pub(crate) fn run_job() -> i32 {
    run::run_job_prepared(Instant::now(), None)
}
