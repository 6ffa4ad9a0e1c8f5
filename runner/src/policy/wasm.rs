//! `wasm`: settings of the wasm backend (wasmtime's fuel, stack, table and instance limits, and the
//! optional OS sandbox around the worker).

use schemars::JsonSchema;
use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

use crate::units::Size;

/// Settings for the wasm backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WasmSection {
    /// Fuel units the guest may burn (wasmtime fuel); overrides the fuel derived from
    /// `resources.cpu_time`. Exhaustion is reported as `cpu_budget`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    /// Maximum wasm stack (wasmtime `max_wasm_stack`). Default 512K, between 64K and 64M.
    #[serde(default = "default_max_stack", deserialize_with = "stack_range")]
    pub max_stack: Size,
    /// Maximum elements per table (guards table-growth bombs). Default 20000.
    #[serde(default = "default_table_elements")]
    pub max_table_elements: u64,
    /// Maximum instances per store (components need a few). Default 32.
    #[serde(default = "default_instances")]
    pub max_instances: u32,
    /// Also put the wasm process in namespaces with a seccomp filter (defense in depth).
    #[serde(default)]
    pub os_sandbox: bool,
}

impl Default for WasmSection {
    fn default() -> Self {
        WasmSection {
            fuel: None,
            max_stack: default_max_stack(),
            max_table_elements: default_table_elements(),
            max_instances: default_instances(),
            os_sandbox: false,
        }
    }
}

fn default_max_stack() -> Size {
    Size::kib(512)
}
fn default_table_elements() -> u64 {
    20_000
}
fn default_instances() -> u32 {
    32
}

fn stack_range<'de, D: Deserializer<'de>>(d: D) -> Result<Size, D::Error> {
    let s = Size::deserialize(d)?;
    if s < Size::kib(64) || s > Size::mib(64) {
        return Err(de::Error::invalid_value(
            de::Unexpected::Unsigned(s.bytes()),
            &"a stack size between 64K and 64M",
        ));
    }
    Ok(s)
}
