//! What tests/oci.rs and tests/oci_ctr.rs share: the `hybox-runc` binary and the example guests.
//! (tests/docker.rs installs hybox-runc the other way, as a link to the hybox binary.)

use std::path::PathBuf;

use super::common;

/// `hybox-runc`, its own binary (the OCI runtime without the wasm worker, which it runs from the
/// `hybox` binary beside it: both are in cargo's target dir).
pub fn hybox_runc() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hybox-runc"))
}

pub fn guest(name: &str) -> Vec<u8> {
    let p = common::repo().join("examples/out/wasm").join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (build the guests: examples/build.sh)", p.display()))
}
