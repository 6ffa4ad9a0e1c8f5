//! The policy file: one JSON document (`"version": 1`) that governs both backends.
//!
//! Everything is denied by default: no host files, no network, no host environment, no extra
//! syscalls. A policy grants what a workload may use and sets the limits of its envelope. The full field
//! reference is `docs/policy.md`; `hybox policy schema` prints the JSON Schema.
//!
//! Parsing is strict (unknown fields are rejected, values are range-checked) and every error names the
//! file, the JSON path, what was expected and what was found, with line and column where known:
//!
//! ```
//! use hybox::policy::Policy;
//! let err = Policy::from_json_str(r#"{"version": 1, "resources": {"cpus": 0}}"#, "p.json").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "p.json:1:39: resources.cpus: invalid value: integer `0`, expected a number of cores in (0, 1024], e.g. 0.5"
//! );
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::units::{Duration, Size};

/// Why a policy was refused.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The file could not be read.
    #[error("{file}: cannot read policy: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// The JSON is malformed, or a field has the wrong type, an unknown name or a value out of range.
    #[error("{file}:{line}:{column}: {path}: {message}")]
    Parse {
        file: String,
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The fields are each valid but do not make sense together (or a path is unsafe).
    #[error("{file}: {path}: {message}")]
    Invalid {
        file: String,
        path: String,
        message: String,
    },
}

impl PolicyError {
    /// The JSON path of the offending field (`resources.cpus`), or `(root)`.
    pub fn path(&self) -> Option<&str> {
        match self {
            PolicyError::Read { .. } => None,
            PolicyError::Parse { path, .. } | PolicyError::Invalid { path, .. } => Some(path),
        }
    }
}

/// The only policy format version this hybox understands.
pub const POLICY_VERSION: u32 = 1;

/// A validated policy. Construct it with [`Policy::from_file`] or [`Policy::from_json_str`]; both run
/// the same checks, so a `Policy` value is always one hybox can enforce (or degrade, if allowed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Format version; must be 1.
    #[serde(deserialize_with = "version_one")]
    #[schemars(range(min = 1, max = 1))]
    pub version: u32,
    /// Free text: when to use this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Which backend to use: `auto` lets hybox decide (see `hybox explain`).
    #[serde(default)]
    pub backend: BackendChoice,
    /// Backends this policy allows at all. Default: both.
    #[serde(default = "all_backends")]
    pub allowed_backends: Vec<Backend>,
    /// How far the workload is trusted; steers `auto` for bundles with both variants.
    #[serde(default)]
    pub trust: Trust,
    /// The resource envelope (cgroup) and run limits.
    #[serde(default)]
    pub resources: Resources,
    /// Host paths the workload may see, and its scratch space.
    #[serde(default)]
    pub filesystem: Filesystem,
    /// Network access: `none` (default) or `loopback` (a private loopback only).
    #[serde(default)]
    pub network: Network,
    /// Environment variables given to the workload. Nothing from the host unless named in `inherit_env`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of host environment variables copied into the workload's environment (if set on the host).
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// Default arguments, used when the command line gives none.
    #[serde(default)]
    pub args: Vec<String>,
    /// Settings for the wasm backend.
    #[serde(default)]
    pub wasm: WasmSection,
    /// Settings for the native backend.
    #[serde(default)]
    pub native: NativeSection,
    /// What to do when this host cannot enforce part of the policy: `fail` (default) or `degrade`
    /// (run anyway, and list every degradation in the report).
    #[serde(default)]
    pub on_unenforceable: OnUnenforceable,
}

fn version_one<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let v = u64::deserialize(d)?;
    if v != u64::from(POLICY_VERSION) {
        return Err(de::Error::invalid_value(
            de::Unexpected::Unsigned(v),
            &"1 (the only policy version this hybox reads)",
        ));
    }
    Ok(POLICY_VERSION)
}

fn all_backends() -> Vec<Backend> {
    vec![Backend::Wasm, Backend::Native]
}

/// An isolation technology.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// A WebAssembly guest in wasmtime.
    Wasm,
    /// A native ELF in Linux namespaces behind the shim.
    Native,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Wasm => "wasm",
            Backend::Native => "native",
        })
    }
}

