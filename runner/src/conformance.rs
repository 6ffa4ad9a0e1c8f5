//! The isolation conformance suite (issue 6): one table of cases, each an escape or resource attack from
//! the catalogue in `shared/security.md`, run on every backend it applies to through the real run path
//! ([`Sandbox::run`]: envelope, backend, report). Each case states the outcome it expects *and* the
//! mechanism as the run report names it (`seccomp_violation(ptrace)`, `oom`, `pids_limit`, `timeout`,
//! `setup_error(...)`, or the errno the probe saw), and has a negative control where that is safe: the
//! same probe run bare on the host, which must behave differently (succeed, or reach the kernel and fail
//! there with another errno), proving the case exercises the mechanism and not a broken probe. Cases
//! that cannot run on this host say so (`unsupported`, with the reason); nothing is skipped silently.
//!
//! The cross-backend equivalence cases run every benign example on both backends under one policy and
//! compare stdout and exit code.
//!
//! Used by `hybox conformance` (a user checks their own host) and `tests/conformance.rs` (CI, as root).

use std::io::Read as _;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{json, Value};

use crate::policy::{Backend, Policy};
use crate::report::Outcome;
use crate::workload::Workload;
use crate::{HostConfig, RunOptions, Sandbox, Stdio};

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

/// A case's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Pass,
    Fail,
    /// The case cannot run on this host; `detail` says why.
    Unsupported,
}

/// One case on one backend.
#[derive(Debug, Clone, Serialize)]
pub struct CaseResult {
    pub case: String,
    /// The line of the escape catalogue (`shared/security.md`) this case covers.
    pub catalogue: String,
    /// `native`, `wasm`, `wasm+os` (wasm with `wasm.os_sandbox`), or `both` (equivalence cases).
    pub backend: String,
    /// The expected outcome and mechanism.
    pub expected: String,
    /// What the run report (and the probe) showed.
    pub got: String,
    /// The negative control and what it showed (`n/a: why` where none is safe or meaningful).
    pub control: String,
    pub verdict: Verdict,
    /// Why a case failed or is unsupported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// The whole table.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub results: Vec<CaseResult>,
    pub passed: usize,
    pub failed: usize,
    pub unsupported: usize,
}

impl Report {
    /// Whether no case failed. A case this host cannot run is `unsupported`, listed with its reason,
    /// and does not count as a failure (nor as a pass).
    pub fn all_passed(&self) -> bool {
        self.failed == 0
    }

    /// The table for humans.
    pub fn table(&self) -> String {
        let headers = ["case", "backend", "expected", "got", "control", "result"];
        let rows: Vec<[String; 6]> = self
            .results
            .iter()
            .map(|r| {
                [
                    r.case.clone(),
                    r.backend.clone(),
                    r.expected.clone(),
                    clip(&r.got, 70),
                    clip(&r.control, 60),
                    match r.verdict {
                        Verdict::Pass => "PASS".into(),
                        Verdict::Fail => "FAIL".into(),
                        Verdict::Unsupported => "UNSUPPORTED".into(),
                    },
                ]
            })
            .collect();
        let mut width = headers.map(str::len);
        for row in &rows {
            for (w, cell) in width.iter_mut().zip(row) {
                *w = (*w).max(cell.chars().count());
            }
        }
        let line = |cells: &[String]| {
            let mut s = String::new();
            for (i, (c, w)) in cells.iter().zip(width).enumerate() {
                if i + 1 == cells.len() {
                    s.push_str(c);
                } else {
                    s.push_str(&format!("{c:<w$}  "));
                }
            }
            s.trim_end().to_string()
        };
        let mut out = line(&headers.map(String::from));
        out.push('\n');
        for (row, r) in rows.iter().zip(&self.results) {
            out.push_str(&line(row));
            out.push('\n');
            if let Some(d) = &r.detail {
                out.push_str(&format!("    {}: {d}\n", r.case));
            }
        }
        out.push_str(&format!(
            "{} passed, {} failed, {} unsupported\n",
            self.passed, self.failed, self.unsupported
        ));
        out
    }
}

/// At most `n` characters, with an ellipsis (the JSON keeps the whole text).
fn clip(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        let mut c: String = s.chars().take(n - 1).collect();
        c.push('…');
        c
    }
}

