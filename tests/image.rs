//! Images: the store (formats, digests, layer sharing), the safe unpack (crafted attack tarballs
//! and a proptest of random streams), whiteouts, and runs of images on the native backend (config
//! precedence, ephemeral writable layer, volumes). docs/images.md describes what is tested here.
//!
//! `image/limits.rs` has the runs' limits (disk I/O, the writable layer's size) and `image/wasm.rs`
//! the images that run on the wasm backend.
//!
//! The runs and the whiteouts need root (overlay mounts on the host, mknod of whiteouts); they skip
//! with the reason unless HYBOX_REQUIRE_PRIVILEGED=1.

mod common;
#[path = "image/limits.rs"]
mod limits;
#[path = "image/rootless.rs"]
mod rootless;
#[path = "image/wasm.rs"]
mod wasm;

use common::oci_image;

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Output;

use hybox::image::{unpack_layer, Neutralised, Selector, Store};
use oci_image::{raw, raw_tar, Compression, Config, Image, Raw};
use proptest::prelude::*;

/// A test directory every sandbox uid can traverse (tempdir makes 0700 ones).
fn base() -> tempfile::TempDir {
    let d = tempfile::tempdir_in("/var/tmp").unwrap();
    fs::set_permissions(d.path(), fs::Permissions::from_mode(0o755)).unwrap();
    d
}

fn guest(name: &str) -> Vec<u8> {
    fs::read(common::native_guest(name)).unwrap()
}

fn hybox(store: &Path, args: &[&str]) -> Output {
    common::hybox()
        .env("HYBOX_STORE", store)
        .args(args)
        .output()
        .unwrap()
}

/// The status and both streams, for assertion messages.
fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

// ---- crafted tarballs -------------------------------------------------------------------------

/// A file outside any store, made by the test, whose content and mtime must never change.
struct Victim {
    dir: PathBuf,
    file: PathBuf,
    mtime: i64,
    listing: Vec<String>,
}

impl Victim {
    fn new(base: &Path) -> Victim {
        let dir = base.join("outside");
        fs::create_dir(&dir).unwrap();
        let file = dir.join("victim");
        fs::write(&file, "victim content\n").unwrap();
        let mtime = fs::metadata(&file).unwrap().mtime();
        let mut v = Victim {
            dir,
            file,
            mtime,
            listing: Vec::new(),
        };
        v.listing = v.list();
        v
    }
    fn list(&self) -> Vec<String> {
        let mut l: Vec<String> = fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        l.sort();
        l
    }
    fn assert_untouched(&self, what: &str) {
        assert_eq!(
            fs::read_to_string(&self.file).unwrap(),
            "victim content\n",
            "{what}: the victim's content changed"
        );
        let m = fs::metadata(&self.file).unwrap();
        assert_eq!(m.mtime(), self.mtime, "{what}: the victim's mtime changed");
        assert_eq!(m.nlink(), 1, "{what}: the victim got a hard link");
        assert_eq!(
            self.list(),
            self.listing,
            "{what}: the victim's directory changed"
        );
    }
}

fn unpack(
    tar: &[u8],
    dest: &Path,
) -> Result<hybox::image::UnpackReport, hybox::image::UnpackError> {
    fs::create_dir_all(dest).unwrap();
    unpack_layer(&mut &tar[..], dest, "sha256:test-layer")
}

#[test]
fn dotdot_and_absolute_paths_are_refused_with_the_entry_named() {
    let b = base();
    let v = Victim::new(b.path());
    let dest = b.path().join("store/layer");
    let abs = v.file.to_str().unwrap().to_string();
    for name in [
        "../outside/victim",
        "a/../../../outside/victim",
        abs.as_str(),
    ] {
        let t = raw_tar(&[Raw {
            data: b"pwned\n",
            ..raw(name, tar::EntryType::Regular)
        }]);
        let e = unpack(&t, &dest).unwrap_err().to_string();
        assert!(
            e.contains("sha256:test-layer") && e.contains(name),
            "{name}: {e}"
        );
        v.assert_untouched(name);
    }
}