/// `backend` in a policy: a fixed backend or `auto`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackendChoice {
    #[default]
    Auto,
    Wasm,
    Native,
}

impl BackendChoice {
    pub fn forced(self) -> Option<Backend> {
        match self {
            BackendChoice::Auto => None,
            BackendChoice::Wasm => Some(Backend::Wasm),
            BackendChoice::Native => Some(Backend::Native),
        }
    }
}

/// How far the workload is trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Trust {
    /// Third-party code: prefer the narrowest interface (wasm) when a workload offers both.
    #[default]
    Untrusted,
    /// Your own tools: prefer native speed and full POSIX when a workload offers both.
    Trusted,
}

/// Network access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// No network at all: native gets an empty network namespace with `lo` down; wasm gets no sockets.
    #[default]
    None,
    /// A private loopback: native gets its own namespace with `lo` up; wasm components may use
    /// loopback addresses only.
    Loopback,
}

/// What to do when the host cannot enforce part of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnUnenforceable {
    #[default]
    Fail,
    Degrade,
}

/// The resource envelope and run limits. Defaults are deliberately tight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// Memory hard limit for everything in the run (cgroup), swap disabled. Default 256M, minimum 4M.
    #[serde(default = "default_memory", deserialize_with = "memory_range")]
    pub memory: Size,
    /// CPU bandwidth in cores (cgroup quota/period), e.g. 0.5 for half a core. Default 1.
    #[serde(default = "default_cpus", deserialize_with = "cpus_range")]
    #[schemars(range(min = 0.001, max = 1024.0))]
    pub cpus: f64,
    /// Maximum number of processes and threads in the run (cgroup pids.max). Default 64.
    #[serde(default = "default_pids", deserialize_with = "pids_range")]
    #[schemars(range(min = 1, max = 4194304))]
    pub pids: u64,
    /// Wall-clock limit for the run. Default 30s; at most 24h.
    #[serde(default = "default_timeout", deserialize_with = "timeout_range")]
    pub timeout: Duration,
    /// Optional CPU-time budget: fuel for wasm (calibrated), RLIMIT_CPU for native.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "some_cpu_time"
    )]
    pub cpu_time: Option<Duration>,
    /// Bytes of stdout kept when output is captured (library and `hybox serve`). Default 1M.
    #[serde(default = "default_capture")]
    pub stdout_max: Size,
    /// Bytes of stderr kept when output is captured. Default 1M.
    #[serde(default = "default_capture")]
    pub stderr_max: Size,
}

impl Default for Resources {
    fn default() -> Self {
        Resources {
            memory: default_memory(),
            cpus: default_cpus(),
            pids: default_pids(),
            timeout: default_timeout(),
            cpu_time: None,
            stdout_max: default_capture(),
            stderr_max: default_capture(),
        }
    }
}

fn default_memory() -> Size {
    Size::mib(256)
}
fn default_cpus() -> f64 {
    1.0
}
fn default_pids() -> u64 {
    64
}
fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
fn default_capture() -> Size {
    Size::mib(1)
}

/// Lower bound for `resources.memory`: below this not even the shim or wasmtime starts reliably.
pub const MIN_MEMORY: Size = Size::mib(4);
/// Upper bound for `resources.timeout`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(24 * 3600);

fn memory_range<'de, D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
    let s = Size::deserialize(d)?;
    if s < MIN_MEMORY {
        return Err(de::Error::invalid_value(
            de::Unexpected::Unsigned(s.bytes()),
            &"at least 4M (4194304 bytes)",
        ));
    }
    Ok(s)
}

fn cpus_range<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    struct Number;
    impl de::Visitor<'_> for Number {
        type Value = f64;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a number of cores in (0, 1024], e.g. 0.5")
        }
        fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
            Ok(v as f64)
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
            Ok(v as f64)
        }
    }
    let v = d.deserialize_any(Number)?;
    if !(v > 0.0 && v <= 1024.0) || v < 0.001 {
        return Err(de::Error::invalid_value(
            float_unexpected(v),
            &"a number of cores in (0, 1024], e.g. 0.5",
        ));
    }
    Ok(v)
}

