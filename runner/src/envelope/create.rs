//! Building a run's envelope: check the arguments, prepare the host once per [`GC_INTERVAL`] (the
//! layout from [`crate::host::cgroup`], a gc pass, the parent with its controllers), make the leaf
//! `<parent>/<run_id>.owner-<pid>-<start>` in every hierarchy, and write the limits, **reading each
//! value back** (`v1::apply`, `v2::apply` through [`write_checked`]). The translation of a policy's
//! limits into the kernel's units (page-rounded bytes, CFS quota and period) is here too.

use std::collections::HashMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::fsio::{CgroupFs, RealFs};
use super::owner::Owner;
use super::{gc, registry, v1, v2, Applied, Dirs, Envelope, EnvelopeError, Inner, Limits, Version};
use crate::host::cgroup::{self, Layout, V1Controllers};

/// The CFS period hybox uses (the kernel default, 100 ms).
pub const CPU_PERIOD_US: u64 = 100_000;
/// The kernel refuses quotas under 1 ms (`cpu.cfs_quota_us`, `cpu.max`: EINVAL).
const MIN_QUOTA_US: u64 = 1_000;

/// `(quota, period)` in µs for `cpus` cores. Below 0.01 cores the 100 ms period would need a quota
/// under the kernel's 1 ms minimum, so the period grows to 1 s (the kernel's maximum).
pub fn cpu_quota(cpus: f64) -> (u64, u64) {
    let quota = (cpus * CPU_PERIOD_US as f64).round() as u64;
    if quota >= MIN_QUOTA_US {
        return (quota, CPU_PERIOD_US);
    }
    let period = 1_000_000;
    (
        ((cpus * period as f64).round() as u64).max(MIN_QUOTA_US),
        period,
    )
}

/// The system page size (the kernel rounds memory limits down to it).
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

/// How long a process reuses its per-host preparation (layout, parent, gc pass) before redoing it.
pub const GC_INTERVAL: Duration = Duration::from_secs(10);

/// A host's cgroup layout as prepared by this process for one `(root, parent)`.
#[derive(Debug)]
struct Prepared {
    version: Version,
    bases: Dirs,
    until: Instant,
}

fn prepared_hosts() -> &'static Mutex<HashMap<(PathBuf, String), Prepared>> {
    static HOSTS: OnceLock<Mutex<HashMap<(PathBuf, String), Prepared>>> = OnceLock::new();
    HOSTS.get_or_init(Default::default)
}

/// [`Envelope::create`]: the per-host preparation from the cache (or fresh), then the leaf.
pub(super) fn create(
    root: &Path,
    parent: &str,
    run_id: &str,
    limits: &Limits,
) -> Result<Envelope, EnvelopeError> {
    let owner = Owner::current().map_err(EnvelopeError::Owner)?;
    let fs: Arc<dyn CgroupFs> = Arc::new(RealFs);
    validate(run_id, parent, limits)?;
    let key = (root.to_path_buf(), parent.to_string());
    let cached = prepared_hosts()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&key)
        .filter(|p| p.until > Instant::now())
        .map(|p| (p.version, p.bases.clone()));
    let fresh = cached.is_none();
    let (version, bases) = match cached {
        Some(p) => p,
        None => prepare_host(&fs, root, parent)?,
    };
    let remember = |version: Version, bases: &Dirs| {
        prepared_hosts()
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                key.clone(),
                Prepared {
                    version,
                    bases: bases.clone(),
                    until: Instant::now() + GC_INTERVAL,
                },
            );
    };
    if fresh {
        remember(version, &bases);
    }
    match create_leaf(&fs, version, &bases, parent, run_id, limits, &owner) {
        Err(EnvelopeError::Unavailable { source, .. })
            if !fresh && source.raw_os_error() == Some(libc::ENOENT) =>
        {
            // The parent went away since it was prepared (e.g. an admin removed it): redo.
            let (version, bases) = prepare_host(&fs, root, parent)?;
            remember(version, &bases);
            create_leaf(&fs, version, &bases, parent, run_id, limits, &owner)
        }
        r => r,
    }
}

