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

pub mod backend;
pub mod bench;
pub mod cli;
pub mod conformance;
pub mod decide;
pub mod doctor;
pub mod envelope;
pub mod exit;
pub mod explain;
pub mod function;
pub mod host;
pub mod loadgen;
pub mod policy;
pub mod report;
pub mod sandbox;
pub mod scratch;
pub mod serve;
pub mod units;
pub mod workload;

pub use function::{Function, FunctionOptions, Invocation};

/// One error and its sources, `: `-separated, for a one-line message that keeps the cause (the
/// file, field or syscall a source names).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        msg.push_str(&format!(": {s}"));
        src = s.source();
    }
    msg
}
pub use sandbox::{Error, HostConfig, RunOptions, RunResult, Sandbox, Stdio};
