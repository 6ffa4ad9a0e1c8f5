//! `hybox serve` end to end: the real binary on 127.0.0.1 with an ephemeral port and a temp functions
//! directory, driven over HTTP (hyper, loopback only). Privileged: every function has a cgroup
//! envelope, every native call a sandbox in fresh namespaces.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hybox::loadgen::{Conn, Reply};

/// A running `hybox serve`, stopped with SIGTERM (then reaped) when dropped.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
    cgroup_parent: String,
    _dir: tempfile::TempDir,
}

/// A bundle in the functions directory: `name` with only the given variant of example `guest`.
fn bundle(dir: &Path, name: &str, guest: &str, wasm: bool, policy: &str) {
    let b = dir.join(name);
    std::fs::create_dir_all(&b).unwrap();
    let variant = if wasm {
        std::fs::copy(common::wasm_guest(guest), b.join("f.wasm")).unwrap();
        r#""wasm": "f.wasm""#
    } else {
        std::fs::copy(common::native_guest(guest), b.join("f")).unwrap();
        r#""native": "f""#
    };
    std::fs::write(
        b.join("bundle.json"),
        format!(r#"{{"version": 1, "name": "{name}", {variant}, "policy": "policy.json"}}"#),
    )
    .unwrap();
    std::fs::write(b.join("policy.json"), policy).unwrap();
}

const STATE_POLICY: &str = r#"{"version": 1, "trust": "untrusted",
  "resources": {"memory": "64M", "cpus": 1, "pids": 32, "timeout": "2s"},
  "filesystem": {"tmp": {"size": "1M"}}}"#;

/// The standard functions: `state` and `hello` on each backend, plus a bad bundle.
fn functions_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    bundle(d, "state-wasm", "state", true, STATE_POLICY);
    bundle(d, "state-native", "state", false, STATE_POLICY);
    bundle(d, "hello-wasm", "hello", true, STATE_POLICY);
    bundle(d, "hello-native", "hello", false, STATE_POLICY);
    // A bad bundle: names a wasm file that is not there.
    std::fs::create_dir_all(d.join("broken")).unwrap();
    std::fs::write(
        d.join("broken/bundle.json"),
        r#"{"version": 1, "name": "broken", "wasm": "missing.wasm"}"#,
    )
    .unwrap();
    dir
}

impl Server {
    fn start(dir: tempfile::TempDir, extra: &[&str]) -> Server {
        Server::start_from(Path::new(env!("CARGO_BIN_EXE_hybox")), dir, extra)
    }

