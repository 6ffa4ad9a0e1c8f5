//! Helpers shared by the integration tests.
#![allow(dead_code)]

// The OCI harness (docs/notes-oci.md): a private containerd and dockerd, OCI image tarballs built
// by the test, the process/cgroup census.
pub mod containerd; // needs procs
pub mod dockerd; // needs procs
pub mod oci_image;
pub mod procs;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("runner/ has a parent")
        .to_path_buf()
}

/// Whether this test may use privileged features (root: namespaces, real cgroups). Without root the
/// test prints why it skips and returns false, unless `HYBOX_REQUIRE_PRIVILEGED=1` (set by `.ci/run`),
/// in which case a skip is a failure.
pub fn privileged(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        return true;
    }
    let why = format!("{test}: skipped: needs root (namespaces and real cgroups)");
    if std::env::var("HYBOX_REQUIRE_PRIVILEGED").as_deref() == Ok("1") {
        panic!("{why}, and HYBOX_REQUIRE_PRIVILEGED=1 forbids skipping");
    }
    eprintln!("{why}");
    false
}

/// The example guests, built once per test process by `examples/build.sh`.
pub fn examples_out() -> PathBuf {
    static BUILD: Once = Once::new();
    let out = repo().join("examples/out");
    BUILD.call_once(|| {
        let status = Command::new("bash")
            .arg(repo().join("examples/build.sh"))
            .status()
            .expect("run examples/build.sh");
        assert!(status.success(), "examples/build.sh failed");
    });
    out
}

/// A native example binary.
pub fn native_guest(name: &str) -> PathBuf {
    examples_out().join("native").join(name)
}

/// A wasm example module.
pub fn wasm_guest(name: &str) -> PathBuf {
    examples_out().join("wasm").join(format!("{name}.wasm"))
}

/// The `hybox` binary under test.
pub fn hybox() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hybox"))
}
