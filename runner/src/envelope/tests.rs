//! Unit tests of the envelope against fake v1, hybrid and v2 trees (see `fake.rs`).

use std::path::Path;
use std::sync::Arc;

use super::create::bases;
use super::fake::{v1_tree, v2_tree, FakeFs};
use super::EnvelopeJoin;
use super::*;
use crate::host::cgroup::{detect, Layout};

const LIMITS: Limits = Limits {
    memory_bytes: 64 << 20,
    cpus: 0.5,
    pids: 32,
};

fn me() -> Owner {
    Owner::current().unwrap()
}

fn create(fs: &Arc<FakeFs>, run: &str, limits: &Limits) -> Result<Envelope, EnvelopeError> {
    let dynfs: Arc<dyn CgroupFs> = fs.clone();
    Envelope::create_with(dynfs, &fs.root.clone(), "hybox", run, limits, me())
}

#[test]
fn detects_v1_hybrid_and_v2_trees() {
    let t = tempfile::tempdir().unwrap();
    let v1 = t.path().join("v1");
    v1_tree(&v1, false);
    let l = detect(&v1).unwrap();
    let Layout::V1 { controllers, .. } = &l else {
        panic!("{l:?}")
    };
    assert_eq!(
        controllers.memory.as_deref(),
        Some(v1.join("memory").as_path())
    );
    assert_eq!(
        controllers.cpu, controllers.cpuacct,
        "co-mounted cpu,cpuacct share one directory"
    );
    assert_eq!(
        controllers.cpu.as_deref(),
        Some(v1.join("cpu,cpuacct").as_path())
    );
    assert!(controllers.freezer.is_some());
    assert_eq!(l.version(), "v1");
    assert!(l.missing().is_empty());

    let hy = t.path().join("hybrid");
    v1_tree(&hy, true);
    let l = detect(&hy).unwrap();
    assert!(matches!(l, Layout::Hybrid { .. }), "{l:?}");
    assert_eq!(l.version(), "v1 (hybrid)");
    let d = l.describe();
    assert!(
        d.contains("using the v1 controllers") && d.contains("is not used"),
        "{d}"
    );

    let v2 = t.path().join("v2");
    v2_tree(&v2);
    let l = detect(&v2).unwrap();
    assert_eq!(
        l,
        Layout::V2 {
            root: v2.clone(),
            controllers: vec!["cpuset", "cpu", "io", "memory", "pids"]
                .into_iter()
                .map(String::from)
                .collect()
        }
    );
    assert!(l.describe().starts_with("cgroup v2"), "{}", l.describe());
}

#[test]
fn missing_root_or_controller_is_unavailable() {
    let t = tempfile::tempdir().unwrap();
    let e = detect(&t.path().join("nope")).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    let e = detect(t.path()).unwrap_err();
    assert!(e.is_unavailable(), "{e}");

    // A v1 tree without pids.
    let root = t.path().join("v1");
    let fs = Arc::new(v1_tree(&root, false));
    std::fs::remove_dir_all(root.join("pids")).unwrap();
    let e = create(&fs, "r1", &LIMITS).unwrap_err();
    assert!(e.is_unavailable(), "{e}");
    assert!(e.to_string().contains("missing controller(s) pids"), "{e}");

    // A read-only parent is unavailable too.
    let e = EnvelopeError::io(
        "mkdir",
        Path::new("/x"),
        io::Error::from_raw_os_error(libc::EACCES),
    );
    assert!(e.is_unavailable());
    let e = EnvelopeError::Mismatch {
        path: "/x".into(),
        wrote: "1".into(),
        read: "2".into(),
    };
    assert!(!e.is_unavailable());
}

