//! The wasm-specific attacks, as wasm text fixtures (no bare control: there is no wasm runtime
//! outside the sandbox to compare with).

use serde_json::json;

use super::{wat, Case, Expect};

/// The wasm-specific attacks, as wasm text fixtures.
pub(super) fn cases(out: &mut Vec<Case>) {
    out.push(wat(
        "memory_grow_bomb",
        "memgrow.wat",
        include_str!("../../../../tests/fixtures/wasm/memgrow.wat"),
        "wasm: memory.grow bomb",
        json!({"resources": {"memory": "64M"}}),
        Expect::Oom("wasm memory limit"),
    ));
    out.push(wat(
        "table_grow_bomb",
        "tablegrow.wat",
        include_str!("../../../../tests/fixtures/wasm/tablegrow.wat"),
        "wasm: table growth bomb",
        json!({"wasm": {"max_table_elements": 5000}}),
        Expect::Oom("wasm table limit"),
    ));
    out.push(wat(
        "loop_no_host_calls",
        "spin.wat",
        include_str!("../../../../tests/fixtures/wasm/spin.wat"),
        "wasm: infinite loop with no host calls",
        json!({"resources": {"timeout": "1s"}}),
        Expect::Timeout,
    ));
    out.push(wat(
        "loop_in_host_call",
        "sleep.wat",
        include_str!("../../../../tests/fixtures/wasm/sleep.wat"),
        "wasm: infinite wait inside a blocking host call (poll_oneoff)",
        json!({"resources": {"timeout": "1s"}}),
        Expect::Timeout,
    ));
    out.push(wat(
        "deep_recursion",
        "recurse.wat",
        include_str!("../../../../tests/fixtures/wasm/recurse.wat"),
        "wasm: deep recursion",
        json!({}),
        Expect::Trap("call stack exhausted"),
    ));
    out.push(wat(
        "ungranted_import",
        "component_ungranted.wat",
        include_str!("../../../../tests/fixtures/wasm/component_ungranted.wat"),
        "wasm: a component importing an interface the policy does not grant",
        json!({}),
        Expect::Setup("link:"),
    ));
}
