//! Judging a run: what the run report and the probe's own line showed (`got`), and whether that is the
//! expected outcome *and* mechanism (a verdict, or why not).

use std::io::Read as _;

use serde_json::{json, Value};

use super::cases::{Expect, HostCheck};
use super::execute::Run;
use super::fixtures::Fixtures;
use crate::report::Outcome;

pub(super) fn probe_json(stdout: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.lines().next()?.trim()).ok()
}

/// A probe result in words: `errno EPERM` or `succeeded (ret N)`.
pub(super) fn probe_words(v: &Value) -> String {
    if v["ret"].as_i64().unwrap_or(0) < 0 {
        format!("errno {}", v["errno_name"].as_str().unwrap_or("?"))
    } else {
        format!("succeeded (ret {})", v["ret"])
    }
}

/// The outcome as the report names its mechanism, short.
pub(super) fn mechanism(o: &Outcome) -> String {
    match o {
        Outcome::Oom { .. } => "oom".into(),
        Outcome::CpuBudget { .. } => "cpu_budget".into(),
        Outcome::Trap { message } => {
            format!("trap({})", message.lines().next().unwrap_or_default())
        }
        other => other.to_string(),
    }
}

/// Judges one run: (got, pass, why not).
pub(super) fn judge(expect: &Expect, run: &Run) -> (String, Result<(), String>) {
    let r = match run {
        Ok(r) => r,
        Err(e) => {
            let got = format!("not started: {e}");
            return match expect {
                Expect::Setup(m) if e.contains(m) => (got, Ok(())),
                _ => (got.clone(), Err(got)),
            };
        }
    };
    let o = &r.report.outcome;
    let json = probe_json(&r.stdout);
    let exited0 = *o == Outcome::Exited { code: 0 };
    let got = match (&json, exited0, expect) {
        (_, _, Expect::PrivilegeView | Expect::NetView) => mechanism(o),
        (_, true, Expect::CleanExit) => match r.report.details.run.teardown_error.as_ref() {
            Some(_) => "exited(0), survivors at teardown".into(),
            None => "exited(0), envelope empty at teardown".into(),
        },
        (Some(v), true, _) => probe_words(v),
        _ => mechanism(o),
    };
    let fail = |why: String| Err(why);
    let verdict = match expect {
        Expect::Errno(names) => match (&json, exited0) {
            (Some(v), true) if v["ret"].as_i64().unwrap_or(0) < 0 => {
                let n = v["errno_name"].as_str().unwrap_or_default();
                if names.contains(&n) {
                    Ok(())
                } else {
                    fail(format!("refused, but with {n}"))
                }
            }
            (Some(_), true) => fail("the attempt succeeded inside the sandbox".into()),
            _ => fail(format!("the probe did not finish: {o}")),
        },
        Expect::Refused => match (&json, exited0) {
            (Some(v), true) if v["ret"].as_i64().unwrap_or(0) < 0 => Ok(()),
            (Some(_), true) => fail("the attempt succeeded inside the sandbox".into()),
            _ => fail(format!("the probe did not finish: {o}")),
        },
        Expect::Succeeds => match (&json, exited0) {
            (Some(v), true) if v["ret"].as_i64().unwrap_or(-1) >= 0 => Ok(()),
            (Some(v), true) => fail(format!("the attempt failed: {}", probe_words(v))),
            _ => fail(format!("the probe did not finish: {o}")),
        },
        Expect::Finishes => match (&json, exited0) {
            (Some(_), true) => Ok(()),
            _ => fail(format!("the probe did not finish: {o}")),
        },
        Expect::Seccomp(name) => match o {
            Outcome::SeccompViolation { syscall } if name.is_empty() || syscall == name => Ok(()),
            _ => fail(format!("expected the seccomp filter to kill it, got {o}")),
        },
        Expect::Oom(detail) => match o {
            Outcome::Oom { detail: d } if d.contains(detail) => Ok(()),
            _ => fail(format!("expected oom ({detail}), got {o}")),
        },
        Expect::PidsLimit => match o {
            Outcome::PidsLimit => Ok(()),
            _ => fail(format!("expected pids_limit, got {o}")),
        },
        Expect::Timeout => match o {
            Outcome::Timeout => Ok(()),
            _ => fail(format!("expected timeout, got {o}")),
        },
        Expect::Trap(m) => match o {
            Outcome::Trap { message } if message.contains(m) => Ok(()),
            _ => fail(format!("expected a trap ({m}), got {o}")),
        },
        Expect::Setup(m) => match o {
            Outcome::SetupError { step } if step.contains(m) => Ok(()),
            _ => fail(format!("expected a setup error ({m}), got {o}")),
        },
        Expect::ReadsNothing => match (&json, exited0) {
            (Some(v), true) if v["ret"].as_i64().unwrap_or(0) <= 0 => Ok(()),
            (Some(v), true) => fail(format!("read {} bytes inside the sandbox", v["ret"])),
            _ => fail(format!("the probe did not finish: {o}")),
        },
        Expect::CleanExit => match r.report.details.run.teardown_error.as_ref() {
            _ if !exited0 => fail(format!("expected exited(0), got {o}")),
            Some(e) => fail(format!("something survived the run: {e}")),
            None => Ok(()),
        },
        Expect::PrivilegeView => match &json {
            Some(v) if exited0 => privilege_view(v),
            _ => fail(format!("the probe did not print its view: {o}")),
        },
        Expect::NetView => match &json {
            Some(v) if exited0 => net_view(v),
            _ => fail(format!("the probe did not print its view: {o}")),
        },
    };
    let got = match (expect, &json) {
        (Expect::PrivilegeView, Some(v)) if exited0 => format!(
            "CapEff {} nnp {} seccomp {} uid_map {:?} fds {}",
            v["CapEff"].as_str().unwrap_or("?"),
            v["NoNewPrivs"].as_str().unwrap_or("?"),
            v["Seccomp"].as_str().unwrap_or("?"),
            v["uid_map"]
                .as_str()
                .unwrap_or("?")
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
            v["fds"]
        ),
        (Expect::ReadsNothing, Some(v)) if exited0 && v["ret"] == 0 => "read 0 bytes".into(),
        (Expect::NetView, Some(v)) if exited0 => {
            format!("ifaces {} routes {}", v["ifaces"], v["routes"])
        }
        _ => got,
    };
    (got, verdict)
}

