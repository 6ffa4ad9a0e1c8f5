//! What tests/cri.rs needs around containerd's CRI service: a blocking client of the CRI v1 gRPC
//! API (k8s-cri's generated tonic client over containerd's unix socket), the node (a private
//! containerd with a `hybox` and a `runc` handler, CNI for pods with their own network namespace),
//! and the images the test builds and imports (no registry).

pub mod pods;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::*;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint, Uri};
use tonic::Status;
use tower::service_fn;

use super::common;
use super::common::containerd::{Containerd, Options};
use super::common::oci_image::{Config, Image};
use super::support::{guest, hybox_runc};

/// Every CRI call gets this long (a pod's first start pulls nothing, but a loaded machine is slow).
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// A blocking CRI client: one current-thread tokio runtime, the runtime and image services.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    runtime: RuntimeServiceClient<Channel>,
    images: ImageServiceClient<Channel>,
}

macro_rules! rpc {
    ($($name:ident($req:ty) -> $resp:ty;)*) => {
        $(
            pub fn $name(&self, req: $req) -> Result<$resp, Status> {
                let mut c = self.runtime.clone();
                self.rt
                    .block_on(async move {
                        tokio::time::timeout(CALL_TIMEOUT, c.$name(req))
                            .await
                            .unwrap_or_else(|_| {
                                Err(Status::deadline_exceeded(concat!(stringify!($name), ": no answer")))
                            })
                    })
                    .map(|r| r.into_inner())
            }
        )*
    };
}

