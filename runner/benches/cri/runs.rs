//! One sample of each measurement, through the CRI API as kubelet calls it.

use std::time::{Duration, Instant};

use crate::cri_support::pods::{self, Pod, MIB};
use crate::cri_support::{Node, BUSYBOX, WASM};
use crate::mem::{self, PodMemory};

/// How often the log file is read for the first line (the resolution of "until its first line").
const POLL: Duration = Duration::from_millis(1);
const FIRST_LINE_TIMEOUT: Duration = Duration::from_secs(60);

/// What is measured: which handler runs which kind of container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Variant {
    WasmHybox,
    NativeHybox,
    NativeRunc,
}

impl Variant {
    pub fn name(self) -> &'static str {
        match self {
            Variant::WasmHybox => "wasm on hybox",
            Variant::NativeHybox => "native on hybox",
            Variant::NativeRunc => "native on runc",
        }
    }

    pub fn handler(self) -> &'static str {
        match self {
            Variant::NativeRunc => "runc",
            _ => "hybox",
        }
    }

    fn slug(self) -> &'static str {
        match self {
            Variant::WasmHybox => "wh",
            Variant::NativeHybox => "nh",
            Variant::NativeRunc => "nr",
        }
    }

    /// The ticker container `name` (`NAME started` on stderr first, then a tick every
    /// `interval_ms` on stdout): the native guest in busybox, or the same program as a module.
    pub fn container(self, name: &str, interval_ms: u64) -> k8s_cri::v1::ContainerConfig {
        let interval = interval_ms.to_string();
        match self {
            Variant::WasmHybox => {
                pods::container_config(name, WASM, &[], &[name, &interval], 64 * MIB)
            }
            _ => pods::container_config(name, BUSYBOX, &["/ticker"], &[name, &interval], 64 * MIB),
        }
    }

    /// The command line the container runs, for the bench's header.
    pub fn command(self) -> String {
        match self {
            Variant::WasmHybox => {
                format!("{WASM}: /ticker.wasm NAME INTERVAL_MS (image entrypoint)")
            }
            _ => format!("{BUSYBOX}: /ticker NAME INTERVAL_MS"),
        }
    }
}

/// Milliseconds between two instants.
fn ms(a: Instant, b: Instant) -> f64 {
    b.duration_since(a).as_secs_f64() * 1000.0
}

fn fail(node: &Node, what: &str, e: impl std::fmt::Display) -> ! {
    panic!("{what}: {e}\ncontainerd log: {}", node.ctd.log_tail())
}

/// The steps of one start, in ms.
#[derive(Debug, Clone, Copy, Default)]
pub struct Start {
    pub run_pod: f64,
    pub create: f64,
    pub start: f64,
    pub first_line: f64,
}

impl Start {
    pub fn total(&self) -> f64 {
        self.run_pod + self.create + self.start + self.first_line
    }
}

/// CreateContainer + StartContainer of `variant`'s ticker `name` in `pod` until its first log line.
fn start_container(node: &Node, pod: &Pod, variant: Variant, name: &str, s: &mut Start) -> String {
    let t = Instant::now();
    let id = pods::create(node, pod, variant.container(name, 1000))
        .unwrap_or_else(|e| fail(node, &format!("CreateContainer {}", variant.name()), e));
    let t1 = Instant::now();
    pods::start(node, &id)
        .unwrap_or_else(|e| fail(node, &format!("StartContainer {}", variant.name()), e));
    let t2 = Instant::now();
    let seen = pods::wait_line(
        pod,
        name,
        "stderr",
        &format!("{name} started"),
        POLL,
        FIRST_LINE_TIMEOUT,
    )
    .unwrap_or_else(|e| fail(node, variant.name(), e));
    s.create = ms(t, t1);
    s.start = ms(t1, t2);
    s.first_line = ms(t2, seen);
    id
}

