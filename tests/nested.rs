//! Nested sandboxes: hybox running inside hybox with the `native.nested` grant, and without it.
//! The outer sandbox runs the `hybox` binary itself as its native guest; the inner hybox runs an
//! example guest under its own policy, bound read-only into the outer sandbox with the guests. The
//! inner hybox is unprivileged (the outer sandbox's uid) and has no cgroup to create: its policy
//! says `on_unenforceable: degrade`, and the outer envelope bounds everything it starts.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde_json::Value;

/// `required` (the default) where the kernel's Landlock ABI covers everything the shim enforces
/// (ABI 6), `best_effort` on an older kernel (the 6.1 VM suite), where `required` is refused by
/// design (tests/native.rs).
fn landlock_mode() -> &'static str {
    if hybox::host::landlock_abi().is_ok_and(|abi| abi >= 6) {
        "required"
    } else {
        "best_effort"
    }
}

/// Host files the outer sandbox binds read-only at `/nt/...`: the example guests and the inner
/// policy (in a directory the sandbox's unprivileged host id can read).
struct Kit {
    dir: tempfile::TempDir,
}

impl Kit {
    fn new(inner_pids: u64) -> Kit {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        for g in ["hello", "probe"] {
            let to = dir.path().join(g);
            std::fs::copy(common::native_guest(g), &to).expect("copy guest");
            std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let inner = serde_json::json!({
            "version": 1,
            "backend": "native",
            "resources": {"pids": inner_pids, "timeout": "20s"},
            "native": {"landlock": landlock_mode()},
            "on_unenforceable": "degrade",
        });
        let p = dir.path().join("inner.json");
        std::fs::write(&p, inner.to_string()).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        Kit { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The outer policy: the kit bound read-only, a writable `/tmp`, the grant when `nested`.
    fn outer_policy(&self, nested: bool, pids: u64) -> PathBuf {
        let mounts: Vec<Value> = ["hello", "probe", "inner.json"]
            .iter()
            .map(|n| serde_json::json!({"host": self.path(n), "guest": format!("/nt/{n}")}))
            .collect();
        let policy = serde_json::json!({
            "version": 1,
            "backend": "native",
            "resources": {"pids": pids, "timeout": "60s", "memory": "512M"},
            "filesystem": {"tmp": {"size": "64M"}, "mounts": mounts},
            // Landlock `required` holds with the grant: the kernel enforces all of the ruleset the
            // grant leaves (TCP and the scopes).
            "native": {"nested": nested, "landlock": landlock_mode()},
            "on_unenforceable": "degrade",
        });
        let p = self.path(if nested {
            "outer.json"
        } else {
            "outer-no.json"
        });
        std::fs::write(&p, policy.to_string()).unwrap();
        p
    }
}

/// What a nested run left: the outer report, the outer run's stdout (the inner guest's output,
/// then the inner report with `--json`), its stderr, and the outer hybox's exit status.
struct Nested {
    outer: Value,
    stdout: String,
    stderr: String,
    status: Option<i32>,
}

impl Nested {
    /// The inner report, printed last on the outer run's stdout (`--json`).
    fn inner(&self) -> Value {
        let at = if self.stdout.starts_with("{\n") {
            Some(0)
        } else {
            self.stdout.find("\n{\n").map(|i| i + 1)
        };
        let at = at.unwrap_or_else(|| {
            panic!(
                "no inner report on stdout: {:?}; stderr {:?}",
                self.stdout, self.stderr
            )
        });
        serde_json::from_str(&self.stdout[at..])
            .unwrap_or_else(|e| panic!("inner report is not JSON ({e}): {:?}", &self.stdout[at..]))
    }
}

/// `hybox run` (outer, `outer_policy`) of `hybox run --json` (inner, the kit's policy) of `inner`.
fn nested_run(kit: &Kit, outer_policy: &Path, inner: &[&str]) -> Nested {
    let report = kit.path("outer-report.json");
    let _ = std::fs::remove_file(&report);
    let hybox = env!("CARGO_BIN_EXE_hybox");
    let out = common::hybox()
        .arg("run")
        .arg("-q")
        .arg("--policy")
        .arg(outer_policy)
        .arg("--report")
        .arg(&report)
        .arg(hybox)
        .args(["--", "run", "-q", "--policy", "/nt/inner.json", "--json"])
        .args(inner)
        .output()
        .expect("run the outer hybox");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let outer = std::fs::read(&report)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| panic!("no outer report; stdout {stdout:?}; stderr {stderr:?}"));
    Nested {
        outer,
        stdout,
        stderr,
        status: out.status.code(),
    }
}

/// Runs `run` (a run that seccomp kills) up to three times, one at a time in this test process,
/// until its report names the syscall: the name comes from the kernel's audit record, which printk
/// rate limiting drops when many kills happen at once on the machine (the report then says
/// `unknown`).
fn named_kill<T>(run: impl Fn() -> T, outcome: impl Fn(&T) -> Value) -> T {
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut r = run();
    for _ in 0..2 {
        if outcome(&r)["syscall"] != "unknown" {
            break;
        }
        std::thread::sleep(std::time::Duration::from_secs(2));
        r = run();
    }
    r
}

#[test]
fn hybox_runs_its_hello_inside_hybox_with_the_grant() {
    if !common::privileged("hybox_runs_its_hello_inside_hybox_with_the_grant") {
        return;
    }
    let kit = Kit::new(32);
    let r = nested_run(&kit, &kit.outer_policy(true, 64), &["/nt/hello"]);
    assert!(
        r.stdout.starts_with("hello from hybox\n"),
        "{:?} {:?}",
        r.stdout,
        r.stderr
    );
    assert_eq!(r.status, Some(0), "{:?}", r.stderr);
    let inner = r.inner();
    assert_eq!(inner["outcome"]["kind"], "exited", "{inner}");
    assert_eq!(inner["outcome"]["code"], 0, "{inner}");
    assert_eq!(inner["details"]["pid1"], "hybox-shim", "{inner}");
    // The inner hybox has no cgroup of its own: it says so (it may degrade), and is bounded by the
    // outer one (the test below).
    assert_eq!(inner["envelope"]["kind"], "none", "{inner}");
    assert!(
        inner["degradations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["what"] == "envelope"),
        "{inner}"
    );
    // The inner sandbox's own Landlock ruleset (filesystem rules included) is in force.
    if landlock_mode() == "required" {
        assert_eq!(inner["details"]["landlock"], "fully_enforced", "{inner}");
        assert_eq!(
            r.outer["details"]["landlock"], "fully_enforced",
            "{}",
            r.outer
        );
    }
    assert!(inner["details"].get("nested").is_none(), "{inner}");

    let outer = &r.outer;
    assert_eq!(outer["outcome"]["kind"], "exited", "{outer}");
    assert_eq!(outer["outcome"]["code"], 0, "{outer}");
    let grant = &outer["details"]["nested"];
    assert_eq!(grant["grant"], "native.nested", "{outer}");
    let names = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect()
    };
    let want: Vec<String> = hybox_shim::seccomp::NESTED_SYSCALLS
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names(&grant["syscalls"]), want, "{outer}");
    assert_eq!(
        names(&grant["namespaces"]),
        ["user", "mount", "pid", "net", "ipc", "uts", "cgroup"],
        "{outer}"
    );
    // Its consequences are stated, not silent.
    let consequences = names(&grant["consequences"]);
    assert!(
        consequences.iter().any(|c| c.starts_with("landlock:")),
        "{outer}"
    );
    assert!(
        consequences.iter().any(|c| c.starts_with("/proc:")),
        "{outer}"
    );
}

#[test]
fn without_the_grant_the_inner_hybox_is_refused_and_the_grant_named() {
    if !common::privileged("without_the_grant_the_inner_hybox_is_refused_and_the_grant_named") {
        return;
    }
    let kit = Kit::new(32);
    let policy = kit.outer_policy(false, 64);
    let r = named_kill(
        || nested_run(&kit, &policy, &["/nt/hello"]),
        |r| r.outer["outcome"].clone(),
    );
    assert!(!r.stdout.contains("hello from hybox"), "{:?}", r.stdout);
    assert_ne!(r.status, Some(0));
    let outer = &r.outer;
    assert_eq!(outer["outcome"]["kind"], "seccomp_violation", "{outer}");
    let syscall = outer["outcome"]["syscall"].as_str().unwrap();
    assert!(
        hybox_shim::seccomp::NESTED_SYSCALLS.contains(&syscall),
        "killed for `{syscall}`, not a syscall of the grant: {outer}"
    );
    let missing = outer["details"]["missing_grant"].as_str().unwrap_or("");
    assert!(missing.starts_with("native.nested"), "{outer}");
    assert!(outer["details"].get("nested").is_none(), "{outer}");
}

#[test]
fn the_grant_keeps_the_rest_of_the_deny_list() {
    if !common::privileged("the_grant_keeps_the_rest_of_the_deny_list") {
        return;
    }
    let kit = Kit::new(32);
    let policy = kit.outer_policy(true, 64);
    // Straight in the granted outer sandbox, and in the inner one: still killed.
    for attack in ["ptrace", "bpf"] {
        let report = kit.path("direct.json");
        let direct = || {
            let out = common::hybox()
                .args(["run", "-q", "--policy"])
                .arg(&policy)
                .arg("--report")
                .arg(&report)
                .arg(kit.path("probe"))
                .args(["--", "attack", attack])
                .output()
                .expect("run the probe");
            let v: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
            (out, v)
        };
        let (out, v) = named_kill(direct, |(_, v)| v["outcome"].clone());
        assert_eq!(v["outcome"]["kind"], "seccomp_violation", "{attack}: {v}");
        assert_eq!(v["outcome"]["syscall"], attack, "{attack}: {v}");
        assert!(v["details"].get("missing_grant").is_none(), "{v}");
        assert_eq!(out.status.code(), Some(128 + libc::SIGSYS));

        // The inner hybox cannot read the kernel log for the syscall's name (no /dev/kmsg in the
        // outer sandbox): the kill itself is what is asserted, and its status passing through.
        let r = nested_run(&kit, &policy, &["/nt/probe", "--", "attack", attack]);
        let inner = r.inner();
        assert_eq!(
            inner["outcome"]["kind"], "seccomp_violation",
            "{attack}: {inner}"
        );
        assert_eq!(r.outer["outcome"]["kind"], "exited", "{}", r.outer);
        assert_eq!(
            r.outer["outcome"]["code"],
            128 + libc::SIGSYS,
            "{}",
            r.outer
        );
    }
}

#[test]
fn the_outer_pids_limit_bounds_the_inner_sandbox() {
    if !common::privileged("the_outer_pids_limit_bounds_the_inner_sandbox") {
        return;
    }
    // The inner policy allows as many processes as the outer one (RLIMIT_NPROC, which the inner
    // shim sets, can only be lowered without privilege); its fork bomb of 64 children is stopped
    // by the outer envelope's pids.max, which counts every process of both sandboxes.
    let outer_pids = 24;
    let kit = Kit::new(outer_pids);
    let r = nested_run(
        &kit,
        &kit.outer_policy(true, outer_pids),
        &["/nt/probe", "--", "attack", "forkbomb", "64"],
    );
    let first = r.stdout.lines().next().unwrap_or("");
    let probe: Value = serde_json::from_str(first)
        .unwrap_or_else(|e| panic!("probe output ({e}): {:?} {:?}", r.stdout, r.stderr));
    assert_eq!(probe["ret"], -1, "{probe}");
    assert_eq!(probe["errno"], libc::EAGAIN, "{probe}");
    let inner = r.inner();
    assert_eq!(inner["outcome"]["kind"], "exited", "{inner}");
    assert_eq!(inner["outcome"]["code"], 1, "{inner}");
    let outer = &r.outer;
    assert_eq!(outer["envelope"]["pids_max"], outer_pids, "{outer}");
    assert!(
        outer["usage"]["pids_limit_hits"].as_u64().unwrap_or(0) >= 1,
        "the outer cgroup's pids.max did not fire: {outer}"
    );
}
