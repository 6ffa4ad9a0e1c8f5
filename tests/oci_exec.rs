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

/// The wasm worker of the container whose monitor is `monitor`: its child in another user
/// namespace (the worker's own).
fn worker_pid(monitor: i32) -> i32 {
    let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/user")).ok();
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let mut kids = String::new();
        for t in std::fs::read_dir(format!("/proc/{monitor}/task"))
            .into_iter()
            .flatten()
        {
            kids +=
                &std::fs::read_to_string(t.unwrap().path().join("children")).unwrap_or_default();
            kids.push(' ');
        }
        if let Some(p) = kids
            .split_whitespace()
            .filter_map(|k| k.parse::<i32>().ok())
            .find(|&p| ns(p).is_some() && ns(p) != ns(monitor))
        {
            return p;
        }
        assert!(
            Instant::now() < until,
            "no wasm worker under monitor {monitor}"
        );
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

/// A pod's container: its network, IPC and UTS namespaces are the paths `ns_of` gives (`net`,
/// `ipc`, `uts`), as CRI writes them.
fn in_pod(config: &mut Value, ns_of: &dyn Fn(&str) -> String) {
    for ns in config["linux"]["namespaces"].as_array_mut().unwrap() {
        let file = match ns["type"].as_str().unwrap() {
            "network" => "net",
            "ipc" => "ipc",
            "uts" => "uts",
            _ => continue,
        };
        ns["path"] = json!(ns_of(file));
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

    let app = Bundle::new(&["sh", "-c", SHOW_NS], |c| in_pod(c, &ns_of));
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
    // A process exec'd into the pod's container is in the pod's namespaces too.
    let p = process_json(
        &runc,
        &[
            "sh",
            "-c",
            "busybox hostname; busybox readlink /proc/self/ns/net",
        ],
        |_| {},
    );
    let o = runc.call(&["exec", "--process", p.to_str().unwrap(), "app"]);
    assert_eq!(o.status.code(), Some(0), "{}", last_error(&runc.log()));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        format!("pod-a\n{}\n", a_out[0])
    );

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

    // A wasm container of the pod joins nothing, even under the shipped policy (network none):
    // its guest gets no network; it runs.
    let wasm = Bundle::new(&["/bin/env.wasm"], |c| {
        for ns in c["linux"]["namespaces"].as_array_mut().unwrap() {
            if ns["type"] == "network" {
                ns["path"] = json!(ns_of("net"));
            }
        }
    });
    let w = shipped.create(&wasm, "wasm-in-pod");
    shipped.ok(&["start", "wasm-in-pod"]);
    assert_eq!(
        wait_exit(w, Duration::from_secs(30)),
        0,
        "{}",
        last_error(&shipped.log())
    );
    assert_eq!(shipped.state("wasm-in-pod")["hybox"]["backend"], "wasm");
    shipped.ok(&["delete", "wasm-in-pod"]);

    // Under `network: loopback` a wasm container's worker joins the pod's network namespace (its
    // guest's loopback is the pod's), and nothing else of the pod's.
    let wasm = Bundle::new(&["/bin/ticker.wasm", "w", "100"], |c| in_pod(c, &ns_of));
    std::fs::write(
        wasm.path().join("rootfs/bin/ticker.wasm"),
        guest("ticker.wasm"),
    )
    .unwrap();
    let w = runc.create(&wasm, "wasm-net");
    assert_eq!(runc.state("wasm-net")["hybox"]["backend"], "wasm");
    runc.ok(&["start", "wasm-net"]);
    let out = wait_lines(&runc, "wasm-net", 2);
    assert_eq!(
        out.first().map(String::as_str),
        Some("w started"),
        "{out:?} {}",
        last_error(&runc.log())
    );
    let worker = worker_pid(w);
    assert_eq!(link(worker, "net"), link(a_sandbox, "net"));
    assert_ne!(link(worker, "net"), link(w, "net"), "not the host's");
    for own in ["ipc", "uts", "user", "mnt"] {
        assert_ne!(link(worker, own), link(a_sandbox, own), "{own}");
    }
    // A monitor killed outright (not through `kill`) takes its worker with it: nothing of the
    // container keeps running in its cgroup.
    // SAFETY: kill(2) of the monitor, a child of this subreaper.
    assert_eq!(unsafe { libc::kill(w, libc::SIGKILL) }, 0);
    assert_eq!(wait_exit(w, Duration::from_secs(10)), 137);
    // Reparented to this subreaper, which reaps it: killed by its parent-death signal.
    assert_eq!(wait_exit(worker, Duration::from_secs(10)), 137);
    runc.ok(&["delete", "wasm-net"]);

    for id in ["app", "pause"] {
        runc.ok(&["kill", id, "KILL"]);
    }
    assert_eq!(wait_exit(b, Duration::from_secs(10)), 137);
    assert_eq!(wait_exit(a, Duration::from_secs(10)), 137);
    for id in ["app", "pause"] {
        runc.ok(&["delete", id]);
    }
}

/// A process.json as containerd's shim writes it for `ctr task exec` (the recorded one) with `args`.
pub(super) fn process_json(runc: &Runc, args: &[&str], edit: impl FnOnce(&mut Value)) -> PathBuf {
    let mut p: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("tests/fixtures/oci/ctr-exec-process.json"))
            .unwrap(),
    )
    .unwrap();
    p["args"] = json!(args);
    p["env"] = json!(["PATH=/bin", "WHO=exec"]);
    edit(&mut p);
    static SEQ: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let f = runc.root.path().join(format!("process-{n}.json"));
    std::fs::write(&f, p.to_string()).unwrap();
    f
}

