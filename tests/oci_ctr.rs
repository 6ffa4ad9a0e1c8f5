//! hybox-runc behind a real containerd started by the test (`ctr run --runc-binary`), with runc
//! itself as the negative control: the same ctr checks pass with it for the native image, and fail
//! where only hybox can do it (a wasm entrypoint) or where hybox must refuse (a privileged bundle).

mod common;
#[path = "oci_support.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use common::containerd::Containerd;
use common::oci_image::{Config, Image};
use support::{guest, hybox_runc};

struct Images {
    _dir: tempfile::TempDir,
    busybox: PathBuf,
    wasm: PathBuf,
}

fn images() -> Images {
    let dir = tempfile::tempdir().unwrap();
    let busybox = dir.path().join("busybox.tar");
    Image::busybox("hybox.test/busybox:latest", &["echo", "sleep", "cat"])
        .unwrap()
        .write_oci_archive(&busybox)
        .unwrap();
    let wasm = dir.path().join("wasm.tar");
    Image::new("hybox.test/wasm-env:latest")
        .file("env.wasm", guest("env.wasm"), 0o644)
        .file("probe.wasm", guest("probe.wasm"), 0o644)
        .file("alloc.wasm", guest("alloc.wasm"), 0o644)
        .config(Config {
            entrypoint: vec!["/env.wasm".into()],
            env: vec![
                common::oci_image::DEFAULT_PATH.to_string(),
                "IMAGE_VAR=from the image".into(),
            ],
            ..Config::default()
        })
        .write_oci_archive(&wasm)
        .unwrap();
    Images {
        _dir: dir,
        busybox,
        wasm,
    }
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The ctr checks with `runtime` as the runc binary; `hybox` says which answers to expect where
/// hybox and runc differ (a wasm entrypoint, a privileged bundle).
fn ctr_suite(runtime: &Path, hybox: bool) {
    let imgs = images();
    let ctd = Containerd::start().expect("start containerd");
    ctd.import(&ctd.namespace, &imgs.busybox).unwrap();
    ctd.import(&ctd.namespace, &imgs.wasm).unwrap();
    let rt = runtime.display().to_string();
    let with = |extra: &[&str]| -> Vec<String> {
        let mut v = vec!["--runc-binary".to_string(), rt.clone()];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let run = |extra: &[&str], image: &str, id: &str, args: &[&str]| {
        let e = with(extra);
        let e: Vec<&str> = e.iter().map(String::as_str).collect();
        ctd.run(&e, image, id, args)
    };

    // Native: output, env, args, exit code.
    let o = run(
        &["--env", "FOO=bar"],
        "hybox.test/busybox:latest",
        "native",
        &[
            "/bin/sh",
            "-c",
            "echo \"out $FOO $0 $1\"; echo err >&2; exit 7",
            "zero",
            "one",
        ],
    );
    assert_eq!(o.status.code(), Some(7), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "out bar zero one\n",
        "{}",
        text(&o)
    );

    // containerd's default seccomp profile (`--seccomp`): under hybox it narrows the allow-list
    // (docs/oci.md, `linux.seccomp`), and the container still runs.
    let o = run(
        &["--seccomp"],
        "hybox.test/busybox:latest",
        "seccomp",
        &[
            "/bin/sh",
            "-c",
            "echo ran; busybox mkdir /tmp/d && echo made",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "ran\nmade\n",
        "{}",
        text(&o)
    );

    // Wasm entrypoint: hybox runs it on the wasm backend; runc cannot exec it.
    let o = run(
        &["--env", "FOO=bar"],
        "hybox.test/wasm-env:latest",
        "wasm",
        // ctr 1.6's ARGS replace the image's entrypoint and cmd: the module is named again.
        &["/env.wasm", "a1", "a2"],
    );
    if hybox {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("arg[1]=a1\narg[2]=a2\n"), "{}", text(&o));
        assert!(
            out.contains("env FOO=bar") && out.contains("env IMAGE_VAR=from the image"),
            "{}",
            text(&o)
        );
        // A wasm module's exit status is the container's.
        let o = run(
            &[],
            "hybox.test/wasm-env:latest",
            "wasm-exit",
            &["/probe.wasm", "attack", "exit", "9"],
        );
        assert_eq!(o.status.code(), Some(9), "{}", text(&o));
    } else {
        assert_ne!(
            o.status.code(),
            Some(0),
            "runc cannot run a wasm module: {}",
            text(&o)
        );
    }

    // A privileged bundle: hybox refuses it naming the field; runc runs it.
    let o = run(
        &["--privileged"],
        "hybox.test/busybox:latest",
        "privileged",
        &["/bin/echo", "ran"],
    );
    if hybox {
        assert_ne!(o.status.code(), Some(0), "{}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("process.capabilities"), "{}", text(&o));
    } else {
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    }

    let bomb = [
        "/bin/sh",
        "-c",
        "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done",
    ];
    oom_is_seen_by_containerd(&ctd, &with(&[]), "hybox.test/busybox:latest", &bomb);
    if hybox {
        // A wasm guest over the container's limit: the same kernel OOM kill of its cgroup, so
        // containerd sees the same OOM. Under the same limit a guest that stays within it runs
        // to the end: what the kernel killed is the guest's allocation, not the worker's start.
        let o = run(
            &["--memory-limit", "67108864"],
            "hybox.test/wasm-env:latest",
            "wasm-alloc",
            &["/alloc.wasm", "8"],
        );
        assert_eq!(o.status.code(), Some(0), "{}", text(&o));
        assert!(
            String::from_utf8_lossy(&o.stdout).contains("alloc touched 8 MiB"),
            "{}",
            text(&o)
        );
        oom_is_seen_by_containerd(
            &ctd,
            &with(&[]),
            "hybox.test/wasm-env:latest",
            &["/alloc.wasm", "1024"],
        );
    }

    // A long-running task killed through ctr leaves nothing behind.
    let mut c = ctd.ctr();
    c.args(["run", "-d"])
        .args(ctd.run_args())
        .args(with(&[]))
        .args(["hybox.test/busybox:latest", "sleeper", "/bin/sleep", "30"]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::thread::sleep(Duration::from_millis(500));
    // The pid containerd got from the pid file is in the container's cgroup, exactly at the
    // cgroupsPath ctr asked for (`/NS/ID`), in every controller containerd reads.
    let (pid, _) = task_of(&ctd, "sleeper").expect("the sleeper task");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let want = format!("/{}/sleeper", ctd.namespace);
    for c in ["memory", "pids"] {
        assert!(
            cg.lines().any(|l| l
                .split(':')
                .nth(1)
                .is_some_and(|n| n.split(',').any(|x| x == c))
                && l.ends_with(&format!(":{want}")))
                || cg.lines().any(|l| l == format!("0::{want}")),
            "pid {pid} is not in {want} ({c}):\n{cg}"
        );
    }
    // `ctr task exec`: a process in the running container, its output and exit code (runc's
    // `exec --process ... --detach --pid-file`, the shim reaping the pid).
    let o = ctd.ctr_output(&[
        "task",
        "exec",
        "--exec-id",
        "x1",
        "sleeper",
        "/bin/sh",
        "-c",
        "echo \"exec out $0\"; echo exec err >&2; exit 5",
        "zero",
    ]);
    assert_eq!(o.status.code(), Some(5), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "exec out zero\n",
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("exec err"),
        "{}",
        text(&o)
    );
    ctd.ctr_ok(&["task", "kill", "-s", "KILL", "sleeper"]);
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let o = ctd.ctr_output(&["task", "delete", "sleeper"]);
        if o.status.success() {
            break;
        }
        assert!(Instant::now() < until, "task delete: {}", text(&o));
        std::thread::sleep(Duration::from_millis(100));
    }
    ctd.ctr_ok(&["containers", "delete", "sleeper"]);

    // Before the teardown: no process but containerd, no cgroup below the namespace's own
    // (runc leaves `/NS` itself, and so does hybox-runc).
    let namespaces = ctd.namespaces();
    let left = ctd.leftovers(&namespaces);
    let procs: Vec<_> = left
        .processes
        .iter()
        .filter(|p| p.pid != ctd.pid())
        .collect();
    assert!(procs.is_empty(), "processes left behind: {procs:?}");
    let cgroups: Vec<_> = left
        .cgroups
        .iter()
        .filter(|c| {
            !namespaces
                .iter()
                .any(|n| c.file_name().is_some_and(|f| f == n.as_str()))
        })
        .collect();
    assert!(cgroups.is_empty(), "cgroups left behind: {cgroups:?}");
    assert!(
        left.mounts.is_empty(),
        "mounts left behind: {:?}",
        left.mounts
    );
    let runc_state = ctd.dir.join("runc").join(&ctd.namespace);
    let states: Vec<_> = std::fs::read_dir(&runc_state)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(states.is_empty(), "state dirs left: {states:?}");
    let left = ctd.stop();
    assert!(left.is_empty(), "left behind after teardown: {left:?}");
}

/// `ctr task ls`: the task's pid and status.
fn task_of(ctd: &Containerd, id: &str) -> Option<(i32, String)> {
    let ls = ctd.ctr_ok(&["task", "ls"]);
    ls.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&id)).then(|| (f[1].parse().unwrap_or(0), f[2].to_string()))
    })
}

