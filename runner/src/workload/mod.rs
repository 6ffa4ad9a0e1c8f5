//! Workload detection: what an artifact *is*, from its bytes (never its extension).
//!
//! ```no_run
//! use hybox::workload::Workload;
//! let w = Workload::detect("examples/out/wasm/hello.wasm".as_ref()).unwrap();
//! println!("{}", w.describe());
//! ```

//!
//! Where things are: [`sniff`] classifies leading bytes (wasm, wat, scripts, hybox artifacts, and
//! what it refuses), [`elf`] native executables, [`bundle`] function bundles and their manifest.

mod bundle;
mod elf;
mod sniff;

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::policy::Backend;

pub use bundle::{Bundle, Manifest, ManifestError, Need, VariantError, MANIFEST};
pub use elf::{host_machine, ElfError, ElfInfo};
pub use sniff::{sniff, SniffError};

/// Why an artifact was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    #[error("{path}: not found")]
    NotFound { path: String },
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a format hybox runs; `found` says what they look like. (Each of these
    /// errors carries its typed problem as part of its message, so it is not also a `source()`.)
    #[error("{path}: cannot run this artifact: {found}")]
    Unsupported { path: String, found: NotRunnable },
    /// A function bundle's manifest is missing or wrong.
    #[error("{path}: invalid bundle manifest: {problem}")]
    Manifest {
        path: String,
        problem: ManifestError,
    },
    /// A file named by a bundle manifest is not what the manifest says it is.
    #[error("{bundle}: variant `{variant}` ({path}): {problem}")]
    Variant {
        bundle: String,
        variant: &'static str,
        path: String,
        problem: Box<VariantError>,
    },
}

/// What a file (or directory) hybox cannot run looks like.
#[derive(Debug, thiserror::Error)]
pub enum NotRunnable {
    /// Not a format hybox runs, from its leading bytes.
    #[error("{0}")]
    Format(SniffError),
    /// An ELF, but not one this host runs.
    #[error("{0}")]
    Elf(ElfError),
    /// A directory, but not a function bundle.
    #[error("a directory without a {MANIFEST} (not a function bundle)")]
    NotABundle,
}

impl WorkloadError {
    /// The CLI's exit status for this error (see [`crate::exit`]).
    pub fn exit_status(&self) -> i32 {
        match self {
            WorkloadError::NotFound { .. } => crate::exit::NOT_FOUND,
            _ => crate::exit::CANNOT_EXECUTE,
        }
    }
}

/// The leading bytes of hybox's own precompiled artifact (see `backend::wasm::artifact`).
pub const HYBOX_ARTIFACT_MAGIC: &[u8; 8] = b"\0hyboxc1";

/// What one file is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Format {
    /// A WebAssembly core module (binary), run with WASI preview 1.
    WasmModule,
    /// A WebAssembly component, run as `wasi:cli/command` (WASI preview 2).
    WasmComponent,
    /// WebAssembly text (`.wat`) of a module or a component.
    WasmText { component: bool },
    /// A precompiled artifact written by this hybox (authenticated before it is loaded).
    HyboxArtifact,
    /// A native ELF executable for this host.
    Elf(ElfInfo),
    /// A `#!` script; its interpreter must be visible inside the sandbox.
    Script {
        interpreter: PathBuf,
        arg: Option<String>,
    },
}

impl Format {
    /// The backend that can run this format.
    pub fn backend(&self) -> Backend {
        match self {
            Format::WasmModule
            | Format::WasmComponent
            | Format::WasmText { .. }
            | Format::HyboxArtifact => Backend::Wasm,
            Format::Elf(_) | Format::Script { .. } => Backend::Native,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Format::WasmModule => write!(f, "wasm module"),
            Format::WasmComponent => write!(f, "wasm component"),
            Format::WasmText { component: false } => write!(f, "wasm text (module)"),
            Format::WasmText { component: true } => write!(f, "wasm text (component)"),
            Format::HyboxArtifact => write!(f, "hybox precompiled artifact"),
            Format::Elf(e) => write!(f, "{e}"),
            Format::Script { interpreter, arg } => {
                write!(f, "script for {}", interpreter.display())?;
                if let Some(a) = arg {
                    write!(f, " {a}")?;
                }
                Ok(())
            }
        }
    }
}

