//! `wasm.os_sandbox`: the wasm worker in namespaces, without capabilities, under Landlock and a
//! seccomp filter. Each test runs real guests through `backend::wasm::run` and the real worker.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hybox::backend::{wasm, BackendRun};
use hybox::policy::Policy;
use hybox::report::Outcome;
use hybox::workload::Artifact;
use hybox::{HostConfig, Stdio};

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures/wasm").join(name)
}

/// A fresh private cache directory (0700: hybox refuses a cache others can write to).
fn cache() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

fn go(policy_json: &str, cache: &Path, artifact: &Path, args: &[&str]) -> BackendRun {
    let policy = Policy::from_json_str(policy_json, "test.json").expect("test policy");
    let artifact = Artifact::detect(artifact).expect("detect");
    let host = HostConfig {
        cache_dir: Some(cache.to_path_buf()),
        hybox_path: Some(PathBuf::from(env!("CARGO_BIN_EXE_hybox"))),
        ..Default::default()
    };
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdio = Stdio::Capture { stdin: Vec::new() };
    let launch = hybox::backend::Launch {
        run_id: "test",
        policy: &policy,
        artifact: &artifact,
        args: &args,
        env: Default::default(),
        stdio: &stdio,
        deadline: Instant::now() + policy.resources.timeout.as_std(),
        host: &host,
        joins: &[],
        pass_fds: &[],
    };
    hybox::backend::run(hybox::Backend::Wasm, &launch, None).expect("the run starts")
}

const HARDENED: &str =
    r#"{"version": 1, "resources": {"timeout": "20s"}, "wasm": {"os_sandbox": true}}"#;

fn assert_hardened(r: &BackendRun) {
    let d = &r.details.to_json()["os_sandbox"];
    assert_eq!(
        d["namespaces"],
        serde_json::json!(["user", "mnt", "net", "ipc", "uts"]),
        "{r:?}"
    );
    assert!(
        d["seccomp"].as_str().unwrap().contains("allow-list"),
        "{r:?}"
    );
    // The worker's ruleset is fully enforced from Landlock ABI 6 on; an older kernel enforces part
    // of it, and then the report must list that as a degradation, not only in its details.
    let abi = hybox::host::landlock_abi().unwrap_or(0);
    if abi >= 6 {
        assert_eq!(d["landlock"], "fully_enforced", "{r:?}");
        assert!(r.degradations.is_empty(), "{r:?}");
    } else {
        assert_ne!(d["landlock"], "fully_enforced", "ABI {abi}: {r:?}");
        assert!(
            r.degradations
                .iter()
                .any(|g| g.what == "wasm.os_sandbox landlock"),
            "ABI {abi}: {r:?}"
        );
    }
}

/// The interfaces of a process started the way the worker is (in `CLONE_FLAGS`' namespaces, then
/// `in_new_namespaces`), as `ip` sees them.
fn links_in_worker_netns(loopback: bool) -> String {
    use std::io::Read;
    use std::os::fd::AsRawFd;
    let ip = ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|p| p.exists())
        .expect("iproute2's ip");
    let (mut out_r, out_w) = std::io::pipe().expect("pipe");
    let w = out_w.as_raw_fd();
    let prepare = move || {
        wasm::hardened::in_new_namespaces(loopback)?;
        // SAFETY: dup2 between fds of this process.
        if unsafe { libc::dup2(w, 1) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    let ip_fd = std::fs::File::open(ip).expect("open ip");
    let program = hybox::backend::process::Program {
        program: std::os::fd::AsFd::as_fd(&ip_fd),
        name: ip,
        args: &["-o", "link", "show"],
        namespaces: wasm::hardened::CLONE_FLAGS,
        null_stdin_stdout: false,
    };
    // SAFETY: `prepare` makes only raw syscalls and allocates nothing.
    let mut child = unsafe { hybox::backend::process::spawn(&program, &prepare) }
        .expect("start ip in the worker's namespaces");
    drop(out_w);
    let mut links = String::new();
    out_r.read_to_string(&mut links).expect("read ip's output");
    let status = child.wait().expect("wait for ip");
    assert!(status.success(), "{status:?}: {links}");
    links
}

#[test]
fn the_worker_netns_has_lo_up_only_when_loopback_is_granted() {
    if !common::privileged("the_worker_netns_has_lo_up_only_when_loopback_is_granted") {
        return;
    }
    let up = links_in_worker_netns(true);
    assert!(up.contains("lo: <LOOPBACK,UP"), "{up}");
    let down = links_in_worker_netns(false);
    assert!(down.contains("lo: <LOOPBACK>"), "{down}");
    // Either way it is a fresh namespace: `lo` is its only interface.
    for links in [up, down] {
        assert_eq!(links.lines().count(), 1, "{links}");
    }
}

#[test]
fn hello_runs_hardened_and_the_report_says_so() {
    if !common::privileged("hello_runs_hardened_and_the_report_says_so") {
        return;
    }
    let c = cache();
    for pass in ["compile", "cache hit"] {
        let r = go(HARDENED, c.path(), &common::wasm_guest("hello"), &[]);
        assert_eq!(
            r.outcome,
            Outcome::Exited { code: 0 },
            "{pass}: {r:?} {}",
            String::from_utf8_lossy(&r.stderr)
        );
        assert!(
            String::from_utf8_lossy(&r.stdout).contains("hello"),
            "{r:?}"
        );
        assert_hardened(&r);
    }
    // The second run loaded the compile cache the first one wrote, from inside the sandbox.
    let r = go(HARDENED, c.path(), &common::wasm_guest("hello"), &[]);
    assert_eq!(r.details.to_json()["cache_hit"], true, "{r:?}");
}

#[test]
fn preopens_work_under_the_os_sandbox() {
    if !common::privileged("preopens_work_under_the_os_sandbox") {
        return;
    }
    let c = cache();
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("data")).unwrap();
    std::fs::write(t.path().join("data/in.txt"), "a\nb\nc\n").unwrap();
    std::fs::write(t.path().join("secret.txt"), "s3cret\n").unwrap();
    let policy = |mode: &str| {
        format!(
            r#"{{"version": 1, "resources": {{"timeout": "20s"}}, "wasm": {{"os_sandbox": true}},
                "filesystem": {{"mounts": [{{"host": "{}", "guest": "/data", "mode": "{mode}"}}]}}}}"#,
            t.path().join("data").display()
        )
    };
    let r = go(
        &policy("ro"),
        c.path(),
        &common::wasm_guest("files"),
        &["/data/in.txt", "/tmp/out.txt"],
    );
    assert_eq!(
        r.outcome,
        Outcome::Exited { code: 0 },
        "{r:?} {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&r.stdout), "3 lines, 6 bytes\n");
    assert_hardened(&r);
    // Read-write grant: the write lands on the host.
    let r = go(
        &policy("rw"),
        c.path(),
        &common::wasm_guest("files"),
        &["/data/in.txt", "/data/out.txt"],
    );
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(t.path().join("data/out.txt")).unwrap(),
        "3 lines, 6 bytes\n"
    );
    // Outside the preopen: still refused (WASI), and Landlock would refuse the worker as well.
    let r = go(
        &policy("ro"),
        c.path(),
        &common::wasm_guest("files"),
        &["/data/../secret.txt", "/tmp/o"],
    );
    assert_eq!(r.outcome, Outcome::Exited { code: 3 }, "{r:?}");
}

