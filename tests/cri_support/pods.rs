//! Pods and containers as kubelet asks for them, for tests/cri.rs, tests/cri_cache.rs and the CRI
//! benchmark (runner/benches/cri/): one PodSandboxConfig and ContainerConfig (own network and IPC
//! namespace per pod, a pid namespace per container, the pod's cgroup parent, memory and CPU
//! limits), and the teardown kubelet does.

#![allow(dead_code)] // each user (the test, the benchmark) takes a subset

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_cri::v1::*;
use tonic::Status;

use super::{log_lines, Node};

pub const MIB: i64 = 1 << 20;

pub struct Pod {
    pub id: String,
    pub config: PodSandboxConfig,
    /// The pod's log directory: container NAME logs to `NAME.log` in it.
    pub logs: PathBuf,
}

fn namespaces() -> NamespaceOption {
    NamespaceOption {
        network: NamespaceMode::Pod as i32,
        pid: NamespaceMode::Container as i32,
        ipc: NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

/// The PodSandboxConfig of pod `name` (its own network namespace, hostname `NAME-host`).
pub fn pod_config(node: &Node, name: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: format!("{name}-uid"),
            namespace: "default".into(),
            attempt: 0,
        }),
        hostname: format!("{name}-host"),
        log_directory: node.log_dir(name).display().to_string(),
        labels: HashMap::from([("app".into(), name.into())]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("/{}", node.ctd.cri_cgroup_parent()),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// RunPodSandbox of `config` on `handler`.
pub fn run_pod(node: &Node, handler: &str, config: PodSandboxConfig) -> Result<Pod, Status> {
    let id = node
        .cri
        .run_pod_sandbox(RunPodSandboxRequest {
            config: Some(config.clone()),
            runtime_handler: handler.into(),
        })?
        .pod_sandbox_id;
    let logs = PathBuf::from(&config.log_directory);
    Ok(Pod { id, config, logs })
}

/// A container `name` of `image` running `command` + `args`, logging to `NAME.log`, with a memory
/// limit and half a CPU.
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    args: &[&str],
    memory: i64,
) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                memory_limit_in_bytes: memory,
                cpu_period: 100_000,
                cpu_quota: 50_000,
                ..Default::default()
            }),
            security_context: Some(LinuxContainerSecurityContext {
                namespace_options: Some(namespaces()),
                ..Default::default()
            }),
        }),
        ..Default::default()
    }
}

/// CreateContainer in `pod`; the container's id.
pub fn create(node: &Node, pod: &Pod, config: ContainerConfig) -> Result<String, Status> {
    Ok(node
        .cri
        .create_container(CreateContainerRequest {
            pod_sandbox_id: pod.id.clone(),
            config: Some(config),
            sandbox_config: Some(pod.config.clone()),
        })?
        .container_id)
}

/// StartContainer.
pub fn start(node: &Node, id: &str) -> Result<(), Status> {
    node.cri
        .start_container(StartContainerRequest {
            container_id: id.into(),
        })
        .map(|_| ())
}

/// Waits until container `name`'s log in `pod` has the full line `message` on `stream`, reading
/// the file every `poll`; the time it was seen, or an error after `timeout`.
pub fn wait_line(
    pod: &Pod,
    name: &str,
    stream: &str,
    message: &str,
    poll: Duration,
    timeout: Duration,
) -> Result<Instant, String> {
    let log = pod.logs.join(format!("{name}.log"));
    let until = Instant::now() + timeout;
    loop {
        if log_lines(&log)
            .iter()
            .any(|(s, m)| s == stream && m == message)
        {
            return Ok(Instant::now());
        }
        if Instant::now() > until {
            return Err(format!(
                "{} has no {stream} line {message:?} after {timeout:?}: {:?}",
                log.display(),
                log_lines(&log)
            ));
        }
        std::thread::sleep(poll);
    }
}

/// StopContainer (grace period `grace` s) and RemoveContainer.
pub fn stop_and_remove(node: &Node, id: &str, grace: i64) -> Result<(), Status> {
    node.cri.stop_container(StopContainerRequest {
        container_id: id.into(),
        timeout: grace,
    })?;
    node.cri
        .remove_container(RemoveContainerRequest {
            container_id: id.into(),
        })
        .map(|_| ())
}

/// StopPodSandbox (its containers are killed) and RemovePodSandbox, as kubelet ends a pod.
pub fn stop_and_remove_pod(node: &Node, pod: &Pod) -> Result<(), Status> {
    node.cri.stop_pod_sandbox(StopPodSandboxRequest {
        pod_sandbox_id: pod.id.clone(),
    })?;
    node.cri
        .remove_pod_sandbox(RemovePodSandboxRequest {
            pod_sandbox_id: pod.id.clone(),
        })
        .map(|_| ())
}
