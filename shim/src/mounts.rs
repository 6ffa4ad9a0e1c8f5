//! The sandbox's filesystem: a private tmpfs as the new root, `pivot_root` into it, the binds of the
//! root filesystem and of the policy's mounts, the rootfs links, `/tmp`, a minimal `/dev`, a fresh
//! `/proc`, then the host's tree detached, the root made read-only and the workdir entered.
//!
//! Separate because it is the longest part of the setup and the one that decides what of the host a
//! workload can reach by path. Every function is one step of `setup`, called in the order there.
//! There is no `/sys` and no cgroupfs: they are never mounted.

use std::path::{Path, PathBuf};

use hybox_shim::plan::{Bind, Link, Overlay};

use crate::error::{Result, SetupError};
use crate::sys::{check, create_file, cstr, mount, symlink, Errno};

/// statvfs's `ST_RELATIME` (linux/statfs.h), which the libc crate has for glibc only.
const ST_RELATIME: libc::c_ulong = 0x400;

/// Where the new root's tmpfs is mounted before `pivot_root` (any directory of the host's tree would
/// do: the mount is in this process's private mount namespace).
const NEW_ROOT: &str = "/tmp";
/// The host's tree after `pivot_root`, until [`detach_old_root`].
const OLD_ROOT: &str = "/.oldroot";

/// Makes every mount private (MS_REC): nothing mounted or unmounted in the sandbox propagates to the
/// host's mount namespace, and no host mount event propagates in.
pub fn make_root_private() -> Result<()> {
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REC | libc::MS_PRIVATE,
        None,
    )
    .map_err(SetupError::PrivateRoot)
}

/// The new root: a size-capped tmpfs (nosuid, nodev) that holds only mount points, nothing of the
/// host's root.
pub fn mount_root_tmpfs(bytes: u64) -> Result<()> {
    let data = std::ffi::CString::new(format!("size={bytes},mode=0755")).unwrap_or_default();
    mount(
        Some(Path::new("tmpfs")),
        Path::new(NEW_ROOT),
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&data),
    )
    .map_err(SetupError::RootTmpfs)
}

/// `pivot_root` into the tmpfs, the host's tree at [`OLD_ROOT`], then `chdir("/")`. Unlike a chroot
/// (escaped with a second chroot and `..`), pivot_root changes the root mount itself, and once the
/// old root is detached there is no path back.
pub fn pivot_root() -> Result<()> {
    let new = Path::new(NEW_ROOT);
    let put_old = new.join(OLD_ROOT.trim_start_matches('/'));
    mkdir(&put_old, 0o700)?;
    let (n, o) = (cstr(new), cstr(&put_old));
    // SAFETY: two NUL-terminated paths; pivot_root has no libc wrapper.
    check(unsafe { libc::syscall(libc::SYS_pivot_root, n.as_ptr(), o.as_ptr()) } as libc::c_int)
        .map_err(SetupError::PivotRoot)?;
    // pivot_root(2) moves a cwd that was the old root, not one below it: no cwd stays in the host's
    // tree.
    // SAFETY: a NUL-terminated path.
    check(unsafe { libc::chdir(c"/".as_ptr()) }).map_err(SetupError::ChdirNewRoot)?;
    Ok(())
}

/// The plan's overlay, over the host's tree (at [`OLD_ROOT`]): first the writable layer's tmpfs with
/// `upper/` and `work/`, then the overlay with `userxattr`, nosuid and nodev (read-only without an
/// upper layer). Both mounts are in the sandbox's mount namespace only, and go with the host's tree
/// at [`detach_old_root`]; the rootfs binds of the merged tree's entries keep it alive.
pub fn mount_overlay(o: &Overlay) -> Result<()> {
    let old = |p: &Path| Path::new(OLD_ROOT).join(p.strip_prefix("/").unwrap_or(p));
    let merged = old(&o.merged);
    let shown = o.merged.display().to_string();
    let lower: Vec<String> = o
        .lower
        .iter()
        .map(|l| old(l).display().to_string())
        .collect();
    let mut opts = format!("lowerdir={}", lower.join(":"));
    let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
    match &o.upper {
        Some(u) => {
            let rw = old(&u.dir);
            let data =
                std::ffi::CString::new(format!("size={},mode=0700", u.bytes)).unwrap_or_default();
            mount(
                Some(Path::new("tmpfs")),
                &rw,
                Some(c"tmpfs"),
                libc::MS_NOSUID | libc::MS_NODEV,
                Some(&data),
            )
            .map_err(|e| SetupError::OverlayTmpfs(u.dir.display().to_string(), e))?;
            mkdir(&rw.join("upper"), 0o755)?;
            mkdir(&rw.join("work"), 0o700)?;
            opts.push_str(&format!(
                ",upperdir={},workdir={}",
                rw.join("upper").display(),
                rw.join("work").display()
            ));
        }
        None => flags |= libc::MS_RDONLY,
    }
    opts.push_str(",userxattr");
    let data = std::ffi::CString::new(opts).unwrap_or_default();
    mount(
        Some(Path::new("overlay")),
        &merged,
        Some(c"overlay"),
        flags,
        Some(&data),
    )
    .map_err(|e| SetupError::Overlay(shown, e))
}

