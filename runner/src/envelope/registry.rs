//! The registry of this process's live envelopes, so that a front-end's signal handling (the CLI's
//! SIGINT/SIGTERM teardown, or a host embedding hybox with its own) can take them all down with
//! [`teardown_all`]. An envelope registers when its leaf is about to be made and unregisters when it
//! is torn down; an envelope whose owner died without either (SIGKILL) is left to gc, which finds it
//! by the owner record in its name (`owner.rs`).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::{EnvelopeError, Inner};

/// Live envelopes of this process, for teardown on SIGINT/SIGTERM.
fn registry() -> &'static Mutex<HashMap<u64, Arc<Inner>>> {
    static LIVE: OnceLock<Mutex<HashMap<u64, Arc<Inner>>>> = OnceLock::new();
    LIVE.get_or_init(Default::default)
}

pub(super) fn register(inner: &Arc<Inner>) -> u64 {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let id = NEXT.fetch_add(1, Ordering::Relaxed);
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, inner.clone());
    id
}

pub(super) fn unregister(id: u64) {
    registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .remove(&id);
}

/// Kills and removes every live envelope of this process; returns the failures. Used by the signal
/// teardown; a host embedding hybox with its own signal handling can call it from there.
pub fn teardown_all() -> Vec<EnvelopeError> {
    let live: Vec<(u64, Arc<Inner>)> = registry()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(k, v)| (*k, v.clone()))
        .collect();
    let mut errors = Vec::new();
    for (id, inner) in live {
        if let Err(e) = inner.teardown() {
            errors.push(e);
        }
        unregister(id);
    }
    errors
}
