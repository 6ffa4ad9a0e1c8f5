//! The table: every case, what it runs, what it expects and its negative control. One file per family
//! of attacks, in the order of the catalogue (docs/conformance.md); this file holds the vocabulary a
//! row is written in ([`Case`], [`Expect`], [`Control`], [`HostCheck`], [`Target`]) and the helpers that
//! keep a row one call.

mod equivalence;
mod filesystem;
mod network;
mod privilege;
mod process;
mod resources;
mod wasm;

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use super::fixtures::Fixtures;
use super::Config;
use crate::policy::{Backend, Policy};

pub(super) use equivalence::benign;

/// What runs: an example guest (both targets), the same as a component on wasm (WASI preview 2:
/// sockets), or a wasm text fixture (wasm only).
#[derive(Debug, Clone)]
pub(super) enum Guest {
    Example(&'static str),
    Component(&'static str),
    Wat(&'static str, &'static str),
}

/// The expected outcome and mechanism.
#[derive(Debug, Clone)]
pub(super) enum Expect {
    /// The probe ran to its end and its attempt failed with one of these errnos.
    Errno(&'static [&'static str]),
    /// The probe's attempt failed, whatever the errno (the backends word it differently).
    Refused,
    /// The probe's attempt succeeded (ret >= 0).
    Succeeds,
    /// The probe ran to its end, whatever its attempt gave (what matters is the host check).
    Finishes,
    /// The seccomp filter killed it on this syscall.
    Seccomp(&'static str),
    Oom(&'static str),
    PidsLimit,
    Timeout,
    Trap(&'static str),
    /// A setup error (or a run refused before it started) mentioning this.
    Setup(&'static str),
    /// The probe's read failed or returned no bytes (a path masked with /dev/null).
    ReadsNothing,
    /// Exited 0, and the envelope held no survivor at teardown (no `teardown_error`).
    CleanExit,
    /// The native inside view: no capabilities, no_new_privs, seccomp, unprivileged ids, fds 0-2.
    PrivilegeView,
    /// The native inside view: only `lo`, no routes.
    NetView,
}

impl Expect {
    pub(super) fn describe(&self) -> String {
        match self {
            Expect::Errno(e) => format!("errno {}", e.join("|")),
            Expect::Refused => "refused (any errno)".into(),
            Expect::Succeeds => "succeeds".into(),
            Expect::Finishes => "finishes (any result)".into(),
            Expect::Seccomp("") => "seccomp_violation(*)".into(),
            Expect::Seccomp(s) => format!("seccomp_violation({s})"),
            Expect::Oom(_) => "oom".into(),
            Expect::PidsLimit => "pids_limit".into(),
            Expect::Timeout => "timeout".into(),
            Expect::Trap(m) => format!("trap({m})"),
            Expect::Setup(m) => format!("setup_error({m})"),
            Expect::ReadsNothing => "refused or 0 bytes (masked)".into(),
            Expect::CleanExit => "exited(0), nothing survives the run".into(),
            Expect::PrivilegeView => "caps 0, nnp 1, seccomp 2, uid!=0, fds 0-2".into(),
            Expect::NetView => "ifaces [lo], 0 routes".into(),
        }
    }
}

/// The negative control, run bare on the host with the native build of the same guest.
#[derive(Debug, Clone)]
pub(super) enum Control {
    /// The probe's attempt succeeds (ret >= 0), or for a plain guest, it exits 0.
    Succeeds(Vec<String>),
    /// The probe is not killed and the kernel answers something other than the sandbox's errno.
    ReachesKernel(Vec<String>),
    /// Still running after this long (then the control kills it).
    RunsPast(Vec<String>, Duration),
    /// The bare inside view differs from the sandbox's.
    ViewDiffers,
    /// No safe or meaningful bare run; why.
    None(&'static str),
}

/// Something to check on the host after the run.
#[derive(Debug, Clone)]
pub(super) enum HostCheck {
    /// This file must not exist (a write that must not have landed).
    FileAbsent(PathBuf),
    /// The loopback TCP listener must not have accepted a connection.
    TcpListenerIdle,
    /// The abstract unix listener must not have accepted a connection.
    AbstractSocketIdle,
    /// The loopback UDP socket must not have received a datagram.
    UdpSocketIdle,
}

#[derive(Debug, Clone)]
pub(super) struct Case {
    pub(super) name: &'static str,
    pub(super) catalogue: &'static str,
    pub(super) backends: &'static [Target],
    pub(super) guest: Guest,
    pub(super) args: Vec<String>,
    pub(super) stdin: Vec<u8>,
    pub(super) policy: Value,
    pub(super) expect: Expect,
    pub(super) control: Control,
    pub(super) host_check: Option<HostCheck>,
    /// Set when this host cannot run the case meaningfully; the case still runs and shows what it got.
    pub(super) unsupported: Option<String>,
}

/// Where a case runs: a backend, or the wasm backend with its worker OS-sandboxed as well
/// (`wasm.os_sandbox`, defense in depth: the same guest-visible behaviour is expected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Target {
    Native,
    Wasm,
    WasmOsSandbox,
}

impl Target {
    pub(super) fn backend(self) -> Backend {
        match self {
            Target::Native => Backend::Native,
            Target::Wasm | Target::WasmOsSandbox => Backend::Wasm,
        }
    }

    pub(super) fn label(self) -> &'static str {
        match self {
            Target::Native => "native",
            Target::Wasm => "wasm",
            Target::WasmOsSandbox => "wasm+os",
        }
    }

    /// The case's policy for this target.
    pub(super) fn policy(self, p: &Policy) -> Policy {
        let mut p = p.clone();
        if self == Target::WasmOsSandbox {
            p.wasm.os_sandbox = true;
        }
        p
    }
}

pub(super) const NATIVE: &[Target] = &[Target::Native];
pub(super) const WASM: &[Target] = &[Target::Wasm];
/// The wasm backend plain and with `wasm.os_sandbox`.
pub(super) const WASM_BOTH: &[Target] = &[Target::Wasm, Target::WasmOsSandbox];

pub(super) fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A pid that exists nowhere (above the largest pid_max): the bare control's harmless target.
pub(super) const NO_PID: &str = "4194305";

/// The base policy of every case; `over` is merged into it.
pub(super) fn policy(over: Value) -> Value {
    let mut base = json!({
        "version": 1,
        "resources": {"memory": "128M", "pids": 32, "timeout": "10s"},
    });
    merge(&mut base, over);
    base
}

pub(super) fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(slot) => merge(slot, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// The table, in catalogue order.
pub(super) fn table(cfg: &Config, fx: &Fixtures) -> Vec<Case> {
    let mut out = Vec::new();
    privilege::cases(cfg, &mut out);
    process::cases(&mut out);
    filesystem::cases(fx, &mut out);
    network::cases(fx, &mut out);
    resources::cases(fx, &mut out);
    wasm::cases(&mut out);
    out
}

/// A case run by the probe under the base policy (fields adjusted by the caller where needed).
pub(super) fn case(
    name: &'static str,
    catalogue: &'static str,
    backends: &'static [Target],
    args: Vec<String>,
    expect: Expect,
    control: Control,
) -> Case {
    Case {
        name,
        catalogue,
        backends,
        guest: Guest::Example("probe"),
        args,
        stdin: Vec::new(),
        policy: policy(json!({})),
        expect,
        control,
        host_check: None,
        unsupported: None,
    }
}

/// `probe attack A...`.
pub(super) fn attack(a: &[&str]) -> Vec<String> {
    let mut v = s(&["attack"]);
    v.extend(s(a));
    v
}

/// A wasm text fixture (no bare control: there is no wasm runtime outside the sandbox).
pub(super) fn wat(
    name: &'static str,
    file: &'static str,
    text: &'static str,
    catalogue: &'static str,
    over: Value,
    expect: Expect,
) -> Case {
    Case {
        name,
        catalogue,
        backends: WASM,
        guest: Guest::Wat(file, text),
        args: Vec::new(),
        stdin: Vec::new(),
        policy: policy(over),
        expect,
        control: Control::None("no wasm runtime outside the sandbox to compare with"),
        host_check: None,
        unsupported: None,
    }
}
