//! hybox-runc's wasm compile cache under containerd's CRI with no `HOME` (as systemd starts a node's
//! containerd): the runtime keeps its own private cache (`/var/cache/hybox` as root, docs/oci.md), so
//! the first wasm container of an image compiles its module and the next one loads it from there.
//! Evidence from the runtime's side: the cache entry appears with the first container and is not
//! rewritten by the second (a compile replaces the entry's file with a new one: a new inode), while
//! both containers run. (The runtime's exit line in `log.json` says so too, but containerd deletes
//! the bundle with it as soon as the task exits.)

mod common;
#[path = "cri_support/mod.rs"]
#[allow(dead_code)] // the test takes part of what tests/cri.rs needs
mod cri_support;
#[path = "oci_support.rs"]
mod support;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::time::Duration;

use cri_support::pods::{self, MIB};
use cri_support::{Node, WASM};

const CACHE: &str = "/var/cache/hybox";

/// The cache entries of a module (`SHA256-ENGINE.hyboxc`).
fn entries(source_sha256: &str) -> Vec<PathBuf> {
    std::fs::read_dir(CACHE)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(source_sha256) && n.ends_with(".hyboxc"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn environ(pid: i32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn cri_wasm_containers_share_the_runtime_cache_without_home() {
    if !common::privileged("cri_wasm_containers_share_the_runtime_cache_without_home") {
        return;
    }
    let node = Node::start_with(|o| {
        o.env_remove = ["HOME", "XDG_CACHE_HOME", "HYBOX_CACHE_DIR"]
            .map(String::from)
            .to_vec();
    });
    let env = environ(node.ctd.pid());
    assert!(
        !env.iter()
            .any(|v| v.starts_with("HOME=") || v.starts_with("XDG_CACHE_HOME=")),
        "containerd still has HOME or XDG_CACHE_HOME: {env:?}"
    );
    let src = hex_sha256(&support::guest("ticker.wasm"));
    // A clean start: the first container must compile (an entry left by an earlier run is
    // removed; any other user of the cache just compiles it again).
    for e in entries(&src) {
        std::fs::remove_file(&e).unwrap();
    }
    let pod = pods::run_pod(&node, "hybox", pods::pod_config(&node, "cached"))
        .unwrap_or_else(|e| panic!("RunPodSandbox: {e}\n{}", node.ctd.log_tail()));
    let run = |name: &str| {
        let id = pods::create(
            &node,
            &pod,
            pods::container_config(name, WASM, &[], &[name, "200"], 64 * MIB),
        )
        .and_then(|id| pods::start(&node, &id).map(|()| id))
        .unwrap_or_else(|e| panic!("wasm container {name}: {e}\n{}", node.ctd.log_tail()));
        pods::wait_line(
            &pod,
            name,
            "stderr",
            &format!("{name} started"),
            Duration::from_millis(20),
            Duration::from_secs(60),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        id
    };
    let first = run("first");
    let made = entries(&src);
    assert_eq!(
        made.len(),
        1,
        "one cache entry in {CACHE} for the module: {made:?}"
    );
    let meta = std::fs::metadata(CACHE).unwrap();
    assert_eq!(meta.uid(), 0, "{CACHE} owned by root");
    assert_eq!(meta.mode() & 0o777, 0o700, "{CACHE} is private");
    let before = std::fs::metadata(&made[0]).unwrap();
    let second = run("second");
    let after = std::fs::metadata(&made[0]).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec()),
        "the second container rewrote the entry: it compiled the module again"
    );
    for id in [&first, &second] {
        pods::stop_and_remove(&node, id, 1).unwrap();
    }
    pods::stop_and_remove_pod(&node, &pod).unwrap();
    let left = node.ctd.stop();
    assert!(left.is_empty(), "left behind after teardown: {left:?}");
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}
