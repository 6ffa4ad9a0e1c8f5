//! The [`Plan`]: everything the shim needs to build the sandbox, prepared by the runner before it forks
//! (policy as written → validated `Policy` → `Plan`; `docs/design.md` has the whole data flow). The
//! shim only executes it; it makes no policy decisions of its own.
//!
//! Wire protocol on the shim's control socket ([`CONTROL_FD`], a `SOCK_STREAM` socketpair):
//! - runner → shim: the [`GO_BYTE`] (sent once the id maps are written and the shim is in the run's
//!   cgroup), a little-endian `u32` length, then the plan as JSON; for a pre-built sandbox, later,
//!   the [`CALL_BYTE`].
//! - shim → runner: newline-delimited JSON [`Message`]s: `Exec` right before the workload's
//!   `execveat` (`Ready` before it for a pre-built sandbox), then `Exited`/`Signaled` when the
//!   workload ends, or one `SetupError` instead.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The control socket's fd number in the shim (the runner's child `dup2`s it there before `execveat`).
pub const CONTROL_FD: i32 = 3;
/// The workload executable's fd number in the shim (opened `O_RDONLY` by the runner, executed by fd).
pub const WORKLOAD_FD: i32 = 4;
/// Where the shim finds the fds the workload is given ([`Plan::passed_fds`]): the runner's child
/// puts them at `PASSED_FDS_BASE..`, and the workload's process moves them to `3..` right before
/// its exec (the control socket and the workload fd move above them first).
pub const PASSED_FDS_BASE: i32 = 5;
/// The most fds a workload can be given besides stdio.
pub const MAX_PASSED_FDS: usize = 64;
/// Largest plan the shim accepts (a sanity bound, not a policy limit).
pub const MAX_PLAN_BYTES: u32 = 16 << 20;

/// The byte a runner writes on the control socket to let a pre-built sandbox exec its workload.
pub const CALL_BYTE: u8 = b'c';

/// The first byte the runner sends on the control socket: the shim may start (its id maps are written
/// and it is in the run's cgroup). The plan's length (u32, little endian) and the plan follow.
pub const GO_BYTE: u8 = b'g';

/// The shim's instructions, in setup order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Size cap of the tmpfs that becomes the new root (holds only mount points).
    pub root_tmpfs_bytes: u64,
    /// An overlay the shim mounts before the rootfs binds, which may name entries beneath it (an
    /// image's root in an unprivileged run, docs/images.md).
    #[serde(default)]
    pub overlay: Option<Overlay>,
    /// Read-only binds that form the root filesystem, in mount order.
    pub rootfs: Vec<Bind>,
    /// Symlinks of the rootfs (`/bin -> usr/bin` on merged-/usr hosts), created after the binds.
    pub links: Vec<Link>,
    /// The policy's mounts, after the rootfs binds.
    pub mounts: Vec<Bind>,
    /// Size of the scratch tmpfs at `/tmp`, if any.
    pub tmp_bytes: Option<u64>,
    /// More private tmpfs mounts (`native.tmpfs`: an OCI bundle's `/run`, Docker's `--tmpfs`),
    /// after `/tmp`.
    #[serde(default)]
    pub tmpfs: Vec<Tmpfs>,
    pub workdir: PathBuf,
    pub hostname: String,
    /// The UTS namespace was joined (an OCI pod's): its hostname is kept; the shim has no
    /// capability over a namespace another user namespace owns.
    #[serde(default)]
    pub keep_hostname: bool,
    /// Bring `lo` up (policy `network: loopback`).
    pub loopback: bool,
    pub rlimits: Rlimits,
    /// Sandbox uid/gid (mapped to one unprivileged host id by the runner).
    pub uid: u32,
    pub gid: u32,
    /// The workload's argv (argv[0] included) and complete environment (`KEY=VALUE`).
    pub argv: Vec<String>,
    pub env: Vec<String>,
    /// Keep the workload fd open across exec (scripts: the kernel hands `/dev/fd/N` to the interpreter).
    pub keep_workload_fd: bool,
    /// A pre-built sandbox of a native warm pool: the workload's process does every step up to and
    /// including seccomp, then blocks reading [`CALL_BYTE`] from the control socket, and only then
    /// executes the workload (the shim's `workload` module says why this wait is safe).
    #[serde(default)]
    pub wait_for_call: bool,
    /// The plan of a process entering a running sandbox (`hybox-runc exec`): the runner started
    /// this shim inside the sandbox's namespaces and cgroup already, so the shim builds nothing;
    /// it does the workload's own steps (the shim's `enter` module) and executes `argv[0]` by
    /// path inside the sandbox (`PATH` from `env` for a bare name). There is no workload fd.
    #[serde(default)]
    pub enter: bool,
    /// The workload's stdin is a pty hybox-runc made for it (OCI `process.terminal`, its master
    /// sent over the console socket): after `setsid` the shim makes it the session's controlling
    /// terminal (`TIOCSCTTY`), so job control, `^C` and `tty` work as under runc. Never set for a
    /// terminal of the caller's (TIOCSTI stays denied by seccomp regardless).
    #[serde(default)]
    pub controlling_tty: bool,
    /// How many fds the workload gets besides stdio (OCI `--preserve-fds`): the shim has them at
    /// [`PASSED_FDS_BASE`].. and the workload gets them as 3.. (every other fd above 2 closes at
    /// its exec, as always). Init closes its copies once the workload is forked.
    #[serde(default)]
    pub passed_fds: u32,
    pub landlock: LandlockPlan,
    /// Cover `/proc`'s host-wide files and make its kernel tunables read-only (`mounts::mount_proc`).
    /// `false` only with the `native.nested` grant: the kernel lets a nested user namespace mount a
    /// procfs only while some procfs of its mount namespace is fully visible (fs/namespace.c,
    /// `mount_too_revealing`: no locked mount may cover any part of it), so a masked `/proc` makes
    /// every nested pid namespace's own procfs fail with EPERM.
    pub mask_proc: bool,
    /// Seccomp programs, installed in this order (each a list of `sock_filter`s packed by
    /// [`pack_filter`]). The last one is the default-deny allow-list; an OCI bundle's narrowing
    /// profile, if any, comes right before it.
    pub seccomp: Vec<Vec<u64>>,
}

