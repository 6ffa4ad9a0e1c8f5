//! deploy/kubernetes as a cluster and a node would read it: every manifest through kubectl's own
//! decoder (offline) and against the Kubernetes 1.32 API schema (kubernetes-validate, strict: an
//! unknown field fails); the containerd snippets through containerd's own config loader; the
//! installer into a scratch root, twice (idempotent), with a stock `containerd config default`.
//! Needs no root and no cluster.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn deploy() -> PathBuf {
    common::repo().join("deploy/kubernetes")
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn ok(cmd: &mut Command) -> String {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(o.status.success(), "{cmd:?}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn manifests() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(deploy())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    v.sort();
    assert!(v.len() >= 3, "manifests: {v:?}");
    v
}

#[test]
fn manifests_decode_with_kubectl() {
    let mut names = String::new();
    for m in manifests() {
        // `apply --dry-run=client` asks an API server for its resource list first; `--local`
        // decodes with kubectl's built-in scheme and needs none.
        names += &ok(Command::new("kubectl")
            .args([
                "annotate",
                "--local",
                "--dry-run=client",
                "-o",
                "name",
                "-f",
            ])
            .arg(&m)
            .arg("hybox.test/checked=true"));
    }
    for want in [
        "runtimeclass.node.k8s.io/hybox",
        "pod/hybox-mixed",
        "daemonset.apps/hybox-installer",
    ] {
        assert!(names.lines().any(|l| l == want), "{want} not in {names}");
    }
}

#[test]
fn manifests_match_the_kubernetes_schema() {
    let local = common::repo().join("target/tools/kubernetes-validate/bin/kubernetes-validate");
    let tool = if local.exists() {
        local
    } else {
        PathBuf::from("kubernetes-validate")
    };
    let o = Command::new(&tool)
        .args(["--strict", "-k", "1.32.0"])
        .args(manifests())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup installs it)", tool.display()));
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(out.matches(" passed ").count(), manifests().len(), "{out}");
}

#[test]
fn runtimeclass_and_example_pod_fit_together() {
    let rc = std::fs::read_to_string(deploy().join("runtimeclass.yaml")).unwrap();
    assert!(rc.contains("\nhandler: hybox\n"), "{rc}");
    assert!(
        rc.contains("podFixed:") && rc.contains("nodeSelector:"),
        "{rc}"
    );
    let pod = std::fs::read_to_string(deploy().join("example-pod.yaml")).unwrap();
    assert!(pod.contains("runtimeClassName: hybox"), "{pod}");
    assert!(
        pod.contains("- name: wasm") && pod.contains("- name: native"),
        "{pod}"
    );
}

#[test]
fn the_node_runtime_policy_is_valid_and_grants_the_pod_files() {
    let p = deploy().join("runtime-policy.json");
    let out = ok(common::hybox().args(["policy", "check"]).arg(&p));
    assert!(out.contains(": ok"), "{out}");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    assert_eq!(v["network"], "loopback");
    let hosts: Vec<&str> = v["filesystem"]["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["host"].as_str().unwrap())
        .collect();
    for want in [
        "/var/lib/containerd/io.containerd.grpc.v1.cri/sandboxes",
        "/run/containerd/io.containerd.grpc.v1.cri/sandboxes",
        "/var/lib/kubelet/pods",
    ] {
        assert!(hosts.contains(&want), "{want} not granted: {hosts:?}");
    }
}

/// containerd's `config dump` of a config: what it makes of the file, defaults filled in.
fn dump(config: &Path) -> String {
    ok(Command::new("containerd")
        .arg("--config")
        .arg(config)
        .args(["config", "dump"]))
}

#[test]
fn containerd_reads_the_v2_snippet() {
    // The snippet is appended to a config.toml, which says its version.
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("config.toml");
    let snippet = std::fs::read_to_string(deploy().join("containerd-config-v2.toml")).unwrap();
    std::fs::write(&conf, format!("version = 2\n{snippet}")).unwrap();
    let d = dump(&conf);
    let hybox = d
        .split("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.hybox]")
        .nth(1)
        .unwrap_or_else(|| panic!("no hybox runtime in:\n{d}"));
    for want in [
        r#"runtime_type = "io.containerd.runc.v2""#,
        r#"pod_annotations = ["module.wasm.image/variant", "run.oci.handler"]"#,
        r#"container_annotations = ["module.wasm.image/variant", "run.oci.handler"]"#,
        r#"BinaryName = "/usr/local/bin/hybox-runc""#,
        "SystemdCgroup = false",
    ] {
        assert!(hybox.contains(want), "{want} not in:\n{hybox}");
    }
    // containerd 1.6 cannot read v3; the v3 snippet names the 2.x plugin and the same runtime.
    let v3 = std::fs::read_to_string(deploy().join("containerd-config-v3.toml")).unwrap();
    assert!(v3.contains("(config version 3)"));
    assert!(v3.contains(r#"[plugins."io.containerd.cri.v1.runtime".containerd.runtimes.hybox]"#));
    for want in ["pod_annotations", "container_annotations", "BinaryName"] {
        assert!(v3.contains(want), "{want} not in the v3 snippet");
    }
}

#[test]
fn installer_puts_hybox_on_a_node() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    std::fs::create_dir_all(r.join("etc/containerd")).unwrap();
    let stock = ok(Command::new("containerd").args(["config", "default"]));
    std::fs::write(r.join("etc/containerd/config.toml"), &stock).unwrap();
    let policy = deploy().join("runtime-policy.json");
    for _ in 0..2 {
        ok(Command::new("sh")
            .arg(deploy().join("install.sh"))
            .arg(env!("CARGO_BIN_EXE_hybox"))
            .arg(&policy)
            .arg(r)
            .env("HYBOX_NO_RESTART", "1"));
    }
    // The hybox-runc binary beside the hybox binary is installed beside it too.
    let bin = r.join("usr/local/bin");
    assert_eq!(
        std::fs::read(bin.join("hybox-runc")).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_hybox-runc")).unwrap()
    );
    assert_eq!(
        std::fs::read(bin.join("hybox")).unwrap(),
        std::fs::read(env!("CARGO_BIN_EXE_hybox")).unwrap()
    );
    assert_eq!(
        std::fs::read(r.join("etc/hybox/runtime.json")).unwrap(),
        std::fs::read(&policy).unwrap()
    );
    // The stock config now has the handler once (a re-install replaces it), and containerd reads
    // it with everything it had before.
    let conf = std::fs::read_to_string(r.join("etc/containerd/config.toml")).unwrap();
    assert_eq!(conf.matches("# BEGIN hybox").count(), 1, "{conf}");
    assert!(
        conf.starts_with(&stock),
        "install.sh changed the config it found:\n{conf}"
    );
    let d = dump(&r.join("etc/containerd/config.toml"));
    assert!(
        d.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.hybox.options]")
            && d.contains(r#"BinaryName = "/usr/local/bin/hybox-runc""#)
            && d.contains(r#"pod_annotations = ["module.wasm.image/variant", "run.oci.handler"]"#),
        "{d}"
    );
    // What the runc handler had is still there.
    assert!(d.contains("[plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]"));
}
