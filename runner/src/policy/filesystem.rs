//! `filesystem`: the host paths granted to the workload, its scratch `/tmp` and its working directory.
//! The path rules (absolute, normalised, never through `/proc`, never onto a path hybox builds) are
//! checked in [`super::validate`].

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::units::Size;

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
    /// Runs of an image only (`hybox run IMAGE`, docs/images.md): the ephemeral upper layer over
    /// the image's read-only layers, a tmpfs of this size charged to the run's memory, discarded
    /// after the run; `null` for a read-only root. Default `{"size": "64M"}`.
    #[serde(default = "default_tmp")]
    pub writable_layer: Option<Tmp>,
}

impl Default for Filesystem {
    fn default() -> Self {
        Filesystem {
            mounts: Vec::new(),
            tmp: default_tmp(),
            workdir: default_workdir(),
            writable_layer: default_tmp(),
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