impl Cri {
    /// Connects to a CRI endpoint (containerd's gRPC socket).
    pub fn connect(socket: &Path) -> Cri {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let path = socket.to_path_buf();
        let channel = rt
            .block_on(
                // The URI is a placeholder: the connector ignores it and dials the socket.
                Endpoint::try_from("http://[::]")
                    .expect("endpoint")
                    .connect_with_connector(service_fn(move |_: Uri| {
                        let path = path.clone();
                        async move {
                            Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(path).await?))
                        }
                    })),
            )
            .unwrap_or_else(|e| panic!("connect to {}: {e}", socket.display()));
        Cri {
            rt,
            runtime: RuntimeServiceClient::new(channel.clone()),
            images: ImageServiceClient::new(channel),
        }
    }

    rpc! {
        version(VersionRequest) -> VersionResponse;
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
    }

    /// The image references the CRI sees (`ListImages`).
    pub fn list_images(&self) -> Result<Vec<String>, Status> {
        let mut c = self.images.clone();
        self.rt
            .block_on(async move { c.list_images(ListImagesRequest { filter: None }).await })
            .map(|r| {
                r.into_inner()
                    .images
                    .into_iter()
                    .flat_map(|i| i.repo_tags)
                    .collect()
            })
    }

    /// A container's status (panics if the CRI has none).
    pub fn status(&self, id: &str) -> ContainerStatus {
        self.container_status(ContainerStatusRequest {
            container_id: id.into(),
            verbose: false,
        })
        .unwrap_or_else(|e| panic!("ContainerStatus {id}: {e}"))
        .status
        .unwrap_or_else(|| panic!("ContainerStatus {id}: no status"))
    }

    /// Waits until the container has exited and returns its status.
    pub fn wait_exited(&self, id: &str, timeout: Duration) -> ContainerStatus {
        let until = Instant::now() + timeout;
        loop {
            let st = self.status(id);
            if st.state == ContainerState::ContainerExited as i32 {
                return st;
            }
            assert!(
                Instant::now() < until,
                "container {id} still {:?} after {timeout:?}",
                ContainerState::try_from(st.state)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

pub const PAUSE: &str = "hybox.test/pause:latest";
/// Debian's static busybox with the native ticker guest at /ticker.
pub const BUSYBOX: &str = "hybox.test/busybox-ticker:latest";
/// The ticker guest as a wasm module, the image's entrypoint: nothing but its bytes says wasm.
pub const WASM: &str = "hybox.test/ticker-wasm:latest";

fn native_guest(name: &str) -> Vec<u8> {
    let p = common::repo().join("examples/out/native").join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (build the guests: examples/build.sh)", p.display()))
}

/// The test's images as OCI archives in `dir`: the pause image (the static pause guest), busybox
/// with the native ticker, the wasm ticker.
pub fn build_images(dir: &Path) -> Vec<PathBuf> {
    let pause = Image::new(PAUSE)
        .file("pause", native_guest("pause"), 0o755)
        .config(Config {
            entrypoint: vec!["/pause".into()],
            ..Config::default()
        });
    let busybox = Image::busybox(BUSYBOX, &["echo", "sleep", "cat", "hostname", "stty"])
        .expect("busybox image (busybox-static)")
        .file("ticker", native_guest("ticker"), 0o755);
    let wasm = Image::new(WASM)
        // Executable, so that runc fails on what the file is (exec format error), not on its mode.
        .file("ticker.wasm", guest("ticker.wasm"), 0o755)
        // The memory bomb of the OOM step (`/alloc.wasm MIB` touches MIB MiB).
        .file("alloc.wasm", guest("alloc.wasm"), 0o755)
        .config(Config {
            entrypoint: vec!["/ticker.wasm".into()],
            ..Config::default()
        });
    [("pause", pause), ("busybox", busybox), ("wasm", wasm)]
        .into_iter()
        .map(|(n, img)| {
            let p = dir.join(format!("{n}.tar"));
            img.write_oci_archive(&p).expect("write image");
            p
        })
        .collect()
}

/// A node: a private containerd with the CRI plugin, the `hybox` handler (hybox-runc) and the `runc`
/// handler, CNI for pods with their own network namespace, the images imported into `k8s.io`.
pub struct Node {
    pub ctd: Containerd,
    pub cri: Cri,
    /// Images, the CNI dirs, the pods' log dirs.
    pub scratch: tempfile::TempDir,
}

impl Node {
    pub fn start() -> Node {
        Node::start_with(|_| {})
    }

    /// [`Node::start`] with containerd's options changed by `adjust` first.
    pub fn start_with(adjust: impl FnOnce(&mut Options)) -> Node {
        let scratch = tempfile::Builder::new()
            .prefix("hybox-cri-")
            .tempdir()
            .unwrap();
        let (conf, bin) = cni(scratch.path());
        let policy = scratch.path().join("runtime.json");
        let mut options = Options {
            cri: true,
            hybox_binary: Some(hybox_runc()),
            sandbox_image: PAUSE.into(),
            cni: Some((conf, bin)),
            env: vec![("HYBOX_RUNTIME_POLICY".into(), policy.display().to_string())],
            ..Options::default()
        };
        adjust(&mut options);
        let ctd = Containerd::start_with(options).expect("start containerd with CRI");
        // hybox-runc reads it at each create: written once containerd's dirs are known.
        std::fs::write(&policy, runtime_policy(&ctd.dir)).unwrap();
        for archive in build_images(scratch.path()) {
            ctd.import("k8s.io", &archive).expect("import image");
        }
        let cri = Cri::connect(&ctd.address);
        Node { ctd, cri, scratch }
    }

    /// A fresh log directory for a pod.
    pub fn log_dir(&self, pod: &str) -> PathBuf {
        let d = self.scratch.path().join("logs").join(pod);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

/// The runtime policy of the `hybox` handler: the shipped one plus what containerd's CRI binds into
/// every container of a pod: its per-pod `hostname`, `hosts`, `resolv.conf` (under the root dir)
/// and the pod's `shm` (under the state dir), as deploy/kubernetes/runtime-policy.json grants on a
/// node (there also kubelet's per-pod files), and `network: loopback`, without which a native
/// container may not join the pod's network namespace (docs/oci.md, "Pods").
fn runtime_policy(containerd_dir: &Path) -> String {
    serde_json::json!({
        "version": 1,
        "description": "tests/cri.rs: the shipped runtime policy plus containerd's CRI per-pod files and pod networks",
        "resources": {"memory": "1G", "cpus": 2, "pids": 512, "timeout": "24h"},
        "network": "loopback",
        "filesystem": {
            "tmp": {"size": "64M"},
            "mounts": [
                {"host": containerd_dir.join("root/io.containerd.grpc.v1.cri/sandboxes"), "guest": "/cri-sandboxes", "mode": "rw"},
                {"host": containerd_dir.join("state/io.containerd.grpc.v1.cri/sandboxes"), "guest": "/cri-sandbox-state", "mode": "rw"}
            ]
        }
    })
    .to_string()
}

/// The CNI config and plugin dirs: Debian's `loopback` (containerd's CRI always adds lo) and
/// scripts/oci-cni-dummy, which gives the pod an `eth0` with an address and no way out (a bridge
/// with no ports in the pod's own netns: nothing reaches the host or any network).
fn cni(dir: &Path) -> (PathBuf, PathBuf) {
    let conf = dir.join("cni/conf");
    let bin = dir.join("cni/bin");
    std::fs::create_dir_all(&conf).unwrap();
    std::fs::create_dir_all(&bin).unwrap();
    let loopback = Path::new("/usr/lib/cni/loopback");
    assert!(
        loopback.exists(),
        "{} is missing: install containernetworking-plugins (scripts/setup)",
        loopback.display()
    );
    std::os::unix::fs::symlink(loopback, bin.join("loopback")).unwrap();
    std::os::unix::fs::symlink(
        common::repo().join("scripts/oci-cni-dummy"),
        bin.join("oci-cni-dummy"),
    )
    .unwrap();
    std::fs::write(
        conf.join("10-hybox-dummy.conflist"),
        r#"{"cniVersion":"1.0.0","name":"hybox-dummy","plugins":[{"type":"oci-cni-dummy"}]}"#,
    )
    .unwrap();
    (conf, bin)
}

/// The lines of a CRI log file (`TIMESTAMP STREAM TAG MESSAGE`) as (stream, message), full lines only.
pub fn log_lines(path: &Path) -> Vec<(String, String)> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(4, ' ');
            let (_ts, stream, tag, msg) = (f.next()?, f.next()?, f.next()?, f.next().unwrap_or(""));
            (tag == "F").then(|| (stream.to_string(), msg.to_string()))
        })
        .collect()
}

/// Waits until the log file holds a line `message` on `stream`; returns all its lines.
pub fn wait_log(
    path: &Path,
    stream: &str,
    message: &str,
    timeout: Duration,
) -> Vec<(String, String)> {
    let until = Instant::now() + timeout;
    loop {
        let lines = log_lines(path);
        if lines.iter().any(|(s, m)| s == stream && m == message) {
            return lines;
        }
        assert!(
            Instant::now() < until,
            "{} has no {stream} line {message:?} after {timeout:?}: {lines:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
