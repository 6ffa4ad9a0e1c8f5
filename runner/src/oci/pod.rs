//! A pod's namespace paths as containerd's CRI writes them into every container's config.json:
//! `/proc/PID/ns/KIND`, with PID the pause container's pid, which is the pid hybox-runc's `create`
//! wrote to the pid file: its **monitor's**. The monitor stays in the host's namespaces (it builds
//! the envelope and reaps the sandbox); the pause container's own namespaces are those of its
//! sandbox, the monitor's child. So a path naming a hybox-runc monitor is followed to that child's
//! namespace of the same kind (docs/oci.md, "Pods").
//!
//! This grants nothing new: the child's `/proc/CHILD/ns/KIND` could be named directly, and what is
//! found still goes through the same check (a namespace of that kind, not the host's).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::backend::JoinKind;
use crate::oci::procfs;

/// `path`, or the namespace of the sandbox of the hybox-runc monitor it names (see the module docs).
pub fn through_monitor(kind: JoinKind, path: &Path) -> PathBuf {
    let name = kind.proc_name();
    let Some(pid) = proc_pid(path, name) else {
        return path.to_path_buf();
    };
    if !is_hybox(pid) {
        return path.to_path_buf();
    }
    let own = ns_id(pid, name);
    procfs::children(pid)
        .into_iter()
        .find(|c| ns_id(*c, name).is_some_and(|n| Some(n) != own))
        .map(|c| PathBuf::from(format!("/proc/{c}/ns/{name}")))
        .unwrap_or_else(|| path.to_path_buf())
}

/// PID of a `/proc/PID/ns/NAME` path.
fn proc_pid(path: &Path, name: &str) -> Option<i32> {
    let rest = path.to_str()?.strip_prefix("/proc/")?;
    let (pid, tail) = rest.split_once('/')?;
    (tail == format!("ns/{name}"))
        .then(|| pid.parse().ok())
        .flatten()
}

/// Whether `pid` runs this very executable (a monitor is forked from `create`, never exec'd).
fn is_hybox(pid: i32) -> bool {
    let id = |p: &str| std::fs::metadata(p).ok().map(|m| (m.dev(), m.ino()));
    id(&format!("/proc/{pid}/exe")).is_some_and(|x| Some(x) == id("/proc/self/exe"))
}

fn ns_id(pid: i32, name: &str) -> Option<(u64, u64)> {
    std::fs::metadata(format!("/proc/{pid}/ns/{name}"))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Creates in a native container's rootfs the mount point of every bind whose destination is
/// missing there, as runc does: containerd's CRI binds `/etc/hostname`, `/etc/hosts` and
/// `/etc/resolv.conf` into every container of a pod, and an image need not have them (Docker adds
/// them in an init layer, containerd does not). The sandbox cannot: it sees the rootfs read-only
/// and as an unprivileged uid. Done here, as root, in the container's own rootfs (containerd's
/// writable snapshot); the parent is resolved inside the rootfs (a symlink in the image never
/// leads out of it) and must exist, and an existing name is left alone (the sandbox refuses a
/// symlink as a mount point). The same for the policy's other tmpfs mounts (`native.tmpfs`: a
/// bundle's `/run` in an image without one).
pub fn create_mount_points(rootfs: &Path, policy: &crate::Policy) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let binds = policy
        .filesystem
        .mounts
        .iter()
        .map(|m| (&m.guest, m.host.is_dir()));
    let tmpfs = policy.native.tmpfs.iter().map(|t| (&t.guest, true));
    for (guest, is_dir) in binds.chain(tmpfs) {
        let (Some(parent), Some(name)) = (guest.parent(), guest.file_name()) else {
            continue;
        };
        let Ok(dir) = crate::oci::bundle::resolve_in_root(rootfs, parent) else {
            continue;
        };
        let point = dir.join(name);
        if std::fs::symlink_metadata(&point).is_ok() {
            continue;
        }
        if is_dir {
            std::fs::DirBuilder::new().mode(0o755).create(&point)?;
        } else {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW)
                .mode(0o644)
                .open(&point)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_proc_ns_paths_of_hybox_processes_are_followed() {
        assert_eq!(proc_pid(Path::new("/proc/42/ns/net"), "net"), Some(42));
        assert_eq!(proc_pid(Path::new("/proc/42/ns/ipc"), "net"), None);
        assert_eq!(proc_pid(Path::new("/run/netns/cni-1"), "net"), None);
        // Not a hybox-runc monitor (pid 1 is not this test binary): the path is kept.
        let p = Path::new("/proc/1/ns/net");
        assert_eq!(through_monitor(JoinKind::Network, p), p);
        // This process is "hybox" here, and a child in another UTS namespace would be followed;
        // with none, the path is kept.
        let me = PathBuf::from(format!("/proc/{}/ns/uts", std::process::id()));
        assert_eq!(through_monitor(JoinKind::Uts, &me), me);
    }

    #[test]
    fn missing_mount_points_are_created_inside_the_rootfs() {
        use crate::policy::{Access, Mount};
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("rootfs");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::fs::write(root.join("etc/hosts"), "image's\n").unwrap();
        // A symlinked parent resolves inside the rootfs, never to the host's /etc.
        std::os::unix::fs::symlink("/etc", root.join("link")).unwrap();
        let src = d.path().join("hostname");
        std::fs::write(&src, "pod\n").unwrap();
        let m = |guest: &str| Mount {
            host: src.clone(),
            guest: guest.into(),
            mode: Access::Rw,
        };
        let mounts = [
            m("/etc/hostname"),
            m("/etc/hosts"),
            m("/link/resolv.conf"),
            m("/none/x"),
        ];
        let mut policy = crate::Policy::default();
        policy.filesystem.mounts = mounts.to_vec();
        policy.native.tmpfs = vec![crate::policy::TmpfsMount {
            guest: "/run".into(),
            size: crate::units::Size::mib(1),
            mode: "755".into(),
            noexec: false,
        }];
        create_mount_points(&root, &policy).unwrap();
        assert!(root.join("run").is_dir());
        assert_eq!(std::fs::read(root.join("etc/hostname")).unwrap(), b"");
        assert_eq!(std::fs::read(root.join("etc/hosts")).unwrap(), b"image's\n");
        assert!(root.join("etc/resolv.conf").is_file());
        assert!(!root.join("none").exists());
    }
}
