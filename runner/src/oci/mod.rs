//! hybox as an OCI runtime: `hybox-runc`, runc's command line over hybox's sandbox, so that
//! containerd's runc shim (and what sits on it: `ctr`, Docker, Kubernetes' CRI) runs every container
//! under hybox's policy and envelope, as wasm or native per container (docs/oci.md).
//!
//! A front-end of the library, like the CLI: it maps a bundle's `config.json` onto a [`Policy`]
//! and a [`Workload`] ([`bundle`]), capped by the runtime policy ([`runtime_policy`]), and runs it
//! through [`crate::Sandbox`] in a monitor process that outlives `create` ([`lifecycle`]); the
//! state of each container lives in files under runc's `--root` ([`state`]).
//!
//! [`Policy`]: crate::Policy
//! [`Workload`]: crate::Workload

mod blkio;
pub mod bundle;
mod console;
pub mod error;
pub mod exec;
pub mod lifecycle;
pub mod live;
pub mod log;
mod monitor;
pub mod namespaces;
mod pod;
pub mod procfs;
pub mod runtime_policy;
pub mod seccomp;
pub mod state;
pub mod time;

#[cfg(feature = "cli")]
pub mod cli;

pub use error::OciError;
