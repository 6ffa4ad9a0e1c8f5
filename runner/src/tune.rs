//! `hybox doctor --fix favordynmods`: the one host tuning hybox offers, as an explicit opt-in.
//!
//! Moving a process into a cgroup (`cgroup.procs`) takes the kernel's `cgroup_threadgroup_rwsem`
//! for writing; without `favordynmods` that waits for an RCU grace period, which a lone run on
//! cgroup v1 pays on every join (10-20 ms on a quiet 2-core host; back to back the previous run's
//! grace period often still serves). The `favordynmods` mount option keeps the rwsem's readers on
//! their slow path instead, so a migration no longer waits, at a cost to every fork and exit of the
//! host. The rwsem is one for the whole kernel, so the option on any one cgroup root applies to all.
//!
//! How it is set, and why this way:
//! - On a host with a cgroup2 mount (pure v2, or hybrid with `unified`): that mount is remounted
//!   (`mount(2)` `MS_REMOUNT`) with its own super options plus `favordynmods`. The v2 root's flags
//!   are all set from the options given (`nsdelegate`, `memory_recursiveprot`...: one left out is
//!   cleared), and a remount also sets the per-mount flags (`nosuid`, `nodev`, `noexec`, atime), so
//!   both are carried over from `/proc/self/mountinfo` as they are.
//! - On pure cgroup v1 it refuses: the kernel refuses to change a v1 root's flags on remount
//!   (`cgroup1_reconfigure`: "option or name mismatch", EINVAL), so `favordynmods` can only be given
//!   when a v1 hierarchy is first mounted (at boot).
//! - On Linux >= 6.18 the option also switches `cgroup.procs` writes to a per-threadgroup rwsem,
//!   which the kernel will not switch back: removing the option again is refused in effect until
//!   reboot (the kernel logs "per threadgroup rwsem mechanism can't be disabled"), and the mount may
//!   then no longer show the option although the behaviour stays.

use std::path::PathBuf;

/// What `hybox doctor --fix favordynmods` prints before it changes anything, and in a dry run.
pub const FAVORDYNMODS_WARNING: &str = "favordynmods is host-wide: it changes how every process \
of this host forks and exits (their cgroup lock takes its slow path) so that moving a process into a \
cgroup no longer waits for an RCU grace period; on Linux >= 6.18 it cannot be undone until reboot \
(remounting without it leaves the per-threadgroup rwsem in place)";

/// Why the fix was not applied.
#[derive(Debug, thiserror::Error)]
pub enum FixError {
    #[error(
        "remounting a cgroup filesystem needs root (CAP_SYS_ADMIN); this process's euid is {euid}"
    )]
    NotRoot { euid: u32 },
    #[error("cannot read /proc/self/mountinfo")]
    Mountinfo(#[source] std::io::Error),
    #[error("no cgroup filesystem is mounted")]
    NoCgroup,
    #[error(
        "this host has only cgroup v1 hierarchies, and the kernel refuses to change a v1 \
         hierarchy's options on remount (EINVAL); favordynmods can only be given when one is \
         first mounted, i.e. at boot (the init system's cgroup mount options), or with a cgroup2 \
         mount, whose root shares the same lock: mount -t cgroup2 -o favordynmods none DIR"
    )]
    PureV1,
    #[error("mount(2) MS_REMOUNT of {} with options {data:?}", target.display())]
    Remount {
        target: PathBuf,
        data: String,
        #[source]
        source: std::io::Error,
    },
}

/// The remount that turns `favordynmods` on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remount {
    pub target: PathBuf,
    /// The mount's per-mount options, kept (`rw,nosuid,nodev,noexec,relatime`).
    pub mount_options: String,
    /// The filesystem's options before, and as they will be given (with `favordynmods`).
    pub before: String,
    pub after: String,
}

/// What the fix would do on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// A cgroup mount already has it: nothing to do.
    AlreadyOn {
        target: PathBuf,
    },
    Remount(Remount),
}

