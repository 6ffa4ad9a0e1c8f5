//! `native`: settings of the native backend (root filesystem, hostname, seccomp grants, nested
//! sandboxes, Landlock, rlimits, and the ids inside and on the host).

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::units::Size;

/// Settings for the native backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct NativeSection {
    /// The sandbox's root: `"host"` (a minimal read-only view of the host's system directories, enough
    /// for dynamic binaries) or `{"dir": "/abs/path"}` (e.g. an unpacked image, bound read-only).
    #[serde(default)]
    pub rootfs: Rootfs,
    /// Hostname inside the sandbox. Default `hybox`.
    #[serde(default = "default_hostname", deserialize_with = "hostname_valid")]
    pub hostname: String,
    /// The seccomp filter: the default allow-list plus explicitly granted syscalls.
    #[serde(default)]
    pub seccomp: Seccomp,
    /// Nested sandboxes: let the workload create its own user, mount, pid, net, ipc, uts and cgroup
    /// namespaces, so that a sandbox tool (hybox itself, a container runtime) runs inside this
    /// sandbox without any privilege on the host. Default `false`. Allows exactly the syscalls of
    /// `hybox_shim::seccomp::NESTED_SYSCALLS` (the rest of the deny-list holds), and has two
    /// consequences the run report lists: the sandbox's Landlock ruleset handles no filesystem
    /// rights (a Landlock domain with filesystem rights may not mount), and its `/proc` is not
    /// masked (the kernel refuses a nested procfs while any of it is covered). docs/policy.md.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub nested: bool,
    /// More private tmpfs mounts besides `/tmp` (an image's `/run`, Docker's `--tmpfs`): each a
    /// fresh, size-capped tmpfs at `guest`, writable by the workload, charged to the run's memory,
    /// gone after the run. Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tmpfs: Vec<TmpfsMount>,
    /// Landlock: `required` (default; fail if the kernel lacks it), `best_effort`, or `off`.
    #[serde(default)]
    pub landlock: LandlockMode,
    /// Resource limits set with setrlimit inside the sandbox. RLIMIT_AS is never set (memory is the
    /// cgroup's job).
    #[serde(default)]
    pub rlimits: Rlimits,
    /// The workload's uid inside the sandbox. Default 1000.
    #[serde(default = "default_id")]
    pub uid: u32,
    /// The workload's gid inside the sandbox. Default 1000.
    #[serde(default = "default_id")]
    pub gid: u32,
    /// The one unprivileged host uid the sandbox's uid maps to. Default: 65534 (nobody) when hybox runs
    /// as root, the caller's own uid otherwise. Never 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_uid: Option<u32>,
    /// The one unprivileged host gid the sandbox's gid maps to. Default like `host_uid`. Never 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_gid: Option<u32>,
}

impl Default for NativeSection {
    fn default() -> Self {
        NativeSection {
            rootfs: Rootfs::default(),
            hostname: default_hostname(),
            seccomp: Seccomp::default(),
            nested: false,
            tmpfs: Vec::new(),
            landlock: LandlockMode::default(),
            rlimits: Rlimits::default(),
            uid: default_id(),
            gid: default_id(),
            host_uid: None,
            host_gid: None,
        }
    }
}

fn default_hostname() -> String {
    "hybox".into()
}
fn default_id() -> u32 {
    1000
}

fn hostname_valid<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let h = String::deserialize(d)?;
    let ok = !h.is_empty()
        && h.len() <= 64
        && h.split('.').all(|label| {
            !label.is_empty()
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !ok {
        return Err(de::Error::invalid_value(
            de::Unexpected::Str(&h),
            &"a hostname of at most 64 characters: letters, digits, '-' and '.'",
        ));
    }
    Ok(h)
}

/// One private tmpfs of the native sandbox (`native.tmpfs[N]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TmpfsMount {
    /// Where, inside the sandbox (absolute; not under `/proc`, `/dev`, `/sys`, `/tmp`).
    pub guest: PathBuf,
    /// Its size cap, e.g. `"16M"` (at least 64K).
    pub size: Size,
    /// Permission bits of its root, octal as a string (e.g. `"755"`). Default `"1777"`, as `/tmp`:
    /// the workload's uid is not the tmpfs's owner.
    #[serde(default = "default_tmpfs_mode")]
    pub mode: String,
    /// Mount it `noexec`. Default `false`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub noexec: bool,
}

fn default_tmpfs_mode() -> String {
    "1777".into()
}

impl TmpfsMount {
    /// The mode as bits, if it is octal and at most `7777`.
    pub fn mode_bits(&self) -> Option<u32> {
        u32::from_str_radix(&self.mode, 8)
            .ok()
            .filter(|m| *m <= 0o7777)
    }
}

