//! The wasm backend: WASI modules and components in wasmtime (issue 5).
