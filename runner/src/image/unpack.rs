//! Unpacking one layer tar into an empty directory, safely: a layer is input from whoever built the
//! image, and unpacking it runs as hybox's user (root, for the default store).
//!
//! The `tar` crate parses the stream; its `unpack` is never used. Every entry is created here,
//! relative to a directory fd:
//! - each parent is opened with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//!   RESOLVE_NO_MAGICLINKS)`, one component at a time, so no symlink (planted by an earlier entry of
//!   the layer, whatever its target) is ever followed, and nothing resolves outside the layer
//!   directory (the CVE-2019-14271 / CVE-2018-15664 class: a tar that writes through its own
//!   symlink);
//! - the final component is created with `O_CREAT | O_EXCL | O_NOFOLLOW`, `mkdirat`, `symlinkat`,
//!   `linkat` without `AT_SYMLINK_FOLLOW`, or `mknodat`: none of them follows a symlink there;
//! - a path that is absolute or has a `..` component is refused, as is a hard link whose target is
//!   not a regular file this layer already created (a hard link to a host file would give the
//!   container, or the next entry's write, that file's inode);
//! - device nodes are skipped (named in the report), setuid/setgid bits are stripped (named), the
//!   entries' owners, times and xattrs are not applied (docs/images.md).
//!
//! Whiteouts are converted to overlayfs's form as the OCI image spec's "whiteouts" section maps
//! them. As root: `.wh.NAME` becomes a character device 0/0 named `NAME`, `.wh..wh..opq` sets
//! `trusted.overlay.opaque=y` on its directory (CAP_MKNOD, and CAP_SYS_ADMIN for the trusted
//! namespace). Without root, the form a `userxattr` overlay reads: an empty file `NAME` with
//! `user.overlay.whiteout` (its directory and the layer root marked `user.overlay.opaque=x`), and
//! `user.overlay.opaque=y`. A store's layers thus have its owner's form (docs/images.md).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, mknodat, Mode, SFlag};
use nix::unistd::{linkat, mkfifoat, symlinkat, unlinkat, UnlinkatFlags};
use tar::EntryType;

use super::sys::fsetxattr;

/// The OCI image spec's whiteout prefix, and the opaque marker.
const WHITEOUT: &[u8] = b".wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// What an unpack did, kept in the store next to the layer.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct UnpackReport {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub hardlinks: u64,
    /// Paths hidden from lower layers (`.wh.NAME` entries), as overlayfs whiteouts.
    pub whiteouts: Vec<String>,
    /// Directories whose lower-layer contents are hidden (`.wh..wh..opq`).
    pub opaque: Vec<String>,
    /// Entries changed or skipped by the unpack rules.
    pub neutralised: Vec<Neutralised>,
}

/// An entry the unpack rules changed or skipped rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "what", rename_all = "snake_case")]
pub enum Neutralised {
    /// A character or block device: not created (a container gets hybox's own /dev).
    DeviceSkipped { entry: String },
    /// Setuid or setgid bits removed from the mode (no privilege comes from an image's file).
    SetidStripped { entry: String, mode: u32 },
    /// An entry type hybox does not create (e.g. a contiguous file of another kind).
    TypeSkipped { entry: String, kind: String },
    /// A whiteout for a name this same layer created: the spec says a whiteout only hides lower
    /// layers, so the entry stays.
    WhiteoutOfOwnEntry { entry: String },
}

/// Why a layer is refused.
#[derive(Debug, thiserror::Error)]
pub enum UnpackProblem {
    #[error("absolute path")]
    Absolute,
    #[error("`..` in the path")]
    DotDot,
    #[error("a parent is a symlink or leads outside the layer (not followed)")]
    ThroughSymlink,
    #[error("a parent is not a directory")]
    ParentNotDir,
    #[error("hard link to {target:?}: {why}")]
    Hardlink { target: String, why: &'static str },
    #[error("would replace a non-empty directory")]
    ReplacesDir,
    #[error("{step}: {errno}")]
    Sys { step: &'static str, errno: Errno },
    #[error("writing the file: {0}")]
    Write(io::Error),
    #[error("malformed tar: {0}")]
    Tar(io::Error),
}

/// A refused layer: the layer's digest, the entry, and why.
#[derive(Debug, thiserror::Error)]
pub struct UnpackError {
    pub layer: String,
    pub entry: String,
    #[source]
    pub problem: UnpackProblem,
}

impl fmt::Display for UnpackError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "layer {}: entry {:?} refused: {}",
            self.layer, self.entry, self.problem
        )
    }
}