/// The cgroup file of a container's memory controller (`/NS/ID`), on v1 or v2.
fn memory_file(ctd: &Containerd, id: &str, v1: &str, v2: &str) -> PathBuf {
    let rel = format!("{}/{id}", ctd.namespace);
    let unified = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    if unified {
        Path::new("/sys/fs/cgroup").join(rel).join(v2)
    } else {
        Path::new("/sys/fs/cgroup/memory").join(rel).join(v1)
    }
}

/// A memory bomb (`image` running `args`) under `ctr run --memory-limit` (64 MiB) ends as an
/// OOM kill (137), and containerd sees
/// it where it looks: the kill is counted in the task's cgroup (read while the task is stopped
/// and not yet deleted, as the cgroup stays until `delete` under runc too), containerd publishes
/// a `/tasks/oom` event, and `delete` removes the cgroup.
fn oom_is_seen_by_containerd(ctd: &Containerd, runtime: &[String], image: &str, args: &[&str]) {
    let mut events = ctd
        .ctr()
        .arg("events")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let mut c = ctd.ctr();
    c.args(["run", "-d", "--memory-limit", "67108864"])
        .args(ctd.run_args())
        .args(runtime)
        .args([image, "bomb"])
        .args(args);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let until = Instant::now() + Duration::from_secs(60);
    while task_of(ctd, "bomb").is_some_and(|(_, s)| s != "STOPPED") {
        assert!(Instant::now() < until, "the bomb is still running");
        std::thread::sleep(Duration::from_millis(100));
    }
    let oom = std::fs::read_to_string(memory_file(
        ctd,
        "bomb",
        "memory.oom_control",
        "memory.events",
    ))
    .unwrap();
    let kills: u64 = oom
        .lines()
        .find_map(|l| l.strip_prefix("oom_kill "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        kills >= 1,
        "no OOM kill counted in the task's cgroup:\n{oom}"
    );
    // ctr 1.6's `task delete` exits 0 and warns with the task's status.
    let o = ctd.ctr_output(&["task", "delete", "bomb"]);
    assert!(
        o.status.success() && String::from_utf8_lossy(&o.stderr).contains("exit code 137"),
        "{}",
        text(&o)
    );
    ctd.ctr_ok(&["containers", "delete", "bomb"]);
    assert!(
        !memory_file(ctd, "bomb", "", "").exists(),
        "delete left the cgroup"
    );
    std::thread::sleep(Duration::from_millis(300));
    let _ = events.kill();
    let out = events.wait_with_output().unwrap();
    let ev = String::from_utf8_lossy(&out.stdout);
    assert!(
        ev.lines()
            .any(|l| l.contains("/tasks/oom") && l.contains("bomb")),
        "containerd published no /tasks/oom for the bomb:\n{ev}"
    );
}

#[test]
fn ctr_runs_native_and_wasm_containers_under_hybox_runc() {
    if !common::privileged("ctr_runs_native_and_wasm_containers_under_hybox_runc") {
        return;
    }
    ctr_suite(&hybox_runc(), true);
}

#[test]
fn ctr_with_runc_is_the_negative_control() {
    if !common::privileged("ctr_with_runc_is_the_negative_control") {
        return;
    }
    ctr_suite(Path::new("/usr/sbin/runc"), false);
}