#[test]
fn a_file_through_a_planted_symlink_is_refused() {
    let b = base();
    let v = Victim::new(b.path());
    let dest = b.path().join("store/layer");
    let target = v.dir.to_str().unwrap().as_bytes().to_vec();
    let t = raw_tar(&[
        Raw {
            link: &target,
            ..raw("link", tar::EntryType::Symlink)
        },
        Raw {
            data: b"pwned\n",
            ..raw("link/victim", tar::EntryType::Regular)
        },
    ]);
    let e = unpack(&t, &dest).unwrap_err().to_string();
    assert!(e.contains("link/victim") && e.contains("symlink"), "{e}");
    v.assert_untouched("file through a symlinked parent");
    // A relative symlink that climbs out, then a directory and a file under it.
    let dest2 = b.path().join("store/layer2");
    let t = raw_tar(&[
        Raw {
            link: b"../../outside",
            ..raw("up", tar::EntryType::Symlink)
        },
        Raw {
            data: b"pwned\n",
            ..raw("up/victim", tar::EntryType::Regular)
        },
    ]);
    assert!(unpack(&t, &dest2).is_err());
    v.assert_untouched("file through a relative climbing symlink");
    // A symlink to the victim, then a regular file of the same name: the link is replaced, the
    // victim is not written through it.
    let dest3 = b.path().join("store/layer3");
    let file_target = v.file.to_str().unwrap().as_bytes().to_vec();
    let t = raw_tar(&[
        Raw {
            link: &file_target,
            ..raw("f", tar::EntryType::Symlink)
        },
        Raw {
            data: b"pwned\n",
            ..raw("f", tar::EntryType::Regular)
        },
    ]);
    unpack(&t, &dest3).unwrap();
    v.assert_untouched("a file replacing a symlink to the victim");
    assert_eq!(fs::read_to_string(dest3.join("f")).unwrap(), "pwned\n");
    assert!(!fs::symlink_metadata(dest3.join("f")).unwrap().is_symlink());
}

#[test]
fn hardlinks_outside_the_layer_or_to_non_files_are_refused() {
    let b = base();
    let v = Victim::new(b.path());
    let dest = b.path().join("store/layer");
    let abs = v.file.to_str().unwrap().as_bytes().to_vec();
    for (i, target) in [abs.as_slice(), b"../outside/victim", b"victim"]
        .iter()
        .enumerate()
    {
        let t = raw_tar(&[Raw {
            link: target,
            ..raw("hl", tar::EntryType::Link)
        }]);
        let e = unpack(&t, &dest.join(i.to_string()))
            .unwrap_err()
            .to_string();
        assert!(e.contains("\"hl\"") && e.contains("hard link"), "{e}");
        v.assert_untouched("hard link");
    }
    // A hard link to a symlink this layer made (which points at the victim): refused.
    let t = raw_tar(&[
        Raw {
            link: &abs,
            ..raw("s", tar::EntryType::Symlink)
        },
        Raw {
            link: b"s",
            ..raw("hl", tar::EntryType::Link)
        },
    ]);
    assert!(unpack(&t, &dest.join("sym")).is_err());
    v.assert_untouched("hard link to a symlink");
    // The legitimate case: a link to a file of this layer.
    let t = raw_tar(&[
        Raw {
            data: b"data",
            ..raw("a", tar::EntryType::Regular)
        },
        Raw {
            link: b"a",
            ..raw("b", tar::EntryType::Link)
        },
    ]);
    let r = unpack(&t, &dest.join("ok")).unwrap();
    assert_eq!(r.hardlinks, 1);
    assert_eq!(fs::metadata(dest.join("ok/b")).unwrap().nlink(), 2);
}