/// Binds each of `binds` from the host's tree (see [`bind`]), in order.
pub fn bind_all(binds: &[Bind]) -> Result<()> {
    let old = Path::new(OLD_ROOT);
    for b in binds {
        bind(old, b)?;
    }
    Ok(())
}

/// The rootfs's symlinks (`/bin -> usr/bin` on merged-/usr hosts), after the binds they point into.
pub fn make_links(links: &[Link]) -> Result<()> {
    for l in links {
        symlink(&l.target, &l.path)
            .map_err(|e| SetupError::Symlink(l.path.display().to_string(), e))?;
    }
    Ok(())
}

/// The scratch tmpfs at `/tmp` (nosuid, nodev, sticky), size-capped; its pages are charged to the
/// run's cgroup, so filling it counts against the memory limit.
pub fn mount_tmp(bytes: u64) -> Result<()> {
    mkdir_p(Path::new("/tmp"))?;
    let data = std::ffi::CString::new(format!("size={bytes},mode=1777")).unwrap_or_default();
    mount(
        Some(Path::new("tmpfs")),
        Path::new("/tmp"),
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV,
        Some(&data),
    )
    .map_err(SetupError::Tmp)
}

/// One of the plan's other tmpfs mounts (`Plan::tmpfs`), over a directory of the rootfs or a new
/// one in the root tmpfs; a symlink on the way is refused (it would move the mount elsewhere).
pub fn mount_tmpfs(t: &hybox_shim::plan::Tmpfs) -> Result<()> {
    let shown = || t.guest.display().to_string();
    mkdir_p(&t.guest).map_err(|e| SetupError::TmpfsAt(shown(), Box::new(e)))?;
    let data = std::ffi::CString::new(format!("size={},mode={:o}", t.bytes, t.mode & 0o7777))
        .unwrap_or_default();
    let noexec = if t.noexec { libc::MS_NOEXEC } else { 0 };
    mount(
        Some(Path::new("tmpfs")),
        &t.guest,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NODEV | noexec,
        Some(&data),
    )
    .map_err(|e| SetupError::Tmpfs(shown(), e))
}

/// A minimal /dev: the five harmless character devices (binds of the host's nodes: a user namespace
/// cannot mknod), the /dev/fd links, read-only. Before `/proc`, whose masks bind `/dev/null`.
/// With `tty` (`Plan::controlling_tty`) also `/dev/pts/N`, a bind of the pty that is stdin (the
/// one hybox-runc made for this container, never a terminal of the caller's), so that `ttyname`
/// finds it (`tty`, shells' job control): only that node, not the host's devpts.
pub fn mount_dev(tty: bool) -> Result<()> {
    let old = Path::new(OLD_ROOT);
    let dev = Path::new("/dev");
    mkdir(dev, 0o755)?;
    mount(
        Some(Path::new("tmpfs")),
        dev,
        Some(c"tmpfs"),
        libc::MS_NOSUID | libc::MS_NOEXEC,
        Some(c"size=1048576,mode=0755"),
    )
    .map_err(SetupError::DevTmpfs)?;
    for d in ["null", "zero", "full", "random", "urandom"] {
        let dst = dev.join(d);
        let shown = || dst.display().to_string();
        create_file(&dst, 0o666).map_err(|e| SetupError::DevNode(shown(), e))?;
        mount(
            Some(&old.join("dev").join(d)),
            &dst,
            None,
            libc::MS_BIND,
            None,
        )
        .map_err(|e| SetupError::DevBind(shown(), e))?;
    }
    if let Some(n) = tty.then(|| pty_number(0)).flatten() {
        let src = old.join("dev/pts").join(n.to_string());
        // The host's /dev/pts/N must be the very device open as stdin.
        if crate::sys::char_device_of(0) == rdev_of(&src) {
            let pts = dev.join("pts");
            mkdir(&pts, 0o755)?;
            let dst = pts.join(n.to_string());
            let shown = || dst.display().to_string();
            create_file(&dst, 0o620).map_err(|e| SetupError::DevNode(shown(), e))?;
            mount(Some(&src), &dst, None, libc::MS_BIND, None)
                .map_err(|e| SetupError::DevBind(shown(), e))?;
        }
    }
    for (t, l) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
    ] {
        symlink(Path::new(t), Path::new(l)).map_err(|e| SetupError::DevLink(l.into(), e))?;
    }
    // Read-only: the tmpfs belongs to the sandbox's uid, which must not add nodes or replace links.
    mount(
        None,
        dev,
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NOEXEC,
        None,
    )
    .map_err(SetupError::DevRo)
}

