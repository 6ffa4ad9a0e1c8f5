//! The config.json mapping on the fixtures recorded from ctr, Docker and the CRI
//! (tests/fixtures/oci/), each in a bundle of its own with a tiny rootfs.

use super::*;
use serde_json::{json, Value};

const MODULE: &[u8] = b"\0asm\x01\0\0\0";

fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/fixtures/oci")
        .join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn runtime() -> RuntimePolicy {
    RuntimePolicy::from_json_str(crate::oci::runtime_policy::BUILTIN, "builtin").unwrap()
}

/// A bundle with `config` (root.path made `rootfs`) and a rootfs where /bin/echo and /bin/sh link
/// to `bin/prog`, a copy of `program`.
fn bundle(mut config: Value, program: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::write(root.join("bin/prog"), program).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        root.join("bin/prog"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::os::unix::fs::symlink("prog", root.join("bin/echo")).unwrap();
    std::os::unix::fs::symlink("/bin/prog", root.join("bin/sh")).unwrap();
    config["root"] = json!({"path": "rootfs"});
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&config).unwrap(),
    )
    .unwrap();
    dir
}

fn load_fixture(config: Value, program: &[u8]) -> Result<Container, OciError> {
    let b = bundle(config, program);
    load(b.path(), &runtime())
}

