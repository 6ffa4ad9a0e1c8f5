//! The native backend end to end: a probe runs inside the sandbox and prints its view; attack
//! probes try escape primitives. Every check has a negative control: the same probe run bare, outside
//! the sandbox, sees the host / succeeds, proving the test exercises the mechanism.
//!
//! Privileged (root): `cargo test -p hybox --test native`.

#[path = "common/mod.rs"]
mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use hybox::backend::{BackendError, BackendRun, Launch};
use hybox::policy::Policy;
use hybox::report::Outcome;
use hybox::workload::Artifact;
use hybox::{HostConfig, Stdio};
use serde_json::Value;

/// Whether this kernel's Landlock ABI covers everything the shim enforces (fs, TCP, scoping: ABI 6).
fn full_landlock() -> bool {
    hybox::host::landlock_abi().is_ok_and(|abi| abi >= 6)
}

/// A test policy. On a kernel with an older Landlock ABI (the 6.1 VM suite), `landlock: required`
/// is refused by design (`landlock_required_fails_closed_on_an_old_abi` proves it); the other tests
/// then ask for `best_effort` explicitly, and assert the degradation is reported.
fn policy(json: &str) -> Policy {
    let mut p = Policy::from_json_str(json, "test.json").expect("valid test policy");
    if !full_landlock() && p.native.landlock == hybox::policy::LandlockMode::Required {
        eprintln!(
            "note: Landlock ABI < 6 on this kernel: this test runs with landlock best_effort"
        );
        p.native.landlock = hybox::policy::LandlockMode::BestEffort;
    }
    p
}

#[test]
fn landlock_required_fails_closed_on_an_old_abi() {
    if !common::privileged("landlock_required_fails_closed_on_an_old_abi") {
        return;
    }
    let strict = Policy::from_json_str(r#"{"version": 1}"#, "strict.json").unwrap();
    let r = run_with(&strict, "hello", &[], Duration::from_secs(20));
    if full_landlock() {
        assert!(r.is_ok(), "{r:?}");
        return;
    }
    // Refused with an actionable message, never silently run with less.
    let e = r.expect_err("landlock: required must not run on an old ABI");
    assert!(e.to_string().contains("landlock"), "{e}");
    // Allowed to degrade: it runs, and the report lists what was not enforced.
    let degrade = Policy::from_json_str(
        r#"{"version": 1, "on_unenforceable": "degrade"}"#,
        "degrade.json",
    )
    .unwrap();
    let r = run_with(&degrade, "hello", &[], Duration::from_secs(20)).unwrap();
    assert_eq!(r.outcome, hybox::report::Outcome::Exited { code: 0 });
    assert!(
        r.degradations.iter().any(|d| d.what == "landlock"),
        "{:?}",
        r.degradations
    );
}

fn run_with(
    policy: &Policy,
    guest: &str,
    args: &[&str],
    timeout: Duration,
) -> Result<BackendRun, BackendError> {
    run_artifact(policy, &common::native_guest(guest), args, timeout)
}

fn run_artifact(
    policy: &Policy,
    path: &Path,
    args: &[&str],
    timeout: Duration,
) -> Result<BackendRun, BackendError> {
    run_fed(
        policy,
        path,
        args,
        Vec::new(),
        &HostConfig::default(),
        timeout,
    )
}

/// A captured run of `path` with `stdin`, on `host`, without an envelope.
fn run_fed(
    policy: &Policy,
    path: &Path,
    args: &[&str],
    stdin: Vec<u8>,
    host: &HostConfig,
    timeout: Duration,
) -> Result<BackendRun, BackendError> {
    let artifact = Artifact::detect(path).expect("detect guest");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let stdio = Stdio::Capture { stdin };
    let launch = Launch {
        run_id: "test",
        policy,
        artifact: &artifact,
        args: &args,
        env: Default::default(),
        stdio: &stdio,
        deadline: Instant::now() + timeout,
        host,
        joins: &[],
        pass_fds: &[],
    };
    hybox::backend::run(hybox::Backend::Native, &launch, None)
}

fn run(policy: &Policy, guest: &str, args: &[&str]) -> BackendRun {
    run_with(policy, guest, args, Duration::from_secs(20)).expect("native run starts")
}

fn json_of(run: &BackendRun) -> Value {
    let text = String::from_utf8_lossy(&run.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "probe output is not JSON ({e}): {text:?}; stderr {:?}; outcome {:?}",
            String::from_utf8_lossy(&run.stderr),
            run.outcome
        )
    })
}

