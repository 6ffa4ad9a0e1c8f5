//! What SIGINT and SIGTERM do to the hybox CLI: kill and remove everything this process made on the
//! host, then exit with 128+signo. The library never exits the process; this front-end decides that
//! a signal means "stop now".

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

/// Set by the signal teardown when it begins.
static SIGNAL_TEARDOWN: AtomicBool = AtomicBool::new(false);

/// For the CLI's main thread right before it exits: if the signal teardown has begun, waits for it
/// to end the process (with 128+signo). Without this, a main thread whose run the teardown just
/// killed could exit first, with the run's status and before the teardown finished.
pub fn yield_to_signal_teardown() {
    if SIGNAL_TEARDOWN.load(Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// Kills and removes every live envelope of this process, then the guests' scratch directories
/// (now that nothing writes to them), reporting failures on stderr as `who: ...`.
pub fn teardown_everything(who: &str) {
    for e in crate::envelope::teardown_all() {
        eprintln!("{who}: {e}");
    }
    for e in crate::scratch::remove_scratch_dirs() {
        eprintln!("{who}: removing a scratch directory: {e}");
    }
}

/// On the first SIGINT or SIGTERM, tears down everything of this process ([`teardown_everything`])
/// and exits with 128+signo. Call once from `main` (later calls do nothing); the main thread calls
/// [`yield_to_signal_teardown`] before exiting. The exit happens on a dedicated thread after the
/// teardown, never inside a signal handler (signal-hook's iterator turns the signal into a message
/// on a self-pipe).
pub fn install_signal_teardown() -> std::io::Result<()> {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    if INSTALLED.get().is_some() {
        return Ok(());
    }
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGINT, libc::SIGTERM])?;
    std::thread::Builder::new()
        .name("hybox-signal-teardown".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                SIGNAL_TEARDOWN.store(true, Ordering::SeqCst);
                teardown_everything(&format!("hybox: teardown on signal {sig}"));
                std::process::exit(128 + sig);
            }
        })?;
    let _ = INSTALLED.set(());
    Ok(())
}

/// For `hybox serve`: the first SIGTERM or SIGINT is sent on the returned channel (the server
/// drains: in-flight calls finish, new ones are refused); a second one tears everything down at
/// once ([`teardown_everything`]) and exits with 128+signo.
///
/// Through signal-hook on a thread: tokio's signal driver would also be built into every tokio
/// runtime of this binary, the wasm worker's included, and needs syscalls the hardened worker's
/// seccomp filter does not grant.
pub fn drain_on_signal() -> std::io::Result<tokio::sync::mpsc::UnboundedReceiver<i32>> {
    let mut signals = signal_hook::iterator::Signals::new([libc::SIGTERM, libc::SIGINT])?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<i32>();
    std::thread::Builder::new()
        .name("hybox-serve-signals".into())
        .spawn(move || {
            let mut seen = 0;
            for sig in signals.forever() {
                seen += 1;
                if seen == 1 {
                    let _ = tx.send(sig);
                    continue;
                }
                SIGNAL_TEARDOWN.store(true, Ordering::SeqCst);
                eprintln!("hybox serve: second signal: tearing down every envelope now");
                teardown_everything("hybox serve: teardown");
                std::process::exit(128 + sig);
            }
        })?;
    Ok(rx)
}
