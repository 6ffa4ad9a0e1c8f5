//! A private containerd for a test: its own config.toml, root, state and sockets in a temp dir, its
//! own namespace, and `ctr` against it. On drop it deletes every task and container it knows,
//! stops containerd, kills every shim and container process it started, unmounts and removes its
//! dirs and cgroups (see `docs/notes-oci.md` for what containerd 1.6 writes outside its dirs).
//!
//! Needs `tempfile`, `libc` and `super::procs` (which needs `sha2`).
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::procs;

/// How to configure the private containerd.
#[derive(Clone, Debug)]
pub struct Options {
    /// `overlayfs` (works here on ext4) or `native` (copies every layer; slower, no mounts).
    pub snapshotter: String,
    /// Enable the CRI plugin (`io.containerd.grpc.v1.cri`), with `restrict_oom_score_adj = true`
    /// (root here lacks CAP_SYS_RESOURCE), a `runc` handler and a `hybox` handler.
    pub cri: bool,
    /// The `hybox` CRI handler's `options.BinaryName` (a runc-compatible binary).
    pub hybox_binary: Option<PathBuf>,
    /// The CRI plugin's `sandbox_image` (must be imported into the `k8s.io` namespace first).
    pub sandbox_image: String,
    /// A CNI config dir and plugin dir for CRI pods that are not hostNetwork (e.g. a loopback-only
    /// conflist with Debian's containernetworking-plugins in /usr/lib/cni).
    pub cni: Option<(PathBuf, PathBuf)>,
    /// Extra environment for containerd (shims and runtimes inherit it).
    pub env: Vec<(String, String)>,
    /// Variables taken out of containerd's environment (systemd gives a system containerd no
    /// `HOME`: so does a test that removes it here).
    pub env_remove: Vec<String>,
    /// The CRI plugin's `restrict_oom_score_adj` (default true: root here lacks CAP_SYS_RESOURCE;
    /// false shows what happens without it).
    pub restrict_oom_score_adj: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            snapshotter: "overlayfs".into(),
            cri: false,
            hybox_binary: None,
            sandbox_image: "hybox.test/pause:latest".into(),
            cni: None,
            env: Vec::new(),
            env_remove: Vec::new(),
            restrict_oom_score_adj: true,
        }
    }
}

pub struct Containerd {
    /// The temp dir holding config.toml, root/, state/, the sockets, containerd.log, fifo/, runc/.
    pub dir: PathBuf,
    /// The gRPC socket (`ctr --address`, a CRI client's endpoint).
    pub address: PathBuf,
    /// The namespace `ctr()` uses (unique per instance: its cgroups are `/<namespace>/<id>`).
    pub namespace: String,
    pub options: Options,
    child: Option<Child>,
    tmp: Option<tempfile::TempDir>,
    run_dirs: procs::RunDirs,
}

