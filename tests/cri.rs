//! Kubernetes pods on hybox, driven as kubelet drives them: through containerd's CRI gRPC API
//! (k8s-cri's client) against a private containerd (tests/cri_support) with a `hybox` handler
//! (hybox-runc) and a `runc` handler. One pod holds a wasm container and a native one side by side,
//! each backend decided by hybox from the image's bytes; the checks are the CRI's own answers (logs,
//! ExecSync, Exec and Attach through containerd's streaming server, ContainerStatus,
//! ContainerStats, UpdateContainerResources) and, after the pod is
//! removed, that nothing is left. The same scenario on `runc` is the control: everything native
//! passes there, the wasm container fails (runc cannot run a module), so a pass on `hybox` is
//! hybox's doing.

mod common;
#[path = "cri_support/mod.rs"]
mod cri_support;
#[path = "cri_support/exec_attach.rs"]
mod exec_attach;
#[path = "cri_support/stream.rs"]
mod stream;
#[path = "oci_support.rs"]
mod support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cri_support::pods::{self, container_config, Pod, MIB};
use cri_support::{wait_log, Node, BUSYBOX, WASM};
use k8s_cri::v1::*;

fn cgroup_v2() -> bool {
    Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A file of a container's cgroup (`/PARENT/ID`): the v1 controller's or the unified one's.
fn cgroup_file(parent: &str, id: &str, controller: &str, v1: &str, v2: &str) -> PathBuf {
    let rel = format!("{}/{id}", parent.trim_start_matches('/'));
    if cgroup_v2() {
        Path::new("/sys/fs/cgroup").join(rel).join(v2)
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(rel)
            .join(v1)
    }
}

fn read_trim(p: &Path) -> String {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn run_pod(node: &Node, handler: &str, name: &str) -> Pod {
    pods::run_pod(node, handler, pods::pod_config(node, name)).unwrap_or_else(|e| {
        panic!(
            "RunPodSandbox on {handler}: {e}\ncontainerd log: {}",
            node.ctd.log_tail()
        )
    })
}

type Started = Result<String, (Option<String>, tonic::Status)>;

/// [`start`] with one container annotation and no arguments.
fn start_annotated(
    node: &Node,
    pod: &Pod,
    name: &str,
    image: &str,
    command: &[&str],
    annotation: (&str, &str),
) -> Started {
    let mut config = container_config(name, image, command, &[], 64 * MIB);
    config.annotations = HashMap::from([(annotation.0.into(), annotation.1.into())]);
    create_and_start(node, pod, config)
}

/// CreateContainer + StartContainer; the container's id, or the first error (the id of a container
/// that was created but did not start goes with it, to be removed).
fn start(
    node: &Node,
    pod: &Pod,
    name: &str,
    image: &str,
    command: &[&str],
    args: &[&str],
    memory: i64,
) -> Started {
    create_and_start(
        node,
        pod,
        container_config(name, image, command, args, memory),
    )
}

/// A memory bomb under `memory`: it ends `OOMKilled` with exit 137 in `ContainerStatus`
/// (containerd's verdict from the cgroup's OOM event), and `RemoveContainer` removes its cgroup.
#[allow(clippy::too_many_arguments)]
fn assert_oom_killed(
    node: &Node,
    pod: &Pod,
    handler: &str,
    name: &str,
    image: &str,
    command: &[&str],
    args: &[&str],
    memory: i64,
) {
    let parent = node.ctd.cri_cgroup_parent();
    let bomb = start(node, pod, name, image, command, args, memory)
        .unwrap_or_else(|(_, e)| panic!("{name} on {handler}: {e}"));
    let st = node.cri.wait_exited(&bomb, Duration::from_secs(60));
    assert_eq!(st.reason, "OOMKilled", "{name} on {handler}: {st:?}");
    assert_eq!(st.exit_code, 137, "{name} on {handler}: {st:?}");
    node.cri
        .remove_container(RemoveContainerRequest {
            container_id: bomb.clone(),
        })
        .unwrap();
    assert!(
        !cgroup_file(&parent, &bomb, "memory", "", "").exists(),
        "RemoveContainer left the {name}'s cgroup"
    );
}

fn create_and_start(node: &Node, pod: &Pod, config: ContainerConfig) -> Started {
    let id = node
        .cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })
        .map_err(|e| (None, e))?
        .container_id;
    node.cri
        .start_container(StartContainerRequest {
            container_id: id.clone(),
        })
        .map_err(|e| (Some(id.clone()), e))?;
    Ok(id)
}

