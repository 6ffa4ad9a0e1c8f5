//! `linux.seccomp` (docs/oci.md): the bundle's profile is one more filter stacked with hybox's
//! own, for the container's init and for `exec` processes alike. The kernel applies the most
//! severe result of all the filters, so the profile narrows and never widens.

use super::*;

/// A profile answering `ENOSYS` for `mkdir`/`mkdirat` and allowing the rest.
fn no_mkdir(c: &mut Value) {
    c["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{
            "names": ["mkdir", "mkdirat"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": libc::ENOSYS,
        }],
    });
}

fn run_to_exit(runc: &Runc, b: &Bundle, id: &str) -> (i32, String) {
    let pid = runc.create(b, id);
    runc.ok(&["start", id]);
    let status = wait_exit(pid, Duration::from_secs(20));
    let out = runc.output_of(id);
    runc.ok(&["delete", id]);
    (status, out)
}

#[test]
fn a_profile_narrows_the_init_and_exec_processes() {
    if !common::privileged("a_profile_narrows_the_init_and_exec_processes") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let mkdir = ["/bin/sh", "-c", "busybox mkdir /tmp/d && echo made"];

    // Without a profile the container can mkdir in /tmp.
    let plain = Bundle::new(&mkdir, |_| {});
    let (status, out) = run_to_exit(&runc, &plain, "plain");
    assert_eq!((status, out.trim()), (0, "made"), "{out}");

    // With it, the same program sees ENOSYS.
    let narrowed = Bundle::new(&mkdir, no_mkdir);
    let (status, out) = run_to_exit(&runc, &narrowed, "narrowed");
    assert_eq!(status, 1, "{out}");
    assert!(out.contains("Function not implemented"), "{out}");

    // Docker's default profile, as dockerd wrote it into a recorded config.json: the container
    // runs (and may mkdir).
    let docker: Value = serde_json::from_str(
        &std::fs::read_to_string(common::repo().join("tests/fixtures/oci/docker-run.json"))
            .unwrap(),
    )
    .unwrap();
    let docker = Bundle::new(&mkdir, |c| {
        c["linux"]["seccomp"] = docker["linux"]["seccomp"].clone()
    });
    let (status, out) = run_to_exit(&runc, &docker, "docker");
    assert_eq!((status, out.trim()), (0, "made"), "{out}");

    // An exec process gets the profile too (from the policy `create` saved); the state says
    // the profile is applied.
    let running = Bundle::new(&["sleep", "30"], no_mkdir);
    let pid = runc.create(&running, "running");
    runc.ok(&["start", "running"]);
    let profile = &runc.state("running")["hybox"]["seccomp_profile"];
    assert_eq!(profile["default_action"], "allow", "{profile}");
    assert_eq!(profile["rules"], 1, "{profile}");
    let p = exec::process_json(&runc, &mkdir, |_| {});
    let o = runc.call(&["exec", "--process", p.to_str().unwrap(), "running"]);
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(
        o.status.code(),
        Some(1),
        "{err} {}",
        last_error(&runc.log())
    );
    assert!(err.contains("Function not implemented"), "{err}");
    runc.ok(&["delete", "--force", "running"]);
    wait_exit(pid, Duration::from_secs(10));
}

#[test]
fn a_profile_allowing_everything_does_not_widen_the_allow_list() {
    if !common::privileged("a_profile_allowing_everything_does_not_widen") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let b = Bundle::new(&["/bin/probe", "attack", "keyctl"], |c| {
        c["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["keyctl", "ptrace"], "action": "SCMP_ACT_ALLOW"}],
        });
    });
    let probe = common::repo().join("examples/out/native/probe");
    std::fs::copy(&probe, b.path().join("rootfs/bin/probe"))
        .unwrap_or_else(|e| panic!("{}: {e} (examples/build.sh)", probe.display()));
    // hybox's allow-list kills keyctl: 128 + SIGSYS, whatever the profile allows.
    let (status, out) = run_to_exit(&runc, &b, "widen");
    assert_eq!(status, 128 + libc::SIGSYS, "{out}");
}