#[test]
fn device_nodes_are_skipped_and_setid_bits_stripped() {
    let b = base();
    let dest = b.path().join("store/layer");
    let t = raw_tar(&[
        raw("null", tar::EntryType::Char),
        raw("sda", tar::EntryType::Block),
        Raw {
            mode: 0o6755,
            data: b"#!/bin/sh\n",
            ..raw("suid", tar::EntryType::Regular)
        },
        Raw {
            mode: 0o2775,
            ..raw("sgid-dir", tar::EntryType::Directory)
        },
    ]);
    let r = unpack(&t, &dest).unwrap();
    assert!(!dest.join("null").exists() && !dest.join("sda").exists());
    assert!(
        r.neutralised.contains(&Neutralised::DeviceSkipped {
            entry: "null".into()
        }),
        "{r:?}"
    );
    assert!(
        r.neutralised.contains(&Neutralised::DeviceSkipped {
            entry: "sda".into()
        }),
        "{r:?}"
    );
    assert_eq!(
        fs::metadata(dest.join("suid")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(
        fs::metadata(dest.join("sgid-dir")).unwrap().mode() & 0o7777,
        0o775
    );
    assert!(r.neutralised.contains(&Neutralised::SetidStripped {
        entry: "suid".into(),
        mode: 0o6755
    }));
}

#[test]
fn an_import_names_the_image_the_layer_digest_and_the_entry() {
    let b = base();
    let v = Victim::new(b.path());
    let store = Store::open(&b.path().join("store")).unwrap();
    let t = raw_tar(&[Raw {
        data: b"pwned\n",
        ..raw("../../outside/victim", tar::EntryType::Regular)
    }]);
    let built = Image::new("hybox.test/evil:latest")
        .raw_layer(t)
        .trim()
        .write_layout(&b.path().join("evil"))
        .unwrap();
    let e = store
        .import(&b.path().join("evil"), &Selector::Only)
        .unwrap_err();
    let msg = hybox::error_chain(&e);
    assert!(msg.contains("hybox.test/evil:latest"), "{msg}");
    assert!(msg.contains(&built.layers[0].digest), "{msg}");
    assert!(msg.contains("../../outside/victim"), "{msg}");
    v.assert_untouched("import");
    // Nothing of the refused layer stays: not in layers/, not in tmp/.
    for d in ["layers/sha256", "tmp", "images"] {
        assert_eq!(
            fs::read_dir(b.path().join("store").join(d))
                .unwrap()
                .count(),
            0,
            "{d}"
        );
    }
}

#[test]
fn a_blob_that_does_not_match_its_digest_is_refused() {
    let b = base();
    let store = Store::open(&b.path().join("store")).unwrap();
    let dir = b.path().join("img");
    let built = Image::new("hybox.test/t:latest")
        .file("a", b"original".to_vec(), 0o644)
        .write_layout(&dir)
        .unwrap();
    // Replace the layer blob with another valid gzip tar.
    let other = Image::new("x")
        .file("a", b"tampered".to_vec(), 0o644)
        .build()
        .unwrap();
    fs::write(
        dir.join("blobs/sha256").join(built.layers[0].hex()),
        &other.blobs[&other.layers[0].digest],
    )
    .unwrap();
    let msg = hybox::error_chain(&store.import(&dir, &Selector::Only).unwrap_err());
    assert!(
        msg.contains(&built.layers[0].digest) && msg.contains("expected"),
        "{msg}"
    );
    assert_eq!(
        fs::read_dir(b.path().join("store/layers/sha256"))
            .unwrap()
            .count(),
        0
    );
}

// ---- the store --------------------------------------------------------------------------------

#[test]
fn all_three_formats_and_compressions_import_and_a_shared_base_layer_is_unpacked_once() {
    let b = base();
    let store = Store::open(&b.path().join("store")).unwrap();
    let base_layer = |name: &str| {
        Image::new(name)
            .file("etc/os-release", b"ID=hybox-test\n".to_vec(), 0o644)
            .dir("data", 0o777)
            .new_layer()
    };
    let one = base_layer("hybox.test/one:latest").file("one", b"1".to_vec(), 0o644);
    let two = base_layer("hybox.test/two:v2")
        .file("two", b"2".to_vec(), 0o644)
        .compression(Compression::Zstd);
    one.write_layout(&b.path().join("one")).unwrap();
    two.write_oci_archive(&b.path().join("two.oci.tar"))
        .unwrap();
    let (r1, reused1) = store
        .import(&b.path().join("one"), &Selector::Only)
        .unwrap();
    assert_eq!(reused1, vec![false, false]);
    let (r2, reused2) = store
        .import(&b.path().join("two.oci.tar"), &Selector::Tag("v2".into()))
        .unwrap();
    // Same base layer (same diff id, although compressed differently): reused.
    assert_eq!(reused2, vec![true, false]);
    assert_eq!(r1.layers[0], r2.layers[0]);
    assert_eq!(
        fs::read_dir(b.path().join("store/layers/sha256"))
            .unwrap()
            .count(),
        3
    );
    // docker-archive of the first image: every layer already there.
    one.write_docker_archive(&b.path().join("one.docker.tar"))
        .unwrap();
    let (r3, reused3) = store
        .import(&b.path().join("one.docker.tar"), &Selector::Only)
        .unwrap();
    assert_eq!(reused3, vec![true, true]);
    assert_eq!(r3.id, r1.id, "same config, same image id");
    assert_eq!(
        fs::read(store.layer_root(&r2.layers[1]).join("two")).unwrap(),
        b"2"
    );
    // Names, rm and prune: removing one image leaves the shared layer to the other.
    assert_eq!(store.find("hybox.test/two:v2").unwrap().id, r2.id);
    assert_eq!(store.find(r1.id.short()).unwrap().id, r1.id);
    store.remove("hybox.test/one:latest").unwrap();
    let pruned = store.prune().unwrap();
    assert_eq!(pruned.layers, vec![r1.layers[1].clone()]);
    assert!(store.layer_root(&r2.layers[0]).is_dir());
    assert!(store.find("hybox.test/one").is_err());
}

#[test]
fn concurrent_imports_of_one_layer_leave_one_complete_copy() {
    let b = base();
    let root = b.path().join("store");
    Store::open(&root).unwrap();
    let img = Image::new("hybox.test/c:latest").file("big", vec![7u8; 4 << 20], 0o644);
    img.write_layout(&b.path().join("c")).unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let root = root.clone();
            let src = b.path().join("c");
            std::thread::spawn(move || {
                Store::open(&root)
                    .unwrap()
                    .import(&src, &Selector::Only)
                    .unwrap()
            })
        })
        .collect();
    let records: Vec<_> = threads.into_iter().map(|t| t.join().unwrap().0).collect();
    let store = Store::open(&root).unwrap();
    assert_eq!(fs::read_dir(root.join("layers/sha256")).unwrap().count(), 1);
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    assert_eq!(
        fs::read(store.layer_root(&records[0].layers[0]).join("big")).unwrap(),
        vec![7u8; 4 << 20]
    );
}