/// The probe run bare, outside any sandbox (the negative control).
fn bare(args: &[&str]) -> Value {
    let out = std::process::Command::new(common::native_guest("probe"))
        .args(args)
        .output()
        .expect("run probe bare");
    serde_json::from_slice(&out.stdout).expect("bare probe prints JSON")
}

fn secret_file() -> tempfile::NamedTempFile {
    let f = tempfile::Builder::new()
        .prefix("hybox-native-secret")
        .tempfile_in("/var/tmp")
        .expect("temp file");
    std::fs::write(f.path(), "host secret").expect("write secret");
    f
}

#[test]
fn inside_view_is_isolated() {
    if !common::privileged("inside_view_is_isolated") {
        return;
    }
    // The sandbox's ids map to host nobody (65534): granted host paths must be accessible to it.
    use std::os::unix::fs::PermissionsExt;
    let ro = tempfile::tempdir().expect("tempdir");
    let rw = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(ro.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");
    std::os::unix::fs::chown(rw.path(), Some(65534), Some(65534)).expect("chown");
    let secret = secret_file();
    let p = policy(&format!(
        r#"{{"version": 1, "filesystem": {{"workdir": "/data", "mounts": [
            {{"host": "{}", "guest": "/data"}}, {{"host": "{}", "guest": "/out", "mode": "rw"}}]}},
            "native": {{"hostname": "probe-box"}}}}"#,
        ro.path().display(),
        rw.path().display()
    ));
    let secret_path = secret.path().to_str().expect("utf-8 path");
    let r = run(
        &p,
        "probe",
        &["/data", "/out", "/tmp", secret_path, "/root", "/sys"],
    );
    assert_eq!(
        r.outcome,
        Outcome::Exited { code: 0 },
        "stderr: {}",
        String::from_utf8_lossy(&r.stderr)
    );
    let v = json_of(&r);
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        assert_eq!(v[cap], "0000000000000000", "{cap}: {v}");
    }
    assert_eq!(v["NoNewPrivs"], "1");
    assert_eq!(v["Seccomp"], "2");
    // The runner clones with every signal blocked; none of that reaches the workload.
    assert_eq!(v["SigBlk"], "0000000000000000", "{v}");
    // Mapped to one unprivileged host id, never host 0.
    let uid_map: Vec<&str> = v["uid_map"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(uid_map, ["1000", "65534", "1"], "{v}");
    assert_eq!(
        v["Uid"]
            .as_str()
            .unwrap_or_default()
            .split_whitespace()
            .next(),
        Some("1000")
    );
    // Only 0-2, plus 3: the probe's own handle on /proc/self/fd while it lists it.
    assert_eq!(v["fds"], serde_json::json!([0, 1, 2, 3]), "{v}");
    assert_eq!(v["ifaces"], serde_json::json!(["lo"]));
    assert_eq!(v["routes"], 0);
    assert_eq!(v["lo_up"], false);
    assert_eq!(v["hostname"], "probe-box");
    assert_eq!(v["pid"], 2, "the workload is the shim's first child");
    assert_eq!(v["pid1_cmdline"], "hybox-shim");
    assert_eq!(v["cwd"], "/data");
    let paths = v["paths"].as_array().expect("paths");
    let find = |p: &str| {
        paths
            .iter()
            .find(|x| x["path"] == p)
            .unwrap_or_else(|| panic!("{p} in {v}"))
    };
    assert_eq!(find("/data")["exists"], true);
    let ro_errno = find("/data")["write_errno"].as_i64().unwrap_or_default();
    assert!(
        ro_errno == i64::from(libc::EROFS) || ro_errno == i64::from(libc::EACCES),
        "ro mount writable: {v}"
    );
    assert_eq!(find("/out")["write_errno"], 0, "rw mount not writable: {v}");
    assert_eq!(find("/tmp")["write_errno"], 0, "/tmp not writable: {v}");
    assert_eq!(find(secret_path)["exists"], false, "host file visible: {v}");
    assert_eq!(find("/root")["exists"], false);
    assert_eq!(find("/sys")["exists"], false);
    if full_landlock() {
        assert_eq!(r.details.to_json()["landlock"], "fully_enforced");
    } else {
        assert_ne!(
            r.details.to_json()["landlock"],
            "fully_enforced",
            "an old ABI cannot be fully enforced"
        );
        assert!(
            r.degradations.iter().any(|d| d.what == "landlock"),
            "{:?}",
            r.degradations
        );
    }

    // Negative control: bare, the probe sees the host.
    let b = bare(&[secret_path]);
    assert_ne!(b["CapEff"], "0000000000000000");
    assert_eq!(b["Seccomp"], "0");
    assert!(b["ifaces"].as_array().map(|a| a.len()).unwrap_or(0) >= 1);
    assert_eq!(b["paths"][0]["exists"], true);
}

