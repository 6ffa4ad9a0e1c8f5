//! Leak accounting: many runs on both backends at concurrency 8, through the library and through
//! the CLI with SIGKILLs of `hybox` mid-run, then `hybox gc`. Nothing of hybox's may be left: no
//! cgroup, no process, no mount, no scratch directory, no memfd and no open fd, each kind counted
//! before and after. Bounded for CI (a few hundred runs, well under a minute);
//! `scripts/soak N` runs the same with N runs per kind for a release.

#[path = "common/mod.rs"]
mod common;

use common::procs;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hybox::envelope::owner::parse_leaf_name;
use hybox::{HostConfig, Outcome, Policy, RunOptions, Sandbox, Workload};

/// Runs per kind: `HYBOX_SOAK_RUNS` (scripts/soak), else what CI runs.
fn runs() -> usize {
    std::env::var("HYBOX_SOAK_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(96)
}

const CONCURRENCY: usize = 8;

/// This process's open fds: (all, memfds).
fn own_fds() -> (usize, usize) {
    let mut all = 0;
    let mut memfd = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        all += 1;
        if std::fs::read_link(e.path())
            .map(|t| t.to_string_lossy().starts_with("/memfd:"))
            .unwrap_or(false)
        {
            memfd += 1;
        }
    }
    (all, memfd)
}

/// Live children of this process.
fn own_children() -> Vec<i32> {
    let me = std::process::id() as i32;
    procs::processes()
        .into_iter()
        .filter(|p| p.ppid == me)
        .map(|p| p.pid)
        .collect()
}

/// hybox's mounts in this (the host's) mount namespace: a sandbox's mounts live in its own.
fn hybox_mounts() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter(|l| l.contains("hybox"))
        .map(str::to_string)
        .collect()
}

/// Envelopes (leaf cgroups) under `parent` in every hierarchy whose owner is one of `owners`
/// (`None`: any owner).
fn envelopes(parent: &str, owners: Option<&HashSet<i32>>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for root in procs::cgroup_roots() {
        let Ok(entries) = std::fs::read_dir(root.join(parent)) else {
            continue;
        };
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((_, owner)) = parse_leaf_name(&name) else {
                continue;
            };
            if owners.is_none_or(|o| o.contains(&owner.pid)) {
                out.push(e.path());
            }
        }
    }
    out
}

/// Scratch directories whose owner is one of `owners`.
fn scratch_of(owners: &HashSet<i32>) -> Vec<PathBuf> {
    [PathBuf::from("/dev/shm"), std::env::temp_dir()]
        .iter()
        .filter_map(|b| std::fs::read_dir(b).ok())
        .flatten()
        .flatten()
        .filter(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.starts_with("hybox-")
                && parse_leaf_name(&name).is_some_and(|(_, o)| owners.contains(&o.pid))
        })
        .map(|e| e.path())
        .collect()
}

/// Processes of the hybox under test: its binary (the CLI, its wasm workers), or anything in an
/// envelope owned by one of `owners` (a native shim runs from a memfd; its workload from anywhere).
fn hybox_processes(bin: &Path, owners: &HashSet<i32>) -> Vec<i32> {
    procs::processes()
        .into_iter()
        .filter(|p| {
            let exe = std::fs::read_link(format!("/proc/{}/exe", p.pid)).unwrap_or_default();
            let cgroup =
                std::fs::read_to_string(format!("/proc/{}/cgroup", p.pid)).unwrap_or_default();
            exe == bin
                || cgroup.lines().any(|l| {
                    l.rsplit('/')
                        .next()
                        .and_then(parse_leaf_name)
                        .is_some_and(|(_, o)| owners.contains(&o.pid))
                })
        })
        .map(|p| p.pid)
        .collect()
}

/// The two tests count processes of the same binary: one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn policy() -> Policy {
    Policy::from_file(&common::repo().join("policies/benchmark.json")).unwrap()
}

