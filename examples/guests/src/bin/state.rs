//! A function for isolation and limit tests, the same on both backends. Its stdin picks what it does:
//! - empty (or `state`): reports what an earlier call could have left behind: a global counter, a
//!   file in its scratch `/tmp`, an environment variable; then leaves all three behind itself. In an
//!   isolated call it always prints `global=1 file=absent env=absent write=ok`.
//! - `crash`: aborts (native SIGABRT, wasm trap).
//! - `spin`: loops forever on the CPU.
//! - `sleep`: sleeps for an hour (a blocking host call on wasm).
//! - `work:MS`: computes for MS milliseconds, then prints `worked MS ms`.
//! - `alloc:MIB`: touches MIB MiB of memory, then prints `allocated MIB MiB`.
use std::io::Read;
use std::sync::atomic::{AtomicU32, Ordering};

static CALLS: AtomicU32 = AtomicU32::new(0);

fn main() {
    let mut input = String::new();
    let _ = std::io::stdin().read_to_string(&mut input);
    let cmd = input.trim();
    match cmd.split_once(':') {
        Some(("work", ms)) => {
            let ms: u64 = ms.parse().unwrap_or(100);
            let t = std::time::Instant::now();
            let mut x = 0u64;
            while t.elapsed().as_millis() < ms as u128 {
                for i in 0..10_000u64 {
                    x = x.wrapping_mul(6364136223846793005).wrapping_add(i);
                }
            }
            println!("worked {ms} ms ({})", x % 7);
            return;
        }
        Some(("alloc", mib)) => {
            let mib: usize = mib.parse().unwrap_or(16);
            let blocks = hybox_examples::touch_mib(mib);
            println!("allocated {mib} MiB ({})", blocks.len());
            return;
        }
        _ => {}
    }
    match cmd {
        "crash" => std::process::abort(),
        "spin" => {
            let mut x = 0u64;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        "sleep" => std::thread::sleep(std::time::Duration::from_secs(3600)),
        _ => {
            let global = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
            let file = if std::fs::metadata("/tmp/hybox-state").is_ok() { "seen" } else { "absent" };
            let write = match std::fs::write("/tmp/hybox-state", "left by an earlier call") {
                Ok(()) => "ok".to_string(),
                Err(e) => format!("err({e})"),
            };
            let env = if std::env::var_os("HYBOX_STATE").is_some() { "seen" } else { "absent" };
            std::env::set_var("HYBOX_STATE", "left by an earlier call");
            println!("global={global} file={file} env={env} write={write}");
        }
    }
}
