//! Policy parsing: every field, good and bad, asserting the exact error text a user sees.

use hybox::policy::{
    Access, Backend, LandlockMode, Network, OnUnenforceable, Policy, Rootfs, Trust,
};
use hybox::units::{Duration, Size};

/// (policy text, the exact error). Each line exercises one field or rule.
const BAD: &[(&str, &str)] = &[
    (
        r#"{"version": 2}"#,
        r#"bad.json:1:14: version: invalid value: integer `2`, expected 1 (the only policy version this hybox reads)"#,
    ),
    (
        r#"{"version": 1, "bogus": true}"#,
        r#"bad.json:1:22: bogus: unknown field `bogus`, expected one of `version`, `description`, `backend`, `allowed_backends`, `trust`, `resources`, `filesystem`, `network`, `env`, `inherit_env`, `args`, `wasm`, `native`, `http`, `on_unenforceable`"#,
    ),
    (
        r#"{"version": 1, "backend": "vm"}"#,
        r#"bad.json:1:30: backend: unknown variant `vm`, expected one of `auto`, `wasm`, `native`"#,
    ),
    (
        r#"{"version": 1, "allowed_backends": []}"#,
        r#"bad.json: allowed_backends: expected at least one backend, found an empty list"#,
    ),
    (
        r#"{"version": 1, "allowed_backends": ["wasm", "wasm"]}"#,
        r#"bad.json: allowed_backends[1]: "wasm" is listed twice"#,
    ),
    (
        r#"{"version": 1, "backend": "native", "allowed_backends": ["wasm"]}"#,
        r#"bad.json: backend: "native" is not in allowed_backends ["wasm"]"#,
    ),
    (
        r#"{"version": 1, "trust": "maybe"}"#,
        r#"bad.json:1:31: trust: unknown variant `maybe`, expected `untrusted` or `trusted`"#,
    ),
    (
        r#"{"version": 1, "resources": {"memory": "12Q"}}"#,
        r#"bad.json:1:44: resources.memory: invalid value: string "12Q", expected a byte count: an integer, or a string like "512K", "128M", "2G""#,
    ),
    (
        r#"{"version": 1, "resources": {"memory": "1M"}}"#,
        r#"bad.json:1:44: resources.memory: invalid value: integer `1048576`, expected at least 4M (4194304 bytes)"#,
    ),
    (
        r#"{"version": 1, "resources": {"memory": -5}}"#,
        r#"bad.json:1:41: resources.memory: invalid value: integer `-5`, expected a byte count: an integer, or a string like "512K", "128M", "2G""#,
    ),
    (
        r#"{"version": 1, "resources": {"cpus": 0}}"#,
        r#"bad.json:1:39: resources.cpus: invalid value: integer `0`, expected a number of cores in (0, 1024], e.g. 0.5"#,
    ),
    (
        r#"{"version": 1, "resources": {"cpus": 2000}}"#,
        r#"bad.json:1:42: resources.cpus: invalid value: integer `2000`, expected a number of cores in (0, 1024], e.g. 0.5"#,
    ),
    (
        r#"{"version": 1, "resources": {"cpus": "half"}}"#,
        r#"bad.json:1:43: resources.cpus: invalid type: string "half", expected a number of cores in (0, 1024], e.g. 0.5"#,
    ),
    (
        r#"{"version": 1, "resources": {"pids": 0}}"#,
        r#"bad.json:1:39: resources.pids: invalid value: integer `0`, expected an integer in 1..=4194304"#,
    ),
    (
        r#"{"version": 1, "resources": {"timeout": "ten seconds"}}"#,
        r#"bad.json:1:53: resources.timeout: invalid value: string "ten seconds", expected a duration: seconds as a number, or a string like "500ms", "10s", "2m""#,
    ),
    (
        r#"{"version": 1, "resources": {"timeout": 0}}"#,
        r#"bad.json:1:42: resources.timeout: invalid value: 0s, expected a duration greater than 0 and at most 24h"#,
    ),
    (
        r#"{"version": 1, "resources": {"timeout": "25h"}}"#,
        r#"bad.json:1:46: resources.timeout: invalid value: 90000s, expected a duration greater than 0 and at most 24h"#,
    ),
    (
        r#"{"version": 1, "resources": {"cpu_time": "1ms"}}"#,
        r#"bad.json:1:47: resources.cpu_time: invalid value: 1ms, expected a CPU-time budget between 10ms and 24h"#,
    ),
    (
        r#"{"version": 1, "resources": {"stdout_max": "lots"}}"#,
        r#"bad.json:1:49: resources.stdout_max: invalid value: string "lots", expected a byte count: an integer, or a string like "512K", "128M", "2G""#,
    ),
    (
        r#"{"version": 1, "resources": {"swap": "1G"}}"#,
        r#"bad.json:1:35: resources.swap: unknown field `swap`, expected one of `memory`, `cpus`, `pids`, `timeout`, `cpu_time`, `stdout_max`, `stderr_max`, `io`"#,
    ),
    (
        r#"{"version": 1, "filesystem": {"mounts": [{"host": "relative/dir", "guest": "/data"}]}}"#,
        r#"bad.json: filesystem.mounts[0].host: expected an absolute host path, found "relative/dir""#,
    ),
    (
        r#"{"version": 1, "filesystem": {"mounts": [{"host": "/srv/../etc", "guest": "/data"}]}}"#,
        r#"bad.json: filesystem.mounts[0].host: expected a path without '.' or '..', found "/srv/../etc""#,
    ),
    (
        r#"{"version": 1, "filesystem": {"mounts": [{"host": "/proc/self/fd/3", "guest": "/data"}]}}"#,
        r#"bad.json: filesystem.mounts[0].host: expected a path outside /proc (magic links are refused), found "/proc/self/fd/3""#,
    ),
    (
        r#"{"version": 1, "filesystem": {"mounts": [{"host": "/srv", "guest": "data"}]}}"#,
        r#"bad.json: filesystem.mounts[0].guest: expected an absolute path inside the sandbox, found "data""#,
    ),
    (
        r#"{"version": 1, "filesystem": {"mounts": [{"host": "/srv", "guest": "/proc/x"}]}}"#,
        r#"bad.json: filesystem.mounts[0].guest: expected a path outside /proc (hybox builds /proc itself), found /proc/x"#,
    ),
    (
        r#"{"version": 1, "filesystem": {"mounts": [{"host": "/srv", "guest": "/d"}, {"host": "/opt", "guest": "/d"}]}}"#,
        r#"bad.json: filesystem.mounts[1].guest: /d is already mounted by filesystem.mounts[0]"#,
    ),
    (
        r#"{"version": 1, "filesystem": {"mounts": [{"host": "/srv", "guest": "/d", "mode": "rx"}]}}"#,
        r#"bad.json:1:85: filesystem.mounts[0].mode: unknown variant `rx`, expected `ro` or `rw`"#,
    ),
    (
        r#"{"version": 1, "filesystem": {"mounts": [{"guest": "/d"}]}}"#,
        r#"bad.json:1:56: filesystem.mounts[0]: missing field `host`"#,
    ),
    (
        r#"{"version": 1, "filesystem": {"tmp": {"size": "1K"}}}"#,
        r#"bad.json: filesystem.tmp.size: expected at least 64K, found 1K"#,
    ),
    (
        r#"{"version": 1, "filesystem": {"workdir": "work"}}"#,
        r#"bad.json: filesystem.workdir: expected an absolute path inside the sandbox, found "work""#,
    ),
    (
        r#"{"version": 1, "network": "internet"}"#,
        r#"bad.json:1:36: network: unknown variant `internet`, expected `none` or `loopback`"#,
    ),
    (
        r#"{"version": 1, "env": {"A=B": "x"}}"#,
        r#"bad.json: env.A=B: expected a variable name without '=' or NUL, found "A=B""#,
    ),
    (
        r#"{"version": 1, "env": {"A": 5}}"#,
        r#"bad.json:1:29: env.A: invalid type: integer `5`, expected a string"#,
    ),
    (
        r#"{"version": 1, "inherit_env": [""]}"#,
        r#"bad.json: inherit_env[0]: expected a variable name without '=' or NUL, found """#,
    ),
    (
        r#"{"version": 1, "args": "not-a-list"}"#,
        r#"bad.json:1:35: args: invalid type: string "not-a-list", expected a sequence"#,
    ),
    (
        r#"{"version": 1, "wasm": {"max_stack": "1K"}}"#,
        r#"bad.json:1:42: wasm.max_stack: invalid value: integer `1024`, expected a stack size between 64K and 64M"#,
    ),
    (
        r#"{"version": 1, "wasm": {"fuel": -1}}"#,
        r#"bad.json:1:34: wasm.fuel: invalid value: integer `-1`, expected u64"#,
    ),
    (
        r#"{"version": 1, "wasm": {"os_sandbox": "yes"}}"#,
        r#"bad.json:1:43: wasm.os_sandbox: invalid type: string "yes", expected a boolean"#,
    ),
    (
        r#"{"version": 1, "native": {"rootfs": "alpine"}}"#,
        r#"bad.json:1:44: native.rootfs: unknown variant `alpine`, expected `host` or `dir`"#,
    ),
    (
        r#"{"version": 1, "native": {"rootfs": {"dir": "img"}}}"#,
        r#"bad.json: native.rootfs.dir: expected an absolute host path, found "img""#,
    ),
    (
        r#"{"version": 1, "native": {"hostname": "bad_host!"}}"#,
        r#"bad.json:1:50: native.hostname: invalid value: string "bad_host!", expected a hostname of at most 64 characters: letters, digits, '-' and '.'"#,
    ),
    (
        r#"{"version": 1, "native": {"seccomp": {"allow": ["ptrace"]}}}"#,
        r#"bad.json: native.seccomp.allow[0]: `ptrace` is an escape primitive and cannot be granted"#,
    ),
    (
        r#"{"version": 1, "native": {"seccomp": {"allow": ["Not A Syscall"]}}}"#,
        r#"bad.json: native.seccomp.allow[0]: expected a syscall name, found "Not A Syscall""#,
    ),
    (
        r#"{"version": 1, "native": {"landlock": "sometimes"}}"#,
        r#"bad.json:1:49: native.landlock: unknown variant `sometimes`, expected one of `required`, `best_effort`, `off`"#,
    ),
    (
        r#"{"version": 1, "native": {"rlimits": {"as": "1G"}}}"#,
        r#"bad.json:1:42: native.rlimits.as: unknown field `as`, expected one of `nofile`, `fsize`, `memlock`, `msgqueue`, `stack`"#,
    ),
    (
        r#"{"version": 1, "native": {"rlimits": {"nofile": 3}}}"#,
        r#"bad.json: native.rlimits.nofile: expected an integer in 16..=1048576, found 3"#,
    ),
    (
        r#"{"version": 1, "native": {"host_uid": 0}}"#,
        r#"bad.json: native.host_uid: expected an unprivileged host id, found 0 (the sandbox must never map to host root)"#,
    ),
    (
        r#"{"version": 1, "on_unenforceable": "ignore"}"#,
        r#"bad.json:1:43: on_unenforceable: unknown variant `ignore`, expected `fail` or `degrade`"#,
    ),
    (
        r#"{"version": 1, "resources": {"io": [{"device": "/dev/null", "write_bps": "1M"}]}}"#,
        r#"bad.json: resources.io[0].device: /dev/null is not a block device"#,
    ),
    (
        r#"{"version": 1, "resources": {"io": [{"device": "1:3", "write_iops": 0}]}}"#,
        r#"bad.json: resources.io[0].write_iops: expected at least 1 (omit the field for no limit), found 0"#,
    ),
    (
        r#"{"version": 1, "native": {"tmpfs": [{"guest": "/run", "size": "1M"}, {"guest": "/run", "size": "1M"}]}}"#,
        r#"bad.json: native.tmpfs[1].guest: /run is already mounted by native.tmpfs[0]"#,
    ),
    (
        r#"{"version": 1, "native": {"tmpfs": [{"guest": "/tmp/x", "size": "1M"}]}}"#,
        r#"bad.json: native.tmpfs[0].guest: expected a path outside /tmp (hybox builds /tmp itself), found /tmp/x"#,
    ),
    (
        r#"{"version": 1, "native": {"tmpfs": [{"guest": "/run", "size": "1M", "mode": "999"}]}}"#,
        r#"bad.json: native.tmpfs[0].mode: expected octal permission bits such as "1777" or "755", found "999""#,
    ),
    (
        r#"{"version": 1} trailing"#,
        r#"bad.json:1:16: (root): expected nothing after the policy object, found more"#,
    ),
    (
        r#"{"version": 1,"#,
        r#"bad.json:1:14: (root): EOF while parsing a value"#,
    ),
];