#[test]
fn v1_create_writes_every_limit_and_reads_it_back() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(t.path(), true));
    let odd = Limits {
        memory_bytes: (64 << 20) + 100,
        ..LIMITS
    };
    let env = create(&fs, "run-1", &odd).unwrap();
    let leaf = me().leaf_name("run-1");
    let w = fs.written();
    let expect = [
        (
            format!("memory/hybox/{leaf}/memory.limit_in_bytes"),
            "67108964",
        ),
        (
            format!("memory/hybox/{leaf}/memory.memsw.limit_in_bytes"),
            "67108964",
        ),
        (
            format!("cpu,cpuacct/hybox/{leaf}/cpu.cfs_period_us"),
            "100000",
        ),
        (
            format!("cpu,cpuacct/hybox/{leaf}/cpu.cfs_quota_us"),
            "50000",
        ),
        (format!("pids/hybox/{leaf}/pids.max"), "32"),
    ];
    assert_eq!(
        w,
        expect
            .iter()
            .map(|(a, b)| (a.clone(), b.to_string()))
            .collect::<Vec<_>>()
    );
    // Page rounding by the "kernel" is accepted and reported as read back.
    assert_eq!(
        env.report(),
        EnvelopeReport::Cgroup {
            version: "v1 (hybrid)".into(),
            path: format!("/hybox/{leaf}"),
            memory_bytes: 64 << 20,
            cpu_quota_us: Some(50_000),
            cpu_period_us: 100_000,
            pids_max: 32,
            io: Vec::new(),
        }
    );
    assert_eq!(
        env.dirs().len(),
        3,
        "memory, cpu,cpuacct, pids (no freezer: the kill seals through pids.max): {:?}",
        env.dirs()
    );
    let procs: Vec<String> = env.procs_files().iter().map(|p| fs.rel(p)).collect();
    assert_eq!(procs[0], format!("memory/hybox/{leaf}/cgroup.procs"));
    env.join(12345).unwrap();
    assert_eq!(
        fs.written()
            .iter()
            .filter(|(p, v)| p.ends_with("cgroup.procs") && v == "12345")
            .count(),
        3
    );
    assert!(
        !t.path().join("freezer/hybox").exists(),
        "no freezer cgroup"
    );
    env.destroy().unwrap();
    for c in ["memory", "cpu,cpuacct", "pids"] {
        assert!(
            !t.path().join(c).join("hybox").join(&leaf).exists(),
            "{c} leaf removed"
        );
        assert!(t.path().join(c).join("hybox").exists(), "{c} parent kept");
    }
}

/// A process already in a hierarchy's cgroup (a child of hybox-runc's monitor, born inside) is
/// not moved again there: on v1 that write would wait for an RCU grace period for nothing.
#[test]
fn join_skips_hierarchies_that_already_list_the_pid() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(t.path(), true));
    let env = create(&fs, "run-born-inside", &LIMITS).unwrap();
    // The fake lists only live processes, as the kernel does: this test's own pid is one.
    let me_pid = std::process::id().to_string();
    let files = env.procs_files();
    // The caller is inside (as hybox-runc's monitor is): only then does join look first.
    env.enter().unwrap();
    let before = fs.written().len();
    std::fs::write(&files[0], format!("1\n{me_pid}\n")).unwrap();
    for f in &files[1..] {
        std::fs::write(f, "").unwrap();
    }
    env.join(std::process::id() as i32).unwrap();
    let moved: Vec<String> = fs
        .written()
        .into_iter()
        .skip(before)
        .filter(|(p, v)| p.ends_with("cgroup.procs") && *v == me_pid)
        .map(|(p, _)| p)
        .collect();
    let expect: Vec<String> = files[1..].iter().map(|p| fs.rel(p)).collect();
    assert_eq!(moved, expect, "written only where the pid was not listed");
    // The teardown refuses an envelope with the runner inside; the fake's files do not move it.
    std::fs::write(&files[0], "").unwrap();
    env.destroy().unwrap();
}

