//! Finding and removing what a test's private daemons left: processes, mounts, cgroups. Shared by
//! `containerd.rs` and `dockerd.rs` (declare all three in `tests/common/mod.rs`). Plain std + libc.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A process: pid, parent pid and argv.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub argv: Vec<String>,
}

/// Every process now (those that exit while we read are skipped).
pub fn processes() -> Vec<Proc> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // The comm field is in parentheses and may hold spaces: the ppid is the 2nd field after ')'.
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let argv = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        out.push(Proc { pid, ppid, argv });
    }
    out.sort();
    out
}

/// The processes any of whose arguments contains `needle` (e.g. a daemon's socket path or temp dir).
pub fn processes_mentioning(needle: &str) -> Vec<Proc> {
    processes()
        .into_iter()
        .filter(|p| p.argv.iter().any(|a| a.contains(needle)))
        .collect()
}

/// `pid` and all its descendants, parents first.
pub fn tree(pid: i32) -> Vec<i32> {
    let all = processes();
    let mut out = vec![pid];
    let mut i = 0;
    while i < out.len() {
        let parent = out[i];
        out.extend(all.iter().filter(|p| p.ppid == parent).map(|p| p.pid));
        i += 1;
    }
    out
}

pub fn alive(pid: i32) -> bool {
    // A zombie still has /proc/PID; count it as gone (its parent reaps it).
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(
            stat.rsplit_once(')')
                .and_then(|(_, r)| r.split_whitespace().next()),
            Some("Z") | Some("X")
        ),
        Err(_) => false,
    }
}

pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid we found in /proc; at worst ESRCH, which we ignore.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Waits until none of `pids` is alive; true if they all went within `timeout`.
pub fn wait_gone(pids: &[i32], timeout: Duration) -> bool {
    let until = Instant::now() + timeout;
    loop {
        if pids.iter().all(|p| !alive(*p)) {
            return true;
        }
        if Instant::now() > until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// SIGKILLs the processes and waits for them (up to 5 s).
pub fn kill_all(pids: &[i32]) -> bool {
    for p in pids {
        signal(*p, libc::SIGKILL);
    }
    wait_gone(pids, Duration::from_secs(5))
}

/// Mount points at or under `dir`, deepest first (from /proc/self/mountinfo, octal escapes decoded).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| PathBuf::from(unescape(m)))
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 4 <= b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(u8::from_str_radix(&s[i + 1..i + 4], 8).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Lazily unmounts every mount under `dir` (deepest first, repeated for stacked mounts).
pub fn unmount_all_under(dir: &Path) {
    for _ in 0..8 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            return;
        }
        for m in mounts {
            let Ok(c) = CString::new(m.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: umount2 with a NUL-terminated path; failures are retried or left for the caller's check.
            unsafe {
                libc::umount2(c.as_ptr(), libc::MNT_DETACH);
            }
        }
    }
}

/// The cgroup hierarchies mounted under /sys/fs/cgroup (each v1 controller and the v2 one).
pub fn cgroup_roots() -> Vec<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut out: Vec<PathBuf> = info
        .lines()
        .filter(|l| l.contains(" - cgroup ") || l.contains(" - cgroup2 "))
        .filter_map(|l| l.split(' ').nth(4))
        .map(PathBuf::from)
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Every cgroup directory, in every hierarchy, whose path relative to its root starts with one of
/// `prefixes` (e.g. a containerd namespace `/hybox-123-0`), deepest first.
pub fn cgroups_under(prefixes: &[String]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in cgroup_roots() {
        for prefix in prefixes {
            let top = root.join(prefix.trim_start_matches('/'));
            if top.is_dir() {
                walk_dirs(&top, &mut out);
            }
        }
    }
    out.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    out.dedup();
    out
}

fn walk_dirs(dir: &Path, out: &mut Vec<PathBuf>) {
    out.push(dir.to_path_buf());
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                walk_dirs(&e.path(), out);
            }
        }
    }
}

/// Thaws frozen cgroups (v1 freezer, v2 cgroup.freeze): a frozen task takes no SIGKILL until then.
pub fn thaw(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::write(d.join("freezer.state"), "THAWED");
        let _ = std::fs::write(d.join("cgroup.freeze"), "0");
    }
}

