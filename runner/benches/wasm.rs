//! Wasm backend benchmarks.
//!
//! 1. `oneshot/*`: one run of `examples/out/wasm/hello.wasm` with a warm compile cache.
//!    - `oneshot/hybox_backend`: `backend::wasm::run` (spawn the `hybox __wasm-worker` process, send
//!      the job, load the MAC-verified cache entry, instantiate, run, report), called as a library,
//!      without an envelope.
//!    - `oneshot/minimal_embedding_process`: a baseline timed the same way: a fresh process (this
//!      bench binary re-executed) that builds an engine, `Module::deserialize_file`s a `.cwasm` of the
//!      same guest, links WASI p1, instantiates and runs it.
//!    - `oneshot/hybox_cli` and `oneshot/wasmtime_cli`: the comparison with wasmtime's own CLI, process
//!      for process: `hybox run --policy policies/benchmark.json hello.wasm` (envelope included)
//!      against `wasmtime run -C cache=y hello.wasm`, both caches warm (wasmtime from
//!      $HYBOX_BENCH_WASMTIME or PATH; skipped without it). Before them, `oneshot/cli_pair` runs the
//!      two alternately (HYBOX_BENCH_PAIRS pairs, default 200; HYBOX_BENCH_PAUSE_MS pauses before
//!      each run, back to back by default) and prints both medians and the ratio,
//!      which the machine's drift between criterion's groups cannot skew.
//!    - `oneshot/minimal_embedding_in_process`: the same embedding without the process start.
//! 2. `warm/instantiate_run_drop`: serverless shape: one pooling engine, one linker, one `InstancePre`;
//!    per call a fresh store and WASI context, instantiate, run `_start`, drop. Goal <= 30 us median.
//!    `_keep_resident` is the same with the warm worker's pool settings; `warm_function_invoke` is
//!    hybox's own `WarmFunction` (its worker-side instantiate + run + drop median is printed).
//!
//! Run: `cargo bench -p hybox --bench wasm` (needs `examples/build.sh` to have run).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{criterion_group, Criterion};
use hybox::backend::{wasm, Launch};
use hybox::policy::Policy;
use hybox::workload::Artifact;
use hybox::{HostConfig, Stdio};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, Linker, Module, PoolingAllocationConfig, Store,
};
use wasmtime_wasi::p1::WasiP1Ctx;
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::WasiCtxBuilder;

const MINIMAL_ENV: &str = "HYBOX_BENCH_MINIMAL_CWASM";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn hello() -> PathBuf {
    let p = repo().join("examples/out/wasm/hello.wasm");
    assert!(
        p.exists(),
        "run examples/build.sh first ({} missing)",
        p.display()
    );
    p
}

fn hybox_bin() -> PathBuf {
    // target/<profile>/deps/wasm-HASH -> target/<profile>/hybox
    let exe = std::env::current_exe().unwrap();
    let bin = exe.parent().unwrap().parent().unwrap().join("hybox");
    assert!(
        bin.exists(),
        "build the hybox binary first: {} missing",
        bin.display()
    );
    bin
}

/// The minimal embedding: engine, deserialize, link WASI p1, instantiate, run `_start`.
fn minimal_embedding(cwasm: &Path, stdout: MemoryOutputPipe) {
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).unwrap();
    // SAFETY: the bench wrote this file itself a moment ago with `Module::serialize` for this config.
    let module = unsafe { Module::deserialize_file(&engine, cwasm) }.unwrap();
    let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
    let mut store = Store::new(
        &engine,
        WasiCtxBuilder::new()
            .arg("hello.wasm")
            .stdout(stdout)
            .build_p1(),
    );
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate(&mut store, &module).unwrap();
    instance
        .get_typed_func::<(), ()>(&mut store, "_start")
        .unwrap()
        .call(&mut store, ())
        .unwrap();
}