#[test]
fn every_bad_policy_gets_its_exact_error() {
    let mut failures = Vec::new();
    for (text, want) in BAD {
        match Policy::from_json_str(text, "bad.json") {
            Ok(_) => failures.push(format!("accepted: {text}")),
            Err(e) if e.to_string() != *want => {
                failures.push(format!("{text}\n  got:  {e}\n  want: {want}"))
            }
            Err(_) => {}
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn a_policy_using_every_field_parses() {
    let text = r#"{
      "version": 1,
      "description": "all fields",
      "backend": "native",
      "allowed_backends": ["native", "wasm"],
      "trust": "trusted",
      "resources": {"memory": 67108864, "cpus": 0.25, "pids": 10, "timeout": 2.5, "cpu_time": "1s",
                    "stdout_max": "2K", "stderr_max": 512},
      "filesystem": {"mounts": [{"host": "/srv/in", "guest": "/in"}, {"host": "/srv/out", "guest": "/out", "mode": "rw"}],
                     "tmp": {"size": "1M"}, "workdir": "/in"},
      "network": "loopback",
      "env": {"A": "1", "B": ""},
      "inherit_env": ["PATH"],
      "args": ["--x", "y"],
      "wasm": {"fuel": 1000, "max_stack": "1M", "max_table_elements": 5, "max_instances": 2, "os_sandbox": true},
      "native": {"rootfs": {"dir": "/srv/img"}, "hostname": "box-1.local", "seccomp": {"allow": ["sched_setaffinity"]},
                 "landlock": "best_effort", "rlimits": {"nofile": 32, "fsize": "1M", "memlock": 0, "msgqueue": "8K", "stack": "1M"},
                 "uid": 0, "gid": 0, "host_uid": 5000, "host_gid": 5000},
      "on_unenforceable": "degrade"
    }"#;
    let p = Policy::from_json_str(text, "all.json").unwrap();
    assert_eq!(p.backend.forced(), Some(Backend::Native));
    assert_eq!(p.trust, Trust::Trusted);
    assert_eq!(p.resources.memory, Size(64 << 20));
    assert_eq!(p.resources.cpus, 0.25);
    assert_eq!(p.resources.pids, 10);
    assert_eq!(p.resources.timeout, Duration::from_millis(2500));
    assert_eq!(p.resources.cpu_time, Some(Duration::from_secs(1)));
    assert_eq!(p.resources.stdout_max, Size(2048));
    assert_eq!(p.resources.stderr_max, Size(512));
    assert_eq!(
        p.filesystem.mounts[0].mode,
        Access::Ro,
        "read-only is the default"
    );
    assert_eq!(p.filesystem.mounts[1].mode, Access::Rw);
    assert_eq!(p.filesystem.tmp.as_ref().unwrap().size, Size(1 << 20));
    assert_eq!(p.filesystem.workdir.to_str(), Some("/in"));
    assert_eq!(p.network, Network::Loopback);
    assert_eq!(p.env.len(), 2);
    assert_eq!(p.inherit_env, ["PATH"]);
    assert_eq!(p.args, ["--x", "y"]);
    assert_eq!(p.wasm.fuel, Some(1000));
    assert_eq!(p.wasm.max_stack, Size(1 << 20));
    assert!(p.wasm.os_sandbox);
    assert_eq!(p.native.rootfs, Rootfs::Dir("/srv/img".into()));
    assert_eq!(p.native.hostname, "box-1.local");
    assert_eq!(p.native.seccomp.allow, ["sched_setaffinity"]);
    assert_eq!(p.native.landlock, LandlockMode::BestEffort);
    assert_eq!(p.native.rlimits.nofile, 32);
    assert_eq!(p.native.rlimits.msgqueue, Size(8192));
    assert_eq!(p.native.host_uid, Some(5000));
    assert_eq!(p.on_unenforceable, OnUnenforceable::Degrade);
}

#[test]
fn tmp_can_be_disabled() {
    let p =
        Policy::from_json_str(r#"{"version": 1, "filesystem": {"tmp": null}}"#, "t.json").unwrap();
    assert!(p.filesystem.tmp.is_none());
}

#[test]
fn shipped_policies_are_valid_and_described() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies");
    let mut names: Vec<String> = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let p = Policy::from_file(&path).unwrap_or_else(|e| panic!("{e}"));
        assert!(
            p.description.as_deref().is_some_and(|d| d.len() > 40),
            "{} needs a description",
            path.display()
        );
        names.push(path.file_name().unwrap().to_string_lossy().into_owned());
    }
    for want in [
        "untrusted-plugin.json",
        "serverless-function.json",
        "trusted-tool.json",
        "benchmark.json",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "policies/{want} is missing"
        );
    }
}