#[test]
fn whiteouts_become_overlay_whiteouts_and_hide_lower_files_in_a_run() {
    if !common::privileged("whiteouts_become_overlay_whiteouts_and_hide_lower_files_in_a_run") {
        return;
    }
    let b = base();
    let st = b.path().join("store");
    let store = Store::open(&st).unwrap();
    let img = Image::new("hybox.test/wh:latest")
        .file("files", guest("files"), 0o755)
        .file("etc/a", b"a\n".to_vec(), 0o644)
        .file("etc/b", b"b\n".to_vec(), 0o644)
        .file("old/x", b"x\n".to_vec(), 0o644)
        .new_layer()
        .file("etc/.wh.a", Vec::new(), 0o644)
        .file("old/.wh..wh..opq", Vec::new(), 0o644)
        .file("old/y", b"y\n".to_vec(), 0o644)
        .config(Config {
            entrypoint: vec!["/files".into()],
            ..Config::default()
        });
    img.write_layout(&b.path().join("wh")).unwrap();
    let (rec, _) = store.import(&b.path().join("wh"), &Selector::Only).unwrap();
    let top = store.layer_root(&rec.layers[1]);
    let wh = fs::symlink_metadata(top.join("etc/a")).unwrap();
    assert!(
        wh.file_type().is_char_device() && wh.rdev() == 0,
        "a 0/0 whiteout"
    );
    assert!(!top.join("etc/.wh.a").exists());
    assert!(hybox::image::has_xattr(
        &top.join("old"),
        "trusted.overlay.opaque",
        b"y"
    ));
    let run = |input: &str| {
        hybox(
            &st,
            &["run", "hybox.test/wh:latest", "--", input, "/tmp/out"],
        )
        .status
        .code()
    };
    assert_eq!(run("/etc/b"), Some(0));
    assert_eq!(run("/old/y"), Some(0));
    // `files` exits 3 when it cannot read its input: hidden by the whiteout and the opaque dir.
    assert_eq!(run("/etc/a"), Some(3));
    assert_eq!(run("/old/x"), Some(3));
}

// ---- runs -------------------------------------------------------------------------------------