/// What runs: an example guest (both targets) or a wasm text fixture (wasm only).
#[derive(Debug, Clone)]
enum Guest {
    Example(&'static str),
    Wat(&'static str, &'static str),
}

/// The expected outcome and mechanism.
#[derive(Debug, Clone)]
enum Expect {
    /// The probe ran to its end and its attempt failed with one of these errnos.
    Errno(&'static [&'static str]),
    /// The probe's attempt failed, whatever the errno (the backends word it differently).
    Refused,
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
    fn describe(&self) -> String {
        match self {
            Expect::Errno(e) => format!("errno {}", e.join("|")),
            Expect::Refused => "refused (any errno)".into(),
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
enum Control {
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
enum HostCheck {
    /// This file must not exist (a write that must not have landed).
    FileAbsent(PathBuf),
    /// The loopback TCP listener must not have accepted a connection.
    TcpListenerIdle,
    /// The abstract unix listener must not have accepted a connection.
    AbstractSocketIdle,
}

#[derive(Debug, Clone)]
struct Case {
    name: &'static str,
    catalogue: &'static str,
    backends: &'static [Target],
    guest: Guest,
    args: Vec<String>,
    stdin: Vec<u8>,
    policy: Value,
    expect: Expect,
    control: Control,
    host_check: Option<HostCheck>,
    /// Set when this host cannot run the case meaningfully; the case still runs and shows what it got.
    unsupported: Option<String>,
}

/// Where a case runs: a backend, or the wasm backend with its worker OS-sandboxed as well
/// (`wasm.os_sandbox`, defense in depth: the same guest-visible behaviour is expected).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Native,
    Wasm,
    WasmOsSandbox,
}

impl Target {
    fn backend(self) -> Backend {
        match self {
            Target::Native => Backend::Native,
            Target::Wasm | Target::WasmOsSandbox => Backend::Wasm,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Target::Native => "native",
            Target::Wasm => "wasm",
            Target::WasmOsSandbox => "wasm+os",
        }
    }

    /// The case's policy for this target.
    fn policy(self, p: &Policy) -> Policy {
        let mut p = p.clone();
        if self == Target::WasmOsSandbox {
            p.wasm.os_sandbox = true;
        }
        p
    }
}

const NATIVE: &[Target] = &[Target::Native];
const WASM: &[Target] = &[Target::Wasm];
/// The wasm backend plain and with `wasm.os_sandbox`.
const WASM_BOTH: &[Target] = &[Target::Wasm, Target::WasmOsSandbox];

/// Host-side fixtures the cases point at; removed on drop.
struct Fixtures {
    dir: tempfile::TempDir,
    secret: PathBuf,
    ro: PathBuf,
    tcp: TcpListener,
    unix: UnixListener,
    abstract_name: String,
    wat_dir: tempfile::TempDir,
    free_port: u16,
}

impl Fixtures {
    fn new() -> Result<Fixtures, ConformanceError> {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::fs::PermissionsExt;
        let io = |what| move |source| ConformanceError::Fixture { what, source };
        // Outside every directory the native sandbox mounts (/usr, /lib, /etc...).
        let dir = tempfile::Builder::new()
            .prefix("hybox-conformance")
            .tempdir_in("/var/tmp")
            .map_err(io("temp dir in /var/tmp"))?;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))
            .map_err(io("temp dir permissions"))?;
        let secret = dir.path().join("secret.txt");
        std::fs::write(&secret, "host secret\n").map_err(io("secret file"))?;
        // A read-only grant: the sandbox's ids map to host nobody, so it must be world-readable.
        let ro = dir.path().join("ro");
        std::fs::create_dir(&ro).map_err(io("read-only grant"))?;
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755))
            .map_err(io("read-only grant permissions"))?;
        std::fs::write(ro.join("input.txt"), "a\nb\nc\n").map_err(io("grant input"))?;
        // A symlink inside the grant, aimed at the host secret next to it.
        std::os::unix::fs::symlink(&secret, ro.join("link")).map_err(io("symlink in the grant"))?;
        // A loopback port nobody listens on, for the bind case (bound and released here).
        let free_port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(io("a free loopback port"))?
            .port();
        // Host loopback only: the sandbox must not reach it (its network namespace has its own lo).
        let tcp = TcpListener::bind("127.0.0.1:0").map_err(io("loopback TCP listener"))?;
        tcp.set_nonblocking(true)
            .map_err(io("loopback TCP listener"))?;
        let abstract_name = format!("hybox-conformance-{}", crate::host::new_run_id());
        let unix = std::os::unix::net::SocketAddr::from_abstract_name(abstract_name.as_bytes())
            .and_then(|a| UnixListener::bind_addr(&a))
            .map_err(io("abstract unix listener"))?;
        unix.set_nonblocking(true)
            .map_err(io("abstract unix listener"))?;
        let wat_dir = tempfile::tempdir().map_err(io("wat fixtures"))?;
        Ok(Fixtures {
            dir,
            secret,
            ro,
            tcp,
            unix,
            abstract_name,
            wat_dir,
            free_port,
        })
    }

    fn port(&self) -> String {
        self.tcp
            .local_addr()
            .map(|a| a.port().to_string())
            .unwrap_or_default()
    }
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// A pid that exists nowhere (above the largest pid_max): the bare control's harmless target.
const NO_PID: &str = "4194305";

/// The base policy of every case; `over` is merged into it.
fn policy(over: Value) -> Value {
    let mut base = json!({
        "version": 1,
        "resources": {"memory": "128M", "pids": 32, "timeout": "10s"},
    });
    merge(&mut base, over);
    base
}

