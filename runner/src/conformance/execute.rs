//! Running a case: through the whole run path ([`Workload::detect`], [`Sandbox::new`],
//! [`Sandbox::run`]) on each backend it targets, then its judgement, host checks and negative control.

use std::path::Path;
use std::time::Instant;

use super::cases::{Case, Expect, Guest, Target};
use super::control::control;
use super::fixtures::Fixtures;
use super::pacing::{self, KillGate};
use super::report::{CaseResult, Verdict};
use super::{judge, Config};
use crate::policy::{Backend, Policy};
use crate::workload::Workload;
use crate::{RunOptions, Sandbox, Stdio};

/// A run, or why it never started (the error chain, as the CLI would print it).
pub(super) type Run = Result<crate::RunResult, String>;

/// One run through the whole path. `Err` is a run that never started, as text.
pub(super) fn run_one(
    cfg: &Config,
    path: &Path,
    policy: &Policy,
    backend: Backend,
    args: &[String],
    stdin: &[u8],
) -> Run {
    let chain = |e: &dyn std::error::Error| crate::error_chain(e);
    let workload = Workload::detect(path).map_err(|e| chain(&e))?;
    let sandbox = Sandbox::new(workload, policy.clone(), Some(backend)).map_err(|e| chain(&e))?;
    sandbox
        .run(&RunOptions {
            args: args.to_vec(),
            stdio: Stdio::Capture {
                stdin: stdin.to_vec(),
            },
            host: cfg.host.clone(),
            run_id: None,
            detach_teardown: false,
            ..RunOptions::default()
        })
        .map_err(|e| chain(&e))
}

/// One case on one backend: the run, its judgement, the host checks and the negative control.
pub(super) fn run_case(
    cfg: &Config,
    fx: &Fixtures,
    c: &Case,
    policy: &Policy,
    target: Target,
    gate: &mut KillGate,
    note: Option<&str>,
) -> CaseResult {
    let backend = target.backend();
    let path = fx.artifact(cfg, &c.guest, backend);
    let killed = matches!(c.expect, Expect::Seccomp(_));
    if killed {
        gate.wait();
    }
    let t0 = Instant::now();
    let mut run = run_one(cfg, &path, policy, backend, &c.args, &c.stdin);
    tracing::debug!("case {} on {backend}: {:?}", c.name, t0.elapsed());
    let mut retried = None;
    if killed && pacing::unnamed_violation(&run) {
        // The syscall's name comes from the kernel's audit record, which printk's rate limit
        // (10 per 5 s, host-wide) can drop: wait the window out and run the case once more.
        gate.wait_window();
        run = run_one(cfg, &path, policy, backend, &c.args, &c.stdin);
        retried = Some(
            "re-run once: the kernel's printk rate limit dropped the audit record naming the syscall"
                .to_string(),
        );
    }
    let (got, mut verdict) = judge::judge(&c.expect, &run);
    if let (Ok(()), Some(check)) = (&verdict, &c.host_check) {
        verdict = judge::host_check(fx, check);
    }
    let (shown, control_ok) = control(cfg, c);
    fx.reset();
    let (verdict, detail) = match (&c.unsupported, verdict, control_ok) {
        (Some(why), _, _) => (Verdict::Unsupported, Some(why.clone())),
        (None, Ok(()), Ok(())) => (Verdict::Pass, retried.or(note.map(str::to_string))),
        (None, Err(why), _) => (Verdict::Fail, Some(why)),
        (None, Ok(()), Err(why)) => (
            Verdict::Fail,
            Some(format!(
                "negative control does not prove the mechanism: {why}"
            )),
        ),
    };
    CaseResult {
        case: c.name.to_string(),
        catalogue: c.catalogue.to_string(),
        backend: target.label().to_string(),
        expected: c.expect.describe(),
        got,
        control: shown,
        verdict,
        detail,
    }
}

/// A benign example on both backends under one policy: same exit code, same stdout.
pub(super) fn equivalence(
    cfg: &Config,
    fx: &Fixtures,
    case: String,
    name: &'static str,
    policy: &Policy,
    args: &[String],
    stdin: &[u8],
) -> CaseResult {
    let guest = Guest::Example(name);
    let runs: Vec<Run> = [Backend::Native, Backend::Wasm]
        .iter()
        .map(|&b| run_one(cfg, &fx.artifact(cfg, &guest, b), policy, b, args, stdin))
        .collect();
    let shown = |r: &Run| match r {
        Ok(r) => format!(
            "{}, stdout {}B fnv {:016x}",
            judge::mechanism(&r.report.outcome),
            r.stdout.len(),
            judge::fnv(&r.stdout)
        ),
        Err(e) => format!("not started: {e}"),
    };
    let (a, b) = (shown(&runs[0]), shown(&runs[1]));
    let got = if a == b {
        format!("both {a}")
    } else {
        format!("native {a} / wasm {b}")
    };
    let verdict = judge::equivalence(&runs[0], &runs[1]);
    CaseResult {
        case,
        catalogue: "equivalence: same policy, same stdout and exit code on both backends".into(),
        backend: "both".into(),
        expected: "exited(0), same stdout".into(),
        got,
        control: "n/a: the other backend is the comparison".into(),
        verdict: if verdict.is_ok() {
            Verdict::Pass
        } else {
            Verdict::Fail
        },
        detail: verdict.err(),
    }
}
