//! A fake cgroup filesystem in a tempdir for the unit tests: `mkdir` populates the control files the
//! kernel would create (per v1 controller, or v2), writes go through kernel-like rules (memory limits
//! rounded down to a page, subtree_control `+ctl` accumulates, cgroup.kill/freezer accepted), and
//! `rmdir` removes the directory with its files. Processes cannot be in a fake tree.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::fsio::{CgroupFs, RealFs};

type Rule = Box<dyn Fn(&str) -> String + Send + Sync>;

pub(crate) struct FakeFs {
    pub root: PathBuf,
    pub v2: bool,
    /// Every write, in order: (path relative to root, value).
    pub writes: Mutex<Vec<(String, String)>>,
    /// Per-file-name overrides of what the "kernel" stores for a written value.
    pub rules: Mutex<HashMap<&'static str, Rule>>,
}

impl std::fmt::Debug for FakeFs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FakeFs({})", self.root.display())
    }
}

const UNLIMITED_V1: &str = "9223372036854771712";

fn v1_files(controller: &str) -> Vec<(&'static str, &'static str)> {
    let mut f = vec![("cgroup.procs", ""), ("tasks", "")];
    match controller {
        "memory" => f.extend([
            ("memory.limit_in_bytes", UNLIMITED_V1),
            ("memory.memsw.limit_in_bytes", UNLIMITED_V1),
            ("memory.max_usage_in_bytes", "0"),
            (
                "memory.oom_control",
                "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
            ),
            ("memory.swappiness", "60"),
        ]),
        "cpu" => f.extend([("cpu.cfs_period_us", "100000"), ("cpu.cfs_quota_us", "-1")]),
        "cpuacct" => f.extend([
            ("cpuacct.usage", "0"),
            ("cpuacct.usage_user", "0"),
            ("cpuacct.usage_sys", "0"),
            ("cpuacct.stat", "user 0\nsystem 0\n"),
        ]),
        "pids" => f.extend([("pids.max", "max"), ("pids.events", "max 0\n")]),
        "freezer" => f.extend([("freezer.state", "THAWED")]),
        "blkio" => f.extend([
            ("blkio.throttle.read_bps_device", ""),
            ("blkio.throttle.write_bps_device", ""),
            ("blkio.throttle.read_iops_device", ""),
            ("blkio.throttle.write_iops_device", ""),
        ]),
        _ => {}
    }
    f
}

const V2_FILES: [(&str, &str); 14] = [
    ("cgroup.procs", ""),
    ("cgroup.controllers", "cpu memory pids"),
    ("cgroup.subtree_control", ""),
    ("cgroup.kill", ""),
    ("cgroup.events", "populated 0\nfrozen 0\n"),
    ("memory.max", "max"),
    ("memory.swap.max", "max"),
    ("memory.oom.group", "0"),
    ("memory.peak", "0"),
    (
        "memory.events",
        "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
    ),
    ("cpu.max", "max 100000"),
    ("cpu.stat", "usage_usec 0\nuser_usec 0\nsystem_usec 0\n"),
    ("pids.max", "max"),
    ("pids.events", "max 0\n"),
];

fn put(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, content) in files {
        std::fs::write(dir.join(name), content).unwrap();
    }
}

/// A v1 tree: memory, cpu,cpuacct (co-mounted, with cpu and cpuacct symlinks), pids, freezer.
pub(crate) fn v1_tree(root: &Path, hybrid: bool) -> FakeFs {
    put(&root.join("memory"), &v1_files("memory"));
    let mut cc = v1_files("cpu");
    cc.extend(v1_files("cpuacct"));
    put(&root.join("cpu,cpuacct"), &cc);
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpu")).unwrap();
    std::os::unix::fs::symlink("cpu,cpuacct", root.join("cpuacct")).unwrap();
    put(&root.join("pids"), &[("cgroup.procs", "")]);
    put(&root.join("freezer"), &[("cgroup.procs", "")]);
    if hybrid {
        put(
            &root.join("unified"),
            &[("cgroup.controllers", ""), ("cgroup.procs", "")],
        );
    }
    FakeFs::new(root, false)
}

