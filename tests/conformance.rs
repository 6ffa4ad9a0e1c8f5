//! The isolation conformance suite (docs/conformance.md): every case of `hybox::conformance` on every
//! backend it applies to, through the real run path (envelope, backend, report), each with its
//! negative control, plus the cross-backend equivalence of the benign examples. The table is printed
//! (run with `--nocapture` to see it).
//!
//! Privileged (root): `cargo test -p hybox --test conformance`.

#[path = "common/mod.rs"]
mod common;

use std::path::PathBuf;

use hybox::conformance::{self, Config, Verdict};
use hybox::HostConfig;

/// A fresh private compile cache (0700: hybox refuses a cache others can write to).
fn cache() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    d
}

#[test]
fn every_case_passes_on_this_host() {
    if !common::privileged("every_case_passes_on_this_host") {
        return;
    }
    let cache = cache();
    let cfg = Config {
        examples: common::examples_out(),
        host: HostConfig {
            hybox_path: Some(PathBuf::from(env!("CARGO_BIN_EXE_hybox"))),
            cache_dir: Some(cache.path().to_path_buf()),
            ..Default::default()
        },
        filter: None,
    };
    let report = conformance::run(&cfg).expect("the suite runs");
    println!("{}", report.table());
    let failed: Vec<_> = report
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Fail)
        .collect();
    assert!(failed.is_empty(), "failed cases: {failed:#?}");
    // Unsupported is reserved for what this kernel lacks, and always names the kernel option.
    for r in report
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Unsupported)
    {
        let option = match r.case.as_str() {
            "x32" => "CONFIG_X86_X32_ABI",
            "read_proc_kcore" => "CONFIG_PROC_KCORE",
            _ => panic!("only a missing kernel feature may make a case unsupported: {r:?}"),
        };
        assert!(
            r.detail.as_deref().is_some_and(|d| d.contains(option)),
            "{r:?}"
        );
    }
    // The table covers both backends, the catalogue's kernel surface, and the equivalence of every
    // benign example.
    let has = |case: &str, backend: &str| {
        report
            .results
            .iter()
            .any(|r| r.case == case && r.backend == backend)
    };
    for (case, backend) in [
        ("ptrace", "native"),
        ("af_vsock", "native"),
        ("forkbomb", "native"),
        ("memory_bomb", "native"),
        ("memory_bomb", "wasm"),
        ("memory_bomb", "wasm+os"),
        ("read_host_secret", "wasm+os"),
        ("cpu_spin", "wasm"),
        ("connect_host_loopback", "native"),
        ("connect_host_loopback", "wasm"),
        ("read_host_secret", "wasm"),
        ("write_ro_grant", "wasm"),
        ("equivalence_hello", "both"),
        ("equivalence_echo", "both"),
        ("equivalence_compute", "both"),
        ("equivalence_alloc", "both"),
        ("equivalence_files", "both"),
        ("equivalence_env", "both"),
    ] {
        assert!(has(case, backend), "{case} on {backend} missing");
    }
    // Every case that is not `n/a` ran its negative control.
    for r in &report.results {
        assert!(
            r.control.starts_with("bare: ") || r.control.starts_with("n/a: "),
            "{r:?}"
        );
    }
}

#[test]
fn cli_prints_the_table_and_json() {
    if !common::privileged("cli_prints_the_table_and_json") {
        return;
    }
    let examples = common::examples_out();
    let out = common::hybox()
        .args(["conformance", "--json", "--case", "af_vsock", "--examples"])
        .arg(&examples)
        .output()
        .expect("run hybox conformance");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(v["passed"], 1, "{v}");
    assert_eq!(v["results"][0]["got"], "errno EPERM", "{v}");
    assert_eq!(v["results"][0]["control"], "bare: succeeded (ret 3)", "{v}");

    let out = common::hybox()
        .args(["conformance", "--case", "equivalence_hello", "--examples"])
        .arg(&examples)
        .output()
        .expect("run hybox conformance");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("equivalence_hello") && text.contains("PASS"),
        "{text}"
    );
    assert!(text.contains("1 passed, 0 failed, 0 unsupported"), "{text}");
}

#[test]
fn missing_examples_are_reported_not_skipped() {
    let out = common::hybox()
        .args(["conformance", "--examples", "/nonexistent-hybox-examples"])
        .output()
        .expect("run hybox conformance");
    assert_eq!(out.status.code(), Some(hybox::exit::NOT_FOUND));
    assert!(String::from_utf8_lossy(&out.stderr).contains("examples/build.sh"));
}