/// One bind mount: `host` (a path in the runner's mount namespace) at `guest` (inside the new root).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    pub host: PathBuf,
    pub guest: PathBuf,
    pub rw: bool,
    /// `false` for optional rootfs parts (e.g. `/lib64` on hosts without it): skipped when absent.
    pub required: bool,
}

/// An overlayfs the shim mounts with the `userxattr` option in its own user and mount namespaces:
/// the mount exists only there, so an unprivileged runner can have it (the kernel lets a user
/// namespace's owner mount overlayfs since Linux 5.11; `userxattr` makes it read whiteouts and
/// opaque markers from `user.overlay.*`, the only xattrs an unprivileged user can write). All
/// paths are host paths (the runner's mount namespace), mounted over as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// The lower directories, uppermost first (at least two without an upper layer).
    pub lower: Vec<PathBuf>,
    /// The mount point of the merged tree.
    pub merged: PathBuf,
    /// The writable layer, or `None` for a read-only overlay.
    pub upper: Option<Upper>,
}

/// The writable layer of an [`Overlay`]: a tmpfs of `bytes` at `dir` (nosuid, nodev), with the
/// overlay's `upper/` and `work/` in it. Its pages are charged to the writer's memory cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upper {
    pub dir: PathBuf,
    pub bytes: u64,
}

/// A private tmpfs at `guest` (inside the new root): `bytes` at most, nosuid, nodev, noexec when
/// asked, with permission bits `mode`. Its pages are charged to the run's memory cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tmpfs {
    pub guest: PathBuf,
    pub bytes: u64,
    pub mode: u32,
    pub noexec: bool,
}

/// A symlink at `path` (inside the new root) pointing to `target`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Link {
    pub target: PathBuf,
    pub path: PathBuf,
}

/// setrlimit values (soft = hard). RLIMIT_CORE and RLIMIT_RTPRIO are always 0; RLIMIT_AS is never set
/// (memory is the cgroup's job: an AS limit breaks runtimes that reserve address space).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rlimits {
    pub nofile: u64,
    pub fsize: u64,
    pub nproc: u64,
    pub memlock: u64,
    pub msgqueue: u64,
    pub stack: u64,
    /// RLIMIT_CPU in seconds (a backstop for `resources.cpu_time`).
    pub cpu_secs: Option<u64>,
}