#[test]
fn v1_without_memsw_sets_swappiness_zero() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(t.path(), false));
    // Emulate swapaccount=0: the leaf has no memsw file (remove it as soon as the dir is made).
    let env = {
        let probe = t.path().join("memory/memory.memsw.limit_in_bytes");
        std::fs::remove_file(probe).unwrap();
        struct NoMemsw(Arc<FakeFs>);
        impl std::fmt::Debug for NoMemsw {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&*self.0, f)
            }
        }
        impl CgroupFs for NoMemsw {
            fn mkdir(&self, p: &Path) -> io::Result<()> {
                self.0.mkdir(p)?;
                let _ = std::fs::remove_file(p.join("memory.memsw.limit_in_bytes"));
                Ok(())
            }
            fn write(&self, p: &Path, v: &str) -> io::Result<()> {
                self.0.write(p, v)
            }
            fn read(&self, p: &Path) -> io::Result<String> {
                self.0.read(p)
            }
            fn rmdir(&self, p: &Path) -> io::Result<()> {
                self.0.rmdir(p)
            }
            fn list_dirs(&self, p: &Path) -> io::Result<Vec<String>> {
                self.0.list_dirs(p)
            }
        }
        Envelope::create_with(
            Arc::new(NoMemsw(fs.clone())),
            t.path(),
            "hybox",
            "r",
            &LIMITS,
            me(),
        )
        .unwrap()
    };
    assert!(fs
        .written()
        .iter()
        .any(|(p, v)| p.ends_with("memory.swappiness") && v == "0"));
    assert!(!fs
        .written()
        .iter()
        .any(|(p, _)| p.ends_with("memsw.limit_in_bytes")));
    env.destroy().unwrap();
}

#[test]
fn read_back_mismatch_is_an_error_naming_file_and_values_and_cleans_up() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(t.path(), false));
    // A "kernel" that rounds memory limits to 1 MiB instead of a page.
    fs.rule("memory.limit_in_bytes", |v| {
        (v.parse::<u64>().unwrap() >> 20 << 20).to_string()
    });
    let e = create(
        &fs,
        "r2",
        &Limits {
            memory_bytes: (64 << 20) + 8192,
            ..LIMITS
        },
    )
    .unwrap_err();
    let EnvelopeError::Mismatch { path, wrote, read } = &e else {
        panic!("{e}")
    };
    assert!(path.ends_with("memory.limit_in_bytes"));
    assert_eq!((wrote.as_str(), read.as_str()), ("67117056", "67108864"));
    assert!(
        e.to_string()
            .contains("wrote \"67117056\" but read back \"67108864\""),
        "{e}"
    );
    // The failed envelope was torn down by Drop.
    assert_eq!(
        fs.list_dirs(&t.path().join("memory/hybox")).unwrap(),
        Vec::<String>::new()
    );

    // A quota the kernel silently clamps.
    let fs = Arc::new(v1_tree(&t.path().join("b"), false));
    fs.rule("cpu.cfs_quota_us", |_| "-1".into());
    let e = create(&fs, "r3", &LIMITS).unwrap_err();
    assert!(
        e.to_string()
            .contains("cpu.cfs_quota_us: wrote \"50000\" but read back \"-1\""),
        "{e}"
    );
}

