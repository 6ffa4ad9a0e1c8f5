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
use super::fsio::{read_key, read_max, read_u64, CgroupFs};
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
    for part in parent.split('/').filter(|p| !p.is_empty()) {
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
    let memory_bytes = set_memory(fs, leaf, l.memory_bytes)?;
    let (cpu_quota_us, cpu_period_us) = set_cpus(fs, leaf, l.cpus)?;
    let pids_max = set_pids(fs, leaf, l.pids)?;
    Ok(Applied {
        memory_bytes,
        cpu_quota_us,
        cpu_period_us,
        pids_max,
    })
}

/// memory.max with swap off and the group OOM kill; returns the limit as the kernel rounded it.
pub(crate) fn set_memory(fs: &dyn CgroupFs, leaf: &Path, bytes: u64) -> Result<u64, EnvelopeError> {
    let page = page_size();
    let mem = bytes / page * page;
    write_checked(
        fs,
        &leaf.join("memory.max"),
        &bytes.to_string(),
        &mem.to_string(),
    )?;
    let swap = leaf.join("memory.swap.max");
    // Absent when the kernel has no swap support (CONFIG_SWAP=n): then there is no swap to disable.
    if fs.exists(&swap) {
        write_checked(fs, &swap, "0", "0")?;
    }
    write_checked(fs, &leaf.join("memory.oom.group"), "1", "1")?;
    Ok(mem)
}

/// cpu.max for `cpus` cores; returns `(quota, period)`.
pub(crate) fn set_cpus(
    fs: &dyn CgroupFs,
    leaf: &Path,
    cpus: f64,
) -> Result<(u64, u64), EnvelopeError> {
    let (quota, period) = cpu_quota(cpus);
    let cpu_max = format!("{quota} {period}");
    write_checked(fs, &leaf.join("cpu.max"), &cpu_max, &cpu_max)?;
    Ok((quota, period))
}

pub(crate) fn set_pids(fs: &dyn CgroupFs, leaf: &Path, pids: u64) -> Result<u64, EnvelopeError> {
    write_checked(
        fs,
        &leaf.join("pids.max"),
        &pids.to_string(),
        &pids.to_string(),
    )?;
    Ok(pids)
}

/// The limits an existing cgroup has now (`max` reads as `u64::MAX`, or a quota of 0).
pub(crate) fn read_applied(fs: &dyn CgroupFs, leaf: &Path) -> Result<Applied, EnvelopeError> {
    let cpu_max = leaf.join("cpu.max");
    let text = fs
        .read(&cpu_max)
        .map_err(|e| EnvelopeError::io("read", &cpu_max, e))?;
    let mut it = text.split_whitespace();
    let bad = || EnvelopeError::Parse {
        path: cpu_max.clone(),
        content: text.clone(),
        why: "`quota period`",
    };
    let quota = match it.next() {
        Some("max") => 0,
        Some(q) => q.parse().map_err(|_| bad())?,
        None => return Err(bad()),
    };
    let period = it.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok(Applied {
        memory_bytes: read_max(fs, &leaf.join("memory.max"), u64::MAX)?,
        cpu_quota_us: quota,
        cpu_period_us: period,
        pids_max: read_max(fs, &leaf.join("pids.max"), u64::MAX)?,
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