fn merge(base: &mut Value, over: Value) {
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

/// Whether this kernel has the x32 ABI: an x32 syscall reaches it (bare), instead of ENOSYS.
fn x32_missing(cfg: &Config) -> Option<String> {
    let v = bare_probe(cfg, &s(&["attack", "x32"]))?;
    (v["errno_name"] == "ENOSYS").then(|| {
        "CONFIG_X86_X32_ABI is not set in this kernel: x32 syscalls fail with ENOSYS on the host too, \
         so the filter's x32 rule cannot be shown to matter here (inside, the allow-list still kills it)"
            .to_string()
    })
}

/// Seccomp-killed syscalls: name, catalogue line, probe attack args (inside), bare control args.
const KILLED: &[(&str, &str)] = &[
    ("ptrace", "privilege: ptrace of pid 1 / the shim"),
    ("process_vm_readv", "privilege: process_vm_readv"),
    ("pidfd_getfd", "privilege: pidfd_getfd"),
    ("kcmp", "privilege: kcmp"),
    ("setns", "privilege: setns"),
    ("mount", "filesystem: mount"),
    ("umount2", "filesystem: umount"),
    ("pivot_root", "filesystem: pivot_root"),
    ("chroot", "filesystem: chroot escape"),
    ("fsopen", "filesystem: fsopen"),
    ("open_tree", "filesystem: open_tree"),
    ("move_mount", "filesystem: move_mount"),
    ("open_by_handle_at", "filesystem: open_by_handle_at"),
    ("keyctl", "kernel: keyctl"),
    ("bpf", "kernel: bpf"),
    ("perf_event_open", "kernel: perf_event_open"),
    ("userfaultfd", "kernel: userfaultfd"),
    ("kexec_load", "kernel: kexec_load"),
    ("init_module", "kernel: init_module"),
    ("acct", "kernel: acct"),
    ("swapon", "kernel: swapon"),
    ("reboot", "kernel: reboot"),
    ("syslog", "kernel: syslog"),
    ("clock_settime", "kernel: clock_settime"),
    ("modify_ldt", "kernel: modify_ldt"),
    ("iopl", "kernel: iopl"),
];

/// The table, in catalogue order.
fn cases(cfg: &Config, fx: &Fixtures) -> Vec<Case> {
    let mut out = Vec::new();
    privilege_cases(cfg, &mut out);
    process_cases(&mut out);
    filesystem_cases(fx, &mut out);
    network_cases(fx, &mut out);
    resource_cases(fx, &mut out);
    wasm_cases(&mut out);
    out
}

/// A case run by the probe under the base policy (fields adjusted by the caller where needed).
fn case(
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
fn attack(a: &[&str]) -> Vec<String> {
    let mut v = s(&["attack"]);
    v.extend(s(a));
    v
}

/// A wasm text fixture (no bare control: there is no wasm runtime outside the sandbox).
fn wat(
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

/// Privileges, namespaces and the kernel surface the seccomp filter answers.
fn privilege_cases(cfg: &Config, out: &mut Vec<Case>) {
    out.push(case(
        "inside_view",
        "privilege: capabilities zero, NoNewPrivs 1, Seccomp 2, uid_map never host 0; fds above 2 (CVE-2024-21626)",
        NATIVE,
        Vec::new(),
        Expect::PrivilegeView,
        Control::ViewDiffers,
    ));
    out.push(case(
        "setuid0",
        "privilege: setuid(0)",
        NATIVE,
        attack(&["setuid0"]),
        Expect::Errno(&["EINVAL", "EPERM"]),
        Control::Succeeds(attack(&["setuid0"])),
    ));
    out.push(case(
        "unshare_user",
        "privilege: unshare of a user namespace",
        NATIVE,
        attack(&["unshare_user"]),
        Expect::Errno(&["EPERM"]),
        Control::Succeeds(attack(&["unshare_user"])),
    ));
    out.push(case(
        "clone_newuser",
        "privilege: clone of a user namespace",
        NATIVE,
        attack(&["clone_newuser"]),
        Expect::Errno(&["EPERM"]),
        Control::None("bare, the clone succeeds and forks a second probe; unshare_user's control covers the flag"),
    ));
    out.push(case(
        "clone3",
        "privilege: clone3 (flags out of BPF's sight)",
        NATIVE,
        attack(&["clone3"]),
        Expect::Errno(&["ENOSYS"]),
        Control::ReachesKernel(attack(&["clone3"])),
    ));
    out.push(case(
        "seccomp_loosen",
        "kernel: installing a looser seccomp filter, then ptrace",
        NATIVE,
        attack(&["seccomp_loosen"]),
        Expect::Seccomp("ptrace"),
        Control::ReachesKernel(attack(&["seccomp_loosen", NO_PID])),
    ));
    for (name, catalogue) in KILLED {
        let control_args = match *name {
            "ptrace" | "process_vm_readv" | "kcmp" => attack(&[name, NO_PID]),
            "mount" => attack(&[name, "/nonexistent-hybox-probe"]),
            _ => attack(&[name]),
        };
        out.push(case(
            name,
            catalogue,
            NATIVE,
            attack(&[name]),
            Expect::Seccomp(name),
            Control::ReachesKernel(control_args),
        ));
    }
    out.push(case(
        "io_uring_setup",
        "kernel: io_uring_setup",
        NATIVE,
        attack(&["io_uring_setup"]),
        Expect::Errno(&["ENOSYS"]),
        Control::ReachesKernel(attack(&["io_uring_setup"])),
    ));
    out.push(case(
        "personality",
        "kernel: personality(READ_IMPLIES_EXEC)",
        NATIVE,
        attack(&["personality"]),
        Expect::Errno(&["EPERM"]),
        Control::Succeeds(attack(&["personality"])),
    ));
    out.push(case(
        "tiocsti",
        "tty: TIOCSTI injection, high bits set to dodge a 64-bit compare",
        NATIVE,
        attack(&["tiocsti"]),
        Expect::Errno(&["EPERM"]),
        Control::ReachesKernel(attack(&["tiocsti"])),
    ));
    let mut x32 = case(
        "x32",
        "kernel: x32 syscalls",
        NATIVE,
        attack(&["x32"]),
        Expect::Seccomp(""),
        Control::ReachesKernel(attack(&["x32"])),
    );
    x32.unsupported = x32_missing(cfg);
    out.push(x32);
    for (name, family) in [
        ("af_packet", "network: AF_PACKET"),
        ("raw_socket", "network: raw sockets"),
        (
            "af_vsock",
            "network: AF_VSOCK (reaches the hypervisor whatever the namespace)",
        ),
        (
            "netlink_uevent",
            "network: AF_NETLINK other than NETLINK_ROUTE (kobject uevents)",
        ),
    ] {
        out.push(case(
            name,
            family,
            NATIVE,
            attack(&[name]),
            Expect::Errno(&["EPERM"]),
            Control::Succeeds(attack(&[name])),
        ));
    }
}

/// Signals to host processes, host binaries.
fn process_cases(out: &mut Vec<Case>) {
    out.push(case(
        "kill_any",
        "privilege: kill(-1) / signals to host pids",
        NATIVE,
        attack(&["kill", "-1"]),
        Expect::Errno(&["ESRCH"]),
        Control::Succeeds(attack(&["kill", "-1"])),
    ));
    let me = std::process::id().to_string();
    out.push(case(
        "kill_host_pid",
        "privilege: signal a host pid (hybox's own)",
        NATIVE,
        attack(&["kill", &me]),
        Expect::Errno(&["ESRCH"]),
        Control::Succeeds(attack(&["kill", &me])),
    ));
    out.push(case(
        "write_shim_exe",
        "privilege: overwrite the shim through /proc/1/exe (CVE-2019-5736)",
        NATIVE,
        attack(&["write_exe", "/proc/1/exe"]),
        Expect::Errno(&["EACCES"]),
        Control::None("bare, this would open the host init's binary for writing"),
    ));
    out.push(case(
        "write_own_exe",
        "privilege: overwrite the workload's binary through /proc/self/exe",
        NATIVE,
        attack(&["write_exe", "/proc/self/exe"]),
        Expect::Refused,
        Control::None("bare, this would open the probe binary for writing"),
    ));
    out.push(case(
        "sysrq",
        "filesystem: write /proc/sysrq-trigger",
        NATIVE,
        attack(&["sysrq"]),
        Expect::Refused,
        Control::None("bare, this would trigger the host's sysrq"),
    ));
}

/// Filesystem: host secrets, writes outside the grants, escapes from a grant, /proc and cgroupfs.
fn filesystem_cases(fx: &Fixtures, out: &mut Vec<Case>) {
    let secret = fx.secret.display().to_string();
    for backends in [NATIVE, WASM_BOTH] {
        out.push(case(
            "read_host_secret",
            "filesystem: read host files outside the mounts",
            backends,
            attack(&["read", &secret]),
            Expect::Errno(&["ENOENT"]),
            Control::Succeeds(attack(&["read", &secret])),
        ));
        out.push(case(
            "read_etc_shadow",
            "filesystem: read /etc/shadow",
            backends,
            attack(&["read", "/etc/shadow"]),
            Expect::Refused,
            Control::Succeeds(attack(&["read", "/etc/shadow"])),
        ));
    }
    let grant = json!({"filesystem": {"mounts": [{"host": fx.ro, "guest": "/data"}]}});
    let landed_ro = fx.ro.join("probe-write");
    let landed_host = fx.dir.path().join("probe-write");
    for backends in [NATIVE, WASM_BOTH] {
        let mut c = case(
            "write_ro_grant",
            "filesystem: write to a read-only grant",
            backends,
            attack(&["write", "/data/probe-write"]),
            Expect::Refused,
            Control::Succeeds(attack(&["write", &landed_ro.display().to_string()])),
        );
        c.policy = policy(grant.clone());
        c.host_check = Some(HostCheck::FileAbsent(landed_ro.clone()));
        out.push(c);
        let mut c = case(
            "write_host_path",
            "filesystem: write a host path outside the grants",
            backends,
            attack(&["write", &landed_host.display().to_string()]),
            Expect::Refused,
            Control::Succeeds(attack(&["write", &landed_host.display().to_string()])),
        );
        c.host_check = Some(HostCheck::FileAbsent(landed_host.clone()));
        out.push(c);
    }

    let host_dotdot = fx.ro.join("../secret.txt").display().to_string();
    let host_link = fx.ro.join("link").display().to_string();
    for backends in [NATIVE, WASM] {
        let mut c = case(
            "grant_dotdot",
            "filesystem: `..` out of a grant / preopen",
            backends,
            attack(&["read", "/data/../secret.txt"]),
            Expect::Errno(&["ENOENT", "ENOTCAPABLE", "EPERM", "EACCES"]),
            Control::Succeeds(attack(&["read", &host_dotdot])),
        );
        c.policy = policy(grant.clone());
        out.push(c);
        let mut c = case(
            "grant_symlink",
            "filesystem: a symlink inside a grant aimed at a host path",
            backends,
            attack(&["read", "/data/link"]),
            Expect::Errno(&["ENOENT", "ENOTCAPABLE", "EPERM", "EACCES"]),
            Control::Succeeds(attack(&["read", &host_link])),
        );
        c.policy = policy(grant.clone());
        out.push(c);
    }
    out.push(case(
        "read_proc_keys",
        "filesystem: read /proc/keys",
        NATIVE,
        attack(&["read", "/proc/keys"]),
        Expect::ReadsNothing,
        Control::Succeeds(attack(&["read", "/proc/keys"])),
    ));
    let mut c = case(
        "read_proc_kcore",
        "filesystem: read /proc/kcore",
        NATIVE,
        attack(&["read", "/proc/kcore"]),
        Expect::ReadsNothing,
        Control::None("reading the host's kernel memory image is not a safe control"),
    );
    if !Path::new("/proc/kcore").exists() {
        c.unsupported = Some(
            "this kernel has no /proc/kcore (CONFIG_PROC_KCORE is off): nothing to mask".into(),
        );
    }
    out.push(c);
    out.push(case(
        "write_proc_sys",
        "filesystem: write /proc/sys",
        NATIVE,
        attack(&["write", "/proc/sys/kernel/hostname"]),
        Expect::Errno(&["EROFS", "EACCES", "EPERM"]),
        Control::None("bare, this would rename the host"),
    ));
    out.push(case(
        "release_agent",
        "filesystem: cgroup release_agent",
        NATIVE,
        attack(&["write", "/sys/fs/cgroup/release_agent"]),
        Expect::Errno(&["ENOENT", "EROFS", "EACCES"]),
        Control::None("bare, this would set the host cgroup's release agent"),
    ));
}

/// Network: no interface but lo, no route, the host's loopback listeners unreachable.
fn network_cases(fx: &Fixtures, out: &mut Vec<Case>) {
    out.push(case(
        "net_view",
        "network: no interface but lo, no route out (/proc/net/dev, /proc/net/route)",
        NATIVE,
        Vec::new(),
        Expect::NetView,
        Control::ViewDiffers,
    ));
    out.push(case(
        "net_view",
        "network: no interface visible (no /proc/net in WASI)",
        WASM,
        attack(&["read", "/proc/net/dev"]),
        Expect::Refused,
        Control::Succeeds(attack(&["read", "/proc/net/dev"])),
    ));
    let port = fx.port();
    for backends in [NATIVE, WASM_BOTH] {
        let mut c = case(
            "connect_host_loopback",
            "network: connect to a listener on the host's loopback",
            backends,
            attack(&["connect", &port]),
            if backends == NATIVE {
                Expect::Errno(&["EACCES", "ENETUNREACH"])
            } else {
                Expect::Refused
            },
            Control::Succeeds(attack(&["connect", &port])),
        );
        c.host_check = Some(HostCheck::TcpListenerIdle);
        out.push(c);
    }
    let free = fx.free_port.to_string();
    for backends in [NATIVE, WASM] {
        out.push(case(
            "bind_port",
            "network: bind a port the policy forbids (network none)",
            backends,
            attack(&["bind", &free]),
            if backends == NATIVE {
                Expect::Errno(&["EACCES"])
            } else {
                Expect::Refused
            },
            Control::Succeeds(attack(&["bind", &free])),
        ));
    }
    let mut c = case(
        "abstract_unix",
        "privilege: connect to a host abstract unix socket",
        NATIVE,
        attack(&["abstract", &fx.abstract_name]),
        Expect::Errno(&["ECONNREFUSED", "EPERM"]),
        Control::Succeeds(attack(&["abstract", &fx.abstract_name])),
    );
    c.host_check = Some(HostCheck::AbstractSocketIdle);
    out.push(c);
}

/// Resources and lifecycle: bombs, spins, sleeps, rlimits, survivors.
fn resource_cases(fx: &Fixtures, out: &mut Vec<Case>) {
    for backends in [NATIVE, WASM_BOTH] {
        let mut c = case(
            "memory_bomb",
            "resources: memory bomb (reported as oom, not signal 9)",
            backends,
            s(&["100"]),
            Expect::Oom(if backends == NATIVE {
                "cgroup memory limit"
            } else {
                "wasm memory limit"
            }),
            Control::Succeeds(s(&["100"])),
        );
        c.guest = Guest::Example("alloc");
        c.policy = policy(json!({"resources": {"memory": "64M"}}));
        out.push(c);
        let mut c = case(
            "cpu_spin",
            "resources: CPU spin (throttled, then timeout)",
            backends,
            attack(&["spin"]),
            Expect::Timeout,
            Control::RunsPast(attack(&["spin"]), Duration::from_millis(500)),
        );
        c.policy = policy(json!({"resources": {"timeout": "1s", "cpus": 0.5}}));
        out.push(c);
        let mut c = case(
            "infinite_sleep",
            "resources: infinite sleep (a blocking host call)",
            backends,
            attack(&["sleep"]),
            Expect::Timeout,
            Control::RunsPast(attack(&["sleep"]), Duration::from_millis(500)),
        );
        c.policy = policy(json!({"resources": {"timeout": "1s"}}));
        out.push(c);
    }
    for name in ["forkbomb", "threadbomb"] {
        let mut c = case(
            name,
            "resources: fork and thread bombs (pids limit, reported)",
            NATIVE,
            attack(&[name, "64"]),
            Expect::PidsLimit,
            Control::Succeeds(attack(&[name, "64"])),
        );
        c.policy = policy(json!({"resources": {"pids": 16}}));
        out.push(c);
    }

    out.push(case(
        "fd_exhaustion",
        "resources: fd exhaustion (RLIMIT_NOFILE)",
        NATIVE,
        attack(&["fd_exhaust", "512"]),
        Expect::Errno(&["EMFILE"]),
        Control::Succeeds(attack(&["fd_exhaust", "512"])),
    ));
    out.push(case(
        "mlock",
        "resources: mlock (RLIMIT_MEMLOCK)",
        NATIVE,
        attack(&["mlock", "1024"]),
        Expect::Errno(&["ENOMEM", "EPERM", "EAGAIN"]),
        Control::Succeeds(attack(&["mlock", "1024"])),
    ));
    let fill = fx.dir.path().join("probe-fill:8").display().to_string();
    let mut c = case(
        "tmpfs_fill",
        "resources: tmpfs fill (the sandbox's /tmp is sized)",
        NATIVE,
        attack(&["fill", "/tmp/probe-fill:8"]),
        Expect::Errno(&["ENOSPC"]),
        Control::Succeeds(attack(&["fill", &fill])),
    );
    c.policy = policy(json!({"filesystem": {"tmp": {"size": "1M"}}}));
    out.push(c);
    out.push(case(
        "cgroup_move",
        "lifecycle: writing its own pid into another cgroup",
        NATIVE,
        attack(&["cgroup_move", "/sys/fs/cgroup/cgroup.procs"]),
        Expect::Errno(&["ENOENT", "EACCES", "EROFS", "EPERM"]),
        Control::None("bare, this would move the probe into the host's root cgroup"),
    ));
    out.push(case(
        "daemon",
        "lifecycle: double-fork daemon outliving the run",
        NATIVE,
        attack(&["daemon"]),
        Expect::CleanExit,
        Control::None("bare, the daemon would outlive the probe on the host, which is the point"),
    ));
    let mut c = case(
        "sigstop_self",
        "lifecycle: SIGSTOP self before the timeout",
        NATIVE,
        attack(&["sigstop"]),
        Expect::Timeout,
        Control::RunsPast(attack(&["sigstop"]), Duration::from_millis(500)),
    );
    c.policy = policy(json!({"resources": {"timeout": "1s"}}));
    out.push(c);
}

/// The wasm-specific attacks, as wasm text fixtures.
fn wasm_cases(out: &mut Vec<Case>) {
    out.push(wat(
        "memory_grow_bomb",
        "memgrow.wat",
        include_str!("../../tests/fixtures/wasm/memgrow.wat"),
        "wasm: memory.grow bomb",
        json!({"resources": {"memory": "64M"}}),
        Expect::Oom("wasm memory limit"),
    ));
    out.push(wat(
        "table_grow_bomb",
        "tablegrow.wat",
        include_str!("../../tests/fixtures/wasm/tablegrow.wat"),
        "wasm: table growth bomb",
        json!({"wasm": {"max_table_elements": 5000}}),
        Expect::Oom("wasm table limit"),
    ));
    out.push(wat(
        "loop_no_host_calls",
        "spin.wat",
        include_str!("../../tests/fixtures/wasm/spin.wat"),
        "wasm: infinite loop with no host calls",
        json!({"resources": {"timeout": "1s"}}),
        Expect::Timeout,
    ));
    out.push(wat(
        "loop_in_host_call",
        "sleep.wat",
        include_str!("../../tests/fixtures/wasm/sleep.wat"),
        "wasm: infinite wait inside a blocking host call (poll_oneoff)",
        json!({"resources": {"timeout": "1s"}}),
        Expect::Timeout,
    ));
    out.push(wat(
        "deep_recursion",
        "recurse.wat",
        include_str!("../../tests/fixtures/wasm/recurse.wat"),
        "wasm: deep recursion",
        json!({}),
        Expect::Trap("call stack exhausted"),
    ));
    out.push(wat(
        "ungranted_import",
        "component_ungranted.wat",
        include_str!("../../tests/fixtures/wasm/component_ungranted.wat"),
        "wasm: a component importing an interface the policy does not grant",
        json!({}),
        Expect::Setup("link:"),
    ));
}

/// The benign examples: (name, args, stdin, policy additions).
fn benign(cfg: &Config) -> Vec<(&'static str, Vec<String>, Vec<u8>, Value)> {
    let files_data = cfg
        .examples
        .parent()
        .map(|e| e.join("files/data"))
        .and_then(|d| std::fs::canonicalize(d).ok())
        .unwrap_or_else(|| PathBuf::from("/nonexistent-hybox-examples/files/data"));
    vec![
        ("hello", Vec::new(), Vec::new(), json!({})),
        ("echo", Vec::new(), b"ping\npong\n".to_vec(), json!({})),
        ("compute", s(&["200"]), Vec::new(), json!({})),
        ("alloc", s(&["8"]), Vec::new(), json!({})),
        (
            "files",
            s(&["/in/input.txt", "/tmp/summary.txt"]),
            Vec::new(),
            json!({"filesystem": {"tmp": {"size": "1M"},
                "mounts": [{"host": files_data, "guest": "/in"}]}}),
        ),
        (
            "env",
            s(&["one", "two words"]),
            Vec::new(),
            json!({"env": {"GREETING": "hello", "A": "1"}}),
        ),
    ]
}

fn artifact(cfg: &Config, fx: &Fixtures, guest: &Guest, backend: Backend) -> PathBuf {
    match (guest, backend) {
        (Guest::Example(n), Backend::Native) => cfg.examples.join("native").join(n),
        (Guest::Example(n), Backend::Wasm) => cfg.examples.join("wasm").join(format!("{n}.wasm")),
        (Guest::Wat(file, _), _) => fx.wat_dir.path().join(file),
    }
}

/// One run through the whole path. `Err` is a run that never started, as text.
fn run_one(
    cfg: &Config,
    path: &Path,
    policy: &Policy,
    backend: Backend,
    args: &[String],
    stdin: &[u8],
) -> Result<crate::RunResult, String> {
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
        })
        .map_err(|e| chain(&e))
}

fn probe_json(stdout: &[u8]) -> Option<Value> {
    let text = String::from_utf8_lossy(stdout);
    serde_json::from_str(text.lines().next()?.trim()).ok()
}

/// A probe result in words: `errno EPERM` or `succeeded (ret N)`.
fn probe_words(v: &Value) -> String {
    if v["ret"].as_i64().unwrap_or(0) < 0 {
        format!("errno {}", v["errno_name"].as_str().unwrap_or("?"))
    } else {
        format!("succeeded (ret {})", v["ret"])
    }
}

/// The outcome as the report names its mechanism, short.
fn mechanism(o: &Outcome) -> String {
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
fn judge(expect: &Expect, run: &Result<crate::RunResult, String>) -> (String, Result<(), String>) {
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
        (_, true, Expect::CleanExit) => match r.report.details.get("teardown_error") {
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
        Expect::CleanExit => match r.report.details.get("teardown_error") {
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

fn privilege_view(v: &Value) -> Result<(), String> {
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

fn net_view(v: &Value) -> Result<(), String> {
    if v["ifaces"] != json!(["lo"]) || v["routes"] != 0 {
        return Err(format!("ifaces {} routes {}", v["ifaces"], v["routes"]));
    }
    Ok(())
}

fn bare_probe(cfg: &Config, args: &[String]) -> Option<Value> {
    let out = Command::new(cfg.examples.join("native/probe"))
        .args(args)
        .stdin(ProcStdio::null())
        .stderr(ProcStdio::null())
        .output()
        .ok()?;
    probe_json(&out.stdout)
}

/// Runs the control for a case; (shown, Ok or why it does not prove the mechanism).
fn control(cfg: &Config, c: &Case) -> (String, Result<(), String>) {
    let bin = match &c.guest {
        Guest::Example(n) => cfg.examples.join("native").join(n),
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
            match probe_json(&out.stdout) {
                Some(v) if v.get("attack").is_some() => {
                    let shown = format!("bare: {}", probe_words(&v));
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
                let shown = format!("bare: {}", probe_words(&v));
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
                    Expect::NetView => net_view(&v).is_err(),
                    _ => privilege_view(&v).is_err(),
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

fn host_check(fx: &Fixtures, check: &HostCheck) -> Result<(), String> {
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
    }
}

/// Drains a listener after a control connected to it on purpose.
fn drain(fx: &Fixtures) {
    while fx.tcp.accept().is_ok() {}
    while fx.unix.accept().is_ok() {}
}

/// Runs the whole table (and the equivalence cases) on this host.
pub fn run(cfg: &Config) -> Result<Report, ConformanceError> {
    for p in [
        cfg.examples.join("native/probe"),
        cfg.examples.join("wasm/probe.wasm"),
    ] {
        if !p.exists() {
            return Err(ConformanceError::MissingGuests { path: p });
        }
    }
    let fx = Fixtures::new()?;
    let wanted = |name: &str| cfg.filter.as_deref().is_none_or(|f| name.contains(f));
    let note = landlock_fallback();

    let table: Vec<Case> = cases(cfg, &fx)
        .into_iter()
        .filter(|c| wanted(c.name))
        .collect();
    let mut gate = KillGate::default();
    let mut indexed = Vec::new();
    for i in run_order(&table) {
        let c = &table[i];
        if let Guest::Wat(file, text) = &c.guest {
            std::fs::write(fx.wat_dir.path().join(file), text).map_err(|source| {
                ConformanceError::Fixture {
                    what: "wat fixture",
                    source,
                }
            })?;
        }
        let policy = build_policy(c.name, &c.policy, note.is_some())?;
        for &target in c.backends {
            let policy = target.policy(&policy);
            let r = run_case(cfg, &fx, c, &policy, target, &mut gate, note.as_deref());
            indexed.push((i, r));
        }
    }
    // Back in table order (the run order interleaves the seccomp cases with the others).
    indexed.sort_by_key(|(i, _)| *i);
    let mut results: Vec<CaseResult> = indexed.into_iter().map(|(_, r)| r).collect();

    for (name, args, stdin, over) in benign(cfg) {
        let case = format!("equivalence_{name}");
        if wanted(&case) {
            let policy = build_policy(&case, &policy(over), note.is_some())?;
            results.push(equivalence(cfg, &fx, case, name, &policy, &args, &stdin));
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

/// One case on one backend: the run, its judgement, the host checks and the negative control.
fn run_case(
    cfg: &Config,
    fx: &Fixtures,
    c: &Case,
    policy: &Policy,
    target: Target,
    gate: &mut KillGate,
    note: Option<&str>,
) -> CaseResult {
    let backend = target.backend();
    let path = artifact(cfg, fx, &c.guest, backend);
    let killed = matches!(c.expect, Expect::Seccomp(_));
    if killed {
        gate.wait();
    }
    let t0 = Instant::now();
    let mut run = run_one(cfg, &path, policy, backend, &c.args, &c.stdin);
    tracing::debug!("case {} on {backend}: {:?}", c.name, t0.elapsed());
    let mut retried = None;
    if killed && unnamed_violation(&run) {
        // The syscall's name comes from the kernel's audit record, which printk's rate limit
        // (10 per 5 s, host-wide) can drop: wait the window out and run the case once more.
        gate.wait_window();
        run = run_one(cfg, &path, policy, backend, &c.args, &c.stdin);
        retried = Some(
            "re-run once: the kernel's printk rate limit dropped the audit record naming the syscall"
                .to_string(),
        );
    }
    let (got, mut verdict) = judge(&c.expect, &run);
    if let (Ok(()), Some(check)) = (&verdict, &c.host_check) {
        verdict = host_check(fx, check);
    }
    let (shown, control_ok) = control(cfg, c);
    drain(fx);
    for p in [fx.ro.join("probe-write"), fx.dir.path().join("probe-write")] {
        let _ = std::fs::remove_file(p);
    }
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
fn equivalence(
    cfg: &Config,
    fx: &Fixtures,
    case: String,
    name: &'static str,
    policy: &Policy,
    args: &[String],
    stdin: &[u8],
) -> CaseResult {
    let guest = Guest::Example(name);
    let runs: Vec<Result<crate::RunResult, String>> = [Backend::Native, Backend::Wasm]
        .iter()
        .map(|&b| run_one(cfg, &artifact(cfg, fx, &guest, b), policy, b, args, stdin))
        .collect();
    let shown = |r: &Result<crate::RunResult, String>| match r {
        Ok(r) => format!(
            "{}, stdout {}B fnv {:016x}",
            mechanism(&r.report.outcome),
            r.stdout.len(),
            fnv(&r.stdout)
        ),
        Err(e) => format!("not started: {e}"),
    };
    let (a, b) = (shown(&runs[0]), shown(&runs[1]));
    let got = if a == b {
        format!("both {a}")
    } else {
        format!("native {a} / wasm {b}")
    };
    let verdict = match (&runs[0], &runs[1]) {
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
    };
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

/// Paces the cases the seccomp filter kills. The report names the syscall from the kernel's audit
/// record, which (without auditd) goes out through printk's rate limit: a burst of 10 per 5 s for the
/// whole host. More kills than that in a window leave `seccomp_violation(unknown)`.
#[derive(Default)]
struct KillGate {
    recent: std::collections::VecDeque<Instant>,
}

impl KillGate {
    const BURST: usize = 7;
    const WINDOW: Duration = Duration::from_millis(5_500);

    fn wait(&mut self) {
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

    fn wait_window(&mut self) {
        std::thread::sleep(Self::WINDOW);
        self.recent.clear();
        self.recent.push_back(Instant::now());
    }
}

fn unnamed_violation(run: &Result<crate::RunResult, String>) -> bool {
    matches!(run, Ok(r) if matches!(&r.report.outcome,
        Outcome::SeccompViolation { syscall } if syscall == "unknown"))
}

/// The order cases run in: the seccomp-killed ones spread between the others, so the kill gate rarely
/// has to wait.
fn run_order(table: &[Case]) -> Vec<usize> {
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

/// A short digest of the output for the table (FNV-1a, 64 bit).
fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_merge_deeply() {
        let p = policy(json!({"resources": {"memory": "64M"}}));
        assert_eq!(p["resources"]["memory"], "64M");
        assert_eq!(p["resources"]["pids"], 32);
        assert!(Policy::from_json_str(&p.to_string(), "t").is_ok());
    }

    #[test]
    fn probe_results_read_as_words() {
        let v = json!({"attack": "x", "ret": -1, "errno": 1, "errno_name": "EPERM"});
        assert_eq!(probe_words(&v), "errno EPERM");
        let v = json!({"attack": "x", "ret": 3, "errno": 0, "errno_name": ""});
        assert_eq!(probe_words(&v), "succeeded (ret 3)");
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