impl Containerd {
    pub fn start() -> io::Result<Containerd> {
        Containerd::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> io::Result<Containerd> {
        let tmp = tempfile::Builder::new().prefix("hybox-ctd-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        for d in ["fifo", "runc", "opt"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        let config = dir.join("config.toml");
        std::fs::write(&config, config_toml(&dir, &options))?;
        let log = std::fs::File::create(dir.join("containerd.log"))?;
        let run_dirs = procs::RunDirs::note();
        let mut cmd = Command::new("containerd");
        cmd.arg("--config")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for k in &options.env_remove {
            cmd.env_remove(k);
        }
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        procs::close_extra_fds(&mut cmd);
        let child = cmd.spawn()?;
        let mut c = Containerd {
            address: dir.join("containerd.sock"),
            namespace: procs::unique("hybox"),
            dir,
            options,
            child: Some(child),
            tmp: Some(tmp),
            run_dirs,
        };
        c.wait_ready(Duration::from_secs(20))?;
        Ok(c)
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                return Err(io::Error::other(format!(
                    "containerd exited ({status}): {}",
                    self.log_tail()
                )));
            }
            if self.address.exists()
                && self
                    .ctr()
                    .arg("version")
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(io::Error::other(format!(
                    "containerd not ready after {timeout:?}: {}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// The last 4 KiB of containerd's log.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read(self.dir.join("containerd.log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(4096)..]).into_owned()
    }

    /// `ctr --address SOCK --namespace NS`, to add arguments to.
    pub fn ctr(&self) -> Command {
        self.ctr_in(&self.namespace)
    }

    pub fn ctr_in(&self, namespace: &str) -> Command {
        let mut c = Command::new("ctr");
        c.arg("--address")
            .arg(&self.address)
            .arg("--namespace")
            .arg(namespace)
            .stdin(Stdio::null());
        c
    }

    /// Runs `ctr ARGS` in our namespace and returns its output, whatever its status.
    pub fn ctr_output(&self, args: &[&str]) -> Output {
        self.ctr().args(args).output().expect("run ctr")
    }

    /// Runs `ctr ARGS` and returns its stdout; panics with stderr and the daemon's log if it fails.
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr_output(args);
        assert!(
            out.status.success(),
            "ctr {args:?}: {}\nstdout: {}\nstderr: {}\ncontainerd log: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Imports an oci-archive or docker-archive into a namespace (ours, or `k8s.io` for CRI).
    pub fn import(&self, namespace: &str, archive: &Path) -> io::Result<()> {
        let out = self
            .ctr_in(namespace)
            .args(["images", "import"])
            .arg(archive)
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "ctr images import: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// The arguments that keep `ctr run` inside our dir: FIFOs in `fifo/` (else /run/containerd/fifo)
    /// and runc's state root in `runc/` (else /run/containerd/runc/NS). Put them after `run`.
    pub fn run_args(&self) -> Vec<String> {
        vec![
            "--fifo-dir".into(),
            self.dir.join("fifo").display().to_string(),
            "--runc-root".into(),
            self.dir.join("runc").display().to_string(),
        ]
    }

    /// `ctr run --rm [run_args] [extra] IMAGE ID ARGS...` and its output.
    pub fn run(&self, extra: &[&str], image: &str, id: &str, args: &[&str]) -> Output {
        let mut c = self.ctr();
        c.args(["run", "--rm"])
            .args(self.run_args())
            .args(extra)
            .arg(image)
            .arg(id)
            .args(args);
        c.output().expect("run ctr run")
    }

    /// The shim socket containerd 1.6 gives a task (see [`procs::shim_socket`]).
    pub fn shim_socket(&self, namespace: &str, id: &str) -> PathBuf {
        procs::shim_socket(&self.address, namespace, id)
    }

    /// The shims this containerd started (they name our socket in `-address`).
    pub fn shims(&self) -> Vec<procs::Proc> {
        let addr = self.address.display().to_string();
        procs::processes()
            .into_iter()
            .filter(|p| {
                p.argv
                    .first()
                    .is_some_and(|a| a.contains("containerd-shim"))
                    && p.argv.iter().any(|a| a == &addr)
            })
            .collect()
    }

    /// The namespaces that exist in this containerd.
    pub fn namespaces(&self) -> Vec<String> {
        let out = Command::new("ctr")
            .arg("--address")
            .arg(&self.address)
            .args(["namespaces", "ls", "-q"])
            .output();
        match out {
            Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect(),
            _ => vec![self.namespace.clone()],
        }
    }

    /// The cgroup prefixes our containers live under: `/NS` for ctr (cgroupsPath `/NS/ID`), and for
    /// CRI pods the parents our CRI client used (`/hybox-pods` by convention of these tests).
    pub fn cgroup_prefixes(&self, namespaces: &[String]) -> Vec<String> {
        let mut p: Vec<String> = namespaces
            .iter()
            .filter(|n| n.as_str() != "k8s.io")
            .map(|n| format!("/{n}"))
            .collect();
        if self.options.cri {
            p.push(format!("/{}", self.cri_cgroup_parent()));
        }
        p
    }

    /// The cgroup parent CRI tests should put in their PodSandboxConfig (`linux.cgroup_parent`):
    /// unique to this instance so that drop can find and remove it.
    pub fn cri_cgroup_parent(&self) -> String {
        format!("{}-pods", self.namespace)
    }

    /// What is left of this instance now: processes naming our dir or socket (containerd, shims,
    /// runc), processes in our cgroups, mounts under our dir, and our cgroups.
    pub fn leftovers(&self, namespaces: &[String]) -> procs::Leftovers {
        let dir = self.dir.display().to_string();
        let mut processes = procs::processes_mentioning(&dir);
        let cgroups = procs::cgroups_under(&self.cgroup_prefixes(namespaces));
        for cg in &cgroups {
            for pid in std::fs::read_to_string(cg.join("cgroup.procs"))
                .unwrap_or_default()
                .lines()
                .filter_map(|l| l.parse().ok())
            {
                if !processes.iter().any(|p| p.pid == pid) {
                    processes.push(procs::Proc {
                        pid,
                        ppid: 0,
                        argv: vec![format!("(in {})", cg.display())],
                    });
                }
            }
        }
        procs::Leftovers {
            processes,
            mounts: procs::mounts_under(&self.dir),
            cgroups,
        }
    }

    /// Tears everything down and reports what could not be removed (empty when clean). Drop does the
    /// same and ignores the report.
    pub fn stop(mut self) -> procs::Leftovers {
        self.teardown()
    }

    fn teardown(&mut self) -> procs::Leftovers {
        let Some(mut child) = self.child.take() else {
            return procs::Leftovers::default();
        };
        let namespaces = self.namespaces();
        let mut ids: Vec<(String, String)> = Vec::new();
        // 1. Politely, through containerd: kill and delete every task, delete every container.
        if child.try_wait().ok().flatten().is_none() {
            for ns in &namespaces {
                let list = self.ctr_in(ns).args(["task", "ls", "-q"]).output();
                let tasks: Vec<String> = list
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default();
                for t in &tasks {
                    let _ = self
                        .ctr_in(ns)
                        .args(["task", "resume", t])
                        .stderr(Stdio::null())
                        .output();
                    let _ = self
                        .ctr_in(ns)
                        .args(["task", "kill", "-a", "-s", "KILL", t])
                        .stderr(Stdio::null())
                        .output();
                }
                for t in &tasks {
                    let until = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < until {
                        let o = self
                            .ctr_in(ns)
                            .args(["task", "delete", t])
                            .stderr(Stdio::null())
                            .output();
                        if o.map(|o| o.status.success()).unwrap_or(true) {
                            break;
                        }
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                let list = self.ctr_in(ns).args(["containers", "ls", "-q"]).output();
                for c in list
                    .map(|o| {
                        String::from_utf8_lossy(&o.stdout)
                            .lines()
                            .map(str::to_string)
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default()
                {
                    ids.push((ns.clone(), c.clone()));
                    let _ = self
                        .ctr_in(ns)
                        .args(["containers", "delete", &c])
                        .stderr(Stdio::null())
                        .output();
                }
            }
        }
        // 2. Stop containerd (SIGTERM, then SIGKILL after 5 s).
        let shims: Vec<i32> = self.shims().iter().map(|p| p.pid).collect();
        procs::signal(child.id() as i32, libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(5);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        // 3. Whatever is left: shims (and their children: container processes), processes in our
        //    cgroups or naming our dir; then the cgroups, the mounts, the shim sockets, the runc roots.
        for p in self.shims() {
            if let Some((_, ns, id)) = procs::shim_task(&p) {
                ids.push((ns, id));
            }
        }
        let cgroups = procs::cgroups_under(&self.cgroup_prefixes(&namespaces));
        procs::thaw(&cgroups);
        let mut pids: Vec<i32> = Vec::new();
        for s in shims
            .iter()
            .copied()
            .chain(self.shims().iter().map(|p| p.pid))
        {
            pids.extend(procs::tree(s));
        }
        pids.extend(self.leftovers(&namespaces).processes.iter().map(|p| p.pid));
        pids.sort();
        pids.dedup();
        procs::kill_all(&pids);
        procs::remove_cgroups(&procs::cgroups_under(&self.cgroup_prefixes(&namespaces)));
        procs::unmount_all_under(&self.dir);
        for ns in &namespaces {
            // Where ctr/CRI put runc's root when not told otherwise (empty when ours was used).
            let _ = std::fs::remove_dir(Path::new("/run/containerd/runc").join(ns));
        }
        for (ns, id) in &ids {
            // The socket of a shim that was SIGKILLed (a shim removes its own on a clean exit).
            let _ = std::fs::remove_file(self.shim_socket(ns, id));
        }
        self.run_dirs.cleanup();
        let left = self.leftovers(&namespaces);
        if let Some(tmp) = self.tmp.take() {
            if left.mounts.is_empty() {
                let _ = tmp.close();
            } else {
                // Never delete through a mount we could not detach.
                let _ = tmp.keep();
            }
        }
        left
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("containerd {}: left behind: {left:?}", self.dir.display());
        }
    }
}

/// The config.toml for a private containerd in `dir`.
pub fn config_toml(dir: &Path, o: &Options) -> String {
    let d = dir.display();
    let mut s = format!(
        r#"version = 2
root = "{d}/root"
state = "{d}/state"
{disabled}
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""
[plugins."io.containerd.internal.v1.opt"]
  path = "{d}/opt"
"#,
        disabled = if o.cri {
            "disabled_plugins = []"
        } else {
            r#"disabled_plugins = ["io.containerd.grpc.v1.cri"]"#
        },
    );
    if o.cri {
        let (cni_conf, cni_bin) = o
            .cni
            .clone()
            .unwrap_or_else(|| (dir.join("cni/conf"), dir.join("cni/bin")));
        s += &format!(
            r#"[plugins."io.containerd.grpc.v1.cri"]
  restrict_oom_score_adj = {restrict}
  sandbox_image = "{sandbox}"
  disable_apparmor = true
  enable_selinux = false
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "{snap}"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        Root = "{d}/runc"
"#,
            restrict = o.restrict_oom_score_adj,
            sandbox = o.sandbox_image,
            snap = o.snapshotter,
        );
        if let Some(bin) = &o.hybox_binary {
            s += &format!(
                r#"    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hybox]
      runtime_type = "io.containerd.runc.v2"
      # The wasm annotations reach hybox-runc's config.json (containerd drops the rest).
      pod_annotations = ["module.wasm.image/variant", "run.oci.handler"]
      container_annotations = ["module.wasm.image/variant", "run.oci.handler"]
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.hybox.options]
        BinaryName = "{bin}"
        Root = "{d}/hybox-root"
"#,
                bin = bin.display()
            );
        }
        s += &format!(
            r#"  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{}"
    conf_dir = "{}"
"#,
            cni_bin.display(),
            cni_conf.display()
        );
    }
    s
}
