//! Part of tests/oci.rs: a pod's containers joining namespaces by path, and `hybox-runc exec`.

use super::*;

/// A runtime policy like the shipped one, with `network: loopback`: what joining a pod's network
/// namespace needs (docs/oci.md).
const POD_POLICY: &str = r#"{"version": 1, "network": "loopback",
  "resources": {"memory": "1G", "cpus": 2, "pids": 512, "timeout": "24h"},
  "filesystem": {"tmp": {"size": "64M"}}}"#;

/// A process of the container whose monitor is `monitor`: the first descendant in another network
/// namespace than the monitor's (the sandbox's shim).
fn sandbox_pid(monitor: i32) -> i32 {
    let ns = |pid: i32, n: &str| std::fs::read_link(format!("/proc/{pid}/ns/{n}")).ok();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut todo = vec![monitor];
        while let Some(p) = todo.pop() {
            if p != monitor && ns(p, "pid") != ns(monitor, "pid") {
                return p;
            }
            for t in std::fs::read_dir(format!("/proc/{p}/task"))
                .into_iter()
                .flatten()
            {
                let f = t.unwrap().path().join("children");
                let kids = std::fs::read_to_string(f).unwrap_or_default();
                todo.extend(
                    kids.split_whitespace()
                        .filter_map(|k| k.parse::<i32>().ok()),
                );
            }
        }
        assert!(Instant::now() < until, "no sandbox under monitor {monitor}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until the container's output has `lines` lines.
fn wait_lines(runc: &Runc, id: &str, lines: usize) -> Vec<String> {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = runc.output_of(id);
        if out.lines().count() >= lines || Instant::now() > until {
            return out.lines().map(str::to_string).collect();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SHOW_NS: &str = "busybox readlink /proc/self/ns/net; busybox readlink /proc/self/ns/pid; \
                       busybox hostname; exec sleep 30";

#[test]
fn a_pods_container_joins_the_pause_containers_net_ipc_and_uts_namespaces() {
    if !common::privileged("a_pods_container_joins") {
        return;
    }
    become_subreaper();
    let runc = Runc::with_runtime_policy(POD_POLICY);
    let pause = Bundle::new(&["sh", "-c", SHOW_NS], |c| c["hostname"] = json!("pod-a"));
    let a = runc.create(&pause, "pause");
    runc.ok(&["start", "pause"]);
    let a_out = wait_lines(&runc, "pause", 3);
    assert_eq!(a_out.len(), 3, "{a_out:?}");
    assert_eq!(a_out[2], "pod-a");
    let a_sandbox = sandbox_pid(a);
    let ns_of = |n: &str| format!("/proc/{a_sandbox}/ns/{n}");

    let app = Bundle::new(&["sh", "-c", SHOW_NS], |c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            let file = match ns["type"].as_str().unwrap() {
                "network" => "net",
                "ipc" => "ipc",
                "uts" => "uts",
                _ => continue,
            };
            ns["path"] = json!(ns_of(file));
        }
    });
    let b = runc.create(&app, "app");
    runc.ok(&["start", "app"]);
    let b_out = wait_lines(&runc, "app", 3);
    assert_eq!(b_out.len(), 3, "{b_out:?} {}", last_error(&runc.log()));
    assert_eq!(b_out[0], a_out[0], "the same network namespace");
    assert_ne!(b_out[1], a_out[1], "its own pid namespace");
    assert_eq!(
        b_out[2], "pod-a",
        "the pod's hostname, from its uts namespace"
    );
    let b_sandbox = sandbox_pid(b);
    let link = |p: i32, n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}")).unwrap();
    assert_eq!(link(b_sandbox, "ipc"), link(a_sandbox, "ipc"));
    assert_eq!(link(b_sandbox, "uts"), link(a_sandbox, "uts"));
    assert_ne!(link(b_sandbox, "mnt"), link(a_sandbox, "mnt"));
    assert_ne!(link(b_sandbox, "user"), link(a_sandbox, "user"));
    assert_eq!(runc.state("app")["hybox"]["backend"], "native");

    // A mount namespace path is refused naming the field; nothing is left.
    let bad = Bundle::new(&["sh", "-c", "true"], |c| {
        c["linux"]["namespaces"][3]["path"] = json!(ns_of("mnt"));
    });
    assert!(!runc
        .call(&["create", "--bundle", bad.path().to_str().unwrap(), "bad"])
        .status
        .success());
    let e = last_error(&runc.log());
    assert!(
        e.contains("linux.namespaces[3].path") && e.contains("own mount namespace"),
        "{e}"
    );
    assert!(!runc.call(&["state", "bad"]).status.success());

    // With the shipped runtime policy (network none) the pod's network namespace is refused.
    let shipped = Runc::new();
    assert!(!shipped
        .call(&["create", "--bundle", app.path().to_str().unwrap(), "app2"])
        .status
        .success());
    let e = last_error(&shipped.log());
    assert!(
        e.contains("linux.namespaces[4].path") && e.contains("\"none\""),
        "{e}"
    );

    for id in ["app", "pause"] {
        runc.ok(&["kill", id, "KILL"]);
    }
    assert_eq!(wait_exit(b, Duration::from_secs(10)), 137);
    assert_eq!(wait_exit(a, Duration::from_secs(10)), 137);
    for id in ["app", "pause"] {
        runc.ok(&["delete", id]);
    }
}