#[test]
fn loopback_is_up_only_when_granted() {
    if !common::privileged("loopback_is_up_only_when_granted") {
        return;
    }
    let r = run(
        &policy(r#"{"version": 1, "network": "loopback"}"#),
        "probe",
        &[],
    );
    let v = json_of(&r);
    assert_eq!(v["lo_up"], true, "{v}");
    assert_eq!(v["ifaces"], serde_json::json!(["lo"]));
    assert_eq!(
        v["routes"], 0,
        "loopback routes live in the local table, not /proc/net/route"
    );
    let r = run(&policy(r#"{"version": 1}"#), "probe", &[]);
    assert_eq!(json_of(&r)["lo_up"], false);
}

/// Runs `probe attack NAME [ARG]` inside; returns the outcome and the probe's JSON if it printed one.
fn attack(name: &str, arg: Option<&str>) -> (Outcome, Option<Value>) {
    let mut args = vec!["attack", name];
    args.extend(arg);
    let r = run(&policy(r#"{"version": 1}"#), "probe", &args);
    let v = serde_json::from_slice(&r.stdout).ok();
    (r.outcome, v)
}

fn assert_errno(name: &str, arg: Option<&str>, errno: i32) {
    let (o, v) = attack(name, arg);
    assert_eq!(o, Outcome::Exited { code: 0 }, "{name}");
    let v = v.unwrap_or_else(|| panic!("{name}: no output"));
    assert_eq!(v["ret"], -1, "{name} succeeded inside: {v}");
    assert_eq!(v["errno"], errno, "{name}: {v}");
}

fn assert_seccomp_kill(name: &str) {
    // The name comes from the kernel's audit record, which printk's host-wide limit (10 per 5 s)
    // drops when parallel tests kill: `unknown`. Run again after the interval; it must still match.
    let mut run = attack(name, None);
    for _ in 0..2 {
        if matches!(&run.0, Outcome::SeccompViolation { syscall } if syscall == "unknown") {
            std::thread::sleep(Duration::from_secs(5));
            run = attack(name, None);
        }
    }
    let (o, v) = run;
    assert_eq!(
        o,
        Outcome::SeccompViolation {
            syscall: name.into()
        },
        "{name}: {v:?}"
    );
    assert_eq!(o.exit_status(), 128 + libc::SIGSYS);
}

#[test]
fn namespace_escapes_are_refused() {
    if !common::privileged("namespace_escapes_are_refused") {
        return;
    }
    assert_errno("unshare_user", None, libc::EPERM);
    assert_errno("clone_newuser", None, libc::EPERM);
    assert_errno("clone3", None, libc::ENOSYS);
    // Negative control: bare (root, single-threaded) the same unshare succeeds.
    assert_eq!(bare(&["attack", "unshare_user"])["ret"], 0);
}

#[test]
fn kernel_surface_is_closed() {
    if !common::privileged("kernel_surface_is_closed") {
        return;
    }
    assert_errno("io_uring_setup", None, libc::ENOSYS);
    // TIOCSTI with high bits set: the 32-bit compare still catches it.
    assert_errno("tiocsti", None, libc::EPERM);
    assert_errno("personality", None, libc::EPERM);
    assert_seccomp_kill("ptrace");
    assert_seccomp_kill("mount");
    assert_seccomp_kill("keyctl");
    assert_seccomp_kill("bpf");
    // Negative control: bare, io_uring_setup and keyctl reach the kernel.
    assert_eq!(bare(&["attack", "keyctl"])["errno"], 0);
}

#[test]
fn privilege_escapes_are_refused() {
    if !common::privileged("privilege_escapes_are_refused") {
        return;
    }
    // uid 0 is not even mapped in the sandbox's user namespace: EINVAL (EPERM without CAP_SETUID).
    let (_, v) = attack("setuid0", None);
    let v = v.expect("output");
    assert_eq!(v["ret"], -1, "{v}");
    assert!(
        v["errno"] == libc::EINVAL || v["errno"] == libc::EPERM,
        "{v}"
    );
    // /proc/sysrq-trigger is masked with /dev/null and /proc/sys is read-only; either way no effect.
    let (o, v) = attack("sysrq", None);
    assert_eq!(o, Outcome::Exited { code: 0 });
    let v = v.expect("output");
    assert!(v["ret"] == -1 || v["ret"] == 0, "{v}");
    // CVE-2019-5736: the shim (pid 1) is non-dumpable and another uid: its exe cannot be opened.
    assert_errno("write_exe", Some("/proc/1/exe"), libc::EACCES);
    // The workload's own binary (a host file outside the mounts) is not writable either.
    let (o, v) = attack("write_exe", Some("/proc/self/exe"));
    assert_eq!(o, Outcome::Exited { code: 0 });
    assert_eq!(v.expect("output")["ret"], -1);
}

#[test]
fn exit_codes_and_signals_pass_through() {
    if !common::privileged("exit_codes_and_signals_pass_through") {
        return;
    }
    let p = policy(r#"{"version": 1}"#);
    assert_eq!(
        run(&p, "probe", &["attack", "exit", "42"]).outcome,
        Outcome::Exited { code: 42 }
    );
    let r = run(&p, "probe", &["attack", "segv"]);
    assert_eq!(
        r.outcome,
        Outcome::Signaled {
            signal: libc::SIGSEGV,
            name: "SIGSEGV".into()
        }
    );
    let r = run(&p, "hello", &[]);
    assert_eq!(r.outcome, Outcome::Exited { code: 0 });
    assert!(!r.stdout.is_empty());
}

#[test]
fn timeout_kills_the_sandbox() {
    if !common::privileged("timeout_kills_the_sandbox") {
        return;
    }
    let t0 = Instant::now();
    let r = run_with(
        &policy(r#"{"version": 1}"#),
        "probe",
        &["attack", "sleep"],
        Duration::from_millis(500),
    )
    .expect("starts");
    assert_eq!(r.outcome, Outcome::Timeout);
    assert!(t0.elapsed() < Duration::from_secs(10), "generous band");
}

#[test]
fn setup_errors_name_the_step() {
    if !common::privileged("setup_errors_name_the_step") {
        return;
    }
    // A missing host path is caught before anything starts.
    let err = run_with(
        &policy(r#"{"version": 1, "filesystem": {"mounts": [{"host": "/nonexistent-hybox", "guest": "/x"}]}}"#),
        "hello",
        &[],
        Duration::from_secs(10),
    )
    .expect_err("must not start");
    assert!(err.to_string().contains("/nonexistent-hybox"), "{err}");
    // A workdir that exists nowhere fails inside the shim, at its step.
    let r = run(
        &policy(r#"{"version": 1, "filesystem": {"workdir": "/nowhere"}}"#),
        "hello",
        &[],
    );
    assert_eq!(
        r.outcome,
        Outcome::SetupError {
            step: "chdir /nowhere: ENOENT".into()
        }
    );
}

#[test]
fn a_shim_that_cannot_start_is_a_clear_error() {
    if !common::privileged("a_shim_that_cannot_start_is_a_clear_error") {
        return;
    }
    // A file that is not an executable: the runner opens it, the child's execveat fails.
    let not_elf = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(not_elf.path(), "not a program").expect("write");
    let host = HostConfig {
        shim_path: Some(not_elf.path().to_path_buf()),
        ..Default::default()
    };
    let policy = policy(r#"{"version": 1}"#);
    // The caller's signal mask is restored after the clone (which blocks every signal around it).
    // SAFETY: sigset_t is plain data, initialised by sigemptyset and written by pthread_sigmask.
    let [mut usr1, mut before, mut after]: [libc::sigset_t; 3] = unsafe { std::mem::zeroed() };
    // SAFETY: as above; SIG_BLOCK of SIGUSR1 in this test thread only.
    unsafe {
        libc::sigemptyset(&mut usr1);
        libc::sigaddset(&mut usr1, libc::SIGUSR1);
        libc::pthread_sigmask(libc::SIG_BLOCK, &usr1, &mut before);
    }
    let result = run_fed(
        &policy,
        &common::native_guest("hello"),
        &[],
        Vec::new(),
        &host,
        Duration::from_secs(10),
    );
    // SAFETY: reads this thread's mask, then restores the one from before the test.
    unsafe {
        libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), &mut after);
        assert_eq!(libc::sigismember(&after, libc::SIGUSR1), 1);
        assert_eq!(libc::sigismember(&after, libc::SIGUSR2), 0);
        libc::pthread_sigmask(libc::SIG_SETMASK, &before, std::ptr::null_mut());
    }
    // The child's exec fails either before the runner's setup finished (the start fails) or after
    // (the run reports a setup error): the same words either way.
    let msg = match result {
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(&not_elf.path().display().to_string()), "{msg}");
            msg
        }
        Ok(run) => match run.outcome {
            Outcome::SetupError { step } => step,
            other => panic!("a shim that is not a program must not run: {other:?}"),
        },
    };
    assert!(
        msg.contains("execveat of the shim failed (exit 127)"),
        "{msg}"
    );
}

#[test]
fn megabytes_of_stdin_and_stdout_pass_through() {
    if !common::privileged("megabytes_of_stdin_and_stdout_pass_through") {
        return;
    }
    // Many times a pipe's buffer each way: the runner must feed and drain at once.
    let input: Vec<u8> = (0..3 << 20).map(|i: u32| (i % 251) as u8).collect();
    let policy = policy(r#"{"version": 1, "resources": {"stdout_max": "8M"}}"#);
    let r = run_fed(
        &policy,
        &common::native_guest("echo"),
        &[],
        input.clone(),
        &HostConfig::default(),
        Duration::from_secs(20),
    )
    .expect("native run starts");
    assert_eq!(
        r.outcome,
        Outcome::Exited { code: 0 },
        "{:?}",
        String::from_utf8_lossy(&r.stderr)
    );
    assert_eq!(r.stdout_bytes, input.len() as u64);
    assert!(!r.stdout_truncated);
    assert!(r.stdout == input, "stdout differs from stdin");
}

#[test]
fn output_capture_is_capped() {
    if !common::privileged("output_capture_is_capped") {
        return;
    }
    let r = run(
        &policy(r#"{"version": 1, "resources": {"stdout_max": 4}}"#),
        "hello",
        &[],
    );
    assert_eq!(r.stdout.len(), 4);
    assert!(r.stdout_truncated);
    assert!(r.stdout_bytes > 4);
}

#[test]
fn only_granted_paths_are_readable() {
    if !common::privileged("only_granted_paths_are_readable") {
        return;
    }
    let (_, v) = attack("read", Some("/etc/shadow"));
    assert_eq!(v.expect("output")["ret"], -1);
    assert!(
        Path::new("/etc/shadow").exists(),
        "negative control: the host has it"
    );
}

#[test]
fn a_script_runs_under_its_interpreter_from_the_rootfs() {
    if !common::privileged("a_script_runs_under_its_interpreter_from_the_rootfs") {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let script = dir.path().join("greet.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"script: $# args, first=$1, pid $$\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let r = run_artifact(
        &policy(r#"{"version": 1}"#),
        &script,
        &["one", "two"],
        Duration::from_secs(20),
    )
    .expect("script run starts");
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    // The script was executed by fd (the kernel hands /dev/fd/N to /bin/sh from the read-only
    // rootfs); it runs as pid 2, under the shim as pid 1.
    assert_eq!(
        String::from_utf8_lossy(&r.stdout),
        "script: 2 args, first=one, pid 2\n",
        "{}",
        String::from_utf8_lossy(&r.stderr)
    );
}

#[test]
fn a_rootfs_dir_is_the_whole_root() {
    if !common::privileged("a_rootfs_dir_is_the_whole_root") {
        return;
    }
    // An "image": one file, no /usr. The static probe needs nothing from it.
    let image = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(image.path().join("marker"), "from the image").unwrap();
    let p = policy(&format!(
        r#"{{"version": 1, "native": {{"rootfs": {{"dir": "{}"}}}}}}"#,
        image.path().display()
    ));
    let read = |policy: &Policy, path: &str| {
        let r = run(policy, "probe", &["attack", "read", path]);
        assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{path}: {r:?}");
        json_of(&r)
    };
    // `probe attack read` answers the number of bytes read.
    assert_eq!(
        read(&p, "/marker")["ret"],
        "from the image".len(),
        "the image's file is readable"
    );
    // /usr is the host's (EISDIR when read as a file) under the default rootfs, absent here.
    let host_root = policy(r#"{"version": 1}"#);
    assert_eq!(read(&host_root, "/usr")["errno"], libc::EISDIR);
    assert_eq!(read(&p, "/usr")["errno"], libc::ENOENT);
    // Negative control: the marker is not a host path, so only the image can have provided it.
    assert!(!Path::new("/marker").exists());
    assert_eq!(read(&host_root, "/marker")["errno"], libc::ENOENT);
}

#[test]
fn the_shim_is_in_the_envelope_before_it_runs() {
    if !common::privileged("the_shim_is_in_the_envelope_before_it_runs") {
        return;
    }
    use hybox::envelope::{Envelope, Limits};
    let root = Path::new("/sys/fs/cgroup");
    let env = Envelope::create(
        root,
        "hybox",
        &format!("t-native-entry-{}", std::process::id()),
        &Limits {
            memory_bytes: 64 << 20,
            cpus: 1.0,
            pids: 16,
        },
    )
    .expect("envelope");
    let p = policy(r#"{"version": 1}"#);
    let artifact = Artifact::detect(&common::native_guest("hello")).unwrap();
    let host = HostConfig::default();
    let stdio = Stdio::Capture { stdin: Vec::new() };
    let launch = Launch {
        run_id: "test",
        policy: &p,
        artifact: &artifact,
        args: &[],
        env: Default::default(),
        stdio: &stdio,
        deadline: Instant::now() + Duration::from_secs(20),
        host: &host,
        joins: &[],
        pass_fds: &[],
    };
    let r = hybox::backend::run(hybox::Backend::Native, &launch, Some(&env))
        .expect("native run starts");
    assert_eq!(r.outcome, Outcome::Exited { code: 0 }, "{r:?}");
    // cgroup v2: created inside (CLONE_INTO_CGROUP); v1: migrated by the runner before release.
    let layout = hybox::host::cgroup::detect(root).unwrap();
    let expect = if layout.version() == "v2" {
        "clone_into_cgroup"
    } else {
        "migrated"
    };
    assert_eq!(r.details.to_json()["cgroup_entry"], expect, "{layout:?}");
    // Everything the sandbox did was charged to the envelope.
    let u = env.try_usage().unwrap();
    assert!(u.peak_memory_bytes > 0, "{u:?}");
    assert!(u.cpu_user_us + u.cpu_system_us > 0, "{u:?}");
    env.destroy().unwrap();
}

/// `RunOptions::detach_teardown`: the result comes back complete (outcome, output, usage) and says
/// the teardown went to the background; once `wait_for_teardowns` says none is pending, no leaf of the run is left
/// in any hierarchy. Both backends.
#[test]
fn a_detached_teardown_leaves_nothing_behind() {
    if !common::privileged("a_detached_teardown_leaves_nothing_behind") {
        return;
    }
    for guest in [common::native_guest("hello"), common::wasm_guest("hello")] {
        let sandbox = hybox::Sandbox::new(
            hybox::workload::Workload::detect(&guest).unwrap(),
            policy(r#"{"version": 1}"#),
            None,
        )
        .unwrap();
        let host = HostConfig {
            hybox_path: Some(env!("CARGO_BIN_EXE_hybox").into()),
            ..Default::default()
        };
        let r = sandbox
            .run(&hybox::RunOptions {
                stdio: Stdio::Capture { stdin: Vec::new() },
                host,
                detach_teardown: true,
                ..Default::default()
            })
            .expect("run");
        let report = &r.report;
        assert_eq!(report.outcome, Outcome::Exited { code: 0 }, "{report:?}");
        assert_eq!(r.stdout, b"hello from hybox\n");
        assert_eq!(
            report.details.to_json()["teardown"],
            "background",
            "{report:?}"
        );
        assert!(report.usage.peak_memory_bytes > 0, "{report:?}");
        assert!(
            hybox::sandbox::wait_for_teardowns(Duration::from_secs(10)),
            "teardown still pending after 10 s"
        );
        let left: Vec<_> = ["memory", "cpu", "cpuacct", "pids", "unified", ""]
            .iter()
            .map(|c| Path::new("/sys/fs/cgroup").join(c).join("hybox"))
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(&report.run_id))
            .collect();
        assert!(left.is_empty(), "{guest:?}: left behind {left:?}");
    }
}

#[test]
fn a_prebuilt_sandbox_is_ready_or_says_why_not() {
    if !common::privileged("a_prebuilt_sandbox_is_ready_or_says_why_not") {
        return;
    }
    let hello = common::native_guest("hello");
    let sandbox = |json: &str| {
        hybox::Sandbox::new(
            hybox::workload::Workload::detect(&hello).expect("detect hello"),
            policy(json),
            None,
        )
        .expect("sandbox")
    };
    // Ready: the call only releases the exec.
    let ok = sandbox(r#"{"version": 1}"#);
    let p = ok.prebuild(&HostConfig::default()).expect("prebuild");
    let r = ok.run_prebuilt(p, Vec::new()).expect("call");
    assert_eq!(r.report.outcome, Outcome::Exited { code: 0 });
    assert_eq!(String::from_utf8_lossy(&r.stdout), "hello from hybox\n");
    // Not ready: prebuild returns once the shim said why, and the call reports that step.
    let bad = sandbox(r#"{"version": 1, "filesystem": {"workdir": "/nowhere"}}"#);
    let p = bad.prebuild(&HostConfig::default()).expect("prebuild");
    let r = bad.run_prebuilt(p, Vec::new()).expect("call");
    assert_eq!(
        r.report.outcome,
        Outcome::SetupError {
            step: "chdir /nowhere: ENOENT".into()
        }
    );
    assert!(hybox::sandbox::wait_for_teardowns(Duration::from_secs(10)));
}

/// An untrusted root filesystem (a bundle's or an image's) with a symlink where a policy mount's
/// mount point goes: the host's tree is still attached at `/.oldroot` while the shim binds, so
/// following the link would create directories on the host and put the bind where the plan never
/// said. The link points at a victim directory of the test's own (writable by anyone, so only the
/// shim's refusal keeps it empty).
#[test]
fn a_symlink_in_the_rootfs_cannot_redirect_a_mount_point() {
    if !common::privileged("a_symlink_in_the_rootfs_cannot_redirect_a_mount_point") {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let work = tempfile::tempdir_in("/var/tmp").unwrap();
    // Traversable by the sandbox's unprivileged host id, so that only the shim's check stops it.
    std::fs::set_permissions(work.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let victim = work.path().join("victim");
    std::fs::create_dir(&victim).unwrap();
    std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o777)).unwrap();
    let image = work.path().join("image");
    std::fs::create_dir_all(image.join("data")).unwrap();
    std::os::unix::fs::symlink(
        Path::new("/.oldroot").join(victim.strip_prefix("/").unwrap()),
        image.join("data/link"),
    )
    .unwrap();
    let shared = work.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    for (guest, through) in [
        ("/data/link/sub", "/data/link"),
        ("/data/link", "/data/link"),
    ] {
        let p = policy(&format!(
            r#"{{"version": 1, "native": {{"rootfs": {{"dir": "{}"}}}},
                 "filesystem": {{"mounts": [{{"host": "{}", "guest": "{guest}"}}]}}}}"#,
            image.display(),
            shared.display()
        ));
        let r = run(&p, "probe", &["attack", "read", "/marker"]);
        match &r.outcome {
            Outcome::SetupError { step } => assert!(
                step.contains(through) && step.contains("symlink"),
                "{guest}: {step}"
            ),
            o => panic!("{guest}: the bind went ahead: {o:?}"),
        }
        let left: Vec<_> = std::fs::read_dir(&victim).unwrap().flatten().collect();
        assert!(left.is_empty(), "{guest}: created on the host: {left:?}");
    }
}
