//! The cgroup envelope: one per-run cgroup for both backends (issue 3). Placeholder until it lands.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct EnvelopeError(String);

pub struct Layout(String);

impl Layout {
    pub fn describe(&self) -> String {
        self.0.clone()
    }
}

pub fn detect(root: &Path) -> Result<Layout, EnvelopeError> {
    if root.join("cgroup.controllers").exists() {
        Ok(Layout("cgroup v2".into()))
    } else if root.join("memory").exists() {
        Ok(Layout("cgroup v1".into()))
    } else {
        Err(EnvelopeError(format!(
            "{}: no cgroup hierarchy found",
            root.display()
        )))
    }
}
