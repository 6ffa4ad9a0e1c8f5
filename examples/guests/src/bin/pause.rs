//! A pod's pause container: it holds the pod's namespaces and does nothing until SIGTERM or SIGINT,
//! then exits 0. It must install handlers: the kernel drops a signal with the default action that is
//! sent to the init process of a pid namespace (pid_namespaces(7)), and a pod's pause is that init.
//! wasm has no signals: there it sleeps until it is killed.

#[cfg(not(target_os = "wasi"))]
fn main() {
    extern "C" {
        fn signal(sig: i32, handler: extern "C" fn(i32)) -> usize;
        fn pause() -> i32;
        fn _exit(code: i32) -> !;
    }
    extern "C" fn stop(_: i32) {
        // SAFETY: _exit is async-signal-safe; nothing needs flushing.
        unsafe { _exit(0) }
    }
    const SIGINT: i32 = 2;
    const SIGTERM: i32 = 15;
    // SAFETY: `stop` is an `extern "C" fn(i32)` that only calls an async-signal-safe function, and
    // pause() only waits for a signal.
    unsafe {
        signal(SIGTERM, stop);
        signal(SIGINT, stop);
        loop {
            pause();
        }
    }
}

#[cfg(target_os = "wasi")]
fn main() {
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}