#[test]
fn v2_create_delegates_controllers_and_writes_limits() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v2_tree(t.path()));
    let env = create(
        &fs,
        "r",
        &Limits {
            memory_bytes: 32 << 20,
            cpus: 0.25,
            pids: 8,
        },
    )
    .unwrap();
    let leaf = me().leaf_name("r");
    let w = fs.written();
    let l = |f: &str| format!("hybox/{leaf}/{f}");
    let expect = vec![
        (
            "cgroup.subtree_control".to_string(),
            "+memory +cpu +pids".to_string(),
        ),
        (
            "hybox/cgroup.subtree_control".into(),
            "+memory +cpu +pids".into(),
        ),
        (l("memory.max"), (32u64 << 20).to_string()),
        (l("memory.swap.max"), "0".into()),
        (l("memory.oom.group"), "1".into()),
        (l("cpu.max"), "25000 100000".into()),
        (l("pids.max"), "8".into()),
    ];
    assert_eq!(w, expect);
    let EnvelopeReport::Cgroup {
        version,
        cpu_quota_us,
        ..
    } = env.report()
    else {
        panic!()
    };
    assert_eq!((version.as_str(), cpu_quota_us), ("v2", Some(25_000)));
    assert_eq!(
        env.procs_files(),
        vec![t.path().join(format!("hybox/{leaf}/cgroup.procs"))]
    );
    // A second envelope does not rewrite subtree_control (already enabled).
    let env2 = create(&fs, "r-two", &LIMITS).unwrap();
    assert_eq!(
        fs.written()
            .iter()
            .filter(|(p, _)| p.ends_with("subtree_control"))
            .count(),
        2
    );
    // Empty envelope: nothing to kill, so no cgroup.kill write.
    env.kill_all().unwrap();
    assert!(!fs.written().iter().any(|(p, _)| p == &l("cgroup.kill")));
    // With a task inside, cgroup.kill is used (the fake empties cgroup.procs on it, as the kernel
    // does once the tasks are gone; the child is then killed here).
    let mut child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    std::fs::write(
        t.path().join(l("cgroup.procs")),
        format!("{}\n", child.id()),
    )
    .unwrap();
    env.kill_all().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(fs
        .written()
        .iter()
        .any(|(p, v)| p == &l("cgroup.kill") && v == "1"));
    env.destroy().unwrap();
    drop(env2);
    assert_eq!(
        std::fs::read_dir(t.path().join("hybox"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count(),
        0
    );
}

#[test]
fn v2_parent_with_processes_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v2_tree(t.path()));
    fs.mkdir(&t.path().join("hybox")).unwrap();
    // A live pid (the fake, like the kernel, lists only live tasks): the init process.
    std::fs::write(t.path().join("hybox/cgroup.procs"), "1\n").unwrap();
    let e = create(&fs, "r", &LIMITS).unwrap_err();
    assert!(matches!(e, EnvelopeError::InternalProcess { .. }), "{e}");
    assert!(e.to_string().contains("no-internal-process"), "{e}");
}

#[test]
fn usage_is_parsed_from_v1_and_v2_files() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(&t.path().join("a"), false));
    let env = create(&fs, "u", &LIMITS).unwrap();
    let d = &env.inner.dirs;
    std::fs::write(d.memory.join("memory.max_usage_in_bytes"), "33554432\n").unwrap();
    std::fs::write(
        d.memory.join("memory.oom_control"),
        "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
    )
    .unwrap();
    std::fs::write(d.cpuacct.join("cpuacct.usage_user"), "1500000\n").unwrap();
    std::fs::write(d.cpuacct.join("cpuacct.usage_sys"), "250000\n").unwrap();
    std::fs::write(d.cpuacct.join("cpuacct.usage"), "1750000\n").unwrap();
    std::fs::write(d.pids.join("pids.events"), "max 7\n").unwrap();
    let u = env.try_usage().unwrap();
    assert_eq!(
        u,
        Usage {
            cpu_user_us: 1500,
            cpu_system_us: 250,
            peak_memory_bytes: 32 << 20,
            oom_kills: 2,
            pids_limit_hits: 7,
            source: "cgroup v1".into()
        }
    );
    // Older kernels: cpuacct.stat in USER_HZ ticks.
    std::fs::remove_file(d.cpuacct.join("cpuacct.usage_user")).unwrap();
    std::fs::write(d.cpuacct.join("cpuacct.stat"), "user 150\nsystem 3\n").unwrap();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    std::fs::write(
        d.cpuacct.join("cpuacct.usage"),
        format!("{}\n", 153 * 1_000_000_000 / hz),
    )
    .unwrap();
    let u = env.try_usage().unwrap();
    assert_eq!(
        (u.cpu_user_us, u.cpu_system_us),
        (150 * 1_000_000 / hz, 3 * 1_000_000 / hz)
    );
    // A garbled file is named, not silently zero.
    std::fs::write(d.pids.join("pids.events"), "garbage").unwrap();
    let e = env.try_usage().unwrap_err();
    assert!(e.to_string().contains("pids.events"), "{e}");
    assert!(
        env.usage().source.contains("unreadable") && env.usage().source.contains("pids.events")
    );
    drop(env);

    let fs = Arc::new(v2_tree(&t.path().join("b")));
    let env = create(&fs, "u", &LIMITS).unwrap();
    let leaf = &env.inner.dirs.memory;
    std::fs::write(leaf.join("memory.peak"), "1048576\n").unwrap();
    std::fs::write(
        leaf.join("memory.events"),
        "low 0\nhigh 0\nmax 9\noom 1\noom_kill 1\noom_group_kill 1\n",
    )
    .unwrap();
    std::fs::write(
        leaf.join("cpu.stat"),
        "usage_usec 3000\nuser_usec 2000\nsystem_usec 1000\nnr_periods 4\n",
    )
    .unwrap();
    std::fs::write(leaf.join("pids.events"), "max 3\n").unwrap();
    assert_eq!(
        env.try_usage().unwrap(),
        Usage {
            cpu_user_us: 2000,
            cpu_system_us: 1000,
            peak_memory_bytes: 1 << 20,
            oom_kills: 1,
            pids_limit_hits: 3,
            source: "cgroup v2".into()
        }
    );
}

