//! The per-run hot path before any sandbox exists: parse + validate a policy, detect a workload,
//! decide the backend, and compile the native sandbox's seccomp filters. `cargo bench -p hybox --bench policy`.

use criterion::{criterion_group, criterion_main, Criterion};
use hybox::decide::decide;
use hybox::policy::Policy;
use hybox::workload::Workload;

fn policy_parse_and_decide(c: &mut Criterion) {
    let repo = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let text = std::fs::read_to_string(repo.join("policies/untrusted-plugin.json")).unwrap();
    c.bench_function("policy/parse_validate", |b| {
        b.iter(|| {
            Policy::from_json_str(std::hint::black_box(&text), "untrusted-plugin.json").unwrap()
        })
    });
    // The native sandbox's seccomp filters, compiled by the runner for each run's plan.
    c.bench_function("native/seccomp_compile", |b| {
        b.iter(|| hybox::backend::seccomp::compile(std::hint::black_box(&[]), false).unwrap())
    });
    let policy = Policy::from_json_str(&text, "untrusted-plugin.json").unwrap();
    let bundle = repo.join("examples/hello");
    if !bundle.join("hello.wasm").exists() {
        eprintln!("examples not built (examples/build.sh): skipping detect/decide");
        return;
    }
    c.bench_function("workload/detect_bundle", |b| {
        b.iter(|| Workload::detect(&bundle).unwrap())
    });
    let workload = Workload::detect(&bundle).unwrap();
    c.bench_function("decide", |b| {
        b.iter(|| decide(&workload, &policy, None).unwrap())
    });
}

criterion_group!(benches, policy_parse_and_decide);
criterion_main!(benches);