/// [`Envelope::create`] on any cgroup filesystem (the unit tests' fake trees), doing the per-host
/// preparation every time.
#[cfg(test)]
pub(super) fn create_with(
    fs: Arc<dyn CgroupFs>,
    root: &Path,
    parent: &str,
    run_id: &str,
    limits: &Limits,
    owner: Owner,
) -> Result<Envelope, EnvelopeError> {
    validate(run_id, parent, limits)?;
    let (version, bases) = prepare_host(&fs, root, parent)?;
    create_leaf(&fs, version, &bases, parent, run_id, limits, &owner)
}

/// Arguments checked before anything is created.
fn validate(run_id: &str, parent: &str, limits: &Limits) -> Result<(), EnvelopeError> {
    validate_name("run id", run_id, false)?;
    validate_name("cgroup parent", parent, true)?;
    validate_limits(limits)
}

pub(super) fn validate_limits(limits: &Limits) -> Result<(), EnvelopeError> {
    check_memory(limits.memory_bytes)?;
    check_cpus(limits.cpus)?;
    check_pids(limits.pids)
}

pub(super) fn check_memory(bytes: u64) -> Result<(), EnvelopeError> {
    if bytes < page_size() {
        return Err(EnvelopeError::Invalid {
            what: "memory limit",
            value: bytes.to_string(),
            why: "below one page",
        });
    }
    Ok(())
}

pub(super) fn check_cpus(cpus: f64) -> Result<(), EnvelopeError> {
    if !(cpus.is_finite() && cpus > 0.0) {
        return Err(EnvelopeError::Invalid {
            what: "cpus",
            value: cpus.to_string(),
            why: "must be > 0",
        });
    }
    Ok(())
}

pub(super) fn check_pids(pids: u64) -> Result<(), EnvelopeError> {
    if pids == 0 {
        return Err(EnvelopeError::Invalid {
            what: "pids",
            value: "0".into(),
            why: "must be >= 1",
        });
    }
    Ok(())
}

/// A run id or cgroup parent that is safe as a cgroup path: a relative path of plain components
/// (no `..`, nothing hidden), so no argument can reach outside the parent.
pub(super) fn validate_name(
    what: &'static str,
    value: &str,
    allow_slash: bool,
) -> Result<(), EnvelopeError> {
    let bad = |why| {
        Err(EnvelopeError::Invalid {
            what,
            value: value.into(),
            why,
        })
    };
    if value.is_empty() || value.len() > 200 {
        return bad("must be 1 to 200 characters");
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b) || (allow_slash && b == b'/'))
    {
        return bad("only ASCII letters, digits and - _ . : are allowed");
    }
    for c in Path::new(value).components() {
        if !matches!(c, Component::Normal(_)) {
            return bad("must be a relative path without . or .. components");
        }
    }
    if value.split('/').any(str::is_empty) {
        return bad("empty path component");
    }
    if value.starts_with('.') || value.contains("/.") {
        return bad("a component may not start with '.'");
    }
    Ok(())
}

/// The per-host part of creating an envelope: detect the layout, gc envelopes of dead owners under
/// `parent`, create `parent` (v2: and enable the controllers down to it).
fn prepare_host(
    fs: &Arc<dyn CgroupFs>,
    root: &Path,
    parent: &str,
) -> Result<(Version, Dirs), EnvelopeError> {
    let layout = cgroup::detect(root)?;
    let (version, bases) = bases(&layout)?;
    // Failures of the gc pass must not stop a run; they are logged.
    match gc::gc_with(fs, version, &bases, parent) {
        Ok(r) if !r.errors.is_empty() => {
            let errors: Vec<String> = r.errors.iter().map(ToString::to_string).collect();
            tracing::warn!(?errors, "envelope gc pass");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "envelope gc pass"),
    }
    if version == Version::V2 {
        v2::prepare_parents(&**fs, root, parent)?;
    } else {
        for base in bases.unique() {
            mkdir_parents(&**fs, base, parent)?;
        }
    }
    Ok((version, bases))
}