#[test]
fn an_image_runs_from_each_format_by_path_tag_and_name() {
    if !common::privileged("an_image_runs_from_each_format_by_path_tag_and_name") {
        return;
    }
    let b = base();
    let st = b.path().join("store");
    let img = Image::new("hybox.test/hello:latest")
        .file("hello", guest("hello"), 0o755)
        .config(Config {
            entrypoint: vec!["/hello".into()],
            ..Config::default()
        });
    img.write_layout(&b.path().join("layout")).unwrap();
    img.write_oci_archive(&b.path().join("hello.oci.tar"))
        .unwrap();
    img.write_docker_archive(&b.path().join("hello.docker.tar"))
        .unwrap();
    let layout = b.path().join("layout");
    let oci_tag = format!("{}:latest", b.path().join("hello.oci.tar").display());
    let docker = b.path().join("hello.docker.tar");
    for image in [
        layout.to_str().unwrap(),
        oci_tag.as_str(),
        docker.to_str().unwrap(),
        "hybox.test/hello:latest",
        "hybox.test/hello",
    ] {
        let o = hybox(&st, &["run", image]);
        assert!(o.status.success(), "{image}: {}", text(&o));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "hello from hybox\n",
            "{image}"
        );
    }
    let o = hybox(&st, &["image", "ls"]);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("hybox.test/hello:latest"),
        "{}",
        text(&o)
    );
    // Nothing of the runs stays mounted or on disk.
    assert_eq!(fs::read_dir(st.join("run")).unwrap().count(), 0);
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(st.to_str().unwrap()),
        "a run's mount is left"
    );
}