#[test]
fn a_missing_file_names_the_file() {
    let err = Policy::from_file("/nonexistent/p.json".as_ref()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/nonexistent/p.json: cannot read policy: No such file or directory (os error 2)"
    );
}

#[test]
fn overrides_are_range_checked_and_revalidated() {
    use hybox::policy::{Mount, Overrides};
    let p = Policy::default();
    let o = Overrides {
        cpus: Some(0.0),
        ..Default::default()
    };
    assert_eq!(
        p.with_overrides(&o).unwrap_err().to_string(),
        "command line: --cpus: expected a number of cores in (0, 1024], found 0"
    );
    let o = Overrides {
        mounts: vec![Mount {
            host: "/srv".into(),
            guest: "/dev/x".into(),
            mode: Access::Ro,
        }],
        ..Default::default()
    };
    assert_eq!(
        p.with_overrides(&o).unwrap_err().to_string(),
        "command line: filesystem.mounts[0].guest: expected a path outside /dev (hybox builds /dev itself), found /dev/x"
    );
    let o = Overrides {
        memory: Some(Size(64 << 20)),
        network: Some(Network::Loopback),
        ..Default::default()
    };
    let q = p.with_overrides(&o).unwrap();
    assert_eq!(q.resources.memory, Size(64 << 20));
    assert_eq!(q.network, Network::Loopback);
}

