//! The cgroup envelope: one per-run leaf cgroup for both backends.
//!
//! [`Envelope::create`] detects the host's layout ([`detect`]: v1, v2 or hybrid, never assumed),
//! creates `<parent>/<run_id>.owner-<pid>-<start>` (see [`owner`] for why the owner record is in the
//! name), writes the policy's limits and **reads every value back** (a value the kernel did not take is
//! [`EnvelopeError::Mismatch`]). Backends put their process in it through [`EnvelopeJoin`]; at the end
//! [`Envelope::usage`] reads what the run used and which limits fired, and [`Envelope::destroy`] kills
//! everything inside, removes the cgroup with retries and verifies it is gone. `Drop` does the same
//! best-effort if `destroy` was not reached (early return, panic), [`teardown_all`] for a front-end
//! that handles SIGINT/SIGTERM (the CLI's signal teardown), and [`gc`] for envelopes whose owner died
//! (SIGKILL).
//!
//! File I/O goes through hybox's own thin layer (`fsio.rs`, which explains why cgroups-rs is used for
//! mount detection only); the rest of hybox never sees a cgroup file.
//!
//! What an envelope costs, and why it is shaped this way (`benches/envelope.rs` measures it against
//! the kernel's own mkdir + rmdir of the same cgroups):
//! - Per host, once per process and then every [`GC_INTERVAL`]: layout detection, the parent, the gc
//!   pass. Per run: one mkdir per hierarchy, five limit writes each read back, one rmdir per hierarchy.
//! - No freezer hierarchy: the kill seals the envelope with `pids.max = 0` (nothing inside can fork)
//!   and SIGKILLs until `cgroup.procs` is empty; an envelope whose workload already exited is not
//!   signalled at all.
//! - Joining migrates a process, which takes the kernel's cgroup threadgroup lock for writing and
//!   waits for an RCU grace period. On cgroup v2 the native backend avoids it by creating the shim
//!   inside the leaf (`CLONE_INTO_CGROUP`, see [`EnvelopeJoin::clone_into_dir`]).

mod fsio;
mod gc;
mod layout;
pub mod owner;
mod v1;
mod v2;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use gc::{gc, GcReport};
pub use layout::{Layout, V1Controllers};
pub use owner::Owner;

use fsio::{CgroupFs, RealFs};

use crate::report::{EnvelopeReport, Usage};

/// Finds the cgroup layout under `root` (normally `/sys/fs/cgroup`). Used by `Envelope::create` and
/// `hybox doctor`.
pub fn detect(root: &Path) -> Result<Layout, EnvelopeError> {
    layout::detect_with(&RealFs, root)
}

/// The limits of one envelope.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Memory hard limit; swap is disabled for the run.
    pub memory_bytes: u64,
    /// CPU bandwidth in cores (quota / period).
    pub cpus: f64,
    /// Maximum number of processes and threads.
    pub pids: u64,
}

impl From<&crate::policy::Resources> for Limits {
    fn from(r: &crate::policy::Resources) -> Limits {
        Limits {
            memory_bytes: r.memory.bytes(),
            cpus: r.cpus,
            pids: r.pids,
        }
    }
}

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

