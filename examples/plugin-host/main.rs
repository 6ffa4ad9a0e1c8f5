//! A plugin host in ~50 lines: load a function once (bundle or artifact), invoke it many times with a
//! payload, each call isolated, and read each call's report.
//!
//! ```sh
//! cargo run -p hybox --example plugin-host -- examples/echo "hello plugin" 3
//! ```
//! (as root: each function gets its own cgroup envelope; the example guests come from
//! `examples/build.sh`).

use std::path::PathBuf;

use hybox::function::{Function, FunctionOptions};
use hybox::HostConfig;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let path = PathBuf::from(args.next().unwrap_or_else(|| "examples/echo".into()));
    let payload = args.next().unwrap_or_else(|| "hello plugin".into());
    let calls: usize = args.next().map(|n| n.parse()).transpose()?.unwrap_or(3);

    // Where the `hybox` binary (the wasm worker) is: built next to this example's directory
    // (target/<profile>/). The native sandbox's init, the shim, is embedded in the library.
    let bin_dir = std::env::current_exe()?
        .parent()
        .and_then(|p| p.parent())
        .map(PathBuf::from)
        .ok_or("no target directory")?;
    let opts = FunctionOptions {
        host: HostConfig {
            hybox_path: Some(bin_dir.join("hybox")),
            ..HostConfig::default()
        },
        ..FunctionOptions::default()
    };

    // Loaded once: detection, policy (the bundle's own), decision, and the warm worker (wasm).
    let function = Function::load(&path, None, &opts)?;
    println!(
        "{}: {} backend because {:?}",
        function.name(),
        function.backend(),
        function.reasons()
    );

    for i in 0..calls {
        let call = function.invoke(format!("{payload} #{i}").as_bytes())?;
        let r = &call.report;
        println!(
            "call {i}: {} ({} start, {:.2} ms run, limit fired: {:?}) -> {:?}",
            r.outcome,
            call.start,
            r.phases.run_us as f64 / 1e3,
            r.limit_fired,
            String::from_utf8_lossy(&call.stdout).trim_end(),
        );
    }
    // Dropping the function tears down its workers and their envelopes.
    Ok(())
}
