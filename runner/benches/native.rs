//! Cold start of the native backend: the static `hello` guest under full isolation (user, mount, pid,
//! net, ipc, uts, cgroup namespaces, pivot_root, Landlock, seccomp) vs a bare spawn of the same binary
//! vs `bwrap --unshare-all --ro-bind / / hello`, in the same run. A plain timing harness (`harness =
//! false`): medians of N runs, interleaved so drift hits all three alike.
//!
//! Needs root, `examples/build.sh` run, and the shim built (`cargo build -p hybox-shim`):
//! `cargo bench -p hybox --bench native` (N from HYBOX_BENCH_N, default 200).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use hybox::backend::{native, Launch};
use hybox::policy::Policy;
use hybox::report::Outcome;
use hybox::workload::Artifact;
use hybox::{HostConfig, Stdio};

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repo root")
        .to_path_buf();
    let hello = repo.join("examples/out/native/hello");
    let shim: PathBuf = std::env::var_os("HYBOX_SHIM")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let release = repo.join("target/release/hybox-shim");
            if release.exists() {
                release
            } else {
                repo.join("target/debug/hybox-shim")
            }
        });
    // SAFETY: geteuid cannot fail.
    if !hello.exists() || !shim.exists() || unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "native bench skipped: needs root, {} and {}",
            hello.display(),
            shim.display()
        );
        return;
    }
    let n: usize = std::env::var("HYBOX_BENCH_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let policy = Policy::from_json_str(r#"{"version": 1}"#, "bench.json").expect("policy");
    let artifact = Artifact::detect(&hello).expect("detect hello");
    let host = HostConfig {
        shim_path: Some(shim.clone()),
        ..Default::default()
    };
    let stdio = Stdio::Capture { stdin: Vec::new() };
    let have_bwrap = Command::new("bwrap")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);

    let (mut sandboxed, mut bare, mut bwrap) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let t = Instant::now();
        let launch = Launch {
            run_id: "bench",
            policy: &policy,
            artifact: &artifact,
            args: &[],
            env: Default::default(),
            stdio: &stdio,
            envelope: None,
            deadline: Instant::now() + Duration::from_secs(10),
            host: &host,
        };
        let r = native::run(&launch).expect("native run");
        assert_eq!(r.outcome, Outcome::Exited { code: 0 });
        sandboxed.push(t.elapsed());

        let t = Instant::now();
        let o = Command::new(&hello)
            .stdout(PStdio::piped())
            .output()
            .expect("bare hello");
        assert!(o.status.success());
        bare.push(t.elapsed());

        if have_bwrap {
            let t = Instant::now();
            let o = Command::new("bwrap")
                .args(["--unshare-all", "--ro-bind", "/", "/"])
                .arg(&hello)
                .stdout(PStdio::piped())
                .output()
                .expect("bwrap hello");
            assert!(o.status.success());
            bwrap.push(t.elapsed());
        }
    }
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let (s, b) = (median(&mut sandboxed), median(&mut bare));
    println!(
        "native cold start, static hello, n={n} (shim {})",
        shim.display()
    );
    println!("  bare spawn          median {:8.3} ms", ms(b));
    println!(
        "  hybox native        median {:8.3} ms  ({:.1}x bare)",
        ms(s),
        ms(s) / ms(b)
    );
    if have_bwrap {
        let w = median(&mut bwrap);
        println!(
            "  bwrap --unshare-all median {:8.3} ms  ({:.1}x bare; hybox/bwrap {:.2})",
            ms(w),
            ms(w) / ms(b),
            ms(s) / ms(w)
        );
    }
}
