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
//! - kill: pids.max = 0, then SIGKILL every pid of every controller's cgroup.procs until empty. With
//!   pids.max at 0 nothing inside can fork, so the pid list cannot grow under us (the freezer did the
//!   same job at the cost of a fourth hierarchy per run and a FREEZING wait).

use super::create::{cpu_quota, page_size, write_checked};
use super::fsio::{read_key, read_max, read_u64, CgroupFs};
use super::teardown::{pids_to_kill, seal_and_kill};
use super::{Applied, Dirs, EnvelopeError, Limits};
use crate::report::Usage;

pub(crate) fn apply(fs: &dyn CgroupFs, d: &Dirs, l: &Limits) -> Result<Applied, EnvelopeError> {
    let memory_bytes = set_memory(fs, d, l.memory_bytes)?;
    let (cpu_quota_us, cpu_period_us) = set_cpus(fs, d, l.cpus)?;
    let pids_max = set_pids(fs, d, l.pids)?;
    Ok(Applied {
        memory_bytes,
        cpu_quota_us,
        cpu_period_us,
        pids_max,
    })
}

/// The memory limit with swap off; returns it as the kernel rounded it. memory+swap may never be
/// below memory (EINVAL): raising a live limit writes memsw first, lowering it memory first.
pub(crate) fn set_memory(fs: &dyn CgroupFs, d: &Dirs, bytes: u64) -> Result<u64, EnvelopeError> {
    let page = page_size();
    let mem = bytes / page * page;
    let limit = d.memory.join("memory.limit_in_bytes");
    let memsw = d.memory.join("memory.memsw.limit_in_bytes");
    let write = |f: &std::path::Path| write_checked(fs, f, &bytes.to_string(), &mem.to_string());
    if !fs.exists(&memsw) {
        write(&limit)?;
        write_checked(fs, &d.memory.join("memory.swappiness"), "0", "0")?;
        return Ok(mem);
    }
    let raising = read_u64(fs, &memsw).is_ok_and(|now| mem > now);
    if raising {
        write(&memsw)?;
        write(&limit)?;
    } else {
        write(&limit)?;
        write(&memsw)?;
    }
    Ok(mem)
}

/// The CFS bandwidth for `cpus` cores; returns `(quota, period)`.
pub(crate) fn set_cpus(
    fs: &dyn CgroupFs,
    d: &Dirs,
    cpus: f64,
) -> Result<(u64, u64), EnvelopeError> {
    let (quota, period) = cpu_quota(cpus);
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
    Ok((quota, period))
}

pub(crate) fn set_pids(fs: &dyn CgroupFs, d: &Dirs, pids: u64) -> Result<u64, EnvelopeError> {
    write_checked(
        fs,
        &d.pids.join("pids.max"),
        &pids.to_string(),
        &pids.to_string(),
    )?;
    Ok(pids)
}

/// The limits an existing cgroup has now (unlimited reads as `u64::MAX`, a quota of -1 as 0).
pub(crate) fn read_applied(fs: &dyn CgroupFs, d: &Dirs) -> Result<Applied, EnvelopeError> {
    Ok(Applied {
        memory_bytes: read_u64(fs, &d.memory.join("memory.limit_in_bytes"))?,
        cpu_quota_us: read_max(fs, &d.cpu.join("cpu.cfs_quota_us"), 0)?,
        cpu_period_us: read_u64(fs, &d.cpu.join("cpu.cfs_period_us"))?,
        pids_max: read_max(fs, &d.pids.join("pids.max"), u64::MAX)?,
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
    // The user/system split above is sampled at the scheduler tick (4 ms at HZ=250): a run shorter
    // than a tick can show 0 of both. cpuacct.usage is the scheduler's exact total; split it in the
    // sampled proportion, as the kernel itself does for cgroup v2's cpu.stat and /proc/PID/stat.
    let total_us = read_u64(fs, &d.cpuacct.join("cpuacct.usage"))? / 1000;
    let (cpu_user_us, cpu_system_us) = split_exact(total_us, cpu_user_us, cpu_system_us);
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
    seal_and_kill(fs, &d.pids, &files)
}

/// `total` split in the proportion of the sampled `user` and `system` times, the kernel's
/// `cputime_adjust` rule: with no system sample all of it is user time, with no user sample all of
/// it is system time.
fn split_exact(total: u64, user: u64, system: u64) -> (u64, u64) {
    if system == 0 {
        (total, 0)
    } else if user == 0 {
        (0, total)
    } else {
        let sys = (u128::from(total) * u128::from(system) / (u128::from(user) + u128::from(system)))
            as u64;
        (total - sys, sys)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_exact_total_is_split_like_the_kernel_does() {
        assert_eq!(super::split_exact(1750, 1500, 250), (1500, 250));
        assert_eq!(super::split_exact(3000, 4000, 4000), (1500, 1500));
        // A run shorter than a tick: nothing sampled, the total still counts (as user time).
        assert_eq!(super::split_exact(2300, 0, 0), (2300, 0));
        assert_eq!(super::split_exact(2300, 0, 4000), (0, 2300));
    }
}
