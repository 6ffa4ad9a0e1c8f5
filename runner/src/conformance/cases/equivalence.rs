//! The benign examples the equivalence cases run on both backends under one policy.

use std::path::PathBuf;

use serde_json::{json, Value};

use super::s;
use crate::conformance::Config;

/// The benign examples: (name, args, stdin, policy additions).
pub(in crate::conformance) fn benign(
    cfg: &Config,
) -> Vec<(&'static str, Vec<String>, Vec<u8>, Value)> {
    let files_data = cfg
        .examples
        .parent()
        .map(|e| e.join("files/data"))
        .and_then(|d| std::fs::canonicalize(d).ok())
        .unwrap_or_else(|| PathBuf::from("/nonexistent-hybox-examples/files/data"));
    vec![
        ("hello", Vec::new(), Vec::new(), json!({})),
        ("echo", Vec::new(), b"ping\npong\n".to_vec(), json!({})),
        ("compute", s(&["200"]), Vec::new(), json!({})),
        ("alloc", s(&["8"]), Vec::new(), json!({})),
        (
            "files",
            s(&["/in/input.txt", "/tmp/summary.txt"]),
            Vec::new(),
            json!({"filesystem": {"tmp": {"size": "1M"},
                "mounts": [{"host": files_data, "guest": "/in"}]}}),
        ),
        (
            "env",
            s(&["one", "two words"]),
            Vec::new(),
            json!({"env": {"GREETING": "hello", "A": "1"}}),
        ),
    ]
}