#[test]
fn library_runs_on_both_backends_leave_nothing() {
    if !common::privileged("library_runs_on_both_backends_leave_nothing") {
        return;
    }
    let _serial = serial();
    let parent = format!("hybox-soak-{}", std::process::id());
    let host = HostConfig {
        cgroup_parent: parent.clone(),
        hybox_path: Some(PathBuf::from(env!("CARGO_BIN_EXE_hybox"))),
        ..Default::default()
    };
    let sandboxes: Vec<Sandbox> = ["native/hello", "wasm/hello.wasm"]
        .iter()
        .map(|g| {
            let w = Workload::detect(&common::examples_out().join(g)).unwrap();
            Sandbox::new(w, policy(), None).unwrap()
        })
        .collect();
    // One run of each first: lazily initialised process-wide state (the embedded shim's memfd, the
    // wasm engine) is not a leak.
    for s in &sandboxes {
        let r = s.run(&RunOptions {
            host: host.clone(),
            ..Default::default()
        });
        assert_eq!(r.unwrap().report.outcome, Outcome::Exited { code: 0 });
    }
    let me: HashSet<i32> = [std::process::id() as i32].into();
    let (fds0, memfds0) = own_fds();
    let mounts0 = hybox_mounts();
    let t0 = Instant::now();
    let n = runs();
    std::thread::scope(|scope| {
        for t in 0..CONCURRENCY {
            let (sandboxes, host) = (&sandboxes, &host);
            scope.spawn(move || {
                for i in (t..n).step_by(CONCURRENCY) {
                    let s = &sandboxes[i % 2];
                    let r = s
                        .run(&RunOptions {
                            host: host.clone(),
                            detach_teardown: i % 4 == 1,
                            ..Default::default()
                        })
                        .unwrap();
                    assert_eq!(r.report.outcome, Outcome::Exited { code: 0 }, "run {i}");
                }
            });
        }
    });
    assert!(hybox::sandbox::wait_for_teardowns(Duration::from_secs(20)));
    eprintln!("{n} library runs in {:?}", t0.elapsed());
    let (fds1, memfds1) = own_fds();
    assert_eq!((fds1, memfds1), (fds0, memfds0), "open fds (all, memfd)");
    assert_eq!(own_children(), Vec::<i32>::new(), "children left");
    assert_eq!(
        envelopes(&parent, None),
        Vec::<PathBuf>::new(),
        "envelopes left"
    );
    assert_eq!(scratch_of(&me), Vec::<PathBuf>::new(), "scratch dirs left");
    assert_eq!(hybox_mounts(), mounts0, "host mounts");
    for root in procs::cgroup_roots() {
        let _ = std::fs::remove_dir(root.join(&parent));
    }
}

#[test]
fn killed_cli_runs_are_cleaned_by_gc() {
    if !common::privileged("killed_cli_runs_are_cleaned_by_gc") {
        return;
    }
    let _serial = serial();
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_hybox"));
    let out = common::examples_out();
    let guests = [out.join("wasm/probe.wasm"), out.join("native/probe")];
    let mounts0 = hybox_mounts();
    let before: HashSet<i32> = hybox_processes(&bin, &HashSet::new()).into_iter().collect();
    let mut spawned = HashSet::new();
    let n = runs();
    let t0 = Instant::now();
    for round in 0..n.div_ceil(CONCURRENCY) {
        let mut children: Vec<_> = (0..CONCURRENCY)
            .map(|i| {
                let g = &guests[(round + i) % 2];
                // Half sleep (killed mid-run), half are killed while they start.
                let c = common::hybox()
                    .args([
                        "run",
                        "--policy",
                        "policies/benchmark.json",
                        "--timeout",
                        "30s",
                    ])
                    .arg(g)
                    .args(["--", "attack", "sleep"])
                    .current_dir(common::repo())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                spawned.insert(c.id() as i32);
                c
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5 + (round as u64 * 37) % 150));
        for c in &mut children {
            c.kill().unwrap(); // SIGKILL: no teardown of its own
        }
        for c in &mut children {
            c.wait().unwrap();
        }
    }
    // Each new hybox sweeps what dead owners left, so what is left now is the last rounds': the
    // kill must have left something for gc to remove, or this test tests nothing.
    let left_by_kills = envelopes("hybox", Some(&spawned)).len() + scratch_of(&spawned).len();
    assert!(
        left_by_kills > 0,
        "the SIGKILLs left nothing: were the runs started?"
    );
    let o = common::hybox().arg("gc").output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    eprintln!(
        "{n} killed CLI runs and gc in {:?}:\n{}",
        t0.elapsed(),
        String::from_utf8_lossy(&o.stdout)
    );
    // gc killed every envelope's processes; give the kernel a moment to reap the orphans.
    let deadline = Instant::now() + Duration::from_secs(10);
    let left = loop {
        let left: Vec<i32> = hybox_processes(&bin, &spawned)
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            break left;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(left, Vec::<i32>::new(), "hybox processes left");
    assert_eq!(
        envelopes("hybox", Some(&spawned)),
        Vec::<PathBuf>::new(),
        "envelopes left"
    );
    assert_eq!(
        scratch_of(&spawned),
        Vec::<PathBuf>::new(),
        "scratch dirs left"
    );
    assert_eq!(hybox_mounts(), mounts0, "host mounts");
}
