//! Part of tests/oci.rs: a bundle's disk I/O throttles (`linux.resources.blockIO`) on a loop
//! device the test makes, and its tmpfs mounts besides `/tmp` (their refusals are in
//! tests/oci.rs's `a_refused_bundle_names_the_field_and_leaves_nothing`).

use super::*;

/// A loop device on a file of `dir`, detached when dropped.
struct Loop(String);

impl Loop {
    fn new(dir: &Path) -> Loop {
        let img = dir.join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(o.status.success(), "losetup: {o:?}");
        Loop(String::from_utf8(o.stdout).unwrap().trim().to_string())
    }
    /// `MAJOR:MINOR`, as the kernel lists it.
    fn numbers(&self) -> String {
        let name = self.0.trim_start_matches("/dev/");
        std::fs::read_to_string(format!("/sys/class/block/{name}/dev"))
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

#[test]
fn block_io_throttles_reach_the_container_cgroup() {
    if !common::privileged("block_io_throttles_reach_the_container_cgroup") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let dev = Loop::new(runc.root.path());
    let (maj, min) = dev
        .numbers()
        .split_once(':')
        .map(|(a, b)| (a.parse::<i64>().unwrap(), b.parse::<i64>().unwrap()))
        .unwrap();
    let b = Bundle::new(&["sleep", "30"], |c| {
        c["linux"]["resources"]["blockIO"] = json!({
            "weight": 500,
            "throttleWriteBpsDevice": [{"major": maj, "minor": min, "rate": 1048576}],
            "throttleReadIOPSDevice": [{"major": maj, "minor": min, "rate": 100}],
        });
    });
    let pid = runc.create(&b, "io");
    let want = dev.numbers();
    if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        let max = cgroup_file(&b.cgroup, "", "io.max");
        assert!(
            max.contains(&format!("{want} rbps=max wbps=1048576 riops=100 wiops=max")),
            "io.max: {max}"
        );
    } else {
        let w = cgroup_file(&b.cgroup, "blkio", "blkio.throttle.write_bps_device");
        assert_eq!(w, format!("{want} 1048576"));
        let r = cgroup_file(&b.cgroup, "blkio", "blkio.throttle.read_iops_device");
        assert_eq!(r, format!("{want} 100"));
        // The pid file's process is in that blkio cgroup (the throttles apply to the container).
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cg.lines()
                .any(|l| l.contains(":blkio:") && l.ends_with(&b.cgroup)),
            "{cg}"
        );
    }
    runc.ok(&["start", "io"]);
    runc.ok(&["kill", "io", "9"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(10)), 137);
    runc.ok(&["delete", "io"]);
    assert_eq!(cgroup_dirs(&b.cgroup), Vec::<PathBuf>::new());
}

#[test]
fn a_tmpfs_mount_is_private_writable_and_size_capped() {
    if !common::privileged("a_tmpfs_mount_is_private_writable_and_size_capped") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let script = "echo hi >/run/x && cat /run/x; busybox dd if=/dev/zero of=/run/big bs=1024 count=2048 2>&1; busybox grep ' /run ' /proc/mounts";
    let b = Bundle::new(&["sh", "-c", script], |c| {
        // ctr's /run tmpfs (mounts[6] of the fixture) with our options. The image has no /run:
        // its mount point is made in the rootfs at create, as for binds.
        assert_eq!(c["mounts"][6]["destination"], "/run");
        c["mounts"][6]["options"] = json!(["nosuid", "noexec", "size=1m", "mode=755"]);
    });
    let pid = runc.create(&b, "t");
    runc.ok(&["start", "t"]);
    assert_eq!(wait_exit(pid, Duration::from_secs(20)), 0);
    let out = runc.output_of("t");
    assert!(out.starts_with("hi\n"), "{out}");
    assert!(out.contains("No space left on device"), "{out}");
    assert!(
        out.contains("tmpfs /run tmpfs rw,nosuid,nodev,noexec") && out.contains("mode=755"),
        "{out}"
    );
    runc.ok(&["delete", "t"]);
}

/// A pipe whose both ends are close-on-exec: only a `dup2`ed copy reaches a child.
fn pipe() -> (std::fs::File, std::fs::File) {
    let mut fds = [0; 2];
    // SAFETY: a pointer to two ints.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just created and are owned by nothing else.
    unsafe {
        (
            std::os::fd::FromRawFd::from_raw_fd(fds[0]),
            std::os::fd::FromRawFd::from_raw_fd(fds[1]),
        )
    }
}

