//! The negative control: the native build of the case's guest run bare on the host, with harmless
//! arguments, which must behave differently from the sandboxed run (succeed, reach the kernel and get
//! another answer, or keep running), proving the case exercises the mechanism and not a broken probe.

use std::path::PathBuf;
use std::process::{Command, Stdio as ProcStdio};

use serde_json::Value;

use super::cases::{Case, Control, Expect, Guest};
use super::{judge, Config};

pub(super) fn bare_probe(cfg: &Config, args: &[String]) -> Option<Value> {
    let out = Command::new(cfg.examples.join("native/probe"))
        .args(args)
        .stdin(ProcStdio::null())
        .stderr(ProcStdio::null())
        .output()
        .ok()?;
    judge::probe_json(&out.stdout)
}

/// Runs the control for a case; (shown, Ok or why it does not prove the mechanism).
pub(super) fn control(cfg: &Config, c: &Case) -> (String, Result<(), String>) {
    let bin = match &c.guest {
        Guest::Example(n) | Guest::Component(n) => cfg.examples.join("native").join(n),
        Guest::Wat(..) => PathBuf::new(),
    };
    match &c.control {
        Control::None(why) => (format!("n/a: {why}"), Ok(())),
        Control::Succeeds(args) => {
            let out = Command::new(&bin)
                .args(args)
                .stdin(ProcStdio::null())
                .stderr(ProcStdio::null())
                .output();
            let out = match out {
                Ok(o) => o,
                Err(e) => return (format!("bare: cannot run: {e}"), Err(e.to_string())),
            };
            match judge::probe_json(&out.stdout) {
                Some(v) if v.get("attack").is_some() => {
                    let shown = format!("bare: {}", judge::probe_words(&v));
                    if v["ret"].as_i64().unwrap_or(-1) >= 0 {
                        (shown, Ok(()))
                    } else {
                        (
                            shown.clone(),
                            Err(format!("the control failed too ({shown})")),
                        )
                    }
                }
                _ if out.status.success() => ("bare: exited(0)".into(), Ok(())),
                _ => {
                    let shown = format!("bare: {}", out.status);
                    (
                        shown.clone(),
                        Err(format!("the control failed too ({shown})")),
                    )
                }
            }
        }
        Control::ReachesKernel(args) => match bare_probe(cfg, args) {
            Some(v) => {
                let shown = format!("bare: {}", judge::probe_words(&v));
                let same = match &c.expect {
                    Expect::Errno(names) => {
                        v["ret"].as_i64().unwrap_or(0) < 0
                            && names.contains(&v["errno_name"].as_str().unwrap_or_default())
                    }
                    _ => false,
                };
                if same {
                    (
                        shown.clone(),
                        Err(format!("the host answers the same ({shown})")),
                    )
                } else {
                    (shown, Ok(()))
                }
            }
            None => (
                "bare: no result".into(),
                Err("the bare probe printed nothing (killed?)".into()),
            ),
        },
        Control::RunsPast(args, after) => {
            let child = Command::new(&bin)
                .args(args)
                .stdin(ProcStdio::null())
                .stdout(ProcStdio::null())
                .stderr(ProcStdio::null())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => return (format!("bare: cannot run: {e}"), Err(e.to_string())),
            };
            std::thread::sleep(*after);
            let running = matches!(child.try_wait(), Ok(None));
            let _ = child.kill();
            let _ = child.wait();
            if running {
                (
                    format!("bare: still running after {}ms", after.as_millis()),
                    Ok(()),
                )
            } else {
                (
                    "bare: ended on its own".into(),
                    Err("the bare run ended on its own".into()),
                )
            }
        }
        Control::ViewDiffers => match bare_probe(cfg, &[]) {
            Some(v) => {
                let differs = match c.expect {
                    Expect::NetView => judge::net_view(&v).is_err(),
                    _ => judge::privilege_view(&v).is_err(),
                };
                let shown = match c.expect {
                    Expect::NetView => {
                        format!("bare: ifaces {} routes {}", v["ifaces"], v["routes"])
                    }
                    _ => format!(
                        "bare: CapEff {} seccomp {}",
                        v["CapEff"].as_str().unwrap_or("?"),
                        v["Seccomp"].as_str().unwrap_or("?")
                    ),
                };
                if differs {
                    (shown, Ok(()))
                } else {
                    (
                        shown.clone(),
                        Err(format!("the host's own view is the same ({shown})")),
                    )
                }
            }
            None => (
                "bare: no result".into(),
                Err("the bare probe printed nothing".into()),
            ),
        },
    }
}