/// The number N of the Unix98 pty slave (`/dev/pts/N`) open as `fd`: majors 136-143
/// (Documentation/admin-guide/devices.txt), 256 minors each.
fn pty_number(fd: libc::c_int) -> Option<u32> {
    let rdev = crate::sys::char_device_of(fd)?;
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    (136..=143)
        .contains(&major)
        .then(|| (major - 136) * 256 + minor)
}

fn rdev_of(p: &Path) -> Option<libc::dev_t> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(p).ok().map(|m| m.rdev())
}

/// A fresh procfs of the sandbox's pid namespace (no host pids), with the host-wide knobs masked
/// when `mask` (always, but with the `native.nested` grant: `Plan::mask_proc` says why).
pub fn mount_proc(mask: bool) -> Result<()> {
    mkdir(Path::new("/proc"), 0o555)?;
    mount(
        Some(Path::new("proc")),
        Path::new("/proc"),
        Some(c"proc"),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        None,
    )
    .map_err(SetupError::Proc)?;
    if !mask {
        return Ok(());
    }
    // Files that reach the whole host (kernel memory, the keyrings, sysrq, kernel addresses): masked
    // with /dev/null, as runc and bubblewrap do.
    for f in [
        "/proc/kcore",
        "/proc/keys",
        "/proc/sysrq-trigger",
        "/proc/timer_list",
        "/proc/kallsyms",
    ] {
        if Path::new(f).exists() {
            mount(
                Some(Path::new("/dev/null")),
                Path::new(f),
                None,
                libc::MS_BIND,
                None,
            )
            .map_err(|e| SetupError::ProcMask(f.into(), e))?;
        }
    }
    // Kernel tunables: read-only.
    for d in ["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"] {
        if Path::new(d).exists() {
            let p = Path::new(d);
            mount(Some(p), p, None, libc::MS_BIND | libc::MS_REC, None)
                .map_err(|e| SetupError::ProcBind(d.into(), e))?;
            let flags = libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC
                | locked_flags(p);
            mount(None, p, None, flags, None).map_err(|e| SetupError::ProcRo(d.into(), e))?;
        }
    }
    Ok(())
}

/// Detaches the host's tree (`umount2(MNT_DETACH)`) and removes its mount point: nothing of it stays
/// reachable by path.
pub fn detach_old_root() -> Result<()> {
    let old = cstr(Path::new(OLD_ROOT));
    // SAFETY: a NUL-terminated path and a flag.
    check(unsafe { libc::umount2(old.as_ptr(), libc::MNT_DETACH) })
        .map_err(SetupError::DetachOldRoot)?;
    // SAFETY: a NUL-terminated path.
    check(unsafe { libc::rmdir(old.as_ptr()) }).map_err(SetupError::RemoveOldRoot)?;
    Ok(())
}

/// The root tmpfs only holds mount points, and it belongs to the sandbox's uid (mounted after the id
/// switch): read-only, so the workload can add or replace nothing at `/`.
pub fn remount_root_ro() -> Result<()> {
    mount(
        None,
        Path::new("/"),
        None,
        libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV,
        None,
    )
    .map_err(SetupError::RootRo)
}

/// `chdir` to the workdir, then check that `getcwd` names it: a cwd outside the new root reads as
/// "(unreachable)/..." or another path (CVE-2024-21626, a cwd left in a host directory).
pub fn enter_workdir(workdir: &Path) -> Result<()> {
    let wd = cstr(workdir);
    // SAFETY: a NUL-terminated path.
    check(unsafe { libc::chdir(wd.as_ptr()) })
        .map_err(|e| SetupError::Chdir(workdir.display().to_string(), e))?;
    let found = std::env::current_dir().map_err(SetupError::Getcwd)?;
    if found != workdir {
        return Err(SetupError::WorkdirMoved {
            expected: workdir.display().to_string(),
            found: found.display().to_string(),
        });
    }
    Ok(())
}

/// `mkdir`, an existing entry accepted (a mount point made by an earlier bind's parents).
fn mkdir(p: &Path, mode: libc::mode_t) -> Result<()> {
    let c = cstr(p);
    // SAFETY: a NUL-terminated path.
    match check(unsafe { libc::mkdir(c.as_ptr(), mode) }) {
        Err(e) if e.0 != libc::EEXIST => Err(SetupError::MountPointDir(p.display().to_string(), e)),
        _ => Ok(()),
    }
}