/// serde reports `0` written as an integer as "integer `0`"; keep that, so the message quotes what was
/// written.
fn float_unexpected(v: f64) -> de::Unexpected<'static> {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        de::Unexpected::Signed(v as i64)
    } else {
        de::Unexpected::Float(v)
    }
}

fn pids_range<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let v = u64::deserialize(d)?;
    if !(1..=4_194_304).contains(&v) {
        return Err(de::Error::invalid_value(
            de::Unexpected::Unsigned(v),
            &"an integer in 1..=4194304",
        ));
    }
    Ok(v)
}

fn timeout_range<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let t = Duration::deserialize(d)?;
    if t.as_std().is_zero() || t > MAX_TIMEOUT {
        return Err(de::Error::invalid_value(
            de::Unexpected::Other(&t.to_string()),
            &"a duration greater than 0 and at most 24h",
        ));
    }
    Ok(t)
}

fn some_cpu_time<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let t = Option::<Duration>::deserialize(d)?;
    if let Some(t) = t {
        if t.as_std() < std::time::Duration::from_millis(10) || t > MAX_TIMEOUT {
            return Err(de::Error::invalid_value(
                de::Unexpected::Other(&t.to_string()),
                &"a CPU-time budget between 10ms and 24h",
            ));
        }
    }
    Ok(t)
}

/// Host paths the workload may see, and its scratch space.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Filesystem {
    /// Host directories or files made visible to the workload. Read-only unless `mode` is `rw`.
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// A private scratch directory at `/tmp` (tmpfs for native, a per-run host temp dir for wasm),
    /// or `null` for none. Default `{"size": "64M"}`.
    #[serde(default = "default_tmp")]
    pub tmp: Option<Tmp>,
    /// Working directory inside the sandbox (absolute). Default `/`.
    #[serde(default = "default_workdir")]
    pub workdir: PathBuf,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem {
            mounts: Vec::new(),
            tmp: default_tmp(),
            workdir: default_workdir(),
        }
    }
}

fn default_tmp() -> Option<Tmp> {
    Some(Tmp {
        size: Size::mib(64),
    })
}
fn default_workdir() -> PathBuf {
    PathBuf::from("/")
}

/// One granted host path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Mount {
    /// Absolute host path (no `..`, not under `/proc`). Symlinks in it are not followed.
    pub host: PathBuf,
    /// Absolute path inside the sandbox (for wasm: the preopen's guest path).
    pub guest: PathBuf,
    /// `ro` (default) or `rw`.
    #[serde(default)]
    pub mode: Access,
}

/// Access mode of a grant. Read-only unless said otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    #[default]
    Ro,
    Rw,
}

/// The scratch `/tmp`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tmp {
    /// Size cap of the scratch space (tmpfs size; charged to the run's memory for native).
    pub size: Size,
}

/// Settings for the wasm backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmSection {
    /// Fuel units the guest may burn (wasmtime fuel); overrides the fuel derived from
    /// `resources.cpu_time`. Exhaustion is reported as `cpu_budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Maximum wasm stack (wasmtime `max_wasm_stack`). Default 512K, between 64K and 64M.
    #[serde(default = "default_max_stack", deserialize_with = "stack_range")]
    pub max_stack: Size,
    /// Maximum elements per table (guards table-growth bombs). Default 20000.
    #[serde(default = "default_table_elements")]
    pub max_table_elements: u64,
    /// Maximum instances per store (components need a few). Default 32.
    #[serde(default = "default_instances")]
    pub max_instances: u32,
    /// Also put the wasm process in namespaces with a seccomp filter (defense in depth).
    #[serde(default)]
    pub os_sandbox: bool,
}

impl Default for WasmSection {
    fn default() -> Self {
        WasmSection {
            fuel: None,
            max_stack: default_max_stack(),
            max_table_elements: default_table_elements(),
            max_instances: default_instances(),
            os_sandbox: false,
        }
    }
}

fn default_max_stack() -> Size {
    Size::kib(512)
}
fn default_table_elements() -> u64 {
    20_000
}
fn default_instances() -> u32 {
    32
}

fn stack_range<'de, D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
    let s = Size::deserialize(d)?;
    if s < Size::kib(64) || s > Size::mib(64) {
        return Err(de::Error::invalid_value(
            de::Unexpected::Unsigned(s.bytes()),
            &"a stack size between 64K and 64M",
        ));
    }
    Ok(s)
}

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

