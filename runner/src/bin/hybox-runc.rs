//! `hybox-runc`: hybox as an OCI runtime, with runc's command line (docs/oci.md).
//!
//! Its own binary, not only a link to `hybox`: it never runs a wasm guest itself (a wasm
//! container's worker is the `hybox` binary installed beside it, `hybox __wasm-worker`), so it
//! links neither wasmtime nor the compiler. containerd's shim executes it several times for every
//! container (`create`, `start`, `state`, `kill`, `delete`), and each container keeps one of its
//! processes (the monitor): a third of the size means a faster start of each call and less memory
//! for each monitor (docs/oci.md, "Benchmark"). A link named `hybox-runc` to the `hybox` binary
//! behaves the same, at the bigger binary's cost.

use std::process::ExitCode;

// The static (musl) build allocates with mimalloc: musl's own allocator made Cranelift compile a
// guest ~40% slower (docs/design.md, "The static build").
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    ExitCode::from(hybox::oci::cli::main(std::env::args_os()) as u8)
}