/// Landlock: what to enforce, and whether a partial enforcement is acceptable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LandlockPlan {
    /// `off`: not used; `best_effort`: enforce what the kernel supports; `required`: fail the setup unless
    /// fully enforced.
    pub mode: LandlockMode,
    /// Handle (and so restrict) filesystem rights: `read` and `write` below apply. `false` only with
    /// the `native.nested` grant: the kernel refuses `mount`, `umount2` and `pivot_root` to a thread
    /// whose Landlock domain handles any filesystem right (the kernel's Landlock documentation,
    /// "Filesystem topology modification"), and a nested sandbox needs all three; the network rules
    /// and the scopes stay.
    pub filesystem: bool,
    /// Paths (inside the new root) readable and executable.
    pub read: Vec<PathBuf>,
    /// Paths (inside the new root) readable and writable.
    pub write: Vec<PathBuf>,
    /// Deny TCP bind/connect (policy `network: none`).
    pub deny_tcp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockMode {
    Off,
    BestEffort,
    Required,
}

/// How much of a Landlock ruleset the kernel enforces (the shim's, or the hardened wasm worker's).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LandlockStatus {
    /// Every rule the ruleset handles is enforced.
    FullyEnforced,
    /// An older kernel enforces part of it (no TCP rules before ABI 4, no scoping before ABI 6).
    PartiallyEnforced,
    /// The kernel has no Landlock (or it is disabled): nothing is enforced.
    NotEnforced,
    /// The policy does not use Landlock.
    Off,
    /// Runner-side only: the sandbox ended before it got to Landlock.
    NotReached,
}

impl LandlockStatus {
    /// The name used in reports (`fully_enforced`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            LandlockStatus::FullyEnforced => "fully_enforced",
            LandlockStatus::PartiallyEnforced => "partially_enforced",
            LandlockStatus::NotEnforced => "not_enforced",
            LandlockStatus::Off => "off",
            LandlockStatus::NotReached => "not_reached",
        }
    }

    /// Whether Landlock was asked for and the kernel enforced less than all of it.
    pub fn is_degraded(self) -> bool {
        matches!(
            self,
            LandlockStatus::PartiallyEnforced | LandlockStatus::NotEnforced
        )
    }
}

impl From<landlock::RulesetStatus> for LandlockStatus {
    fn from(s: landlock::RulesetStatus) -> Self {
        match s {
            landlock::RulesetStatus::FullyEnforced => LandlockStatus::FullyEnforced,
            landlock::RulesetStatus::PartiallyEnforced => LandlockStatus::PartiallyEnforced,
            landlock::RulesetStatus::NotEnforced => LandlockStatus::NotEnforced,
        }
    }
}

impl std::fmt::Display for LandlockStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the shim tells the runner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "msg", rename_all = "snake_case")]
pub enum Message {
    /// A pre-built sandbox is complete (every step but the exec) and waits for its call.
    Ready,
    /// The sandbox is built; the workload's `execveat` comes next; `landlock` says how much of
    /// its ruleset the kernel enforces.
    Exec { landlock: LandlockStatus },
    /// A setup step failed; nothing of the workload ran. `step` reads like "pivot_root: EINVAL".
    SetupError { step: String },
    /// The workload (the shim's child) exited with this code.
    Exited { code: i32 },
    /// The workload was killed by this signal.
    Signaled { signal: i32 },
}

impl Message {
    /// Whether the shim sends nothing after this (it exits next).
    pub fn is_final(&self) -> bool {
        !matches!(self, Message::Exec { .. } | Message::Ready)
    }
}

/// Packs a BPF program (`sock_filter`: code u16, jt u8, jf u8, k u32) into u64s for the plan.
pub fn pack_filter(prog: &[seccompiler::sock_filter]) -> Vec<u64> {
    prog.iter()
        .map(|f| {
            u64::from(f.code) | u64::from(f.jt) << 16 | u64::from(f.jf) << 24 | u64::from(f.k) << 32
        })
        .collect()
}

/// The inverse of [`pack_filter`].
pub fn unpack_filter(packed: &[u64]) -> Vec<seccompiler::sock_filter> {
    packed
        .iter()
        .map(|&v| seccompiler::sock_filter {
            code: v as u16,
            jt: (v >> 16) as u8,
            jf: (v >> 24) as u8,
            k: (v >> 32) as u32,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_packing_round_trips() {
        let prog = vec![
            seccompiler::sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 4,
            },
            seccompiler::sock_filter {
                code: 0x15,
                jt: 1,
                jf: 255,
                k: 0xc000_003e,
            },
            seccompiler::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: 0x8000_0000,
            },
        ];
        let back = unpack_filter(&pack_filter(&prog));
        assert_eq!(back.len(), 3);
        for (a, b) in prog.iter().zip(&back) {
            assert_eq!((a.code, a.jt, a.jf, a.k), (b.code, b.jt, b.jf, b.k));
        }
    }
}
