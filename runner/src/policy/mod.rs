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
//!
//! Where things are: the document's top level is here; its sections are [`resources`] (the envelope and
//! run limits), [`filesystem`] (grants and scratch), [`network`], [`wasm`] and [`native`] (backend
//! settings) and [`http`] (HTTP functions). [`parse`] reads the JSON strictly, [`validate`] runs the cross-field and path checks
//! serde cannot express, [`overrides`] merges the command line's flags, and [`error`] says why a policy
//! was refused.

mod error;
mod filesystem;
mod http;
mod native;
mod network;
mod overrides;
mod parse;
mod resources;
mod validate;
mod wasm;

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

pub use error::{FieldError, PolicyError};
pub use filesystem::{Access, Filesystem, Mount, Tmp};
pub use http::{check_authority, HttpSection, Route};
pub use native::{
    ImageOverlay, LandlockMode, NativeSection, ProfileAction, ProfileArg, ProfileOp, ProfileRule,
    Rlimits, RootEntry, Rootfs, Seccomp, SeccompProfile, TmpfsMount,
};
pub use network::Network;
pub use overrides::Overrides;
pub use resources::{IoLimit, Resources, MAX_TIMEOUT, MIN_MEMORY};
pub use wasm::WasmSection;

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
    /// Settings for HTTP functions (wasi:http components): outbound hosts and a route.
    #[serde(default, skip_serializing_if = "is_default")]
    pub http: HttpSection,
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

fn is_default<T: Default + PartialEq>(t: &T) -> bool {
    *t == T::default()
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

/// What to do when the host cannot enforce part of the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnUnenforceable {
    #[default]
    Fail,
    Degrade,
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
            http: HttpSection::default(),
            on_unenforceable: OnUnenforceable::Fail,
        }
    }
}

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
        let policy = parse::parse(text, origin)?;
        policy.validate(origin)?;
        Ok(policy)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::units::Size;

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