/// The plan from the text of `/proc/self/mountinfo`.
pub fn plan_favordynmods(mountinfo: &str) -> Result<Plan, FixError> {
    let mut cgroup2 = None;
    let mut any_cgroup = false;
    for line in mountinfo.lines() {
        // id parent major:minor root mount-point mount-options [optional...] - fstype source super-options
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let l: Vec<&str> = left.split(' ').collect();
        let r: Vec<&str> = right.split(' ').collect();
        if l.len() < 6 || r.len() < 3 || !(r[0] == "cgroup" || r[0] == "cgroup2") {
            continue;
        }
        any_cgroup = true;
        let target = PathBuf::from(unescape(l[4]));
        if r[2].split(',').any(|o| o == "favordynmods") {
            return Ok(Plan::AlreadyOn { target });
        }
        if r[0] == "cgroup2" && cgroup2.is_none() {
            cgroup2 = Some(Remount {
                target,
                mount_options: l[5].to_string(),
                before: r[2].to_string(),
                after: format!("{},favordynmods", r[2]),
            });
        }
    }
    match cgroup2 {
        Some(r) => Ok(Plan::Remount(r)),
        None if any_cgroup => Err(FixError::PureV1),
        None => Err(FixError::NoCgroup),
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The `mount(2)` flags of per-mount options (`ro`, `nosuid`, ..., the atime mode), so a remount
/// keeps them.
fn mount_flags(options: &str) -> libc::c_ulong {
    options
        .split(',')
        .map(|o| match o {
            "ro" => libc::MS_RDONLY,
            "nosuid" => libc::MS_NOSUID,
            "nodev" => libc::MS_NODEV,
            "noexec" => libc::MS_NOEXEC,
            "noatime" => libc::MS_NOATIME,
            "nodiratime" => libc::MS_NODIRATIME,
            "relatime" => libc::MS_RELATIME,
            "strictatime" => libc::MS_STRICTATIME,
            _ => 0,
        })
        .fold(0, |a, f| a | f)
}

/// The data string of the remount: the super options without `rw`/`ro` (the filesystem's read-only
/// state is a flag of its own; cgroup filesystems are read-write) plus `favordynmods`.
fn remount_data(after: &str) -> String {
    after
        .split(',')
        .filter(|o| *o != "rw" && *o != "ro" && !o.is_empty())
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks who we are and what this host has, without changing anything: the dry run, and the first
/// step of [`apply`].
pub fn plan(euid: u32) -> Result<Plan, FixError> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").map_err(FixError::Mountinfo)?;
    let plan = plan_favordynmods(&mountinfo)?;
    if euid != 0 && matches!(plan, Plan::Remount(_)) {
        return Err(FixError::NotRoot { euid });
    }
    Ok(plan)
}

/// Remounts as planned. Host-wide and, on Linux >= 6.18, irreversible until reboot
/// ([`FAVORDYNMODS_WARNING`]); only `hybox doctor --fix favordynmods` calls it.
pub fn apply(r: &Remount) -> Result<(), FixError> {
    use std::os::unix::ffi::OsStrExt;
    let data = remount_data(&r.after);
    let err = |source| FixError::Remount {
        target: r.target.clone(),
        data: data.clone(),
        source,
    };
    let target = std::ffi::CString::new(r.target.as_os_str().as_bytes())
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let cdata = std::ffi::CString::new(data.as_bytes())
        .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, e)))?;
    let flags = libc::MS_REMOUNT | mount_flags(&r.mount_options);
    // SAFETY: every pointer is a live NUL-terminated string (or null for the source and type, which
    // a remount ignores); the call changes the mount, not this process's memory.
    let rc = unsafe {
        libc::mount(
            std::ptr::null(),
            target.as_ptr(),
            std::ptr::null(),
            flags,
            cdata.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
40 31 0:37 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
";

    #[test]
    fn hybrid_remounts_the_unified_mount_keeping_its_options() {
        let Plan::Remount(r) = plan_favordynmods(HYBRID).unwrap() else {
            panic!("a remount")
        };
        assert_eq!(r.target, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!(r.before, "rw,nsdelegate");
        assert_eq!(r.after, "rw,nsdelegate,favordynmods");
        assert_eq!(remount_data(&r.after), "nsdelegate,favordynmods");
        assert_eq!(
            mount_flags(&r.mount_options),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC | libc::MS_RELATIME
        );
    }

    #[test]
    fn already_on_anywhere_is_nothing_to_do() {
        let on = HYBRID.replace("rw,cpu", "rw,cpu,favordynmods");
        assert_eq!(
            plan_favordynmods(&on).unwrap(),
            Plan::AlreadyOn {
                target: "/sys/fs/cgroup/cpu".into()
            }
        );
    }

    #[test]
    fn pure_v1_and_no_cgroup_are_refused() {
        let v1: String = HYBRID.lines().take(2).map(|l| format!("{l}\n")).collect();
        assert!(matches!(plan_favordynmods(&v1), Err(FixError::PureV1)));
        let none: String = HYBRID.lines().take(1).collect();
        assert!(matches!(plan_favordynmods(&none), Err(FixError::NoCgroup)));
    }

    #[test]
    fn not_root_is_refused_before_anything() {
        // On a host where there is something to do, a non-root caller is refused; where it is
        // already on (or impossible), the answer is the same for everyone.
        match plan(1000) {
            Err(FixError::NotRoot { euid: 1000 })
            | Ok(Plan::AlreadyOn { .. })
            | Err(FixError::PureV1)
            | Err(FixError::NoCgroup) => {}
            other => panic!("unexpected: {other:?}"),
        }
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
