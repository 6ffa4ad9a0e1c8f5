//! The OCI front-end's errors. Every one ends `hybox-runc` with exit status 1, as runc's do (the
//! caller, containerd's shim, reads the message from the `--log` file, not the status); usage errors
//! exit 2 (docs/oci.md lists them). The wording of the lifecycle errors is runc's where containerd
//! matches on it: "does not exist" (no such container) and "container not running" (the process
//! already finished).

use std::path::PathBuf;

/// Why a `hybox-runc` command failed.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The bundle's `config.json` could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    ConfigRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// `config.json` is not a valid runtime spec: `field` is the JSON path of the offending field.
    #[error("{}: {field}: {message}", path.display())]
    ConfigParse {
        path: PathBuf,
        field: String,
        message: String,
    },
    /// The bundle asks for something hybox does not do, or the runtime policy does not allow:
    /// refused, never silently trimmed.
    #[error("config.json: {field}: {message}")]
    Refused { field: String, message: String },
    /// The runtime policy file could not be read or is invalid.
    #[error("runtime policy {file}: {message}")]
    RuntimePolicy { file: String, message: String },
    /// The workload named by `process.args[0]` is not something hybox runs.
    #[error("config.json: process.args[0]")]
    Workload(#[source] crate::WorkloadError),
    /// No backend can run the workload under the policy built from the bundle.
    #[error("cannot run the container")]
    Sandbox(#[source] crate::sandbox::Error),
    /// No container of that id under `--root`.
    #[error("container \"{id}\" does not exist")]
    NotFound { id: String },
    /// A container of that id already exists under `--root`.
    #[error("container \"{id}\" already exists")]
    Exists { id: String },
    /// The id cannot name a state directory.
    #[error("invalid container id {id:?}: {why}")]
    BadId { id: String, why: &'static str },
    /// The container's process has exited (or was never started and is gone).
    #[error("container \"{id}\" is {status}: container not running")]
    NotRunning { id: String, status: String },
    /// `start` of a container that is not in the created state.
    #[error("cannot start container \"{id}\": it is {status}, not created")]
    NotCreated { id: String, status: String },
    /// `delete` without `--force` of a container that still runs.
    #[error("cannot delete container \"{id}\" that is not stopped: {status}")]
    NotStopped { id: String, status: String },
    /// A signal name or number hybox-runc does not know.
    #[error("invalid signal {0:?}")]
    BadSignal(String),
    /// A command-line option or command hybox-runc does not implement.
    #[error("{what}: {why}")]
    Unsupported { what: String, why: String },
    /// The monitor process could not be started or did not report readiness.
    /// The container's cgroup (`linux.cgroupsPath`) could not be built, updated or removed.
    #[error("the container's cgroup {path}")]
    Cgroup {
        path: String,
        #[source]
        source: crate::envelope::EnvelopeError,
    },
    #[error("monitor: {why}")]
    Monitor { why: String },
    /// `exec`'s process.json asks for what the container's processes may not have.
    #[error("{file}: {field}: {message}")]
    ProcessRefused {
        file: String,
        field: String,
        message: String,
    },
    /// `exec`'s process could not be started in the container; `step` says where.
    #[error("exec in container \"{id}\": {step}")]
    Exec { id: String, step: String },
    /// A file-system or process step failed.
    #[error("{step}: {source}")]
    Io {
        step: String,
        #[source]
        source: std::io::Error,
    },
}

impl OciError {
    /// An I/O failure of the named step.
    pub fn io(step: impl Into<String>) -> impl FnOnce(std::io::Error) -> OciError {
        let step = step.into();
        move |source| OciError::Io { step, source }
    }

    /// A refusal of one `config.json` field.
    pub fn refused(field: impl Into<String>, message: impl Into<String>) -> OciError {
        OciError::Refused {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// `hybox-runc`'s exit status for any failed command (runc's).
pub const FAILED: i32 = 1;
/// `hybox-runc`'s exit status for a command line it cannot parse.
pub const USAGE: i32 = 2;
