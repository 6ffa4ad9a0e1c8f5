//! `hybox-runc`'s command line: runc's, parsed by `liboci-cli`'s clap definitions (the global
//! flags, the standard commands and runc's common extras), dispatched onto [`lifecycle`].
//!
//! Errors go to `--log` (JSON lines with `--log-format json`, which containerd's shim reads) and to
//! stderr, and end the command with status 1; commands hybox-runc does not implement yet
//! (`events`, `checkpoint`, `run`...) fail with a message naming them.

use std::io::Write;
use std::path::PathBuf;

use clap::Parser;
use liboci_cli::{CommonCmd, GlobalOpts, StandardCmd};

use crate::oci::error::{FAILED, USAGE};
use crate::oci::lifecycle::{self, Context, CreateOptions};
use crate::oci::live;
use crate::oci::log::Log;
use crate::oci::state::DEFAULT_ROOT;
use crate::oci::OciError;

/// runc's command line, as containerd's runc shim, Docker and the CRI call it.
#[derive(Parser, Debug)]
#[command(
    name = "hybox-runc",
    version,
    about = "hybox as an OCI runtime: runc's command line, every container under hybox's policy and envelope, as wasm or native (docs/oci.md)"
)]
pub struct RuncCli {
    #[command(flatten)]
    pub global: GlobalOpts,
    #[command(subcommand)]
    pub command: RuncCommand,
}

#[derive(clap::Subcommand, Debug)]
pub enum RuncCommand {
    #[command(flatten)]
    Standard(Box<StandardCmd>),
    #[command(flatten)]
    Common(Box<CommonCmd>),
}

/// Runs `hybox-runc` with these arguments (argv[0] first); returns the exit status.
pub fn main<I, T>(args: I) -> i32
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let cli = match RuncCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() { USAGE } else { 0 };
        }
    };
    let log = Log {
        path: cli.global.log.clone(),
        json: cli.global.log_format.as_deref() == Some("json"),
        debug: cli.global.debug,
    };
    match run(&cli, &log) {
        Ok(status) => status,
        Err(e) => {
            let msg = crate::error_chain(&e);
            log.error(&msg);
            if log.path.is_some() {
                // runc prints the error on stderr too: the shim keeps it for its own message.
                eprintln!("hybox-runc: {msg}");
            }
            FAILED
        }
    }
}

/// Runs the command; returns hybox-runc's exit status (0, or an exec'd process's status).
fn run(cli: &RuncCli, log: &Log) -> Result<i32, OciError> {
    if cli.global.systemd_cgroup {
        return Err(OciError::Unsupported {
            what: "--systemd-cgroup".into(),
            why: "hybox-runc builds its cgroups itself (cgroupfs); the systemd cgroup driver is not supported (set SystemdCgroup = false)".into(),
        });
    }
    match cli.global.log_format.as_deref() {
        None | Some("text") | Some("json") => {}
        Some(other) => {
            return Err(OciError::Unsupported {
                what: format!("--log-format {other}"),
                why: "expected text or json".into(),
            })
        }
    }
    let ctx = Context {
        root: cli
            .global
            .root
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT)),
        log: log.clone(),
    };
    if let RuncCommand::Common(cmd) = &cli.command {
        if let CommonCmd::Exec(e) = &**cmd {
            if !e.cap.is_empty() {
                return Err(OciError::Unsupported {
                    what: "exec --cap".into(),
                    why: "the container's processes have no capabilities".into(),
                });
            }
            return crate::oci::exec::exec(
                &ctx,
                &e.container_id,
                &crate::oci::exec::ExecOptions {
                    process: e.process.clone(),
                    command: e.command.clone(),
                    env: e.env.clone(),
                    cwd: e.cwd.clone(),
                    user: e.user,
                    detach: e.detach,
                    pid_file: e.pid_file.clone(),
                    console_socket: e.console_socket.clone(),
                    tty: e.tty,
                    preserve_fds: e.preserve_fds,
                },
            );
        }
    }
    run_other(&cli.command, &ctx).map(|()| 0)
}

