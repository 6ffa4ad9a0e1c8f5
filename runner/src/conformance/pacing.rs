//! Pacing the seccomp kills. The report names a killed syscall from the kernel's audit record, which
//! (without auditd) goes out through printk's host-wide rate limit; the suite spreads the kills out and
//! stays under it.

use std::time::{Duration, Instant};

use super::cases::{Case, Expect};
use super::execute::Run;
use crate::report::Outcome;

/// Paces the cases the seccomp filter kills. The report names the syscall from the kernel's audit
/// record, which (without auditd) goes out through printk's rate limit: a burst of 10 per 5 s for the
/// whole host. More kills than that in a window leave `seccomp_violation(unknown)`.
#[derive(Default)]
pub(super) struct KillGate {
    recent: std::collections::VecDeque<Instant>,
}

impl KillGate {
    const BURST: usize = 7;
    const WINDOW: Duration = Duration::from_millis(5_500);

    pub(super) fn wait(&mut self) {
        while self.recent.len() >= Self::BURST {
            let age = self.recent[0].elapsed();
            if age >= Self::WINDOW {
                self.recent.pop_front();
            } else {
                std::thread::sleep(Self::WINDOW - age);
            }
        }
        self.recent.push_back(Instant::now());
    }

    pub(super) fn wait_window(&mut self) {
        std::thread::sleep(Self::WINDOW);
        self.recent.clear();
        self.recent.push_back(Instant::now());
    }
}

/// A seccomp kill whose syscall the report could not name (its audit record was dropped).
pub(super) fn unnamed_violation(run: &Run) -> bool {
    matches!(run, Ok(r) if matches!(&r.report.outcome,
        Outcome::SeccompViolation { syscall } if syscall == "unknown"))
}

/// The order cases run in: the seccomp-killed ones spread between the others, so the kill gate rarely
/// has to wait.
pub(super) fn run_order(table: &[Case]) -> Vec<usize> {
    let (mut killed, mut other): (Vec<usize>, Vec<usize>) =
        (0..table.len()).partition(|&i| matches!(table[i].expect, Expect::Seccomp(_)));
    killed.reverse();
    other.reverse();
    let mut order = Vec::with_capacity(table.len());
    while !killed.is_empty() || !other.is_empty() {
        order.extend(killed.pop());
        order.extend(other.pop());
    }
    order
}
