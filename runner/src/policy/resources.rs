//! `resources`: the envelope (cgroup) and run limits, each range-checked as it is parsed.

use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::units::{Duration, Size};

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
    /// Disk I/O throttles, one per block device (cgroup v2 `io.max`, v1 `blkio.throttle.*`).
    /// Default none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub io: Vec<IoLimit>,
}

/// One block device's I/O throttle (`resources.io[N]`): bytes per second and operations per second,
/// each direction on its own; an absent field is unlimited. At least one must be set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct IoLimit {
    /// The block device: `MAJOR:MINOR` (as `lsblk` shows it) or the path of its node (`/dev/vda`).
    pub device: String,
    /// Read bytes per second, e.g. `"10M"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_bps: Option<Size>,
    /// Write bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_bps: Option<Size>,
    /// Read operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_iops: Option<u64>,
    /// Write operations per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_iops: Option<u64>,
}

impl IoLimit {
    /// The device's `(major, minor)` on this host: a `MAJOR:MINOR` must name a block device the
    /// kernel knows (`/sys/dev/block/MAJOR:MINOR`), a path must be a block device node (followed if
    /// it is a symlink, as `/dev/disk/by-id/...` are).
    pub fn resolve(&self) -> Result<(u32, u32), String> {
        let d = self.device.as_str();
        if let Some((maj, min)) = d.split_once(':') {
            let (Ok(maj), Ok(min)) = (maj.parse::<u32>(), min.parse::<u32>()) else {
                return Err(format!(
                    "expected MAJOR:MINOR in decimal or the path of a block device, found {d:?}"
                ));
            };
            let sys = format!("/sys/dev/block/{maj}:{min}");
            if !std::path::Path::new(&sys).exists() {
                return Err(format!(
                    "no block device {maj}:{min} on this host ({sys} does not exist)"
                ));
            }
            return Ok((maj, min));
        }
        if !d.starts_with('/') {
            return Err(format!(
                "expected MAJOR:MINOR or the absolute path of a block device, found {d:?}"
            ));
        }
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let m = std::fs::metadata(d).map_err(|e| format!("{d}: {e}"))?;
        if !m.file_type().is_block_device() {
            return Err(format!("{d} is not a block device"));
        }
        let rdev = m.rdev();
        Ok((
            nix::sys::stat::major(rdev) as u32,
            nix::sys::stat::minor(rdev) as u32,
        ))
    }

    /// Whether any of the four limits is set.
    pub fn any(&self) -> bool {
        self.read_bps.is_some()
            || self.write_bps.is_some()
            || self.read_iops.is_some()
            || self.write_iops.is_some()
    }
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
            io: Vec::new(),
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
