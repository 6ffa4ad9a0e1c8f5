//! Joining existing network, IPC and UTS namespaces instead of creating them (an OCI bundle's
//! `linux.namespaces[].path`: the containers of a Kubernetes pod share the pod's; docs/oci.md).
//!
//! Who may join what (setns(2), user_namespaces(7)): joining a network, IPC or UTS namespace needs
//! `CAP_SYS_ADMIN` in the user namespace that *owns* it and in the caller's own. The sandbox's
//! shim cannot do it: it is created in a fresh user namespace of its own, and a pod's namespaces
//! are owned by another one (the pause container's sandbox user namespace, or the initial one for
//! a network namespace the container manager created). So the runner joins them, on the thread
//! that clones the shim, right before the clone (which then leaves those namespaces out of its
//! flags, and the child inherits the thread's), and goes back to its own right after. Only that
//! thread is in the joined namespaces, only for the clone: net, IPC and UTS namespaces are
//! per-thread, and the other threads of a multithreaded runner never see them. A runner that is
//! not root in the initial user namespace gets `EPERM`.
//!
//! Inside the sandbox the shim has no capability over a joined namespace (it is owned by another
//! user namespace): it does not set the hostname of a joined UTS namespace nor bring up `lo` in a
//! joined network namespace; the sandbox uses them as they are and cannot reconfigure them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

/// A namespace kind a run may join instead of creating its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum JoinKind {
    Network,
    Ipc,
    Uts,
}

impl JoinKind {
    /// The `CLONE_NEW*` flag of this kind (also setns(2)'s `nstype`).
    pub fn clone_flag(self) -> libc::c_int {
        match self {
            JoinKind::Network => libc::CLONE_NEWNET,
            JoinKind::Ipc => libc::CLONE_NEWIPC,
            JoinKind::Uts => libc::CLONE_NEWUTS,
        }
    }

    /// The name of its file in `/proc/PID/ns/`.
    pub fn proc_name(self) -> &'static str {
        match self {
            JoinKind::Network => "net",
            JoinKind::Ipc => "ipc",
            JoinKind::Uts => "uts",
        }
    }
}

/// Join the namespace at `path` (a `/proc/PID/ns/*` file, a bind mount of one, or
/// `/proc/self/fd/N` of an open one) instead of creating a new one of `kind`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceJoin {
    pub kind: JoinKind,
    pub path: PathBuf,
}

/// `NS_GET_NSTYPE` (linux/nsfs.h): the `CLONE_NEW*` type of an nsfs fd.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// Opens `path` and checks that it is a namespace of `kind`.
pub fn open_namespace(kind: JoinKind, path: &std::path::Path) -> io::Result<OwnedFd> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(io::Error::other)?;
    // SAFETY: a NUL-terminated path; the fd is owned below.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just opened and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an ioctl without argument on an fd we own.
    let t = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    if t != kind.clone_flag() {
        return Err(io::Error::other(format!(
            "{} is not a {} namespace",
            path.display(),
            kind.proc_name()
        )));
    }
    Ok(fd)
}

/// The namespaces opened for a run: the targets, and the flags the clone leaves out.
#[derive(Debug, Default)]
pub struct Joins {
    targets: Vec<(JoinKind, OwnedFd)>,
}

impl Joins {
    /// Opens every join's namespace (before the clone: this allocates).
    pub fn open(joins: &[NamespaceJoin]) -> io::Result<Joins> {
        let mut targets = Vec::new();
        for j in joins {
            let fd = open_namespace(j.kind, &j.path)
                .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", j.path.display())))?;
            targets.push((j.kind, fd));
        }
        Ok(Joins { targets })
    }

    /// The `CLONE_NEW*` flags the clone must leave out.
    pub fn flags(&self) -> u64 {
        self.targets
            .iter()
            .fold(0, |f, (k, _)| f | k.clone_flag() as u64)
    }

    pub fn has(&self, kind: JoinKind) -> bool {
        self.targets.iter().any(|(k, _)| *k == kind)
    }

    /// Moves the calling thread into the targets; [`Entered::leave`] moves it back. Nothing is
    /// done without targets.
    pub fn enter(&self) -> io::Result<Entered> {
        let mut own = Vec::new();
        for (kind, _) in &self.targets {
            let p = format!("/proc/thread-self/ns/{}", kind.proc_name());
            own.push((*kind, open_namespace(*kind, std::path::Path::new(&p))?));
        }
        let entered = Entered { own };
        for (kind, fd) in &self.targets {
            // SAFETY: setns on an nsfs fd we own, for this thread's namespace of that type.
            if unsafe { libc::setns(fd.as_raw_fd(), kind.clone_flag()) } != 0 {
                let e = io::Error::last_os_error();
                // Back to where the thread was before failing.
                let _ = entered.leave();
                return Err(io::Error::new(
                    e.kind(),
                    format!("setns into the {} namespace: {e}", kind.proc_name()),
                ));
            }
        }
        Ok(entered)
    }
}

/// The calling thread's own namespaces while it is in the joined ones.
pub struct Entered {
    own: Vec<(JoinKind, OwnedFd)>,
}

impl Entered {
    /// Moves the thread back into its own namespaces.
    pub fn leave(&self) -> io::Result<()> {
        for (kind, fd) in &self.own {
            // SAFETY: setns on an nsfs fd we own.
            if unsafe { libc::setns(fd.as_raw_fd(), kind.clone_flag()) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }
}