/// The controller mount points (v1) or the root (v2) of a usable layout.
pub(super) fn bases(layout: &Layout) -> Result<(Version, Dirs), EnvelopeError> {
    let missing = layout.missing();
    if !missing.is_empty() {
        return Err(EnvelopeError::MissingControllers {
            missing: missing.join(", "),
            layout: layout.describe(),
        });
    }
    let v1 = |c: &V1Controllers| -> Option<Dirs> {
        Some(Dirs {
            memory: c.memory.clone()?,
            cpu: c.cpu.clone()?,
            cpuacct: c.cpuacct.clone()?,
            pids: c.pids.clone()?,
        })
    };
    let unreachable = || EnvelopeError::MissingControllers {
        missing: "?".into(),
        layout: layout.describe(),
    };
    Ok(match layout {
        Layout::V1 { controllers, .. } => (
            Version::V1 { hybrid: false },
            v1(controllers).ok_or_else(unreachable)?,
        ),
        Layout::Hybrid { controllers, .. } => (
            Version::V1 { hybrid: true },
            v1(controllers).ok_or_else(unreachable)?,
        ),
        Layout::V2 { root, .. } => (
            Version::V2,
            Dirs {
                memory: root.clone(),
                cpu: root.clone(),
                cpuacct: root.clone(),
                pids: root.clone(),
            },
        ),
    })
}

/// Creates `base/a/b/...` for the components of `rel` that do not exist; `EEXIST` is fine (concurrent
/// runs create the same parent).
pub(super) fn mkdir_parents(
    fs: &dyn CgroupFs,
    base: &Path,
    rel: &str,
) -> Result<(), EnvelopeError> {
    let mut p = base.to_path_buf();
    for part in rel.split('/').filter(|p| !p.is_empty()) {
        p.push(part);
        match fs.mkdir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unavailable_or_io("mkdir", &p, e)),
        }
    }
    Ok(())
}

pub(super) fn unavailable_or_io(op: &'static str, path: &Path, e: io::Error) -> EnvelopeError {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS) | Some(libc::ENOENT) => {
            EnvelopeError::Unavailable {
                what: format!("{op} {}", path.display()),
                source: e,
            }
        }
        _ => EnvelopeError::io(op, path, e),
    }
}

/// Creates the leaf `<parent>/<run_id>.owner-<pid>-<start>` in every controller and applies the
/// limits, reading each back. Whatever was created is torn down if a step fails.
fn create_leaf(
    fs: &Arc<dyn CgroupFs>,
    version: Version,
    bases: &Dirs,
    parent: &str,
    run_id: &str,
    limits: &Limits,
    owner: &Owner,
) -> Result<Envelope, EnvelopeError> {
    let leaf = owner.leaf_name(run_id);
    let dirs = bases.map(|b| b.join(parent).join(&leaf));
    let inner = Arc::new(Inner::new(fs.clone(), version, dirs));
    let id = registry::register(&inner);
    // From here on, Drop tears down whatever was created if a step fails.
    let mut env = Envelope {
        inner,
        applied: Applied {
            memory_bytes: 0,
            cpu_quota_us: 0,
            cpu_period_us: 0,
            pids_max: 0,
        },
        rel_path: format!("/{parent}/{leaf}"),
        id,
        done: false,
        home: Vec::new(),
    };
    for dir in env.inner.dirs.unique() {
        match fs.mkdir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Not ours: make sure Drop does not remove someone else's cgroup.
                env.done = true;
                registry::unregister(id);
                return Err(EnvelopeError::Exists {
                    path: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(unavailable_or_io("mkdir", dir, e)),
        }
    }
    env.applied = match version {
        Version::V1 { .. } => v1::apply(&**fs, &env.inner.dirs, limits)?,
        Version::V2 => v2::apply(&**fs, &env.inner.dirs.memory, limits)?,
    };
    Ok(env)
}

/// Writes `value` to `path` and reads it back; `expect` is the text the kernel should show (after its
/// own normalisation, e.g. page rounding). A difference is [`EnvelopeError::Mismatch`].
pub(crate) fn write_checked(
    fs: &dyn CgroupFs,
    path: &Path,
    value: &str,
    expect: &str,
) -> Result<(), EnvelopeError> {
    let read = fs
        .write_then_read(path, value)
        .map_err(|e| EnvelopeError::io("write", path, e))?;
    if read.trim() != expect {
        return Err(EnvelopeError::Mismatch {
            path: path.to_path_buf(),
            wrote: value.into(),
            read: read.trim().into(),
        });
    }
    Ok(())
}
