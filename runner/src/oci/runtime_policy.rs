//! The runtime policy: what any bundle handed to `hybox-runc` may ask for at most (docs/oci.md).
//!
//! A hybox policy file (docs/policy.md), read from the file named by [`ENV_VAR`], else
//! [`DEFAULT_PATH`] if it exists, else the shipped `policies/oci-runtime.json`. It is the starting
//! point of every container's policy and caps the bundle's requests:
//! - `resources` are the maximum of `linux.resources` (and what a bundle that sets none gets);
//! - `allowed_backends` are the backends a container may run on;
//! - `filesystem.mounts` are the host paths a bundle may bind-mount (a bind source must lie under
//!   one of them; a writable bind needs that grant's `mode` to be `rw`); they are not mounted
//!   themselves;
//! - everything else (seccomp, Landlock, rlimits, the timeout) applies to every container as is.
//!
//! What the policy format has no field for is fixed here: capabilities beyond
//! [`DEFAULT_CAPABILITIES`] and host namespaces are always refused; which namespaces a bundle
//! may join by path is fixed in [`crate::oci::namespaces`] (a pod's network namespace only when
//! the policy's `network` is not `none`).

use std::path::Path;

use crate::oci::OciError;
use crate::policy::{Access, Policy};

/// Where the runtime policy is read from when [`ENV_VAR`] is not set.
pub const DEFAULT_PATH: &str = "/etc/hybox/runtime.json";
/// The environment variable naming another runtime policy file (containerd passes its own
/// environment to the runtime; see docs/oci.md for setting it).
pub const ENV_VAR: &str = "HYBOX_RUNTIME_POLICY";
/// The shipped runtime policy, used when neither [`ENV_VAR`] nor [`DEFAULT_PATH`] names a file.
pub const BUILTIN: &str = include_str!("../../../policies/oci-runtime.json");

/// The capabilities a bundle may list in `process.capabilities`: the default set of containerd and
/// Docker. hybox grants none of them (its workloads run with no capability at all); a bundle
/// listing one of these is accepted and gets none, a bundle listing any other (`CAP_SYS_ADMIN`...)
/// is refused, since it expects a privilege hybox will not give.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Refuses a process's capabilities beyond [`DEFAULT_CAPABILITIES`] (config.json's
/// `process.capabilities`, and `exec`'s process.json's): `(field, message)` of the first.
pub fn check_capabilities(
    caps: &oci_spec::runtime::LinuxCapabilities,
) -> Result<(), (String, String)> {
    let sets = [
        ("bounding", caps.bounding()),
        ("effective", caps.effective()),
        ("inheritable", caps.inheritable()),
        ("permitted", caps.permitted()),
        ("ambient", caps.ambient()),
    ];
    for (set, names) in sets {
        let mut names: Vec<String> = names
            .iter()
            .flatten()
            .map(|c| {
                serde_json::to_value(c)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_else(|| format!("{c:?}"))
            })
            .collect();
        names.sort();
        if let Some(c) = names
            .iter()
            .find(|c| !DEFAULT_CAPABILITIES.contains(&c.as_str()))
        {
            return Err((
                format!("process.capabilities.{set}"),
                format!(
                    "{c} is a privileged capability beyond the runtime policy's default set ({})",
                    DEFAULT_CAPABILITIES.join(", ")
                ),
            ));
        }
    }
    Ok(())
}

/// A validated runtime policy.
#[derive(Debug, Clone)]
pub struct RuntimePolicy {
    /// Where it came from (a path, or `built-in policies/oci-runtime.json`).
    pub origin: String,
    pub policy: Policy,
}

impl RuntimePolicy {
    /// The runtime policy in force: [`ENV_VAR`]'s file, else [`DEFAULT_PATH`] if it exists, else
    /// the built-in one.
    pub fn load() -> Result<RuntimePolicy, OciError> {
        if let Some(p) = std::env::var_os(ENV_VAR).filter(|p| !p.is_empty()) {
            return RuntimePolicy::from_file(Path::new(&p));
        }
        if Path::new(DEFAULT_PATH).exists() {
            return RuntimePolicy::from_file(Path::new(DEFAULT_PATH));
        }
        RuntimePolicy::from_json_str(BUILTIN, "built-in policies/oci-runtime.json")
    }

    pub fn from_file(path: &Path) -> Result<RuntimePolicy, OciError> {
        let policy = Policy::from_file(path).map_err(|e| OciError::RuntimePolicy {
            file: path.display().to_string(),
            message: e.to_string(),
        })?;
        Ok(RuntimePolicy {
            origin: path.display().to_string(),
            policy,
        })
    }

    pub fn from_json_str(text: &str, origin: &str) -> Result<RuntimePolicy, OciError> {
        let policy = Policy::from_json_str(text, origin).map_err(|e| OciError::RuntimePolicy {
            file: origin.to_string(),
            message: e.to_string(),
        })?;
        Ok(RuntimePolicy {
            origin: origin.to_string(),
            policy,
        })
    }

    /// Whether a bind of host path `source` (writable if `rw`) is within the policy's grants.
    pub fn allows_bind(&self, source: &Path, rw: bool) -> bool {
        self.policy
            .filesystem
            .mounts
            .iter()
            .any(|m| source.starts_with(&m.host) && (!rw || m.mode == Access::Rw))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_policy_parses_and_grants_no_host_path() {
        let p = RuntimePolicy::from_json_str(BUILTIN, "builtin").unwrap();
        assert!(p.policy.filesystem.mounts.is_empty());
        assert!(!p.allows_bind(Path::new("/etc"), false));
        assert_eq!(p.policy.resources.timeout.as_std().as_secs(), 24 * 3600);
    }

    #[test]
    fn binds_are_capped_by_the_grants() {
        let p = RuntimePolicy::from_json_str(
            r#"{"version":1,"filesystem":{"mounts":[
                {"host":"/srv/ro","guest":"/ro"},{"host":"/srv/rw","guest":"/rw","mode":"rw"}]}}"#,
            "r.json",
        )
        .unwrap();
        assert!(p.allows_bind(Path::new("/srv/ro/x"), false));
        assert!(!p.allows_bind(Path::new("/srv/ro/x"), true));
        assert!(p.allows_bind(Path::new("/srv/rw"), true));
        assert!(!p.allows_bind(Path::new("/srv/rwx"), false));
    }

    #[test]
    fn a_bad_file_is_named() {
        let e = RuntimePolicy::from_json_str(r#"{"version":1,"privileged":true}"#, "r.json")
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.json") && e.contains("privileged"), "{e}");
    }
}
