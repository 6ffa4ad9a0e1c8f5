//! The kernel's Landlock ABI: read once by whoever needs it (the wasm backend's hardened worker, the
//! native backend's shim plan, `hybox doctor`), probed the same way everywhere.

use std::io;

/// The Landlock ABI version of the running kernel, or the errno if Landlock is unavailable
/// (`ENOSYS`: not built in; `EOPNOTSUPP`: built in but disabled at boot, `lsm=` without `landlock`).
pub fn landlock_abi() -> Result<i64, io::Error> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr, size 0 and the VERSION flag, landlock_create_ruleset only returns the
    // ABI version (or -1 with errno); it touches no memory of ours.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if v < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(v)
    }
}