/// The root filesystem of a native sandbox.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Rootfs {
    /// `/usr`, `/lib*`, `/bin`, `/sbin` and a few files of `/etc` from the host, read-only.
    #[default]
    Host,
    /// This directory as the root, read-only.
    Dir(PathBuf),
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

impl Default for Policy {
    /// The deny-everything policy with default limits.
    fn default() -> Self {
        Policy {
            version: POLICY_VERSION,
            description: None,
            backend: BackendChoice::Auto,
            allowed_backends: all_backends(),
            trust: Trust::Untrusted,
            resources: Resources::default(),
            filesystem: Filesystem::default(),
            network: Network::None,
            env: BTreeMap::new(),
            inherit_env: Vec::new(),
            args: Vec::new(),
            wasm: WasmSection::default(),
            native: NativeSection::default(),
            on_unenforceable: OnUnenforceable::Fail,
        }
    }
}

/// Guest paths a mount may not cover: the sandbox builds these itself.
const RESERVED_GUEST_PATHS: &[&str] = &["/proc", "/dev", "/sys", "/tmp", "/.hybox"];

impl Policy {
    /// Reads and validates a policy file.
    pub fn from_file(path: &Path) -> Result<Policy, PolicyError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            file: file.clone(),
            source,
        })?;
        Policy::from_json_str(&text, &file)
    }

    /// Parses and validates policy JSON; `origin` names the source in error messages.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Policy, PolicyError> {
        let mut de = serde_json::Deserializer::from_str(text);
        let policy: Policy =
            serde_path_to_error::deserialize(&mut de).map_err(|e| parse_error(origin, e))?;
        // Trailing garbage after the object is an error too.
        de.end().map_err(|e| PolicyError::Parse {
            file: origin.to_string(),
            path: "(root)".into(),
            line: e.line(),
            column: e.column(),
            message: "expected nothing after the policy object, found more".into(),
        })?;
        policy.validate(origin)?;
        Ok(policy)
    }

    /// The cross-field and path checks that serde cannot express. Run again after CLI overrides.
    pub fn validate(&self, origin: &str) -> Result<(), PolicyError> {
        let invalid = |path: String, message: String| PolicyError::Invalid {
            file: origin.to_string(),
            path,
            message,
        };
        if self.allowed_backends.is_empty() {
            return Err(invalid(
                "allowed_backends".into(),
                "expected at least one backend, found an empty list".into(),
            ));
        }
        for (i, b) in self.allowed_backends.iter().enumerate() {
            if self.allowed_backends[..i].contains(b) {
                return Err(invalid(
                    format!("allowed_backends[{i}]"),
                    format!("\"{b}\" is listed twice"),
                ));
            }
        }
        if let Some(forced) = self.backend.forced() {
            if !self.allowed_backends.contains(&forced) {
                return Err(invalid(
                    "backend".into(),
                    format!(
                        "\"{forced}\" is not in allowed_backends {:?}",
                        self.backend_names()
                    ),
                ));
            }
        }
        for (i, m) in self.filesystem.mounts.iter().enumerate() {
            check_host_path(&m.host)
                .map_err(|msg| invalid(format!("filesystem.mounts[{i}].host"), msg))?;
            check_guest_path(&m.guest)
                .map_err(|msg| invalid(format!("filesystem.mounts[{i}].guest"), msg))?;
            if let Some(r) = RESERVED_GUEST_PATHS.iter().find(|r| m.guest.starts_with(r)) {
                return Err(invalid(
                    format!("filesystem.mounts[{i}].guest"),
                    format!(
                        "expected a path outside {r} (hybox builds {r} itself), found {}",
                        m.guest.display()
                    ),
                ));
            }
            if let Some(j) = self.filesystem.mounts[..i]
                .iter()
                .position(|o| o.guest == m.guest)
            {
                return Err(invalid(
                    format!("filesystem.mounts[{i}].guest"),
                    format!(
                        "{} is already mounted by filesystem.mounts[{j}]",
                        m.guest.display()
                    ),
                ));
            }
        }
        check_guest_path(&self.filesystem.workdir)
            .map_err(|msg| invalid("filesystem.workdir".into(), msg))?;
        if let Some(tmp) = &self.filesystem.tmp {
            if tmp.size < Size::kib(64) {
                return Err(invalid(
                    "filesystem.tmp.size".into(),
                    format!("expected at least 64K, found {}", tmp.size),
                ));
            }
        }
        for k in self.env.keys() {
            check_env_name(k).map_err(|msg| invalid(format!("env.{k}"), msg))?;
        }
        for (k, v) in &self.env {
            if v.contains('\0') {
                return Err(invalid(
                    format!("env.{k}"),
                    "expected a value without NUL bytes".into(),
                ));
            }
        }
        for (i, k) in self.inherit_env.iter().enumerate() {
            check_env_name(k).map_err(|msg| invalid(format!("inherit_env[{i}]"), msg))?;
        }
        for (i, a) in self.args.iter().enumerate() {
            if a.contains('\0') {
                return Err(invalid(
                    format!("args[{i}]"),
                    "expected an argument without NUL bytes".into(),
                ));
            }
        }
        if let Rootfs::Dir(dir) = &self.native.rootfs {
            check_host_path(dir).map_err(|msg| invalid("native.rootfs.dir".into(), msg))?;
        }
        for (field, id) in [
            ("native.host_uid", self.native.host_uid),
            ("native.host_gid", self.native.host_gid),
        ] {
            if id == Some(0) {
                return Err(invalid(
                    field.into(),
                    "expected an unprivileged host id, found 0 (the sandbox must never map to host root)".into(),
                ));
            }
        }
        for (i, name) in self.native.seccomp.allow.iter().enumerate() {
            hybox_shim::seccomp::check_grantable(name)
                .map_err(|msg| invalid(format!("native.seccomp.allow[{i}]"), msg))?;
        }
        if self.native.rlimits.nofile < 16 || self.native.rlimits.nofile > 1 << 20 {
            return Err(invalid(
                "native.rlimits.nofile".into(),
                format!(
                    "expected an integer in 16..=1048576, found {}",
                    self.native.rlimits.nofile
                ),
            ));
        }
        Ok(())
    }

    fn backend_names(&self) -> Vec<String> {
        self.allowed_backends
            .iter()
            .map(|b| b.to_string())
            .collect()
    }

    /// The JSON Schema of the policy format (what `hybox policy schema` prints).
    pub fn json_schema() -> serde_json::Value {
        let schema = schemars::schema_for!(Policy);
        serde_json::to_value(schema).expect("a schema is always serialisable")
    }

    /// The environment the workload gets: `env`, plus each `inherit_env` name present on the host.
    /// Explicit `env` entries win over inherited ones.
    pub fn workload_env(&self) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for name in &self.inherit_env {
            if let Ok(v) = std::env::var(name) {
                out.insert(name.clone(), v);
            }
        }
        out.extend(self.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        out
    }
}

