//! The isolation conformance suite: one table of cases, each an escape or resource attack (the
//! catalogue, and what each case proves, is docs/conformance.md), run on every backend it applies to
//! through the real run path ([`Sandbox::run`](crate::Sandbox::run): envelope, backend, report). Each
//! case states the outcome it expects *and* the mechanism as the run report names it
//! (`seccomp_violation(ptrace)`, `oom`, `pids_limit`, `timeout`, `setup_error(...)`, or the errno the
//! probe saw), and has a negative control where that is safe: the same probe run bare on the host,
//! which must behave differently (succeed, or reach the kernel and fail there with another errno),
//! proving the case exercises the mechanism and not a broken probe. Cases that cannot run on this
//! host say so (`unsupported`, with the reason); nothing is skipped silently.
//!
//! The cross-backend equivalence cases run every benign example on both backends under one policy and
//! compare stdout and exit code.
//!
//! Where things are: [`cases`] holds the table (one file per family), [`fixtures`] the host-side
//! files and listeners the cases aim at, [`execute`] runs a case through the real run path,
//! [`control`] its bare negative control, [`judge`] turns what the run report and the probe showed
//! into a verdict, [`pacing`] keeps the seccomp kills under the kernel's log rate limit, and
//! [`report`] is the table handed back.
//!
//! Used by `hybox conformance` (a user checks their own host) and `tests/conformance.rs` (CI, as root).

mod cases;
mod control;
mod execute;
mod fixtures;
mod judge;
mod pacing;
mod report;

use std::path::PathBuf;

use serde_json::Value;

use crate::policy::Policy;
use crate::HostConfig;

use cases::Case;
use fixtures::Fixtures;
pub use report::{CaseResult, Report, Verdict};

/// Why the suite could not run at all (a case that fails is a result, not an error).
#[derive(Debug, thiserror::Error)]
pub enum ConformanceError {
    /// The example guests are not built.
    #[error("the example guests are missing: {} (build them with examples/build.sh)", path.display())]
    MissingGuests { path: PathBuf },
    /// A host-side fixture (temp files, loopback listeners) could not be prepared.
    #[error("cannot prepare the conformance fixture {what}")]
    Fixture {
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A built-in case's policy does not validate (a bug in the table).
    #[error("case {case}: invalid policy")]
    Policy {
        case: String,
        #[source]
        source: crate::policy::PolicyError,
    },
}

/// Where the suite finds its guests and how it runs them.
#[derive(Debug, Clone)]
pub struct Config {
    /// `examples/out` (with `native/` and `wasm/` inside), as built by `examples/build.sh`.
    pub examples: PathBuf,
    /// The host configuration for every run (shim path, cgroup parent, cache).
    pub host: HostConfig,
    /// Run only the cases whose name contains this.
    pub filter: Option<String>,
}

/// Runs the whole table (and the equivalence cases) on this host.
pub fn run(cfg: &Config) -> Result<Report, ConformanceError> {
    for p in [
        cfg.examples.join("native/probe"),
        cfg.examples.join("wasm/probe.wasm"),
        cfg.examples.join("component/probe.wasm"),
    ] {
        if !p.exists() {
            return Err(ConformanceError::MissingGuests { path: p });
        }
    }
    let fx = Fixtures::new()?;
    let wanted = |name: &str| cfg.filter.as_deref().is_none_or(|f| name.contains(f));
    let note = landlock_fallback();

    let table: Vec<Case> = cases::table(cfg, &fx)
        .into_iter()
        .filter(|c| wanted(c.name))
        .collect();
    let mut gate = pacing::KillGate::default();
    let mut indexed = Vec::new();
    for i in pacing::run_order(&table) {
        let c = &table[i];
        fx.write_guest(&c.guest)?;
        let policy = build_policy(c.name, &c.policy, note.is_some())?;
        for &target in c.backends {
            let policy = target.policy(&policy);
            let r = execute::run_case(cfg, &fx, c, &policy, target, &mut gate, note.as_deref());
            indexed.push((i, r));
        }
    }
    // Back in table order (the run order interleaves the seccomp cases with the others).
    indexed.sort_by_key(|(i, _)| *i);
    let mut results: Vec<CaseResult> = indexed.into_iter().map(|(_, r)| r).collect();

    for (name, args, stdin, over) in cases::benign(cfg) {
        let case = format!("equivalence_{name}");
        if wanted(&case) {
            let policy = build_policy(&case, &cases::policy(over), note.is_some())?;
            results.push(execute::equivalence(
                cfg, &fx, case, name, &policy, &args, &stdin,
            ));
        }
    }

    let count = |v| results.iter().filter(|r| r.verdict == v).count();
    Ok(Report {
        passed: count(Verdict::Pass),
        failed: count(Verdict::Fail),
        unsupported: count(Verdict::Unsupported),
        results,
    })
}

/// Landlock `required` (the default) needs ABI 6 for everything the shim enforces; on an older kernel
/// the suite asks for `best_effort` and says so on every passing case.
fn landlock_fallback() -> Option<String> {
    match crate::host::landlock_abi() {
        Ok(abi) if abi >= 6 => None,
        Ok(abi) => Some(format!(
            "Landlock ABI {abi} < 6: native cases ran with landlock best_effort"
        )),
        Err(e) => Some(format!(
            "Landlock unavailable ({e}): native cases ran with landlock best_effort"
        )),
    }
}

fn build_policy(case: &str, v: &Value, best_effort: bool) -> Result<Policy, ConformanceError> {
    let mut p = Policy::from_json_str(&v.to_string(), &format!("conformance:{case}")).map_err(
        |source| ConformanceError::Policy {
            case: case.to_string(),
            source,
        },
    )?;
    if best_effort && p.native.landlock == crate::policy::LandlockMode::Required {
        p.native.landlock = crate::policy::LandlockMode::BestEffort;
        p.on_unenforceable = crate::policy::OnUnenforceable::Degrade;
    }
    Ok(p)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn policies_merge_deeply() {
        let p = cases::policy(json!({"resources": {"memory": "64M"}}));
        assert_eq!(p["resources"]["memory"], "64M");
        assert_eq!(p["resources"]["pids"], 32);
        assert!(Policy::from_json_str(&p.to_string(), "t").is_ok());
    }

    #[test]
    fn probe_results_read_as_words() {
        let v = json!({"attack": "x", "ret": -1, "errno": 1, "errno_name": "EPERM"});
        assert_eq!(judge::probe_words(&v), "errno EPERM");
        let v = json!({"attack": "x", "ret": 3, "errno": 0, "errno_name": ""});
        assert_eq!(judge::probe_words(&v), "succeeded (ret 3)");
    }

    #[test]
    fn missing_guests_are_an_error() {
        let cfg = Config {
            examples: PathBuf::from("/nonexistent-hybox-examples"),
            host: HostConfig::default(),
            filter: None,
        };
        let e = run(&cfg).unwrap_err();
        assert!(e.to_string().contains("examples/build.sh"), "{e}");
    }
}