fn refused_field(r: Result<Container, OciError>) -> String {
    match r {
        Err(OciError::Refused { field, .. }) => field,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

fn elf() -> Option<Vec<u8>> {
    std::fs::read("/bin/busybox").ok()
}

#[test]
fn ctr_run_maps_onto_a_native_policy() {
    let Some(busybox) = elf() else {
        eprintln!("skipped: no /bin/busybox (busybox-static) to stand in for an ELF");
        return;
    };
    let c = load_fixture(fixture("ctr-run.json"), &busybox).unwrap();
    assert_eq!(c.backend(), Backend::Native);
    assert_eq!(c.argv0, "echo");
    assert!(c.program.ends_with("rootfs/bin/prog"), "{:?}", c.program);
    assert_eq!(c.policy.args, vec!["hello".to_string()]);
    assert_eq!(c.policy.filesystem.workdir, Path::new("/tmp"));
    assert_eq!(c.policy.native.uid, 0);
    assert_eq!(c.policy.native.rlimits.nofile, 1024);
    assert_eq!(c.policy.native.rootfs, Rootfs::Dir(c.rootfs.clone()));
    assert!(c.policy.env.contains_key("PATH"));
    assert!(c.policy.filesystem.mounts.is_empty());
    assert_eq!(c.cgroups_path.as_deref(), Some("/hybox-test/ctr-run"));
    assert!(c.ignored.iter().any(|i| i.starts_with("root.readonly")));
}

#[test]
fn a_wasm_program_gets_the_rootfs_as_a_read_only_preopen() {
    let mut config = fixture("ctr-run.json");
    config["process"]["args"] = json!(["echo", "a", "b"]);
    let c = load_fixture(config, MODULE).unwrap();
    assert_eq!(c.backend(), Backend::Wasm);
    assert_eq!(c.argv0, "echo");
    assert_eq!(c.policy.args, vec!["a".to_string(), "b".to_string()]);
    let root = &c.policy.filesystem.mounts[0];
    assert_eq!(
        (root.guest.as_path(), root.mode),
        (Path::new("/"), Access::Ro)
    );
}

#[test]
fn docker_limits_map_onto_the_envelope() {
    let mut config = fixture("docker-run-memory.json");
    config["process"]["args"] = json!(["/bin/sh"]);
    // Docker's binds of /etc/{hosts,hostname,resolv.conf} are writable: beyond the default policy.
    let binds: Vec<Value> = config["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["type"] != "bind")
        .cloned()
        .collect();
    config["mounts"] = json!(binds);
    let c = load_fixture(config, MODULE).unwrap();
    assert_eq!(c.policy.resources.memory, Size(67_108_864));
}

#[test]
fn writable_host_binds_are_refused_by_the_default_policy() {
    let mut config = fixture("docker-run.json");
    config["process"]["args"] = json!(["/bin/sh"]);
    let field = refused_field(load_fixture(config, MODULE));
    assert!(
        field.starts_with("mounts[") && field.ends_with("].source"),
        "{field}"
    );
}

#[test]
fn privileged_requests_are_refused_naming_the_field() {
    let base = fixture("ctr-run.json");
    let mut c = base.clone();
    c["process"]["capabilities"]["bounding"]
        .as_array_mut()
        .unwrap()
        .push(json!("CAP_SYS_ADMIN"));
    assert_eq!(
        refused_field(load_fixture(c, MODULE)),
        "process.capabilities.bounding"
    );

    let mut c = base.clone();
    c["linux"]["namespaces"][4] = json!({"type": "network", "path": "/proc/1/ns/net"});
    assert_eq!(
        refused_field(load_fixture(c, MODULE)),
        "linux.namespaces[4].path"
    );

    let mut c = base.clone();
    c["linux"]["namespaces"].as_array_mut().unwrap().remove(4);
    assert_eq!(refused_field(load_fixture(c, MODULE)), "linux.namespaces");

    let mut c = base.clone();
    c["process"]["terminal"] = json!(true);
    assert!(
        load_fixture(c, MODULE)
            .expect("a terminal is accepted")
            .terminal
    );

    let mut c = base.clone();
    c["linux"]["resources"]["memory"] = json!({"limit": 64_i64 << 30});
    assert_eq!(
        refused_field(load_fixture(c, MODULE)),
        "linux.resources.memory.limit"
    );

    let mut c = base.clone();
    c["hooks"] = json!({"prestart": [{"path": "/bin/true"}]});
    assert_eq!(refused_field(load_fixture(c, MODULE)), "hooks");

    // Docker's network hook is accepted, not run, and listed; the same args elsewhere are not.
    let setkey = json!([{"path": "/proc/1/exe", "args": ["libnetwork-setkey", "-exec-root=/x", "id", "ctl"]}]);
    let mut c = base.clone();
    c["hooks"] = json!({"prestart": setkey});
    let ok = load_fixture(c, MODULE).expect("Docker's network hook is accepted");
    assert!(
        ok.ignored.iter().any(|i| i.contains("libnetwork-setkey")),
        "{:?}",
        ok.ignored
    );
    let mut c = base.clone();
    c["hooks"] = json!({"poststart": setkey});
    assert_eq!(refused_field(load_fixture(c, MODULE)), "hooks");

    let mut c = base.clone();
    c["process"]["args"] = json!(["nonexistent"]);
    assert_eq!(refused_field(load_fixture(c, MODULE)), "process.args[0]");
}

#[test]
fn a_cri_container_whose_pod_is_gone_is_refused_naming_the_path() {
    // The recorded pod's pause process (pid 20809) is not this machine's: its namespace files
    // cannot be opened.
    let mut config = fixture("cri-container.json");
    config["process"]["args"] = json!(["/bin/sh"]);
    config["linux"]["namespaces"][1]["path"] = json!("/nonexistent/ns/ipc");
    assert_eq!(
        refused_field(load_fixture(config, MODULE)),
        "linux.namespaces[1].path"
    );
}

#[test]
fn pid_mount_user_and_cgroup_paths_are_refused_naming_the_field() {
    for (typ, name) in [
        ("pid", "pid"),
        ("mount", "mount"),
        ("user", "user"),
        ("cgroup", "cgroup"),
    ] {
        let mut c = fixture("ctr-run.json");
        let list = c["linux"]["namespaces"].as_array_mut().unwrap();
        list.push(json!({"type": typ, "path": "/proc/self/ns/x"}));
        let i = list.len() - 1;
        match load_fixture(c, MODULE) {
            Err(OciError::Refused { field, message }) => {
                assert_eq!(field, format!("linux.namespaces[{i}].path"));
                assert!(
                    message.contains(&format!("own {name} namespace")),
                    "{message}"
                );
            }
            other => panic!("{typ}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn the_hosts_namespaces_are_not_joined() {
    for (i, typ, file) in [(1, "ipc", "ipc"), (2, "uts", "uts"), (4, "network", "net")] {
        let mut c = fixture("ctr-run.json");
        assert_eq!(c["linux"]["namespaces"][i]["type"], typ);
        c["linux"]["namespaces"][i]["path"] = json!(format!("/proc/self/ns/{file}"));
        match load_fixture(c, MODULE) {
            Err(OciError::Refused { field, message }) => {
                assert_eq!(field, format!("linux.namespaces[{i}].path"));
                assert!(message.contains("the host's"), "{message}");
            }
            other => panic!("{typ}: expected a refusal, got {other:?}"),
        }
    }
}

#[test]
fn a_malformed_field_is_named() {
    let mut config = fixture("ctr-run.json");
    config["process"]["args"] = json!("echo hello");
    match load_fixture(config, MODULE) {
        Err(OciError::ConfigParse { field, .. }) => assert_eq!(field, "process.args"),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

#[test]
fn symlinks_resolve_inside_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/b/f"), "x").unwrap();
    std::os::unix::fs::symlink("/a/b", root.join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../a", root.join("a/up")).unwrap();
    std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
    assert_eq!(
        resolve_in_root(root, Path::new("/abs/f")).unwrap(),
        root.join("a/b/f")
    );
    assert_eq!(
        resolve_in_root(root, Path::new("/a/up/b/f")).unwrap(),
        root.join("a/b/f")
    );
    assert_eq!(
        resolve_in_root(root, Path::new("/../../a/b/f")).unwrap(),
        root.join("a/b/f")
    );
    assert!(resolve_in_root(root, Path::new("/loop")).is_err());
}

#[test]
fn a_cri_containers_dev_binds_are_left_out() {
    let mut config = fixture("cri-container.json");
    config["process"]["args"] = json!(["/bin/sh"]);
    // Only what this test is about: the pod's namespaces and its /etc files are other tests'.
    for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
        ns.as_object_mut().unwrap().remove("path");
    }
    let mounts = config["mounts"].as_array_mut().unwrap();
    mounts.retain(|m| !m["destination"].as_str().unwrap().starts_with("/etc/"));
    mounts.push(
        json!({"destination": "/dev/termination-log", "type": "bind",
        "source": "/var/lib/kubelet/pods/uid/containers/app/0", "options": ["rbind", "rw"]}),
    );
    let c = load_fixture(config, MODULE).expect("a CRI container with its /dev binds");
    for d in ["/dev/shm", "/dev/termination-log"] {
        assert!(
            c.ignored
                .iter()
                .any(|i| i.contains(&format!("bind at {d} from"))),
            "{d}: {:?}",
            c.ignored
        );
    }
    // Any other bind under /dev is still refused.
    let mut config = fixture("ctr-run.json");
    config["process"]["args"] = json!(["/bin/sh"]);
    config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/dev/sda", "type": "bind", "source": "/dev/sda", "options": ["rbind"]}),
    );
    assert!(refused_field(load_fixture(config, MODULE)).ends_with(".destination"));
}

#[test]
fn dockers_default_seccomp_profile_narrows_the_native_policy() {
    let Some(busybox) = elf() else { return };
    // Docker's default profile as dockerd rendered it into the recorded config.json (its other
    // fields, volumes, are covered elsewhere).
    let mut config = fixture("ctr-run.json");
    config["linux"]["seccomp"] = fixture("docker-run.json")["linux"]["seccomp"].clone();
    let c = load_fixture(config.clone(), &busybox).unwrap();
    let p = c.policy.native.seccomp.profile.as_ref().expect("a profile");
    assert_eq!(p.default_action, crate::policy::ProfileAction::Errno(1));
    assert!(p
        .rules
        .iter()
        .any(|r| r.names.iter().any(|n| n == "personality") && !r.args.is_empty()));
    // It compiles (names of other arches and newer kernels skipped) into one more program.
    assert!(!crate::backend::seccomp_profile::compile(p)
        .unwrap()
        .is_empty());
    assert!(c
        .ignored
        .iter()
        .any(|i| i.starts_with("linux.seccomp.architectures")));
    // A wasm guest makes no syscalls: the profile is listed as ignored, not applied.
    let w = load_fixture(config, MODULE).unwrap();
    assert!(w.policy.native.seccomp.profile.is_none());
    assert!(w
        .ignored
        .iter()
        .any(|i| i.starts_with("linux.seccomp: a wasm guest")));
}

#[test]
fn seccomp_profile_refusals_name_the_field() {
    let with = |seccomp: Value| {
        let mut c = fixture("ctr-run.json");
        c["linux"]["seccomp"] = seccomp;
        c
    };
    let allow = |n: &str| json!({"names": [n], "action": "SCMP_ACT_ALLOW"});
    let mut rules: Vec<Value> = ["read", "write", "close"].map(allow).to_vec();
    rules.push(json!({"names": ["ioctl"], "action": "SCMP_ACT_NOTIFY"}));
    let c = with(json!({"defaultAction": "SCMP_ACT_ERRNO", "syscalls": rules}));
    assert_eq!(
        refused_field(load_fixture(c, MODULE)),
        "linux.seccomp.syscalls[3].action"
    );
    let c = with(json!({"defaultAction": "SCMP_ACT_TRACE"}));
    assert_eq!(
        refused_field(load_fixture(c, MODULE)),
        "linux.seccomp.defaultAction"
    );
    let c = with(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_ERRNO", "errnoRet": 5000}]}));
    assert_eq!(
        refused_field(load_fixture(c, MODULE)),
        "linux.seccomp.syscalls[0].errnoRet"
    );
    let c = with(json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        {"names": ["read"], "action": "SCMP_ACT_KILL", "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}));
    assert_eq!(
        refused_field(load_fixture(c, MODULE)),
        "linux.seccomp.syscalls[0].args[0].index"
    );
    // Unknown actions, operators and arches are refused by the parser, with their path.
    for (seccomp, path) in [
        (
            json!({"defaultAction": "SCMP_ACT_MAYBE"}),
            "linux.seccomp.defaultAction",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"]}),
            "linux.seccomp.architectures[0]",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["read"],
                "action": "SCMP_ACT_KILL", "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_ABOUT"}]}]}),
            "linux.seccomp.syscalls[0].args[0].op",
        ),
    ] {
        match load_fixture(with(seccomp), MODULE) {
            Err(OciError::ConfigParse { field, .. }) => assert_eq!(field, path),
            other => panic!("expected a parse error at {path}, got {other:?}"),
        }
    }
}

#[test]
fn seccomp_actions_and_flags_map() {
    let Some(busybox) = elf() else { return };
    let mut c = fixture("ctr-run.json");
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "flags": ["SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [
            {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["kill"], "action": "SCMP_ACT_KILL"},
            {"names": ["tkill"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["tgkill"], "action": "SCMP_ACT_TRAP"},
            {"names": ["uname"], "action": "SCMP_ACT_LOG"},
            {"names": ["clone"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}]}
        ]
    });
    let c = load_fixture(c, &busybox).unwrap();
    use crate::policy::{ProfileAction as A, ProfileOp};
    let p = c.policy.native.seccomp.profile.unwrap();
    assert_eq!(p.default_action, A::Errno(38));
    let actions: Vec<A> = p.rules.iter().map(|r| r.action).collect();
    assert_eq!(
        actions,
        [
            A::Allow,
            A::Errno(1),
            A::KillThread,
            A::KillProcess,
            A::Trap,
            A::Log,
            A::Allow
        ]
    );
    assert_eq!(p.rules[6].args[0].op, ProfileOp::MaskedEq);
    assert_eq!(p.rules[6].args[0].value, 2114060288);
    assert!(c
        .ignored
        .iter()
        .any(|i| i.contains("SECCOMP_FILTER_FLAG_SPEC_ALLOW")));
    assert!(crate::backend::seccomp_profile::compile(&p).is_ok());
}