/// `create` with `extra` as its fds 3, 4, ... and `--preserve-fds N` (as containerd's shim passes
/// a task's extra files).
fn create_with_fds(
    runc: &Runc,
    bundle: &Bundle,
    id: &str,
    n: usize,
    extra: &[&std::fs::File],
) -> std::process::ExitStatus {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let raw: Vec<i32> = extra.iter().map(|f| f.as_raw_fd()).collect();
    let mut c = runc.cmd(&["create", "--preserve-fds", &n.to_string(), "--bundle"]);
    c.arg(bundle.path())
        .arg("--pid-file")
        .arg(runc.root.path().join(format!("{id}.pid")))
        .arg(id)
        .stdout(std::fs::File::create(runc.root.path().join(format!("{id}.out"))).unwrap())
        // Files, not pipes: the monitor keeps create's stdio for the container.
        .stderr(std::fs::File::create(runc.root.path().join(format!("{id}.err"))).unwrap());
    // SAFETY: between fork and exec the closure makes only dup2 calls (async-signal-safe) on fds
    // this process owns.
    unsafe {
        c.pre_exec(move || {
            for (i, fd) in raw.iter().enumerate() {
                if libc::dup2(*fd, 3 + i as i32) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    c.status().unwrap()
}

#[test]
fn preserved_fds_reach_the_containers_process_as_3_and_up() {
    if !common::privileged("preserved_fds_reach_the_containers_process") {
        return;
    }
    become_subreaper();
    let runc = Runc::new();
    let (r3, w3) = pipe();
    let (r4, w4) = pipe();
    // The workload writes into each and shows that nothing else above 2 is open.
    let script = "echo three >&3; echo four >&4; \
                  for f in 5 6 7 8 9; do [ -e /proc/self/fd/$f ] && echo leak $f; done; \
                  echo done; sleep 2";
    let b = Bundle::new(&["sh", "-c", script], |_| {});
    let o = create_with_fds(&runc, &b, "fds", 2, &[&w3, &w4]);
    assert!(o.success(), "{}", last_error(&runc.log()));
    drop((w3, w4));
    let pid: i32 = std::fs::read_to_string(runc.root.path().join("fds.pid"))
        .unwrap()
        .parse()
        .unwrap();
    runc.ok(&["start", "fds"]);
    // The monitor keeps its copies for the container's life (as containerd's shim keeps the
    // task's extra files): a reader sees the end once the container has exited.
    let mut three = String::new();
    let mut four = String::new();
    use std::io::Read;
    let t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = (&r3).read_to_string(&mut s);
        s
    });
    let _ = (&r4).take(5).read_to_string(&mut four);
    // `exec --preserve-fds 1`: the exec'd process gets its fd 3 the same way.
    let (re, we) = pipe();
    let p = exec::process_json(&runc, &["sh", "-c", "echo exec >&3"], |_| {});
    let mut c = runc.cmd(&["exec", "--preserve-fds", "1", "--process"]);
    c.arg(&p).arg("fds");
    {
        use std::os::fd::AsRawFd;
        use std::os::unix::process::CommandExt;
        let fd = we.as_raw_fd();
        // SAFETY: between fork and exec the closure only calls dup2 on an fd this process owns.
        unsafe {
            c.pre_exec(move || {
                if libc::dup2(fd, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", last_error(&runc.log()));
    drop(we);
    let mut exec_out = String::new();
    let _ = (&re).read_to_string(&mut exec_out);
    assert_eq!(exec_out, "exec\n");
    assert_eq!(
        wait_exit(pid, Duration::from_secs(20)),
        0,
        "{}",
        last_error(&runc.log())
    );
    three += &t.join().unwrap();
    assert_eq!(three, "three\n");
    assert_eq!(four, "four\n");
    let out = runc.output_of("fds");
    assert_eq!(out, "done\n", "{out:?}");
    runc.ok(&["delete", "fds"]);

    // fd 4 is not open: refused naming it, nothing left.
    let (_r, w) = pipe();
    let refused = |id: &str, why: &str, o: std::process::ExitStatus| {
        assert_eq!(o.code(), Some(1));
        let e = last_error(&runc.log());
        assert!(e.contains("--preserve-fds") && e.contains(why), "{e}");
        assert!(!runc.call(&["state", id]).status.success());
    };
    refused(
        "short",
        "fd 4 is not open",
        create_with_fds(&runc, &b, "short", 2, &[&w]),
    );

    // A wasm container has no fd table to give them to.
    let wasm = Bundle::new(&["/bin/env.wasm"], |_| {});
    refused(
        "wasm",
        "WASI preopens",
        create_with_fds(&runc, &wasm, "wasm", 1, &[&w]),
    );
    assert_eq!(cgroup_dirs(&wasm.cgroup), Vec::<PathBuf>::new());
}