/// Errors of the envelope. Every variant names the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// No cgroup hybox can use (not root, no delegated writable cgroup, no hierarchy).
    #[error("no usable cgroup: {what}: {source}")]
    Unavailable {
        what: String,
        #[source]
        source: io::Error,
    },
    /// The layout lacks a controller hybox needs.
    #[error("no usable cgroup: missing controller(s) {missing}: {layout}")]
    MissingControllers { missing: String, layout: String },
    /// A cgroup file operation failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The kernel did not take a value (read back differs from what was written).
    #[error("{}: wrote {wrote:?} but read back {read:?}", path.display())]
    Mismatch {
        path: PathBuf,
        wrote: String,
        read: String,
    },
    /// A cgroup file did not have the expected format.
    #[error("{}: cannot parse {content:?}: {why}", path.display())]
    Parse {
        path: PathBuf,
        content: String,
        why: &'static str,
    },
    /// A bad argument (run id, parent, limit).
    #[error("invalid {what} {value:?}: {why}")]
    Invalid {
        what: &'static str,
        value: String,
        why: &'static str,
    },
    /// The leaf already exists: envelopes are never shared between runs.
    #[error("cgroup {} already exists (envelopes are never shared)", path.display())]
    Exists { path: PathBuf },
    /// v2 no-internal-process rule: the parent holds processes, so it cannot delegate controllers.
    #[error("{} holds processes, so it cannot enable controllers for child cgroups (cgroup v2 no-internal-process rule); use another cgroup_parent", path.display())]
    InternalProcess { path: PathBuf },
    /// The runner's own process is inside the envelope: killing it all would kill hybox.
    #[error("hybox's own process {pid} is inside the envelope {}; refusing to kill it", path.display())]
    RunnerInside { pid: i32, path: PathBuf },
    /// Processes were still in the envelope after the kill loop.
    #[error("processes survived the kill in {}: {pids:?}", path.display())]
    Survivors { path: PathBuf, pids: Vec<i32> },
    /// The cgroup directory could not be removed.
    #[error("cgroup {} could not be removed: {source}", path.display())]
    NotRemoved {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Reading the owner record (`/proc/self/stat`).
    #[error("reading hybox's own start time from /proc/self/stat: {0}")]
    Owner(#[source] io::Error),
}

impl EnvelopeError {
    pub(crate) fn io(op: &'static str, path: &Path, source: io::Error) -> EnvelopeError {
        EnvelopeError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    /// Whether this host (or this user) has no cgroup hybox may use: no hierarchy, a missing controller,
    /// or no permission to create or write one. A policy that allows degrading may then run with
    /// `envelope: none`; any other error is a real failure.
    pub fn is_unavailable(&self) -> bool {
        match self {
            EnvelopeError::Unavailable { .. } | EnvelopeError::MissingControllers { .. } => true,
            EnvelopeError::Io { source, .. } => {
                matches!(
                    source.raw_os_error(),
                    Some(libc::EACCES) | Some(libc::EPERM) | Some(libc::EROFS)
                )
            }
            _ => false,
        }
    }
}

/// Which cgroup version an envelope uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1 { hybrid: bool },
    V2,
}

impl Version {
    fn name(self) -> &'static str {
        match self {
            Version::V1 { hybrid: false } => "v1",
            Version::V1 { hybrid: true } => "v1 (hybrid)",
            Version::V2 => "v2",
        }
    }
}

/// The directories of one cgroup per controller (on v2 all the same directory). The v1 freezer is not
/// used: the kill seals the envelope through `pids.max` instead (see `seal_and_kill`), which saves a
/// hierarchy per run (mkdir, join, rmdir).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Dirs {
    pub memory: PathBuf,
    pub cpu: PathBuf,
    pub cpuacct: PathBuf,
    pub pids: PathBuf,
}

impl Dirs {
    /// Each distinct directory once (co-mounted v1 controllers, v2), in creation order.
    pub fn unique(&self) -> Vec<&Path> {
        let mut out: Vec<&Path> = Vec::new();
        for d in [&self.memory, &self.cpu, &self.cpuacct, &self.pids] {
            if !out.contains(&d.as_path()) {
                out.push(d);
            }
        }
        out
    }

    fn map(&self, f: impl Fn(&Path) -> PathBuf) -> Dirs {
        Dirs {
            memory: f(&self.memory),
            cpu: f(&self.cpu),
            cpuacct: f(&self.cpuacct),
            pids: f(&self.pids),
        }
    }
}