#[test]
fn schema_is_strict_and_covers_every_field() {
    let s = Policy::json_schema();
    assert_eq!(s["additionalProperties"], serde_json::json!(false));
    let props = s["properties"].as_object().unwrap();
    for field in [
        "version",
        "description",
        "backend",
        "allowed_backends",
        "trust",
        "resources",
        "filesystem",
        "network",
        "env",
        "inherit_env",
        "args",
        "wasm",
        "native",
        "http",
        "on_unenforceable",
    ] {
        assert!(props.contains_key(field), "schema lacks {field}");
    }
    let text = s.to_string();
    assert!(
        text.contains("\"Size\"") && text.contains("\"Duration\""),
        "units are described"
    );
}

#[test]
fn http_outbound_hosts_and_route_are_checked_and_named() {
    let p = Policy::from_json_str(
        r#"{"version": 1, "http": {"outbound_hosts": ["127.0.0.1:8080", "[::1]:80"], "route": "/api/..."}}"#,
        "p.json",
    )
    .unwrap();
    assert_eq!(p.http.outbound_hosts, ["127.0.0.1:8080", "[::1]:80"]);
    assert_eq!(p.http.route.as_deref(), Some("/api/..."));
    // Absent, the section is not written back (a default policy stays as it was).
    let d = serde_json::to_value(Policy::default()).unwrap();
    assert!(d.get("http").is_none(), "{d}");
    let err = |json: &str| {
        Policy::from_json_str(json, "p.json")
            .unwrap_err()
            .to_string()
    };
    let e = err(r#"{"version": 1, "http": {"outbound_hosts": ["example.com"]}}"#);
    assert!(
        e.starts_with("p.json: http.outbound_hosts[0]: expected host:port")
            && e.contains("\"example.com\""),
        "{e}"
    );
    let e = err(r#"{"version": 1, "http": {"outbound_hosts": ["http://a:80"]}}"#);
    assert!(e.contains("http.outbound_hosts[0]"), "{e}");
    let e = err(r#"{"version": 1, "http": {"route": "api"}}"#);
    assert!(
        e.starts_with("p.json: http.route: expected an absolute path"),
        "{e}"
    );
    let e = err(r#"{"version": 1, "http": {"route": "/v1/functions/x/..."}}"#);
    assert!(e.contains("outside /v1, /healthz and /metrics"), "{e}");
    let e = err(r#"{"version": 1, "http": {"routes": "/a"}}"#);
    assert!(e.contains("unknown field `routes`"), "{e}");
}

#[test]
fn a_seccomp_profile_parses_and_a_bad_argument_index_is_named() {
    let p = Policy::from_json_str(
        r#"{"version": 1, "native": {"seccomp": {"profile": {"default_action": "allow",
            "rules": [{"names": ["mkdirat"], "action": {"errno": 13}}]}}}}"#,
        "p.json",
    )
    .unwrap();
    let profile = p.native.seccomp.profile.expect("the profile");
    assert_eq!(profile.rules[0].names, ["mkdirat"]);
    // Absent, it is not written back.
    let d = serde_json::to_value(Policy::default()).unwrap();
    assert!(d["native"]["seccomp"].get("profile").is_none(), "{d}");
    let e = Policy::from_json_str(
        r#"{"version": 1, "native": {"seccomp": {"profile": {"default_action": "allow",
            "rules": [{"names": ["read"], "action": "kill_process",
                       "args": [{"index": 6, "op": "eq", "value": 0}]}]}}}}"#,
        "p.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.starts_with("p.json: native.seccomp.profile.rules[0].args[0].index: expected an argument index in 0..=5"),
        "{e}"
    );
}
