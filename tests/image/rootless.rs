//! `hybox run IMAGE` as an unprivileged user (uid 65534, its own XDG data dir store): the import
//! writes whiteouts in the `user.overlay.*` form, the sandbox mounts the overlay in its own user
//! and mount namespaces (`userxattr`), and the run behaves as a root run does (docs/images.md,
//! "Unprivileged runs").

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use super::oci_image::{Config, Image};
use super::{base, common, text};

/// A copy of the binary, an image layout and policies uid 65534 can read, and its data dir.
struct Kit {
    dir: tempfile::TempDir,
    bin: PathBuf,
    data: PathBuf,
}

impl Kit {
    fn new() -> Kit {
        let dir = base();
        let bin = dir.path().join("hybox");
        fs::copy(env!("CARGO_BIN_EXE_hybox"), &bin).unwrap();
        fs::set_permissions(&bin, fs::Permissions::from_mode(0o755)).unwrap();
        let data = dir.path().join("data");
        fs::create_dir(&data).unwrap();
        std::os::unix::fs::chown(&data, Some(65534), Some(65534)).unwrap();
        for (name, body) in [
            // No cgroup of its own without root: the envelope degrades (docs/policy.md).
            (
                "rw.json",
                r#"{"version": 1, "on_unenforceable": "degrade"}"#,
            ),
            (
                "ro.json",
                r#"{"version": 1, "on_unenforceable": "degrade", "filesystem": {"writable_layer": null}}"#,
            ),
        ] {
            fs::write(dir.path().join(name), body).unwrap();
        }
        Image::new("hybox.test/rootless:latest")
            .file("hello", super::guest("hello"), 0o755)
            .file("files", super::guest("files"), 0o755)
            .file("etc/a", b"a\n".to_vec(), 0o644)
            .file("etc/b", b"b\n".to_vec(), 0o644)
            .file("old/x", b"x\n".to_vec(), 0o644)
            .new_layer()
            .file("etc/.wh.a", Vec::new(), 0o644)
            .file("old/.wh..wh..opq", Vec::new(), 0o644)
            .file("old/y", b"y\n".to_vec(), 0o644)
            .config(Config {
                cmd: vec!["/hello".into()],
                ..Config::default()
            })
            .write_layout(&dir.path().join("img"))
            .unwrap();
        Kit { dir, bin, data }
    }

    /// `hybox run --policy POLICY IMAGE -- ARGS` as uid 65534.
    fn run(&self, policy: &str, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("run")
            .arg("--policy")
            .arg(self.dir.path().join(policy))
            .arg(self.dir.path().join("img"))
            .arg("--")
            .args(args)
            .env_clear()
            .env("XDG_DATA_HOME", &self.data)
            .current_dir(self.dir.path())
            .uid(65534)
            .gid(65534)
            .output()
            .unwrap()
    }

    /// The unpacked layers in uid 65534's store.
    fn layers(&self) -> Vec<PathBuf> {
        let dir = self.data.join("hybox/layers/sha256");
        fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path().join("root"))
            .collect()
    }
}

#[test]
fn an_unprivileged_image_run_prints_hides_whiteouts_and_keeps_nothing() {
    if !common::privileged("an_unprivileged_image_run_prints_hides_whiteouts_and_keeps_nothing") {
        return;
    }
    let k = Kit::new();
    let o = k.run("rw.json", &[]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hello from hybox"),
        "{}",
        text(&o)
    );
    // The store is uid 65534's, and its whiteouts are in the form it can write.
    let layers = k.layers();
    assert_eq!(layers.len(), 2);
    let top = layers.iter().find(|l| l.join("old/y").exists()).unwrap();
    assert_eq!(fs::metadata(top).unwrap().uid(), 65534);
    let wh = fs::symlink_metadata(top.join("etc/a")).unwrap();
    assert!(
        wh.is_file() && wh.len() == 0,
        "an empty file as the whiteout"
    );
    assert!(hybox::image::has_xattr(
        &top.join("etc/a"),
        "user.overlay.whiteout",
        b""
    ));
    assert!(hybox::image::has_xattr(
        &top.join("old"),
        "user.overlay.opaque",
        b"y"
    ));
    let code = |policy: &str, args: &[&str]| {
        let o = k.run(policy, args);
        (o.status.code(), text(&o))
    };
    // `files` exits 3 when it cannot read its input, 4 when it cannot write its output.
    for (input, want) in [("/etc/b", 0), ("/old/y", 0), ("/etc/a", 3), ("/old/x", 3)] {
        let (got, why) = code("rw.json", &["/files", input, "/tmp/out"]);
        assert_eq!(got, Some(want), "{input}: {why}");
    }
    // A write lands in the run's writable layer: the next run does not see it, nor the store.
    let (got, why) = code("rw.json", &["/files", "/etc/b", "/etc/new"]);
    assert_eq!(got, Some(0), "{why}");
    let (got, why) = code("rw.json", &["/files", "/etc/new", "/tmp/out"]);
    assert_eq!(got, Some(3), "the first run's file is gone: {why}");
    for l in &layers {
        assert!(!l.join("etc/new").exists(), "{}", l.display());
    }
    // A read-only root refuses the write.
    let (got, why) = code("ro.json", &["/files", "/etc/b", "/etc/new"]);
    assert_eq!(got, Some(4), "{why}");
    let (got, why) = code("ro.json", &["/files", "/etc/b", "/tmp/out"]);
    assert_eq!(got, Some(0), "{why}");
    // Nothing of the runs is left behind.
    let run = k.data.join("hybox/run");
    assert_eq!(fs::read_dir(&run).unwrap().count(), 0, "{}", run.display());
}
