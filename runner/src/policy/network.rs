//! `network`: what the workload may reach.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Network access.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// No network at all: native gets an empty network namespace with `lo` down; wasm gets no sockets.
    #[default]
    None,
    /// A private loopback: native gets its own namespace with `lo` up; wasm components may use
    /// loopback addresses only.
    Loopback,
}