#[test]
fn the_image_config_gives_way_to_the_policy_and_the_flags() {
    if !common::privileged("the_image_config_gives_way_to_the_policy_and_the_flags") {
        return;
    }
    let b = base();
    let st = b.path().join("store");
    let img = Image::new("hybox.test/env:latest")
        .file("bin/env", guest("env"), 0o755)
        .dir("w", 0o755)
        .dir("data", 0o755)
        .config(Config {
            entrypoint: vec!["env".into()],
            cmd: vec!["from-cmd".into()],
            env: vec![
                "PATH=/bin".into(),
                "FROM_IMAGE=image".into(),
                "OVERRIDDEN=image".into(),
                "BY_FLAG=image".into(),
            ],
            working_dir: Some("/w".into()),
            user: Some("4242:4343".into()),
            ..Config::default()
        });
    img.write_layout(&b.path().join("env")).unwrap();
    let policy = b.path().join("policy.json");
    fs::write(
        &policy,
        r#"{"version": 1, "env": {"OVERRIDDEN": "policy"}}"#,
    )
    .unwrap();
    let image = b.path().join("env");
    let o = hybox(
        &st,
        &[
            "run",
            "--json",
            "-p",
            policy.to_str().unwrap(),
            "-e",
            "BY_FLAG=flag",
            image.to_str().unwrap(),
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    for want in [
        "arg[1]=from-cmd",
        "env FROM_IMAGE=image",
        "env OVERRIDDEN=policy",
        "env BY_FLAG=flag",
        "env PATH=/bin",
    ] {
        assert!(out.contains(want), "{want}: {out}");
    }
    let report: serde_json::Value = serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap();
    assert_eq!(report["image"]["workdir"], "/w");
    assert_eq!(report["image"]["uid"], 4242);
    assert_eq!(report["image"]["gid"], 4343);
    assert_eq!(report["image"]["program"], "/bin/env");
    // Flags win over the image: args replace Cmd, --workdir and --user replace WorkingDir and User.
    let o = hybox(
        &st,
        &[
            "run",
            "--json",
            "--workdir",
            "/data",
            "--user",
            "7",
            image.to_str().unwrap(),
            "--",
            "from-flag",
        ],
    );
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("arg[1]=from-flag") && !out.contains("from-cmd"),
        "{out}"
    );
    let report: serde_json::Value = serde_json::from_str(&out[out.find("{\n").unwrap()..]).unwrap();
    assert_eq!(report["image"]["workdir"], "/data");
    assert_eq!(report["image"]["uid"], 7);
}

#[test]
fn nothing_written_survives_the_run_except_in_a_volume() {
    if !common::privileged("nothing_written_survives_the_run_except_in_a_volume") {
        return;
    }
    let b = base();
    let st = b.path().join("store");
    let img = Image::new("hybox.test/files:latest")
        .file("files", guest("files"), 0o755)
        .file("etc/in", b"one\ntwo\n".to_vec(), 0o644)
        .dir("data", 0o777)
        .config(Config {
            entrypoint: vec!["/files".into()],
            ..Config::default()
        });
    img.write_layout(&b.path().join("files")).unwrap();
    let image = b.path().join("files");
    let image = image.to_str().unwrap();
    let o = hybox(&st, &["run", image, "--", "/etc/in", "/data/out"]);
    assert!(
        o.status.success(),
        "the first run writes into the image's /data: {}",
        text(&o)
    );
    let o = hybox(&st, &["run", image, "--", "/data/out", "/data/out2"]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "the second run must not see the first's write: {}",
        text(&o)
    );
    // The store's layers are unchanged by the write.
    let store = Store::open(&st).unwrap();
    let rec = store.find("hybox.test/files:latest").unwrap();
    assert!(!store.layer_root(&rec.layers[0]).join("data/out").exists());
    // A read-only root refuses the write.
    let ro = b.path().join("ro.json");
    fs::write(
        &ro,
        r#"{"version": 1, "filesystem": {"writable_layer": null}}"#,
    )
    .unwrap();
    let o = hybox(
        &st,
        &[
            "run",
            "-p",
            ro.to_str().unwrap(),
            image,
            "--",
            "/etc/in",
            "/data/out",
        ],
    );
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    // A volume keeps what is written to it.
    let vol = b.path().join("vol");
    fs::create_dir(&vol).unwrap();
    fs::set_permissions(&vol, fs::Permissions::from_mode(0o777)).unwrap();
    let spec = format!("{}:/vol:rw", vol.display());
    let o = hybox(
        &st,
        &["run", "--volume", &spec, image, "--", "/etc/in", "/vol/out"],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        fs::read_to_string(vol.join("out")).unwrap(),
        "2 lines, 8 bytes\n"
    );
}

// ---- the unpacker never panics and never writes outside ---------------------------------------

fn entry_kind() -> impl Strategy<Value = tar::EntryType> {
    prop_oneof![
        Just(tar::EntryType::Regular),
        Just(tar::EntryType::Directory),
        Just(tar::EntryType::Symlink),
        Just(tar::EntryType::Link),
        Just(tar::EntryType::Char),
        Just(tar::EntryType::Fifo),
    ]
}

fn entry_name() -> impl Strategy<Value = String> {
    let comp = prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("..".to_string()),
        Just(".".to_string()),
        Just(".wh.a".to_string()),
        Just("".to_string()),
        "[a-c]{1,3}",
    ];
    (any::<bool>(), prop::collection::vec(comp, 1..4)).prop_map(|(abs, c)| {
        let p = c.join("/");
        if abs {
            format!("/{p}")
        } else {
            p
        }
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn random_and_mutated_tars_never_panic_or_escape(
        entries in prop::collection::vec((entry_name(), entry_kind(), entry_name(), any::<u16>()), 1..8),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let b = base();
        let v = Victim::new(b.path());
        let outside = v.dir.to_str().unwrap().to_string();
        let raws: Vec<(Vec<u8>, tar::EntryType, Vec<u8>, u32)> = entries
            .iter()
            .map(|(n, k, l, m)| {
                // Some links point at the victim's directory by absolute path.
                let link = if l.starts_with('/') { format!("{outside}/victim") } else { l.clone() };
                (n.as_bytes()[..n.len().min(99)].to_vec(), *k, link.into_bytes(), u32::from(*m) & 0o7777)
            })
            .collect();
        let refs: Vec<Raw<'_>> = raws
            .iter()
            .map(|(n, k, l, m)| Raw { name: n, kind: *k, link: &l[..l.len().min(99)], data: b"x", mode: *m })
            .collect();
        let mut t = raw_tar(&refs);
        for (i, byte) in flips {
            let i = i.index(t.len());
            t[i] = byte;
        }
        if let Some(c) = cut {
            t.truncate(c.index(t.len()));
        }
        let dest = b.path().join("store/layer");
        let _ = unpack(&t, &dest);
        v.assert_untouched("random tar");
        let mut top: Vec<String> = fs::read_dir(b.path()).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        top.sort();
        prop_assert_eq!(top, vec!["outside".to_string(), "store".to_string()]);
        let store_top: Vec<_> = fs::read_dir(b.path().join("store")).unwrap().map(|e| e.unwrap().file_name()).collect();
        prop_assert_eq!(store_top, vec![std::ffi::OsString::from("layer")]);
    }
}