    /// `hybox serve` from the executable at `exe`.
    fn start_from(exe: &Path, dir: tempfile::TempDir, extra: &[&str]) -> Server {
        static N: AtomicUsize = AtomicUsize::new(0);
        let cgroup_parent = format!(
            "hybox-serve-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut child = std::process::Command::new(exe)
            .arg("serve")
            .arg("--functions")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--cgroup-parent", &cgroup_parent])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start hybox serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        {
            let stderr = stderr.clone();
            let pipe = child.stderr.take().unwrap();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    eprintln!("[serve] {line}");
                    let mut s = stderr.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read the ready line");
        let addr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in the ready line {line:?}"));
        Server {
            child: Some(child),
            addr,
            stderr,
            cgroup_parent,
            _dir: dir,
        }
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// SIGTERM, then wait (at most `within`) for the exit status.
    fn terminate(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on our own child's pid with a signal constant.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return s;
            }
            if t.elapsed() > within {
                let _ = child.kill();
                panic!("hybox serve did not exit within {within:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The warm wasm workers running now: the processes in this server's envelopes whose command
    /// line is `... __wasm-worker --serve`.
    fn wasm_workers(&self) -> Vec<i32> {
        let mut pids: Vec<i32> = self
            .envelopes_left()
            .iter()
            .filter_map(|d| std::fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|procs| {
                procs
                    .lines()
                    .filter_map(|l| l.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline"))
                    .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"__wasm-worker"))
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        pids
    }

    /// Envelope directories left under this server's cgroup parent (every controller).
    fn envelopes_left(&self) -> Vec<PathBuf> {
        let mut left = Vec::new();
        for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            let Ok(controllers) = std::fs::read_dir(base) else {
                continue;
            };
            for c in controllers.flatten() {
                let Ok(entries) = std::fs::read_dir(c.path().join(&self.cgroup_parent)) else {
                    continue;
                };
                left.extend(
                    entries
                        .flatten()
                        .filter(|e| e.path().is_dir())
                        .map(|e| e.path()),
                );
            }
        }
        left
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.terminate(Duration::from_secs(30));
        }
        // The server's own cgroup parent (empty once every envelope is gone): rmdir, per controller.
        for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            if let Ok(controllers) = std::fs::read_dir(base) {
                for c in controllers.flatten() {
                    let _ = std::fs::remove_dir(c.path().join(&self.cgroup_parent));
                }
            }
        }
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// One request on a fresh connection.
fn request(addr: SocketAddr, method: &str, path: &str, body: &str) -> Reply {
    rt().block_on(async {
        let mut c = Conn::connect(addr).await.expect("connect");
        c.request(method, path, body.as_bytes().to_vec())
            .await
            .expect("request")
    })
}

fn invoke(addr: SocketAddr, function: &str, payload: &str) -> Reply {
    request(
        addr,
        "POST",
        &format!("/v1/functions/{function}/invoke"),
        payload,
    )
}

fn header(r: &Reply, name: &str) -> String {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

fn body(r: &Reply) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[test]
fn calls_are_isolated_on_both_backends() {
    if !common::privileged("calls_are_isolated_on_both_backends") {
        return;
    }
    let s = Server::start(functions_dir(), &[]);
    for f in ["state-wasm", "state-native"] {
        let mut run_ids = Vec::new();
        for i in 0..3 {
            let r = invoke(s.addr, f, "");
            assert_eq!(r.status, 200, "{f} call {i}: {}", body(&r));
            assert_eq!(header(&r, "x-hybox-outcome"), "exited", "{f} call {i}");
            assert_eq!(
                body(&r).trim(),
                "global=1 file=absent env=absent write=ok",
                "{f} call {i} saw what an earlier call left behind"
            );
            run_ids.push(header(&r, "x-hybox-run-id"));
        }
        run_ids.sort();
        run_ids.dedup();
        assert_eq!(run_ids.len(), 3, "{f}: every call has its own report");
    }
    assert_eq!(
        header(&invoke(s.addr, "state-wasm", ""), "x-hybox-backend"),
        "wasm"
    );
    assert_eq!(
        header(&invoke(s.addr, "state-native", ""), "x-hybox-backend"),
        "native"
    );
}

#[test]
fn timeout_and_memory_limit_are_reported_per_call() {
    if !common::privileged("timeout_and_memory_limit_are_reported_per_call") {
        return;
    }
    let s = Server::start(functions_dir(), &[]);
    for f in ["state-wasm", "state-native"] {
        let r = invoke(s.addr, f, "spin");
        assert_eq!(r.status, 200, "{f}: {}", body(&r));
        assert_eq!(header(&r, "x-hybox-outcome"), "timeout", "{f} spin");
        assert_eq!(header(&r, "x-hybox-limit"), "timeout", "{f} spin");
        assert_eq!(header(&r, "x-hybox-exit-code"), "124", "{f} spin");

        let r = invoke(s.addr, f, "alloc:200");
        assert_eq!(
            header(&r, "x-hybox-outcome"),
            "oom",
            "{f} alloc: {}",
            body(&r)
        );
        assert_eq!(header(&r, "x-hybox-limit"), "memory", "{f} alloc");

        // The full report for one call, then the next call is unaffected.
        let r = request(
            s.addr,
            "POST",
            &format!("/v1/functions/{f}/invoke?report=1"),
            "alloc:200",
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("report JSON");
        assert_eq!(v["report"]["outcome"]["kind"], "oom", "{f}: {v}");
        assert_eq!(v["report"]["limit_fired"], "memory", "{f}: {v}");
        assert_eq!(v["report"]["backend"], f.trim_start_matches("state-"));

        let r = invoke(s.addr, f, "alloc:8");
        assert_eq!(
            header(&r, "x-hybox-outcome"),
            "exited",
            "{f} after the limits"
        );
        assert_eq!(body(&r).trim(), "allocated 8 MiB (8)");
        assert_eq!(header(&r, "x-hybox-limit"), "");
    }
}

#[test]
fn crashing_or_hanging_functions_do_not_affect_others() {
    if !common::privileged("crashing_or_hanging_functions_do_not_affect_others") {
        return;
    }
    let s = Server::start(functions_dir(), &[]);
    let addr = s.addr;
    // Hangs on both backends (sleep: a blocking host call on wasm) while hello keeps answering.
    let hangs: Vec<_> = ["state-wasm", "state-native"]
        .into_iter()
        .map(|f| std::thread::spawn(move || invoke(addr, f, "sleep")))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    for f in ["hello-wasm", "hello-native"] {
        for _ in 0..3 {
            let r = invoke(addr, f, "");
            assert_eq!(header(&r, "x-hybox-outcome"), "exited", "{f} during a hang");
            assert_eq!(body(&r).trim(), "hello from hybox");
        }
    }
    for h in hangs {
        let r = h.join().unwrap();
        assert_eq!(header(&r, "x-hybox-outcome"), "timeout", "{}", body(&r));
    }
    let r = invoke(addr, "state-wasm", "crash");
    assert_eq!(header(&r, "x-hybox-outcome"), "trap", "wasm crash");
    let r = invoke(addr, "state-native", "crash");
    assert_eq!(header(&r, "x-hybox-outcome"), "signaled", "native crash");
    assert_eq!(header(&r, "x-hybox-exit-code"), "134");
    // The crashed and hung functions serve again, isolated as before.
    for f in ["state-wasm", "state-native"] {
        let r = invoke(addr, f, "");
        assert_eq!(
            body(&r).trim(),
            "global=1 file=absent env=absent write=ok",
            "{f}"
        );
    }
    assert_eq!(request(addr, "GET", "/healthz", "").status, 200);
}

#[test]
fn overload_returns_429_then_recovers() {
    if !common::privileged("overload_returns_429_then_recovers") {
        return;
    }
    let s = Server::start(
        functions_dir(),
        &["--max-concurrency", "1", "--max-queue", "1"],
    );
    let addr = s.addr;
    // One running, one queued: the rest are refused at once.
    let calls: Vec<_> = (0..5)
        .map(|_| std::thread::spawn(move || invoke(addr, "state-wasm", "work:1500")))
        .collect();
    let replies: Vec<Reply> = calls.into_iter().map(|c| c.join().unwrap()).collect();
    let ok = replies.iter().filter(|r| r.status == 200).count();
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(ok >= 1, "at least the running call completes");
    assert!(
        refused.len() >= 3,
        "with 1 slot and a queue of 1, at least 3 of 5 are refused: {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    assert_eq!(ok + refused.len(), 5);
    for r in &refused {
        assert_eq!(header(r, "retry-after"), "1");
        assert!(body(r).contains("queue is full"), "{}", body(r));
    }
    // Recovered: the next call runs.
    let r = invoke(addr, "state-wasm", "");
    assert_eq!(r.status, 200);
    assert_eq!(header(&r, "x-hybox-outcome"), "exited");
    let m = body(&request(addr, "GET", "/metrics", ""));
    assert!(
        m.contains(&format!(
            "hybox_rejected_total{{function=\"state-wasm\",reason=\"queue_full\"}} {}",
            refused.len()
        )),
        "{m}"
    );
}

#[test]
fn sigterm_drains_in_flight_calls_and_removes_every_envelope() {
    if !common::privileged("sigterm_drains_in_flight_calls_and_removes_every_envelope") {
        return;
    }
    let mut s = Server::start(functions_dir(), &[]);
    let addr = s.addr;
    assert!(
        !s.envelopes_left().is_empty(),
        "the warm wasm workers' envelopes exist while serving"
    );
    let calls: Vec<_> = ["state-wasm", "state-native"]
        .into_iter()
        .map(|f| std::thread::spawn(move || invoke(addr, f, "work:1500")))
        .collect();
    // SIGTERM once both calls are running.
    let t = Instant::now();
    loop {
        let m = body(&request(addr, "GET", "/metrics", ""));
        if m.contains(r#"hybox_in_flight{function="state-wasm",backend="wasm"} 1"#)
            && m.contains(r#"hybox_in_flight{function="state-native",backend="native"} 1"#)
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "calls never started: {m}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = s.terminate(Duration::from_secs(20));
    for c in calls {
        let r = c.join().unwrap();
        assert_eq!(r.status, 200, "the in-flight call completes: {}", body(&r));
        assert_eq!(header(&r, "x-hybox-outcome"), "exited");
        assert!(body(&r).starts_with("worked 1500 ms"), "{}", body(&r));
    }
    assert!(
        status.success(),
        "hybox serve exits 0 after draining: {status}"
    );
    assert_eq!(
        s.envelopes_left(),
        Vec::<PathBuf>::new(),
        "no envelope left"
    );
    assert!(s.stderr().contains("draining"), "{}", s.stderr());
    // Refuses new calls: nothing listens any more.
    let refused = rt().block_on(async { Conn::connect(addr).await.is_err() });
    assert!(refused, "the listener is closed after the drain");
}

#[test]
fn bad_bundle_is_skipped_with_a_clear_message() {
    if !common::privileged("bad_bundle_is_skipped_with_a_clear_message") {
        return;
    }
    let s = Server::start(functions_dir(), &[]);
    let err = s.stderr();
    assert!(
        err.contains("skipping")
            && err.contains("broken")
            && err.contains("missing.wasm: not found"),
        "{err}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&request(s.addr, "GET", "/v1/functions", "").body).unwrap();
    let names: Vec<&str> = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["hello-native", "hello-wasm", "state-native", "state-wasm"]
    );
    let skipped = &v["skipped"][0];
    assert!(skipped["path"].as_str().unwrap().ends_with("broken"));
    assert!(skipped["error"].as_str().unwrap().contains("not found"));
    let hello = &v["functions"][1];
    assert_eq!(hello["backend"], "wasm");
    assert!(!hello["reasons"].as_array().unwrap().is_empty());
    assert_eq!(hello["limits"]["memory"], "64M");
    assert_eq!(invoke(s.addr, "broken", "").status, 404);
}

#[test]
fn metrics_count_what_happened() {
    if !common::privileged("metrics_count_what_happened") {
        return;
    }
    let s = Server::start(functions_dir(), &[]);
    for _ in 0..3 {
        invoke(s.addr, "hello-wasm", "");
    }
    invoke(s.addr, "hello-native", "");
    invoke(s.addr, "state-wasm", "spin");
    invoke(s.addr, "state-native", "crash");
    let m = body(&request(s.addr, "GET", "/metrics", ""));
    for line in [
        r#"hybox_invocations_total{function="hello-wasm",backend="wasm",outcome="exited"} 3"#,
        r#"hybox_invocations_total{function="hello-native",backend="native",outcome="exited"} 1"#,
        r#"hybox_invocations_total{function="state-wasm",backend="wasm",outcome="timeout"} 1"#,
        r#"hybox_invocations_total{function="state-native",backend="native",outcome="signaled"} 1"#,
        r#"hybox_limit_hits_total{function="state-wasm",backend="wasm",limit="timeout"} 1"#,
        r#"hybox_starts_total{function="hello-wasm",backend="wasm",start="warm"} 3"#,
        r#"hybox_starts_total{function="hello-native",backend="native",start="cold"} 1"#,
        r#"hybox_invocation_duration_seconds_count{function="hello-wasm",backend="wasm"} 3"#,
        r#"hybox_in_flight{function="hello-wasm",backend="wasm"} 0"#,
        r#"hybox_queue_depth{function="hello-wasm",backend="wasm"} 0"#,
    ] {
        assert!(m.contains(line), "missing `{line}` in\n{m}");
    }
}

#[test]
fn native_pool_calls_are_isolated_with_a_report_each() {
    if !common::privileged("native_pool_calls_are_isolated_with_a_report_each") {
        return;
    }
    let mut s = Server::start(functions_dir(), &["--native-pool", "2"]);
    let v: serde_json::Value =
        serde_json::from_slice(&request(s.addr, "GET", "/v1/functions", "").body).unwrap();
    let state = v["functions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "state-native")
        .unwrap();
    assert_eq!(state["native_pool"], 2);
    let mut envelopes = Vec::new();
    let mut run_ids = Vec::new();
    let mut warm = 0;
    for i in 0..4 {
        // Time for the background refill (a pre-build is tens of milliseconds).
        std::thread::sleep(Duration::from_millis(400));
        let r = request(
            s.addr,
            "POST",
            "/v1/functions/state-native/invoke?report=1",
            "",
        );
        let v: serde_json::Value = serde_json::from_slice(&r.body).expect("report JSON");
        assert_eq!(
            v["stdout"].as_str().unwrap().trim(),
            "global=1 file=absent env=absent write=ok",
            "call {i} saw what an earlier call left behind: {v}"
        );
        let report = &v["report"];
        assert_eq!(report["outcome"]["kind"], "exited", "{v}");
        assert_eq!(report["backend"], "native");
        if v["start"] == "warm" {
            warm += 1;
            assert!(
                report["details"]["prebuild_us"].as_u64().unwrap() > 0,
                "{v}"
            );
            assert_eq!(report["details"]["landlock"], "fully_enforced", "{v}");
        }
        envelopes.push(report["envelope"]["path"].as_str().unwrap().to_string());
        run_ids.push(report["run_id"].as_str().unwrap().to_string());
    }
    assert!(
        warm >= 3,
        "calls come from the pool once it is filled ({warm} of 4 warm)"
    );
    envelopes.sort();
    envelopes.dedup();
    run_ids.sort();
    run_ids.dedup();
    assert_eq!(
        envelopes.len(),
        4,
        "every call has its own sandbox and envelope"
    );
    assert_eq!(run_ids.len(), 4, "every call has its own report");
    // A limit in a pooled sandbox is that call's alone.
    let r = invoke(s.addr, "state-native", "spin");
    assert_eq!(header(&r, "x-hybox-outcome"), "timeout");
    std::thread::sleep(Duration::from_millis(400));
    let r = invoke(s.addr, "state-native", "");
    assert_eq!(header(&r, "x-hybox-outcome"), "exited");
    assert_eq!(header(&r, "x-hybox-start"), "warm");
    // Shutdown destroys the sandboxes still waiting in the pool, with their envelopes.
    assert!(s.terminate(Duration::from_secs(20)).success());
    assert_eq!(
        s.envelopes_left(),
        Vec::<PathBuf>::new(),
        "no envelope left"
    );
}

/// SIGKILLs every warm wasm worker of `s` (there must be at least one).
fn kill_wasm_workers(s: &Server) -> Vec<i32> {
    let pids = s.wasm_workers();
    assert!(
        !pids.is_empty(),
        "no warm wasm worker found in the envelopes"
    );
    for pid in &pids {
        // SAFETY: kill(2) with a pid read from the server's own envelope and a signal constant.
        assert_eq!(unsafe { libc::kill(*pid, libc::SIGKILL) }, 0, "kill {pid}");
    }
    pids
}

/// A warm worker killed while idle (the OOM killer, an admin, a crash) is noticed before the next
/// call is handed to it: that call succeeds on a new worker, and the metrics count the death. A
/// worker killed during a call fails that call with a 500 that says so, and the next call succeeds.
#[test]
fn a_dead_warm_worker_is_replaced_before_the_next_call() {
    if !common::privileged("a_dead_warm_worker_is_replaced_before_the_next_call") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path(), "hello-wasm", "hello", true, STATE_POLICY);
    bundle(dir.path(), "state-wasm", "state", true, STATE_POLICY);
    let s = Server::start(dir, &[]);
    let r = invoke(s.addr, "hello-wasm", "");
    assert_eq!(r.status, 200, "{}", body(&r));

    let killed = kill_wasm_workers(&s);
    std::thread::sleep(Duration::from_millis(200));
    let r = invoke(s.addr, "hello-wasm", "");
    assert_eq!(r.status, 200, "{}\n{}", body(&r), s.stderr());
    assert_eq!(body(&r), "hello from hybox\n");
    assert_eq!(header(&r, "x-hybox-start"), "cold");
    let r = invoke(s.addr, "state-wasm", "");
    assert_eq!(r.status, 200, "{}", body(&r));
    let now = s.wasm_workers();
    assert!(
        now.iter().all(|p| !killed.contains(p)),
        "{killed:?} {now:?}"
    );

    // Killed during a call: that call is a 500 naming the cause, the next one succeeds.
    let addr = s.addr;
    let spin = std::thread::spawn(move || invoke(addr, "state-wasm", "spin"));
    std::thread::sleep(Duration::from_millis(500));
    kill_wasm_workers(&s);
    let r = spin.join().unwrap();
    assert_eq!(r.status, 500, "{}", body(&r));
    assert!(body(&r).contains("died during the call"), "{}", body(&r));
    assert!(body(&r).contains("signal: 9"), "{}", body(&r));
    let r = invoke(s.addr, "state-wasm", "");
    assert_eq!(r.status, 200, "{}", body(&r));

    let m = body(&request(s.addr, "GET", "/metrics", ""));
    for line in [
        r#"hybox_worker_deaths_total{function="hello-wasm",backend="wasm",when="idle"} 1"#,
        r#"hybox_worker_deaths_total{function="state-wasm",backend="wasm",when="idle"} 1"#,
        r#"hybox_worker_deaths_total{function="state-wasm",backend="wasm",when="in_call"} 1"#,
    ] {
        assert!(m.contains(line), "missing `{line}` in\n{m}");
    }
}

/// The warm workers are the running executable itself: `hybox serve` started from a copy named
/// `hybox-0.1` starts them, and replacing that file on disk afterwards does not change what a new
/// worker runs.
#[test]
fn warm_workers_run_the_started_executable_whatever_replaces_it() {
    if !common::privileged("warm_workers_run_the_started_executable_whatever_replaces_it") {
        return;
    }
    let bin = tempfile::tempdir().unwrap();
    let exe = bin.path().join("hybox-0.1");
    std::fs::copy(env!("CARGO_BIN_EXE_hybox"), &exe).unwrap();
    let dir = tempfile::tempdir().unwrap();
    bundle(dir.path(), "hello-wasm", "hello", true, STATE_POLICY);
    let s = Server::start_from(&exe, dir, &[]);
    let r = invoke(s.addr, "hello-wasm", "");
    assert_eq!(r.status, 200, "{}", body(&r));
    // Replace the file (a new inode at the same path, as a package upgrade does).
    let fake = bin.path().join("fake");
    std::fs::write(&fake, "#!/bin/sh\nexit 3\n").unwrap();
    std::fs::set_permissions(&fake, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    std::fs::rename(&fake, &exe).unwrap();
    kill_wasm_workers(&s);
    std::thread::sleep(Duration::from_millis(200));
    let r = invoke(s.addr, "hello-wasm", "");
    assert_eq!(r.status, 200, "{}\n{}", body(&r), s.stderr());
    assert_eq!(body(&r), "hello from hybox\n");
}
