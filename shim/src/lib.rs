//! hybox-shim: the init that runs as PID 1 inside a native sandbox. The library half holds what the
//! runner and the shim share: the [`plan`] handed over at start, and the [`seccomp`] policy.

pub mod plan;
pub mod seccomp;
mod syscalls_x86_64;