pub(super) fn privilege_view(v: &Value) -> Result<(), String> {
    for cap in ["CapEff", "CapPrm", "CapBnd", "CapInh", "CapAmb"] {
        if v[cap] != "0000000000000000" {
            return Err(format!("{cap} is {}", v[cap]));
        }
    }
    if v["NoNewPrivs"] != "1" || v["Seccomp"] != "2" {
        return Err(format!(
            "NoNewPrivs {} Seccomp {}",
            v["NoNewPrivs"], v["Seccomp"]
        ));
    }
    let map: Vec<&str> = v["uid_map"]
        .as_str()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    if map.len() != 3 || map[1] == "0" || map[2] != "1" {
        return Err(format!("uid_map {map:?}: must map one id, never host 0"));
    }
    // 0-2, plus 3: the probe's own handle on /proc/self/fd while it lists it.
    if v["fds"] != json!([0, 1, 2, 3]) {
        return Err(format!("open fds {} (only 0-2 may be inherited)", v["fds"]));
    }
    Ok(())
}

pub(super) fn net_view(v: &Value) -> Result<(), String> {
    if v["ifaces"] != json!(["lo"]) || v["routes"] != 0 {
        return Err(format!("ifaces {} routes {}", v["ifaces"], v["routes"]));
    }
    Ok(())
}

/// The host side after the run: a write that must not have landed, a listener that must not have
/// accepted.
pub(super) fn host_check(fx: &Fixtures, check: &HostCheck) -> Result<(), String> {
    match check {
        HostCheck::FileAbsent(p) => {
            if p.exists() {
                let _ = std::fs::remove_file(p);
                Err(format!("{} was written on the host", p.display()))
            } else {
                Ok(())
            }
        }
        HostCheck::TcpListenerIdle => match fx.tcp.accept() {
            Ok((mut s, peer)) => {
                let mut b = [0u8; 1];
                let _ = s.read(&mut b);
                Err(format!("the host's loopback listener accepted {peer}"))
            }
            Err(_) => Ok(()),
        },
        HostCheck::AbstractSocketIdle => match fx.unix.accept() {
            Ok(_) => Err("the host's abstract socket accepted a connection".into()),
            Err(_) => Ok(()),
        },
        HostCheck::UdpSocketIdle => {
            let mut b = [0u8; 64];
            match fx.udp.recv_from(&mut b) {
                Ok((_, peer)) => Err(format!(
                    "the host's loopback UDP socket received from {peer}"
                )),
                Err(_) => Ok(()),
            }
        }
    }
}

/// The equivalence verdict: the native run exited 0 with some output, and the wasm run matches it
/// (same outcome, same stdout).
pub(super) fn equivalence(native: &Run, wasm: &Run) -> Result<(), String> {
    match (native, wasm) {
        (Ok(n), Ok(w)) => {
            if n.report.outcome != (Outcome::Exited { code: 0 }) {
                Err(format!("native: {}", n.report.outcome))
            } else if n.report.outcome != w.report.outcome {
                Err(format!(
                    "exit differs: native {} wasm {}",
                    n.report.outcome, w.report.outcome
                ))
            } else if n.stdout != w.stdout {
                Err(format!(
                    "stdout differs: native {:?} wasm {:?}",
                    String::from_utf8_lossy(&n.stdout),
                    String::from_utf8_lossy(&w.stdout)
                ))
            } else if n.stdout.is_empty() {
                Err("no output to compare".into())
            } else {
                Ok(())
            }
        }
        _ => Err("a run did not start".into()),
    }
}

/// A short digest of the output for the table (FNV-1a, 64 bit).
pub(super) fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}