/// Unpacks the tar stream `tar` into `dest`, an empty directory. `layer` names the layer in errors
/// (its digest). Stops at the tar's end; the caller drains and verifies the stream.
pub fn unpack_layer(
    tar: &mut dyn Read,
    dest: &Path,
    layer: &str,
) -> Result<UnpackReport, UnpackError> {
    let err = |entry: &str, problem| UnpackError {
        layer: layer.to_string(),
        entry: entry.to_string(),
        problem,
    };
    let root = nix::fcntl::open(
        dest,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| {
        err(
            ".",
            UnpackProblem::Sys {
                step: "open the layer directory",
                errno,
            },
        )
    })?;
    let mut u = Unpacker {
        root,
        report: UnpackReport::default(),
        regular: HashSet::new(),
        created: HashSet::new(),
        dir_modes: Vec::new(),
        user_xattrs: !nix::unistd::geteuid().is_root(),
        opaque_dirs: HashSet::new(),
        xwhiteout_dirs: HashSet::new(),
    };
    let mut archive = tar::Archive::new(tar);
    let entries = archive
        .entries()
        .map_err(|e| err("<tar stream>", UnpackProblem::Tar(e)))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| err("<tar stream>", UnpackProblem::Tar(e)))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        u.entry(&mut entry, &raw, &shown)
            .map_err(|p| err(&shown, p))?;
    }
    // Directory modes last: a 0555 directory must not stop its own entries from being created.
    for (comps, mode) in std::mem::take(&mut u.dir_modes).into_iter().rev() {
        let shown = String::from_utf8_lossy(&comps.join(&b'/')).into_owned();
        u.chmod_dir(&comps, mode).map_err(|p| err(&shown, p))?;
    }
    Ok(u.report)
}

struct Unpacker {
    root: OwnedFd,
    report: UnpackReport,
    /// Regular files this layer created (normalised paths): the only valid hard link targets.
    regular: HashSet<Vec<u8>>,
    /// Every path this layer created (for the whiteout rule).
    created: HashSet<Vec<u8>>,
    dir_modes: Vec<(Vec<Vec<u8>>, u32)>,
    /// Write whiteouts in the `user.overlay.*` form (an unprivileged unpack), not overlayfs's
    /// privileged one.
    user_xattrs: bool,
    /// Directories this layer made opaque, and those marked as holding xattr whiteouts (the
    /// `user.overlay.*` form).
    opaque_dirs: HashSet<Vec<u8>>,
    xwhiteout_dirs: HashSet<Vec<u8>>,
}

/// The components of an archive path: relative, without `.`; `..` and absolute paths refused.
fn components(raw: &[u8]) -> Result<Vec<Vec<u8>>, UnpackProblem> {
    if raw.first() == Some(&b'/') {
        return Err(UnpackProblem::Absolute);
    }
    let mut out = Vec::new();
    for c in raw.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => return Err(UnpackProblem::DotDot),
            c => out.push(c.to_vec()),
        }
    }
    Ok(out)
}

fn beneath(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS,
        )
}

fn sys(step: &'static str) -> impl Fn(Errno) -> UnpackProblem {
    move |errno| UnpackProblem::Sys { step, errno }
}

fn resolve_problem(errno: Errno) -> UnpackProblem {
    match errno {
        // ELOOP: a symlink met with RESOLVE_NO_SYMLINKS; EXDEV: an escape RESOLVE_BENEATH stopped.
        Errno::ELOOP | Errno::EXDEV => UnpackProblem::ThroughSymlink,
        Errno::ENOTDIR => UnpackProblem::ParentNotDir,
        errno => UnpackProblem::Sys {
            step: "open a parent directory",
            errno,
        },
    }
}

