//! A lone `hybox run`'s report accounts for the time a user waits: its phases (`process_us`,
//! `cli_us`, `setup_us`, `start_us`, `run_us`, `teardown_us`) add up to at least 90% of the wall time
//! measured around the process (80% in a debug build), on both backends; the cgroup join is shown as `join_us`, a part of
//! `start_us`. What the phases cannot cover is the report's own output and the process's exit
//! (docs/report.md).

#[path = "common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

/// Lone runs (a pause before each, as a user makes them) of `artifact`; for each, the wall time
/// measured here around the process and the report's phases.
fn lone_runs(artifact: &std::path::Path, n: usize) -> Vec<(u64, serde_json::Value)> {
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report.json");
    let policy = common::repo().join("policies/benchmark.json");
    let mut out = Vec::new();
    for _ in 0..n {
        std::thread::sleep(Duration::from_millis(200));
        let mut cmd = common::hybox();
        cmd.arg("run")
            .arg("--policy")
            .arg(&policy)
            .arg("--report")
            .arg(&report)
            .arg(artifact)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let t0 = Instant::now();
        let status = cmd.status().expect("run hybox");
        let wall_us = t0.elapsed().as_micros() as u64;
        assert!(
            status.success(),
            "hybox run {}: {status}",
            artifact.display()
        );
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
        out.push((wall_us, v["phases"].clone()));
    }
    out
}

/// One backend at a time: the two tests of this file measuring at once would each see the other's
/// load as time outside the phases (the parent woken late after the child's exit).
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn check_phases_add_up(artifact: &std::path::Path) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let runs = lone_runs(artifact, 9);
    let mut ratios = Vec::new();
    for (wall_us, p) in &runs {
        let get = |k: &str| p[k].as_u64().unwrap_or_else(|| panic!("phases.{k} in {p}"));
        let total = [
            "process_us",
            "cli_us",
            "setup_us",
            "start_us",
            "run_us",
            "teardown_us",
        ]
        .iter()
        .map(|k| get(k))
        .sum::<u64>();
        assert!(
            get("join_us") <= get("start_us"),
            "the join is part of start: {p}"
        );
        assert!(
            get("process_us") > 0 && get("cli_us") > 0,
            "the CLI's own phases: {p}"
        );
        ratios.push(total as f64 / *wall_us as f64);
    }
    // The median of a few runs: one run preempted between its phases on a busy machine does not
    // decide it.
    ratios.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let median = ratios[ratios.len() / 2];
    // The claim is for the build users run (release: ~92% here). An unoptimized build spends longer
    // in what no phase can cover (writing the report, dropping the run's state, the exit of a 2x
    // larger image): 84-91% in a debug build on this 2-core machine under load. The debug bound
    // still catches a phase that goes missing (the old phases summed to about half).
    let bound = if cfg!(debug_assertions) { 0.8 } else { 0.9 };
    assert!(
        median >= bound,
        "{}: phases add up to a median {:.0}% of the wall time (ratios {ratios:.2?}; runs {runs:?})",
        artifact.display(),
        median * 100.0
    );
}

#[test]
fn native_lone_run_phases_add_up_to_the_wall_time() {
    if !common::privileged("native_lone_run_phases_add_up_to_the_wall_time") {
        return;
    }
    check_phases_add_up(&common::native_guest("hello"));
}

#[test]
fn wasm_lone_run_phases_add_up_to_the_wall_time() {
    if !common::privileged("wasm_lone_run_phases_add_up_to_the_wall_time") {
        return;
    }
    check_phases_add_up(&common::wasm_guest("hello"));
}
