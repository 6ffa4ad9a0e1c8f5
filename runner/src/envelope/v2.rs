//! cgroup v2: controllers delegated down to the parent, limits, usage and kill on the leaf.
//!
//! Files (Documentation/admin-guide/cgroup-v2.rst): `+memory +cpu +pids` in every ancestor's
//! cgroup.subtree_control (an ancestor other than the root must hold no processes: the
//! no-internal-process rule), then on the leaf memory.max, memory.swap.max = 0, memory.oom.group = 1
//! (an OOM kills the whole run, not one random process), cpu.max `quota period`, pids.max. Usage from
//! memory.peak, memory.events (`oom_kill`), cpu.stat (`user_usec`, `system_usec`), pids.events
//! (`max`). Kill via cgroup.kill (5.14+), else pids.max = 0 + SIGKILL loop.

use std::path::Path;

use super::create::{cpu_quota, page_size, unavailable_or_io, write_checked};
use super::fsio::{read_key, read_u64, CgroupFs};
use super::teardown::{kill_loop, pids_to_kill, seal_and_kill};
use super::{Applied, EnvelopeError, Limits};
use crate::report::Usage;

const NEEDED: [&str; 3] = ["memory", "cpu", "pids"];

/// Creates `root/parent` and enables the needed controllers in the subtree_control of the root and of
/// every component of `parent` (only those missing: a delegated tree may not let us write above us).
pub(crate) fn prepare_parents(
    fs: &dyn CgroupFs,
    root: &Path,
    parent: &str,
) -> Result<(), EnvelopeError> {
    let mut dir = root.to_path_buf();
    enable(fs, &dir, true)?;
    for part in parent.split('/') {
        dir.push(part);
        match fs.mkdir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unavailable_or_io("mkdir", &dir, e)),
        }
        enable(fs, &dir, false)?;
    }
    Ok(())
}

fn enable(fs: &dyn CgroupFs, dir: &Path, is_root: bool) -> Result<(), EnvelopeError> {
    let file = dir.join("cgroup.subtree_control");
    let read = |fs: &dyn CgroupFs| {
        fs.read(&file)
            .map_err(|e| EnvelopeError::io("read", &file, e))
    };
    let have = read(fs)?;
    let missing: Vec<&str> = NEEDED
        .into_iter()
        .filter(|c| !have.split_whitespace().any(|h| h == *c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root {
        let procs = dir.join("cgroup.procs");
        let p = fs
            .read(&procs)
            .map_err(|e| EnvelopeError::io("read", &procs, e))?;
        if !p.trim().is_empty() {
            return Err(EnvelopeError::InternalProcess {
                path: dir.to_path_buf(),
            });
        }
    }
    let value = missing
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    fs.write(&file, &value)
        .map_err(|e| unavailable_or_io("write", &file, e))?;
    let now = read(fs)?;
    if missing
        .iter()
        .any(|c| !now.split_whitespace().any(|h| h == *c))
    {
        return Err(EnvelopeError::Mismatch {
            path: file,
            wrote: value,
            read: now.trim().into(),
        });
    }
    Ok(())
}

pub(crate) fn apply(fs: &dyn CgroupFs, leaf: &Path, l: &Limits) -> Result<Applied, EnvelopeError> {
    let page = page_size();
    let mem = l.memory_bytes / page * page;
    write_checked(
        fs,
        &leaf.join("memory.max"),
        &l.memory_bytes.to_string(),
        &mem.to_string(),
    )?;
    let swap = leaf.join("memory.swap.max");
    // Absent when the kernel has no swap support (CONFIG_SWAP=n): then there is no swap to disable.
    if fs.exists(&swap) {
        write_checked(fs, &swap, "0", "0")?;
    }
    write_checked(fs, &leaf.join("memory.oom.group"), "1", "1")?;
    let (quota, period) = cpu_quota(l.cpus);
    let cpu_max = format!("{quota} {period}");
    write_checked(fs, &leaf.join("cpu.max"), &cpu_max, &cpu_max)?;
    write_checked(
        fs,
        &leaf.join("pids.max"),
        &l.pids.to_string(),
        &l.pids.to_string(),
    )?;
    Ok(Applied {
        memory_bytes: mem,
        cpu_quota_us: quota,
        cpu_period_us: period,
        pids_max: l.pids,
    })
}

pub(crate) fn usage(fs: &dyn CgroupFs, leaf: &Path) -> Result<Usage, EnvelopeError> {
    let stat = leaf.join("cpu.stat");
    Ok(Usage {
        cpu_user_us: read_key(fs, &stat, "user_usec")?,
        cpu_system_us: read_key(fs, &stat, "system_usec")?,
        // memory.peak exists since Linux 5.19.
        peak_memory_bytes: read_u64(fs, &leaf.join("memory.peak"))?,
        oom_kills: read_key(fs, &leaf.join("memory.events"), "oom_kill")?,
        pids_limit_hits: read_key(fs, &leaf.join("pids.events"), "max")?,
        source: String::new(),
    })
}

pub(crate) fn kill_all(fs: &dyn CgroupFs, leaf: &Path) -> Result<(), EnvelopeError> {
    if !fs.exists(leaf) {
        return Ok(());
    }
    let files = [leaf.join("cgroup.procs")];
    if pids_to_kill(fs, &files)?.is_empty() {
        return Ok(());
    }
    let kill = leaf.join("cgroup.kill");
    if fs.exists(&kill) {
        fs.write(&kill, "1")
            .map_err(|e| EnvelopeError::io("write", &kill, e))?;
        // cgroup.kill is synchronous for signalling; wait for the tasks to leave.
        return kill_loop(fs, &files);
    }
    // Before 5.14: no cgroup.kill; seal through pids.max and kill in rounds, as on v1.
    seal_and_kill(fs, leaf, &files)
}