fn exec(node: &Node, id: &str, cmd: &[&str]) -> Result<ExecSyncResponse, tonic::Status> {
    node.cri.exec_sync(ExecSyncRequest {
        container_id: id.into(),
        cmd: cmd.iter().map(|s| s.to_string()).collect(),
        timeout: 20,
    })
}

fn running(node: &Node, id: &str) -> bool {
    node.cri.status(id).state == ContainerState::ContainerRunning as i32
}

/// The log file's lines while the container is still running: output reaches the CRI log as it
/// is written, not at exit. Checks the stderr line and three stdout ticks.
fn assert_streamed(node: &Node, pod: &Pod, name: &str, id: &str) {
    let log = pod.logs.join(format!("{name}.log"));
    wait_log(
        &log,
        "stderr",
        &format!("{name} started"),
        Duration::from_secs(30),
    );
    let lines = wait_log(
        &log,
        "stdout",
        &format!("{name} tick 3"),
        Duration::from_secs(30),
    );
    assert!(running(node, id), "{name} is no longer running: {lines:?}");
    let ticks: Vec<&str> = lines
        .iter()
        .filter(|(s, _)| s == "stdout")
        .map(|(_, m)| m.as_str())
        .take(3)
        .collect();
    let want: Vec<String> = (1..=3).map(|n| format!("{name} tick {n}")).collect();
    assert_eq!(ticks, want, "{name}'s log lines: {lines:?}");
}

fn assert_stats(node: &Node, name: &str, id: &str) {
    let stats = node
        .cri
        .container_stats(ContainerStatsRequest {
            container_id: id.into(),
        })
        .unwrap_or_else(|e| panic!("ContainerStats {name}: {e}"))
        .stats
        .expect("stats");
    let cpu = stats
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value);
    let mem = stats
        .memory
        .and_then(|m| m.working_set_bytes.or(m.usage_bytes))
        .map(|v| v.value);
    assert!(
        cpu.is_some_and(|c| c > 0),
        "{name}: no CPU usage in ContainerStats ({cpu:?})"
    );
    assert!(
        mem.is_some_and(|m| m > 0),
        "{name}: no memory usage in ContainerStats ({mem:?})"
    );
}

/// UpdateContainerResources reaches the live cgroup: memory and CPU quota read back.
fn assert_update(node: &Node, name: &str, id: &str, memory: i64) {
    node.cri
        .update_container_resources(UpdateContainerResourcesRequest {
            container_id: id.into(),
            linux: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory,
                cpu_period: 100_000,
                cpu_quota: 80_000,
                ..Default::default()
            }),
            ..Default::default()
        })
        .unwrap_or_else(|e| panic!("UpdateContainerResources {name}: {e}"));
    let parent = node.ctd.cri_cgroup_parent();
    let mem = read_trim(&cgroup_file(
        &parent,
        id,
        "memory",
        "memory.limit_in_bytes",
        "memory.max",
    ));
    assert_eq!(mem, memory.to_string(), "{name}: memory limit after update");
    let quota = if cgroup_v2() {
        read_trim(&cgroup_file(&parent, id, "", "", "cpu.max"))
    } else {
        read_trim(&cgroup_file(&parent, id, "cpu", "cpu.cfs_quota_us", ""))
    };
    assert!(
        quota.starts_with("80000"),
        "{name}: CPU quota after update: {quota}"
    );
}

