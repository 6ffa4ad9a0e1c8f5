//! A private dockerd (Debian's docker.io 20.10) for a test: a daemon.json of its own with data-root,
//! exec-root, pidfile, trust key and a unix socket in a temp dir, no bridge, no iptables, a unique
//! cgroup parent and custom runtimes; `docker` (Debian's CLI, /usr/bin/docker) against it; a clean
//! stop by pid that leaves no process (dockerd, its containerd, shims, containers), mount or cgroup.
//!
//! Needs `tempfile`, `libc`, `serde_json` and `super::procs`.
#![allow(dead_code)]

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::procs;

/// Debian's docker CLI. `docker` on PATH may be another (here /usr/local/bin/docker, a 28.x CLI).
pub const DOCKER_CLI: &str = "/usr/bin/docker";

#[derive(Clone, Debug, Default)]
pub struct Options {
    /// Extra runtimes: name → path of a runc-compatible binary (`docker run --runtime NAME`).
    pub runtimes: Vec<(String, PathBuf)>,
    /// `default-runtime` (else runc).
    pub default_runtime: Option<String>,
    /// Keys merged into daemon.json last (override anything).
    pub extra: serde_json::Map<String, Value>,
    /// Extra environment for dockerd (its containerd, the shims and the runtimes inherit it).
    pub env: Vec<(String, String)>,
}

pub struct Dockerd {
    /// data/, exec/, docker.sock, docker.pid, daemon.json, key.json, dockerd.log.
    pub dir: PathBuf,
    pub socket: PathBuf,
    /// The cgroup parent of every container (unique to this instance), relative to each hierarchy.
    pub cgroup_parent: String,
    child: Option<Child>,
    tmp: Option<tempfile::TempDir>,
    /// Whether /run/docker/plugins existed before we started (dockerd creates it, whatever its roots).
    had_run_docker: bool,
    /// /run/containerd/s: the shims of dockerd's containerd put their sockets there.
    run_dirs: procs::RunDirs,
}

impl Dockerd {
    pub fn start() -> io::Result<Dockerd> {
        Dockerd::start_with(Options::default())
    }

