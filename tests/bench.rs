//! `hybox bench` with tiny settings: the JSON is complete and consistent (every applicable mode present,
//! ratios computed from the same run's medians), and the SVG chart is written.

#[path = "common/mod.rs"]
mod common;

#[test]
fn tiny_bench_json_is_complete_and_consistent() {
    if !common::privileged("tiny_bench_json_is_complete_and_consistent") {
        return;
    }
    common::examples_out();
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("chart.svg");
    let out = common::hybox()
        .args(["bench", "--runs", "3", "--warmup", "1", "--json", "--svg"])
        .arg(&svg)
        .arg(common::repo().join("examples/hello"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["runs"], 3);
    // Isolated runs by default: a lone run is what a CLI user makes.
    assert_eq!(
        v["pacing"],
        serde_json::json!({"mode": "isolated", "pause_ms": 200})
    );
    let results = v["results"].as_array().unwrap();
    let modes: Vec<&str> = results
        .iter()
        .map(|r| r["mode"].as_str().unwrap())
        .collect();
    for want in ["bare", "native", "wasm-cold"] {
        assert!(
            modes.contains(&want),
            "mode {want} missing: {modes:?}; skipped: {}",
            v["skipped"]
        );
    }
    // Every mode that is absent is listed as skipped, with a reason.
    for m in ["wasm-warm", "wasm-hardened"] {
        let skipped = v["skipped"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s[0].as_str().unwrap().ends_with(m));
        assert!(
            modes.contains(&m) ^ skipped,
            "{m} is neither measured nor skipped with a reason"
        );
    }
    let bare = results.iter().find(|r| r["mode"] == "bare").unwrap()["wall_us"]["median"]
        .as_f64()
        .unwrap();
    for r in results {
        assert_eq!(
            r["samples"].as_array().unwrap().len(),
            3,
            "{}: 3 measured samples",
            r["mode"]
        );
        let median = r["wall_us"]["median"].as_f64().unwrap();
        let ratio = r["ratio_to_bare"].as_f64().unwrap();
        assert!(
            (ratio - median / bare).abs() < 1e-9,
            "{}: ratio from the same run's medians",
            r["mode"]
        );
        assert!(r["wall_us"]["p95"].as_u64() >= r["wall_us"]["median"].as_u64());
        if r["mode"] != "bare" {
            assert!(
                r["median"]["peak_memory_bytes"].as_u64().unwrap() > 0,
                "{}: usage from the envelope",
                r["mode"]
            );
        }
    }
    let chart = std::fs::read_to_string(&svg).unwrap();
    assert!(
        chart.starts_with("<svg") && chart.contains("hybox bench"),
        "chart written"
    );
}

#[test]
fn back_to_back_is_kept_and_printed() {
    if !common::privileged("back_to_back_is_kept_and_printed") {
        return;
    }
    let hello = common::native_guest("hello");
    let bench = |extra: &[&str]| {
        let out = common::hybox()
            .args(["bench", "--runs", "1", "--warmup", "0"])
            .args(extra)
            .arg(&hello)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let table = bench(&["--back-to-back"]);
    assert!(table.contains(", back-to-back;"), "{table}");
    let json: serde_json::Value =
        serde_json::from_str(&bench(&["--pause", "0", "--json"])).unwrap();
    assert_eq!(json["pacing"], serde_json::json!({"mode": "back-to-back"}));
    let md = bench(&["--pause", "50ms", "--markdown"]);
    assert!(
        md.contains("isolated (50 ms pause before each run)"),
        "{md}"
    );
}
