//! What the bench prints: the setup (every step's meaning, containerd's exact command line and
//! config), then medians per variant and the ratios the issue sets as goals.

use std::collections::BTreeMap;

use crate::cri_support::Node;
use crate::mem::Pss;
use crate::runs::{Density, Start, Variant};
use crate::Args;

#[derive(Default)]
pub struct Results {
    pub pod_start: BTreeMap<Variant, Vec<Start>>,
    pub pod_teardown: BTreeMap<Variant, Vec<f64>>,
    pub container_start: BTreeMap<Variant, Vec<Start>>,
    pub density: BTreeMap<Variant, Vec<Density>>,
}

pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

pub fn header(node: &Node, a: &Args, cache: &(String, String)) {
    let d = node.ctd.dir.display();
    println!("CRI benchmark: hybox handler (hybox-runc) vs runc handler, one private containerd");
    println!("load average at start: {}", load());
    println!(
        "hybox-runc: {} -> {}",
        crate::support::hybox_runc().display(),
        env!("CARGO_BIN_EXE_hybox")
    );
    println!("containerd: {}", version_of("containerd"));
    println!("runc: {}", version_of("runc"));
    println!("\ncontainerd command line (its environment plus these variables):");
    println!(
        "  HYBOX_RUNTIME_POLICY={} {}={} containerd --config {d}/config.toml",
        node.scratch.path().join("runtime.json").display(),
        cache.0,
        cache.1
    );
    println!("--- {d}/config.toml");
    print!(
        "{}",
        std::fs::read_to_string(node.ctd.dir.join("config.toml")).unwrap_or_default()
    );
    println!(
        "--- hybox-runc's runtime policy ({})",
        node.scratch.path().join("runtime.json").display()
    );
    println!(
        "{}",
        std::fs::read_to_string(node.scratch.path().join("runtime.json")).unwrap_or_default()
    );
    println!("---");
    println!("containers (each prints `NAME started` on stderr first, then a tick per interval):");
    for v in [
        Variant::WasmHybox,
        Variant::NativeHybox,
        Variant::NativeRunc,
    ] {
        println!(
            "  {:16} handler {:5} {}",
            v.name(),
            v.handler(),
            v.command()
        );
    }
    println!(
        "pods: own network namespace (CNI: loopback + oci-cni-dummy), IPC shared, pid per container; \
         containers: memory limit 64 MiB, CPU quota 50 ms / 100 ms"
    );
    println!(
        "order: the variants alternate, rotated each round; {}",
        if a.pause.is_zero() {
            "back-to-back".to_string()
        } else {
            format!("a {:?} pause between samples", a.pause)
        }
    );
    println!("steps, as the CRI client (this bench, as kubelet) sees them:");
    println!("  run_pod     RunPodSandbox: containerd makes the netns (CNI), the pause container is created and started by the handler's runtime");
    println!("  create      CreateContainer: the snapshot and containerd's metadata (containerd 1.6 calls no runtime here)");
    println!("  start       StartContainer: the shim's task create (`RUNTIME create`: hybox-runc's monitor, the envelope cgroup) and `RUNTIME start`, until containerd answers");
    println!("  first_line  from StartContainer's answer until the container's first line (stderr `NAME started`) is in its CRI log file (read every 1 ms)");
}

fn row(name: &str, v: &[f64]) -> String {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    format!(
        "  {name:16} median {:8.1}  min {min:8.1}  max {max:8.1}  (n={})",
        median(v),
        v.len()
    )
}

pub fn starts(what: &str, r: &BTreeMap<Variant, Vec<Start>>, with_pod: bool) {
    println!("{what}, ms (medians of each step; total = the sum per sample, its median):");
    for (v, s) in r {
        let m = |f: fn(&Start) -> f64| median(&s.iter().map(f).collect::<Vec<_>>());
        let pod = if with_pod {
            format!("run_pod {:6.1}  ", m(|s| s.run_pod))
        } else {
            String::new()
        };
        println!(
            "{}\n      {pod}create {:6.1}  start {:6.1}  first_line {:6.1}",
            row(v.name(), &s.iter().map(Start::total).collect::<Vec<_>>()),
            m(|s| s.create),
            m(|s| s.start),
            m(|s| s.first_line),
        );
    }
}

pub fn values(what: &str, r: &BTreeMap<Variant, Vec<f64>>) {
    println!("{what}, ms:");
    for (v, s) in r {
        println!("{}", row(v.name(), s));
    }
}

fn mib(kib: f64) -> f64 {
    kib / 1024.0
}

