//! Function bundles: a directory whose `bundle.json` names a wasm and/or a native variant of one
//! program, its default policy and what it needs.

use std::fmt;
use std::path::{Component, Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Artifact, Format, NotRunnable, WorkloadError};
use crate::policy::Backend;

/// What is wrong with a `bundle.json` (the file is named by [`WorkloadError::Manifest`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    /// Malformed JSON, an unknown field or a wrong type; `message` is serde's wording.
    #[error("{line}:{column}: {path}: {message}")]
    Parse {
        line: usize,
        column: usize,
        path: String,
        message: String,
    },
    #[error("version: expected 1, found {found}")]
    Version { found: u32 },
    #[error("name: expected letters, digits, '-' or '_', found {found:?}")]
    Name { found: String },
    #[error("expected at least one of `wasm` and `native`, found neither")]
    NoVariant,
    /// A variant or the policy named by an absolute path or one leaving the bundle (`..`).
    #[error(
        "{field}: expected a relative path inside the bundle, found {:?}",
        .found.display().to_string()
    )]
    NotRelative { field: &'static str, found: PathBuf },
}

/// Why a variant a manifest names cannot be used (the bundle and the file are named by
/// [`WorkloadError::Variant`]).
#[derive(Debug, thiserror::Error)]
pub enum VariantError {
    /// The file itself is missing or not runnable.
    #[error("{0}")]
    Detect(WorkloadError),
    /// The file is for the other backend (a wasm module named as `native`, say).
    #[error("expected a {want} artifact, found {found}")]
    WrongBackend { want: Backend, found: Format },
}

/// A directory holding `bundle.json` and the variants it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub wasm: Option<Artifact>,
    pub native: Option<Artifact>,
    /// The bundle's default policy, resolved to a path, if it names one.
    pub policy: Option<PathBuf>,
}

/// The name of a bundle's manifest file.
pub const MANIFEST: &str = "bundle.json";

/// `bundle.json`: names the variants of one program and its default policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Must be 1.
    pub version: u32,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Path of the wasm variant, relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wasm: Option<PathBuf>,
    /// Path of the native variant, relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub native: Option<PathBuf>,
    /// The bundle's default policy, relative to the bundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PathBuf>,
    /// What the program needs beyond computing and its granted files. Some of these WASI cannot
    /// serve, which sends the bundle to the native backend.
    #[serde(default)]
    pub needs: Vec<Need>,
}

/// A capability a program declares it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Need {
    /// fork/exec of other programs.
    Subprocesses,
    /// Raw or packet sockets.
    RawSockets,
    /// OS threads.
    Threads,
    /// POSIX signals and handlers.
    Signals,
    /// TCP/UDP sockets on the granted network (WASI p2 components can have them; p1 modules cannot).
    Sockets,
}

impl Need {
    /// Whether a WASI guest can have this at all (for the given flavour).
    pub fn wasi_can_serve(self, component: bool) -> bool {
        match self {
            Need::Subprocesses | Need::RawSockets | Need::Threads | Need::Signals => false,
            Need::Sockets => component,
        }
    }
}

impl fmt::Display for Need {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = serde_json::to_value(self).unwrap_or_default();
        f.write_str(v.as_str().unwrap_or("?"))
    }
}

impl Bundle {
    /// Loads `DIR/bundle.json` and detects each variant it names.
    pub fn load(dir: &Path) -> Result<Bundle, WorkloadError> {
        let manifest_path = dir.join(MANIFEST);
        let shown = manifest_path.display().to_string();
        let text = match std::fs::read_to_string(&manifest_path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(WorkloadError::Unsupported {
                    path: dir.display().to_string(),
                    found: NotRunnable::NotABundle,
                })
            }
            Err(e) => {
                return Err(WorkloadError::Read {
                    path: shown,
                    source: e,
                })
            }
        };
        let bad = |problem: ManifestError| WorkloadError::Manifest {
            path: shown.clone(),
            problem,
        };
        let mut de = serde_json::Deserializer::from_str(&text);
        let manifest: Manifest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let inner = e.inner();
            // serde_json appends " at line L column C"; the position is printed up front instead.
            let msg = inner.to_string();
            let message = msg
                .rfind(" at line ")
                .map(|i| msg[..i].to_string())
                .unwrap_or(msg);
            bad(ManifestError::Parse {
                line: inner.line(),
                column: inner.column(),
                path: e.path().to_string(),
                message,
            })
        })?;
        if manifest.version != 1 {
            return Err(bad(ManifestError::Version {
                found: manifest.version,
            }));
        }
        if manifest.name.is_empty()
            || !manifest
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(bad(ManifestError::Name {
                found: manifest.name.clone(),
            }));
        }
        if manifest.wasm.is_none() && manifest.native.is_none() {
            return Err(bad(ManifestError::NoVariant));
        }
        let resolve = |field: &'static str, rel: &Path| -> Result<PathBuf, WorkloadError> {
            if rel.is_absolute() || rel.components().any(|c| !matches!(c, Component::Normal(_))) {
                return Err(bad(ManifestError::NotRelative {
                    field,
                    found: rel.to_path_buf(),
                }));
            }
            Ok(dir.join(rel))
        };
        let variant = |name: &'static str,
                       rel: &Option<PathBuf>,
                       want: Backend|
         -> Result<Option<Artifact>, WorkloadError> {
            let Some(rel) = rel else { return Ok(None) };
            let path = resolve(name, rel)?;
            let a = Artifact::detect(&path).map_err(|e| WorkloadError::Variant {
                bundle: dir.display().to_string(),
                variant: name,
                path: path.display().to_string(),
                problem: Box::new(VariantError::Detect(e)),
            })?;
            if a.format.backend() != want {
                return Err(WorkloadError::Variant {
                    bundle: dir.display().to_string(),
                    variant: name,
                    path: path.display().to_string(),
                    problem: Box::new(VariantError::WrongBackend {
                        want,
                        found: a.format,
                    }),
                });
            }
            Ok(Some(a))
        };
        let wasm = variant("wasm", &manifest.wasm, Backend::Wasm)?;
        let native = variant("native", &manifest.native, Backend::Native)?;
        let policy = manifest
            .policy
            .as_ref()
            .map(|p| resolve("policy", p))
            .transpose()?;
        Ok(Bundle {
            dir: dir.to_path_buf(),
            manifest,
            wasm,
            native,
            policy,
        })
    }
}