fn oneshot(c: &mut Criterion) {
    let cache = tempfile::tempdir().unwrap();
    // hybox refuses a cache directory others can enter.
    std::fs::set_permissions(
        cache.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let host = HostConfig {
        cache_dir: Some(cache.path().into()),
        hybox_path: Some(hybox_bin()),
        ..Default::default()
    };
    let policy = Policy::default();
    let artifact = Artifact::detect(&hello()).unwrap();
    let stdio = Stdio::Capture { stdin: Vec::new() };
    let run_once = || {
        let launch = Launch {
            run_id: "bench",
            policy: &policy,
            artifact: &artifact,
            args: &[],
            env: Default::default(),
            stdio: &stdio,
            deadline: Instant::now() + Duration::from_secs(30),
            host: &host,
            joins: &[],
            pass_fds: &[],
        };
        let r = hybox::backend::run(hybox::Backend::Wasm, &launch, None).unwrap();
        assert_eq!(r.stdout, b"hello from hybox\n", "{r:?}");
        r
    };
    // Warm the cache.
    run_once();
    assert_eq!(run_once().details.to_json()["cache_hit"], true);
    // Where a one-shot run's time goes: medians over 30 runs of the worker's own phases
    // (microseconds since the worker's main started) and of the whole start.
    let mut phases: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for _ in 0..30 {
        let r = run_once();
        let mut add = |k: &str, v: u64| phases.entry(k.to_string()).or_default().push(v);
        add("start_us (spawn -> guest start)", r.start_us);
        add(
            "worker_startup_us",
            r.details.to_json()["worker_startup_us"]
                .as_u64()
                .unwrap_or(0),
        );
        if let Some(p) = r.details.to_json()["worker_phases"].as_object() {
            for (k, v) in p {
                add(&format!("worker_phases.{k}"), v.as_u64().unwrap_or(0));
            }
        }
    }
    eprintln!("oneshot/hybox_backend phases (median of 30, us):");
    for (k, mut v) in phases {
        v.sort_unstable();
        eprintln!("  {k:40} {}", v[v.len() / 2]);
    }

    // The baseline's .cwasm, compiled for the same engine configuration it loads with.
    let mut config = Config::new();
    config.epoch_interruption(true);
    let engine = Engine::new(&config).unwrap();
    let cwasm = cache.path().join("hello.cwasm");
    std::fs::write(
        &cwasm,
        Module::from_file(&engine, hello())
            .unwrap()
            .serialize()
            .unwrap(),
    )
    .unwrap();

    let mut g = c.benchmark_group("oneshot");
    g.sample_size(50);
    g.bench_function("hybox_backend", |b| b.iter(run_once));
    g.bench_function("minimal_embedding_process", |b| {
        b.iter(|| {
            let out = std::process::Command::new(std::env::current_exe().unwrap())
                .env(MINIMAL_ENV, &cwasm)
                .output()
                .unwrap();
            assert_eq!(out.stdout, b"hello from hybox\n");
        })
    });
    // The comparison with wasmtime's CLI, process for process: the `hybox run` CLI (envelope, worker, report)
    // against `wasmtime run` of the same module, each with its compile cache warm. wasmtime comes
    // from $HYBOX_BENCH_WASMTIME or PATH (`cargo install wasmtime-cli --version 48.0.8`); without
    // it this pair is skipped and the minimal embedding above is the baseline.
    let xdg = tempfile::tempdir().unwrap();
    let hybox_cli = || {
        let out = std::process::Command::new(hybox_bin())
            .args(["run", "-q", "--policy"])
            .arg(repo().join("policies/benchmark.json"))
            .arg(hello())
            .env("XDG_CACHE_HOME", xdg.path())
            .output()
            .unwrap();
        assert_eq!(out.stdout, b"hello from hybox\n", "{out:?}");
    };
    hybox_cli();
    g.bench_function("hybox_cli", |b| b.iter(hybox_cli));
    let wasmtime = std::env::var_os("HYBOX_BENCH_WASMTIME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("wasmtime"));
    let wasmtime_cli = || {
        std::process::Command::new(&wasmtime)
            .args(["run", "-C", "cache=y"])
            .arg(hello())
            .env("XDG_CACHE_HOME", xdg.path())
            .output()
    };
    match wasmtime_cli() {
        Ok(o) if o.stdout == b"hello from hybox\n" => {
            interleaved_pair(&hybox_cli, &|| {
                assert!(wasmtime_cli().unwrap().status.success())
            });
            g.bench_function("wasmtime_cli", |b| {
                b.iter(|| assert!(wasmtime_cli().unwrap().status.success()))
            });
        }
        other => eprintln!("oneshot/wasmtime_cli skipped: no usable `wasmtime` ({other:?})"),
    }
    g.bench_function("minimal_embedding_in_process", |b| {
        b.iter(|| {
            let out = MemoryOutputPipe::new(4096);
            minimal_embedding(&cwasm, out.clone());
            assert_eq!(&out.contents()[..], b"hello from hybox\n");
        })
    });
    g.finish();
}

/// The CLI pair again, alternating one run of each N times (HYBOX_BENCH_PAIRS, default 200), so the
/// machine's drift between criterion's groups does not decide the ratio. Prints both medians and the
/// median of the per-pair ratios.
fn interleaved_pair(hybox: &dyn Fn(), wasmtime: &dyn Fn()) {
    let n: usize = std::env::var("HYBOX_BENCH_PAIRS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    // HYBOX_BENCH_PAUSE_MS: a pause before every timed run (isolated runs, as a user makes them).
    let pause = std::env::var("HYBOX_BENCH_PAUSE_MS")
        .ok()
        .and_then(|s| s.parse().ok())
        .map(std::time::Duration::from_millis);
    let time = |f: &dyn Fn()| {
        if let Some(p) = pause {
            std::thread::sleep(p);
        }
        let t = Instant::now();
        f();
        t.elapsed().as_secs_f64() * 1e3
    };
    let (mut h, mut w, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..n {
        // Alternate which goes first, so neither always runs right after the other.
        let (a, b) = if i % 2 == 0 {
            let a = time(hybox);
            (a, time(wasmtime))
        } else {
            let b = time(wasmtime);
            (time(hybox), b)
        };
        h.push(a);
        w.push(b);
        ratio.push(a / b);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (mh, mw) = (median(&mut h), median(&mut w));
    eprintln!(
        "oneshot/cli_pair interleaved, N={n}: hybox run {mh:.2} ms, wasmtime run {mw:.2} ms, \
         ratio of medians {:.2}, median per-pair ratio {:.2}",
        mh / mw,
        median(&mut ratio)
    );
}

fn warm(c: &mut Criterion) {
    let mut g = c.benchmark_group("warm");
    // wasmtime's pooling defaults, then the warm worker's settings (`backend/wasm/warm.rs`): the
    // first 64 KiB of each table kept resident between instances.
    for (name, keep, memory_keep) in [
        ("instantiate_run_drop", 0usize, 0usize),
        ("instantiate_run_drop_keep_resident", 64 << 10, 0),
        ("instantiate_run_drop_pagemap_scan", 64 << 10, 4 << 20),
    ] {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_memories(100)
            .total_tables(100)
            .total_core_instances(100)
            .max_memory_size(64 << 20)
            .table_keep_resident(keep);
        if memory_keep > 0 {
            pool.linear_memory_keep_resident(memory_keep)
                .pagemap_scan(wasmtime::Enabled::Auto);
        }
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).unwrap();
        let module = Module::from_file(&engine, hello()).unwrap();
        let mut linker: Linker<WasiP1Ctx> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s| s).unwrap();
        let pre = linker.instantiate_pre(&module).unwrap();
        g.bench_function(name, |b| {
            b.iter(|| {
                let out = MemoryOutputPipe::new(4096);
                let mut store = Store::new(
                    &engine,
                    WasiCtxBuilder::new()
                        .arg("hello.wasm")
                        .stdout(out.clone())
                        .build_p1(),
                );
                store.set_epoch_deadline(1_000);
                let instance = pre.instantiate(&mut store).unwrap();
                instance
                    .get_typed_func::<(), ()>(&mut store, "_start")
                    .unwrap()
                    .call(&mut store, ())
                    .unwrap();
                drop(store);
                assert_eq!(out.contents().len(), 17);
            })
        });
    }
    // The library API: `WarmFunction::invoke` of hello under the benchmark policy, in its own envelope
    // (needs root for the cgroup). Criterion times the caller's round trip; the worker-side
    // instantiate + run + drop of every call is collected and its median printed separately.
    let policy = Policy::from_json_str(
        include_str!("../../policies/benchmark.json"),
        "policies/benchmark.json",
    )
    .unwrap();
    let host = HostConfig {
        hybox_path: Some(hybox_bin()),
        ..HostConfig::default()
    };
    match wasm::WarmFunction::load(&hello(), &policy, &host) {
        Ok(mut f) => {
            let mut inside = Vec::new();
            let mut prepare = Vec::new();
            let mut parts: [Vec<u64>; 3] = Default::default();
            g.bench_function("warm_function_invoke", |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let t = Instant::now();
                        let call = f.invoke(&[], &[]).unwrap();
                        total += t.elapsed();
                        assert_eq!(call.stdout, b"hello from hybox\n");
                        inside.push(call.instantiate_us + call.run_us + call.drop_us);
                        parts[0].push(call.instantiate_us);
                        parts[1].push(call.run_us);
                        parts[2].push(call.drop_us);
                        prepare.push(call.prepare_us);
                    }
                    total
                })
            });
            let med = |v: &mut Vec<u64>| {
                v.sort_unstable();
                v.get(v.len() / 2).copied().unwrap_or(0)
            };
            println!(
                "warm/warm_function_invoke worker side, median of {} calls: instantiate+run+drop {} us, prepare (WASI ctx, /tmp, store) {} us",
                inside.len(),
                med(&mut inside),
                med(&mut prepare)
            );
            println!(
                "  of which (medians): instantiate {} us, run {} us, drop {} us",
                med(&mut parts[0]),
                med(&mut parts[1]),
                med(&mut parts[2])
            );
        }
        Err(e) => eprintln!("warm/warm_function_invoke skipped: {e}"),
    }
    g.finish();
}

criterion_group!(benches, oneshot, warm);

fn main() {
    // Re-executed as the baseline's process: run the minimal embedding once and exit.
    if let Some(cwasm) = std::env::var_os(MINIMAL_ENV) {
        let out = MemoryOutputPipe::new(4096);
        minimal_embedding(Path::new(&cwasm), out.clone());
        use std::io::Write;
        std::io::stdout().write_all(&out.contents()).unwrap();
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
