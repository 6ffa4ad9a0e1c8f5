//! What tests/oci.rs and tests/oci_ctr.rs share: the `hybox-runc` link and the example guests.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use super::common;

/// `hybox-runc`: a link to the hybox binary under that name (argv[0] dispatch).
pub fn hybox_runc() -> PathBuf {
    static LINK: OnceLock<PathBuf> = OnceLock::new();
    LINK.get_or_init(|| {
        // In cargo's scratch dir for integration tests: nothing is left in /tmp.
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(concat!("hybox-runc-link-", env!("CARGO_CRATE_NAME")));
        std::fs::create_dir_all(&dir).unwrap();
        let link = dir.join("hybox-runc");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_hybox"), &link).unwrap();
        link
    })
    .clone()
}

pub fn guest(name: &str) -> Vec<u8> {
    let p = common::repo().join("examples/out/wasm").join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (build the guests: examples/build.sh)", p.display()))
}
