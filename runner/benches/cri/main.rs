//! The CRI benchmark (docs/kubernetes.md, "Benchmark"): pods through containerd's CRI gRPC API, as
//! kubelet drives a node, on the `hybox` handler (hybox-runc) against the `runc` handler, alternated
//! in one run (the order rotated each round), against a private containerd this bench starts itself
//! (tests/cri_support: its own root, state, socket, CNI, images built from hybox's example guests).
//!
//! `cargo bench -p hybox --bench cri -- [--rounds 10] [--pods 8] [--batches 3] [--pause-ms 0]`
//! (root). It prints what each step means, the exact containerd command line and config, then per
//! part the medians and the ratios against the goals.

#[path = "../../../tests/common/mod.rs"]
mod common;
#[path = "../../../tests/cri_support/mod.rs"]
#[allow(dead_code)] // the bench takes part of what tests/cri.rs needs
mod cri_support;
mod mem;
mod report;
mod runs;
#[path = "../../../tests/oci_support.rs"]
mod support;

use std::time::Duration;

use runs::Variant;

struct Args {
    rounds: usize,
    pods: usize,
    batches: usize,
    pause: Duration,
    settle: Duration,
}

const USAGE: &str = "cargo bench -p hybox --bench cri -- [--rounds N (10)] [--pods N (8)] \
[--batches N (3)] [--pause-ms N (0: back-to-back)] [--settle-ms N (300)]";

fn args() -> Result<Args, String> {
    let mut a = Args {
        rounds: 10,
        pods: 8,
        batches: 3,
        pause: Duration::ZERO,
        settle: Duration::from_millis(300),
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        // cargo bench passes --bench to a harness = false target.
        if flag == "--bench" {
            continue;
        }
        if flag == "--help" || flag == "-h" {
            return Err(String::new());
        }
        let value = it
            .next()
            .ok_or_else(|| format!("{flag} needs a value"))?
            .parse::<u64>()
            .map_err(|e| format!("{flag}: {e}"))?;
        match flag.as_str() {
            "--rounds" if value > 0 => a.rounds = value as usize,
            "--pods" if value > 0 => a.pods = value as usize,
            "--batches" if value > 0 => a.batches = value as usize,
            "--pause-ms" => a.pause = Duration::from_millis(value),
            "--settle-ms" => a.settle = Duration::from_millis(value),
            _ => return Err(format!("unknown flag or zero value: {flag} {value}")),
        }
    }
    Ok(a)
}

/// `variants` rotated left by `round`: each variant goes first in turn.
fn rotated(variants: &[Variant], round: usize) -> Vec<Variant> {
    let mut v = variants.to_vec();
    let n = v.len();
    v.rotate_left(round % n);
    v
}

fn main() {
    let a = match args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\nusage: {USAGE}");
            std::process::exit(if e.is_empty() { 0 } else { 2 });
        }
    };
    if !common::privileged("cri bench") {
        std::process::exit(1);
    }
    // The runtime's compile cache: private to this run (cold at the start, nothing left behind).
    let cache = tempfile::Builder::new()
        .prefix("hybox-cri-bench-cache-")
        .tempdir()
        .expect("cache dir");
    // A directory the runtime creates itself (0700): it refuses one open to group or others (as a
    // temp dir may be), and would compile every module again.
    let cache_env = (
        "HYBOX_CACHE_DIR".to_string(),
        cache.path().join("hybox").display().to_string(),
    );
    let node = cri_support::Node::start_with(|o| o.env.push(cache_env.clone()));
    report::header(&node, &a, &cache_env);

    let all = [
        Variant::NativeHybox,
        Variant::NativeRunc,
        Variant::WasmHybox,
    ];
    let mut r = report::Results::default();

    // 1. Pod start. Round 0 is the warm-up (images' snapshots, the first compile), not counted.
    println!("\n== 1. pod start ({} rounds after a warm-up)", a.rounds);
    for round in 0..=a.rounds {
        for v in rotated(&all, round) {
            let (s, teardown) = runs::pod_start(&node, v, round);
            if round == 0 {
                println!("  warm-up {}: {:.1} ms", v.name(), s.total());
            } else {
                r.pod_start.entry(v).or_default().push(s);
                r.pod_teardown.entry(v).or_default().push(teardown);
            }
            std::thread::sleep(a.pause);
        }
    }
    report::starts("pod start", &r.pod_start, true);
    report::values(
        "pod teardown (StopPodSandbox + RemovePodSandbox)",
        &r.pod_teardown,
    );

    // 2. Container start in a running pod.
    println!(
        "\n== 2. container start in a running pod ({} rounds after a warm-up)",
        a.rounds
    );
    let up = runs::RunningPods::start(&node);
    for round in 0..=a.rounds {
        for v in rotated(&all, round) {
            let s = runs::container_start(&node, &up, v, round);
            if round > 0 {
                r.container_start.entry(v).or_default().push(s);
            }
            std::thread::sleep(a.pause);
        }
    }
    up.stop(&node);
    report::starts("container start", &r.container_start, false);

    // 3. Density.
    println!(
        "\n== 3. density ({} batches of {} pods per variant)",
        a.batches, a.pods
    );
    for batch in 0..a.batches {
        for v in rotated(&all, batch) {
            let d = runs::density(&node, v, a.pods, batch, a.settle);
            r.density.entry(v).or_default().push(d);
            std::thread::sleep(a.pause);
        }
    }
    report::density(&r.density, a.pods);
    report::goals(&r);

    let left = node.ctd.stop();
    if !left.is_empty() {
        eprintln!("left behind after the benchmark: {left:?}");
        std::process::exit(1);
    }
}
