//! The limits of a run of an image: disk I/O throttles on a real block device (`resources.io`), the
//! size of the ephemeral writable layer.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use super::oci_image::{Config, Image};
use super::{base, common, hybox, text};

/// A file-backed loop device with an ext4 filesystem mounted on `mnt`: detached and unmounted when
/// dropped, whatever the test did.
struct LoopFs {
    dev: String,
    mnt: PathBuf,
    mounted: bool,
}

impl LoopFs {
    fn new(dir: &Path) -> LoopFs {
        let img = dir.join("disk.img");
        fs::File::create(&img).unwrap().set_len(64 << 20).unwrap();
        let o = Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "losetup: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let mut l = LoopFs {
            dev: String::from_utf8(o.stdout).unwrap().trim().to_string(),
            mnt: dir.join("mnt"),
            mounted: false,
        };
        let ok = |c: &mut Command| {
            let o = c.output().unwrap();
            assert!(
                o.status.success(),
                "{c:?}: {}",
                String::from_utf8_lossy(&o.stderr)
            );
        };
        ok(Command::new("mkfs.ext4").args(["-q", "-F", &l.dev]));
        fs::create_dir(&l.mnt).unwrap();
        ok(Command::new("mount").arg(&l.dev).arg(&l.mnt));
        l.mounted = true;
        fs::set_permissions(&l.mnt, fs::Permissions::from_mode(0o777)).unwrap();
        l
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let _ = Command::new("umount").arg(&self.mnt).status();
        }
        let _ = Command::new("losetup").args(["-d", &self.dev]).status();
    }
}

fn dd_image(dir: &Path) -> PathBuf {
    let img = Image::busybox("hybox.test/dd:latest", &["dd"])
        .unwrap()
        .config(Config {
            entrypoint: vec!["/bin/busybox".into(), "dd".into()],
            ..Config::default()
        });
    let p = dir.join("dd");
    img.write_layout(&p).unwrap();
    p
}

#[test]
fn an_io_limit_slows_a_direct_write_and_is_read_back() {
    if !common::privileged("an_io_limit_slows_a_direct_write_and_is_read_back") {
        return;
    }
    let b = base();
    let st = b.path().join("store");
    let disk = LoopFs::new(b.path());
    let image = dd_image(b.path());
    let policy = b.path().join("io.json");
    fs::write(
        &policy,
        format!(
            // Landlock best_effort: the test is about the throttle, and it also runs on the cgroup v2
            // VM of tests/vm, whose Linux 6.1 has Landlock ABI 2 (the full ruleset where the
            // kernel has it, as on the development host).
            r#"{{"version": 1, "resources": {{"timeout": "60s",
                "io": [{{"device": "{}", "write_bps": "2M", "read_iops": 1000}}]}},
                "native": {{"landlock": "best_effort"}}}}"#,
            disk.dev
        ),
    )
    .unwrap();
    let vol = format!("{}:/vol:rw", disk.mnt.display());
    let t0 = Instant::now();
    let o = hybox(
        &st,
        &[
            "run",
            "--json",
            "-p",
            policy.to_str().unwrap(),
            "--volume",
            &vol,
            image.to_str().unwrap(),
            "--",
            "if=/dev/zero",
            "of=/vol/out",
            "bs=256k",
            "count=16",
            "oflag=direct",
        ],
    );
    let took = t0.elapsed();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(fs::metadata(disk.mnt.join("out")).unwrap().len(), 4 << 20);
    // 4 MiB at 2 MiB/s: about 2 s (the throttle's first slice lets a little through at once).
    assert!(
        took.as_secs_f64() >= 1.5,
        "4 MiB of direct writes at 2 MiB/s took only {took:?}: {}",
        text(&o)
    );
    let out = String::from_utf8_lossy(&o.stdout);
    let report: serde_json::Value = serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap();
    let rdev = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata(&disk.dev).unwrap().rdev()
    };
    let dev = format!("{}:{}", libc::major(rdev), libc::minor(rdev));
    assert_eq!(
        report["envelope"]["io"],
        serde_json::json!([{"device": dev, "write_bps": 2 << 20, "read_iops": 1000}]),
        "{out}"
    );
    // The same write without the throttle is quicker: the limit, not the device, made it slow.
    let plain = b.path().join("plain.json");
    fs::write(
        &plain,
        r#"{"version": 1, "native": {"landlock": "best_effort"}}"#,
    )
    .unwrap();
    let t1 = Instant::now();
    let o = hybox(
        &st,
        &[
            "run",
            "-p",
            plain.to_str().unwrap(),
            "--volume",
            &vol,
            image.to_str().unwrap(),
            "--",
            "if=/dev/zero",
            "of=/vol/out2",
            "bs=256k",
            "count=16",
            "oflag=direct",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        t1.elapsed() < took,
        "unthrottled {:?}, throttled {took:?}",
        t1.elapsed()
    );
}

