//! The shim this binary carries: `hybox-shim`, built by `runner/build.rs` (statically linked for
//! x86_64-unknown-linux-musl when that target is installed) and embedded here at compile time.
//!
//! At its first native run a process copies it into an anonymous memory file, seals the file against
//! any change, and from then on executes the shim from it by fd. There is no shim on disk: nothing a
//! workload or another user could replace or open for writing (the CVE-2019-5736 pattern), and nothing
//! to look up next to the executable. [`HostConfig::shim_path`](crate::HostConfig::shim_path) still
//! runs a shim file instead, for work on the shim itself.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::sync::OnceLock;

/// The shim's ELF image.
static SHIM_ELF: &[u8] = include_bytes!(env!("HYBOX_SHIM_ELF"));

/// The target the embedded shim was built for (`x86_64-unknown-linux-musl`: static).
pub const SHIM_TARGET: &str = env!("HYBOX_SHIM_TARGET");

/// `MFD_EXEC` (Linux 6.3): an executable memory file even where `vm.memfd_noexec` makes that opt-in.
const MFD_EXEC: libc::c_uint = 0x10;

/// The sealed memory file of [`embedded`], created once per process.
static FILE: OnceLock<Result<OwnedFd, (i32, &'static str)>> = OnceLock::new();

/// Starts creating the memory file of [`embedded`] on a thread of its own, if no call did yet: copying
/// the shim's ~700 KB into fresh shmem pages is ~0.3 ms that a one-shot run's envelope creation hides
/// (the first [`embedded`] waits for it). A thread that cannot be spawned leaves the work to
/// [`embedded`]. The thread allocates: a host that forks while it may still run (a forked wasm
/// worker, [`crate::host::WorkerStart::fork`]) must not run a native sandbox in the same process.
pub fn prefetch() {
    if FILE.get().is_none() {
        let _ = std::thread::Builder::new()
            .name("hybox-shim-memfd".into())
            .stack_size(64 * 1024)
            .spawn(|| drop(embedded()));
    }
}

/// The sealed memory file holding the embedded shim, created once per process.
pub fn embedded() -> io::Result<BorrowedFd<'static>> {
    match FILE.get_or_init(|| create().map_err(|(e, step)| (e.raw_os_error().unwrap_or(0), step))) {
        Ok(fd) => Ok(fd.as_fd()),
        Err((errno, step)) => Err(io::Error::new(
            io::Error::from_raw_os_error(*errno).kind(),
            format!(
                "the embedded hybox-shim: {step}: {}",
                io::Error::from_raw_os_error(*errno)
            ),
        )),
    }
}

fn create() -> Result<OwnedFd, (io::Error, &'static str)> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a NUL-terminated name and flags; the fd is owned right below.
    let mut fd = unsafe { libc::memfd_create(c"hybox-shim".as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // A kernel before 6.3 does not know MFD_EXEC (and has no memfd_noexec to need it).
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(c"hybox-shim".as_ptr(), flags) };
    }
    if fd < 0 {
        return Err((io::Error::last_os_error(), "memfd_create"));
    }
    // SAFETY: `fd` was just created and nothing else owns it.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    io::Write::write_all(&mut &file, SHIM_ELF).map_err(|e| (e, "write"))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own, with seal flags.
    if unsafe { libc::fcntl(fd, libc::F_ADD_SEALS, seals) } != 0 {
        return Err((io::Error::last_os_error(), "seal"));
    }
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn the_embedded_shim_is_a_sealed_elf() {
        assert_eq!(&SHIM_ELF[..4], b"\x7fELF");
        let fd = embedded().expect("memfd");
        // SAFETY: F_GET_SEALS on a live fd.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals & libc::F_SEAL_WRITE, libc::F_SEAL_WRITE);
        assert_eq!(seals & libc::F_SEAL_SEAL, libc::F_SEAL_SEAL);
        // The same file for the whole process.
        assert_eq!(embedded().expect("memfd").as_raw_fd(), fd.as_raw_fd());
        // Nobody can change it, not even this process.
        let w = std::fs::OpenOptions::new()
            .write(true)
            .open(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        if let Ok(mut w) = w {
            let e = io::Write::write_all(&mut w, b"x").expect_err("a write to the sealed shim");
            assert_eq!(e.raw_os_error(), Some(libc::EPERM));
        }
    }

    #[test]
    fn the_embedded_shim_is_static_when_built_for_musl() {
        if SHIM_TARGET != "x86_64-unknown-linux-musl" {
            eprintln!("shim built for {SHIM_TARGET}: not static");
            return;
        }
        // No program interpreter (PT_INTERP = 3) among the program headers.
        let phoff = u64::from_le_bytes(SHIM_ELF[0x20..0x28].try_into().unwrap()) as usize;
        let phentsize = u16::from_le_bytes(SHIM_ELF[0x36..0x38].try_into().unwrap()) as usize;
        let phnum = u16::from_le_bytes(SHIM_ELF[0x38..0x3a].try_into().unwrap()) as usize;
        for i in 0..phnum {
            let at = phoff + i * phentsize;
            let p_type = u32::from_le_bytes(SHIM_ELF[at..at + 4].try_into().unwrap());
            assert_ne!(p_type, 3, "the embedded shim has an interpreter");
        }
    }
}