/// Pids of `hybox __wasm-worker` processes whose parent is this test process.
fn my_workers() -> Vec<i32> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if !String::from_utf8_lossy(&cmd).contains("__wasm-worker") {
            continue;
        }
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        if status
            .lines()
            .any(|l| l.strip_prefix("PPid:").map(str::trim) == Some(me.as_str()))
        {
            out.push(pid);
        }
    }
    out
}

fn status_field(status: &str, key: &str) -> String {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_string())
        .unwrap_or_default()
}

#[test]
fn the_worker_is_confined_seen_from_outside() {
    if !common::privileged("the_worker_is_confined_seen_from_outside") {
        return;
    }
    let c = cache();
    let cache_path = c.path().to_path_buf();
    // A guest that blocks in poll_oneoff until the 3 s timeout; we look at the worker meanwhile.
    let run = std::thread::spawn(move || {
        go(
            r#"{"version": 1, "resources": {"timeout": "3s"}, "wasm": {"os_sandbox": true}}"#,
            &cache_path,
            &fixture("sleep.wat"),
            &[],
        )
    });
    let t = Instant::now();
    let mut seen = None;
    while t.elapsed() < Duration::from_secs(3) {
        if let Some(&pid) = my_workers().first() {
            // The namespaces first, the status last: a worker that ends between the reads (hello
            // is quick) leaves a read failed, and the loop looks again, never at half a process.
            let net = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok();
            let user = std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            // The filter is installed once the worker has read its job.
            if status_field(&status, "Seccomp:") == "2" && net.is_some() && user.is_some() {
                seen = Some((status, net, user));
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let r = run.join().unwrap();
    let (status, net, user) = seen.expect("saw the worker with its seccomp filter installed");
    assert_eq!(status_field(&status, "Seccomp:"), "2", "{status}");
    assert_eq!(status_field(&status, "NoNewPrivs:"), "1", "{status}");
    for cap in ["CapEff:", "CapPrm:", "CapInh:", "CapBnd:", "CapAmb:"] {
        assert_eq!(
            status_field(&status, cap),
            "0000000000000000",
            "{cap} {status}"
        );
    }
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_user = std::fs::read_link("/proc/self/ns/user").unwrap();
    assert_ne!(
        net.unwrap(),
        host_net,
        "the worker shares the host's network namespace"
    );
    assert_ne!(
        user.unwrap(),
        host_user,
        "the worker shares the host's user namespace"
    );
    // And the run still ends as a timeout inside the host call.
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert_eq!(
        r.details.to_json()["timeout_in"],
        "host call (worker watchdog)"
    );
}

#[test]
fn timeout_and_trap_classify_under_the_filter() {
    if !common::privileged("timeout_and_trap_classify_under_the_filter") {
        return;
    }
    let c = cache();
    let r = go(
        r#"{"version": 1, "resources": {"timeout": "1s"}, "wasm": {"os_sandbox": true}}"#,
        c.path(),
        &fixture("spin.wat"),
        &[],
    );
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert_hardened(&r);
    let r = go(HARDENED, c.path(), &fixture("recurse.wat"), &[]);
    match &r.outcome {
        Outcome::Trap { message } => assert!(message.contains("call stack exhausted"), "{message}"),
        o => panic!("expected a trap, got {o:?}"),
    }
    assert_hardened(&r);
    let r = go(
        r#"{"version": 1, "resources": {"memory": "64M", "timeout": "20s"}, "wasm": {"os_sandbox": true}}"#,
        c.path(),
        &fixture("memgrow.wat"),
        &[],
    );
    assert!(matches!(r.outcome, Outcome::Oom { .. }), "{r:?}");
}

#[test]
fn a_component_runs_hardened() {
    if !common::privileged("a_component_runs_hardened") {
        return;
    }
    let c = cache();
    let r = go(HARDENED, c.path(), &fixture("component_ok.wat"), &[]);
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_hardened(&r);
}
