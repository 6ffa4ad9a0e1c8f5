//! The wasm backend end to end: each test runs a real guest through `backend::wasm::run`, which starts
//! the real `hybox __wasm-worker` process.

#[path = "common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hybox::backend::{wasm, BackendError, BackendRun, Launch};
use hybox::policy::Policy;
use hybox::report::Outcome;
use hybox::workload::Artifact;
use hybox::{HostConfig, Stdio};

fn fixture(name: &str) -> PathBuf {
    common::repo().join("tests/fixtures/wasm").join(name)
}

struct Run {
    policy: Policy,
    args: Vec<String>,
    env: BTreeMap<String, String>,
    stdio: Stdio,
    cache: PathBuf,
}

impl Run {
    fn new(policy_json: &str, cache: &Path) -> Run {
        Run {
            policy: Policy::from_json_str(policy_json, "test.json").expect("test policy"),
            args: Vec::new(),
            env: BTreeMap::new(),
            stdio: Stdio::Capture { stdin: Vec::new() },
            cache: cache.to_path_buf(),
        }
    }
    fn args(mut self, a: &[&str]) -> Run {
        self.args = a.iter().map(|s| s.to_string()).collect();
        self
    }
    /// The test's cache and the `hybox` binary built for the tests.
    fn host(&self) -> HostConfig {
        HostConfig {
            cache_dir: Some(self.cache.clone()),
            hybox_path: Some(PathBuf::from(env!("CARGO_BIN_EXE_hybox"))),
            ..Default::default()
        }
    }
    fn try_go(&self, artifact: &Path) -> Result<BackendRun, BackendError> {
        let artifact = Artifact::detect(artifact).expect("detect");
        let host = self.host();
        let launch = Launch {
            run_id: "test",
            policy: &self.policy,
            artifact: &artifact,
            args: &self.args,
            env: self.env.clone(),
            stdio: &self.stdio,
            deadline: Instant::now() + self.policy.resources.timeout.as_std(),
            host: &host,
            joins: &[],
            pass_fds: &[],
        };
        hybox::backend::run(hybox::Backend::Wasm, &launch, None)
    }
    fn go(&self, artifact: &Path) -> BackendRun {
        self.try_go(artifact).expect("the run starts")
    }
}

/// A fresh private cache directory (0700: hybox refuses a cache others can write to).
fn cache() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

const DEFAULT: &str = r#"{"version": 1, "resources": {"timeout": "20s"}}"#;

fn stdout(r: &BackendRun) -> String {
    String::from_utf8_lossy(&r.stdout).into_owned()
}

