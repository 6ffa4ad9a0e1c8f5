//! The cgroup envelope: one per-run leaf cgroup for both backends. This file holds the types and
//! the public API; the work is in one file per stage of an envelope's life:
//!
//! - `create.rs`: [`Envelope::create`] takes the host's layout (v1, v2 or hybrid, never assumed:
//!   [`crate::host::cgroup::detect`]), creates `<parent>/<run_id>.owner-<pid>-<start>`, writes the
//!   policy's limits and **reads every value back** (a value the kernel did not take is
//!   [`EnvelopeError::Mismatch`]); `v1.rs` and `v2.rs` know each version's files.
//! - Backends put their process in it through [`EnvelopeJoin`]; at the end [`Envelope::usage`] reads
//!   what the run used and which limits fired (`v1.rs`, `v2.rs`).
//! - `teardown.rs`: [`Envelope::destroy`] kills everything inside, removes the cgroup with retries
//!   and verifies it is gone; `Drop` does the same best-effort if `destroy` was not reached (early
//!   return, panic).
//! - `registry.rs`: the live envelopes of this process, for [`teardown_all`] (a front-end that
//!   handles SIGINT/SIGTERM: the CLI's signal teardown).
//! - `owner.rs`: the owner record in the leaf's name; `gc.rs`: [`gc`] for envelopes whose owner
//!   died (SIGKILL).
//! - `at.rs`: [`Envelope::create_at`], an envelope at exactly the path a container runtime's caller
//!   names (no owner record, no gc: the runtime's state owns it; kept after the run until
//!   [`Envelope::remove`]), and what a live container's cgroup needs: the caller inside it
//!   ([`Envelope::enter`]), [`Envelope::update`], the freezer ([`Envelope::set_frozen`]).
//!
//! File I/O goes through hybox's own thin layer (`fsio.rs`, which explains why cgroups-rs is used for
//! mount detection only); the rest of hybox never sees a cgroup file. The envelope knows nothing of
//! the backends: they see it through [`EnvelopeJoin`] only. docs/design-envelope.md walks through it.
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

mod at;
mod create;
mod fsio;
mod gc;
pub mod owner;
mod registry;
mod teardown;
mod throttle;
mod v1;
mod v2;

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub use at::LimitsUpdate;
pub use create::{cpu_quota, CPU_PERIOD_US, GC_INTERVAL};
pub use gc::{gc, GcFailure, GcReport};
pub use owner::Owner;
pub use registry::teardown_all;
pub use throttle::IoLimit;

use fsio::CgroupFs;

use crate::host::cgroup::LayoutError;
use crate::report::{EnvelopeReport, Usage};

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

/// Limits as the kernel reads them back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Applied {
    pub memory_bytes: u64,
    pub cpu_quota_us: u64,
    pub cpu_period_us: u64,
    pub pids_max: u64,
}

/// What to do when this host or user gives hybox no cgroup to build envelopes in
/// ([`EnvelopeError::is_unavailable`]); `hybox doctor` says the same.
pub const NO_CGROUP_HINT: &str = "every run's envelope is a cgroup that hybox creates under \
the cgroup root, which needs root: run hybox as root (sudo); or let runs go ahead without an \
envelope with \"on_unenforceable\": \"degrade\" in the policy, which gives up the run's own \
memory, CPU and process limits and its usage figures (rlimits, and for wasm the store's limits, \
still apply; the report lists the degradation). A delegated cgroup v2 subtree (systemd-run --user \
--scope -p Delegate=yes) is not usable by hybox yet.";

