//! Privileged tests of the cgroup envelope on this host's real hierarchy. Each test creates
//! its envelopes with unique run ids and tears them down (Drop guard) even when an assertion fails.
//!
//! Workloads are this test binary re-invoked as a helper (`helper_process` below, selected with
//! `HYBOX_ENVELOPE_HELPER`): it prints `READY`, waits for a line on stdin, then does its job; the test
//! moves it into the envelope in between, so everything it does is charged to the envelope.

#[path = "common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use hybox::backend::EnvelopeJoin;
use hybox::envelope::{self, Envelope, Limits};
use hybox::report::EnvelopeReport;

const ROOT: &str = "/sys/fs/cgroup";
const PARENT: &str = "hybox";

fn run_id(test: &str) -> String {
    format!("t-{test}-{}", hybox::sandbox::new_run_id())
}

fn limits(memory_mib: u64, cpus: f64, pids: u64) -> Limits {
    Limits {
        memory_bytes: memory_mib << 20,
        cpus,
        pids,
    }
}

/// A helper process started in `mode`, stopped at `READY` until [`Helper::go`].
struct Helper {
    child: Child,
    out: BufReader<ChildStdout>,
}

impl Helper {
    fn spawn(mode: &str, args: &[&str]) -> Helper {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "helper_process",
                "--nocapture",
                "--test-threads=1",
                "--quiet",
            ])
            .env("HYBOX_ENVELOPE_HELPER", mode)
            .env("HYBOX_ENVELOPE_HELPER_ARGS", args.join(" "))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut h = Helper { child, out };
        h.expect_line("READY");
        h
    }

    fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// The next line starting with `prefix` (other lines, e.g. libtest's, are skipped).
    fn expect_line(&mut self, prefix: &str) -> String {
        let mut line = String::new();
        loop {
            line.clear();
            let n = self.out.read_line(&mut line).unwrap();
            assert!(n > 0, "helper ended before printing {prefix}");
            if let Some(rest) = line.trim_end().strip_prefix(prefix) {
                return rest.trim().to_string();
            }
        }
    }

    fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The helper side: runs only when re-invoked with `HYBOX_ENVELOPE_HELPER`.
#[test]
fn helper_process() {
    let Ok(mode) = std::env::var("HYBOX_ENVELOPE_HELPER") else {
        return;
    };
    let args: Vec<String> = std::env::var("HYBOX_ENVELOPE_HELPER_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    println!("READY");
    std::io::stdout().flush().unwrap();
    if mode != "owner" && mode != "signal" {
        let mut line = String::new();
        std::io::stdin().read_line(&mut line).unwrap();
    }
    match mode.as_str() {
        // Touches N MiB, one write per page.
        "alloc" => {
            let mib: usize = args[0].parse().unwrap();
            let mut blocks = Vec::new();
            for _ in 0..mib {
                let mut b = vec![0u8; 1 << 20];
                for i in (0..b.len()).step_by(4096) {
                    b[i] = 1;
                }
                blocks.push(b);
            }
            println!("ALLOCATED {}", blocks.len());
        }
        // Forks N children that pause; counts the forks the kernel refused.
        "forks" => {
            let n: usize = args[0].parse().unwrap();
            let mut refused = 0;
            for _ in 0..n {
                // SAFETY: the child only calls async-signal-safe functions (pause, _exit).
                match unsafe { libc::fork() } {
                    0 => loop {
                        // SAFETY: pause has no preconditions.
                        unsafe { libc::pause() };
                    },
                    -1 => refused += 1,
                    _ => {}
                }
            }
            println!("REFUSED {refused}");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(600));
        }
        // Spins on one thread for N ms of wall time.
        "spin" => {
            let ms: u64 = args[0].parse().unwrap();
            let end = Instant::now() + Duration::from_millis(ms);
            let mut x = 0u64;
            while Instant::now() < end {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            println!("SPUN {x}");
        }
        // Creates an envelope, puts a `sleep` in it, reports, and waits to be killed (-9 or a signal).
        "owner" | "signal" => {
            if mode == "signal" {
                hybox::cli::signals::install_signal_teardown().unwrap();
            }
            let env =
                Envelope::create(Path::new(ROOT), PARENT, &args[0], &limits(64, 1.0, 16)).unwrap();
            // Never waited for on purpose: this process is killed with the sleeper still in the envelope.
            #[allow(clippy::zombie_processes)]
            let sleeper = Command::new("sleep").arg("600").spawn().unwrap();
            env.join(sleeper.id() as i32).unwrap();
            println!("SLEEPER {}", sleeper.id());
            for d in env.dirs() {
                println!("DIR {}", d.display());
            }
            println!("DONE");
            std::io::stdout().flush().unwrap();
            std::thread::sleep(Duration::from_secs(600));
            drop(env);
        }
        "unprivileged" => {
            let e = Envelope::create(Path::new(ROOT), PARENT, &args[0], &limits(64, 1.0, 16))
                .unwrap_err();
            println!("UNAVAILABLE {} {e}", e.is_unavailable());
        }
        other => panic!("unknown helper mode {other}"),
    }
}

/// Whether `pid` is gone or a zombie (dead, waiting to be reaped by someone else).
fn is_dead(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(s) => s
            .rsplit_once(')')
            .map(|(_, r)| r.trim_start().starts_with('Z'))
            .unwrap_or(false),
    }
}