pub fn density(r: &BTreeMap<Variant, Vec<Density>>, pods: usize) {
    println!(
        "pods of one container started (RunPodSandbox + CreateContainer + StartContainer, one after \
         the other, until every first line) and stopped (StopPodSandbox + RemovePodSandbox), per second:"
    );
    for (v, ds) in r {
        let start: Vec<f64> = ds.iter().map(|d| pods as f64 / d.start_s).collect();
        let stop: Vec<f64> = ds.iter().map(|d| pods as f64 / d.stop_s).collect();
        let cycle: Vec<f64> = ds
            .iter()
            .map(|d| pods as f64 / (d.start_s + d.stop_s))
            .collect();
        println!(
            "  {:16} started {:5.2}/s  stopped {:5.2}/s  both {:5.2}/s  (medians of {} batches)",
            v.name(),
            median(&start),
            median(&stop),
            median(&cycle),
            ds.len()
        );
    }
    println!(
        "node memory per running pod with {pods} such pods up, PSS in MiB (median over pods and \
         batches): the pod's containerd shim, the pause container's cgroup, the container's cgroup \
         (everything in it: under hybox the monitor and the native shim or the wasm worker); \
         containerd itself not counted:"
    );
    for (v, ds) in r {
        let all: Vec<_> = ds.iter().flat_map(|d| d.memory.iter()).collect();
        let m = |f: &dyn Fn(&crate::mem::PodMemory) -> u64| {
            mib(median(&all.iter().map(|p| f(p) as f64).collect::<Vec<_>>()))
        };
        println!(
            "  {:16} pod {:6.1}  = shim {:5.1} + pause {:5.1} + container {:5.1}",
            v.name(),
            m(&|p| p.total()),
            m(&|p| p.shim.total),
            m(&|p| p.pause.total),
            m(&|p| p.container.total),
        );
        // Where it goes: per process name, mean over pods, anonymous vs file-backed.
        let mut parts: BTreeMap<(String, String), Pss> = BTreeMap::new();
        for p in &all {
            for (k, v) in &p.parts {
                *parts.entry(k.clone()).or_default() += *v;
            }
        }
        let n = all.len().max(1) as f64;
        for ((part, comm), p) in parts {
            println!(
                "      {part:9} {comm:16} {:5.1} (anon {:5.1}, file {:5.1})",
                mib(p.total as f64 / n),
                mib(p.anon as f64 / n),
                mib(p.file as f64 / n)
            );
        }
    }
}

fn ratio(what: &str, a: f64, b: f64, goal: f64) {
    let r = a / b;
    println!(
        "  {what}: {a:.1} / {b:.1} = {r:.2}x (goal <= {goal}x: {})",
        if r <= goal { "met" } else { "NOT met" }
    );
}

pub fn goals(r: &Results) {
    println!("\n== goals (issue 17), medians:");
    // The median of a variant's totals in one of the start measurements.
    let total = |m: &BTreeMap<Variant, Vec<Start>>, v: Variant| {
        median(
            &m.get(&v)
                .map(|s| s.iter().map(Start::total).collect::<Vec<_>>())
                .unwrap_or_default(),
        )
    };
    let cs = |v: Variant| total(&r.container_start, v);
    ratio(
        "container start, wasm on hybox / native on runc (ms)",
        cs(Variant::WasmHybox),
        cs(Variant::NativeRunc),
        0.5,
    );
    ratio(
        "container start, native on hybox / native on runc (ms)",
        cs(Variant::NativeHybox),
        cs(Variant::NativeRunc),
        0.8,
    );
    let ps = |v: Variant| total(&r.pod_start, v);
    println!(
        "  pod start, native on hybox / native on runc: {:.2}x; wasm on hybox / native on runc: {:.2}x (no goal)",
        ps(Variant::NativeHybox) / ps(Variant::NativeRunc),
        ps(Variant::WasmHybox) / ps(Variant::NativeRunc)
    );
    let mem = |v: Variant, f: fn(&crate::mem::PodMemory) -> u64| {
        mib(median(
            &r.density
                .get(&v)
                .map(|ds| {
                    ds.iter()
                        .flat_map(|d| d.memory.iter().map(|p| f(p) as f64))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        ))
    };
    ratio(
        "node memory of a running container, wasm on hybox / native on runc (MiB, container cgroup)",
        mem(Variant::WasmHybox, |p| p.container.total),
        mem(Variant::NativeRunc, |p| p.container.total),
        0.5,
    );
    let runc = mem(Variant::NativeRunc, |p| p.total());
    for v in [Variant::NativeHybox, Variant::WasmHybox] {
        println!(
            "  node memory per pod, {} - native on runc: {:.1} MiB (the RuntimeClass overhead's figure)",
            v.name(),
            mem(v, |p| p.total()) - runc
        );
    }
    println!("load average at the end: {}", load());
}

/// The first line `PROGRAM --version` prints, or `?`.
fn version_of(program: &str) -> String {
    let out = std::process::Command::new(program)
        .arg("--version")
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default();
    String::from_utf8_lossy(&out)
        .lines()
        .next()
        .unwrap_or("?")
        .trim()
        .to_string()
}