/// One detected file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Artifact {
    pub path: PathBuf,
    pub format: Format,
}

/// What hybox runs: one file, or a bundle with a wasm and/or a native variant of the same program.
#[derive(Debug, Clone, PartialEq, Eq)]
#[allow(clippy::large_enum_variant)] // one per run; boxing would only add noise at every match
pub enum Workload {
    Single(Artifact),
    Bundle(Bundle),
}

/// How many leading bytes detection reads.
const SNIFF_LEN: usize = 4096;

impl Workload {
    /// Detects a file or a bundle directory.
    pub fn detect(path: &Path) -> Result<Workload, WorkloadError> {
        let shown = path.display().to_string();
        let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkloadError::NotFound {
                path: shown.clone(),
            },
            _ => WorkloadError::Read {
                path: shown.clone(),
                source: e,
            },
        })?;
        if meta.is_dir() {
            return Bundle::load(path).map(Workload::Bundle);
        }
        Ok(Workload::Single(Artifact::detect(path)?))
    }

    /// The variant for a backend, if the workload has one.
    pub fn variant(&self, backend: Backend) -> Option<&Artifact> {
        match self {
            Workload::Single(a) => (a.format.backend() == backend).then_some(a),
            Workload::Bundle(b) => match backend {
                Backend::Wasm => b.wasm.as_ref(),
                Backend::Native => b.native.as_ref(),
            },
        }
    }

    /// One line: what was found.
    pub fn describe(&self) -> String {
        match self {
            Workload::Single(a) => a.format.to_string(),
            Workload::Bundle(b) => {
                let mut v = Vec::new();
                if let Some(w) = &b.wasm {
                    v.push(format!("wasm: {}", w.format));
                }
                if let Some(n) = &b.native {
                    v.push(format!("native: {}", n.format));
                }
                format!("bundle `{}` ({})", b.manifest.name, v.join("; "))
            }
        }
    }

    /// The path the user gave (file or bundle directory).
    pub fn path(&self) -> &Path {
        match self {
            Workload::Single(a) => &a.path,
            Workload::Bundle(b) => &b.dir,
        }
    }

    /// The needs declared by a bundle (none for a single file).
    pub fn needs(&self) -> &[Need] {
        match self {
            Workload::Single(_) => &[],
            Workload::Bundle(b) => &b.manifest.needs,
        }
    }
}

impl Artifact {
    /// Sniffs one file.
    pub fn detect(path: &Path) -> Result<Artifact, WorkloadError> {
        let shown = path.display().to_string();
        let mut f = std::fs::File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => WorkloadError::NotFound {
                path: shown.clone(),
            },
            _ => WorkloadError::Read {
                path: shown.clone(),
                source: e,
            },
        })?;
        let mut head = Vec::with_capacity(SNIFF_LEN);
        (&mut f)
            .take(SNIFF_LEN as u64)
            .read_to_end(&mut head)
            .map_err(|e| WorkloadError::Read {
                path: shown.clone(),
                source: e,
            })?;
        let unsupported = |found: NotRunnable| WorkloadError::Unsupported {
            path: shown.clone(),
            found,
        };
        let format = if head.starts_with(b"\x7fELF") {
            Format::Elf(elf::classify(&head, &f).map_err(|e| unsupported(NotRunnable::Elf(e)))?)
        } else {
            sniff(&head).map_err(|e| unsupported(NotRunnable::Format(e)))?
        };
        Ok(Artifact {
            path: path.to_path_buf(),
            format,
        })
    }
}
