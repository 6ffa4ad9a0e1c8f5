//! Envelope create + join + destroy latency on the real cgroup hierarchy (root only; prints why it
//! skips otherwise). The joined process is a `sleep` child spawned outside the timed part, never the
//! bench process itself (it must not sit in a cgroup that is then killed and removed).
//!
//! Run: `cargo bench -p hybox --bench envelope`

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use hybox::backend::EnvelopeJoin;
use hybox::envelope::{Envelope, Limits};
use hybox::host::cgroup::{self, Layout};

const LIMITS: Limits = Limits {
    memory_bytes: 64 << 20,
    cpus: 1.0,
    pids: 64,
};

/// A `sleep` child, killed by the envelope's destroy and reaped when dropped (outside the timing).
struct Sleeper(Child);

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn sleeper() -> Sleeper {
    Sleeper(
        Command::new("sleep")
            .arg("600")
            .spawn()
            .expect("spawn sleep"),
    )
}

fn next_id() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn bench(c: &mut Criterion) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("envelope bench: skipped, needs root (real cgroups)");
        return;
    }
    let root = Path::new("/sys/fs/cgroup");
    let mut g = c.benchmark_group("envelope");
    g.bench_function("create+destroy", |b| {
        b.iter_batched(
            next_id,
            |id| {
                Envelope::create(root, "hybox", &id, &LIMITS)
                    .unwrap()
                    .destroy()
                    .unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    // A run's shape: the process joins, finishes (here: `cat` whose stdin closes) and is reaped by
    // the runner, then the envelope goes. Includes that process's exit.
    g.bench_function("create+join+exit+destroy", |b| {
        b.iter_batched(
            || {
                let child = Command::new("cat")
                    .stdin(std::process::Stdio::piped())
                    .spawn()
                    .expect("spawn cat");
                (next_id(), child)
            },
            |(id, mut child)| {
                let env = Envelope::create(root, "hybox", &id, &LIMITS).unwrap();
                env.join(child.id() as i32).unwrap();
                drop(child.stdin.take());
                child.wait().unwrap();
                env.destroy().unwrap();
            },
            BatchSize::SmallInput,
        );
    });
    // The worst case: the joined process is alive and the teardown kills it.
    g.bench_function("create+join+destroy", |b| {
        b.iter_batched(
            || (next_id(), sleeper()),
            |(id, child)| {
                let env = Envelope::create(root, "hybox", &id, &LIMITS).unwrap();
                env.join(child.0.id() as i32).unwrap();
                env.destroy().unwrap();
                child
            },
            // The returned sleeper is dropped (reaped) after the timed part.
            BatchSize::SmallInput,
        );
    });
    // Baseline in the same run: the kernel's own cost for the same cgroups, mkdir + rmdir of one
    // directory per hierarchy hybox uses, with no limits written, no read-back, no join.
    let layout = cgroup::detect(root).unwrap();
    let mut bases: Vec<PathBuf> = match &layout {
        Layout::V2 { root, .. } => vec![root.clone()],
        Layout::V1 { controllers: c, .. } | Layout::Hybrid { controllers: c, .. } => {
            [&c.memory, &c.cpu, &c.cpuacct, &c.pids]
                .into_iter()
                .flatten()
                .cloned()
                .collect()
        }
    };
    bases.dedup();
    for b in &bases {
        let _ = std::fs::create_dir(b.join("hybox"));
    }
    g.bench_function("baseline: mkdir+rmdir per hierarchy", |b| {
        b.iter_batched(
            next_id,
            |id| {
                let dirs: Vec<PathBuf> = bases.iter().map(|b| b.join("hybox").join(&id)).collect();
                for d in &dirs {
                    std::fs::create_dir(d).unwrap();
                }
                for d in dirs.iter().rev() {
                    std::fs::remove_dir(d).unwrap();
                }
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
