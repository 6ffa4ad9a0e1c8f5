//! The `hybox` binary end to end: exit codes, messages and JSON output.

#[path = "common/mod.rs"]
mod common;

use common::{hybox, repo};

struct Out {
    status: i32,
    stdout: String,
    stderr: String,
}

fn run(args: &[&str]) -> Out {
    let o = hybox()
        .args(args)
        .current_dir(repo())
        .output()
        .expect("run hybox");
    Out {
        status: o.status.code().expect("hybox exited normally"),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn policy_check_reports_each_file() {
    let o = run(&[
        "policy",
        "check",
        "policies/untrusted-plugin.json",
        "policies/benchmark.json",
    ]);
    assert_eq!(o.status, 0, "{}", o.stderr);
    assert_eq!(
        o.stdout,
        "policies/untrusted-plugin.json: ok\npolicies/benchmark.json: ok\n"
    );

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(
        &bad,
        "{\n  \"version\": 1,\n  \"network\": \"internet\"\n}\n",
    )
    .unwrap();
    let o = run(&["policy", "check", bad.to_str().unwrap()]);
    assert_eq!(o.status, hybox::exit::USAGE);
    assert_eq!(
        o.stderr,
        format!(
            "{}:3:23: network: unknown variant `internet`, expected `none` or `loopback`\n",
            bad.display()
        )
    );
}

#[test]
fn policy_schema_is_json() {
    let o = run(&["policy", "schema"]);
    assert_eq!(o.status, 0);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["title"], "Policy");
}

#[test]
fn explain_json_gives_backend_reasons_and_limits() {
    let wasm = common::wasm_guest("hello");
    let o = run(&[
        "explain",
        "--json",
        "policies/benchmark.json",
        wasm.to_str().unwrap(),
    ]);
    assert_eq!(o.status, 0, "{}", o.stderr);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["backend"], "wasm");
    assert_eq!(v["workload"], "wasm module");
    assert_eq!(v["reasons"][0], "wasm module runs only on the wasm backend");
    assert_eq!(v["effective"]["envelope"]["memory"], "512M");
    assert_eq!(v["effective"]["envelope"]["cpus"], 1.0);
    assert!(
        v["effective"]["wasm"].is_object(),
        "the chosen backend's section is shown"
    );
    assert!(v["effective"].get("native").is_none());

    // Overrides show up in the effective limits, and a forced backend without a variant is refused.
    let o = run(&[
        "explain",
        "--json",
        "--memory",
        "64M",
        "policies/benchmark.json",
        wasm.to_str().unwrap(),
    ]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    assert_eq!(v["effective"]["envelope"]["memory_bytes"], 64 << 20);
    let o = run(&[
        "explain",
        "--backend",
        "native",
        "policies/benchmark.json",
        wasm.to_str().unwrap(),
    ]);
    assert_eq!(o.status, hybox::exit::CANNOT_EXECUTE);
    assert_eq!(
        o.stderr,
        "hybox: error: cannot choose a backend: --backend native on the command line asks for the native backend, \
         but wasm module has no native variant\n"
    );
}

#[test]
fn explain_human_output() {
    let native = common::native_guest("hello");
    let o = run(&[
        "explain",
        "policies/trusted-tool.json",
        native.to_str().unwrap(),
    ]);
    assert_eq!(o.status, 0, "{}", o.stderr);
    assert!(
        o.stdout.contains(
            "backend: native\nwhy:\n  - ELF x86_64 static runs only on the native backend\n"
        ),
        "{}",
        o.stdout
    );
    assert!(
        o.stdout.contains("\"landlock\": \"best_effort\""),
        "{}",
        o.stdout
    );
}

#[test]
fn exit_codes_for_hybox_failures() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("x.wasm");
    std::fs::write(&garbage, b"MZ\0\0").unwrap();
    let bad_policy = dir.path().join("p.json");
    std::fs::write(&bad_policy, r#"{"version": 1, "resources": {"pids": 0}}"#).unwrap();
    let hello = common::wasm_guest("hello");

    let o = run(&["run", "/nonexistent/thing"]);
    assert_eq!(o.status, hybox::exit::NOT_FOUND);
    assert_eq!(o.stderr, "hybox: error: /nonexistent/thing: not found\n");

    let o = run(&["run", garbage.to_str().unwrap()]);
    assert_eq!(o.status, hybox::exit::CANNOT_EXECUTE);
    assert_eq!(
        o.stderr,
        format!(
            "hybox: error: {}: cannot run this artifact: a Windows PE executable (MZ header)\n",
            garbage.display()
        )
    );

    let o = run(&[
        "run",
        "--policy",
        bad_policy.to_str().unwrap(),
        hello.to_str().unwrap(),
    ]);
    assert_eq!(o.status, hybox::exit::USAGE);
    assert_eq!(
        o.stderr,
        format!(
            "hybox: error: {}:1:39: resources.pids: invalid value: integer `0`, expected an integer in 1..=4194304\n",
            bad_policy.display()
        )
    );

    let o = run(&["run", "--cpus", "lots", hello.to_str().unwrap()]);
    assert_eq!(o.status, hybox::exit::USAGE);
    assert!(
        o.stderr
            .contains("invalid value 'lots' for '--cpus <CORES>'"),
        "{}",
        o.stderr
    );

    let o = run(&["run", "--mount", "/a", hello.to_str().unwrap()]);
    assert_eq!(o.status, hybox::exit::USAGE);
    assert!(
        o.stderr
            .contains("expected HOST:GUEST or HOST:GUEST:rw, found \"/a\""),
        "{}",
        o.stderr
    );

    let o = run(&["frobnicate"]);
    assert_eq!(o.status, hybox::exit::USAGE);
}

#[test]
fn doctor_json_lists_every_check() {
    let o = run(&["doctor", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&o.stdout).unwrap();
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "privileges",
            "cgroups",
            "cgroup entry",
            "user namespaces",
            "seccomp",
            "landlock",
            "shim"
        ]
    );
    for c in v.as_array().unwrap() {
        assert!(["ok", "warn", "fail"].contains(&c["status"].as_str().unwrap()));
        assert!(!c["meaning"].as_str().unwrap().is_empty());
    }
}

