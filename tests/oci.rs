//! hybox-runc, the OCI runtime (docs/oci.md): runc's command-line contract driven directly (the
//! lifecycle, exit statuses, the container's cgroup, update, pause/resume, the console socket).
//! Through a real containerd: tests/oci_ctr.rs.

mod common;
#[path = "oci_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use support::{guest, hybox_runc};

/// Pods (namespaces joined by path) and `exec`.
#[path = "oci_exec.rs"]
mod exec;

/// `linux.seccomp`: a profile narrows hybox's allow-list, never widens it.
#[path = "oci_seccomp.rs"]
mod seccomp;

/// `linux.resources.blockIO` and tmpfs mounts.
#[path = "oci_limits.rs"]
mod limits;

/// The last `"level":"error"` line's message in a `--log` file, as containerd's shim reports it.
fn last_error(log: &Path) -> String {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .rfind(|v| v["level"] == "error")
        .map(|v| v["msg"].as_str().unwrap_or_default().to_string())
        .unwrap_or_default()
}

/// A bundle: busybox (or `program`) as the rootfs's /bin/busybox with applet links, and the
/// config.json containerd's `ctr run` writes (tests/fixtures/oci/ctr-run.json) with `args`.
struct Bundle {
    dir: tempfile::TempDir,
    /// `linux.cgroupsPath`: `/hybox-oci-test-PID-N/c`, unique to this bundle (hybox never shares
    /// a container's cgroup), its parent removed with the bundle.
    cgroup: String,
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let parent = Path::new(&self.cgroup).parent().unwrap().to_path_buf();
        for d in cgroup_dirs(&parent.display().to_string()) {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// The directories of cgroup `path` in every mounted hierarchy where it exists.
fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    common::procs::cgroup_roots()
        .into_iter()
        .map(|r| r.join(path.trim_start_matches('/')))
        .filter(|d| d.is_dir())
        .collect()
}

impl Bundle {
    fn new(args: &[&str], edit: impl FnOnce(&mut Value)) -> Bundle {
        let dir = tempfile::Builder::new()
            .prefix("hybox-oci-")
            .tempdir()
            .unwrap();
        let bin = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/busybox", bin.join("busybox")).expect("/bin/busybox (busybox-static)");
        for applet in ["sh", "echo", "sleep", "cat"] {
            std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
        }
        std::fs::write(bin.join("env.wasm"), guest("env.wasm")).unwrap();
        std::fs::write(bin.join("probe.wasm"), guest("probe.wasm")).unwrap();
        let mut config: Value = serde_json::from_str(
            &std::fs::read_to_string(common::repo().join("tests/fixtures/oci/ctr-run.json"))
                .unwrap(),
        )
        .unwrap();
        config["process"]["args"] = json!(args);
        config["process"]["env"]
            .as_array_mut()
            .unwrap()
            .push(json!("GREETING=hello from config.json"));
        // Our own cgroup, unique to this bundle: nothing to collide with.
        static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let cgroup = format!("/hybox-oci-test-{}-{n}/c", std::process::id());
        config["linux"]["cgroupsPath"] = json!(cgroup);
        edit(&mut config);
        std::fs::write(
            dir.path().join("config.json"),
            serde_json::to_string_pretty(&config).unwrap(),
        )
        .unwrap();
        Bundle { dir, cgroup }
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// A `--root` and `--log` of one test, and the runtime called with them.
struct Runc {
    root: tempfile::TempDir,
    /// `HYBOX_RUNTIME_POLICY` for every call, when the test has a runtime policy of its own.
    policy: Option<PathBuf>,
    /// The runtime's executable: the `hybox-runc` binary unless a test installs another.
    binary: PathBuf,
}

/// A test that fails half-way leaves no container running: every container still in the root is
/// deleted with `--force` (which kills it) when the test's `Runc` goes, panicking or not.
impl Drop for Runc {
    fn drop(&mut self) {
        let Ok(dir) = std::fs::read_dir(self.root.path().join("state")) else {
            return;
        };
        for e in dir.flatten() {
            if let Some(id) = e.file_name().to_str() {
                let _ = self.cmd(&["delete", "--force", id]).output();
            }
        }
    }
}

impl Runc {
    fn new() -> Runc {
        Runc {
            root: tempfile::Builder::new()
                .prefix("hybox-runc-root-")
                .tempdir()
                .unwrap(),
            policy: None,
            binary: hybox_runc(),
        }
    }
    /// With the runtime policy `text` (written into the root dir).
    fn with_runtime_policy(text: &str) -> Runc {
        let mut r = Runc::new();
        let p = r.root.path().join("runtime.json");
        std::fs::write(&p, text).unwrap();
        r.policy = Some(p);
        r
    }
    fn log(&self) -> PathBuf {
        self.root.path().join("log.json")
    }
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(&self.binary);
        c.arg("--root")
            .arg(self.root.path().join("state"))
            .arg("--log")
            .arg(self.log())
            .args(["--log-format", "json"])
            .args(args)
            .stdin(Stdio::null());
        if let Some(p) = &self.policy {
            c.env("HYBOX_RUNTIME_POLICY", p);
        }
        c
    }
    fn call(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }
    fn ok(&self, args: &[&str]) -> String {
        let o = self.call(args);
        assert!(
            o.status.success(),
            "hybox-runc {args:?}: {}\n{}",
            String::from_utf8_lossy(&o.stderr),
            last_error(&self.log())
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }
    fn state(&self, id: &str) -> Value {
        serde_json::from_str(&self.ok(&["state", id])).unwrap()
    }
    /// `create` with stdout and stderr into files of the root dir; returns the monitor's pid.
    fn create(&self, bundle: &Bundle, id: &str) -> i32 {
        let out = std::fs::File::create(self.root.path().join(format!("{id}.out"))).unwrap();
        let err = out.try_clone().unwrap();
        let pid_file = self.root.path().join(format!("{id}.pid"));
        let status = self
            .cmd(&["create", "--bundle"])
            .arg(bundle.path())
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(id)
            .stdout(out)
            .stderr(err)
            .status()
            .unwrap();
        assert!(status.success(), "create: {}", last_error(&self.log()));
        std::fs::read_to_string(&pid_file)
            .expect("the pid file")
            .parse()
            .expect("a decimal pid")
    }
    fn output_of(&self, id: &str) -> String {
        std::fs::read_to_string(self.root.path().join(format!("{id}.out"))).unwrap_or_default()
    }
}

/// Makes this test process the reaper of orphans (as containerd's shim is), so the monitor's exit
/// status can be read once `create` has exited.
fn become_subreaper() {
    assert_eq!(
        // SAFETY: prctl with integer arguments touches no memory of ours.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) },
        0
    );
}

/// The exit status of an orphaned monitor this process reaps (128+N for a signal).
fn wait_exit(pid: i32, timeout: Duration) -> i32 {
    let until = Instant::now() + timeout;
    loop {
        let mut st = 0;
        // SAFETY: a live int for the status.
        let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
        if r == pid {
            return if libc::WIFEXITED(st) {
                libc::WEXITSTATUS(st)
            } else {
                128 + libc::WTERMSIG(st)
            };
        }
        assert!(
            Instant::now() < until,
            "pid {pid} did not exit in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        !s.rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

#[test]
fn create_leaves_a_blocked_monitor_and_the_lifecycle_follows_runc() {
    if !common::privileged("create_leaves_a_blocked_monitor") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let bundle = Bundle::new(
        &[
            "sh",
            "-c",
            "echo \"$GREETING\" \"$0\" \"$1\"; exec sleep 30",
            "zero",
            "one",
        ],
        |_| {},
    );
    let pid = runc.create(&bundle, "c1");
    assert!(alive(pid), "the pid file's process is alive after create");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(runc.state("c1")["status"], "created");
    assert_eq!(runc.state("c1")["pid"], pid);
    assert_eq!(runc.output_of("c1"), "", "nothing runs before start");
    assert_eq!(runc.state("c1")["hybox"]["backend"], "native");
    // The pid file's process is in the container's cgroup, exactly at linux.cgroupsPath, from
    // create on (containerd loads the cgroup of that pid for stats and OOM events).
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        cg.lines()
            .any(|l| l.ends_with(&format!(":{}", bundle.cgroup)) && l.contains("memory"))
            || cg.lines().any(|l| l == format!("0::{}", bundle.cgroup)),
        "{cg}"
    );
    assert_eq!(runc.state("c1")["hybox"]["cgroup"], bundle.cgroup.as_str());

    runc.ok(&["start", "c1"]);
    assert_eq!(runc.state("c1")["status"], "running");
    // The output arrives on the stdio create was given.
    let until = Instant::now() + Duration::from_secs(10);
    while runc.output_of("c1").is_empty() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(runc.output_of("c1"), "hello from config.json zero one\n");
    // The monitor and the sandbox's processes (the native shim and sleep, at least).
    let ps: Vec<i32> = serde_json::from_str(&runc.ok(&["ps", "--format", "json", "c1"])).unwrap();
    assert!(ps[0] == pid && ps.len() >= 3, "{ps:?}");

    let o = runc.call(&["delete", "c1"]);
    assert!(
        !o.status.success(),
        "delete of a running container must fail"
    );
    assert!(
        last_error(&runc.log()).contains("not stopped"),
        "{}",
        last_error(&runc.log())
    );
    assert_eq!(runc.state("c1")["status"], "running");

    runc.ok(&["kill", "c1", "9"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 137);
    let st = runc.state("c1");
    assert_eq!(st["status"], "stopped");
    assert_eq!(st["hybox"]["exit"]["status"], 137);
    // runc's answers after the exit, which containerd relies on.
    let o = runc.call(&["kill", "c1", "9"]);
    assert!(!o.status.success());
    assert!(last_error(&runc.log()).contains("container not running"));
    runc.ok(&["kill", "--all", "c1", "9"]);
    // The cgroup outlives the container (as runc's does) until delete removes it everywhere.
    assert!(!cgroup_dirs(&bundle.cgroup).is_empty());
    runc.ok(&["delete", "c1"]);
    assert_eq!(cgroup_dirs(&bundle.cgroup), Vec::<PathBuf>::new());
    runc.ok(&["delete", "--force", "c1"]);
    assert!(!runc.root.path().join("state/c1").exists());
    let o = runc.call(&["state", "c1"]);
    assert!(!o.status.success());
    assert!(last_error(&runc.log()).contains("does not exist"));
}

#[test]
fn exit_status_signals_and_force_delete() {
    if !common::privileged("exit_status_signals_and_force_delete") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    // The container's own status.
    let b = Bundle::new(&["/bin/sh", "-c", "exit 7"], |_| {});
    let pid = runc.create(&b, "exit7");
    runc.ok(&["start", "exit7"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 7);
    assert_eq!(runc.state("exit7")["hybox"]["exit"]["status"], 7);
    runc.ok(&["delete", "exit7"]);

    // SIGTERM is forwarded to the workload (busybox sleep dies of it): 128+15.
    let b = Bundle::new(&["sleep", "30"], |_| {});
    let pid = runc.create(&b, "term");
    runc.ok(&["start", "term"]);
    std::thread::sleep(Duration::from_millis(300));
    runc.ok(&["kill", "term", "SIGTERM"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 143);
    runc.ok(&["delete", "term"]);

    // delete --force of a running and of a created container.
    let b = Bundle::new(&["sleep", "30"], |_| {});
    let pid = runc.create(&b, "forced");
    runc.ok(&["start", "forced"]);
    runc.ok(&["delete", "--force", "forced"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 137);
    let pid = runc.create(&b, "never-started");
    runc.ok(&["delete", "--force", "never-started"]);
    wait_exit(pid, Duration::from_secs(10));
    assert_eq!(
        cgroup_dirs(&b.cgroup),
        Vec::<PathBuf>::new(),
        "no cgroup left"
    );
    assert_eq!(
        std::fs::read_dir(runc.root.path().join("state"))
            .unwrap()
            .count(),
        0,
        "no state left"
    );
}

/// A control file of cgroup `path` in the hierarchy that has it (v1 `controller`, or v2).
fn cgroup_file(path: &str, controller: &str, file: &str) -> String {
    let rel = path.trim_start_matches('/');
    let v2 = Path::new("/sys/fs/cgroup").join(rel).join(file);
    let p = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        v2
    } else {
        Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(rel)
            .join(file)
    };
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

#[test]
fn update_and_pause_act_on_the_live_cgroup() {
    if !common::privileged("update_and_pause_act_on_the_live_cgroup") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let b = Bundle::new(
        &["sh", "-c", "while :; do echo tick; sleep 0.05; done"],
        |_| {},
    );
    let pid = runc.create(&b, "live");
    runc.ok(&["start", "live"]);
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();

    // update --resources - (runc's JSON on stdin, as containerd sends it), every value read back.
    let mut c = runc.cmd(&["update", "--resources", "-", "live"]);
    c.stdin(Stdio::piped());
    let mut child = c.spawn().unwrap();
    std::io::Write::write_all(
        child.stdin.as_mut().unwrap(),
        br#"{"memory": {"limit": 134217728, "swap": 134217728}, "cpu": {"quota": 50000, "period": 100000}, "pids": {"limit": 64}}"#,
    )
    .unwrap();
    drop(child.stdin.take());
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", last_error(&runc.log()));
    if v2 {
        assert_eq!(cgroup_file(&b.cgroup, "", "memory.max"), "134217728");
        assert_eq!(cgroup_file(&b.cgroup, "", "cpu.max"), "50000 100000");
    } else {
        assert_eq!(
            cgroup_file(&b.cgroup, "memory", "memory.limit_in_bytes"),
            "134217728"
        );
        assert_eq!(cgroup_file(&b.cgroup, "cpu", "cpu.cfs_quota_us"), "50000");
    }
    assert_eq!(cgroup_file(&b.cgroup, "pids", "pids.max"), "64");
    // runc's single-value flags too; more than the runtime policy allows is refused, naming it,
    // and changes nothing.
    runc.ok(&["update", "--pids-limit", "100", "live"]);
    assert_eq!(cgroup_file(&b.cgroup, "pids", "pids.max"), "100");
    let o = runc.call(&["update", "--memory", "68719476736", "live"]);
    assert!(!o.status.success());
    assert!(
        last_error(&runc.log()).contains("memory.limit"),
        "{}",
        last_error(&runc.log())
    );
    assert_eq!(cgroup_file(&b.cgroup, "pids", "pids.max"), "100");

    // pause freezes every process of the container: the output stops; resume goes on.
    runc.ok(&["pause", "live"]);
    assert_eq!(runc.state("live")["status"], "paused");
    let frozen = if v2 {
        cgroup_file(&b.cgroup, "", "cgroup.freeze")
    } else {
        cgroup_file(&b.cgroup, "freezer", "freezer.state")
    };
    assert!(frozen == "1" || frozen == "FROZEN", "{frozen}");
    let before = runc.output_of("live").len();
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        runc.output_of("live").len(),
        before,
        "no output while paused"
    );
    assert!(
        !runc.call(&["pause", "live"]).status.success(),
        "paused twice"
    );
    runc.ok(&["resume", "live"]);
    assert_eq!(runc.state("live")["status"], "running");
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        runc.output_of("live").len() > before,
        "output again after resume"
    );

    // A paused container still dies of kill 9 (hybox-runc thaws it after the signal).
    runc.ok(&["pause", "live"]);
    runc.ok(&["kill", "live", "9"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 137);
    assert!(!runc
        .call(&["update", "--pids-limit", "5", "live"])
        .status
        .success());
    runc.ok(&["delete", "live"]);
    assert_eq!(cgroup_dirs(&b.cgroup), Vec::<PathBuf>::new());
}

#[test]
fn a_wasm_entrypoint_runs_on_the_wasm_backend() {
    if !common::privileged("a_wasm_entrypoint_runs_on_the_wasm_backend") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let b = Bundle::new(&["/bin/env.wasm", "first", "second"], |_| {});
    let pid = runc.create(&b, "wasm");
    let st = runc.state("wasm");
    assert_eq!(st["hybox"]["backend"], "wasm", "{st}");
    runc.ok(&["start", "wasm"]);
    assert_eq!(
        wait_exit(pid, Duration::from_secs(30)),
        0,
        "{}",
        last_error(&runc.log())
    );
    let out = runc.output_of("wasm");
    assert!(out.contains("arg[1]=first\narg[2]=second\n"), "{out}");
    assert!(out.contains("env GREETING=hello from config.json"), "{out}");
    runc.ok(&["delete", "wasm"]);

    let b = Bundle::new(&["/bin/probe.wasm", "attack", "exit", "9"], |_| {});
    let pid = runc.create(&b, "wasm-exit");
    runc.ok(&["start", "wasm-exit"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(30)), 9);
    runc.ok(&["delete", "wasm-exit"]);

    // hybox-runc installed without the hybox binary beside it: a native container runs, a wasm
    // one is refused at create naming the missing worker binary, and nothing is left.
    let mut lone = Runc::new();
    lone.binary = lone.root.path().join("hybox-runc");
    std::fs::copy(hybox_runc(), &lone.binary).unwrap();
    let native = Bundle::new(&["sh", "-c", "true"], |_| {});
    let pid = lone.create(&native, "native");
    lone.ok(&["start", "native"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(30)), 0);
    lone.ok(&["delete", "native"]);
    let wasm = Bundle::new(&["/bin/env.wasm"], |_| {});
    let o = lone.call(&["create", "--bundle", wasm.path().to_str().unwrap(), "wasm"]);
    assert_eq!(o.status.code(), Some(1));
    let e = last_error(&lone.log());
    let beside = lone.root.path().join("hybox");
    assert!(
        e.contains(&format!("the wasm worker's binary {}", beside.display())),
        "{e}"
    );
    assert!(!lone.call(&["state", "wasm"]).status.success());
    assert_eq!(cgroup_dirs(&wasm.cgroup), Vec::<PathBuf>::new());
}

#[test]
fn a_refused_bundle_names_the_field_and_leaves_nothing() {
    // No privilege needed: the refusal comes before anything is built.
    let runc = Runc::new();
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "process.capabilities.bounding",
            Box::new(|c: &mut Value| {
                c["process"]["capabilities"]["bounding"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!("CAP_SYS_ADMIN"))
            }),
        ),
        (
            "linux.namespaces[4].path",
            Box::new(|c: &mut Value| {
                c["linux"]["namespaces"][4] = json!({"type": "network", "path": "/proc/1/ns/net"})
            }),
        ),
        (
            "process.args",
            Box::new(|c: &mut Value| c["process"]["args"] = json!("sh -c true")),
        ),
        // A throttle on what is not a block device of this host.
        (
            "linux.resources.blockIO.throttleWriteBpsDevice[0]",
            Box::new(|c: &mut Value| {
                c["linux"]["resources"]["blockIO"] = json!({"throttleWriteBpsDevice":
                    [{"major": 4095, "minor": 1048575, "rate": 1}]})
            }),
        ),
        // A read-only tmpfs (ctr's /run is mounts[6] of the fixture).
        (
            "mounts[6].options",
            Box::new(|c: &mut Value| c["mounts"][6]["options"] = json!(["ro"])),
        ),
    ];
    for (i, (field, edit)) in cases.into_iter().enumerate() {
        let b = Bundle::new(&["sh"], edit);
        let id = format!("refused{i}");
        let pid_file = runc.root.path().join("refused.pid");
        let o = runc
            .cmd(&["create", "--bundle"])
            .arg(b.path())
            .arg("--pid-file")
            .arg(&pid_file)
            .arg(&id)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1));
        let err = last_error(&runc.log());
        assert!(err.contains(field), "{field}: {err}");
        assert!(!pid_file.exists());
        assert!(!runc.root.path().join("state").join(&id).exists());
        // containerd's cleanup after a failed create.
        runc.ok(&["delete", "--force", &id]);
    }
    let o = runc.call(&["--systemd-cgroup", "state", "x"]);
    assert!(!o.status.success());
    assert!(last_error(&runc.log()).contains("--systemd-cgroup"));
}

/// Receives one fd and its name over an accepted unix socket (what containerd's shim does with
/// the console socket).
fn recv_fd(stream: &std::os::unix::net::UnixStream) -> (std::fs::File, String) {
    use std::os::fd::{AsRawFd, FromRawFd};
    let mut data = [0u8; 256];
    let mut cmsg = [0u8; 64];
    let mut iov = libc::iovec {
        iov_base: data.as_mut_ptr().cast(),
        iov_len: data.len(),
    };
    // SAFETY: a zeroed msghdr is valid; it points at live buffers of this frame only.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cmsg.as_mut_ptr().cast();
    // socklen_t on musl, size_t on glibc.
    msg.msg_controllen = cmsg.len() as _;
    // SAFETY: msg and its buffers are live for the call.
    let n = unsafe { libc::recvmsg(stream.as_raw_fd(), &mut msg, 0) };
    assert!(n > 0, "recvmsg: {}", std::io::Error::last_os_error());
    // SAFETY: the kernel filled msg_control; CMSG_FIRSTHDR reads within it.
    let c = unsafe { libc::CMSG_FIRSTHDR(&msg) };
    assert!(!c.is_null(), "no control message");
    // SAFETY: c points at a cmsghdr in cmsg; its data holds the SCM_RIGHTS fd.
    let fd = unsafe {
        assert_eq!((*c).cmsg_type, libc::SCM_RIGHTS);
        std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>())
    };
    // SAFETY: the fd was just received and is owned by nothing else.
    let f = unsafe { std::fs::File::from_raw_fd(fd) };
    (f, String::from_utf8_lossy(&data[..n as usize]).into_owned())
}

#[test]
fn a_terminal_is_a_pty_sent_over_the_console_socket() {
    if !common::privileged("a_terminal_is_a_pty_sent_over_the_console_socket") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let script = format!(
        "[ -t 0 ] && [ -t 1 ] && echo tty yes || echo tty no; {SHOW_CTTY}; echo name $(busybox tty)"
    );
    let b = Bundle::new(&["sh", "-c", &script], |c| {
        c["process"]["terminal"] = json!(true)
    });
    // Without a console socket: refused, naming the field (as runc does).
    let o = runc.call(&[
        "create",
        "--bundle",
        b.path().to_str().unwrap(),
        "noconsole",
    ]);
    assert!(!o.status.success());
    assert!(last_error(&runc.log()).contains("process.terminal"));

    let sock = runc.root.path().join("console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let got = std::thread::spawn(move || recv_fd(&listener.accept().unwrap().0));
    let pid_file = runc.root.path().join("tty.pid");
    let o = runc
        .cmd(&["create", "--bundle"])
        .arg(b.path())
        .arg("--pid-file")
        .arg(&pid_file)
        .arg("--console-socket")
        .arg(&sock)
        .arg("tty")
        .output()
        .unwrap();
    assert!(o.status.success(), "create: {}", last_error(&runc.log()));
    let (mut master, name) = got.join().unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    runc.ok(&["start", "tty"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 0);
    let mut out = Vec::new();
    // The slave is closed with the container: the master reads to EIO after the output.
    let _ = std::io::Read::read_to_end(&mut master, &mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("tty yes"), "{out:?}");
    assert_controlling_tty(&out, &name);
    // ttyname finds it: the sandbox's /dev/pts/N is that pty (and only it).
    assert!(out.contains(&format!("name {name}")), "{out:?}");
    runc.ok(&["delete", "tty"]);
}

/// A shell line printing `ctty SESSION TTY_NR PID` from the shell's own /proc/self/stat (fields
/// 6, 7 and 1): its session, its controlling terminal's device, its pid.
const SHOW_CTTY: &str = "read -r pid _ _ _ _ sid tty _ < /proc/self/stat; echo ctty $sid $tty $pid";

/// The output of [`SHOW_CTTY`] names the pty `name` (`/dev/pts/N`) as the controlling terminal:
/// tty_nr is the pty's device number (major 136 + N), not 0 (none).
fn assert_controlling_tty(out: &str, name: &str) {
    let n: u32 = name.trim_start_matches("/dev/pts/").parse().unwrap();
    // new_encode_dev: minor's low byte, major << 8, minor's high bits << 12.
    let want = (n & 0xff) | (136 << 8) | ((n & !0xff) << 12);
    let line = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("ctty "))
        .unwrap_or_else(|| panic!("no ctty line: {out:?}"));
    let tty: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(
        tty, want,
        "the pty {name} is not the controlling terminal: {out:?}"
    );
}
