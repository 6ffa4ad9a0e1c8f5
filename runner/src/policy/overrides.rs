//! The command line's flags (`--memory`, `--mount`, ...), merged onto a policy at one point and
//! validated again.

use super::{Backend, FieldError, Mount, Network, Policy, PolicyError, MAX_TIMEOUT, MIN_MEMORY};
use crate::units::{Duration, Size};

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
        let range = |field: &str, expected: &'static str, found: String| PolicyError::Invalid {
            file: "command line".into(),
            path: field.to_string(),
            problem: Box::new(FieldError::OutOfRange { expected, found }),
        };
        if let Some(m) = o.memory {
            if m < MIN_MEMORY {
                return Err(range("--memory", "at least 4M", m.to_string()));
            }
            p.resources.memory = m;
        }
        if let Some(c) = o.cpus {
            if !(0.001..=1024.0).contains(&c) {
                return Err(range(
                    "--cpus",
                    "a number of cores in (0, 1024]",
                    c.to_string(),
                ));
            }
            p.resources.cpus = c;
        }
        if let Some(n) = o.pids {
            if !(1..=4_194_304).contains(&n) {
                return Err(range("--pids", "an integer in 1..=4194304", n.to_string()));
            }
            p.resources.pids = n;
        }
        if let Some(t) = o.timeout {
            if t.as_std().is_zero() || t > MAX_TIMEOUT {
                return Err(range(
                    "--timeout",
                    "a duration greater than 0 and at most 24h",
                    t.to_string(),
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