#[test]
fn exec_runs_a_process_inside_a_running_native_container() {
    if !common::privileged("exec_runs_a_process_inside") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let bundle = Bundle::new(&["sh", "-c", SHOW_NS], |c| c["hostname"] = json!("box-1"));
    let monitor = runc.create(&bundle, "e1");

    // Created, not running: refused.
    let p = process_json(&runc, &["echo", "hi"], |_| {});
    let o = runc.call(&["exec", "--process", p.to_str().unwrap(), "e1"]);
    assert_eq!(o.status.code(), Some(1));
    let e = last_error(&runc.log());
    assert!(e.contains("\"e1\"") && e.contains("created"), "{e}");

    runc.ok(&["start", "e1"]);
    let init = wait_lines(&runc, "e1", 3);
    assert_eq!(init.len(), 3, "{init:?}");

    // Output and exit code; the container's pid namespace and hostname; in its cgroup (shown from
    // inside its cgroup namespace as the root); no capability; the container's ids.
    let script = "echo \"$WHO\" \"$0\"; busybox readlink /proc/self/ns/pid; busybox hostname; \
                  busybox cat /proc/self/cgroup; busybox grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status; \
                  exit 7";
    let p = process_json(&runc, &["sh", "-c", script, "arg0"], |_| {});
    let o = runc.call(&["exec", "--process", p.to_str().unwrap(), "e1"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert_eq!(
        o.status.code(),
        Some(7),
        "{out} {}",
        last_error(&runc.log())
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "exec arg0", "{out}");
    assert_eq!(lines[1], init[1], "the container's pid namespace: {out}");
    assert_eq!(lines[2], "box-1", "{out}");
    assert!(out.contains("CapEff:\t0000000000000000"), "{out}");
    assert!(out.contains("CapPrm:\t0000000000000000"), "{out}");
    assert!(out.contains("CapBnd:\t0000000000000000"), "{out}");
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(out.contains("Seccomp:\t2"), "{out}");
    // Inside its cgroup namespace the container's cgroup is the root.
    assert!(
        out.lines().any(|l| l == "0::/") || out.lines().any(|l| l.ends_with(":/")),
        "{out}"
    );

    // --detach --pid-file: the pid is this (subreaper) test's to reap, with the process's status;
    // while it runs it is in the container's cgroup (seen from the host).
    let pid_file = runc.root.path().join("exec.pid");
    let p = process_json(&runc, &["sleep", "2"], |_| {});
    // Not `output()`: the process keeps the stdio it inherited until it ends.
    let status = runc
        .cmd(&[
            "exec",
            "--process",
            p.to_str().unwrap(),
            "--detach",
            "--pid-file",
        ])
        .arg(&pid_file)
        .arg("e1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{}", last_error(&runc.log()));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let (mon_cg, _) = (
        std::fs::read_to_string(format!("/proc/{monitor}/cgroup")).unwrap(),
        (),
    );
    assert!(
        cg.lines()
            .any(|l| l.contains(&bundle.cgroup) && (l.contains("memory") || l.starts_with("0::"))),
        "exec'd {cg} monitor {mon_cg}"
    );
    let link = |p: i32, n: &str| std::fs::read_link(format!("/proc/{p}/ns/{n}")).unwrap();
    let sandbox = sandbox_pid(monitor);
    for n in ["pid", "mnt", "net", "ipc", "uts", "user", "cgroup"] {
        assert_eq!(link(pid, n), link(sandbox, n), "{n}");
    }
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 0);

    // A uid the container's user namespace does not map, and a capability beyond the default set,
    // are refused naming the field.
    let p = process_json(&runc, &["true"], |p| p["user"]["uid"] = json!(1234));
    assert_eq!(
        runc.call(&["exec", "--process", p.to_str().unwrap(), "e1"])
            .status
            .code(),
        Some(1)
    );
    let e = last_error(&runc.log());
    assert!(e.contains("process.user") && e.contains("1234"), "{e}");
    let p = process_json(&runc, &["true"], |p| {
        p["capabilities"]["bounding"]
            .as_array_mut()
            .unwrap()
            .push(json!("CAP_SYS_ADMIN"))
    });
    assert_eq!(
        runc.call(&["exec", "--process", p.to_str().unwrap(), "e1"])
            .status
            .code(),
        Some(1)
    );
    let e = last_error(&runc.log());
    assert!(e.contains("process.capabilities.bounding"), "{e}");
    // A program that is not there: an error of exec, not of the container.
    let p = process_json(&runc, &["nonexistent"], |_| {});
    assert_eq!(
        runc.call(&["exec", "--process", p.to_str().unwrap(), "e1"])
            .status
            .code(),
        Some(1)
    );
    let e = last_error(&runc.log());
    assert!(e.contains("\"e1\"") && e.contains("ENOENT"), "{e}");
    assert_eq!(runc.state("e1")["status"], "running");
    // A command line instead of --process (runc's `exec ID CMD...`): the container's own process
    // (its config.json env) with the command, --env added, --cwd.
    let o = runc.call(&[
        "exec",
        "--env",
        "X=1",
        "--cwd",
        "/bin",
        "e1",
        "sh",
        "-c",
        "echo \"$GREETING\" $X; pwd",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", last_error(&runc.log()));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "hello from config.json 1\n/bin\n"
    );

    runc.ok(&["kill", "e1", "KILL"]);
    assert_eq!(wait_exit(monitor, Duration::from_secs(10)), 137);
    // Stopped: refused.
    let p = process_json(&runc, &["true"], |_| {});
    assert_eq!(
        runc.call(&["exec", "--process", p.to_str().unwrap(), "e1"])
            .status
            .code(),
        Some(1)
    );
    assert!(last_error(&runc.log()).contains("stopped"));
    runc.ok(&["delete", "e1"]);
}

#[test]
fn exec_into_a_wasm_container_is_refused_naming_it() {
    if !common::privileged("exec_into_a_wasm_container") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let bundle = Bundle::new(&["/bin/probe.wasm", "attack", "sleep"], |_| {});
    let monitor = runc.create(&bundle, "w1");
    runc.ok(&["start", "w1"]);
    assert_eq!(runc.state("w1")["hybox"]["backend"], "wasm");
    let p = process_json(&runc, &["/bin/env.wasm"], |_| {});
    let o = runc.call(&["exec", "--process", p.to_str().unwrap(), "w1"]);
    assert_eq!(o.status.code(), Some(1));
    let e = last_error(&runc.log());
    assert!(
        e.contains("exec is not supported for wasm containers") && e.contains("\"w1\""),
        "{e}"
    );
    runc.ok(&["kill", "w1", "KILL"]);
    wait_exit(monitor, Duration::from_secs(10));
    runc.ok(&["delete", "w1"]);
}

#[test]
fn exec_with_a_terminal_gets_a_pty_over_the_console_socket() {
    if !common::privileged("exec_with_a_terminal") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let bundle = Bundle::new(&["sleep", "30"], |_| {});
    let monitor = runc.create(&bundle, "t1");
    runc.ok(&["start", "t1"]);
    let script =
        format!("[ -t 0 ] && [ -t 1 ] && echo tty yes || echo tty no; {SHOW_CTTY}; exit 3");
    let p = process_json(&runc, &["sh", "-c", &script], |p| {
        p["terminal"] = json!(true)
    });
    // A terminal without a console socket: refused naming the field.
    assert_eq!(
        runc.call(&["exec", "--process", p.to_str().unwrap(), "t1"])
            .status
            .code(),
        Some(1)
    );
    assert!(last_error(&runc.log()).contains("process.terminal"));

    // `start` returns once the shim was told to go; it forks `sleep` after that. The container's
    // processes are the monitor, the shim and `sleep` once that fork is done.
    let until = Instant::now() + Duration::from_secs(10);
    let before = loop {
        let ps = runc.ok(&["ps", "--format", "json", "t1"]);
        let n = serde_json::from_str::<Vec<i32>>(&ps).unwrap().len();
        if n >= 3 || Instant::now() >= until {
            break ps;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let sock = runc.root.path().join("exec-console.sock");
    let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let got = std::thread::spawn(move || recv_fd(&listener.accept().unwrap().0));
    let pid_file = runc.root.path().join("exec-tty.pid");
    let status = runc
        .cmd(&[
            "exec",
            "--process",
            p.to_str().unwrap(),
            "--detach",
            "--pid-file",
        ])
        .arg(&pid_file)
        .arg("--console-socket")
        .arg(&sock)
        .arg("t1")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "{}", last_error(&runc.log()));
    let (mut master, name) = got.join().unwrap();
    assert!(name.starts_with("/dev/pts/"), "{name}");
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 3);
    let mut out = Vec::new();
    let _ = std::io::Read::read_to_end(&mut master, &mut out);
    let out = String::from_utf8_lossy(&out);
    assert!(out.contains("tty yes"), "{out:?}");
    // Its own session (the shim's setsid), the pty as that session's controlling terminal.
    assert_controlling_tty(&out, &name);
    let ctty: Vec<&str> = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("ctty "))
        .unwrap()
        .split_whitespace()
        .collect();
    assert_eq!(
        ctty[0], ctty[2],
        "the exec'd shell leads no session: {out:?}"
    );
    // Nothing of the exec is left in the container: its processes are the init's again.
    assert_eq!(runc.ok(&["ps", "--format", "json", "t1"]), before);
    runc.ok(&["kill", "t1", "KILL"]);
    assert_eq!(wait_exit(monitor, Duration::from_secs(10)), 137);
    runc.ok(&["delete", "t1"]);
}