#[test]
fn an_io_limit_on_what_is_not_a_block_device_names_the_field() {
    for (device, want) in [
        ("/etc/passwd", "is not a block device"),
        ("/nonexistent/disk", "No such file"),
        ("4095:1048575", "no block device 4095:1048575"),
        ("sda", "expected MAJOR:MINOR"),
    ] {
        let json = format!(
            r#"{{"version": 1, "resources": {{"io": [{{"device": "/dev/null", "read_bps": 1}}, {{"device": "{device}", "write_bps": "1M"}}]}}}}"#
        );
        let e = hybox::policy::Policy::from_json_str(&json, "p.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("resources.io[0].device"),
            "/dev/null is a character device: {e}"
        );
        let json = json.replace(r#"{"device": "/dev/null", "read_bps": 1}, "#, "");
        let e = hybox::policy::Policy::from_json_str(&json, "p.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("p.json: resources.io[0].device: ") && e.contains(want),
            "{device}: {e}"
        );
    }
    let e = hybox::policy::Policy::from_json_str(
        r#"{"version": 1, "resources": {"io": [{"device": "1:1"}]}}"#,
        "p.json",
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("resources.io[0]: expected at least one of"),
        "{e}"
    );
}

#[test]
fn a_write_beyond_the_writable_layer_fails_with_enospc_and_the_report_says_so() {
    if !common::privileged(
        "a_write_beyond_the_writable_layer_fails_with_enospc_and_the_report_says_so",
    ) {
        return;
    }
    let b = base();
    let st = b.path().join("store");
    let img = Image::busybox("hybox.test/fill:latest", &["dd"])
        .unwrap()
        .dir("data", 0o777)
        .config(Config {
            entrypoint: vec!["/bin/busybox".into(), "dd".into()],
            ..Config::default()
        });
    let image = b.path().join("fill");
    img.write_layout(&image).unwrap();
    let policy = b.path().join("layer.json");
    fs::write(
        &policy,
        r#"{"version": 1, "filesystem": {"writable_layer": {"size": "2M"}}}"#,
    )
    .unwrap();
    let run = |count: &str| {
        hybox(
            &st,
            &[
                "run",
                "--json",
                "-p",
                policy.to_str().unwrap(),
                image.to_str().unwrap(),
                "--",
                "if=/dev/zero",
                "of=/data/big",
                "bs=64k",
                &format!("count={count}"),
            ],
        )
    };
    let report = |o: &std::process::Output| -> serde_json::Value {
        let out = String::from_utf8_lossy(&o.stdout);
        serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap()
    };
    // 1 MiB fits in 2M.
    let o = run("16");
    assert!(o.status.success(), "{}", text(&o));
    let r = report(&o);
    assert_eq!(r["image"]["writable_layer"]["size_bytes"], 2 << 20, "{r}");
    assert_eq!(r["image"]["writable_layer"]["full"], false, "{r}");
    assert!(r["image"]["writable_layer"]["used_bytes"].as_u64().unwrap() >= 1 << 20);
    // 4 MiB does not: dd's write fails inside the guest, and the report and summary say why.
    let o = run("64");
    assert!(!o.status.success(), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("No space left on device"), "{}", text(&o));
    assert!(
        err.contains("the writable layer is full")
            && err.contains("filesystem.writable_layer.size"),
        "{}",
        text(&o)
    );
    let r = report(&o);
    assert_eq!(r["image"]["writable_layer"]["full"], true, "{r}");
}
