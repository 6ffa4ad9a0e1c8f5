//! Garbage collection of stale envelopes: leaves under the parent whose owner (pid + start time, in the
//! leaf's name, see `owner.rs`) is no longer running. Their processes are killed and the cgroups
//! removed. Names that are not hybox envelopes are left alone, and so are envelopes of live owners.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::create::{bases, validate_name};
use super::fsio::{CgroupFs, RealFs};
use super::owner::parse_leaf_name;
use super::{Dirs, EnvelopeError, Inner, Version};
use crate::host::cgroup;

/// What a gc pass did.
#[derive(Debug, Default)]
pub struct GcReport {
    /// Envelope leaves found under the parent (hybox-named only).
    pub examined: usize,
    /// Leaves of dead owners that were killed and removed.
    pub removed: Vec<String>,
    /// Leaves whose owner is still running (left alone).
    pub live: usize,
    /// Stale leaves that could not be removed, with why.
    pub errors: Vec<GcFailure>,
}

/// A stale leaf a gc pass could not remove.
#[derive(Debug, thiserror::Error)]
#[error("{leaf}: {source}")]
pub struct GcFailure {
    /// The leaf's name under the parent (`<run_id>.owner-<pid>-<start>`).
    pub leaf: String,
    /// Why its teardown failed.
    #[source]
    pub source: EnvelopeError,
}

/// Removes the envelopes under `root`/`parent` whose owner is dead (`hybox gc`).
pub fn gc(root: &Path, parent: &str) -> Result<GcReport, EnvelopeError> {
    validate_name("cgroup parent", parent, true)?;
    let fs: Arc<dyn CgroupFs> = Arc::new(RealFs);
    let layout = cgroup::detect(root)?;
    let (version, bases) = bases(&layout)?;
    gc_with(&fs, version, &bases, parent)
}

pub(crate) fn gc_with(
    fs: &Arc<dyn CgroupFs>,
    version: Version,
    bases: &Dirs,
    parent: &str,
) -> Result<GcReport, EnvelopeError> {
    let mut report = GcReport::default();
    // Union over controllers: a crash between two mkdirs leaves a leaf in some controllers only.
    let mut names = BTreeSet::new();
    for base in bases.unique() {
        let dir = base.join(parent);
        match fs.list_dirs(&dir) {
            Ok(list) => names.extend(list),
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => return Err(EnvelopeError::io("list", &dir, e)),
        }
    }
    for name in names {
        let Some((_, owner)) = parse_leaf_name(&name) else {
            continue;
        };
        report.examined += 1;
        if owner.is_alive() {
            report.live += 1;
            continue;
        }
        let inner = Inner::new(
            fs.clone(),
            version,
            bases.map(|b| b.join(parent).join(&name)),
        );
        match inner.teardown() {
            Ok(()) => report.removed.push(name),
            Err(source) => report.errors.push(GcFailure { leaf: name, source }),
        }
    }
    Ok(report)
}