fn wait_dead(pid: i32) -> bool {
    let end = Instant::now() + Duration::from_secs(5);
    while Instant::now() < end {
        if is_dead(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn leftovers(run_id: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    // v1 keeps one tree per controller; v2 one unified tree (the "" entry).
    for c in ["memory", "cpu", "cpuacct", "pids", "freezer", ""] {
        if let Ok(rd) = std::fs::read_dir(Path::new(ROOT).join(c).join(PARENT)) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{run_id}."))
                {
                    found.push(e.path());
                }
            }
        }
    }
    found
}

#[test]
fn a_parent_removed_between_runs_is_prepared_again() {
    if !common::privileged("a_parent_removed_between_runs_is_prepared_again") {
        return;
    }
    // A parent of its own, so no other test's envelope sits in it when it is removed.
    let parent = format!("hybox-test-reprepare-{}", std::process::id());
    let l = limits(32, 1.0, 16);
    let first = Envelope::create(Path::new(ROOT), &parent, &run_id("reprepare"), &l).unwrap();
    let parents: Vec<PathBuf> = first
        .dirs()
        .iter()
        .map(|d| d.parent().unwrap().to_path_buf())
        .collect();
    first.destroy().unwrap();
    // An admin removes the parent; this process has it cached as prepared.
    for p in &parents {
        std::fs::remove_dir(p).unwrap();
    }
    let second = Envelope::create(Path::new(ROOT), &parent, &run_id("reprepare"), &l).unwrap();
    for d in second.dirs() {
        assert!(d.join("cgroup.procs").exists(), "{}", d.display());
    }
    second.destroy().unwrap();
    for p in &parents {
        std::fs::remove_dir(p).unwrap();
    }
}

#[test]
fn real_layout_is_detected_and_described() {
    if !common::privileged("real_layout_is_detected_and_described") {
        return;
    }
    let layout = hybox::host::cgroup::detect(Path::new(ROOT)).unwrap();
    let d = layout.describe();
    eprintln!("{d}");
    assert!(layout.missing().is_empty(), "{d}");
    // This host is hybrid; on another host say which one and still require a usable layout.
    if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists()
        && Path::new("/sys/fs/cgroup/memory").exists()
    {
        assert_eq!(layout.version(), "v1 (hybrid)", "{d}");
        assert!(d.contains("memory at /sys/fs/cgroup/memory"), "{d}");
    }
}

#[test]
fn memory_hog_is_oom_killed_and_counted() {
    if !common::privileged("memory_hog_is_oom_killed_and_counted") {
        return;
    }
    let id = run_id("oom");
    let env = Envelope::create(Path::new(ROOT), PARENT, &id, &limits(32, 1.0, 64)).unwrap();
    let EnvelopeReport::Cgroup { memory_bytes, .. } = env.report() else {
        panic!()
    };
    assert_eq!(memory_bytes, 32 << 20);
    let mut h = Helper::spawn("alloc", &["256"]);
    env.join(h.pid()).unwrap();
    h.go();
    let status = h.child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
    let u = env.usage();
    assert!(u.oom_kills >= 1, "{u:?}");
    assert!(
        u.peak_memory_bytes > 16 << 20 && u.peak_memory_bytes <= 32 << 20,
        "{u:?}"
    );
    // The source names the hierarchy actually used: v1 (hybrid) here, v2 in the VM suite.
    let layout = hybox::host::cgroup::detect(Path::new(ROOT)).unwrap();
    assert!(u.source.starts_with("cgroup v"), "{u:?}");
    assert!(
        layout.describe().starts_with(&u.source),
        "{} vs {}",
        layout.describe(),
        u.source
    );
    env.destroy().unwrap();
    assert!(leftovers(&id).is_empty());
}

#[test]
fn memory_within_limit_is_not_an_oom() {
    if !common::privileged("memory_within_limit_is_not_an_oom") {
        return;
    }
    let id = run_id("mem-ok");
    let env = Envelope::create(Path::new(ROOT), PARENT, &id, &limits(64, 1.0, 64)).unwrap();
    let mut h = Helper::spawn("alloc", &["16"]);
    env.join(h.pid()).unwrap();
    h.go();
    assert_eq!(h.expect_line("ALLOCATED"), "16");
    assert!(h.child.wait().unwrap().success());
    let u = env.usage();
    assert_eq!(u.oom_kills, 0, "{u:?}");
    assert!(u.peak_memory_bytes >= 16 << 20, "{u:?}");
    env.destroy().unwrap();
}

#[test]
fn fork_loop_hits_the_pids_limit_and_teardown_kills_the_rest() {
    if !common::privileged("fork_loop_hits_the_pids_limit_and_teardown_kills_the_rest") {
        return;
    }
    let id = run_id("pids");
    let env = Envelope::create(Path::new(ROOT), PARENT, &id, &limits(64, 1.0, 16)).unwrap();
    let mut h = Helper::spawn("forks", &["64"]);
    env.join(h.pid()).unwrap();
    h.go();
    let refused: u64 = h.expect_line("REFUSED").parse().unwrap();
    assert!(refused > 0, "no fork was refused");
    let u = env.usage();
    assert!(u.pids_limit_hits > 0, "{u:?}");
    assert_eq!(u.pids_limit_hits, refused, "{u:?}");
    let dirs = env.dirs();
    env.destroy().unwrap();
    assert!(wait_dead(h.pid()));
    assert!(dirs.iter().all(|d| !d.exists()));
}

#[test]
fn cpu_spin_under_a_quarter_core_uses_about_a_quarter() {
    if !common::privileged("cpu_spin_under_a_quarter_core_uses_about_a_quarter") {
        return;
    }
    let id = run_id("cpu");
    let env = Envelope::create(Path::new(ROOT), PARENT, &id, &limits(64, 0.25, 64)).unwrap();
    let EnvelopeReport::Cgroup {
        cpu_quota_us,
        cpu_period_us,
        ..
    } = env.report()
    else {
        panic!()
    };
    assert_eq!((cpu_quota_us, cpu_period_us), (Some(25_000), 100_000));
    let mut h = Helper::spawn("spin", &["1000"]);
    env.join(h.pid()).unwrap();
    let start = Instant::now();
    h.go();
    h.expect_line("SPUN");
    assert!(h.child.wait().unwrap().success());
    let wall = start.elapsed().as_secs_f64();
    let u = env.usage();
    let cpu = (u.cpu_user_us + u.cpu_system_us) as f64 / 1e6;
    let share = cpu / wall;
    eprintln!("cpu {cpu:.3}s over {wall:.3}s wall = {share:.2} of a core ({u:?})");
    assert!(
        (0.1..0.45).contains(&share),
        "share {share:.2} of a core, {u:?}"
    );
    env.destroy().unwrap();
}

#[test]
fn fifty_concurrent_envelopes_do_not_clash() {
    if !common::privileged("fifty_concurrent_envelopes_do_not_clash") {
        return;
    }
    let prefix = run_id("many");
    let barrier = Arc::new(Barrier::new(50));
    let threads: Vec<_> = (0..50)
        .map(|i| {
            let (barrier, id) = (barrier.clone(), format!("{prefix}-{i}"));
            std::thread::spawn(move || {
                barrier.wait();
                let env =
                    Envelope::create(Path::new(ROOT), PARENT, &id, &limits(16 + i, 0.5, 8 + i))
                        .unwrap();
                let EnvelopeReport::Cgroup {
                    memory_bytes,
                    pids_max,
                    path,
                    ..
                } = env.report()
                else {
                    panic!()
                };
                assert_eq!((memory_bytes, pids_max), ((16 + i) << 20, 8 + i));
                assert!(path.starts_with(&format!("/hybox/{id}.owner-")), "{path}");
                let dirs = env.dirs();
                barrier.wait(); // all 50 exist at once
                env.destroy().unwrap();
                dirs
            })
        })
        .collect();
    for t in threads {
        for d in t.join().unwrap() {
            assert!(!d.exists(), "{}", d.display());
        }
    }
    assert!(leftovers(&prefix).is_empty(), "{:?}", leftovers(&prefix));
}

#[test]
fn drop_tears_down_on_panic() {
    if !common::privileged("drop_tears_down_on_panic") {
        return;
    }
    let id = run_id("panic");
    let id2 = id.clone();
    let r = std::thread::spawn(move || {
        let env = Envelope::create(Path::new(ROOT), PARENT, &id2, &limits(32, 1.0, 8)).unwrap();
        // Reaped by the test with waitpid after the panic.
        #[allow(clippy::zombie_processes)]
        let sleeper = Command::new("sleep").arg("600").spawn().unwrap();
        env.join(sleeper.id() as i32).unwrap();
        panic!("run failed with sleeper {}", sleeper.id());
    })
    .join();
    let msg = *r.unwrap_err().downcast::<String>().unwrap();
    let pid: i32 = msg.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(wait_dead(pid), "sleeper {pid} survived the drop");
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
    // Reap the zombie (it is our child).
    // SAFETY: waitpid on our own child with a null status pointer.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
}

#[test]
fn gc_cleans_up_after_a_killed_owner() {
    if !common::privileged("gc_cleans_up_after_a_killed_owner") {
        return;
    }
    let id = run_id("gc");
    let mut owner = Helper::spawn("owner", &[&id]);
    let sleeper: i32 = owner.expect_line("SLEEPER").parse().unwrap();
    let mut dirs = Vec::new();
    loop {
        let mut line = String::new();
        owner.out.read_line(&mut line).unwrap();
        match line.trim_end().split_once(' ') {
            Some(("DIR", d)) => dirs.push(PathBuf::from(d)),
            _ if line.starts_with("DONE") => break,
            _ => {}
        }
    }
    assert!(!dirs.is_empty());
    owner.child.kill().unwrap(); // SIGKILL: no teardown runs
    owner.child.wait().unwrap();
    assert!(
        !is_dead(sleeper),
        "the sleeper outlives a SIGKILLed owner until gc"
    );
    assert!(dirs.iter().all(|d| d.exists()));
    let report = envelope::gc(Path::new(ROOT), PARENT).unwrap();
    // Another test's Envelope::create may have run the same gc pass first; either way it is gone.
    let ours = |n: &String| n.starts_with(&format!("{id}.owner-"));
    assert!(
        report.removed.iter().any(ours) || dirs.iter().all(|d| !d.exists()),
        "{report:?}"
    );
    assert!(!report.errors.iter().any(|e| ours(&e.leaf)), "{report:?}");
    assert!(wait_dead(sleeper), "gc left the sleeper {sleeper} alive");
    assert!(dirs.iter().all(|d| !d.exists()), "{dirs:?}");
    assert!(leftovers(&id).is_empty());
}

#[test]
fn sigterm_tears_down_live_envelopes_and_exits_143() {
    if !common::privileged("sigterm_tears_down_live_envelopes_and_exits_143") {
        return;
    }
    let id = run_id("sig");
    let mut owner = Helper::spawn("signal", &[&id]);
    let sleeper: i32 = owner.expect_line("SLEEPER").parse().unwrap();
    owner.expect_line("DONE");
    assert!(!leftovers(&id).is_empty());
    // SAFETY: kill(2) to our own child.
    unsafe { libc::kill(owner.pid(), libc::SIGTERM) };
    let status = owner.child.wait().unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{status:?}");
    assert!(wait_dead(sleeper));
    assert!(leftovers(&id).is_empty(), "{:?}", leftovers(&id));
}

/// `backend::process::spawn_into` (the wasm worker's start on cgroup v2) creates the child inside
/// the cgroup v2 directory it is given (`clone3(CLONE_INTO_CGROUP)`): its first view of
/// `/proc/self/cgroup` is already that directory, no migration. A hybrid host's `unified` mount is
/// a v2 hierarchy too, so this runs on every host kind. A failed exec comes back as an error.
#[test]
fn spawn_into_creates_the_child_inside_the_cgroup() {
    if !common::privileged("spawn_into_creates_the_child_inside_the_cgroup") {
        return;
    }
    use std::io::Read;
    use std::os::fd::{AsFd, AsRawFd};
    let Some(base) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(std::path::Path::new)
        .find(|b| b.join("cgroup.controllers").exists())
    else {
        panic!("no cgroup v2 hierarchy mounted");
    };
    let name = format!("hybox-spawn-into-test-{}", std::process::id());
    let dir = base.join(&name);
    std::fs::create_dir(&dir).expect("create a v2 cgroup");
    let cgroup = std::fs::File::open(&dir).expect("open it");
    let cat = std::fs::File::open("/bin/cat").expect("open cat");
    let (mut out_r, out_w) = std::io::pipe().expect("pipe");
    let w = out_w.as_raw_fd();
    let prepare = move || {
        // SAFETY: dup2 between fds of this process.
        if unsafe { libc::dup2(w, 1) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    let program = hybox::backend::process::Program {
        program: cat.as_fd(),
        name: std::path::Path::new("/bin/cat"),
        args: &["/proc/self/cgroup"],
        namespaces: 0,
        null_stdin_stdout: false,
    };
    // SAFETY: `prepare` makes only raw syscalls and allocates nothing.
    let child = unsafe { hybox::backend::process::spawn_into(&program, &prepare, cgroup.as_fd()) };
    let mut child = child
        .expect("clone3")
        .expect("CLONE_INTO_CGROUP (Linux 5.7+)");
    drop(out_w);
    let mut seen = String::new();
    out_r.read_to_string(&mut seen).unwrap();
    assert!(child.wait().unwrap().success());
    let _ = std::fs::remove_dir(&dir);
    assert!(seen.contains(&format!("0::/{name}\n")), "{seen}");

    // A file that cannot be executed: the exec's errno, not a started process.
    std::fs::create_dir(&dir).unwrap();
    let cgroup = std::fs::File::open(&dir).unwrap();
    let not_exe = std::fs::File::open("/etc/hostname").unwrap();
    let program = hybox::backend::process::Program {
        program: not_exe.as_fd(),
        name: std::path::Path::new("/etc/hostname"),
        args: &[],
        namespaces: 0,
        null_stdin_stdout: true,
    };
    // SAFETY: a `prepare` that does nothing.
    let r = unsafe { hybox::backend::process::spawn_into(&program, &|| Ok(()), cgroup.as_fd()) };
    let _ = std::fs::remove_dir(&dir);
    let e = r.expect_err("executing /etc/hostname fails");
    assert!(
        matches!(e.raw_os_error(), Some(libc::EACCES) | Some(libc::ENOEXEC)),
        "{e}"
    );
}
