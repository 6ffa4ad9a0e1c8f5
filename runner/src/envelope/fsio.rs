//! The thin file layer under the envelope: every cgroup file hybox touches goes through [`CgroupFs`].
//!
//! Why not cgroups-rs for the file I/O: cgroups-rs 0.5 hard-codes its roots (`/sys/fs/cgroup` for v2,
//! `/proc/self/mountinfo` for v1) so it cannot be pointed at a fake tree, and several of its setters
//! drop write errors (e.g. `Cgroup::add_task` on some controllers, `apply` ignoring per-resource
//! failures). hybox therefore does the I/O itself: one `write(2)` per value, every value read back by
//! the caller. cgroups-rs is still used where it fits: parsing `/proc/self/mountinfo` to confirm that
//! the real v1 controller directories are cgroup mounts (see `host/cgroup.rs`).
//!
//! The trait is passed in (never switched by `cfg!(test)`): [`RealFs`] for the host, and a fake in
//! the unit tests that emulates what the kernel does on `mkdir` and `write` (control files appear,
//! limits are rounded to pages) so both cgroup versions are covered on any machine.

use std::io::{self, Write};
use std::path::Path;

use super::EnvelopeError;

/// File operations on a cgroup filesystem.
pub(crate) trait CgroupFs: Send + Sync + std::fmt::Debug {
    /// `mkdir(2)`; `EEXIST` is returned as an error (callers decide whether it is fine).
    fn mkdir(&self, path: &Path) -> io::Result<()>;
    /// One `write(2)` of `value` to an existing control file (cgroupfs never creates files).
    fn write(&self, path: &Path, value: &str) -> io::Result<()>;
    /// The whole control file.
    fn read(&self, path: &Path) -> io::Result<String>;
    /// [`write`](CgroupFs::write), then the whole file as the kernel shows it afterwards (the
    /// read-back every limit gets).
    fn write_then_read(&self, path: &Path, value: &str) -> io::Result<String> {
        self.write(path, value)?;
        self.read(path)
    }
    /// Removes an (emptied) cgroup directory.
    fn rmdir(&self, path: &Path) -> io::Result<()>;
    /// The names of the sub-directories (child cgroups) of `path`.
    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>>;
    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }
}

/// The host's cgroup filesystem.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct RealFs;

impl CgroupFs for RealFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        // No O_CREAT: a missing control file means a missing controller, never a file to create.
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        write_value(&mut f, value)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        read_all(&std::fs::File::open(path)?)
    }

    fn write_then_read(&self, path: &Path, value: &str) -> io::Result<String> {
        // One open for both: cgroupfs serves a read at offset 0 of a file opened read-write with
        // the value as it stands after the write (an envelope's creation does this for every
        // limit, so the saved open/close pairs are a measurable part of it).
        let mut f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        write_value(&mut f, value)?;
        read_all(&f)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        // rmdir(2) on cgroupfs removes the directory with its control files; it fails with EBUSY
        // while processes (or dying tasks) remain.
        std::fs::remove_dir(path)
    }

    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(path)? {
            let entry = entry?;
            if entry.file_type()?.is_dir() {
                out.push(entry.file_name().to_string_lossy().into_owned());
            }
        }
        out.sort();
        Ok(out)
    }
}

/// cgroupfs parses each write(2) as one value: write it in one call and treat a short write as a
/// failure rather than splitting the value.
fn write_value(f: &mut std::fs::File, value: &str) -> io::Result<()> {
    let n = f.write(value.as_bytes())?;
    if n != value.len() {
        return Err(io::Error::new(
            io::ErrorKind::WriteZero,
            format!("short write: {n} of {} bytes", value.len()),
        ));
    }
    Ok(())
}

/// The whole file from offset 0 with plain `pread(2)`s: not `read_to_string`, which first stats the
/// file and seeks for a size hint, and cgroupfs reports size 0 anyway. Control files are small; one
/// read takes nearly all of them.
fn read_all(f: &std::fs::File) -> io::Result<String> {
    use std::os::unix::fs::FileExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = f.read_at(&mut buf, out.len() as u64)?;
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8(out).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Reads a file with a single number.
pub(crate) fn read_u64(fs: &dyn CgroupFs, path: &Path) -> Result<u64, EnvelopeError> {
    let text = fs
        .read(path)
        .map_err(|e| EnvelopeError::io("read", path, e))?;
    text.trim().parse().map_err(|_| EnvelopeError::Parse {
        path: path.into(),
        content: text,
        why: "not a number",
    })
}

/// The value of `key` in a flat-keyed file (`key value` per line: memory.events, cpu.stat, pids.events,
/// memory.oom_control, cpuacct.stat).
pub(crate) fn parse_key(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let mut it = l.split_whitespace();
        (it.next() == Some(key))
            .then(|| it.next()?.parse().ok())
            .flatten()
    })
}

pub(crate) fn read_key(
    fs: &dyn CgroupFs,
    path: &Path,
    key: &'static str,
) -> Result<u64, EnvelopeError> {
    let text = fs
        .read(path)
        .map_err(|e| EnvelopeError::io("read", path, e))?;
    parse_key(&text, key).ok_or(EnvelopeError::Parse {
        path: path.into(),
        content: text,
        why: key,
    })
}

/// A number, or `unlimited` for the kernel's words for none (`max`, `-1`).
pub(crate) fn read_max(
    fs: &dyn CgroupFs,
    path: &std::path::Path,
    unlimited: u64,
) -> Result<u64, EnvelopeError> {
    let text = fs
        .read(path)
        .map_err(|e| EnvelopeError::io("read", path, e))?;
    match text.split_whitespace().next() {
        Some("max") | Some("-1") => Ok(unlimited),
        _ => read_u64(fs, path),
    }
}
