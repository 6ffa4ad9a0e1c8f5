//! hybox's exit statuses. The workload's own exit code passes through unchanged and a signal becomes
//! 128+N; hybox's own failures and the limits it enforces use the small set below (documented in
//! `docs/exit-codes.md` and tested end to end). The run report is authoritative: a workload may exit
//! with any of these codes itself, the report says whether hybox produced it.

/// The command line or a policy file is invalid.
pub const USAGE: i32 = 2;
/// The pids limit stopped the workload.
pub const PIDS_LIMIT: i32 = 123;
/// The wall-clock limit fired (as `timeout(1)`).
pub const TIMEOUT: i32 = 124;
/// hybox itself failed: the envelope or sandbox could not be built, or an internal error.
pub const RUNNER_FAILED: i32 = 125;
/// The artifact cannot be executed: unsupported format, no variant for the chosen backend, or the
/// backend is not available.
pub const CANNOT_EXECUTE: i32 = 126;
/// The artifact (or a file it needs) was not found.
pub const NOT_FOUND: i32 = 127;
/// A wasm trap (as `wasmtime run`).
pub const TRAP: i32 = 134;