/// Errors of the envelope. Every variant names the file or the step.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    /// The host's cgroup layout could not be found ([`crate::host::cgroup::detect`]).
    #[error(transparent)]
    Layout(#[from] LayoutError),
    /// No cgroup hybox can use: creating or writing one was refused (not root, no delegated
    /// writable cgroup) or its parent is gone.
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
            EnvelopeError::Layout(e) => e.is_unavailable(),
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

/// The part of an envelope the teardown needs; shared with the global registry for signal teardown.
#[derive(Debug)]
pub(crate) struct Inner {
    fs: Arc<dyn CgroupFs>,
    version: Version,
    dirs: Dirs,
    /// Further v1 hierarchies the envelope spans (the freezer of an envelope made by
    /// [`Envelope::create_at`], for pause and resume): created, joined and removed with `dirs`.
    extra: Vec<PathBuf>,
    /// The teardown kills what is inside but leaves the directories, which belong to the caller
    /// ([`Envelope::create_at`]: a container runtime's state, removed by [`Envelope::remove`]).
    keep_dirs: bool,
    /// The `cgroup.procs` files the calling process came from, while it is inside the envelope
    /// itself ([`Envelope::enter`]); it goes back there before any kill. `None` while outside.
    origin: std::sync::Mutex<Option<Vec<PathBuf>>>,
    /// The disk I/O throttles, once [`Envelope::limit_io`] wrote them (`io.rs`).
    io: OnceLock<throttle::IoState>,
}

impl Inner {
    fn new(fs: Arc<dyn CgroupFs>, version: Version, dirs: Dirs) -> Inner {
        Inner {
            fs,
            version,
            dirs,
            extra: Vec::new(),
            keep_dirs: false,
            origin: std::sync::Mutex::new(None),
            io: OnceLock::new(),
        }
    }

    /// Every directory of the envelope: one per distinct controller hierarchy, then `extra`.
    fn all_dirs(&self) -> Vec<&Path> {
        let mut d = self.dirs.unique();
        d.extend(self.extra.iter().map(PathBuf::as_path));
        d.extend(self.io.get().and_then(|s| s.blkio_dir.as_deref()));
        d
    }

    fn procs_files(&self) -> Vec<PathBuf> {
        self.all_dirs()
            .into_iter()
            .map(|d| d.join("cgroup.procs"))
            .collect()
    }
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
    /// Its key in the registry of live envelopes (`registry.rs`).
    id: u64,
    /// Torn down already, or never ours to tear down (the leaf existed): `Drop` does nothing.
    done: bool,
    /// The creating process's own `cgroup.procs` files, where [`Envelope::enter`] returns to
    /// (envelopes made by [`Envelope::create_at`]; empty otherwise).
    home: Vec<PathBuf>,
    /// Time spent in [`EnvelopeJoin::join`] so far, in nanoseconds ([`Envelope::join_us`]).
    join_ns: AtomicU64,
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
        create::create(root, parent, run_id, limits)
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
        create::create_with(fs, root, parent, run_id, limits, owner)
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
            io: self
                .inner
                .io
                .get()
                .map(|s| s.limits.iter().map(IoLimit::report).collect())
                .unwrap_or_default(),
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

    /// How long moving processes into this envelope took so far ([`EnvelopeJoin::join`], all
    /// controllers), in microseconds: the report's `phases.join_us`. On cgroup v1 without
    /// `favordynmods` a lone run's join waits for an RCU grace period, milliseconds; 0 when nothing
    /// migrated (`CLONE_INTO_CGROUP`).
    pub fn join_us(&self) -> u64 {
        self.join_ns.load(Ordering::Relaxed) / 1000
    }

    /// Kills every process in the envelope, removes the cgroup (with retries) and verifies it is gone.
    pub fn destroy(mut self) -> Result<(), EnvelopeError> {
        self.done = true;
        let r = self.inner.teardown();
        registry::unregister(self.id);
        r
    }
}

impl EnvelopeJoin for Envelope {
    /// The error keeps the errno's kind and names the step and the file (`write <dir>/cgroup.procs:
    /// <errno>`, the text of [`EnvelopeError::Io`]); the caller adds what it was moving.
    ///
    /// When the caller entered the envelope itself (hybox-runc's monitor, which joined at
    /// `create`), a hierarchy whose `cgroup.procs` already lists `pid` is not written: a child
    /// forked in there is born in it, and on cgroup v1 even a move into the cgroup a process is
    /// already in takes `cgroup_threadgroup_rwsem` for writing, which waits for an RCU grace period
    /// (milliseconds, on the container's start path). The read takes no such lock. A caller
    /// outside (`hybox run`) forked the child outside: it is moved without looking.
    fn join(&self, pid: i32) -> io::Result<()> {
        let t0 = std::time::Instant::now();
        let id = pid.to_string();
        let born_inside = self.inner.caller_entered();
        let r = (|| {
            for f in self.inner.procs_files() {
                let listed = born_inside
                    && self
                        .inner
                        .fs
                        .read(&f)
                        .is_ok_and(|procs| procs.lines().any(|l| l.trim() == id));
                if listed {
                    continue;
                }
                self.inner
                    .fs
                    .write(&f, &id)
                    .map_err(|e| io::Error::new(e.kind(), format!("write {}: {e}", f.display())))?;
            }
            Ok(())
        })();
        let ns = u64::try_from(t0.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.join_ns.fetch_add(ns, Ordering::Relaxed);
        r
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
