//! wasi:http functions in `hybox serve`, end to end: the real binary on 127.0.0.1 with an ephemeral
//! port, the HTTP guests of examples/http-guests (built by examples/build.sh), and a plain
//! HTTP/1.1 client on a std `TcpStream` (loopback only). Privileged: every function's worker runs in
//! its own cgroup envelope.

#[path = "http_serve/client.rs"]
mod client;
#[path = "common/mod.rs"]
mod common;

use client::{metrics, send, send_announcing, upstream};

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// A running `hybox serve`, stopped with SIGTERM (then reaped) when dropped.
struct Server {
    child: Option<Child>,
    addr: SocketAddr,
    cgroup_parent: String,
    _dir: tempfile::TempDir,
}

fn http_guest(name: &str) -> PathBuf {
    common::examples_out()
        .join("http")
        .join(format!("{name}.wasm"))
}

/// Every HTTP guest as a bundle of its own, each with a 2 s timeout and 64 MiB of memory; then the
/// `extra` bundles: (bundle name, guest, more top-level policy fields).
fn functions_dir(extra: &[(&str, &str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let every = ["hello", "echo", "slow", "membomb", "panic", "outbound"].map(|n| (n, n, ""));
    for (name, guest, more) in every.iter().chain(extra) {
        let b = dir.path().join(name);
        std::fs::create_dir_all(&b).unwrap();
        std::fs::copy(http_guest(guest), b.join("f.wasm")).unwrap();
        std::fs::write(
            b.join("bundle.json"),
            format!(
                r#"{{"version": 1, "name": "{name}", "wasm": "f.wasm", "policy": "policy.json"}}"#
            ),
        )
        .unwrap();
        let more = if more.is_empty() {
            String::new()
        } else {
            format!(", {more}")
        };
        std::fs::write(
            b.join("policy.json"),
            format!(
                r#"{{"version": 1, "trust": "untrusted",
                   "resources": {{"memory": "64M", "cpus": 1, "pids": 64, "timeout": "2s"}}{more}}}"#
            ),
        )
        .unwrap();
    }
    dir
}

impl Server {
    fn start() -> Server {
        Server::start_with(&[])
    }