fn run_other(command: &RuncCommand, ctx: &Context) -> Result<(), OciError> {
    let ctx = ctx.clone();
    match command {
        RuncCommand::Standard(cmd) => match &**cmd {
            StandardCmd::Create(c) => lifecycle::create(
                &ctx,
                &c.container_id,
                &CreateOptions {
                    bundle: c.bundle.clone(),
                    pid_file: c.pid_file.clone(),
                    console_socket: c.console_socket.clone(),
                    preserve_fds: c.preserve_fds,
                },
            ),
            StandardCmd::Start(s) => lifecycle::start(&ctx, &s.container_id),
            StandardCmd::State(s) => {
                let st = lifecycle::state(&ctx, &s.container_id)?;
                out(&serde_json::to_string_pretty(&st).expect("state serialises"));
                Ok(())
            }
            StandardCmd::Kill(k) => lifecycle::kill(&ctx, &k.container_id, &k.signal, k.all),
            StandardCmd::Delete(d) => lifecycle::delete(&ctx, &d.container_id, d.force),
        },
        RuncCommand::Common(cmd) => match &**cmd {
            CommonCmd::Features(_) => {
                out(&serde_json::to_string_pretty(&lifecycle::features())
                    .expect("features serialise"));
                Ok(())
            }
            CommonCmd::Ps(p) => {
                let pids = lifecycle::ps(&ctx, &p.container_id)?;
                match p.format.as_str() {
                    "json" => out(&serde_json::to_string(&pids).expect("pids")),
                    "table" => out(&std::iter::once("PID".to_string())
                        .chain(pids.iter().map(i32::to_string))
                        .collect::<Vec<_>>()
                        .join("\n")),
                    other => {
                        return Err(OciError::Unsupported {
                            what: format!("ps --format {other}"),
                            why: "expected table or json".into(),
                        })
                    }
                }
                Ok(())
            }
            CommonCmd::Update(u) => live::update(
                &ctx,
                &u.container_id,
                &live::UpdateOptions {
                    resources: u.resources.clone(),
                    memory: u.memory.map(|m| m as i64),
                    cpu_quota: u.cpu_quota.map(|q| q as i64),
                    cpu_period: u.cpu_period,
                    pids_limit: u.pids_limit,
                },
            ),
            CommonCmd::Pause(p) => live::set_paused(&ctx, &p.container_id, true),
            CommonCmd::Resume(p) => live::set_paused(&ctx, &p.container_id, false),
            other => Err(OciError::Unsupported {
                what: command_name(other).into(),
                why: "not implemented by hybox-runc yet".into(),
            }),
        },
    }
}

/// One document on stdout; a reader that went away (`| head`) is not an error of the command.
fn out(text: &str) {
    let _ = writeln!(std::io::stdout(), "{text}");
}

fn command_name(c: &CommonCmd) -> &'static str {
    match c {
        CommonCmd::Checkpointt(_) => "checkpoint",
        CommonCmd::Events(_) => "events",
        CommonCmd::Exec(_) => "exec",
        CommonCmd::Features(_) => "features",
        CommonCmd::List(_) => "list",
        CommonCmd::Pause(_) => "pause",
        CommonCmd::Ps(_) => "ps",
        CommonCmd::Resume(_) => "resume",
        CommonCmd::Run(_) => "run",
        CommonCmd::Update(_) => "update",
        CommonCmd::Spec(_) => "spec",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_recorded_call_line_parses() {
        let calls = concat!(
            include_str!("../../../tests/fixtures/oci/calls.txt"),
            include_str!("../../../tests/fixtures/oci/calls-cri.txt")
        );
        let mut n = 0;
        for line in calls.lines() {
            // Each line holds one runtime argv (after a scenario label, if any), split on spaces.
            let Some(at) = line.find("--root") else {
                continue;
            };
            let cmd = line[at..].split(" =>").next().unwrap_or_default();
            let argv = std::iter::once("hybox-runc").chain(cmd.split_whitespace());
            RuncCli::try_parse_from(argv).unwrap_or_else(|e| panic!("{line}: {e}"));
            n += 1;
        }
        assert!(n > 50, "only {n} call lines found");
    }
}
