//! Property tests of every parser that takes untrusted input: the policy JSON (and the CLI's
//! overrides on top), sizes and durations, artifact sniffing (ELF, wasm modules and components,
//! scripts, text), `bundle.json`, and an OCI bundle's `config.json` mapped onto a policy
//! (`hybox-runc`). Generated and mutated inputs must never panic and always end in
//! a value or an error that says where (the file, the field). A hang shows as the test's timeout.
//!
//! Case counts are bounded for CI (`PROPTEST_CASES` raises them: `scripts/proptest-long` runs them
//! long).

use std::path::Path;

use hybox::policy::{Overrides, Policy};
use hybox::units::{Duration, Size};
use hybox::workload::{Artifact, Workload};
use proptest::prelude::*;
use serde_json::Value;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
}

fn shipped_policies() -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(repo().join("policies"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| std::fs::read_to_string(e.path()).unwrap())
        .collect();
    v.sort();
    assert!(!v.is_empty());
    v
}

fn config() -> ProptestConfig {
    // PROPTEST_CASES overrides the count; this is what CI runs.
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(256),
        ..ProptestConfig::default()
    }
}

/// A JSON value of any shape, with the values that break naive parsers (huge, negative, fractional
/// numbers; odd strings).
fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[0-9]{0,25}[KMGTkmgtB]?(iB)?".prop_map(Value::from),
        "[0-9.]{0,12}(ms|us|s|m|min|h)?".prop_map(Value::from),
        ".{0,40}".prop_map(Value::from),
        "(/[a-z.]{0,6}){0,4}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::from),
            prop::collection::btree_map("[a-z_]{1,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Every path to a value inside `v` (object keys and array indices).
fn paths(v: &Value, at: Vec<String>, out: &mut Vec<Vec<String>>) {
    out.push(at.clone());
    match v {
        Value::Object(m) => m.iter().for_each(|(k, c)| {
            let mut p = at.clone();
            p.push(k.clone());
            paths(c, p, out)
        }),
        Value::Array(a) => a.iter().enumerate().for_each(|(i, c)| {
            let mut p = at.clone();
            p.push(i.to_string());
            paths(c, p, out)
        }),
        _ => {}
    }
}

fn set_at(v: &mut Value, path: &[String], new: Value) {
    match path.split_first() {
        None => *v = new,
        Some((k, rest)) => {
            let child = match v {
                Value::Object(m) => m.get_mut(k),
                Value::Array(a) => k.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            };
            if let Some(c) = child {
                set_at(c, rest, new)
            }
        }
    }
}

/// The parse either succeeds with a policy that validates, or fails naming the file.
fn check_policy(text: &str) {
    match Policy::from_json_str(text, "mutated.json") {
        Ok(p) => {
            p.validate("mutated.json")
                .unwrap_or_else(|e| panic!("parsed but invalid: {e}\n{text}"));
        }
        Err(e) => {
            let msg = hybox::error_chain(&e);
            assert!(msg.starts_with("mutated.json"), "{msg}");
        }
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn policy_text_of_any_bytes(text in ".{0,300}") {
        check_policy(&text);
    }

    #[test]
    fn policy_any_json_document(v in any_json()) {
        check_policy(&v.to_string());
    }

    /// A shipped policy with one value anywhere replaced by anything.
    #[test]
    fn shipped_policy_with_one_value_replaced(which in 0usize..16, at in any::<prop::sample::Index>(), new in any_json()) {
        let all = shipped_policies();
        let mut v: Value = serde_json::from_str(&all[which % all.len()]).unwrap();
        let mut ps = Vec::new();
        paths(&v, Vec::new(), &mut ps);
        set_at(&mut v, &ps[at.index(ps.len())], new);
        check_policy(&v.to_string());
    }

    /// A shipped policy's text cut, or with bytes spliced in (broken JSON, broken UTF-8 boundaries
    /// are impossible in a &str, so the splice is of chars).
    #[test]
    fn shipped_policy_text_mangled(which in 0usize..16, cut in any::<prop::sample::Index>(), len in 0usize..40, ins in ".{0,8}") {
        let all = shipped_policies();
        let text = &all[which % all.len()];
        let chars: Vec<char> = text.chars().collect();
        let at = cut.index(chars.len());
        let end = (at + len).min(chars.len());
        let mangled: String = chars[..at].iter().chain(ins.chars().collect::<Vec<_>>().iter()).chain(chars[end..].iter()).collect();
        check_policy(&mangled);
    }

    /// The CLI's overrides on a valid policy: any values; the result is a valid policy or an error
    /// naming the flag.
    #[test]
    fn overrides_of_any_value(memory in any::<u64>(), cpus in any::<f64>(), pids in any::<u64>(), timeout in "[0-9.]{1,10}(ms|s|m|h)?") {
        let base = Policy::from_json_str(&shipped_policies()[0], "base.json").unwrap();
        let o = Overrides {
            memory: Some(Size(memory)),
            cpus: Some(cpus),
            pids: Some(pids),
            timeout: timeout.parse::<Duration>().ok(),
            ..Overrides::default()
        };
        match base.with_overrides(&o) {
            Ok(p) => p.validate("overridden").unwrap(),
            Err(e) => {
                let msg = e.to_string();
                prop_assert!(msg.contains("--") || msg.contains("command line"), "{}", msg);
            }
        }
    }

    #[test]
    fn sizes_and_durations_of_any_text(s in ".{0,30}") {
        let _ = s.parse::<Size>().map_err(|e| e.to_string());
        let _ = s.parse::<Duration>().map_err(|e| e.to_string());
    }

    #[test]
    fn sizes_with_units_parse_exactly(n in 0u64..1_000_000, unit in prop::sample::select(vec![("", 0u32), ("K", 10), ("M", 20), ("G", 30)])) {
        let s: Size = format!("{n}{}", unit.0).parse().unwrap();
        prop_assert_eq!(s.bytes(), n << unit.1);
    }

    /// Any bytes behind the magic numbers hybox sniffs: an artifact or an error naming the file.
    #[test]
    fn artifact_sniffing_of_any_bytes(
        magic in prop::sample::select(vec![
            &b""[..], b"\0asm\x01\0\0\0", b"\0asm\x0d\0\x01\0", b"\0asm", b"\x7fELF\x02\x01\x01",
            b"\x7fELF", b"#!", b"#!/bin/sh\n", b"(module", b"(component", b"HYBOXAOT",
        ]),
        tail in prop::collection::vec(any::<u8>(), 0..2048),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("artifact");
        std::fs::write(&f, [magic, &tail[..]].concat()).unwrap();
        check_artifact(&f);
    }

    /// A real ELF with its headers mutated: offsets and counts that point anywhere must not make the
    /// sniffer read or allocate without bound.
    #[test]
    fn elf_headers_mutated(edits in prop::collection::vec((0usize..1024, any::<u8>()), 1..24)) {
        let elf = repo().join("examples/out/native/hello");
        let Ok(mut bytes) = std::fs::read(&elf) else { return Ok(()) }; // examples not built
        for (at, b) in edits {
            if at < bytes.len() { bytes[at] = b; }
        }
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("elf");
        std::fs::write(&f, &bytes).unwrap();
        check_artifact(&f);
    }

    /// A bundle directory whose bundle.json is anything: a workload or an error naming the bundle.
    #[test]
    fn bundle_json_of_any_shape(v in any_json(), replace in any::<bool>(), at in any::<prop::sample::Index>()) {
        let dir = tempfile::tempdir().unwrap();
        for f in ["echo.wasm", "echo", "policy.json"] {
            let src = repo().join("examples/echo").join(f);
            if src.exists() {
                std::fs::copy(&src, dir.path().join(f)).unwrap();
            }
        }
        let mut doc: Value = serde_json::from_str(
            &std::fs::read_to_string(repo().join("examples/echo/bundle.json")).unwrap(),
        ).unwrap();
        if replace {
            doc = v;
        } else {
            let mut ps = Vec::new();
            paths(&doc, Vec::new(), &mut ps);
            set_at(&mut doc, &ps[at.index(ps.len())], v);
        }
        std::fs::write(dir.path().join("bundle.json"), doc.to_string()).unwrap();
        match Workload::detect(dir.path()) {
            Ok(w) => { let _ = w.describe(); }
            Err(e) => {
                let msg = hybox::error_chain(&e);
                prop_assert!(msg.contains(&dir.path().display().to_string()), "{}", msg);
            }
        }
    }
}

/// The OCI bundles recorded from ctr, Docker and containerd's CRI (tests/fixtures/oci/).
fn oci_configs() -> Vec<Value> {
    [
        "ctr-run.json",
        "ctr-run-limits.json",
        "ctr-run-tty.json",
        "docker-run.json",
        "docker-run-memory.json",
        "docker-run-tty.json",
        "cri-container.json",
        "cri-sandbox.json",
        "cri-hostnet-container.json",
        "cri-hostnet-sandbox.json",
    ]
    .iter()
    .map(|f| {
        let p = repo().join("tests/fixtures/oci").join(f);
        serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
    })
    .collect()
}

proptest! {
    #![proptest_config(config())]

    /// A recorded config.json with one value anywhere replaced by anything, in a bundle whose
    /// rootfs holds a wasm module behind the names the fixtures run: a container or an error, never
    /// a panic (the mapping only reads; nothing runs).
    #[test]
    fn oci_config_with_one_value_replaced(which in 0usize..16, at in any::<prop::sample::Index>(), new in any_json()) {
        let all = oci_configs();
        let mut v = all[which % all.len()].clone();
        v["root"] = serde_json::json!({"path": "rootfs"});
        let mut ps = Vec::new();
        paths(&v, Vec::new(), &mut ps);
        set_at(&mut v, &ps[at.index(ps.len())], new);
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("rootfs/bin");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(root.join("prog"), b"\0asm\x01\0\0\0").unwrap();
        for name in ["echo", "sh", "sleep", "pause"] {
            std::os::unix::fs::symlink("prog", root.join(name)).unwrap();
        }
        std::fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        let runtime = hybox::oci::runtime_policy::RuntimePolicy::from_json_str(
            hybox::oci::runtime_policy::BUILTIN,
            "builtin",
        )
        .unwrap();
        if let Err(e) = hybox::oci::bundle::load(dir.path(), &runtime) {
            let msg = hybox::error_chain(&e);
            prop_assert!(!msg.trim().is_empty());
        }
    }
}

fn check_artifact(f: &Path) {
    match Artifact::detect(f) {
        Ok(a) => assert_eq!(a.path, f),
        Err(e) => {
            let msg = hybox::error_chain(&e);
            assert!(msg.contains(&f.display().to_string()), "{msg}");
        }
    }
}