/// The controller mount points (v1) or the root (v2) of a usable layout.
fn bases(layout: &Layout) -> Result<(Version, Dirs), EnvelopeError> {
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

/// The part of an envelope the teardown needs; shared with the global registry for signal teardown.
#[derive(Debug)]
pub(crate) struct Inner {
    fs: Arc<dyn CgroupFs>,
    version: Version,
    dirs: Dirs,
}

impl Inner {
    fn procs_files(&self) -> Vec<PathBuf> {
        self.dirs
            .unique()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }

    fn kill_all(&self) -> Result<(), EnvelopeError> {
        match self.version {
            Version::V1 { .. } => v1::kill_all(&*self.fs, &self.dirs),
            Version::V2 => v2::kill_all(&*self.fs, &self.dirs.memory),
        }
    }

    /// The common case, an envelope whose tasks are all gone: `rmdir(2)` alone removes it. The
    /// kernel refuses (`EBUSY`) while a task or a child cgroup is inside, and each task of the
    /// envelope is in every one of its leaves, so a removal that succeeds proves there was nothing
    /// left to kill. `false` at the first refusal: the full teardown then kills and removes what
    /// is left (a leaf already removed here counts as removed there).
    fn remove_if_empty(&self) -> bool {
        self.dirs
            .unique()
            .into_iter()
            .rev()
            .all(|dir| match self.fs.rmdir(dir) {
                Ok(()) => true,
                Err(e) => e.raw_os_error() == Some(libc::ENOENT),
            })
    }

    /// Kill everything, then remove every directory (children first). `remove_tree` returns `Ok`
    /// only once `rmdir(2)` succeeded or the directory was already gone, so success means removed.
    fn teardown(&self) -> Result<(), EnvelopeError> {
        if self.remove_if_empty() {
            return Ok(());
        }
        let killed = self.kill_all();
        let mut first_err = killed.err();
        for dir in self.dirs.unique().into_iter().rev() {
            if let Err(e) = remove_tree(&*self.fs, dir) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}

/// Removes a cgroup directory and any child cgroups, retrying `EBUSY` while killed tasks finish
/// exiting. A directory that is already gone is fine. The common case (an empty leaf without
/// children) is one `rmdir(2)`; the children are listed only when the kernel refuses with `EBUSY`
/// (cgroupfs's answer for both "has child cgroups" and "tasks still exiting").
fn remove_tree(fs: &dyn CgroupFs, dir: &Path) -> Result<(), EnvelopeError> {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_micros(50);
    let mut children_removed = false;
    loop {
        let busy = match fs.rmdir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) if matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY)) => e,
            Err(e) => {
                return Err(EnvelopeError::NotRemoved {
                    path: dir.to_path_buf(),
                    source: e,
                })
            }
        };
        if !children_removed {
            children_removed = true;
            match fs.list_dirs(dir) {
                Ok(children) => {
                    for c in &children {
                        remove_tree(fs, &dir.join(c))?;
                    }
                    if !children.is_empty() {
                        continue;
                    }
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
                Err(e) => return Err(EnvelopeError::io("list", dir, e)),
            }
        }
        if Instant::now() >= deadline {
            return Err(EnvelopeError::NotRemoved {
                path: dir.to_path_buf(),
                source: busy,
            });
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// Limits as the kernel reads them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    pub memory_bytes: u64,
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    pub pids_max: u64,
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

/// The pids listed in `cgroup.procs` files (missing files count as empty: the cgroup is gone).
pub(crate) fn read_pids(fs: &dyn CgroupFs, files: &[PathBuf]) -> Result<Vec<i32>, EnvelopeError> {
    let mut pids = Vec::new();
    for f in files {
        let text = match fs.read(f) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue,
            Err(e) => return Err(EnvelopeError::io("read", f, e)),
        };
        for l in text.lines().filter(|l| !l.trim().is_empty()) {
            let pid = l.trim().parse().map_err(|_| EnvelopeError::Parse {
                path: f.clone(),
                content: text.clone(),
                why: "pid",
            })?;
            if !pids.contains(&pid) {
                pids.push(pid);
            }
        }
    }
    Ok(pids)
}

/// The pids in the envelope, refusing when hybox's own process is among them (freezing or killing it
/// would stop the runner itself). Empty: nothing to kill, so the kill (seal, `cgroup.kill`) is
/// skipped: with no task inside, nothing can fork its way in.
pub(crate) fn pids_to_kill(
    fs: &dyn CgroupFs,
    files: &[PathBuf],
) -> Result<Vec<i32>, EnvelopeError> {
    let me = std::process::id() as i32;
    let pids = read_pids(fs, files)?;
    if pids.contains(&me) {
        return Err(EnvelopeError::RunnerInside {
            pid: me,
            path: files[0].clone(),
        });
    }
    Ok(pids)
}

/// SIGKILLs every pid of `files` until none is left (or 2 s passed), re-reading the list after each
/// round: killed tasks take a moment to leave it.
pub(crate) fn kill_loop(fs: &dyn CgroupFs, files: &[PathBuf]) -> Result<(), EnvelopeError> {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut pause = Duration::from_micros(20);
    loop {
        let pids = read_pids(fs, files)?;
        if pids.is_empty() {
            return Ok(());
        }
        if pids.contains(&me) {
            return Err(EnvelopeError::RunnerInside {
                pid: me,
                path: files[0].clone(),
            });
        }
        if Instant::now() >= deadline {
            return Err(EnvelopeError::Survivors {
                path: files[0].clone(),
                pids,
            });
        }
        for pid in pids {
            // SAFETY: kill(2) has no memory-safety preconditions; ESRCH (already gone) is fine.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

/// Kills every task of a non-empty envelope without a freezer: first `pids.max = 0` (the pids
/// controller then refuses every fork and clone inside, so the set of tasks can only shrink; a value
/// below the current count is allowed, it only applies to new tasks), then SIGKILL rounds until
/// `cgroup.procs` is empty. No task can escape the kill by forking in between.
pub(crate) fn seal_and_kill(
    fs: &dyn CgroupFs,
    pids_dir: &Path,
    files: &[PathBuf],
) -> Result<(), EnvelopeError> {
    let max = pids_dir.join("pids.max");
    if let Err(e) = fs.write(&max, "0") {
        // Gone already (its tasks with it) is fine; anything else means the seal is not in place.
        if fs.exists(pids_dir) {
            return Err(EnvelopeError::io("write", &max, e));
        }
    }
    kill_loop(fs, files)
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

/// Live envelopes of this process, for teardown on SIGINT/SIGTERM.
fn registry() -> &'static Mutex<HashMap<u64, Arc<Inner>>> {
    static LIVE: OnceLock<Mutex<HashMap<u64, Arc<Inner>>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

fn register(inner: &Arc<Inner>) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, inner.clone());
    id
}

fn unregister(id: u64) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

/// Kills and removes every live envelope of this process; returns the failures. Used by the signal
/// teardown; a host embedding hybox with its own signal handling can call it from there.
pub fn teardown_all() -> Vec<EnvelopeError> {
    let live: Vec<(u64, Arc<Inner>)> = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let mut errors = Vec::new();
    for (id, inner) in live {
        if let Err(e) = inner.teardown() {
            errors.push(e);
        }
        unregister(id);
    }
    errors
}

/// The envelope as a backend sees it: where to put its process, and how to kill everything.
/// [`Envelope`] implements it; a backend only ever sees this interface.
pub trait EnvelopeJoin: Send + Sync {
    /// Moves `pid` into the run's cgroup (all controllers).
    fn join(&self, pid: i32) -> std::io::Result<()>;
    /// The `cgroup.procs` files a child can write itself into (one per v1 controller, one on v2).
    fn procs_files(&self) -> Vec<PathBuf>;
    /// Kills every process in the envelope (timeout, teardown).
    fn kill_all(&self) -> std::io::Result<()>;
    /// The cgroup v2 leaf a child can be created in directly (`CLONE_INTO_CGROUP`); `None` on v1,
    /// where every controller has its own hierarchy and the child must be migrated with [`join`].
    ///
    /// [`join`]: EnvelopeJoin::join
    fn clone_into_dir(&self) -> Option<PathBuf> {
        None
    }
}

/// A shared reference to a run's envelope, type-erased for the backends.
pub type EnvelopeHandle = dyn EnvelopeJoin;

/// A per-run cgroup with its limits written and read back. Tear down with [`Envelope::destroy`];
/// dropping it tears it down best-effort.
#[derive(Debug)]
pub struct Envelope {
    inner: Arc<Inner>,
    applied: Applied,
    /// `/<parent>/<leaf>`, the path as `/proc/PID/cgroup` shows it.
    rel_path: String,
    id: u64,
    done: bool,
}

fn validate_name(what: &'static str, value: &str, allow_slash: bool) -> Result<(), EnvelopeError> {
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

/// Creates `base/a/b/...` for the components of `rel` that do not exist; `EEXIST` is fine (concurrent
/// runs create the same parent).
fn mkdir_parents(fs: &dyn CgroupFs, base: &Path, rel: &str) -> Result<(), EnvelopeError> {
    let mut p = base.to_path_buf();
    for part in rel.split('/') {
        p.push(part);
        match fs.mkdir(&p) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(unavailable_or_io("mkdir", &p, e)),
        }
    }
    Ok(())
}

fn unavailable_or_io(op: &'static str, path: &Path, e: io::Error) -> EnvelopeError {
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

/// Arguments checked before anything is created.
fn validate(run_id: &str, parent: &str, limits: &Limits) -> Result<(), EnvelopeError> {
    validate_name("run id", run_id, false)?;
    validate_name("cgroup parent", parent, true)?;
    if limits.memory_bytes < page_size() {
        return Err(EnvelopeError::Invalid {
            what: "memory limit",
            value: limits.memory_bytes.to_string(),
            why: "below one page",
        });
    }
    if !(limits.cpus.is_finite() && limits.cpus > 0.0) {
        return Err(EnvelopeError::Invalid {
            what: "cpus",
            value: limits.cpus.to_string(),
            why: "must be > 0",
        });
    }
    if limits.pids == 0 {
        return Err(EnvelopeError::Invalid {
            what: "pids",
            value: "0".into(),
            why: "must be >= 1",
        });
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
    let layout = layout::detect_with(&**fs, root)?;
    let (version, bases) = bases(&layout)?;
    // Failures of the gc pass must not stop a run; they are logged.
    match gc::gc_with(fs, version, &bases, parent) {
        Ok(r) if !r.errors.is_empty() => tracing::warn!(errors = ?r.errors, "envelope gc pass"),
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
    let inner = Arc::new(Inner {
        fs: fs.clone(),
        version,
        dirs,
    });
    let id = register(&inner);
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
    };
    for dir in env.inner.dirs.unique() {
        match fs.mkdir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Not ours: make sure Drop does not remove someone else's cgroup.
                env.done = true;
                unregister(id);
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

impl Envelope {
    /// Creates the run's leaf cgroup under `root` (`HostConfig.cgroup_root`, `/sys/fs/cgroup`) and
    /// `parent` (`HostConfig.cgroup_parent`, `hybox`), writes `limits` and reads them back.
    ///
    /// The per-host work (layout detection, creating the parent and enabling its controllers, and a
    /// cheap gc pass over envelopes of dead owners) is done by the first envelope of a process and
    /// then at most every [`GC_INTERVAL`]: a CLI run pays it once, a long-lived host (`hybox serve`)
    /// does not pay it per call. A parent removed in between is noticed (`ENOENT` on the leaf) and
    /// prepared again.
    pub fn create(
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
    pub(crate) fn create_with(
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

    /// The envelope for the run report: version, path and the limits as read back.
    pub fn report(&self) -> EnvelopeReport {
        EnvelopeReport::Cgroup {
            version: self.inner.version.name().to_string(),
            path: self.rel_path.clone(),
            memory_bytes: self.applied.memory_bytes,
            cpu_quota_us: Some(self.applied.cpu_quota_us),
            cpu_period_us: self.applied.cpu_period_us,
            pids_max: self.applied.pids_max,
        }
    }

    /// The cgroup path as `/proc/PID/cgroup` shows it (`/hybox/<run_id>.owner-<pid>-<start>`).
    pub fn path(&self) -> &str {
        &self.rel_path
    }

    /// The cgroup directories (one per distinct v1 controller mount, one on v2).
    pub fn dirs(&self) -> Vec<PathBuf> {
        self.inner
            .dirs
            .unique()
            .into_iter()
            .map(Path::to_path_buf)
            .collect()
    }

    /// What the run used and which limits fired. A file that cannot be read is an error here;
    /// [`Envelope::usage`] folds it into `source`.
    pub fn try_usage(&self) -> Result<Usage, EnvelopeError> {
        let mut u = match self.inner.version {
            Version::V1 { .. } => v1::usage(&*self.inner.fs, &self.inner.dirs)?,
            Version::V2 => v2::usage(&*self.inner.fs, &self.inner.dirs.memory)?,
        };
        u.source = format!("cgroup {}", self.inner.version.name());
        Ok(u)
    }

    /// What the run used (cpu user/sys, peak memory, OOM kills, pids-limit hits). If a counter cannot be
    /// read, the figures are zero and `source` says why (never silently).
    pub fn usage(&self) -> Usage {
        self.try_usage().unwrap_or_else(|e| Usage {
            source: format!("cgroup {} (unreadable: {e})", self.inner.version.name()),
            ..Usage::default()
        })
    }

    /// Kills every process in the envelope, removes the cgroup (with retries) and verifies it is gone.
    pub fn destroy(mut self) -> Result<(), EnvelopeError> {
        self.done = true;
        let r = self.inner.teardown();
        unregister(self.id);
        r
    }
}

impl Drop for Envelope {
    fn drop(&mut self) {
        if !self.done {
            self.done = true;
            if let Err(e) = self.inner.teardown() {
                tracing::error!(error = %e, path = %self.rel_path, "envelope teardown on drop");
            }
            unregister(self.id);
        }
    }
}

impl EnvelopeJoin for Envelope {
    fn join(&self, pid: i32) -> io::Result<()> {
        for f in self.inner.procs_files() {
            self.inner
                .fs
                .write(&f, &pid.to_string())
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", f.display())))?;
        }
        Ok(())
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.inner.procs_files()
    }

    fn kill_all(&self) -> io::Result<()> {
        self.inner.kill_all().map_err(io::Error::other)
    }

    fn clone_into_dir(&self) -> Option<PathBuf> {
        (self.inner.version == Version::V2).then(|| self.inner.dirs.memory.clone())
    }
}