    /// The six guests and the `extra` bundles ([`functions_dir`]).
    fn start_with(extra: &[(&str, &str, &str)]) -> Server {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = functions_dir(extra);
        let cgroup_parent = format!(
            "hybox-http-test-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let mut child = common::hybox()
            .arg("serve")
            .arg("--functions")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--cgroup-parent", &cgroup_parent])
            .args(["--max-concurrency", "2"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start hybox serve");
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).expect("read the ready line");
        assert!(
            line.contains(&format!("({} functions, 0 skipped)", 6 + extra.len())),
            "every HTTP guest loads: {line}"
        );
        let addr: SocketAddr = line
            .split("http://")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no address in the ready line {line:?}"));
        assert!(addr.ip().is_loopback());
        Server {
            child: Some(child),
            addr,
            cgroup_parent,
            _dir: dir,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid with a signal constant.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let t = Instant::now();
            while child.try_wait().unwrap().is_none() {
                if t.elapsed() > Duration::from_secs(30) {
                    let _ = child.kill();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        remove_cgroup_parent(&self.cgroup_parent);
    }
}

/// Removes the (empty) cgroup parent a test's server used, on every hierarchy.
fn remove_cgroup_parent(name: &str) {
    for base in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
        if let Ok(controllers) = std::fs::read_dir(base) {
            for c in controllers.flatten() {
                let _ = std::fs::remove_dir(c.path().join(name));
            }
        }
        let _ = std::fs::remove_dir(Path::new(base).join(name));
    }
}

#[test]
fn http_functions_answer_with_their_own_status_headers_and_body() {
    if !common::privileged("http_functions_answer_with_their_own_status_headers_and_body") {
        return;
    }
    let s = Server::start();
    let r = send(s.addr, "GET", "/v1/functions/hello/a/b?x=1&y=2", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.complete);
    assert_eq!(
        r.text(),
        "hello from wasi:http (Method::Get /a/b?x=1&y=2)\n"
    );
    assert_eq!(r.header("content-type"), "text/plain");
    assert_eq!(r.header("x-hybox-outcome"), "exited");
    assert_eq!(r.header("x-hybox-backend"), "wasm");
    assert_eq!(r.header("x-hybox-world"), "wasi:http/proxy");
    assert!(!r.header("x-hybox-run-id").is_empty());
    assert!(!r.header("x-hybox-duration-ms").is_empty());
    // The bare function path is `/`; every method goes through.
    let r = send(s.addr, "DELETE", "/v1/functions/hello", None);
    assert_eq!(r.text(), "hello from wasi:http (Method::Delete /)\n");
    // A fresh instance per request: two requests, two run ids.
    let a = send(s.addr, "GET", "/v1/functions/hello/", None);
    let b = send(s.addr, "GET", "/v1/functions/hello/", None);
    assert_ne!(a.header("x-hybox-run-id"), b.header("x-hybox-run-id"));
    // A stdin function's route on an HTTP function is the guest's own path.
    let r = send(
        s.addr,
        "POST",
        "/v1/functions/hello/invoke",
        Some(b"x".to_vec()),
    );
    assert_eq!(r.text(), "hello from wasi:http (Method::Post /invoke)\n");
    let r = send(s.addr, "GET", "/v1/functions/nope/x", None);
    assert_eq!(r.status, 404);
}

#[test]
fn worker_connections_are_kept_alive_and_every_request_still_gets_a_fresh_instance() {
    if !common::privileged(
        "worker_connections_are_kept_alive_and_every_request_still_gets_a_fresh_instance",
    ) {
        return;
    }
    let s = Server::start();
    // One request at a time: the server reuses one connection to the worker for all of them.
    for i in 0..20 {
        let r = send(s.addr, "GET", "/v1/functions/hello/count", None);
        assert_eq!(r.status, 200, "{}", r.text());
        // A global of the guest's that survived a request would count on.
        assert_eq!(
            r.text(),
            "requests handled by this instance: 1\n",
            "request {i}"
        );
    }
    let m = metrics(s.addr);
    let opened: Vec<&str> = m
        .lines()
        .filter(|l| l.starts_with("hybox_http_connections_total{") && l.contains("\"hello\""))
        .collect();
    assert_eq!(opened.len(), 1, "{m}");
    assert!(
        opened[0].ends_with(" 1"),
        "one connection for 20 requests: {m}"
    );
}

#[test]
fn echo_streams_16_mib_back_byte_for_byte() {
    if !common::privileged("echo_streams_16_mib_back_byte_for_byte") {
        return;
    }
    let s = Server::start();
    // Not compressible, not periodic: a xorshift stream.
    let mut x: u64 = 0x9e3779b97f4a7c15;
    let payload: Vec<u8> = (0..16 << 20)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let r = send(s.addr, "PUT", "/v1/functions/echo/", Some(payload.clone()));
    assert_eq!(r.status, 200);
    assert!(r.complete, "the echoed body ended early");
    assert_eq!(r.header("x-echo-method"), "Method::Put");
    assert_eq!(r.header("content-type"), "application/x-test");
    assert_eq!(r.body.len(), payload.len());
    assert!(r.body == payload, "the echoed body differs");
}

#[test]
fn limits_fire_per_request_and_are_named() {
    if !common::privileged("limits_fire_per_request_and_are_named") {
        return;
    }
    let s = Server::start();
    // A guest waiting in a host call (a clock pollable) before it answers: 504 at the deadline.
    let t = Instant::now();
    let r = send(s.addr, "GET", "/v1/functions/slow/", None);
    let took = t.elapsed();
    assert_eq!(r.status, 504, "{}", r.text());
    assert_eq!(r.header("x-hybox-outcome"), "timeout");
    assert_eq!(r.header("x-hybox-limit"), "timeout");
    assert!(r.text().contains("timeout"), "{}", r.text());
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "the 2 s timeout fired after {took:?}"
    );
    // A guest that answered and then streams too slowly: its body is cut at the deadline, never
    // made to look complete.
    let r = send(s.addr, "GET", "/v1/functions/slow/stream", None);
    assert_eq!(r.status, 200);
    assert!(
        !r.complete,
        "a body cut by the timeout must not end cleanly"
    );
    assert!(r.text().starts_with("tick 0\n"), "{}", r.text());
    // Memory: the store's limit traps the growth and is named.
    let r = send(s.addr, "GET", "/v1/functions/membomb/", None);
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.header("x-hybox-outcome"), "oom");
    assert_eq!(r.header("x-hybox-limit"), "memory");
    assert!(r.text().contains("wasm memory limit"), "{}", r.text());
    // A panic: 500 with the trap and the panic message.
    let r = send(s.addr, "GET", "/v1/functions/panic/boom", None);
    assert_eq!(r.status, 500, "{}", r.text());
    assert_eq!(r.header("x-hybox-outcome"), "trap");
    assert!(r.text().contains("unreachable"), "{}", r.text());
    assert!(
        r.text().contains("panicked on purpose (/boom)"),
        "{}",
        r.text()
    );
    // Nothing of the failures reaches the next request of the same functions' worker.
    let r = send(s.addr, "GET", "/v1/functions/hello/after", None);
    assert_eq!(r.status, 200);
    // The metrics count each request's final outcome (reported after its body).
    let t = Instant::now();
    let want = [
        r#"hybox_invocations_total{function="slow",backend="wasm",outcome="timeout"} 2"#,
        r#"hybox_invocations_total{function="membomb",backend="wasm",outcome="oom"} 1"#,
        r#"hybox_invocations_total{function="panic",backend="wasm",outcome="trap"} 1"#,
        r#"hybox_limit_hits_total{function="membomb",backend="wasm",limit="memory"} 1"#,
        r#"hybox_limit_hits_total{function="slow",backend="wasm",limit="timeout"} 2"#,
    ];
    loop {
        let m = metrics(s.addr);
        if want.iter().all(|w| m.contains(w)) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "metrics: {m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn outbound_http_is_denied_and_the_host_named() {
    if !common::privileged("outbound_http_is_denied_and_the_host_named") {
        return;
    }
    let s = Server::start();
    // Loopback too: nothing leaves; the hook refuses before any connection is made.
    let r = send(
        s.addr,
        "GET",
        &format!("/v1/functions/outbound/?host=127.0.0.1:{}", s.addr.port()),
        None,
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("HttpRequestDenied"), "{}", r.text());
    assert_eq!(
        r.header("x-hybox-denied"),
        format!(
            "outbound HTTP to 127.0.0.1:{} (not in the policy's http.outbound_hosts)",
            s.addr.port()
        )
    );
}

#[test]
fn outbound_http_reaches_only_the_granted_host_port() {
    if !common::privileged("outbound_http_reaches_only_the_granted_host_port") {
        return;
    }
    let (up, seen) = upstream();
    let grant = format!(r#""http": {{"outbound_hosts": ["{up}"]}}"#);
    let s = Server::start_with(&[("granted", "outbound", &grant)]);
    // Without the grant: refused before any connection, the host named.
    let r = send(
        s.addr,
        "GET",
        &format!("/v1/functions/outbound/?host={up}"),
        None,
    );
    assert_eq!(r.status, 502, "{}", r.text());
    assert!(r.text().contains("HttpRequestDenied"), "{}", r.text());
    assert_eq!(
        r.header("x-hybox-denied"),
        format!("outbound HTTP to {up} (not in the policy's http.outbound_hosts)")
    );
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a refused request connected"
    );
    // With it: the request goes through to that host:port.
    let r = send(
        s.addr,
        "GET",
        &format!("/v1/functions/granted/?host={up}"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), format!("upstream {up} answered 204\n"));
    assert!(r.header("x-hybox-denied").is_empty());
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    // The grant is that host:port, exactly: another port, or another name for the same address,
    // is refused (no name is resolved to compare it).
    for other in [
        format!("127.0.0.1:{}", up.port() + 1),
        format!("localhost:{}", up.port()),
        format!("127.1:{}", up.port()),
    ] {
        let r = send(
            s.addr,
            "GET",
            &format!("/v1/functions/granted/?host={other}"),
            None,
        );
        assert_eq!(r.status, 502, "{other}: {}", r.text());
        assert!(r.header("x-hybox-denied").contains(&other), "{other}");
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        1,
        "a refused request connected"
    );
}

/// The network namespaces of the server's HTTP workers (its children whose argv says `--http`),
/// one entry per worker.
fn worker_net_namespaces(server_pid: u32) -> Vec<String> {
    let mut out = Vec::new();
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = p.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(server_pid) && cmdline.split(|b| *b == 0).any(|a| a == b"--http") {
            if let Ok(ns) = std::fs::read_link(format!("/proc/{pid}/ns/net")) {
                out.push(ns.display().to_string());
            }
        }
    }
    out
}

#[test]
fn http_workers_have_their_own_network_namespace_unless_outbound_hosts_are_granted() {
    if !common::privileged(
        "http_workers_have_their_own_network_namespace_unless_outbound_hosts_are_granted",
    ) {
        return;
    }
    let host = std::fs::read_link("/proc/self/ns/net")
        .unwrap()
        .display()
        .to_string();
    let s = Server::start();
    let pid = s.child.as_ref().unwrap().id();
    let spaces = worker_net_namespaces(pid);
    assert_eq!(spaces.len(), 6, "one worker per function: {spaces:?}");
    for ns in &spaces {
        assert_ne!(
            *ns, host,
            "an HTTP worker shares the host's network namespace"
        );
    }
    drop(s);
    // Granted outbound hosts are reached from the host's network: that worker stays in it.
    let s = Server::start_with(&[(
        "granted",
        "outbound",
        r#""http": {"outbound_hosts": ["127.0.0.1:9"]}"#,
    )]);
    let spaces = worker_net_namespaces(s.child.as_ref().unwrap().id());
    assert_eq!(spaces.len(), 7, "{spaces:?}");
    assert_eq!(
        spaces.iter().filter(|ns| **ns == host).count(),
        1,
        "{spaces:?}"
    );
}

#[test]
fn the_deadline_fires_while_the_guest_waits_on_a_request_body_that_never_comes() {
    if !common::privileged(
        "the_deadline_fires_while_the_guest_waits_on_a_request_body_that_never_comes",
    ) {
        return;
    }
    let s = Server::start();
    // 1 MiB announced, 10 bytes sent, then nothing: echo answers at once and then waits in a
    // host call (the body stream) where no wasm runs; the 2 s request deadline still ends it.
    let t = Instant::now();
    let r = send_announcing(
        s.addr,
        "PUT",
        "/v1/functions/echo/",
        1 << 20,
        Some(vec![b'x'; 10]),
    );
    let took = t.elapsed();
    assert_eq!(r.status, 200);
    assert!(
        !r.complete,
        "a body cut by the timeout must not end cleanly"
    );
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "the 2 s timeout fired after {took:?}"
    );
    let t = Instant::now();
    loop {
        let m = metrics(s.addr);
        if m.contains(
            r#"hybox_invocations_total{function="echo",backend="wasm",outcome="timeout"} 1"#,
        ) {
            break;
        }
        assert!(t.elapsed() < Duration::from_secs(10), "metrics: {m}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn bundles_claim_routes_at_the_root() {
    if !common::privileged("bundles_claim_routes_at_the_root") {
        return;
    }
    let s = Server::start_with(&[
        ("api", "hello", r#""http": {"route": "/api/..."}"#),
        ("hook", "hello", r#""http": {"route": "/hook"}"#),
    ]);
    // Under a prefix the guest sees the rest of the path, and the query.
    let r = send(s.addr, "GET", "/api/x/y?z=1", None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.text(), "hello from wasi:http (Method::Get /x/y?z=1)\n");
    assert_eq!(r.header("x-hybox-outcome"), "exited");
    let r = send(s.addr, "POST", "/api", Some(b"x".to_vec()));
    assert_eq!(r.text(), "hello from wasi:http (Method::Post /)\n");
    // An exact route is only that path, which the guest sees whole.
    let r = send(s.addr, "GET", "/hook", None);
    assert_eq!(r.text(), "hello from wasi:http (Method::Get /hook)\n");
    for unclaimed in ["/hook/x", "/apix", "/", "/other"] {
        let r = send(s.addr, "GET", unclaimed, None);
        assert_eq!(r.status, 404, "{unclaimed}: {}", r.text());
    }
    // The function's own path still works.
    let r = send(s.addr, "GET", "/v1/functions/api/q", None);
    assert_eq!(r.text(), "hello from wasi:http (Method::Get /q)\n");
    let list = send(s.addr, "GET", "/v1/functions", None).text();
    assert!(list.contains(r#""route":"/api/...""#), "{list}");
}

#[test]
fn overlapping_routes_stop_the_server_naming_both_bundles() {
    if !common::privileged("overlapping_routes_stop_the_server_naming_both_bundles") {
        return;
    }
    for (a, b) in [
        ("/api/...", "/api/v2/..."),
        ("/api/...", "/api/x"),
        ("/x", "/x"),
    ] {
        let dir = functions_dir(&[
            ("first", "hello", &format!(r#""http": {{"route": "{a}"}}"#)),
            ("second", "hello", &format!(r#""http": {{"route": "{b}"}}"#)),
        ]);
        let parent = format!("hybox-http-test-{}-routes", std::process::id());
        let o = common::hybox()
            .arg("serve")
            .arg("--functions")
            .arg(dir.path())
            .args(["--listen", "127.0.0.1:0", "--cgroup-parent", &parent])
            .stdin(Stdio::null())
            .output()
            .expect("run hybox serve");
        remove_cgroup_parent(&parent);
        assert!(!o.status.success(), "{a} and {b} overlap");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(&format!(
                "bundles `first` and `second` claim overlapping routes ({a} and {b})"
            )),
            "{err}"
        );
        assert!(
            !String::from_utf8_lossy(&o.stdout).contains("listening"),
            "it must not start listening"
        );
    }
}

#[test]
fn run_request_serves_one_request_and_prints_the_response() {
    if !common::privileged("run_request_serves_one_request_and_prints_the_response") {
        return;
    }
    let run = |args: &[&str]| {
        let o = common::hybox()
            .args(["--quiet", "run"])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hybox");
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let hello = http_guest("hello");
    let (code, out, err) = run(&[hello.to_str().unwrap(), "--request", "GET", "/a?b=1"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("HTTP/1.1 200 OK\n"), "{out}");
    assert!(out.contains("\nx-hybox-outcome: exited\n"), "{out}");
    assert!(
        out.ends_with("\n\nhello from wasi:http (Method::Get /a?b=1)\n"),
        "{out}"
    );
    // Headers and a body from a file reach the guest.
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    std::fs::write(&body, b"payload bytes").unwrap();
    let echo = http_guest("echo");
    let (code, out, err) = run(&[
        echo.to_str().unwrap(),
        "--request",
        "PUT",
        "/",
        "--header",
        "content-type: text/x-test",
        "--body",
        body.to_str().unwrap(),
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("\nx-echo-method: Method::Put\n"), "{out}");
    assert!(out.contains("\ncontent-type: text/x-test\n"), "{out}");
    assert!(out.ends_with("\n\npayload bytes"), "{out}");
    // A command component is not a proxy one: a usage error that says so.
    let command = common::examples_out().join("component").join("hello.wasm");
    let (code, out, err) = run(&[command.to_str().unwrap(), "--request", "GET", "/"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(
        err.contains("--request needs a wasi:http/proxy component")
            && err.contains("is a wasi:cli/command component"),
        "{err}"
    );
    // Outbound: refused without a grant (named in the report), allowed with it; the grant is in
    // the report's policy.
    let (up, seen) = upstream();
    let outbound = http_guest("outbound");
    let path = format!("/?host={up}");
    let (code, out, err) = run(&[
        outbound.to_str().unwrap(),
        "--json",
        "--request",
        "GET",
        &path,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("HTTP/1.1 502 Bad Gateway\n"), "{out}");
    let json: serde_json::Value = serde_json::from_str(&out[out.find("\n{").unwrap()..]).unwrap();
    assert_eq!(
        json["denied"],
        serde_json::json!([up.to_string()]),
        "{json}"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    let policy = dir.path().join("p.json");
    std::fs::write(
        &policy,
        format!(r#"{{"version": 1, "http": {{"outbound_hosts": ["{up}"]}}}}"#),
    )
    .unwrap();
    let (code, out, err) = run(&[
        "--policy",
        policy.to_str().unwrap(),
        outbound.to_str().unwrap(),
        "--json",
        "--request",
        "GET",
        &path,
    ]);
    assert_eq!(code, Some(0), "{err}");
    assert!(out.starts_with("HTTP/1.1 200 OK\n"), "{out}");
    assert!(
        out.contains(&format!("upstream {up} answered 204\n")),
        "{out}"
    );
    let json: serde_json::Value = serde_json::from_str(&out[out.find("\n{").unwrap()..]).unwrap();
    assert_eq!(
        json["policy"]["http"]["outbound_hosts"],
        serde_json::json!([up.to_string()])
    );
    assert_eq!(json["denied"], serde_json::json!([]));
    assert!(err.contains(&format!("outbound granted: {up}")), "{err}");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}
