//! Lookups in the union of an image's unpacked layers, as overlayfs would merge them, without a
//! mounted merged tree: an unprivileged run has none on the host (the sandbox mounts the overlay in
//! its own namespaces), yet the runner must find the program, read `/etc/passwd` for `User`, and
//! know the root's top-level entries to plan their binds.
//!
//! The rules are overlayfs's (the kernel's Documentation/filesystems/overlayfs.rst): the uppermost
//! layer that has a name wins; a whiteout (a 0/0 character device, or a regular file with the
//! `overlay.whiteout` xattr) hides the name in every lower layer; a directory is merged with the
//! same directory of lower layers unless it is opaque (`overlay.opaque=y`); and a non-directory in
//! a layer hides everything beneath its name in the lower ones. Symlinks are followed as
//! `RESOLVE_IN_ROOT` would: an absolute target starts again at the image's root, and `..` stops at
//! it, so no lookup leaves the image.

use std::collections::{BTreeSet, VecDeque};
use std::ffi::OsString;
use std::fs::Metadata;
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Component, Path, PathBuf};

use super::sys::xattr;
use crate::policy::RootEntry;

/// The most symlinks one lookup follows (the kernel's own limit, `MAXSYMLINKS`).
const MAX_LINKS: usize = 40;

/// One name found in the union: the host path of the layer entry that shows, and its metadata.
struct Found {
    host: PathBuf,
    meta: Metadata,
}

/// The layers of one image, uppermost first.
pub(crate) struct Union<'a> {
    pub(crate) layers: &'a [PathBuf],
}

fn is_whiteout(path: &Path, meta: &Metadata) -> bool {
    (meta.file_type().is_char_device() && meta.rdev() == 0)
        || (meta.is_file()
            && meta.len() == 0
            && (xattr(path, "user.overlay.whiteout").is_some()
                || xattr(path, "trusted.overlay.whiteout").is_some()))
}

fn is_opaque(dir: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|n| xattr(dir, n).as_deref() == Some(b"y"))
}

impl Union<'_> {
    /// The entry that shows at `comps` (the components of a path below the root, none of them a
    /// symlink in the union), or `None` if the union has no such name.
    fn lookup(&self, comps: &[OsString]) -> Option<Found> {
        let (last, parents) = comps.split_last()?;
        for layer in self.layers {
            let mut p = layer.clone();
            // An opaque directory on the way hides the layers below this one.
            let mut stop_below = is_opaque(&p);
            let mut parents_here = true;
            for c in parents {
                p.push(c);
                match std::fs::symlink_metadata(&p) {
                    Err(_) => {
                        parents_here = false;
                        break;
                    }
                    // A file, symlink or whiteout here hides everything beneath its name below.
                    Ok(m) if !m.is_dir() => return None,
                    Ok(_) => stop_below |= is_opaque(&p),
                }
            }
            if parents_here {
                let host = p.join(last);
                if let Ok(meta) = std::fs::symlink_metadata(&host) {
                    if is_whiteout(&host, &meta) {
                        return None;
                    }
                    return Some(Found { host, meta });
                }
            }
            if stop_below {
                return None;
            }
        }
        None
    }

    /// A path inside the image, resolved as the container would see it: `(host, guest)`, the host
    /// path of the layer entry that shows and the canonical path inside the image.
    pub(crate) fn resolve(&self, path: &Path) -> io::Result<(PathBuf, PathBuf)> {
        let mut queue: VecDeque<OsString> = VecDeque::new();
        push_front(&mut queue, path);
        let mut cur: Vec<OsString> = Vec::new();
        let mut links = 0;
        let mut last: Option<Found> = None;
        while let Some(c) = queue.pop_front() {
            if c == ".." {
                cur.pop();
                last = None;
                continue;
            }
            cur.push(c);
            let found = self
                .lookup(&cur)
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
            if found.meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                let target = std::fs::read_link(&found.host)?;
                cur.pop();
                if target.is_absolute() {
                    cur.clear();
                }
                push_front(&mut queue, &target);
                last = None;
            } else {
                if !queue.is_empty() && !found.meta.is_dir() {
                    return Err(io::Error::from_raw_os_error(libc::ENOTDIR));
                }
                last = Some(found);
            }
        }
        let guest = cur.iter().fold(PathBuf::from("/"), |p, c| p.join(c));
        let host = match last {
            Some(f) => f.host,
            None if cur.is_empty() => self
                .layers
                .first()
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?,
            // After a `..`: look the directory up again.
            None => {
                self.lookup(&cur)
                    .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?
                    .host
            }
        };
        Ok((host, guest))
    }

    /// The merged root's top-level entries, sorted by name: each name some layer's root has, unless
    /// a whiteout or an opaque root above hides it; symlinks with their target.
    pub(crate) fn top_level(&self) -> io::Result<Vec<RootEntry>> {
        let mut names = BTreeSet::new();
        for layer in self.layers {
            for e in std::fs::read_dir(layer)? {
                names.insert(e?.file_name());
            }
        }
        let mut out = Vec::new();
        for name in names {
            let Some(f) = self.lookup(std::slice::from_ref(&name)) else {
                continue;
            };
            let link = if f.meta.file_type().is_symlink() {
                Some(std::fs::read_link(&f.host)?)
            } else {
                None
            };
            out.push(RootEntry {
                name: PathBuf::from(name),
                link,
            });
        }
        Ok(out)
    }
}