/// A v2 tree whose root offers cpu, memory and pids.
pub(crate) fn v2_tree(root: &Path) -> FakeFs {
    put(
        root,
        &[
            ("cgroup.controllers", "cpuset cpu io memory pids"),
            ("cgroup.subtree_control", ""),
            ("cgroup.procs", "1\n"),
        ],
    );
    FakeFs::new(root, true)
}

impl FakeFs {
    fn new(root: &Path, v2: bool) -> FakeFs {
        FakeFs {
            root: root.to_path_buf(),
            v2,
            writes: Mutex::default(),
            rules: Mutex::default(),
        }
    }

    pub fn rule(&self, file: &'static str, f: impl Fn(&str) -> String + Send + Sync + 'static) {
        self.rules.lock().unwrap().insert(file, Box::new(f));
    }

    pub fn rel(&self, p: &Path) -> String {
        p.strip_prefix(&self.root)
            .unwrap_or(p)
            .display()
            .to_string()
    }

    pub fn written(&self) -> Vec<(String, String)> {
        self.writes.lock().unwrap().clone()
    }
}

impl CgroupFs for FakeFs {
    fn mkdir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)?;
        let files: Vec<(&str, &str)> = if self.v2 {
            V2_FILES.to_vec()
        } else {
            // The controller is the first component under the root (resolving the co-mount symlinks).
            let first = path
                .strip_prefix(&self.root)
                .ok()
                .and_then(|r| r.components().next());
            let name = first
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .unwrap_or_default();
            name.split(',').flat_map(v1_files).collect()
        };
        for (n, c) in files {
            std::fs::write(path.join(n), c)?;
        }
        Ok(())
    }

    fn write(&self, path: &Path, value: &str) -> io::Result<()> {
        if !path.is_file() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        self.writes
            .lock()
            .unwrap()
            .push((self.rel(path), value.to_string()));
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let rules = self.rules.lock().unwrap();
        let stored = if let Some(rule) = rules.get(name.as_str()) {
            rule(value)
        } else {
            match name.as_str() {
                "memory.limit_in_bytes" | "memory.memsw.limit_in_bytes" | "memory.max" => {
                    let n: u64 = value
                        .trim()
                        .parse()
                        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
                    (n / 4096 * 4096).to_string()
                }
                "cgroup.subtree_control" => {
                    let mut have: Vec<String> = std::fs::read_to_string(path)?
                        .split_whitespace()
                        .map(String::from)
                        .collect();
                    for w in value.split_whitespace() {
                        let c = w.trim_start_matches('+').to_string();
                        if !have.contains(&c) {
                            have.push(c);
                        }
                    }
                    have.join(" ")
                }
                "cgroup.kill" => {
                    // The kernel kills every task; they leave cgroup.procs.
                    return std::fs::write(path.with_file_name("cgroup.procs"), "");
                }
                "cgroup.procs" | "cgroup.freeze" => return Ok(()),
                _ => value.to_string(),
            }
        };
        std::fs::write(path, stored)
    }

    fn read(&self, path: &Path) -> io::Result<String> {
        let text = std::fs::read_to_string(path)?;
        if path.file_name().is_some_and(|n| n == "cgroup.procs") {
            // Like the kernel: a task that exited (dead or zombie) is no longer listed.
            let alive = |pid: &str| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .ok()
                    .and_then(|st| {
                        st.rsplit_once(')')
                            .map(|(_, rest)| rest.trim_start().to_string())
                    })
                    .is_some_and(|rest| !rest.starts_with('Z') && !rest.starts_with('X'))
            };
            return Ok(text
                .lines()
                .filter(|l| alive(l.trim()))
                .map(|l| format!("{l}\n"))
                .collect());
        }
        Ok(text)
    }

    fn rmdir(&self, path: &Path) -> io::Result<()> {
        if !path.exists() {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        // Like cgroupfs: a cgroup with child cgroups or with tasks is busy.
        let tasks = self.read(&path.join("cgroup.procs")).unwrap_or_default();
        if !RealFs.list_dirs(path)?.is_empty() || !tasks.trim().is_empty() {
            return Err(io::Error::from_raw_os_error(libc::EBUSY));
        }
        std::fs::remove_dir_all(path)
    }

    fn list_dirs(&self, path: &Path) -> io::Result<Vec<String>> {
        RealFs.list_dirs(path)
    }
}