#[test]
fn completions_and_man_page_are_generated() {
    let o = run(&["completions", "bash"]);
    assert_eq!(o.status, 0);
    assert!(o.stdout.contains("_hybox()"));
    let o = run(&["man"]);
    assert_eq!(o.status, 0);
    assert!(o.stdout.contains(".TH hybox"));
}

/// `hybox run` end to end on both backends: the workload's output, the report on stdout with
/// `--json`, and the exit status each outcome maps to.
#[test]
fn run_json_report_and_exit_statuses_on_both_backends() {
    if !common::privileged("run_json_report_and_exit_statuses_on_both_backends") {
        return;
    }
    common::examples_out();
    for (backend, artifact) in [
        ("native", common::native_guest("hello")),
        ("wasm", common::wasm_guest("hello")),
    ] {
        let o = run(&[
            "run",
            "--json",
            "--policy",
            "policies/benchmark.json",
            artifact.to_str().unwrap(),
        ]);
        assert_eq!(o.status, 0, "{backend}: {}", o.stderr);
        let (greeting, json) = o.stdout.split_once('\n').unwrap();
        assert_eq!(greeting, "hello from hybox", "{backend}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["backend"], backend);
        if backend == "wasm" {
            // The CLI forks its one-shot worker (backend::wasm::WorkerStart::fork).
            assert_eq!(v["details"]["worker_start"], "fork");
        }
        assert_eq!(
            v["outcome"],
            serde_json::json!({"kind": "exited", "code": 0})
        );
        assert_eq!(v["exit_status"], 0);
        assert_eq!(v["envelope"]["kind"], "cgroup");
        assert_eq!(
            v["envelope"]["memory_bytes"],
            512 << 20,
            "{backend}: the limit as read back"
        );
        assert_eq!(v["envelope"]["pids_max"], 64);
        assert!(
            v["usage"]["peak_memory_bytes"].as_u64().unwrap() > 0,
            "{backend}: usage from the envelope"
        );
        assert_eq!(
            v["policy"]["resources"]["memory"], "512M",
            "{backend}: the effective policy"
        );
        assert!(
            o.stderr.contains(&format!("on {backend}: exited(0)")),
            "{backend}: summary: {}",
            o.stderr
        );
    }

    // Limits fire with their own exit status, on both backends.
    let alloc_native = common::native_guest("alloc");
    let alloc_wasm = common::wasm_guest("alloc");
    for (artifact, want_kind) in [(&alloc_native, "oom"), (&alloc_wasm, "oom")] {
        let o = run(&[
            "run",
            "--json",
            "--memory",
            "32M",
            artifact.to_str().unwrap(),
            "--",
            "200",
        ]);
        assert_eq!(o.status, 137, "{}: {}", artifact.display(), o.stderr);
        // The report is the last thing on stdout, after whatever the workload printed.
        let start = o.stdout.find("{\n").expect("a JSON report on stdout");
        let v: serde_json::Value = serde_json::from_str(&o.stdout[start..]).unwrap();
        assert_eq!(v["outcome"]["kind"], want_kind, "{}", artifact.display());
        assert_eq!(v["limit_fired"], "memory");
    }
}

#[test]
fn run_timeout_exits_124() {
    if !common::privileged("run_timeout_exits_124") {
        return;
    }
    let o = run(&[
        "run",
        "--timeout",
        "300ms",
        "--report",
        "/dev/stdout",
        "tests/fixtures/wasm/spin.wat",
    ]);
    assert_eq!(o.status, hybox::exit::TIMEOUT, "{}", o.stderr);
    assert!(o.stderr.contains("timeout"), "{}", o.stderr);
}

/// The CLI's wasm worker is a fork of the CLI, not a fresh image: it must still hold no byte of the
/// CLI's environment and no fd of the CLI's but stdio (the exec'd worker gets that from execve).
#[test]
fn a_forked_wasm_worker_holds_no_environment_or_fd_of_the_cli() {
    if !common::privileged("a_forked_wasm_worker_holds_no_environment_or_fd_of_the_cli") {
        return;
    }
    use std::os::unix::process::ExitStatusExt;
    let mut cli = hybox()
        .args([
            "run",
            "-q",
            "--timeout",
            "20s",
            "tests/fixtures/wasm/spin.wat",
        ])
        .env("HYBOX_TEST_SECRET", "not-for-the-worker")
        .current_dir(repo())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("start hybox");
    // The worker is the CLI's child; once it holds the guest's /tmp open, the fork's setup is long
    // done and the guest is about to run.
    let children = format!("/proc/{}/task/{}/children", cli.id(), cli.id());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let worker = loop {
        let guest_running = |pid: &str| {
            std::fs::read_dir(format!("/proc/{pid}/fd"))
                .into_iter()
                .flatten()
                .flatten()
                .any(|fd| {
                    std::fs::read_link(fd.path())
                        .is_ok_and(|t| t.to_string_lossy().contains("/hybox-wasm-tmp-"))
                })
        };
        let found = std::fs::read_to_string(&children)
            .unwrap_or_default()
            .split_whitespace()
            .find(|p| guest_running(p))
            .map(str::to_string);
        if let Some(pid) = found {
            break pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no worker running the guest"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    assert!(
        environ.iter().all(|&b| b == 0),
        "the worker's environment: {:?}",
        String::from_utf8_lossy(&environ)
    );
    let mut fds = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{worker}/fd"))
        .unwrap()
        .flatten()
    {
        let n: i32 = fd.file_name().to_str().unwrap().parse().unwrap();
        let target = std::fs::read_link(fd.path()).unwrap_or_default();
        let target = target.to_string_lossy().into_owned();
        // stdio is the CLI's; anything else is the result pipe, the guest's /tmp preopen (opened by
        // the worker from its job) or wasmtime's and tokio's own (epoll, eventfd, memfd), never a
        // file, directory or cgroup the CLI had open.
        let own = target.starts_with("pipe:")
            || target.starts_with("anon_inode:")
            || target.starts_with("/memfd:")
            || target.contains("/hybox-wasm-tmp-");
        assert!(n <= 2 || own, "fd {n} -> {target}");
        fds.push((n, target));
    }
    // SIGTERM to the CLI: its teardown kills the envelope, worker included.
    // SAFETY: kill with the pid of our own unreaped child.
    unsafe { libc::kill(cli.id() as i32, libc::SIGTERM) };
    let status = cli.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert!(status.signal().is_none());
    // Killed with the envelope: gone, or a zombie until its new parent reaps it.
    let state = std::fs::read_to_string(format!("/proc/{worker}/stat")).unwrap_or_default();
    let state = state.rsplit(") ").next().unwrap_or("").chars().next();
    assert!(
        matches!(state, None | Some('Z') | Some('X')),
        "the worker outlived the CLI: state {state:?} (fds were {fds:?})"
    );
    // Nothing of the run is left: the guest's /tmp directory was removed by the signal teardown.
    let scratch = fds.iter().find(|(_, t)| t.contains("/hybox-wasm-tmp-"));
    let (_, scratch) = scratch.expect("the worker had the guest's /tmp open");
    assert!(
        !std::path::Path::new(scratch).exists(),
        "{scratch} left behind"
    );
}

/// The scratch directories (a wasm guest's `/tmp`) of a hybox that was SIGKILLed mid-run: private
/// (0700) while they live, left behind by the kill (no destructor runs), and removed by `hybox gc`.
#[test]
fn scratch_dirs_are_private_and_gc_removes_those_of_a_killed_hybox() {
    if !common::privileged("scratch_dirs_are_private_and_gc_removes_those_of_a_killed_hybox") {
        return;
    }
    let mut child = hybox()
        .args([
            "run",
            "--policy",
            "policies/benchmark.json",
            "--timeout",
            "60s",
            "tests/fixtures/wasm/spin.wat",
        ])
        .current_dir(repo())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start hybox run");
    let mark = format!(".owner-{}-", child.id());
    let find = || {
        ["/dev/shm".into(), std::env::temp_dir()]
            .iter()
            .filter_map(|b| std::fs::read_dir(b).ok())
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                let n = p.file_name().unwrap().to_string_lossy();
                n.starts_with("hybox-wasm-tmp-") && n.contains(&mark)
            })
    };
    let t0 = std::time::Instant::now();
    let dir = loop {
        if let Some(d) = find() {
            break d;
        }
        assert!(
            t0.elapsed().as_secs() < 30,
            "no scratch dir with {mark} appeared"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
    child.kill().unwrap(); // SIGKILL: no destructor, no signal teardown
    child.wait().unwrap();
    assert!(dir.is_dir(), "the kill itself left {}", dir.display());
    let o = run(&["gc"]);
    assert_eq!(o.status, 0, "{}{}", o.stdout, o.stderr);
    assert!(
        o.stdout.contains(&format!("removed {}", dir.display())),
        "{}",
        o.stdout
    );
    assert!(!dir.exists(), "{} survived gc", dir.display());
}

/// A directory readable by uid 65534 (the build tree may not be) holding a copy of the hybox binary,
/// the native hello and a policy with `on_unenforceable` set to `on_unenforceable`:
/// `(dir, hybox, hello, policy)`.
fn nobody_kit(
    on_unenforceable: &str,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("hybox");
    std::fs::copy(env!("CARGO_BIN_EXE_hybox"), &bin).unwrap();
    let hello = dir.path().join("hello");
    std::fs::copy(common::native_guest("hello"), &hello).unwrap();
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        format!(r#"{{"version": 1, "on_unenforceable": "{on_unenforceable}"}}"#),
    )
    .unwrap();
    for f in [&bin, &hello, &policy] {
        std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    (dir, bin, hello, policy)
}

/// Without root on a host whose cgroups are root's, a policy that forbids degrading fails with the
/// cause once and a hint of the ways out; `hybox doctor` as that user says the same.
#[test]
fn an_unprivileged_user_gets_the_cause_once_and_the_ways_out() {
    if !common::privileged("an_unprivileged_user_gets_the_cause_once_and_the_ways_out") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let (dir, bin, hello, policy) = nobody_kit("fail");
    let as_nobody = |args: &[&std::ffi::OsStr]| {
        let o = std::process::Command::new(&bin)
            .args(args)
            .env_clear()
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        (
            o.status.code(),
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    let (status, _, stderr) = as_nobody(&[
        "run".as_ref(),
        "--policy".as_ref(),
        policy.as_os_str(),
        hello.as_os_str(),
    ]);
    assert_eq!(status, Some(hybox::exit::RUNNER_FAILED), "{stderr}");
    assert_eq!(
        stderr.matches("Permission denied").count(),
        1,
        "the cause once: {stderr}"
    );
    assert!(stderr.contains("hybox: hint: "), "{stderr}");
    for way_out in [
        "as root",
        "\"on_unenforceable\": \"degrade\"",
        "degradation",
    ] {
        assert!(stderr.contains(way_out), "{way_out}: {stderr}");
    }
    let (_, doctor, _) = as_nobody(&["doctor".as_ref()]);
    assert!(
        doctor.contains("running as uid 65534")
            && doctor.contains("\"on_unenforceable\": \"degrade\""),
        "{doctor}"
    );
}

/// `hybox doctor --fix favordynmods`: the dry run says what it would change and that it is host-wide,
/// and changes nothing; an unprivileged caller is refused. (The remount itself is never made by a
/// test: it is host-wide and, on Linux >= 6.18, irreversible until reboot.)
#[test]
fn doctor_fix_favordynmods_dry_run_and_refusals() {
    let mountinfo = || {
        let m = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        m.lines()
            .filter(|l| l.contains(" - cgroup"))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    let before = mountinfo();
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let o = run(&["doctor", "--fix", "favordynmods", "--dry-run"]);
    let has_it = before.iter().any(|l| l.contains("favordynmods"));
    let has_cgroup2 = before.iter().any(|l| l.contains(" - cgroup2 "));
    if has_it {
        assert_eq!(o.status, 0, "{}", o.stderr);
        assert!(o.stdout.contains("already on"), "{}", o.stdout);
    } else if has_cgroup2 && root {
        assert_eq!(o.status, 0, "{}", o.stderr);
        assert!(o.stdout.contains("host-wide"), "{}", o.stdout);
        assert!(o.stdout.contains("until reboot"), "{}", o.stdout);
        assert!(
            o.stdout.contains("dry run: would remount") && o.stdout.contains(",favordynmods"),
            "{}",
            o.stdout
        );
        assert!(o.stdout.contains("nothing changed"), "{}", o.stdout);
    } else {
        assert_eq!(o.status, 125, "{}", o.stdout);
    }
    assert_eq!(mountinfo(), before, "a dry run changes no mount");
    // --dry-run is an option of --fix only.
    assert_eq!(run(&["doctor", "--dry-run"]).status, 2);
    // Unprivileged: refused, naming why (where root would have had something to do).
    if root && has_cgroup2 && !has_it {
        let out = std::process::Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_hybox"))
            .args(["doctor", "--fix", "favordynmods"])
            .output();
        if let Ok(out) = out {
            let err = String::from_utf8_lossy(&out.stderr);
            assert_eq!(out.status.code(), Some(125), "{err}");
            assert!(err.contains("needs root"), "{err}");
        }
    }
    assert_eq!(mountinfo(), before, "a refusal changes no mount");
}

/// Without root (no envelope: the policy degrades), native runs work every time: the shim becomes
/// non-dumpable only after the go byte, so the runner can always write its id maps (a non-dumpable
/// process's /proc files belong to root; the race failed 35-83% of runs).
#[test]
fn unprivileged_native_runs_write_their_id_maps_every_time() {
    if !common::privileged("unprivileged_native_runs_write_their_id_maps_every_time") {
        return;
    }
    use std::os::unix::process::CommandExt;
    let (dir, bin, hello, policy) = nobody_kit("degrade");
    for i in 0..20 {
        let o = std::process::Command::new(&bin)
            .arg("run")
            .arg("--policy")
            .arg(&policy)
            .arg(&hello)
            .env_clear()
            .env("HOME", dir.path())
            .current_dir(dir.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap();
        assert_eq!(
            o.status.code(),
            Some(0),
            "run {i}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&o.stdout), "hello from hybox\n");
    }
}

/// The wasm worker is the running executable itself (`/proc/self/exe`, by fd), whatever its file is
/// called: a copy named `hybox-0.1` runs wasm guests both with the forked worker (the CLI's default)
/// and with the exec'd one (`wasm.os_sandbox`).
#[test]
fn wasm_runs_whatever_the_executable_is_called() {
    if !common::privileged("wasm_runs_whatever_the_executable_is_called") {
        return;
    }
    common::examples_out();
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("hybox-0.1");
    std::fs::copy(env!("CARGO_BIN_EXE_hybox"), &exe).unwrap();
    let hello = common::wasm_guest("hello");
    for (policy, start) in [
        ("policies/benchmark.json", "fork"),
        ("policies/untrusted-plugin.json", "exec"),
    ] {
        let o = std::process::Command::new(&exe)
            .args(["run", "--json", "--policy", policy, hello.to_str().unwrap()])
            .current_dir(repo())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&o.stdout);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(0), "{policy}: {stderr}");
        let (greeting, json) = stdout.split_once('\n').unwrap();
        assert_eq!(greeting, "hello from hybox", "{policy}");
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(v["details"]["worker_start"], start, "{policy}");
    }
}
