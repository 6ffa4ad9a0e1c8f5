//! Why a policy was refused: [`PolicyError`] names the file and the JSON path of the offending field;
//! [`FieldError`] says what is wrong with a field that parsed but breaks a rule serde cannot express.

use std::path::PathBuf;

use super::Backend;

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
    /// `message` is serde's own wording (what was expected, what was found).
    #[error("{file}:{line}:{column}: {path}: {message}")]
    Parse {
        file: String,
        path: String,
        line: usize,
        column: usize,
        message: String,
    },
    /// The fields are each valid but do not make sense together (or a path is unsafe). The problem is
    /// part of this error's message (it is the message), so it is not also its `source()`; boxed to
    /// keep the error small on the happy path's stack.
    #[error("{file}: {path}: {problem}")]
    Invalid {
        /// The policy file, or `command line` for an override.
        file: String,
        /// The JSON path (`filesystem.mounts[0].host`) or the flag (`--memory`).
        path: String,
        problem: Box<FieldError>,
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

/// What is wrong with one field (or flag) whose value parsed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FieldError {
    /// `allowed_backends` is empty.
    #[error("expected at least one backend, found an empty list")]
    NoBackend,
    /// A backend appears twice in `allowed_backends`.
    #[error("\"{0}\" is listed twice")]
    DuplicateBackend(Backend),
    /// `backend` forces a backend that `allowed_backends` does not allow.
    #[error("\"{forced}\" is not in allowed_backends {:?}", names(.allowed))]
    BackendNotAllowed {
        forced: Backend,
        allowed: Vec<Backend>,
    },
    /// A relative path where an absolute one is needed; `expected` says which kind.
    #[error("expected {expected}, found {:?}", .found.display().to_string())]
    NotAbsolute {
        expected: &'static str,
        found: PathBuf,
    },
    /// A path with `.` or `..` in it (a grant must say exactly what it grants).
    #[error("expected a path without '.' or '..', found {:?}", .found.display().to_string())]
    NotNormal { found: PathBuf },
    /// A host path under `/proc`: magic links such as `/proc/self/fd/N` would hand the sandbox a host
    /// fd (CVE-2024-21626).
    #[error(
        "expected a path outside /proc (magic links are refused), found {:?}",
        .found.display().to_string()
    )]
    UnderProc { found: PathBuf },
    /// A mount onto a guest path the sandbox builds itself.
    #[error(
        "expected a path outside {reserved} (hybox builds {reserved} itself), found {}",
        .found.display()
    )]
    Reserved {
        reserved: &'static str,
        found: PathBuf,
    },
    /// Two mounts onto one guest path.
    #[error("{} is already mounted by filesystem.mounts[{other}]", .guest.display())]
    AlreadyMounted { guest: PathBuf, other: usize },
    /// A tmpfs onto a guest path that another tmpfs or mount takes.
    #[error("{} is already mounted by {other}", .guest.display())]
    MountedTwice { guest: PathBuf, other: String },
    /// A number out of its range; `found` is the value as written back.
    #[error("expected {expected}, found {found}")]
    OutOfRange {
        expected: &'static str,
        found: String,
    },
    /// An environment variable name that is empty or holds `=` or NUL.
    #[error("expected a variable name without '=' or NUL, found {0:?}")]
    EnvName(String),
    /// An environment value with a NUL byte (it could not reach `execve`).
    #[error("expected a value without NUL bytes")]
    NulInValue,
    /// An argument with a NUL byte.
    #[error("expected an argument without NUL bytes")]
    NulInArgument,
    /// `native.host_uid`/`host_gid` 0: the sandbox must never map to host root.
    #[error("expected an unprivileged host id, found 0 (the sandbox must never map to host root)")]
    HostRoot,
    /// An outbound host not in the `host:port` form.
    #[error("expected host:port (a lowercase name, an IPv4 address or a bracketed IPv6 address, a port in 1..=65535), found {0:?}")]
    Authority(String),
    /// A route that is not an absolute path, optionally ending in `/...`.
    #[error("expected an absolute path such as \"/hook\", or a prefix such as \"/api/...\" (no '.', '..', '?', '*', '%', '//' or trailing '/'), found {0:?}")]
    Route(String),
    /// A route under what `hybox serve` answers itself.
    #[error("expected a route outside /v1, /healthz and /metrics (hybox serve answers those), found {0:?}")]
    ReservedRoute(String),
    /// `resources.io[N].device` does not name a block device of this host.
    #[error("{0}")]
    NotBlockDevice(String),
    /// A syscall `native.seccomp.allow` may not grant; `reason` is the shim's (it owns the filter).
    #[error("{reason}")]
    Syscall {
        name: String,
        reason: hybox_shim::seccomp::NotGrantable,
    },
}

fn names(backends: &[Backend]) -> Vec<String> {
    backends.iter().map(|b| b.to_string()).collect()
}