/// Proportional set size of a process in KiB (0 if it is gone).
fn pss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn cgroup_pids(parent: &str, id: &str) -> Vec<i32> {
    std::fs::read_to_string(cgroup_file(
        parent,
        id,
        "memory",
        "cgroup.procs",
        "cgroup.procs",
    ))
    .unwrap_or_default()
    .lines()
    .filter_map(|l| l.trim().parse().ok())
    .collect()
}

/// The node memory each part of the running pod costs (PSS of its processes: the pod's shim, and
/// everything in each container's cgroup, runtime processes included), printed for
/// deploy/kubernetes/runtimeclass.yaml's `overhead` (docs/kubernetes.md).
fn report_memory(node: &Node, handler: &str, pod: &Pod, native: &str, wasm: Option<&str>) {
    let parent = node.ctd.cri_cgroup_parent();
    let shim: u64 = node.ctd.shims().iter().map(|p| pss_kib(p.pid)).sum();
    let mut parts = vec![("pause", pod.id.as_str()), ("native", native)];
    parts.extend(wasm.map(|w| ("wasm", w)));
    let mut line = format!("{handler}: node memory (PSS) shim {shim} KiB");
    for (name, id) in parts {
        let pids = cgroup_pids(&parent, id);
        assert!(!pids.is_empty(), "{name}: no process in its cgroup");
        let each: Vec<String> = pids
            .iter()
            .map(|p| {
                let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
                format!("{} {}", comm.trim(), pss_kib(*p))
            })
            .collect();
        let kib: u64 = pids.iter().map(|p| pss_kib(*p)).sum();
        line += &format!(", {name} {kib} KiB ({})", each.join(" + "));
    }
    eprintln!("{line}");
}

/// The native container and the wasm one share the pod's network namespace (its `lo` is the
/// loopback of both), which is not the host's: under hybox the wasm worker joins it.
fn assert_same_pod_network(node: &Node, native: &str, wasm: &str) {
    let parent = node.ctd.cri_cgroup_parent();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap();
    let nets = |id: &str| -> std::collections::BTreeSet<PathBuf> {
        cgroup_pids(&parent, id)
            .into_iter()
            .filter_map(|p: i32| std::fs::read_link(format!("/proc/{p}/ns/net")).ok())
            .filter(|n| *n != host)
            .collect()
    };
    let (n, w) = (nets(native), nets(wasm));
    assert!(
        n.len() == 1 && n == w,
        "the native container's network namespaces {n:?}, the wasm worker's {w:?}"
    );
}

fn stop_and_remove(node: &Node, id: &str) {
    node.cri
        .stop_container(StopContainerRequest {
            container_id: id.into(),
            timeout: 1,
        })
        .unwrap_or_else(|e| panic!("StopContainer {id}: {e}"));
    let st = node.cri.status(id);
    assert_eq!(
        st.state,
        ContainerState::ContainerExited as i32,
        "StopContainer {id}: {st:?}"
    );
    node.cri
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}"));
}