/// The root filesystem of a native sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rootfs {
    /// `/usr`, `/lib*`, `/bin`, `/sbin` and a few files of `/etc` from the host, read-only.
    #[default]
    Host,
    /// This directory as the root, read-only.
    Dir(PathBuf),
    /// The mounted root of one run of an image (`hybox run IMAGE`, docs/images.md): its top-level
    /// entries are bound read-write when `writable` (the writes land in the run's ephemeral upper
    /// layer), read-only otherwise. Set by the image front-end, never read from a policy file.
    /// With `overlay`, `dir` is only the mount point: the sandbox mounts the overlay itself
    /// (an unprivileged run).
    #[serde(skip_deserializing)]
    Image {
        dir: PathBuf,
        writable: bool,
        overlay: Option<ImageOverlay>,
    },
}

/// An image's root that the sandbox mounts in its own user and mount namespaces (`userxattr`),
/// so that a run needs no privilege on the host (docs/images.md, "Unprivileged runs").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ImageOverlay {
    /// The unpacked layers, uppermost first.
    pub lower: Vec<PathBuf>,
    /// The writable layer's tmpfs mount point and size; `None` for a read-only root.
    pub upper: Option<(PathBuf, u64)>,
    /// The merged tree's top-level entries, known from the layers (there is no merged tree on the
    /// host to list).
    pub entries: Vec<RootEntry>,
}

/// A top-level entry of an image's root: a name, and its target if it is a symlink.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct RootEntry {
    pub name: PathBuf,
    pub link: Option<PathBuf>,
}

/// Seccomp settings for the native backend.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Seccomp {
    /// Extra syscalls (by name) allowed on top of the default allow-list. Each one is listed in the
    /// run report. Syscalls hybox considers escape primitives (e.g. `ptrace`, `bpf`, `mount`) cannot be
    /// granted.
    #[serde(default)]
    pub allow: Vec<String>,
    /// A narrowing profile (an OCI bundle's `linux.seccomp`, mapped by `hybox-runc`): compiled into
    /// one more filter stacked with the default ones. The kernel runs every installed filter and
    /// applies the most severe result, so the profile can only narrow what the allow-list lets
    /// through, never widen it. docs/oci.md.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<SeccompProfile>,
}

/// A seccomp profile that narrows the default allow-list: `default_action` for every syscall no
/// rule matches, the first matching rule's action otherwise (libseccomp's semantics).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SeccompProfile {
    pub default_action: ProfileAction,
    #[serde(default)]
    pub rules: Vec<ProfileRule>,
}

/// What a profile does with a syscall.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfileAction {
    Allow,
    /// Fail the call with this errno.
    Errno(u16),
    KillProcess,
    KillThread,
    /// Send `SIGSYS`.
    Trap,
    /// Allow, and log it to the kernel's audit log.
    Log,
}

/// `action` for the syscalls `names` (names unknown on x86_64 are skipped), when every one of
/// `args` holds (none: always). The comparisons of one rule are ANDed, except that several on
/// one argument are each a rule of their own (ORed), as runc does: libseccomp cannot AND them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileRule {
    pub names: Vec<String>,
    pub action: ProfileAction,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<ProfileArg>,
}

/// One comparison of a syscall argument: `args[index] OP value` (`masked_eq`:
/// `args[index] & value == value_two`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ProfileArg {
    /// 0..=5.
    pub index: u8,
    pub op: ProfileOp,
    pub value: u64,
    #[serde(default)]
    pub value_two: u64,
}

/// The comparison of a [`ProfileArg`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProfileOp {
    Ne,
    Lt,
    Le,
    Eq,
    Ge,
    Gt,
    MaskedEq,
}

/// Landlock enforcement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LandlockMode {
    /// Landlock must be fully enforced, or the run fails (or degrades if the policy allows it).
    #[default]
    Required,
    /// Enforce what the kernel supports; the report says what was enforced.
    BestEffort,
    /// Do not use Landlock (mount namespaces still apply). Recorded in the report.
    Off,
}

/// setrlimit values for the native workload. `core` is always 0 and `as` is never set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Rlimits {
    /// RLIMIT_NOFILE. Default 256.
    #[serde(default = "default_nofile")]
    pub nofile: u64,
    /// RLIMIT_FSIZE: largest file the workload may write. Default 1G.
    #[serde(default = "default_fsize")]
    pub fsize: Size,
    /// RLIMIT_MEMLOCK. Default 64K.
    #[serde(default = "default_memlock")]
    pub memlock: Size,
    /// RLIMIT_MSGQUEUE. Default 0.
    #[serde(default)]
    pub msgqueue: Size,
    /// RLIMIT_STACK. Default 8M.
    #[serde(default = "default_stack")]
    pub stack: Size,
}

impl Default for Rlimits {
    fn default() -> Self {
        Rlimits {
            nofile: default_nofile(),
            fsize: default_fsize(),
            memlock: default_memlock(),
            msgqueue: Size(0),
            stack: default_stack(),
        }
    }
}

fn default_nofile() -> u64 {
    256
}
fn default_fsize() -> Size {
    Size(1 << 30)
}
fn default_memlock() -> Size {
    Size::kib(64)
}
fn default_stack() -> Size {
    Size::mib(8)
}
