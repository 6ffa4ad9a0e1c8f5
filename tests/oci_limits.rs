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