#[test]
fn hello_runs_and_prints() {
    let c = cache();
    let r = Run::new(DEFAULT, c.path()).go(&common::wasm_guest("hello"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(stdout(&r), "hello from hybox\n");
    assert_eq!(r.stdout_bytes, 17);
    assert!(!r.stdout_truncated);
    assert_eq!(r.details.to_json()["instance_kind"], "command");
}

#[test]
fn proc_exit_codes_pass_through() {
    let c = cache();
    let d = tempfile::tempdir().unwrap();
    for code in [0, 3, 125] {
        let p = d.path().join(format!("exit{code}.wat"));
        std::fs::write(
            &p,
            format!(
                r#"(module (import "wasi_snapshot_preview1" "proc_exit" (func $e (param i32)))
                   (memory (export "memory") 1)
                   (func (export "_start") (call $e (i32.const {code}))))"#
            ),
        )
        .unwrap();
        let r = Run::new(DEFAULT, c.path()).go(&p);
        assert_eq!(r.outcome, Outcome::Exited { code }, "{r:?}");
    }
}

#[test]
fn args_and_env_exactly_as_granted() {
    let c = cache();
    // A host variable that must not leak into the guest (nothing is inherited unless named).
    std::env::set_var("HYBOX_TEST_HOST_SECRET", "leak");
    let mut run = Run::new(DEFAULT, c.path()).args(&["one", "two words"]);
    run.env.insert("GREETING".into(), "hi there".into());
    run.env.insert("A".into(), "1".into());
    let r = run.go(&common::wasm_guest("env"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(
        stdout(&r),
        "arg[1]=one\narg[2]=two words\nenv A=1\nenv GREETING=hi there\n"
    );
}

#[test]
fn stdin_is_the_captured_bytes() {
    let c = cache();
    let mut run = Run::new(DEFAULT, c.path());
    run.stdio = Stdio::Capture {
        stdin: b"ping\npong".to_vec(),
    };
    let r = run.go(&common::wasm_guest("echo"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(stdout(&r), "ping\npong");
}

/// A host tree: `data/in.txt` (granted), `secret.txt` next to it (not granted), `data/link` a symlink
/// to the secret.
fn tree() -> tempfile::TempDir {
    let t = tempfile::tempdir().unwrap();
    std::fs::create_dir(t.path().join("data")).unwrap();
    std::fs::write(t.path().join("data/in.txt"), "a\nb\nc\n").unwrap();
    std::fs::write(t.path().join("secret.txt"), "s3cret\n").unwrap();
    std::os::unix::fs::symlink(t.path().join("secret.txt"), t.path().join("data/link")).unwrap();
    t
}

fn files_policy(t: &Path, mode: &str) -> String {
    format!(
        r#"{{"version": 1, "resources": {{"timeout": "20s"}},
            "filesystem": {{"mounts": [{{"host": "{}", "guest": "/data", "mode": "{mode}"}}]}}}}"#,
        t.join("data").display()
    )
}

#[test]
fn preopen_read_and_tmp_write() {
    let c = cache();
    let t = tree();
    let r = Run::new(&files_policy(t.path(), "ro"), c.path())
        .args(&["/data/in.txt", "/tmp/out.txt"])
        .go(&common::wasm_guest("files"));
    assert_eq!(
        r.outcome,
        Outcome::Exited { code: 0 },
        "{r:?} {}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(stdout(&r), "3 lines, 6 bytes\n");
}

#[test]
fn escapes_from_a_preopen_fail() {
    let c = cache();
    let t = tree();
    // Negative control: the secret is readable on the host, so a failure below is the sandbox's doing.
    assert_eq!(
        std::fs::read_to_string(t.path().join("data/link")).unwrap(),
        "s3cret\n"
    );
    let secret = t.path().join("secret.txt").display().to_string();
    for path in [
        "/data/../secret.txt",
        "/data/link",
        secret.as_str(),
        "/etc/passwd",
        "../secret.txt",
    ] {
        let r = Run::new(&files_policy(t.path(), "ro"), c.path())
            .args(&[path, "/tmp/o"])
            .go(&common::wasm_guest("files"));
        assert_eq!(
            r.outcome,
            Outcome::Exited { code: 3 },
            "{path} was readable: {r:?}"
        );
        assert!(!stdout(&r).contains("lines"), "{path}");
    }
}

#[test]
fn write_to_a_read_only_preopen_is_refused() {
    let c = cache();
    let t = tree();
    let r = Run::new(&files_policy(t.path(), "ro"), c.path())
        .args(&["/data/in.txt", "/data/out.txt"])
        .go(&common::wasm_guest("files"));
    assert_eq!(r.outcome, Outcome::Exited { code: 4 }, "{r:?}");
    assert!(!t.path().join("data/out.txt").exists());
    // Control: the same write with the grant read-write succeeds.
    let r = Run::new(&files_policy(t.path(), "rw"), c.path())
        .args(&["/data/in.txt", "/data/out.txt"])
        .go(&common::wasm_guest("files"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(t.path().join("data/out.txt")).unwrap(),
        "3 lines, 6 bytes\n"
    );
}

#[test]
fn memory_grow_bomb_is_an_attributed_oom() {
    let c = cache();
    let r = Run::new(
        r#"{"version": 1, "resources": {"memory": "64M", "timeout": "20s"}}"#,
        c.path(),
    )
    .go(&fixture("memgrow.wat"));
    match &r.outcome {
        Outcome::Oom { detail } => assert!(detail.contains("wasm memory limit"), "{detail}"),
        o => panic!("expected oom, got {o:?}"),
    }
    // 64M minus 32M of headroom.
    assert_eq!(r.details.to_json()["wasm_memory_limit"], 32 << 20);
}

#[test]
fn table_growth_bomb_fails_cleanly() {
    let c = cache();
    let r = Run::new(
        r#"{"version": 1, "resources": {"timeout": "20s"}, "wasm": {"max_table_elements": 5000}}"#,
        c.path(),
    )
    .go(&fixture("tablegrow.wat"));
    match &r.outcome {
        Outcome::Oom { detail } => assert!(
            detail.contains("wasm table limit") && detail.contains("5000"),
            "{detail}"
        ),
        o => panic!("expected a table-limit oom, got {o:?}"),
    }
}

#[test]
fn infinite_loop_without_host_calls_times_out() {
    let c = cache();
    let t = Instant::now();
    let r = Run::new(
        r#"{"version": 1, "resources": {"timeout": "1s"}}"#,
        c.path(),
    )
    .go(&fixture("spin.wat"));
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
}

#[test]
fn infinite_sleep_in_a_host_call_times_out() {
    let c = cache();
    let t = Instant::now();
    let r = Run::new(
        r#"{"version": 1, "resources": {"timeout": "1s"}}"#,
        c.path(),
    )
    .go(&fixture("sleep.wat"));
    assert_eq!(r.outcome, Outcome::Timeout, "{r:?}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}",
        t.elapsed()
    );
    assert_eq!(
        r.details.to_json()["timeout_in"],
        "host call (worker watchdog)"
    );
}

#[test]
fn deep_recursion_is_a_trap_with_a_message() {
    let c = cache();
    let r = Run::new(DEFAULT, c.path()).go(&fixture("recurse.wat"));
    match &r.outcome {
        Outcome::Trap { message } => assert!(message.contains("call stack exhausted"), "{message}"),
        o => panic!("expected a trap, got {o:?}"),
    }
}

#[test]
fn fuel_exhaustion_is_cpu_budget() {
    let c = cache();
    let r = Run::new(
        r#"{"version": 1, "resources": {"timeout": "20s"}, "wasm": {"fuel": 1000000}}"#,
        c.path(),
    )
    .go(&fixture("spin.wat"));
    match &r.outcome {
        Outcome::CpuBudget { detail } => assert!(detail.contains("fuel"), "{detail}"),
        o => panic!("expected cpu_budget, got {o:?}"),
    }
    assert_eq!(r.details.to_json()["fuel_consumed"], 1_000_000);
    // A cpu_time budget also turns fuel on (calibrated).
    let r = Run::new(
        r#"{"version": 1, "resources": {"timeout": "20s", "cpu_time": "50ms"}}"#,
        c.path(),
    )
    .go(&fixture("spin.wat"));
    assert!(matches!(r.outcome, Outcome::CpuBudget { .. }), "{r:?}");
    // Control: with fuel to spare, a normal guest is unaffected.
    let r = Run::new(
        r#"{"version": 1, "resources": {"timeout": "20s"}, "wasm": {"fuel": 100000000}}"#,
        c.path(),
    )
    .go(&common::wasm_guest("hello"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert!(r.details.to_json()["fuel_consumed"].as_u64().unwrap() > 0);
}

#[test]
fn output_cap_truncates_and_counts() {
    let c = cache();
    let r = Run::new(
        r#"{"version": 1, "resources": {"timeout": "20s", "stdout_max": 1000}}"#,
        c.path(),
    )
    .go(&fixture("output.wat"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(r.stdout.len(), 1000);
    assert_eq!(r.stdout_bytes, 10_000);
    assert!(r.stdout_truncated);
    assert!(!r.stderr_truncated);
}

#[test]
fn reactor_is_initialised() {
    let c = cache();
    let r = Run::new(DEFAULT, c.path()).go(&fixture("reactor.wat"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(r.details.to_json()["instance_kind"], "reactor");
}

#[test]
fn ungranted_import_fails_at_link_time() {
    let c = cache();
    let r = Run::new(DEFAULT, c.path()).go(&fixture("needs_host_api.wat"));
    match &r.outcome {
        Outcome::SetupError { step } => assert!(
            step.starts_with("link:") && step.contains("hybox_secret"),
            "{step}"
        ),
        o => panic!("expected a link error, got {o:?}"),
    }
    let r = Run::new(DEFAULT, c.path()).go(&fixture("component_ungranted.wat"));
    match &r.outcome {
        Outcome::SetupError { step } => assert!(
            step.starts_with("link:") && step.contains("hybox:test/secret"),
            "{step}"
        ),
        o => panic!("expected a link error, got {o:?}"),
    }
}

#[test]
fn component_runs_as_wasi_cli_command() {
    let c = cache();
    let r = Run::new(DEFAULT, c.path()).go(&fixture("component_ok.wat"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(r.details.to_json()["instance_kind"], "component");
    let r = Run::new(DEFAULT, c.path()).go(&fixture("component_err.wat"));
    assert_eq!(r.outcome, Outcome::Exited { code: 1 }, "{r:?}");
}

fn cache_entries(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "hyboxc"))
        .collect();
    v.sort();
    v
}

#[test]
fn second_run_hits_the_cache() {
    let c = cache();
    let run = Run::new(DEFAULT, c.path());
    let first = run.go(&common::wasm_guest("hello"));
    assert_eq!(first.details.to_json()["cache_hit"], false);
    assert!(first.details.to_json().get("compile_us").is_some());
    let second = run.go(&common::wasm_guest("hello"));
    assert_eq!(second.outcome, Outcome::Exited { code: 0 });
    assert_eq!(second.details.to_json()["cache_hit"], true, "{second:?}");
    assert_eq!(stdout(&second), "hello from hybox\n");
    let listed = wasm::cache_list(&HostConfig {
        cache_dir: Some(c.path().into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].path, cache_entries(c.path())[0]);
    assert!(listed[0].header.is_some());
    let freed = wasm::cache_clear(&HostConfig {
        cache_dir: Some(c.path().into()),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(freed, listed[0].bytes);
    assert!(cache_entries(c.path()).is_empty());
}

#[test]
fn corrupted_cache_entry_is_rejected_and_rebuilt() {
    let c = cache();
    let run = Run::new(DEFAULT, c.path());
    run.go(&common::wasm_guest("hello"));
    let entry = cache_entries(c.path()).pop().expect("one entry");
    let mut bytes = std::fs::read(&entry).unwrap();
    // Flip one byte of the compiled code (past magic, header and MAC).
    let i = bytes.len() - 100;
    bytes[i] ^= 0x40;
    std::fs::write(&entry, &bytes).unwrap();
    let r = run.go(&common::wasm_guest("hello"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(r.details.to_json()["cache_hit"], false);
    assert!(
        r.details.to_json()["cache_rejected"]
            .as_str()
            .unwrap()
            .contains("MAC"),
        "{r:?}"
    );
    let rebuilt = std::fs::read(&entry).unwrap();
    assert_ne!(rebuilt, bytes, "the bad entry was replaced");
    assert_eq!(
        run.go(&common::wasm_guest("hello")).details.to_json()["cache_hit"],
        true
    );
}

#[test]
fn unsafe_cache_dir_is_not_used() {
    use std::os::unix::fs::PermissionsExt;
    let c = cache();
    std::fs::set_permissions(c.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let r = Run::new(DEFAULT, c.path()).go(&common::wasm_guest("hello"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(r.details.to_json()["cache_hit"], false);
    assert!(
        r.details.to_json()["cache_error"]
            .as_str()
            .unwrap()
            .contains("group or others"),
        "{r:?}"
    );
    assert!(cache_entries(c.path()).is_empty());
}

#[test]
fn precompiled_artifact_runs_and_a_tampered_one_is_refused() {
    let c = cache();
    let out = tempfile::tempdir().unwrap();
    let art = out.path().join("hello.hyboxc");
    let host = HostConfig {
        cache_dir: Some(c.path().into()),
        ..Default::default()
    };
    let policy = Policy::default();
    wasm::precompile(&common::wasm_guest("hello"), &art, &policy, &host).unwrap();
    let r = Run::new(DEFAULT, c.path()).go(&art);
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(stdout(&r), "hello from hybox\n");
    assert_eq!(r.details.to_json()["precompiled"], true);
    // Tampered: refused before wasmtime sees it.
    let mut bytes = std::fs::read(&art).unwrap();
    let n = bytes.len();
    bytes[n - 50] ^= 1;
    std::fs::write(&art, &bytes).unwrap();
    let r = Run::new(DEFAULT, c.path()).go(&art);
    match &r.outcome {
        Outcome::SetupError { step } => {
            assert!(step.contains("refused") && step.contains("MAC"), "{step}")
        }
        o => panic!("expected a refusal, got {o:?}"),
    }
    // Another host's key (a different cache dir) does not verify it either.
    wasm::precompile(&common::wasm_guest("hello"), &art, &policy, &host).unwrap();
    let other = cache();
    let r = Run::new(DEFAULT, other.path()).go(&art);
    assert!(
        matches!(&r.outcome, Outcome::SetupError { step } if step.contains("MAC")),
        "{r:?}"
    );
}

#[test]
fn os_sandbox_request_is_never_silently_ignored() {
    // Honoured (tests/hardened.rs covers it in depth): the report says how the worker was confined.
    let c = cache();
    let r = Run::new(r#"{"version": 1, "wasm": {"os_sandbox": true}}"#, c.path())
        .go(&common::wasm_guest("hello"));
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert!(r.details.to_json().get("os_sandbox").is_some(), "{r:?}");
    assert!(r.degradations.is_empty(), "{r:?}");
}

#[test]
fn invalid_wasm_is_a_setup_error() {
    let c = cache();
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("bad.wasm");
    std::fs::write(&p, b"\0asm\x01\0\0\0\xff\xff\xff").unwrap();
    let r = Run::new(DEFAULT, c.path()).go(&p);
    assert!(
        matches!(&r.outcome, Outcome::SetupError { step } if step.starts_with("compile:")),
        "{r:?}"
    );
}

/// A guest built by `examples/build.sh` as a WASI preview 2 component (wasm32-wasip2).
fn component_guest(name: &str) -> PathBuf {
    common::examples_out()
        .join("component")
        .join(format!("{name}.wasm"))
}

#[test]
fn rust_components_behave_like_their_preview1_modules() {
    let c = cache();
    let stdin = b"ping\npong".to_vec();
    for (name, args, stdin) in [
        ("hello", vec![], vec![]),
        ("env", vec!["one", "two words"], vec![]),
        ("echo", vec![], stdin.clone()),
        ("compute", vec!["1000"], vec![]),
    ] {
        let go = |artifact: &Path| {
            let mut run = Run::new(DEFAULT, c.path()).args(&args);
            run.env.insert("GREETING".into(), "hi".into());
            run.stdio = Stdio::Capture {
                stdin: stdin.clone(),
            };
            run.go(artifact)
        };
        let module = go(&common::wasm_guest(name));
        let component = go(&component_guest(name));
        assert_eq!(
            component.details.to_json()["instance_kind"],
            "component",
            "{name}"
        );
        assert_eq!(
            module.outcome,
            Outcome::Exited { code: 0 },
            "{name}: {module:?}"
        );
        assert_eq!(component.outcome, module.outcome, "{name}: {component:?}");
        assert_eq!(stdout(&component), stdout(&module), "{name}");
        assert!(!stdout(&module).is_empty(), "{name}");
    }
}

#[test]
fn a_rust_component_sees_only_its_preopens() {
    let c = cache();
    let t = tempfile::tempdir().unwrap();
    // files_policy grants <t>/data as /data.
    let d = t.path().join("data");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("in.txt"), "granted\n").unwrap();
    let files = component_guest("files");
    let go = |mode: &str, args: &[&str]| {
        Run::new(&files_policy(t.path(), mode), c.path())
            .args(args)
            .go(&files)
    };
    // WASI 0.2's wasi:cli/exit carries only ok or err: a component's exit(4) ends as exit code 1,
    // so the failures are told apart by the guest's message.
    let stderr = |r: &BackendRun| String::from_utf8_lossy(&r.stderr).into_owned();
    // Read-only grant: reading works, writing the output is refused.
    let r = go("ro", &["/data/in.txt", "/data/out.txt"]);
    assert_eq!(r.outcome, Outcome::Exited { code: 1 }, "{r:?}");
    assert!(stderr(&r).contains("cannot write /data/out.txt"), "{r:?}");
    assert!(!d.join("out.txt").exists(), "read-only preopen written");
    // Read-write grant: the output appears on the host.
    let r = go("rw", &["/data/in.txt", "/data/out.txt"]);
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    assert_eq!(
        std::fs::read_to_string(d.join("out.txt")).unwrap(),
        "1 lines, 8 bytes\n"
    );
    // Outside the grant, directly or by `..`: cannot read.
    for input in ["/etc/hostname", "/data/../etc/hostname"] {
        let r = go("rw", &[input, "/data/out2.txt"]);
        assert_eq!(r.outcome, Outcome::Exited { code: 1 }, "{input}: {r:?}");
        assert!(
            stderr(&r).contains("cannot read"),
            "{input}: {}",
            stderr(&r)
        );
    }
}

/// `Sandbox::run` starts the worker before it builds the envelope: when the envelope then cannot be
/// built, the worker is killed and reaped and its scratch directory removed.
#[test]
fn a_worker_started_for_a_run_that_cannot_happen_leaves_nothing() {
    let c = cache();
    let run = Run::new(DEFAULT, c.path());
    let artifact = Artifact::detect(&common::wasm_guest("hello")).expect("detect");
    let host = run.host();
    let launch = Launch {
        run_id: "test",
        policy: &run.policy,
        artifact: &artifact,
        args: &[],
        env: BTreeMap::new(),
        stdio: &run.stdio,
        deadline: Instant::now() + Duration::from_secs(20),
        host: &host,
        joins: &[],
        pass_fds: &[],
    };
    let started = wasm::start(&launch).expect("the worker starts");
    // On cgroup v1 the worker is started now (its start overlaps the envelope's creation); on v2
    // it is cloned straight into the envelope when the run runs, so nothing is started yet.
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let (pid, tmp) = (started.pid(), started.scratch_dir().unwrap().to_path_buf());
    assert_eq!(pid.is_none(), v2, "{pid:?}");
    if let Some(pid) = pid {
        assert!(Path::new(&format!("/proc/{pid}")).exists());
    }
    assert!(tmp.is_dir());
    hybox::backend::PreparedRun::abandon(Box::new(started));
    if let Some(pid) = pid {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "worker {pid} left"
        );
    }
    assert!(!tmp.exists(), "{} left", tmp.display());

    // Through the public API: the envelope's error, not a worker's.
    let policy = Policy::from_json_str(DEFAULT, "test.json").unwrap();
    let workload = hybox::workload::Workload::detect(&common::wasm_guest("hello")).unwrap();
    let sandbox = hybox::Sandbox::new(workload, policy, None).unwrap();
    let opts = hybox::RunOptions {
        host: HostConfig {
            cgroup_root: PathBuf::from("/nonexistent/hybox-test-cgroup-root"),
            ..host
        },
        ..Default::default()
    };
    match sandbox.run(&opts) {
        Err(hybox::Error::Envelope(_)) => {}
        other => panic!("expected the envelope's error, got {other:?}"),
    }
}

/// A program that is not hybox (this test binary) and sets no `HostConfig.hybox_path` cannot run
/// the wasm worker: a clear error naming what to set, and nothing started.
#[test]
fn a_program_that_is_not_hybox_must_name_the_worker_binary() {
    let c = cache();
    let run = Run::new(DEFAULT, c.path());
    let artifact = Artifact::detect(&common::wasm_guest("hello")).expect("detect");
    let host = HostConfig {
        cache_dir: Some(c.path().to_path_buf()),
        hybox_path: None,
        ..Default::default()
    };
    let launch = Launch {
        run_id: "test",
        policy: &run.policy,
        artifact: &artifact,
        args: &run.args,
        env: run.env.clone(),
        stdio: &run.stdio,
        deadline: Instant::now() + Duration::from_secs(20),
        host: &host,
        joins: &[],
        pass_fds: &[],
    };
    let e = hybox::backend::run(hybox::Backend::Wasm, &launch, None).unwrap_err();
    assert!(matches!(e, BackendError::WorkerBinary { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("set HostConfig.hybox_path"), "{msg}");
    assert!(msg.contains("is not the hybox binary"), "{msg}");
}

/// On a cgroup v2 root the exec'd worker is started only when the run runs, inside the envelope
/// (`clone3(CLONE_INTO_CGROUP)`): `details.cgroup_entry` names how it got there. Here the v2 root is
/// a hybrid host's `unified` mount (no controllers: no envelope, the policy degrades), which
/// exercises the deferred start without an envelope (`none`); on a pure v2 host the default root
/// gives `clone_into_cgroup`, on v1 `migrated`.
#[test]
fn the_worker_entry_into_its_envelope_is_reported() {
    if !common::privileged("the_worker_entry_into_its_envelope_is_reported") {
        return;
    }
    let c = cache();
    let run = Run::new(DEFAULT, c.path());
    let v2 = Path::new("/sys/fs/cgroup/cgroup.controllers").exists();
    let policy = Policy::from_json_str(
        r#"{"version": 1, "on_unenforceable": "degrade", "resources": {"timeout": "20s"}}"#,
        "t.json",
    )
    .unwrap();
    let run_with = |root: &str| {
        let workload = hybox::workload::Workload::detect(&common::wasm_guest("hello")).unwrap();
        let sandbox = hybox::Sandbox::new(workload, policy.clone(), None).unwrap();
        let opts = hybox::RunOptions {
            stdio: Stdio::Capture { stdin: Vec::new() },
            host: HostConfig {
                cgroup_root: PathBuf::from(root),
                ..run.host()
            },
            ..Default::default()
        };
        let r = sandbox.run(&opts).expect("the run");
        assert_eq!(r.report.outcome, Outcome::Exited { code: 0 }, "{root}");
        assert_eq!(r.stdout, b"hello from hybox\n", "{root}");
        r.report.details.to_json()["cgroup_entry"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let entry = run_with("/sys/fs/cgroup");
    assert_eq!(entry, if v2 { "clone_into_cgroup" } else { "migrated" });
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        assert_eq!(run_with("/sys/fs/cgroup/unified"), "none");
    }
}