    pub fn start_with(options: Options) -> io::Result<Dockerd> {
        // Short: the containerd socket lives at exec/containerd/containerd.sock (108-byte limit).
        let tmp = tempfile::Builder::new().prefix("hybox-dkd-").tempdir()?;
        let dir = tmp.path().to_path_buf();
        let cgroup_parent = procs::unique("hybox-docker");
        let config = daemon_json(&dir, &cgroup_parent, &options);
        let config_path = dir.join("daemon.json");
        std::fs::write(
            &config_path,
            serde_json::to_vec_pretty(&config).expect("json"),
        )?;
        let had_run_docker = Path::new("/run/docker").exists();
        let run_dirs = procs::RunDirs::note();
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let mut cmd = Command::new("dockerd");
        cmd.arg("--config-file")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, v) in &options.env {
            cmd.env(k, v);
        }
        procs::close_extra_fds(&mut cmd);
        let child = cmd.spawn()?;
        let mut d = Dockerd {
            socket: dir.join("docker.sock"),
            dir,
            cgroup_parent,
            child: Some(child),
            tmp: Some(tmp),
            had_run_docker,
            run_dirs,
        };
        d.wait_ready(Duration::from_secs(30))?;
        Ok(d)
    }

    fn wait_ready(&mut self, timeout: Duration) -> io::Result<()> {
        let until = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.as_mut().expect("running").try_wait()? {
                return Err(io::Error::other(format!(
                    "dockerd exited ({status}): {}",
                    self.log_tail()
                )));
            }
            if self.socket.exists()
                && self
                    .docker()
                    .args(["version", "--format", "{{.Server.Version}}"])
                    .output()
                    .map(|o| o.status.success())
                    .unwrap_or(false)
            {
                return Ok(());
            }
            if Instant::now() > until {
                return Err(io::Error::other(format!(
                    "dockerd not ready after {timeout:?}: {}",
                    self.log_tail()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// dockerd's pid (also in `DIR/docker.pid`).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    pub fn log_tail(&self) -> String {
        let log = std::fs::read(self.dir.join("dockerd.log")).unwrap_or_default();
        String::from_utf8_lossy(&log[log.len().saturating_sub(4096)..]).into_owned()
    }

    /// `docker -H unix://SOCK` (Debian's CLI), to add arguments to.
    pub fn docker(&self) -> Command {
        let mut c = Command::new(DOCKER_CLI);
        c.arg("-H")
            .arg(format!("unix://{}", self.socket.display()))
            .stdin(Stdio::null())
            // The CLI's own config (~/.docker) is not the test's business.
            .env("DOCKER_CONFIG", self.dir.join("cli"));
        c
    }

    pub fn docker_output(&self, args: &[&str]) -> Output {
        self.docker().args(args).output().expect("run docker")
    }

    /// Runs `docker ARGS`, returns stdout; panics with stderr and the daemon's log on failure.
    pub fn docker_ok(&self, args: &[&str]) -> String {
        let out = self.docker_output(args);
        assert!(
            out.status.success(),
            "docker {args:?}: {}\nstdout: {}\nstderr: {}\ndockerd log: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `docker load -i ARCHIVE` (a docker-archive, as oci_image.rs writes).
    pub fn load(&self, archive: &Path) -> io::Result<()> {
        let out = self.docker().arg("load").arg("-i").arg(archive).output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "docker load: {}",
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// dockerd's containerd socket (`ctr --address ... -n moby` sees docker's containers).
    pub fn containerd_socket(&self) -> PathBuf {
        self.dir.join("exec/containerd/containerd.sock")
    }

    /// What is left of this instance: processes naming our dir (dockerd, its containerd, shims,
    /// runtimes) or in our cgroups, mounts under our dir, our cgroups.
    pub fn leftovers(&self) -> procs::Leftovers {
        let mut processes = procs::processes_mentioning(&self.dir.display().to_string());
        let cgroups = procs::cgroups_under(std::slice::from_ref(&self.cgroup_parent));
        for cg in &cgroups {
            let pids = std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
            for pid in pids.lines().filter_map(|l| l.parse().ok()) {
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

    /// Stops everything and reports what could not be removed (empty when clean).
    pub fn stop(mut self) -> procs::Leftovers {
        self.teardown()
    }

    fn teardown(&mut self) -> procs::Leftovers {
        let Some(mut child) = self.child.take() else {
            return procs::Leftovers::default();
        };
        if child.try_wait().ok().flatten().is_none() {
            // Containers first (dockerd would stop them with their stop timeout on SIGTERM anyway;
            // this is faster and also covers paused ones), then dockerd by its pid.
            let ids = self.docker_output(&["ps", "-aq"]);
            let ids: Vec<String> = String::from_utf8_lossy(&ids.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            if !ids.is_empty() {
                let mut rm = self.docker();
                rm.args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null());
                let _ = rm.status();
            }
        }
        procs::signal(child.id() as i32, libc::SIGTERM);
        let until = Instant::now() + Duration::from_secs(15);
        while child.try_wait().ok().flatten().is_none() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        // dockerd stops its containerd when it exits cleanly; after a crash it and the shims stay.
        let dir = self.dir.display().to_string();
        let mut pids = Vec::new();
        let mut sockets = Vec::new();
        for p in procs::processes_mentioning(&dir) {
            if let Some((address, ns, id)) = procs::shim_task(&p) {
                sockets.push(procs::shim_socket(&address, &ns, &id));
            }
            pids.extend(procs::tree(p.pid));
        }
        let cgroups = procs::cgroups_under(std::slice::from_ref(&self.cgroup_parent));
        procs::thaw(&cgroups);
        pids.sort();
        pids.dedup();
        procs::kill_all(&pids);
        procs::remove_cgroups(&cgroups);
        procs::unmount_all_under(&self.dir);
        for s in sockets {
            let _ = std::fs::remove_file(s);
        }
        if !self.had_run_docker {
            // dockerd's plugin discovery dir, created whatever its exec-root.
            let _ = std::fs::remove_dir("/run/docker/plugins");
            let _ = std::fs::remove_dir("/run/docker");
        }
        self.run_dirs.cleanup();
        let left = self.leftovers();
        if let Some(tmp) = self.tmp.take() {
            if left.mounts.is_empty() {
                let _ = tmp.close();
            } else {
                let _ = tmp.keep();
            }
        }
        left
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        let left = self.teardown();
        if !left.is_empty() {
            eprintln!("dockerd {}: left behind: {left:?}", self.dir.display());
        }
    }
}

/// The daemon.json of a private dockerd in `dir`.
pub fn daemon_json(dir: &Path, cgroup_parent: &str, o: &Options) -> Value {
    let d = |p: &str| dir.join(p).display().to_string();
    let mut runtimes = serde_json::Map::new();
    for (name, path) in &o.runtimes {
        runtimes.insert(name.clone(), json!({"path": path.display().to_string()}));
    }
    let mut v = json!({
        "data-root": d("data"),
        "exec-root": d("exec"),
        "pidfile": d("docker.pid"),
        "hosts": [format!("unix://{}", d("docker.sock"))],
        // dockerd 20.10 writes its trust key to /etc/docker/key.json unless told otherwise.
        "deprecated-key-path": d("key.json"),
        "bridge": "none",
        "iptables": false,
        "ip6tables": false,
        "ip-forward": false,
        "ip-masq": false,
        "userland-proxy": false,
        "storage-driver": "overlay2",
        "cgroup-parent": format!("/{cgroup_parent}"),
        "log-level": "info",
        "live-restore": false,
        "runtimes": Value::Object(runtimes),
    });
    if let Some(r) = &o.default_runtime {
        v["default-runtime"] = json!(r);
    }
    for (k, x) in &o.extra {
        v[k] = x.clone();
    }
    v
}
