//! cgroup v1: limits, usage and kill on the per-controller directories.
//!
//! Files (Documentation/admin-guide/cgroup-v1/{memory,cpuacct,pids,freezer-subsystem}.rst and
//! scheduler/sched-bwc.rst):
//! - memory.limit_in_bytes, then memory.memsw.limit_in_bytes = the same value (memory+swap equal to
//!   memory: no swap for the run). Without memsw (swap accounting off) memory.swappiness = 0 instead.
//!   The kernel rounds both down to a page, so the read-back compares against the rounded value.
//! - cpu.cfs_period_us then cpu.cfs_quota_us; pids.max.
//! - usage: memory.max_usage_in_bytes, memory.oom_control (`oom_kill N`, kernel >= 4.13),
//!   cpuacct.usage_user/usage_sys (ns) or cpuacct.stat (USER_HZ ticks), pids.events (`max N`).
//! - kill: freezer FROZEN, SIGKILL every pid of every controller's cgroup.procs, THAWED, repeat until
//!   empty. While frozen, nothing inside can fork, so the pid list cannot grow under us.

use std::path::Path;
use std::time::{Duration, Instant};

use super::fsio::CgroupFs;
use super::{
    cpu_quota, kill_loop, page_size, pids_to_kill, read_key, read_u64, write_checked, Applied,
    Dirs, EnvelopeError, Limits,
};
use crate::report::Usage;

pub(crate) fn apply(fs: &dyn CgroupFs, d: &Dirs, l: &Limits) -> Result<Applied, EnvelopeError> {
    let page = page_size();
    let mem = l.memory_bytes / page * page;
    write_checked(
        fs,
        &d.memory.join("memory.limit_in_bytes"),
        &l.memory_bytes.to_string(),
        &mem.to_string(),
    )?;
    let memsw = d.memory.join("memory.memsw.limit_in_bytes");
    if fs.exists(&memsw) {
        write_checked(fs, &memsw, &l.memory_bytes.to_string(), &mem.to_string())?;
    } else {
        write_checked(fs, &d.memory.join("memory.swappiness"), "0", "0")?;
    }
    let (quota, period) = cpu_quota(l.cpus);
    write_checked(
        fs,
        &d.cpu.join("cpu.cfs_period_us"),
        &period.to_string(),
        &period.to_string(),
    )?;
    write_checked(
        fs,
        &d.cpu.join("cpu.cfs_quota_us"),
        &quota.to_string(),
        &quota.to_string(),
    )?;
    write_checked(
        fs,
        &d.pids.join("pids.max"),
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

pub(crate) fn usage(fs: &dyn CgroupFs, d: &Dirs) -> Result<Usage, EnvelopeError> {
    let user_ns = d.cpuacct.join("cpuacct.usage_user");
    let (cpu_user_us, cpu_system_us) = if fs.exists(&user_ns) {
        (
            read_u64(fs, &user_ns)? / 1000,
            read_u64(fs, &d.cpuacct.join("cpuacct.usage_sys"))? / 1000,
        )
    } else {
        // cpuacct.stat is in USER_HZ ticks (sysconf(_SC_CLK_TCK), proc(5)).
        // SAFETY: sysconf has no preconditions.
        let hz = match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
            n if n > 0 => n as u64,
            _ => 100,
        };
        let stat = d.cpuacct.join("cpuacct.stat");
        (
            read_key(fs, &stat, "user")? * 1_000_000 / hz,
            read_key(fs, &stat, "system")? * 1_000_000 / hz,
        )
    };
    Ok(Usage {
        cpu_user_us,
        cpu_system_us,
        peak_memory_bytes: read_u64(fs, &d.memory.join("memory.max_usage_in_bytes"))?,
        oom_kills: read_key(fs, &d.memory.join("memory.oom_control"), "oom_kill")?,
        pids_limit_hits: read_key(fs, &d.pids.join("pids.events"), "max")?,
        source: String::new(),
    })
}

pub(crate) fn kill_all(fs: &dyn CgroupFs, d: &Dirs) -> Result<(), EnvelopeError> {
    let files: Vec<_> = d
        .unique()
        .into_iter()
        .map(|p| p.join("cgroup.procs"))
        .collect();
    if pids_to_kill(fs, &files)?.is_empty() {
        return Ok(());
    }
    let Some(freezer) = d.freezer.as_deref().filter(|f| fs.exists(f)) else {
        return kill_loop(fs, &files, || {});
    };
    let state = freezer.join("freezer.state");
    freeze(fs, &state)?;
    // Thaw after each round of SIGKILL so the killed tasks can run to their exit; they die before
    // returning to user space, so they cannot fork in between.
    let r = kill_loop(fs, &files, || {
        let _ = fs.write(&state, "THAWED");
    });
    let thawed = fs
        .write(&state, "THAWED")
        .map_err(|e| EnvelopeError::io("write", &state, e));
    r.and(thawed.or_else(|e| if fs.exists(freezer) { Err(e) } else { Ok(()) }))
}

/// Writes FROZEN and waits (up to 1 s) until the state reads FROZEN; a cgroup that stays FREEZING
/// (a task in uninterruptible sleep) is killed anyway.
fn freeze(fs: &dyn CgroupFs, state: &Path) -> Result<(), EnvelopeError> {
    fs.write(state, "FROZEN")
        .map_err(|e| EnvelopeError::io("write", state, e))?;
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut pause = Duration::from_micros(50);
    while Instant::now() < deadline {
        let s = fs
            .read(state)
            .map_err(|e| EnvelopeError::io("read", state, e))?;
        if s.trim() == "FROZEN" {
            return Ok(());
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
    tracing::warn!(path = %state.display(), "cgroup did not reach FROZEN within 1s; killing anyway");
    Ok(())
}
