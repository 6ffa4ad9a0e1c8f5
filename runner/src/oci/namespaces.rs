//! `linux.namespaces`: which namespaces a container has of its own, and which it joins by path
//! (a Kubernetes pod's: every container of a pod is put in the pause container's network, IPC and
//! UTS namespaces; docs/oci.md).
//!
//! The runtime policy's rule for a `path` (fixed here, the policy format has no field for it):
//! - `pid`, `mount`, `user`, `cgroup` and `time` paths are refused: a container always has its
//!   own (hybox's isolation is built on them; a pod's containers keep their own pid and mount
//!   namespaces under CRI too);
//! - a `network`, `ipc` or `uts` path is allowed when it is a namespace of that type and not the
//!   host's (pid 1's, or this runtime's own: joining those would be `--network host` and the like,
//!   which the runtime policy refuses as it refuses a missing namespace). It does not have to be
//!   another hybox container's: CRI creates a pod's network namespace itself and bind-mounts it
//!   (`.../netns/cni-...`) before the pause container exists;
//! - joining a network namespace gives the container that namespace's interfaces, which is network
//!   access: a native container may join one only when the runtime policy's `network` is not
//!   `none` (refused naming the field otherwise). A wasm container's worker joins a network
//!   namespace only with `loopback`: its guest's loopback is then the pod's, shared with the pod's
//!   other containers (a wasm server on `127.0.0.1` is reachable from a native sidecar), and the
//!   worker's socket check still admits loopback addresses only. With `none` its guest has no
//!   sockets at all and the path is listed as ignored (the worker keeps its own empty namespace);
//!   IPC and UTS paths are ignored for wasm (WASI has neither System V IPC nor a hostname call).
//!
//! Which user namespace owns a joined namespace, and who joins: `backend::native::join`.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use oci_spec::runtime::{Linux, LinuxNamespaceType};

use crate::backend::{JoinKind, NamespaceJoin};
use crate::oci::OciError;
use crate::policy::{Backend, Network};

/// What `linux.namespaces` asks for: the kinds listed, and the joins by path with their index.
#[derive(Debug, Clone, Default)]
pub struct Asked {
    pub kinds: BTreeSet<&'static str>,
    pub joins: Vec<(usize, NamespaceJoin)>,
}

/// Reads `linux.namespaces`, refusing what the runtime policy does not allow (see the module docs).
pub fn read(linux: &Linux) -> Result<Asked, OciError> {
    let mut asked = Asked::default();
    for (i, ns) in linux.namespaces().iter().flatten().enumerate() {
        let name = ns_name(ns.typ());
        asked.kinds.insert(name);
        let Some(path) = ns.path() else { continue };
        let field = format!("linux.namespaces[{i}].path");
        let kind = match ns.typ() {
            LinuxNamespaceType::Network => JoinKind::Network,
            LinuxNamespaceType::Ipc => JoinKind::Ipc,
            LinuxNamespaceType::Uts => JoinKind::Uts,
            _ => {
                return Err(OciError::refused(
                    field,
                    format!(
                        "joining an existing {name} namespace ({}) is beyond the runtime policy: a \
                         container always has its own {name} namespace (only network, ipc and uts \
                         namespaces may be joined by path)",
                        path.display()
                    ),
                ))
            }
        };
        // CRI names the pause container's pid, a hybox monitor's: its sandbox holds the namespaces.
        let path = &crate::oci::pod::through_monitor(kind, path);
        check_joinable(kind, path).map_err(|why| OciError::refused(&field, why))?;
        asked.joins.push((
            i,
            NamespaceJoin {
                kind,
                path: path.clone(),
            },
        ));
    }
    Ok(asked)
}

/// Whether `path` is a namespace of `kind` that is not the host's.
fn check_joinable(kind: JoinKind, path: &Path) -> Result<(), String> {
    let name = kind.proc_name();
    let fd = crate::backend::native::join::open_namespace(kind, path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let target = std::fs::File::from(fd)
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    for host in ["/proc/1/ns", "/proc/self/ns"] {
        let p = Path::new(host).join(name);
        if let Ok(m) = std::fs::metadata(&p) {
            if (m.dev(), m.ino()) == (target.dev(), target.ino()) {
                return Err(format!(
                    "{} is the host's {name} namespace ({}): sharing the host's is beyond the \
                     runtime policy",
                    path.display(),
                    p.display()
                ));
            }
        }
    }
    Ok(())
}

/// Keeps the joins a container of `backend` may make under `network`, listing in `ignored` what a
/// wasm container does not join (see the module docs).
pub fn for_backend(
    asked: &Asked,
    backend: Backend,
    network: Network,
    ignored: &mut Vec<String>,
) -> Result<Vec<NamespaceJoin>, OciError> {
    let mut joins = Vec::new();
    for (i, j) in &asked.joins {
        match backend {
            Backend::Native if j.kind == JoinKind::Network && network == Network::None => {
                return Err(OciError::refused(
                    format!("linux.namespaces[{i}].path"),
                    format!(
                        "joining the network namespace {} gives the container its interfaces, and \
                         the runtime policy's network is \"none\" (a runtime policy with \
                         \"network\": \"loopback\" allows joining a pod's)",
                        j.path.display()
                    ),
                ));
            }
            Backend::Native => joins.push(j.clone()),
            // With `loopback` the guest's loopback is the pod's, shared with its other
            // containers, as Kubernetes promises (the worker's socket check still admits
            // loopback addresses only, so the pod's other interfaces stay out of its reach).
            Backend::Wasm if j.kind == JoinKind::Network && network == Network::Loopback => {
                joins.push(j.clone())
            }
            Backend::Wasm => ignored.push(format!(
                "linux.namespaces[{i}].path ({} {}): a wasm container does not join it; {}",
                j.kind.proc_name(),
                j.path.display(),
                match j.kind {
                    JoinKind::Network =>
                        "its guest has no sockets (the runtime policy's network is \"none\")",
                    JoinKind::Ipc => "its guest has no System V IPC",
                    JoinKind::Uts => "its guest has no hostname call",
                }
            )),
        }
    }
    Ok(joins)
}

pub fn ns_name(t: LinuxNamespaceType) -> &'static str {
    match t {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "network",
        LinuxNamespaceType::Time => "time",
    }
}
