//! Warm wasm functions (`hybox::backend::wasm::WarmFunction`): loaded once in a long-lived worker
//! inside their own envelope, a fresh store per call. Privileged: each function creates a cgroup.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hybox::backend::wasm::WarmFunction;
use hybox::policy::Policy;
use hybox::report::Outcome;
use hybox::HostConfig;

fn host() -> HostConfig {
    HostConfig {
        hybox_path: Some(PathBuf::from(env!("CARGO_BIN_EXE_hybox"))),
        cache_dir: Some(std::env::temp_dir().join("hybox-warm-test-cache")),
        ..HostConfig::default()
    }
}

fn policy(timeout: &str) -> Policy {
    Policy::from_json_str(
        &format!(
            r#"{{"version": 1, "resources": {{"memory": "256M", "pids": 64, "timeout": "{timeout}"}},
               "on_unenforceable": "fail"}}"#
        ),
        "warm-test.json",
    )
    .expect("test policy")
}

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures/wasm").join(name)
}

fn load(guest: &Path, timeout: &str) -> WarmFunction {
    WarmFunction::load(guest, &policy(timeout), &host()).expect("load the warm function")
}

/// The cgroup directories (every v1 controller, or v2) whose name starts with the run id.
fn cgroups_of(run_id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        let Ok(controllers) = std::fs::read_dir(base) else {
            continue;
        };
        for c in controllers.flatten() {
            let parent = c.path().join("hybox");
            let Ok(entries) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(run_id) {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

#[test]
fn hello_100_calls_then_drop_leaves_nothing() {
    if !common::privileged("hello_100_calls_then_drop_leaves_nothing") {
        return;
    }
    let mut f = load(&common::wasm_guest("hello"), "30s");
    let run_id = f.run_id().to_string();
    let pid = f.worker_pid().expect("a running worker");
    assert!(
        Path::new("/sys/fs/cgroup/memory/hybox")
            .read_dir()
            .expect("the hybox memory cgroup parent")
            .flatten()
            .any(|e| e.file_name().to_string_lossy().starts_with(&run_id)),
        "the function's envelope exists while it is loaded"
    );
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("worker cgroup");
    assert!(
        cgroup.contains(&run_id),
        "the worker runs inside the function's envelope: {cgroup}"
    );
    for i in 0..100 {
        let call = f.invoke(&[], &[]).expect("call");
        assert_eq!(call.outcome, Outcome::Exited { code: 0 }, "call {i}");
        assert_eq!(String::from_utf8_lossy(&call.stdout), "hello from hybox\n");
        assert!(!call.worker_started, "call {i}: the worker started by load");
    }
    assert_eq!(f.worker_pid(), Some(pid), "one worker served every call");
    drop(f);
    assert!(
        cgroups_of(&run_id).is_empty(),
        "no cgroup left: {:?}",
        cgroups_of(&run_id)
    );
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "the worker process is gone"
    );
}

#[test]
fn calls_share_no_state() {
    if !common::privileged("calls_share_no_state") {
        return;
    }
    let mut f = load(&fixture("counter.wat"), "30s");
    for i in 0..5 {
        let call = f.invoke(&[], &[]).expect("call");
        assert_eq!(call.outcome, Outcome::Exited { code: 0 }, "call {i}");
        assert_eq!(
            String::from_utf8_lossy(&call.stdout),
            "g=0 m=0 f=0\n",
            "call {i}: a fresh instance (global, memory) and a fresh /tmp"
        );
    }
}

#[test]
fn a_trap_an_exit_code_and_a_memory_limit_do_not_poison_the_next_call() {
    if !common::privileged("a_trap_an_exit_code_and_a_memory_limit_do_not_poison_the_next_call") {
        return;
    }
    let mut f = load(&fixture("modes.wat"), "30s");
    let pid = f.worker_pid();
    let ok = |f: &mut WarmFunction| {
        let call = f.invoke(&[], b"ok").expect("call");
        assert_eq!(call.outcome, Outcome::Exited { code: 0 });
        assert_eq!(call.stdout, b"ok\n");
    };
    ok(&mut f);
    let trap = f.invoke(&[], b"t").expect("call");
    assert!(
        matches!(&trap.outcome, Outcome::Trap { message } if message.contains("unreachable")),
        "{:?}",
        trap.outcome
    );
    ok(&mut f);
    let exit = f.invoke(&[], b"e").expect("call");
    assert_eq!(exit.outcome, Outcome::Exited { code: 7 });
    ok(&mut f);
    let oom = f.invoke(&[], b"m").expect("call");
    assert!(
        matches!(&oom.outcome, Outcome::Oom { detail } if detail.contains("wasm memory limit")),
        "{:?}",
        oom.outcome
    );
    ok(&mut f);
    assert_eq!(f.worker_pid(), pid, "guest failures do not cost the worker");
}

#[test]
fn a_timeout_is_followed_by_a_successful_call() {
    if !common::privileged("a_timeout_is_followed_by_a_successful_call") {
        return;
    }
    let mut f = load(&fixture("modes.wat"), "300ms");
    let t = Instant::now();
    let call = f.invoke(&[], b"l").expect("call");
    let took = t.elapsed();
    assert_eq!(call.outcome, Outcome::Timeout);
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "the deadline fired ({took:?})"
    );
    for _ in 0..3 {
        let call = f.invoke(&[], b"ok").expect("call");
        assert_eq!(call.outcome, Outcome::Exited { code: 0 });
        assert_eq!(call.stdout, b"ok\n");
    }
}

/// A worker killed while idle (the OOM killer, an admin, a crash) is noticed by its pidfd before a
/// call is handed to it: that very call runs on a new worker and says why one was started.
#[test]
fn a_killed_idle_worker_is_replaced_before_the_next_call() {
    if !common::privileged("a_killed_idle_worker_is_replaced_before_the_next_call") {
        return;
    }
    let mut f = load(&common::wasm_guest("hello"), "30s");
    let pid = f.worker_pid().expect("a running worker");
    // SAFETY: kill(2) on a pid this test owns (the function's worker, a child of this process).
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    std::thread::sleep(Duration::from_millis(50));
    let call = f.invoke(&[], &[]).expect("a new worker takes the call");
    assert!(call.worker_started);
    assert_eq!(String::from_utf8_lossy(&call.stdout), "hello from hybox\n");
    let why = call.details.worker_replaced.as_deref().unwrap_or_default();
    assert!(
        why.contains("died while idle") && why.contains("SIGKILL"),
        "{why}"
    );
    assert_ne!(f.worker_pid(), Some(pid));
    let call = f.invoke(&[], &[]).expect("the new worker stays");
    assert!(!call.worker_started);
    assert!(call.details.worker_replaced.is_none());
}

#[test]
fn a_guest_that_does_not_compile_is_a_load_error() {
    if !common::privileged("a_guest_that_does_not_compile_is_a_load_error") {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let bad = dir.path().join("bad.wat");
    std::fs::write(&bad, "(module (func (export \"_start\") (i32.add)))").expect("write");
    let err = match WarmFunction::load(&bad, &policy("30s"), &host()) {
        Ok(_) => panic!("an invalid module loaded"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("compile"), "{err}");
}

/// `network: loopback` on a warm worker is its own `lo`, as on the one-shot path: the guest talks to
/// itself on the port a host listener holds on the host's 127.0.0.1, and a datagram to a host UDP
/// socket there never arrives.
#[test]
fn a_warm_loopback_worker_has_its_own_lo() {
    if !common::privileged("a_warm_loopback_worker_has_its_own_lo") {
        return;
    }
    common::examples_out();
    let host_tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let host_udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    host_udp.set_nonblocking(true).unwrap();
    let (tcp_port, udp_port) = (
        host_tcp.local_addr().unwrap().port().to_string(),
        host_udp.local_addr().unwrap().port().to_string(),
    );
    let p = Policy::from_json_str(
        r#"{"version": 1, "network": "loopback", "on_unenforceable": "fail",
           "resources": {"memory": "256M", "pids": 64, "timeout": "10s"}}"#,
        "warm-loopback.json",
    )
    .unwrap();
    let probe = common::repo().join("examples/out/component/probe.wasm");
    let mut f = WarmFunction::load(&probe, &p, &host()).expect("load the probe component");
    let run = |f: &mut WarmFunction, a: &[&str]| {
        let args: Vec<String> = a.iter().map(|s| s.to_string()).collect();
        let call = f.invoke(&args, &[]).expect("call");
        String::from_utf8_lossy(&call.stdout).into_owned()
    };
    let echo = run(&mut f, &["attack", "loopback_echo", &tcp_port]);
    assert!(echo.contains(r#""ret":1"#), "{echo}");
    let sent = run(&mut f, &["attack", "udp_send", &udp_port]);
    assert!(sent.contains(r#""ret":5"#), "{sent}");
    let mut b = [0u8; 16];
    assert!(
        host_udp.recv_from(&mut b).is_err(),
        "the host socket got the datagram"
    );
}