#[test]
fn gc_removes_dead_owners_only() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(t.path(), true));
    let dynfs: Arc<dyn CgroupFs> = fs.clone();
    let mine = me();
    let dead = Owner {
        start_time: mine.start_time + 1,
        ..mine
    };
    // A live envelope, a dead one (created as if by a crashed hybox), and a foreign cgroup.
    let live = create(&fs, "alive", &LIMITS).unwrap();
    let stale =
        Envelope::create_with(dynfs.clone(), t.path(), "hybox", "stale", &LIMITS, dead).unwrap();
    let stale_dirs = stale.dirs();
    std::mem::forget(stale); // a crashed owner never tears down
    fs.mkdir(&t.path().join("memory/hybox/not-ours")).unwrap();
    // A half-created stale leaf (crash between two mkdirs): only in pids.
    fs.mkdir(&t.path().join("pids/hybox").join(dead.leaf_name("half")))
        .unwrap();

    let r = super::gc::gc_with(
        &dynfs,
        Version::V1 { hybrid: true },
        &bases(&detect(t.path()).unwrap()).unwrap().1,
        "hybox",
    )
    .unwrap();
    assert_eq!(r.examined, 3);
    assert_eq!(r.live, 1);
    assert_eq!(
        r.removed,
        vec![dead.leaf_name("half"), dead.leaf_name("stale")]
    );
    assert!(r.errors.is_empty(), "{:?}", r.errors);
    for d in stale_dirs {
        assert!(!d.exists(), "{}", d.display());
    }
    assert!(t.path().join("memory/hybox/not-ours").exists());
    assert!(live.dirs().iter().all(|d| d.exists()));

    // create() runs the same pass.
    let stale =
        Envelope::create_with(dynfs.clone(), t.path(), "hybox", "stale2", &LIMITS, dead).unwrap();
    let stale_dirs = stale.dirs();
    std::mem::forget(stale);
    let again = create(&fs, "next", &LIMITS).unwrap();
    assert!(stale_dirs.iter().all(|d| !d.exists()));
    again.destroy().unwrap();
    live.destroy().unwrap();
}

#[test]
fn leaf_is_never_shared_and_bad_names_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(t.path(), false));
    let a = create(&fs, "same", &LIMITS).unwrap();
    let e = create(&fs, "same", &LIMITS).unwrap_err();
    assert!(matches!(e, EnvelopeError::Exists { .. }), "{e}");
    // The failed second create did not remove the first one's cgroup.
    assert!(a.dirs().iter().all(|d| d.exists()));
    a.destroy().unwrap();
    for bad in ["", "../x", "a/b", ".hidden", "x y", "a\nb"] {
        assert!(
            matches!(
                create(&fs, bad, &LIMITS),
                Err(EnvelopeError::Invalid { .. })
            ),
            "{bad:?}"
        );
    }
    let dynfs: Arc<dyn CgroupFs> = fs.clone();
    for bad in ["/abs", "a/../b", "a//b", "./a"] {
        let r = Envelope::create_with(dynfs.clone(), t.path(), bad, "r", &LIMITS, me());
        assert!(matches!(r, Err(EnvelopeError::Invalid { .. })), "{bad:?}");
    }
}

