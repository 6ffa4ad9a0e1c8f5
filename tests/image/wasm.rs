//! Images whose program is a wasm module or component run on the wasm backend: the image's merged
//! root as a read-only preopen at `/`, the writable layer as `/tmp`, the config's env and args.

use std::fs;

use super::oci_image::{Config, Image};
use super::{base, common, hybox, text};

fn wasm(name: &str) -> Vec<u8> {
    fs::read(common::wasm_guest(name)).unwrap()
}

fn report(o: &std::process::Output) -> serde_json::Value {
    let out = String::from_utf8_lossy(&o.stdout);
    serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap()
}

#[test]
fn a_wasm_image_runs_on_the_wasm_backend_with_its_layers_as_the_root() {
    if !common::privileged("a_wasm_image_runs_on_the_wasm_backend_with_its_layers_as_the_root") {
        return;
    }
    let b = base();
    let st = b.path().join("store");
    let img = Image::new("hybox.test/wasm-files:latest")
        .file("app/files.wasm", wasm("files"), 0o755)
        .file("etc/in", b"one\ntwo\nthree\n".to_vec(), 0o644)
        .new_layer()
        .file("bin/env.wasm", wasm("env"), 0o755)
        .config(Config {
            entrypoint: vec!["/app/files.wasm".into()],
            cmd: vec!["/etc/in".into(), "/tmp/out".into()],
            ..Config::default()
        });
    let image = b.path().join("wasm-files");
    img.write_layout(&image).unwrap();
    let image = image.to_str().unwrap();
    // It reads a file from the image's layer and writes to its writable /tmp.
    let o = hybox(&st, &["run", "--json", image]);
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with("3 lines, 14 bytes\n"), "{}", text(&o));
    let r = report(&o);
    assert_eq!(r["backend"], "wasm", "{r}");
    assert_eq!(r["image"]["program"], "/app/files.wasm");
    assert_eq!(r["image"]["writable_layer"]["full"], false);
    // The root is read-only: the write fails inside the guest, with files' own exit code.
    let o = hybox(&st, &["run", image, "--", "/etc/in", "/etc/out"]);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    // A missing input is the guest's exit code too (3), not a hybox error.
    let o = hybox(&st, &["run", image, "--", "/etc/nope", "/tmp/out"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    // Nothing written to /tmp survives the run.
    let o = hybox(&st, &["run", image, "--", "/tmp/out", "/tmp/out2"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
}

#[test]
fn a_wasm_image_gets_the_config_env_and_args_and_explain_says_wasm() {
    if !common::privileged("a_wasm_image_gets_the_config_env_and_args_and_explain_says_wasm") {
        return;
    }
    let b = base();
    let st = b.path().join("store");
    let img = Image::new("hybox.test/wasm-env:latest")
        .file("bin/env.wasm", wasm("env"), 0o755)
        .config(Config {
            entrypoint: vec!["env.wasm".into()],
            cmd: vec!["from-cmd".into()],
            env: vec![
                "PATH=/bin".into(),
                "FROM_IMAGE=image".into(),
                "BY_FLAG=image".into(),
            ],
            ..Config::default()
        });
    let image = b.path().join("wasm-env");
    img.write_layout(&image).unwrap();
    let image = image.to_str().unwrap();
    let o = hybox(
        &st,
        &["run", "-e", "BY_FLAG=flag", image, "--", "from-flag"],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "arg[1]=from-flag",
        "env FROM_IMAGE=image",
        "env BY_FLAG=flag",
    ] {
        assert!(out.contains(want), "{want}: {}", text(&o));
    }
    assert!(!out.contains("from-cmd"), "{out}");
    let policy = b.path().join("p.json");
    fs::write(&policy, r#"{"version": 1}"#).unwrap();
    let o = hybox(&st, &["explain", "--json", policy.to_str().unwrap(), image]);
    assert!(o.status.success(), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["backend"], "wasm", "{e}");
    let why = e["reasons"][0].as_str().unwrap();
    assert!(
        why.contains("/bin/env.wasm")
            && why.contains("by its bytes, wasm module")
            && why.contains("wasm backend"),
        "{why}"
    );
    // A native image is explained as native, for the same reason.
    let img = Image::new("hybox.test/native-hello:latest")
        .file("hello", super::guest("hello"), 0o755)
        .config(Config {
            entrypoint: vec!["/hello".into()],
            ..Config::default()
        });
    let native = b.path().join("native");
    img.write_layout(&native).unwrap();
    let o = hybox(
        &st,
        &[
            "explain",
            "--json",
            policy.to_str().unwrap(),
            native.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["backend"], "native", "{e}");
    assert!(e["reasons"][0].as_str().unwrap().contains("ELF"), "{e}");
}