fn parse_error(origin: &str, e: serde_path_to_error::Error<serde_json::Error>) -> PolicyError {
    let path = e.path().to_string();
    let inner = e.inner();
    let (line, column) = (inner.line(), inner.column());
    // serde_json appends " at line L column C"; we print the position up front instead.
    let full = inner.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_string(),
        None => full,
    };
    let path = if path == "." || path == "?" || path.is_empty() {
        "(root)".to_string()
    } else {
        path
    };
    PolicyError::Parse {
        file: origin.to_string(),
        path,
        line,
        column,
        message,
    }
}

fn check_env_name(k: &str) -> Result<(), String> {
    if k.is_empty() || k.contains('=') || k.contains('\0') {
        return Err(format!(
            "expected a variable name without '=' or NUL, found {k:?}"
        ));
    }
    Ok(())
}

/// A host path in a grant: absolute, normalised (no `.`/`..`), and never through `/proc` (magic links
/// such as `/proc/self/fd/N` would hand the sandbox a host fd; CVE-2024-21626).
fn check_host_path(p: &Path) -> Result<(), String> {
    check_absolute_normal(p, "an absolute host path")?;
    if p.starts_with("/proc") {
        return Err(format!(
            "expected a path outside /proc (magic links are refused), found {:?}",
            p.display().to_string()
        ));
    }
    Ok(())
}

