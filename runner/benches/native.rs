//! Cold start of the native backend: the static `hello` guest under full isolation (the run's cgroup
//! envelope; user, mount, pid, net, ipc, uts namespaces, pivot_root, Landlock, seccomp) and the same
//! without the envelope, vs a bare spawn of the same binary and vs `bwrap --unshare-all --ro-bind / /
//! hello`, alone and inside the same kind of envelope, in the same run. A plain timing harness
//! (`harness = false`): medians of N runs, interleaved so drift hits every variant alike.
//!
//! Needs root and `examples/build.sh` run: `cargo bench -p hybox --bench native` (N from
//! HYBOX_BENCH_N, default 200; HYBOX_SHIM=FILE runs that shim instead of the embedded one).
//! Back to back by default; HYBOX_BENCH_PAUSE_MS=200 pauses before every timed run (isolated runs,
//! as a user makes them: on cgroup v1 without favordynmods a lone join waits for an RCU grace
//! period that back to back hides).

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use hybox::backend::{native, EnvelopeJoin, Launch};
use hybox::envelope::{Envelope, Limits};
use hybox::policy::Policy;
use hybox::report::Outcome;
use hybox::workload::Artifact;
use hybox::{Backend, HostConfig, Stdio};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The pause before each timed run (HYBOX_BENCH_PAUSE_MS; none by default).
fn pause() {
    static PAUSE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    let p = PAUSE.get_or_init(|| {
        let ms: u64 = std::env::var("HYBOX_BENCH_PAUSE_MS").ok()?.parse().ok()?;
        (ms > 0).then(|| Duration::from_millis(ms))
    });
    if let Some(p) = p {
        std::thread::sleep(*p);
    }
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf();
    let hello = repo.join("examples/out/native/hello");
    // The shim embedded in hybox (static), unless HYBOX_SHIM names a shim file to compare.
    let shim: Option<PathBuf> = std::env::var_os("HYBOX_SHIM").map(PathBuf::from);
    // SAFETY: geteuid cannot fail.
    if !hello.exists() || unsafe { libc::geteuid() } != 0 {
        eprintln!("native bench skipped: needs root and {}", hello.display());
        return;
    }
    let n: usize = std::env::var("HYBOX_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let policy = Policy::from_json_str(r#"{"version": 1}"#, "bench.json").expect("policy");
    let artifact = Artifact::detect(&hello).expect("detect hello");
    let host = HostConfig {
        shim_path: shim.clone(),
        ..Default::default()
    };
    let stdio = Stdio::Capture { stdin: Vec::new() };
    let have_bwrap = Command::new("bwrap")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);

    let limits = Limits::from(&policy.resources);
    let (mut full, mut sandboxed, mut bare, mut bwrap, mut bwrap_env) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // The public API end to end (`Sandbox::run`: envelope, sandbox, report), with the teardown on
    // the caller's path (the CLI's and the default) and detached (`RunOptions::detach_teardown`,
    // what `hybox serve` uses: the result is complete, the kernel is still dismantling the
    // namespaces and the envelope is removed by a background thread, waited for outside the timing).
    let sandbox = hybox::Sandbox::new(
        hybox::workload::Workload::detect(&hello).expect("detect hello"),
        policy.clone(),
        None,
    )
    .expect("sandbox");
    let (mut api, mut api_detached, mut api_detached_total) = (Vec::new(), Vec::new(), Vec::new());
    // A call into a pre-built sandbox (`Sandbox::prebuild` outside the timing, `run_prebuilt` timed:
    // the warm pool's call), the machine otherwise idle.
    let mut pooled = Vec::new();
    // Envelope create, sandbox run in it, envelope destroy.
    let mut parts: [Vec<Duration>; 3] = Default::default();
    for i in 0..n {
        // Full isolation: the run's envelope (created, joined, destroyed) + the sandbox.
        pause();
        let t = Instant::now();
        let t_create = Instant::now();
        let env = Envelope::create(
            Path::new("/sys/fs/cgroup"),
            "hybox",
            &format!("bench-native-{}-{i}", std::process::id()),
            &limits,
        )
        .expect("envelope");
        parts[0].push(t_create.elapsed());
        let t_run = Instant::now();
        let r = hybox::backend::run(
            Backend::Native,
            &launch(&policy, &artifact, &stdio, &host),
            Some(&env),
        )
        .expect("native run");
        assert_eq!(r.outcome, Outcome::Exited { code: 0 });
        parts[1].push(t_run.elapsed());
        let t_destroy = Instant::now();
        env.destroy().expect("destroy envelope");
        parts[2].push(t_destroy.elapsed());
        full.push(t.elapsed());

        // The sandbox alone (namespaces, mounts, Landlock, seccomp; no cgroup).
        pause();
        let t = Instant::now();
        let r = hybox::backend::run(
            Backend::Native,
            &launch(&policy, &artifact, &stdio, &host),
            None,
        )
        .expect("native run");
        assert_eq!(r.outcome, Outcome::Exited { code: 0 });
        sandboxed.push(t.elapsed());

        for detach in [false, true] {
            let opts = hybox::RunOptions {
                stdio: Stdio::Capture { stdin: Vec::new() },
                host: host.clone(),
                detach_teardown: detach,
                ..Default::default()
            };
            pause();
            let t = Instant::now();
            let r = sandbox.run(&opts).expect("Sandbox::run");
            let result_at = t.elapsed();
            assert_eq!(r.report.outcome, Outcome::Exited { code: 0 });
            if detach {
                api_detached.push(result_at);
                assert!(hybox::sandbox::wait_for_teardowns(Duration::from_secs(10)));
                api_detached_total.push(t.elapsed());
            } else {
                api.push(result_at);
            }
        }

        // Returns once the sandbox is ready (its workload's process waits for the call).
        let p = sandbox.prebuild(&host).expect("prebuild");
        pause();
        let t = Instant::now();
        let r = sandbox.run_prebuilt(p, Vec::new()).expect("run_prebuilt");
        pooled.push(t.elapsed());
        assert_eq!(r.report.outcome, Outcome::Exited { code: 0 });
        assert!(hybox::sandbox::wait_for_teardowns(Duration::from_secs(10)));

        pause();

        let t = Instant::now();
        let o = Command::new(&hello)
            .stdout(PStdio::piped())
            .output()
            .expect("bare hello");
        assert!(o.status.success());
        bare.push(t.elapsed());

        if have_bwrap {
            pause();
            let t = Instant::now();
            let o = Command::new("bwrap")
                .args(["--unshare-all", "--ro-bind", "/", "/"])
                .arg(&hello)
                .stdout(PStdio::piped())
                .output()
                .expect("bwrap hello");
            assert!(o.status.success());
            bwrap.push(t.elapsed());

            // bwrap in the same kind of envelope (created, entered before bwrap runs, destroyed):
            // the like-for-like baseline for "hybox native + envelope".
            pause();
            let t = Instant::now();
            let env = Envelope::create(
                Path::new("/sys/fs/cgroup"),
                "hybox",
                &format!("bench-bwrap-{}-{i}", std::process::id()),
                &limits,
            )
            .expect("envelope");
            let procs: Vec<CString> = env
                .procs_files()
                .iter()
                .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap())
                .collect();
            let mut cmd = Command::new("bwrap");
            cmd.args(["--unshare-all", "--ro-bind", "/", "/"])
                .arg(&hello)
                .stdout(PStdio::piped());
            // SAFETY: between fork and exec only open/write/close on prepared C strings: "0" written
            // to cgroup.procs moves the writing process itself; nothing is allocated.
            unsafe {
                cmd.pre_exec(move || {
                    for p in &procs {
                        let fd = libc::open(p.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                        libc::close(fd);
                    }
                    Ok(())
                });
            }
            let o = cmd.output().expect("bwrap hello in an envelope");
            assert!(o.status.success());
            env.destroy().expect("destroy envelope");
            bwrap_env.push(t.elapsed());
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (f, s, b) = (median(&mut full), median(&mut sandboxed), median(&mut bare));
    let w = have_bwrap.then(|| median(&mut bwrap));
    let vs_bwrap = |x: Duration| {
        w.map(|w| format!("; /bwrap {:.2}", ms(x) / ms(w)))
            .unwrap_or_default()
    };
    println!(
        "native cold start, static hello, n={n} (shim {})",
        shim.as_ref().map_or_else(
            || format!("embedded, {}", native::shim::SHIM_TARGET),
            |p| p.display().to_string()
        )
    );
    println!("  bare spawn                 median {:8.3} ms", ms(b));
    println!(
        "  hybox native + envelope    median {:8.3} ms  ({:.1}x bare{})",
        ms(f),
        ms(f) / ms(b),
        vs_bwrap(f)
    );
    println!(
        "    of which: envelope create {:.3} ms, run {:.3} ms, destroy {:.3} ms (medians)",
        ms(median(&mut parts[0])),
        ms(median(&mut parts[1])),
        ms(median(&mut parts[2]))
    );
    let (a, ad, adt) = (
        median(&mut api),
        median(&mut api_detached),
        median(&mut api_detached_total),
    );
    println!(
        "  Sandbox::run (envelope+sandbox+report) median {:8.3} ms  ({:.1}x bare{})",
        ms(a),
        ms(a) / ms(b),
        vs_bwrap(a)
    );
    println!(
        "  Sandbox::run, teardown detached: result median {:8.3} ms  ({:.1}x bare{}); all torn down {:.3} ms",
        ms(ad),
        ms(ad) / ms(b),
        vs_bwrap(ad),
        ms(adt)
    );
    let pc = median(&mut pooled);
    println!(
        "  call into a pre-built sandbox (warm pool) median {:8.3} ms  ({:.1}x bare)",
        ms(pc),
        ms(pc) / ms(b)
    );
    println!(
        "  hybox native, no envelope  median {:8.3} ms  ({:.1}x bare{})",
        ms(s),
        ms(s) / ms(b),
        vs_bwrap(s)
    );
    if let Some(w) = w {
        println!(
            "  bwrap --unshare-all        median {:8.3} ms  ({:.1}x bare)",
            ms(w),
            ms(w) / ms(b)
        );
        let we = median(&mut bwrap_env);
        println!(
            "  bwrap in an envelope       median {:8.3} ms  ({:.1}x bare; hybox native + envelope / this {:.2})",
            ms(we),
            ms(we) / ms(b),
            ms(f) / ms(we)
        );
    }
}

fn launch<'a>(
    policy: &'a Policy,
    artifact: &'a Artifact,
    stdio: &'a Stdio,
    host: &'a HostConfig,
) -> Launch<'a> {
    Launch {
        run_id: "bench",
        policy,
        artifact,
        args: &[],
        env: Default::default(),
        stdio,
        deadline: Instant::now() + Duration::from_secs(10),
        host,
        joins: &[],
        pass_fds: &[],
    }
}