/// `mkdir -p` of an absolute path, each level 0755, following no symlink.
///
/// Why no symlink: the levels may be inside a directory bound from the host (a bundle's or an
/// image's root filesystem, whose content is untrusted), while the host's whole tree is still
/// reachable at `/.oldroot`. A planted `data -> /.oldroot/home/x` would make `mkdir` create
/// directories on the host and the bind land on a path the plan never named (the class of runc's
/// CVE-2021-30465). Nothing inside the sandbox runs yet, so nothing can swap a level between this
/// check and the mount.
fn mkdir_p(p: &Path) -> Result<()> {
    let mut cur = PathBuf::from("/");
    for c in p.components().skip(1) {
        cur.push(c);
        refuse_symlink(&cur)?;
        mkdir(&cur, 0o755)?;
    }
    Ok(())
}

/// An error if `p` itself is a symlink (a missing `p` is fine: the caller creates it).
fn refuse_symlink(p: &Path) -> Result<()> {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.file_type().is_symlink() => {
            Err(SetupError::MountPointSymlink(p.display().to_string()))
        }
        _ => Ok(()),
    }
}

/// The mount flags a bind must keep when remounted: in a user namespace the kernel locks the flags a
/// mount had when the namespace was created (nosuid, nodev, noexec, atime), so a remount that drops
/// one fails with EPERM.
fn locked_flags(p: &Path) -> libc::c_ulong {
    let c = cstr(p);
    // SAFETY: a zeroed statvfs is a valid out-parameter.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to a live statvfs.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } == -1 {
        // No flags known: a remount that must keep some fails with EPERM (a setup error), and the
        // read-only check below reads "not read-only", which fails the setup too.
        return 0;
    }
    let mut flags = 0;
    for (st_flag, ms_flag) in [
        (libc::ST_NOSUID, libc::MS_NOSUID),
        (libc::ST_NODEV, libc::MS_NODEV),
        (libc::ST_NOEXEC, libc::MS_NOEXEC),
        (libc::ST_NOATIME, libc::MS_NOATIME),
        (libc::ST_NODIRATIME, libc::MS_NODIRATIME),
        (ST_RELATIME, libc::MS_RELATIME),
        (libc::ST_RDONLY, libc::MS_RDONLY),
    ] {
        if st.f_flag & st_flag != 0 {
            flags |= ms_flag;
        }
    }
    flags
}

fn is_rdonly(p: &Path) -> bool {
    locked_flags(p) & libc::MS_RDONLY != 0
}

/// One bind from the host's tree (under `old`): the source not followed if it is a symlink, the
/// mount point created, then remounted nosuid,nodev (and read-only unless `rw`), the read-only flag
/// checked.
fn bind(old: &Path, b: &Bind) -> Result<()> {
    let src = old.join(b.host.strip_prefix("/").unwrap_or(&b.host));
    let shown = format!("{} -> {}", b.host.display(), b.guest.display());
    // Do not follow a symlink at the source: the runner resolved and validated the path, and a link
    // swapped in since must not redirect the bind (the kernel would follow it).
    let meta = match std::fs::symlink_metadata(&src) {
        Ok(m) => m,
        Err(e) if !b.required && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(SetupError::BindSource(
                shown,
                Errno(e.raw_os_error().unwrap_or(libc::ENOENT)),
            ))
        }
    };
    if meta.file_type().is_symlink() {
        return Err(SetupError::BindSourceSymlink(shown));
    }
    if let Some(parent) = b.guest.parent() {
        mkdir_p(parent)?;
    }
    // The mount point itself: `mkdir` of an existing symlink answers EEXIST, and the mount would
    // follow it.
    refuse_symlink(&b.guest)?;
    if meta.is_dir() {
        mkdir(&b.guest, 0o755)?;
    } else if std::fs::symlink_metadata(&b.guest).is_err() {
        // Only a missing one is created: an existing file (Docker's `/etc/hosts` in its init layer,
        // root's and not writable by the sandbox's uid) is the mount point as it is; opening it
        // for writing would fail with EACCES.
        create_file(&b.guest, 0o644)
            .map_err(|e| SetupError::MountPointFile(b.guest.display().to_string(), e))?;
    }
    mount(
        Some(&src),
        &b.guest,
        None,
        libc::MS_BIND | libc::MS_REC,
        None,
    )
    .map_err(|e| SetupError::Bind(shown.clone(), e))?;
    let mut flags = libc::MS_REMOUNT
        | libc::MS_BIND
        | libc::MS_NOSUID
        | libc::MS_NODEV
        | locked_flags(&b.guest);
    if !b.rw {
        flags |= libc::MS_RDONLY;
    }
    mount(None, &b.guest, None, flags, None).map_err(|errno| SetupError::Remount {
        bind: shown.clone(),
        rw: b.rw,
        errno,
    })?;
    if !b.rw && !is_rdonly(&b.guest) {
        return Err(SetupError::RemountRoCheck(shown));
    }
    Ok(())
}