/// Pod start: RunPodSandbox + CreateContainer + StartContainer until the first log line; then the
/// pod's teardown (StopPodSandbox + RemovePodSandbox, in ms) as the second value.
pub fn pod_start(node: &Node, variant: Variant, sample: usize) -> (Start, f64) {
    let name = format!("ps-{}-{sample}", variant.slug());
    let mut s = Start::default();
    let t = Instant::now();
    let pod = pods::run_pod(node, variant.handler(), pods::pod_config(node, &name))
        .unwrap_or_else(|e| fail(node, &format!("RunPodSandbox {}", variant.handler()), e));
    s.run_pod = ms(t, Instant::now());
    start_container(node, &pod, variant, "ticker", &mut s);
    let t = Instant::now();
    pods::stop_and_remove_pod(node, &pod).unwrap_or_else(|e| fail(node, "pod teardown", e));
    (s, ms(t, Instant::now()))
}

/// The pods that stay up while containers are started in them, one per handler.
pub struct RunningPods {
    pub hybox: Pod,
    pub runc: Pod,
}

impl RunningPods {
    pub fn start(node: &Node) -> RunningPods {
        let run = |handler: &str| {
            pods::run_pod(
                node,
                handler,
                pods::pod_config(node, &format!("up-{handler}")),
            )
            .unwrap_or_else(|e| fail(node, &format!("RunPodSandbox {handler}"), e))
        };
        RunningPods {
            hybox: run("hybox"),
            runc: run("runc"),
        }
    }

    pub fn stop(self, node: &Node) {
        for p in [&self.hybox, &self.runc] {
            pods::stop_and_remove_pod(node, p).unwrap_or_else(|e| fail(node, "pod teardown", e));
        }
    }
}

/// Container start in a running pod: CreateContainer + StartContainer until the first log line;
/// then StopContainer (no grace: SIGKILL) + RemoveContainer, untimed.
pub fn container_start(node: &Node, up: &RunningPods, variant: Variant, sample: usize) -> Start {
    let pod = match variant.handler() {
        "runc" => &up.runc,
        _ => &up.hybox,
    };
    let name = format!("cs-{}-{sample}", variant.slug());
    let mut s = Start::default();
    let id = start_container(node, pod, variant, &name, &mut s);
    pods::stop_and_remove(node, &id, 0).unwrap_or_else(|e| fail(node, "container teardown", e));
    s
}

/// One density batch: `n` pods of one container each, started one after the other (RunPodSandbox +
/// CreateContainer + StartContainer each), all running (every first log line seen), measured, then
/// stopped and removed one after the other (StopPodSandbox + RemovePodSandbox).
pub struct Density {
    pub start_s: f64,
    pub stop_s: f64,
    /// Each pod's memory while all `n` run.
    pub memory: Vec<PodMemory>,
}

pub fn density(node: &Node, variant: Variant, n: usize, batch: usize, settle: Duration) -> Density {
    let t = Instant::now();
    let mut up = Vec::new();
    for i in 0..n {
        let name = format!("d-{}-{batch}-{i}", variant.slug());
        let pod = pods::run_pod(node, variant.handler(), pods::pod_config(node, &name))
            .unwrap_or_else(|e| fail(node, "RunPodSandbox", e));
        let id = pods::create(node, &pod, variant.container("hello", 60_000))
            .and_then(|id| pods::start(node, &id).map(|()| id))
            .unwrap_or_else(|e| fail(node, variant.name(), e));
        up.push((pod, id));
    }
    for (pod, _) in &up {
        pods::wait_line(
            pod,
            "hello",
            "stderr",
            "hello started",
            POLL,
            FIRST_LINE_TIMEOUT,
        )
        .unwrap_or_else(|e| fail(node, variant.name(), e));
    }
    let start_s = t.elapsed().as_secs_f64();
    std::thread::sleep(settle);
    let memory = up
        .iter()
        .map(|(pod, id)| mem::pod_memory(node, &pod.id, id))
        .collect();
    let t = Instant::now();
    for (pod, _) in &up {
        pods::stop_and_remove_pod(node, pod).unwrap_or_else(|e| fail(node, "pod teardown", e));
    }
    Density {
        start_s,
        stop_s: t.elapsed().as_secs_f64(),
        memory,
    }
}
