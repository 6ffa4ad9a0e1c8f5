//! hybox-runc under a private dockerd (Debian's docker.io 20.10; tests/common/dockerd.rs):
//! `docker run --rm --network none --runtime hybox` of a native and a wasm image (output, exit
//! code, `-e`), an OOM under `-m` (137, `OOMKilled`), `docker stop`, `docker logs`, and `-v`
//! volumes granted by a test runtime policy (docs/oci.md, "Docker"). Nothing is left behind.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use common::dockerd::{Dockerd, Options};
use common::oci_image::{Config, Image};

/// hybox-runc installed as a link named `hybox-runc` to the hybox binary (argv[0] dispatch): the
/// other way to install it (tests/oci.rs, tests/oci_ctr.rs and tests/cri.rs use the hybox-runc
/// binary), so both are tested with native and wasm containers.
fn hybox_runc(dir: &Path) -> PathBuf {
    let link = dir.join("hybox-runc");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hybox"), &link).unwrap();
    link
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout: {}\nstderr: {}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn guest(name: &str) -> Vec<u8> {
    let p = common::repo().join("examples/out/wasm").join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (build the guests: examples/build.sh)", p.display()))
}

/// The runtime policy of these tests: the shipped one plus explicit grants for what Docker binds
/// into every container (its own `containers/ID/{hosts,hostname,resolv.conf}` under the
/// data-root) and the test's volume directory.
fn runtime_policy(docker_dir: &Path, volume: &Path) -> String {
    serde_json::json!({
        "version": 1,
        "description": "tests/docker.rs: the shipped runtime policy plus Docker's per-container files and one volume",
        "resources": {"memory": "1G", "cpus": 2, "pids": 512, "timeout": "24h"},
        "filesystem": {
            "tmp": {"size": "64M"},
            "mounts": [
                {"host": docker_dir.join("data/containers"), "guest": "/docker-containers", "mode": "rw"},
                {"host": volume, "guest": "/volume", "mode": "rw"}
            ]
        }
    })
    .to_string()
}

#[test]
fn docker_runs_native_and_wasm_containers_under_hybox_runc() {
    if !common::privileged("docker_runs_native_and_wasm_containers_under_hybox_runc") {
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("hybox-dk-")
        .tempdir()
        .unwrap();
    let runtime = hybox_runc(work.path());
    let policy_file = work.path().join("runtime.json");
    let volume = work.path().join("volume");
    std::fs::create_dir(&volume).unwrap();
    std::fs::write(volume.join("in.txt"), "from the host volume\n").unwrap();
    // The container's root is an unprivileged host uid (hybox maps no one to host root): the
    // host's permissions on the volume decide what it may write.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&volume, std::fs::Permissions::from_mode(0o777)).unwrap();
    let dkd = Dockerd::start_with(Options {
        runtimes: vec![("hybox".into(), runtime.clone())],
        env: vec![(
            "HYBOX_RUNTIME_POLICY".into(),
            policy_file.display().to_string(),
        )],
        ..Options::default()
    })
    .expect("start dockerd");
    std::fs::write(&policy_file, runtime_policy(&dkd.dir, &volume)).unwrap();

    let busybox = work.path().join("busybox.tar");
    Image::busybox("hybox.test/busybox:latest", &["echo", "sleep", "cat"])
        .unwrap()
        .write_docker_archive(&busybox)
        .unwrap();
    dkd.load(&busybox).unwrap();
    let wasm = work.path().join("wasm.tar");
    Image::new("hybox.test/wasm-env:latest")
        .file("env.wasm", guest("env.wasm"), 0o644)
        .file("alloc.wasm", guest("alloc.wasm"), 0o644)
        .config(Config {
            entrypoint: vec!["/env.wasm".into()],
            env: vec![common::oci_image::DEFAULT_PATH.to_string()],
            ..Config::default()
        })
        .write_docker_archive(&wasm)
        .unwrap();
    dkd.load(&wasm).unwrap();

    let run = |extra: &[&str], image: &str, args: &[&str]| -> Output {
        dkd.docker()
            .args(["run", "--rm", "--network", "none", "--runtime", "hybox"])
            .args(extra)
            .arg(image)
            .args(args)
            .output()
            .unwrap()
    };

    // Native: output, env, exit code.
    let o = run(
        &["-e", "FOO=bar"],
        "hybox.test/busybox:latest",
        &["/bin/sh", "-c", "echo \"out $FOO\"; echo err >&2; exit 7"],
    );
    assert_eq!(o.status.code(), Some(7), "{}\n{}", text(&o), dkd.log_tail());
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "out bar\n",
        "{}",
        text(&o)
    );
    assert_eq!(String::from_utf8_lossy(&o.stderr), "err\n", "{}", text(&o));

    // Wasm: the module as the entrypoint, its args and env.
    let o = run(&["-e", "FOO=bar"], "hybox.test/wasm-env:latest", &["a1"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("arg[1]=a1") && out.contains("env FOO=bar"),
        "{}",
        text(&o)
    );

    // A volume the runtime policy grants: read and written from inside.
    let v = format!("{}:/data", volume.display());
    let o = run(
        &["-v", &v],
        "hybox.test/busybox:latest",
        &[
            "/bin/sh",
            "-c",
            "cat /data/in.txt; echo written > /data/out.txt",
        ],
    );
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(String::from_utf8_lossy(&o.stdout), "from the host volume\n");
    assert_eq!(
        std::fs::read_to_string(volume.join("out.txt")).unwrap(),
        "written\n"
    );
    // One it does not grant: refused, naming the field.
    let other = work.path().join("other");
    std::fs::create_dir(&other).unwrap();
    let v = format!("{}:/data", other.display());
    let o = run(
        &["-v", &v],
        "hybox.test/busybox:latest",
        &["/bin/echo", "ran"],
    );
    assert_ne!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("mounts["),
        "{}",
        text(&o)
    );

    // An OOM under -m: 137, and docker saw the OOM (containerd's /tasks/oom from the cgroup).
    let oom_killed = |name: &str, memory: &str, image_and_args: &[&str]| {
        let o = dkd
            .docker()
            .args(["run", "--network", "none", "--runtime", "hybox"])
            .args(["-m", memory, "--memory-swap", memory, "--name", name])
            .args(image_and_args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(137), "{name}: {}", text(&o));
        let oom = dkd.docker_ok(&["inspect", "-f", "{{.State.OOMKilled}}", name]);
        assert_eq!(oom.trim(), "true", "{name}");
        dkd.docker_ok(&["rm", name]);
    };
    oom_killed(
        "bomb",
        "32m",
        &[
            "hybox.test/busybox:latest",
            "/bin/sh",
            "-c",
            "a=xxxxxxxxxxxxxxxx; while :; do a=$a$a; done",
        ],
    );
    // A wasm guest over -m: the kernel's OOM kill of its cgroup too (hybox-runc sets the wasm
    // store's limit at the container's, docs/oci.md "Cgroups"), so docker sees the same OOM.
    oom_killed(
        "wasm-bomb",
        "64m",
        &[
            "--entrypoint",
            "/alloc.wasm",
            "hybox.test/wasm-env:latest",
            "1024",
        ],
    );

    // A detached container: logs while it runs, docker stop ends it (SIGTERM reaches the
    // workload: busybox sh traps it and exits 3).
    let id = dkd.docker_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--runtime",
        "hybox",
        "--name",
        "sleeper",
        "hybox.test/busybox:latest",
        "/bin/sh",
        "-c",
        "trap 'echo got TERM; exit 3' TERM; echo started; while :; do sleep 0.1; done",
    ]);
    assert!(!id.trim().is_empty());
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let logs = dkd.docker_output(&["logs", "sleeper"]);
        if String::from_utf8_lossy(&logs.stdout).contains("started") {
            break;
        }
        assert!(Instant::now() < until, "no log line: {}", text(&logs));
        std::thread::sleep(Duration::from_millis(100));
    }
    // `state` shows what the runtime policy's grants let the container bind: Docker's files.
    let st = std::process::Command::new(&runtime)
        .arg("--root")
        .arg(dkd.dir.join("exec/runtime-runc/moby"))
        .args(["state", id.trim()])
        .output()
        .unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).expect("state JSON");
    let binds = st["hybox"]["binds"]
        .as_array()
        .expect("hybox.binds")
        .clone();
    assert!(
        binds.iter().any(|b| b["destination"] == "/etc/hosts"
            && b["source"].as_str().unwrap().contains("/data/containers/")
            && b["writable"] == true),
        "{st}"
    );
    assert_eq!(
        st["hybox"]["cgroup"].as_str().unwrap(),
        format!("/{}/{}", dkd.cgroup_parent, id.trim())
    );
    let t0 = Instant::now();
    dkd.docker_ok(&["stop", "-t", "10", "sleeper"]);
    assert!(
        t0.elapsed() < Duration::from_secs(8),
        "stop waited for the kill"
    );
    let code = dkd.docker_ok(&["inspect", "-f", "{{.State.ExitCode}}", "sleeper"]);
    assert_eq!(code.trim(), "3");
    let logs = dkd.docker_ok(&["logs", "sleeper"]);
    assert!(logs.contains("got TERM"), "{logs}");
    dkd.docker_ok(&["rm", "sleeper"]);

    let left = dkd.stop();
    assert!(left.is_empty(), "left behind: {left:?}");
}