/// Puts the components of `path` in front of `queue`, in order (`.` and `/` dropped).
fn push_front(queue: &mut VecDeque<OsString>, path: &Path) {
    for c in path.components().rev() {
        match c {
            Component::Normal(n) => queue.push_front(n.to_os_string()),
            Component::ParentDir => queue.push_front("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `None` where the temp dir's filesystem takes no `user.*` xattrs (tmpfs before Linux 6.6, the
    /// cgroup v2 VM's /tmp): an unprivileged store cannot be unpacked there either.
    fn layers() -> Option<(tempfile::TempDir, Vec<PathBuf>)> {
        let t = tempfile::tempdir().unwrap();
        let (low, up) = (t.path().join("low"), t.path().join("up"));
        for d in ["etc", "old", "usr/bin", "gone"] {
            std::fs::create_dir_all(low.join(d)).unwrap();
        }
        for f in ["etc/a", "etc/b", "old/x", "usr/bin/prog"] {
            std::fs::write(low.join(f), f).unwrap();
        }
        std::os::unix::fs::symlink("usr/bin", low.join("bin")).unwrap();
        std::os::unix::fs::symlink("/etc/../../etc/b", low.join("etc/up")).unwrap();
        for d in ["etc", "old"] {
            std::fs::create_dir_all(up.join(d)).unwrap();
        }
        std::fs::write(up.join("old/y"), "y").unwrap();
        // The user-xattr forms, which any user can write (the tests run as anyone).
        for w in ["etc/a", "gone"] {
            std::fs::write(up.join(w), "").unwrap();
            match crate::image::sys::set_xattr(&up.join(w), "user.overlay.whiteout", b"") {
                Err(nix::errno::Errno::EOPNOTSUPP) => return None,
                r => r.unwrap(),
            }
        }
        crate::image::sys::set_xattr(&up.join("old"), "user.overlay.opaque", b"y").unwrap();
        Some((t, vec![up, low]))
    }

    #[test]
    fn whiteouts_opaque_directories_and_symlinks_resolve_as_overlayfs_merges() {
        let Some((_t, l)) = layers() else {
            eprintln!("skipped: the temp dir's filesystem takes no user.* xattrs (EOPNOTSUPP)");
            return;
        };
        let u = Union { layers: &l };
        let guest = |p: &str| u.resolve(Path::new(p)).map(|(_, g)| g);
        assert!(guest("/etc/a").is_err(), "whited out");
        assert!(guest("/gone").is_err(), "a whited-out directory");
        assert!(guest("/old/x").is_err(), "below an opaque directory");
        assert_eq!(guest("/old/y").unwrap(), Path::new("/old/y"));
        assert_eq!(guest("/bin/prog").unwrap(), Path::new("/usr/bin/prog"));
        assert_eq!(
            u.resolve(Path::new("/bin/prog")).unwrap().0,
            l[1].join("usr/bin/prog")
        );
        // `..` and absolute targets stay in the image's root.
        assert_eq!(guest("/etc/up").unwrap(), Path::new("/etc/b"));
        assert_eq!(guest("/../../etc/b").unwrap(), Path::new("/etc/b"));
        let names: Vec<_> = u
            .top_level()
            .unwrap()
            .into_iter()
            .map(|e| (e.name.display().to_string(), e.link))
            .collect();
        assert_eq!(
            names,
            vec![
                ("bin".to_string(), Some(PathBuf::from("usr/bin"))),
                ("etc".to_string(), None),
                ("old".to_string(), None),
                ("usr".to_string(), None),
            ]
        );
    }
}
