//! hybox: run untrusted code under one policy file and one cgroup resource envelope, in wasmtime (a
//! WASI module or component) or in Linux namespaces behind hybox's own init (a native ELF), and get a
//! report of exactly what happened.
//!
//! The CLI (`hybox`) is a thin layer over this library. A plugin host embeds it like this:
//!
//! ```no_run
//! use hybox::{policy::Policy, workload::Workload, Sandbox, RunOptions, Stdio};
//!
//! let policy = Policy::from_file("policies/untrusted-plugin.json".as_ref())?;
//! let workload = Workload::detect("examples/out/wasm/hello.wasm".as_ref())?;
//! let sandbox = Sandbox::new(workload, policy, None)?;
//! println!("backend: {} because {:?}", sandbox.decision().backend, sandbox.decision().reasons);
//! let run = sandbox.run(&RunOptions { stdio: Stdio::Capture { stdin: b"hi".to_vec() }, ..Default::default() })?;
//! println!("{} -> {}", run.report.outcome, String::from_utf8_lossy(&run.stdout));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// The library's layers, lowest first; a module uses only modules of lower layers (docs/design.md):
//   1. vocabulary: units, exit, host, policy, report
//   2. what runs where: workload, decide
//   3. the host resources of a run: scratch, envelope, image
//   4. running it: backend (native, wasm, and what they share)
//   5. the API front-ends drive: sandbox, function, explain, doctor, tune (doctor's --fix); oci (hybox-runc: runc's
//      lifecycle over `Sandbox`; its command line behind feature `cli`)
//   6. the CLI's commands (feature `cli`): cli, bench, conformance, serve, loadgen
/// The two backends and what they share. **Not part of the stable API**: public so that hybox's
/// own integration tests and benchmarks can drive a backend directly; a front-end uses [`Sandbox`]
/// and [`Function`].
#[doc(hidden)]
pub mod backend;
pub mod decide;
pub mod doctor;
pub mod envelope;
pub mod exit;
pub mod explain;
pub mod function;
pub mod host;
pub mod image;
pub mod oci;
pub mod policy;
pub mod report;
pub mod sandbox;
pub mod scratch;
pub mod tune;
pub mod units;
pub mod workload;

// The hybox CLI's own commands (feature `cli`, on by default; the `hybox` binary needs it).
#[cfg(feature = "cli")]
pub mod bench;
#[cfg(feature = "cli")]
pub mod cli;
#[cfg(feature = "cli")]
pub mod conformance;
#[cfg(feature = "cli")]
pub mod loadgen;
#[cfg(feature = "cli")]
pub mod serve;

pub use decide::{DecideError, Decision};
pub use function::{Function, FunctionError, FunctionOptions, Invocation};
pub use host::{HostConfig, WorkerStart};
pub use policy::{Backend, Policy, PolicyError};
pub use report::{Outcome, RunReport};
pub use sandbox::{Error, RunOptions, RunResult, Sandbox, Stdio};
pub use workload::{Workload, WorkloadError};

/// One error and its sources, `: `-separated, for a one-line message that keeps the cause (the
/// file, field or syscall a source names). A source whose text its parent already shows (an error
/// that both prints its cause and returns it as `source()`, as many do) is not repeated.
///
/// ```
/// let e = std::io::Error::new(std::io::ErrorKind::Other, "disk on fire");
/// assert_eq!(hybox::error_chain(&e), "disk on fire");
/// ```
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        src = s.source();
    }
    msg
}