fn is_symlink(dir: BorrowedFd<'_>, name: &OsStr) -> bool {
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

impl Unpacker {
    /// The directory `comps`, opened (O_PATH) one component at a time, never through a symlink;
    /// missing ones are created (0755) when `create`.
    fn open_dir(&self, comps: &[Vec<u8>], create: bool) -> Result<OwnedFd, UnpackProblem> {
        let mut cur: OwnedFd = self.root.try_clone().map_err(|e| UnpackProblem::Sys {
            step: "dup the layer directory",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        for c in comps {
            let name = OsStr::from_bytes(c);
            let how = || beneath(OFlag::O_PATH | OFlag::O_DIRECTORY);
            let next = match openat2(cur.as_fd(), name, how()) {
                Ok(fd) => fd,
                Err(Errno::ENOENT) if create => {
                    match mkdirat(cur.as_fd(), name, Mode::from_bits_truncate(0o755)) {
                        Ok(()) | Err(Errno::EEXIST) => {}
                        Err(errno) => return Err(sys("mkdirat a parent")(errno)),
                    }
                    openat2(cur.as_fd(), name, how()).map_err(resolve_problem)?
                }
                // O_NOFOLLOW | O_PATH opens a symlink itself, which O_DIRECTORY then refuses.
                Err(Errno::ENOTDIR) if is_symlink(cur.as_fd(), name) => {
                    return Err(UnpackProblem::ThroughSymlink)
                }
                Err(errno) => return Err(resolve_problem(errno)),
            };
            cur = next;
        }
        Ok(cur)
    }

    /// A whiteout in the form an unprivileged `userxattr` overlay reads (Linux >= 6.7): an empty
    /// file with `user.overlay.whiteout`, and `user.overlay.opaque=x` on its directory and on the
    /// layer's root, the markers that make overlayfs look for such whiteouts there at all ("x":
    /// has whiteouts, not opaque; an opaque directory's "y" is kept).
    fn user_whiteout(
        &mut self,
        parent: BorrowedFd<'_>,
        name: &OsStr,
        parents: &[Vec<u8>],
    ) -> Result<(), UnpackProblem> {
        let fd = nix::fcntl::openat(
            parent,
            name,
            OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o600),
        )
        .map_err(sys("create the whiteout"))?;
        fsetxattr(fd.as_fd(), "user.overlay.whiteout", b"")
            .map_err(sys("set user.overlay.whiteout"))?;
        for key in [parents.join(&b'/'), Vec::new()] {
            if self.opaque_dirs.contains(&key) || !self.xwhiteout_dirs.insert(key.clone()) {
                continue;
            }
            let dir = if key.is_empty() {
                openat2(
                    self.root.as_fd(),
                    ".",
                    beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
                )
            } else {
                openat2(parent, ".", beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY))
            }
            .map_err(sys("open the whiteout's directory"))?;
            fsetxattr(dir.as_fd(), "user.overlay.opaque", b"x")
                .map_err(sys("set user.overlay.opaque=x"))?;
        }
        Ok(())
    }

    /// Makes room for a new non-directory entry: an earlier entry of this layer at the same path
    /// is replaced, as tar does (unlinkat never follows a symlink).
    fn clear(&self, parent: BorrowedFd<'_>, name: &OsStr) -> Result<(), UnpackProblem> {
        match unlinkat(parent, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(Errno::EISDIR) => match unlinkat(parent, name, UnlinkatFlags::RemoveDir) {
                Ok(()) => Ok(()),
                Err(Errno::ENOTEMPTY | Errno::EEXIST) => Err(UnpackProblem::ReplacesDir),
                Err(errno) => Err(sys("rmdir the replaced directory")(errno)),
            },
            Err(errno) => Err(sys("unlink the replaced entry")(errno)),
        }
    }

    fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        raw: &[u8],
        shown: &str,
    ) -> Result<(), UnpackProblem> {
        let kind = entry.header().entry_type();
        if matches!(
            kind,
            EntryType::XGlobalHeader
                | EntryType::XHeader
                | EntryType::GNULongName
                | EntryType::GNULongLink
        ) {
            return Ok(());
        }
        let comps = components(raw)?;
        let Some((name, parents)) = comps.split_last() else {
            // The layer's root itself (`./`): its mode is the overlay's business, not the image's.
            return Ok(());
        };
        let key = comps.join(&b'/');
        let mode = entry.header().mode().map_err(UnpackProblem::Tar)? & 0o7777;
        let kept = mode & !0o6000;
        if kept != mode && !matches!(kind, EntryType::Symlink | EntryType::Link) {
            self.report.neutralised.push(Neutralised::SetidStripped {
                entry: shown.to_string(),
                mode,
            });
        }
        let parent = self.open_dir(parents, true)?;
        let parent = parent.as_fd();
        let oname = OsStr::from_bytes(name);

        if name.as_slice() == OPAQUE {
            let dir = openat2(parent, ".", beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY))
                .map_err(sys("open the opaque directory"))?;
            if self.user_xattrs {
                fsetxattr(dir.as_fd(), "user.overlay.opaque", b"y")
                    .map_err(sys("set user.overlay.opaque"))?;
                self.opaque_dirs.insert(parents.join(&b'/'));
            } else {
                fsetxattr(dir.as_fd(), "trusted.overlay.opaque", b"y")
                    .map_err(sys("set trusted.overlay.opaque (needs root)"))?;
            }
            let dir_shown = String::from_utf8_lossy(&parents.join(&b'/')).into_owned();
            self.report.opaque.push(dir_shown);
            return Ok(());
        }
        if let Some(hidden) = name.strip_prefix(WHITEOUT) {
            let mut hidden_key = parents.join(&b'/');
            if !hidden_key.is_empty() {
                hidden_key.push(b'/');
            }
            hidden_key.extend_from_slice(hidden);
            if hidden.is_empty() || hidden == b"." || hidden == b".." {
                return Err(UnpackProblem::DotDot);
            }
            if self.created.contains(&hidden_key) {
                self.report
                    .neutralised
                    .push(Neutralised::WhiteoutOfOwnEntry {
                        entry: shown.to_string(),
                    });
                return Ok(());
            }
            let hname = OsStr::from_bytes(hidden);
            self.clear(parent, hname)?;
            if self.user_xattrs {
                self.user_whiteout(parent, hname, parents)?;
            } else {
                mknodat(parent, hname, SFlag::S_IFCHR, Mode::empty(), 0).map_err(sys(
                    "mknod the whiteout (a character device 0/0, needs root)",
                ))?;
            }
            self.report
                .whiteouts
                .push(String::from_utf8_lossy(&hidden_key).into_owned());
            return Ok(());
        }

        match kind {
            EntryType::Directory => {
                match mkdirat(parent, oname, Mode::from_bits_truncate(0o700)) {
                    Ok(()) => {}
                    Err(Errno::EEXIST) => {
                        // An earlier entry: a directory stays (its mode is set below); anything
                        // else (a planted symlink, a file) is replaced, never followed.
                        let st = fstatat(parent, oname, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW)
                            .map_err(sys("fstatat the existing entry"))?;
                        if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFDIR {
                            self.clear(parent, oname)?;
                            mkdirat(parent, oname, Mode::from_bits_truncate(0o700))
                                .map_err(sys("mkdirat"))?;
                        }
                    }
                    Err(errno) => return Err(sys("mkdirat")(errno)),
                }
                self.regular.remove(&key);
                self.dir_modes.push((comps.clone(), kept));
                self.report.dirs += 1;
            }
            EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => {
                self.clear(parent, oname)?;
                let fd = nix::fcntl::openat(
                    parent,
                    oname,
                    OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_WRONLY
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(sys("create the file"))?;
                let mut file = File::from(fd);
                io::copy(entry, &mut file).map_err(UnpackProblem::Write)?;
                fchmod(file.as_fd(), Mode::from_bits_truncate(kept)).map_err(sys("fchmod"))?;
                self.regular.insert(key.clone());
                self.report.files += 1;
            }
            EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or(UnpackProblem::Tar(io::Error::other(
                        "symlink without a target",
                    )))?
                    .into_owned();
                self.clear(parent, oname)?;
                // The target is stored as is and never followed here: it is resolved only inside
                // the container's own root.
                symlinkat(OsStr::from_bytes(&target), parent, oname).map_err(sys("symlinkat"))?;
                self.regular.remove(&key);
                self.report.symlinks += 1;
            }
            EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .ok_or(UnpackProblem::Tar(io::Error::other(
                        "hard link without a target",
                    )))?
                    .into_owned();
                let tshown = String::from_utf8_lossy(&target).into_owned();
                let bad = |why| UnpackProblem::Hardlink {
                    target: tshown.clone(),
                    why,
                };
                let tcomps =
                    components(&target).map_err(|_| bad("the target is outside the layer"))?;
                if !self.regular.contains(&tcomps.join(&b'/')) {
                    return Err(bad("the target is not a regular file this layer created"));
                }
                let (tname, tparents) = tcomps.split_last().ok_or_else(|| bad("no target"))?;
                let tparent = self.open_dir(tparents, false)?;
                let tname = OsStr::from_bytes(tname);
                let st = fstatat(
                    tparent.as_fd(),
                    tname,
                    nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
                )
                .map_err(sys("fstatat the link target"))?;
                if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT != SFlag::S_IFREG {
                    return Err(bad("the target is not a regular file"));
                }
                if tcomps == comps {
                    return Ok(());
                }
                self.clear(parent, oname)?;
                linkat(
                    tparent.as_fd(),
                    tname,
                    parent,
                    oname,
                    nix::fcntl::AtFlags::empty(),
                )
                .map_err(sys("linkat"))?;
                self.regular.insert(key.clone());
                self.report.hardlinks += 1;
            }
            EntryType::Fifo => {
                self.clear(parent, oname)?;
                mkfifoat(parent, oname, Mode::from_bits_truncate(kept & 0o777))
                    .map_err(sys("mkfifoat"))?;
                self.regular.remove(&key);
            }
            EntryType::Char | EntryType::Block => {
                self.report.neutralised.push(Neutralised::DeviceSkipped {
                    entry: shown.to_string(),
                });
                return Ok(());
            }
            other => {
                self.report.neutralised.push(Neutralised::TypeSkipped {
                    entry: shown.to_string(),
                    kind: format!("{other:?}"),
                });
                return Ok(());
            }
        }
        self.created.insert(key);
        Ok(())
    }

    /// Sets a directory's mode through an fd opened beneath the layer without following links
    /// (fchmodat would follow a symlink swapped in at the last component).
    fn chmod_dir(&self, comps: &[Vec<u8>], mode: u32) -> Result<(), UnpackProblem> {
        let Some((name, parents)) = comps.split_last() else {
            return Ok(());
        };
        let parent = self.open_dir(parents, false)?;
        let dir = match openat2(
            parent.as_fd(),
            OsStr::from_bytes(name),
            beneath(OFlag::O_RDONLY | OFlag::O_DIRECTORY),
        ) {
            Ok(fd) => fd,
            // Replaced by a later entry of another type: that entry's mode stands.
            Err(Errno::ENOTDIR | Errno::ELOOP | Errno::ENOENT) => return Ok(()),
            Err(errno) => return Err(sys("open a directory for its mode")(errno)),
        };
        fchmod(dir.as_fd(), Mode::from_bits_truncate(mode)).map_err(sys("fchmod a directory"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_refuse_dotdot_and_absolute() {
        assert!(matches!(
            components(b"/etc/x"),
            Err(UnpackProblem::Absolute)
        ));
        assert!(matches!(
            components(b"a/../../x"),
            Err(UnpackProblem::DotDot)
        ));
        assert_eq!(
            components(b"./a//b/./c/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
    }
}
