//! The commands on a live container's cgroup (docs/oci.md): `update` (new limits, capped by the
//! runtime policy, written and read back by the envelope code) and `pause` / `resume` (the v1
//! freezer or v2 `cgroup.freeze` of the container's cgroup).

use std::io::Read;
use std::path::Path;

use crate::envelope::{Envelope, LimitsUpdate};
use crate::oci::lifecycle::Context;
use crate::oci::runtime_policy::RuntimePolicy;
use crate::oci::state::{Record, StateDir, Status};
use crate::oci::OciError;

/// `update`'s inputs: the `--resources` JSON (a runtime spec `LinuxResources`, `-` for stdin)
/// and runc's single-value flags, which win over it.
#[derive(Debug, Clone, Default)]
pub struct UpdateOptions {
    pub resources: Option<std::path::PathBuf>,
    pub memory: Option<i64>,
    pub cpu_quota: Option<i64>,
    pub cpu_period: Option<u64>,
    pub pids_limit: Option<i64>,
}

/// The container's record and cgroup, if it is live.
fn live(ctx: &Context, id: &str) -> Result<(StateDir, Record, String), OciError> {
    let sd = StateDir::new(&ctx.root, id)?;
    let r = sd.record()?;
    let status = sd.status(&r);
    if status == Status::Stopped {
        return Err(OciError::NotRunning {
            id: id.into(),
            status: status.to_string(),
        });
    }
    let cgroup = r.cgroup.clone().ok_or_else(|| OciError::Unsupported {
        what: format!("container {id}"),
        why: "it was created by an older hybox-runc without a cgroup of its own".into(),
    })?;
    Ok((sd, r, cgroup))
}

fn open(cgroup: &str) -> Result<Envelope, OciError> {
    Envelope::open_at(&crate::HostConfig::default().cgroup_root, cgroup).map_err(|source| {
        OciError::Cgroup {
            path: cgroup.into(),
            source,
        }
    })
}

/// `update [--resources FILE|-] [--memory N] [--cpu-quota N] [--cpu-period N] [--pids-limit N] ID`.
/// A value of -1 (runc's "unlimited") is the runtime policy's maximum; a value beyond it is
/// refused, naming it, and nothing is changed.
pub fn update(ctx: &Context, id: &str, o: &UpdateOptions) -> Result<(), OciError> {
    let (_, _, cgroup) = live(ctx, id)?;
    let mut memory = None;
    let mut quota = None;
    let mut period = None;
    let mut pids = None;
    if let Some(file) = &o.resources {
        let r = read_resources(file)?;
        memory = r.memory().as_ref().and_then(|m| m.limit());
        quota = r.cpu().as_ref().and_then(|c| c.quota());
        period = r.cpu().as_ref().and_then(|c| c.period());
        pids = r.pids().as_ref().map(|p| p.limit());
    }
    memory = o.memory.or(memory);
    quota = o.cpu_quota.or(quota);
    period = o.cpu_period.or(period);
    pids = o.pids_limit.or(pids);

    let runtime = RuntimePolicy::load()?;
    let max = &runtime.policy.resources;
    let over = |field: &str, value: String, cap: String| OciError::Refused {
        field: format!("update: {field}"),
        message: format!(
            "{value} is beyond the runtime policy {} ({cap})",
            runtime.origin
        ),
    };
    let mut u = LimitsUpdate::default();
    // 0 means "not set" in the resources JSON runc and the CRI send; -1 means unlimited.
    match memory {
        Some(m) if m < 0 => u.memory_bytes = Some(max.memory.bytes()),
        Some(m) if m > 0 => {
            let m = m as u64;
            if m > max.memory.bytes() {
                return Err(over(
                    "memory.limit",
                    m.to_string(),
                    max.memory.bytes().to_string(),
                ));
            }
            u.memory_bytes = Some(m);
        }
        _ => {}
    }
    match quota {
        Some(q) if q < 0 => u.cpus = Some(max.cpus),
        Some(q) if q > 0 => {
            let p = period
                .filter(|p| *p > 0)
                .unwrap_or(crate::envelope::CPU_PERIOD_US);
            let cpus = q as f64 / p as f64;
            if cpus > max.cpus {
                return Err(over(
                    "cpu.quota",
                    format!("{q}/{p} ({cpus} cpus)"),
                    format!("{} cpus", max.cpus),
                ));
            }
            u.cpus = Some(cpus);
        }
        _ => {}
    }
    match pids {
        Some(p) if p < 0 => u.pids = Some(max.pids),
        Some(p) if p > 0 => {
            if p as u64 > max.pids {
                return Err(over("pids.limit", p.to_string(), max.pids.to_string()));
            }
            u.pids = Some(p as u64);
        }
        _ => {}
    }
    let mut env = open(&cgroup)?;
    env.update(&u).map_err(|source| OciError::Cgroup {
        path: cgroup.clone(),
        source,
    })?;
    ctx.log.info(&format!(
        "container {id}: updated: {}",
        serde_json::to_string(&env.report()).unwrap_or_default()
    ));
    Ok(())
}

fn read_resources(file: &Path) -> Result<oci_spec::runtime::LinuxResources, OciError> {
    let mut text = String::new();
    let shown = file.display().to_string();
    if shown == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(OciError::io("read --resources from stdin"))?;
    } else {
        text = std::fs::read_to_string(file).map_err(OciError::io(format!("read {shown}")))?;
    }
    serde_json::from_str(&text).map_err(|e| OciError::ConfigParse {
        path: file.to_path_buf(),
        field: "(linux.resources)".into(),
        message: e.to_string(),
    })
}

/// `pause ID` / `resume ID`: freezes or thaws every process of the container (the monitor too:
/// it lives in the container's cgroup).
pub fn set_paused(ctx: &Context, id: &str, paused: bool) -> Result<(), OciError> {
    let (sd, r, cgroup) = live(ctx, id)?;
    let status = sd.status(&r);
    let ok = if paused {
        status == Status::Running
    } else {
        status == Status::Paused
    };
    if !ok {
        return Err(OciError::Unsupported {
            what: format!("container {id}"),
            why: format!(
                "it is {status}, not {}",
                if paused { "running" } else { "paused" }
            ),
        });
    }
    open(&cgroup)?
        .set_frozen(paused)
        .map_err(|source| OciError::Cgroup {
            path: cgroup,
            source,
        })
}