#[test]
fn cpu_quota_respects_the_kernel_minimum() {
    assert_eq!(cpu_quota(1.0), (100_000, 100_000));
    assert_eq!(cpu_quota(0.25), (25_000, 100_000));
    assert_eq!(cpu_quota(2.5), (250_000, 100_000));
    assert_eq!(cpu_quota(0.01), (1_000, 100_000));
    assert_eq!(cpu_quota(0.005), (5_000, 1_000_000));
    assert_eq!(cpu_quota(0.001), (1_000, 1_000_000));
}

#[test]
fn limits_come_from_the_policy_resources() {
    let p = crate::policy::Policy::from_json_str(
        r#"{"version": 1, "resources": {"memory": "32M", "cpus": 0.25, "pids": 16}}"#,
        "t.json",
    )
    .unwrap();
    let l = Limits::from(&p.resources);
    assert_eq!(
        l,
        Limits {
            memory_bytes: 32 << 20,
            cpus: 0.25,
            pids: 16
        }
    );
}

#[test]
fn destroy_removes_child_cgroups_first() {
    for tree in ["v1", "v2"] {
        let t = tempfile::tempdir().unwrap();
        let fs = Arc::new(if tree == "v1" {
            v1_tree(t.path(), false)
        } else {
            v2_tree(t.path())
        });
        let env = create(&fs, "r", &LIMITS).unwrap();
        // A workload that created its own sub-cgroup (possible with a delegated cgroupfs): the
        // fake, like cgroupfs, refuses rmdir of a cgroup with children (EBUSY).
        let dirs = env.dirs();
        for d in &dirs {
            fs.mkdir(&d.join("child")).unwrap();
        }
        env.destroy().unwrap();
        for d in &dirs {
            assert!(!d.exists(), "{tree}: {} left behind", d.display());
        }
    }
}

#[test]
fn v1_kill_seals_with_pids_max_zero_then_kills_every_task() {
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(t.path(), false));
    let env = create(&fs, "r", &LIMITS).unwrap();
    let mut child = task_in_every_leaf(&env);
    env.kill_all().unwrap();
    // Sealed before any signal: pids.max = 0 is the first write of the kill.
    assert!(sealed(&fs, "r"), "{:?}", fs.written());
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    env.destroy().unwrap();
}

#[test]
fn destroying_an_empty_envelope_is_rmdir_alone_and_a_busy_one_is_killed_first() {
    use std::os::unix::process::ExitStatusExt;
    let t = tempfile::tempdir().unwrap();
    let fs = Arc::new(v1_tree(t.path(), false));
    // Empty: removed without sealing or signalling anything.
    let env = create(&fs, "empty", &LIMITS).unwrap();
    let dirs = env.dirs();
    env.destroy().unwrap();
    assert!(dirs.iter().all(|d| !d.exists()));
    assert!(!sealed(&fs, "empty"), "an empty envelope needs no seal");
    // A live task inside: the first rmdir is refused (EBUSY), so the task is killed, then removed.
    let env = create(&fs, "busy", &LIMITS).unwrap();
    let mut child = task_in_every_leaf(&env);
    let dirs = env.dirs();
    env.destroy().unwrap();
    assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGKILL));
    assert!(dirs.iter().all(|d| !d.exists()));
}

/// A real task of ours (a child), listed in every controller of `env` as the kernel would after a
/// join.
fn task_in_every_leaf(env: &Envelope) -> std::process::Child {
    let child = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    for d in env.dirs() {
        std::fs::write(d.join("cgroup.procs"), format!("{}\n", child.id())).unwrap();
    }
    child
}

/// Whether the kill sealed the envelope of run `run_id` (`pids.max = 0` written).
fn sealed(fs: &FakeFs, run_id: &str) -> bool {
    let leaf = me().leaf_name(run_id);
    fs.written()
        .iter()
        .any(|(p, v)| p == &format!("pids/hybox/{leaf}/pids.max") && v == "0")
}