fn check_guest_path(p: &Path) -> Result<(), String> {
    check_absolute_normal(p, "an absolute path inside the sandbox")
}

/// Absolute and without `.`/`..` components (a grant must say exactly what it grants).
fn check_absolute_normal(p: &Path, expected: &str) -> Result<(), String> {
    let shown = p.display().to_string();
    if !p.is_absolute() {
        return Err(format!("expected {expected}, found {shown:?}"));
    }
    if p.components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(format!(
            "expected a path without '.' or '..', found {shown:?}"
        ));
    }
    Ok(())
}

/// Command-line overrides, merged onto a policy at one point ([`Policy::with_overrides`]). Every field
/// is optional: `None` keeps the policy's value.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub backend: Option<Backend>,
    pub memory: Option<Size>,
    pub cpus: Option<f64>,
    pub pids: Option<u64>,
    pub timeout: Option<Duration>,
    pub env: Vec<(String, String)>,
    pub mounts: Vec<Mount>,
    pub network: Option<Network>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.backend.is_none()
            && self.memory.is_none()
            && self.cpus.is_none()
            && self.pids.is_none()
            && self.timeout.is_none()
            && self.env.is_empty()
            && self.mounts.is_empty()
            && self.network.is_none()
    }
}

impl Policy {
    /// The effective policy: `self` with the overrides applied, validated again (an override can make a
    /// policy invalid, e.g. a mount onto a reserved path). The backend override is not applied here:
    /// it is an input of [`crate::decide::decide`], which explains it.
    pub fn with_overrides(&self, o: &Overrides) -> Result<Policy, PolicyError> {
        let mut p = self.clone();
        let range = |field: &str, message: String| PolicyError::Invalid {
            file: "command line".into(),
            path: field.to_string(),
            message,
        };
        if let Some(m) = o.memory {
            if m < MIN_MEMORY {
                return Err(range(
                    "--memory",
                    format!("expected at least 4M, found {m}"),
                ));
            }
            p.resources.memory = m;
        }
        if let Some(c) = o.cpus {
            if !(0.001..=1024.0).contains(&c) {
                return Err(range(
                    "--cpus",
                    format!("expected a number of cores in (0, 1024], found {c}"),
                ));
            }
            p.resources.cpus = c;
        }
        if let Some(n) = o.pids {
            if !(1..=4_194_304).contains(&n) {
                return Err(range(
                    "--pids",
                    format!("expected an integer in 1..=4194304, found {n}"),
                ));
            }
            p.resources.pids = n;
        }
        if let Some(t) = o.timeout {
            if t.as_std().is_zero() || t > MAX_TIMEOUT {
                return Err(range(
                    "--timeout",
                    format!("expected a duration greater than 0 and at most 24h, found {t}"),
                ));
            }
            p.resources.timeout = t;
        }
        for (k, v) in &o.env {
            p.env.insert(k.clone(), v.clone());
        }
        p.filesystem.mounts.extend(o.mounts.iter().cloned());
        if let Some(n) = o.network {
            p.network = n;
        }
        p.validate("command line")?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Policy, PolicyError> {
        Policy::from_json_str(json, "t.json")
    }

    #[test]
    fn minimal_policy_gets_safe_defaults() {
        let p = parse(r#"{"version": 1}"#).unwrap();
        assert_eq!(p, Policy::default());
        assert_eq!(p.network, Network::None);
        assert!(p.filesystem.mounts.is_empty());
        assert!(p.env.is_empty());
        assert_eq!(p.resources.memory, Size::mib(256));
    }

    #[test]
    fn serialised_policy_parses_back_identically() {
        let p = parse(
            r#"{"version":1,"resources":{"memory":"64M","cpus":0.5,"timeout":"1500ms","cpu_time":"2s"},
               "filesystem":{"mounts":[{"host":"/srv/data","guest":"/data"}],"tmp":null},
               "native":{"rootfs":{"dir":"/srv/img"},"seccomp":{"allow":["sched_setaffinity"]}}}"#,
        )
        .unwrap();
        let text = serde_json::to_string(&p).unwrap();
        assert_eq!(parse(&text).unwrap(), p);
    }
}