/// Kills every process in the cgroups (thawing frozen ones first: a frozen task takes no SIGKILL) and
/// removes the cgroup directories, deepest first. Returns the directories it could not remove.
pub fn remove_cgroups(dirs: &[PathBuf]) -> Vec<PathBuf> {
    thaw(dirs);
    let mut pids = Vec::new();
    for d in dirs {
        if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
            pids.extend(procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
        }
    }
    kill_all(&pids);
    let mut left = Vec::new();
    for d in dirs {
        let until = Instant::now() + Duration::from_secs(2);
        while std::fs::remove_dir(d).is_err() && d.exists() {
            if Instant::now() > until {
                left.push(d.clone());
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    left
}

/// What a daemon may leave behind: its processes, mounts and cgroups.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Leftovers {
    pub processes: Vec<Proc>,
    pub mounts: Vec<PathBuf>,
    pub cgroups: Vec<PathBuf>,
}

impl Leftovers {
    pub fn is_empty(&self) -> bool {
        self.processes.is_empty() && self.mounts.is_empty() && self.cgroups.is_empty()
    }
}

/// The whole machine's container plumbing, for before/after checks: containerd, shims, dockerd,
/// runc processes; the mount count; every cgroup directory in all hierarchies. On a machine shared
/// with other work (other cgroups come and go) compare [`Census::diff`] by eye, and assert on a
/// daemon's own `leftovers()`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Census {
    pub daemons: usize,
    pub shims: usize,
    pub runtimes: usize,
    pub mounts: usize,
    pub cgroups: BTreeSet<PathBuf>,
}

impl Census {
    pub fn take() -> Census {
        let procs = processes();
        let base = |p: &Proc| {
            p.argv
                .first()
                .map(|a| a.rsplit('/').next().unwrap_or("").to_string())
                .unwrap_or_default()
        };
        let count = |f: &dyn Fn(&str) -> bool| procs.iter().filter(|p| f(&base(p))).count();
        let mut cgroups = Vec::new();
        for root in cgroup_roots() {
            walk_dirs(&root, &mut cgroups);
        }
        Census {
            daemons: count(&|b| b == "containerd" || b == "dockerd"),
            shims: count(&|b| b.starts_with("containerd-shim")),
            runtimes: count(&|b| {
                b == "runc" || b == "crun" || b == "hybox-runc" || b == "docker-proxy"
            }),
            mounts: std::fs::read_to_string("/proc/self/mountinfo")
                .unwrap_or_default()
                .lines()
                .count(),
            cgroups: cgroups.into_iter().collect(),
        }
    }

    /// What changed from `self` to `after`, one line per difference (empty when nothing did).
    pub fn diff(&self, after: &Census) -> Vec<String> {
        let mut d = Vec::new();
        let mut n = |what: &str, a: usize, b: usize| {
            if a != b {
                d.push(format!("{what}: {a} -> {b}"));
            }
        };
        n("daemons", self.daemons, after.daemons);
        n("shims", self.shims, after.shims);
        n("runtimes", self.runtimes, after.runtimes);
        n("mounts", self.mounts, after.mounts);
        for c in after.cgroups.difference(&self.cgroups) {
            d.push(format!("new cgroup {}", c.display()));
        }
        for c in self.cgroups.difference(&after.cgroups) {
            d.push(format!("gone cgroup {}", c.display()));
        }
        d
    }
}

/// Makes a daemon's Command keep only fds 0-2: a test runner's (or a CI harness's) stray inherited
/// fds would otherwise reach the daemon, its shims and every runtime call.
pub fn close_extra_fds(cmd: &mut Command) {
    // SAFETY: the hook runs in the child between fork and exec and only calls close_range(2), which is
    // async-signal-safe; fds 0-2 stay, and the exec that follows needs no other fd.
    unsafe {
        cmd.pre_exec(|| {
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32);
            Ok(())
        });
    }
}

/// A unique short name for a test's daemon: `PREFIX-PID-N`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Pids as a set, for before/after comparisons.
pub fn pid_set(procs: &[Proc]) -> BTreeSet<i32> {
    procs.iter().map(|p| p.pid).collect()
}

/// The socket containerd 1.6 gives a task's shim: /run/containerd/s/sha256(ADDRESS/NS/ID), whatever
/// containerd's state dir (a shim removes it when it exits cleanly, not when SIGKILLed).
pub fn shim_socket(address: &Path, namespace: &str, id: &str) -> PathBuf {
    use sha2::{Digest, Sha256};
    let key = format!("{}/{namespace}/{id}", address.display());
    let mut hex = String::new();
    for b in Sha256::digest(key.as_bytes()) {
        hex.push_str(&format!("{b:02x}"));
    }
    PathBuf::from("/run/containerd/s").join(hex)
}

/// The (address, namespace, id) of a containerd shim process, from its argv
/// (`containerd-shim-runc-v2 -namespace NS -id ID -address SOCK`).
pub fn shim_task(p: &Proc) -> Option<(PathBuf, String, String)> {
    if !p.argv.first()?.contains("containerd-shim") {
        return None;
    }
    let arg = |flag: &str| {
        let i = p.argv.iter().position(|a| a == flag)?;
        p.argv.get(i + 1).cloned()
    };
    Some((
        PathBuf::from(arg("-address")?),
        arg("-namespace")?,
        arg("-id")?,
    ))
}

/// The dirs containerd 1.6 and its shims create under /run whatever their configured roots
/// (shim sockets, ctr's default FIFO and runc dirs). [`RunDirs::note`] before starting a daemon;
/// [`RunDirs::cleanup`] after it stopped removes those that did not exist before, if empty.
#[derive(Clone, Debug)]
pub struct RunDirs {
    existed: Vec<(PathBuf, bool)>,
}

impl RunDirs {
    const DIRS: [&'static str; 4] = [
        "/run/containerd/s",
        "/run/containerd/fifo",
        "/run/containerd/runc",
        "/run/containerd",
    ];

    pub fn note() -> RunDirs {
        RunDirs {
            existed: Self::DIRS
                .iter()
                .map(|d| (PathBuf::from(d), Path::new(d).exists()))
                .collect(),
        }
    }

    pub fn cleanup(&self) {
        for (d, existed) in &self.existed {
            if !existed {
                // remove_dir fails on a non-empty dir: another daemon's sockets stay.
                let _ = std::fs::remove_dir(d);
            }
        }
    }
}