/// The whole pod scenario on `handler`. `hybox` says what to expect where hybox and runc differ.
fn pod_scenario(handler: &str, hybox: bool) {
    let t0 = Instant::now();
    let node = Node::start();
    let v = node
        .cri
        .version(VersionRequest {
            version: "v1".into(),
        })
        .unwrap();
    assert_eq!(v.runtime_api_version, "v1", "{v:?}");
    let images = node.cri.list_images().unwrap();
    for want in [cri_support::PAUSE, BUSYBOX, WASM] {
        assert!(images.iter().any(|i| i == want), "{want} not in {images:?}");
    }
    let t = Instant::now();
    let pod = run_pod(&node, handler, "mixed");
    let run_pod_ms = t.elapsed().as_millis();

    // The native container: the ticker guest in a busybox image.
    let t = Instant::now();
    let native = start(
        &node,
        &pod,
        "native",
        BUSYBOX,
        &["/ticker"],
        &["native", "200"],
        64 * MIB,
    )
    .unwrap_or_else(|(_, e)| {
        panic!(
            "native container on {handler}: {e}\n{}",
            node.ctd.log_tail()
        )
    });

    let first_line = |name: &str| {
        let log = pod.logs.join(format!("{name}.log"));
        wait_log(
            &log,
            "stderr",
            &format!("{name} started"),
            Duration::from_secs(30),
        );
    };
    first_line("native");
    // Start latencies (CreateContainer + StartContainer until the first log line), for
    // docs/kubernetes.md; one sample, not a benchmark.
    let mut timing = format!(
        "{handler}: RunPodSandbox {run_pod_ms} ms, native container to its first log line {} ms",
        t.elapsed().as_millis()
    );

    // The wasm container: the same program as a module, nothing but its bytes says so.
    let t = Instant::now();
    let wasm = start(&node, &pod, "wasm", WASM, &[], &["wasm", "200"], 64 * MIB);
    if wasm.is_ok() && hybox {
        first_line("wasm");
        timing += &format!(", wasm {} ms", t.elapsed().as_millis());
    }
    eprintln!("{timing}");
    let wasm = match (wasm, hybox) {
        (Ok(id), true) => Some(id),
        (Err((_, e)), true) => panic!("wasm container on hybox: {e}\n{}", node.ctd.log_tail()),
        (Ok(id), false) => {
            // runc may start it and see the exec fail at once: it must never run.
            let st = node.cri.wait_exited(&id, Duration::from_secs(20));
            assert_ne!(st.exit_code, 0, "runc ran a wasm module: {st:?}");
            node.cri
                .remove_container(RemoveContainerRequest { container_id: id })
                .unwrap();
            None
        }
        (Err((id, e)), false) => {
            eprintln!("runc refuses the wasm container, as it must: {e}");
            if let Some(id) = id {
                node.cri
                    .remove_container(RemoveContainerRequest { container_id: id })
                    .unwrap();
            }
            None
        }
    };

    // Logs, line by line, while running.
    assert_streamed(&node, &pod, "native", &native);
    if let Some(w) = &wasm {
        assert_streamed(&node, &pod, "wasm", w);
    }

    report_memory(&node, handler, &pod, &native, wasm.as_deref());
    if let Some(w) = &wasm {
        assert_same_pod_network(&node, &native, w);
    }

    // ExecSync: into the native container, in the pod's network and UTS namespaces.
    let r = exec(
        &node,
        &native,
        &[
            "/bin/sh",
            "-c",
            "echo out; echo err >&2; hostname; cat /proc/net/dev; exit 3",
        ],
    )
    .unwrap_or_else(|e| panic!("ExecSync native: {e}\n{}", node.ctd.log_tail()));
    let out = String::from_utf8_lossy(&r.stdout);
    assert_eq!(r.exit_code, 3, "{r:?}");
    assert!(
        out.starts_with("out\nmixed-host\n"),
        "ExecSync stdout: {out}"
    );
    assert!(
        out.contains("eth0:"),
        "the exec is not in the pod's netns: {out}"
    );
    assert_eq!(String::from_utf8_lossy(&r.stderr), "err\n");
    if let Some(w) = &wasm {
        let e = exec(&node, w, &["/ticker.wasm"]).expect_err("ExecSync into a wasm container");
        assert!(
            e.message().contains("not supported for wasm containers"),
            "ExecSync into wasm: {e}"
        );
    }

    // Exec and Attach through containerd's streaming server (`kubectl exec -it`, `kubectl attach`).
    let t = Instant::now();
    exec_attach::exec_native(&node, handler, &native);
    exec_attach::attach_native(&node, handler, &pod);
    if let Some(w) = &wasm {
        exec_attach::exec_wasm(&node, w);
        exec_attach::attach_wasm(&node, w);
    }
    eprintln!("{handler}: Exec and Attach checks in {:?}", t.elapsed());

    // The wasm annotations reach hybox (the handler passes them through): a native program in a
    // container that says it is wasm is refused, naming the annotation.
    if hybox {
        let e = start_annotated(
            &node,
            &pod,
            "liar",
            BUSYBOX,
            &["/ticker"],
            ("run.oci.handler", "wasm"),
        )
        .expect_err("an ELF under run.oci.handler=wasm");
        assert!(e.1.message().contains("run.oci.handler"), "{}", e.1);
        if let Some(id) = e.0 {
            node.cri
                .remove_container(RemoveContainerRequest { container_id: id })
                .unwrap();
        }
    }

    // Stats and live updates for both kinds.
    assert_stats(&node, "native", &native);
    assert_update(&node, "native", &native, 128 * MIB);
    if let Some(w) = &wasm {
        assert_stats(&node, "wasm", w);
        assert_update(&node, "wasm", w, 96 * MIB);
    }

    // An OOM kill is the container's reason.
    let bomb = [
        "/bin/sh",
        "-c",
        "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done",
    ];
    assert_oom_killed(&node, &pod, handler, "bomb", BUSYBOX, &bomb, &[], 32 * MIB);
    if hybox {
        // A wasm guest over its limit: the kernel's OOM kill of its cgroup, as for native.
        assert_oom_killed(
            &node,
            &pod,
            handler,
            "wasm-bomb",
            WASM,
            &["/alloc.wasm"],
            &["1024"],
            64 * MIB,
        );
    }

    // Stop (grace period 1 s, then SIGKILL) and remove, then the pod.
    stop_and_remove(&node, &native);
    if let Some(w) = &wasm {
        stop_and_remove(&node, w);
    }
    node.cri
        .stop_pod_sandbox(StopPodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .unwrap();
    node.cri
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .unwrap();
    assert_nothing_left(&node, handler);
    eprintln!("{handler}: pod scenario in {:?}", t0.elapsed());
    let left = node.ctd.stop();
    assert!(left.is_empty(), "left behind after teardown: {left:?}");
}

/// After RemovePodSandbox: no process but containerd (the pod's shim exits by itself), no cgroup
/// below the pod parent, no mount under containerd's dirs, no runtime state, no netns.
fn assert_nothing_left(node: &Node, handler: &str) {
    let ctd = &node.ctd;
    let namespaces = ctd.namespaces();
    let parent = format!("/{}", ctd.cri_cgroup_parent());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let left = ctd.leftovers(&namespaces);
        let procs: Vec<_> = left
            .processes
            .iter()
            .filter(|p| p.pid != ctd.pid())
            .collect();
        let cgroups: Vec<_> = left
            .cgroups
            .iter()
            .filter(|c| !c.ends_with(parent.trim_start_matches('/')))
            .filter(|c| {
                !namespaces
                    .iter()
                    .any(|n| c.file_name().is_some_and(|f| f == n.as_str()))
            })
            .collect();
        let states: Vec<PathBuf> = ["hybox-root", "runc"]
            .iter()
            .flat_map(|d| {
                std::fs::read_dir(ctd.dir.join(d).join("k8s.io"))
                    .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
                    .unwrap_or_default()
            })
            .chain(
                std::fs::read_dir(ctd.dir.join("state/io.containerd.grpc.v1.cri/netns"))
                    .map(|rd| rd.flatten().map(|e| e.path()).collect::<Vec<_>>())
                    .unwrap_or_default(),
            )
            .collect();
        if procs.is_empty() && cgroups.is_empty() && left.mounts.is_empty() && states.is_empty() {
            return;
        }
        assert!(
            Instant::now() < until,
            "{handler}: left after RemovePodSandbox: processes {procs:?}, cgroups {cgroups:?}, \
             mounts {:?}, state {states:?}",
            left.mounts
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn cri_pod_with_wasm_and_native_containers_on_hybox() {
    if !common::privileged("cri_pod_with_wasm_and_native_containers_on_hybox") {
        return;
    }
    pod_scenario("hybox", true);
}

#[test]
fn cri_pod_on_runc_is_the_control() {
    if !common::privileged("cri_pod_on_runc_is_the_control") {
        return;
    }
    pod_scenario("runc", false);
}
