//! runc's lifecycle commands over hybox: `create` (bundle → policy → a monitor waiting for
//! `start`), `start`, `state`, `kill`, `delete`, `ps` and `features` (docs/oci.md).

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::envelope::{Envelope, EnvelopeError};
use crate::oci::log::Log;
use crate::oci::runtime_policy::{RuntimePolicy, DEFAULT_CAPABILITIES};
use crate::oci::state::{self, Record, StateDir, Status};
use crate::oci::{bundle, monitor, procfs, OciError};
use crate::workload::{Artifact, Workload};
use crate::Sandbox;

/// What every command gets from the global flags.
#[derive(Debug, Clone)]
pub struct Context {
    /// `--root`: where the state directories are.
    pub root: PathBuf,
    pub log: Log,
}

/// `create`'s options.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: i32,
}

/// How long `delete --force` waits for the monitor to tear the sandbox down after the kill.
const DELETE_WAIT: Duration = Duration::from_secs(10);

/// `create ID`: maps the bundle, records the state and leaves the monitor waiting for `start`.
/// Nothing is left behind when it fails. Must be called from a single-threaded process (the
/// monitor is forked and goes on running this process's code).
pub fn create(ctx: &Context, id: &str, opts: &CreateOptions) -> Result<(), OciError> {
    check_preserved_fds(opts.preserve_fds)?;
    single_threaded()?;
    let sd = StateDir::new(&ctx.root, id)?;
    if sd.dir.exists() {
        return Err(OciError::Exists { id: id.into() });
    }
    let runtime = RuntimePolicy::load()?;
    let c = bundle::load(&opts.bundle, &runtime)?;
    // As runc: a terminal needs the socket to send its pty to, and a socket needs a terminal.
    match (c.terminal, &opts.console_socket) {
        (true, None) => {
            return Err(OciError::Refused {
                field: "process.terminal".into(),
                message: "a terminal needs --console-socket".into(),
            })
        }
        (false, Some(_)) => {
            return Err(OciError::Unsupported {
                what: "--console-socket".into(),
                why: "given for a container without process.terminal".into(),
            })
        }
        _ => {}
    }
    for why in &c.ignored {
        ctx.log.debug(&format!("container {id}: ignored {why}"));
    }
    sd.create()?;
    let created = create_in(ctx, &sd, &c, opts);
    if created.is_err() {
        let _ = sd.remove();
    }
    created
}

fn create_in(
    ctx: &Context,
    sd: &StateDir,
    c: &bundle::Container,
    opts: &CreateOptions,
) -> Result<(), OciError> {
    // argv[0] is the name the backends see the program by: a link named as process.args[0] was.
    let dir = sd.dir.join(state::ARGV0_DIR);
    std::fs::create_dir(&dir).map_err(OciError::io(format!("create {}", dir.display())))?;
    let link = dir.join(&c.argv0);
    std::os::unix::fs::symlink(&c.program, &link)
        .map_err(OciError::io(format!("link {}", link.display())))?;
    let workload = Workload::Single(Artifact {
        path: link,
        format: c.artifact.format.clone(),
    });
    sd.write_policy(&c.policy)?;
    let mut policy = c.policy.clone();
    let mut placement = monitor::Placement::for_container(c.cgroups_path.as_deref(), &sd.id)?;
    placement.console_socket = opts.console_socket.clone();
    placement.joins = c.joins.clone();
    if let crate::policy::Rootfs::Dir(dir) = &policy.native.rootfs {
        crate::oci::pod::create_mount_points(dir, &policy).map_err(OciError::io(format!(
            "create mount points in {}",
            dir.display()
        )))?;
        let mut view = monitor::RootfsView::new(dir);
        policy.native.rootfs = crate::policy::Rootfs::Dir(view.view.clone());
        for m in &mut policy.filesystem.mounts {
            m.host = view.add_bind(&m.host);
        }
        placement.rootfs = Some(view);
    }
    let sandbox = Sandbox::new(workload, policy, None).map_err(OciError::Sandbox)?;
    let decision = sandbox.decision().clone();
    if opts.preserve_fds > 0 && decision.backend == crate::policy::Backend::Wasm {
        return Err(OciError::Unsupported {
            what: "--preserve-fds".into(),
            why: "a wasm container's files are its WASI preopens: it has no fds to be given".into(),
        });
    }
    placement.pass_fds = opts.preserve_fds as u32;
    mkfifo(&sd.fifo())?;
    let pid = monitor::spawn(sd, sandbox, &placement, ctx.log.clone())?;
    let recorded = (|| {
        let start = procfs::stat(pid).ok_or_else(|| OciError::Monitor {
            why: format!("pid {pid} vanished after it was ready"),
        })?;
        sd.write_record(&Record {
            id: sd.id.clone(),
            bundle: c.bundle.clone(),
            rootfs: c.rootfs.clone(),
            pid,
            pid_start_time: start.start_time,
            created: crate::oci::time::now_rfc3339(),
            annotations: c.annotations.clone(),
            backend: decision.backend,
            reasons: decision.reasons.clone(),
            workload: c.artifact.format.to_string(),
            cgroups_path: c.cgroups_path.clone(),
            cgroup: Some(placement.cgroup_path.clone()),
            rootfs_view: placement.rootfs.as_ref().map(|v| v.view.clone()),
            bind_views: placement
                .rootfs
                .as_ref()
                .map(|v| v.binds.iter().map(|(_, p)| p.clone()).collect())
                .unwrap_or_default(),
            // The bundle's binds (a wasm container's rootfs preopen is not one).
            binds: c
                .policy
                .filesystem
                .mounts
                .iter()
                .filter(|m| m.host != c.rootfs)
                .map(|m| state::Bind {
                    source: m.host.clone(),
                    destination: m.guest.clone(),
                    writable: m.mode == crate::policy::Access::Rw,
                })
                .collect(),
        })?;
        if let Some(pf) = &opts.pid_file {
            state::write_atomic(pf, pid.to_string().as_bytes())?;
        }
        Ok(())
    })();
    if recorded.is_err() {
        // The monitor waits for a start that will not come; it has started nothing.
        procfs::signal(pid, libc::SIGKILL);
        // SAFETY: reaping our own child; a null status pointer is allowed.
        unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
    } else {
        ctx.log.debug(&format!(
            "container {}: {} on {}: {}",
            sd.id,
            c.artifact.format,
            decision.backend,
            decision.reasons.join("; ")
        ));
    }
    recorded
}

/// `--preserve-fds N`: fds 3..3+N of this process go to the container's process as 3..3+N (as
/// runc passes them); each must be open here.
pub(super) fn check_preserved_fds(n: i32) -> Result<(), OciError> {
    let unsupported = |why: String| OciError::Unsupported {
        what: "--preserve-fds".into(),
        why,
    };
    if n < 0 || n as usize > hybox_shim::plan::MAX_PASSED_FDS {
        return Err(unsupported(format!(
            "{n}: between 0 and {}",
            hybox_shim::plan::MAX_PASSED_FDS
        )));
    }
    for fd in 3..3 + n {
        // SAFETY: F_GETFD only reads the flags of an fd number, open or not.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        // A close-on-exec fd was not inherited (an exec closes those): it is one hybox-runc
        // opened itself (the hybox binary's /proc/self/exe when called through a link), which
        // must never reach the container.
        if flags < 0 || flags & libc::FD_CLOEXEC != 0 {
            return Err(unsupported(format!(
                "{n} fds from 3 to pass, but fd {fd} is not open in hybox-runc (not inherited)"
            )));
        }
    }
    Ok(())
}

fn mkfifo(path: &Path) -> Result<(), OciError> {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|e| {
        OciError::io(format!("mkfifo {}", path.display()))(std::io::Error::other(e))
    })?;
    // SAFETY: a NUL-terminated path.
    if unsafe { libc::mkfifo(c.as_ptr(), 0o600) } != 0 {
        return Err(OciError::io(format!("mkfifo {}", path.display()))(
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// The monitor is forked: only sound while this process has one thread.
pub(super) fn single_threaded() -> Result<(), OciError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(OciError::io("read /proc/self/status"))?;
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(str::trim);
    if threads != Some("1") {
        return Err(OciError::Monitor {
            why: format!(
                "create and exec must run in a single-threaded process, this one has {} threads",
                threads.unwrap_or("?")
            ),
        });
    }
    Ok(())
}

/// `start ID`: lets the monitor run the container.
pub fn start(ctx: &Context, id: &str) -> Result<(), OciError> {
    let sd = StateDir::new(&ctx.root, id)?;
    let r = sd.record()?;
    let status = sd.status(&r);
    if status != Status::Created {
        return Err(OciError::NotCreated {
            id: id.into(),
            status: status.to_string(),
        });
    }
    // Non-blocking: with no reader (the monitor died) this fails at once with ENXIO.
    let mut f = match std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(sd.fifo())
    {
        Ok(f) => f,
        Err(e) if e.raw_os_error() == Some(libc::ENXIO) => {
            return Err(OciError::NotRunning {
                id: id.into(),
                status: "stopped".into(),
            })
        }
        Err(e) => return Err(OciError::io(format!("open {}", sd.fifo().display()))(e)),
    };
    // Removed first: once start returns, the state reads running.
    let _ = std::fs::remove_file(sd.fifo());
    f.write_all(b"s")
        .map_err(OciError::io(format!("write {}", sd.fifo().display())))
}

/// `state ID`: the OCI state, plus hybox's decision (`hybox`).
pub fn state(ctx: &Context, id: &str) -> Result<serde_json::Value, OciError> {
    let sd = StateDir::new(&ctx.root, id)?;
    let r = sd.record()?;
    let status = sd.status(&r);
    let mut hybox = serde_json::json!({
        "backend": r.backend,
        "reasons": r.reasons,
        "workload": r.workload,
        "cgroupsPath": r.cgroups_path,
        "cgroup": r.cgroup,
        // What the runtime policy's grants let this container bind (docs/oci.md, "Docker").
        "binds": r.binds,
    });
    // The narrowing profile the container's filters include (docs/oci.md, `linux.seccomp`).
    if let Some(p) = sd.policy().ok().and_then(|p| p.native.seccomp.profile) {
        hybox["seccomp_profile"] = serde_json::json!({
            "default_action": p.default_action,
            "rules": p.rules.len(),
        });
    }
    if let Some(e) = sd.exit().filter(|_| status == Status::Stopped) {
        hybox["exit"] = serde_json::to_value(e).expect("an exit record serialises");
    }
    Ok(serde_json::json!({
        "ociVersion": "1.0.2",
        "id": r.id,
        "pid": if status == Status::Stopped { 0 } else { r.pid },
        "status": status.to_string(),
        "bundle": r.bundle,
        "rootfs": r.rootfs,
        "created": r.created,
        "annotations": r.annotations,
        "owner": "",
        "hybox": hybox,
    }))
}

/// `kill [--all] ID SIGNAL`. A stopped container: "container not running", except with `--all`
/// (containerd's CRI sends `kill --all` after the exit and expects success).
pub fn kill(ctx: &Context, id: &str, signal: &str, all: bool) -> Result<(), OciError> {
    let sig = parse_signal(signal)?;
    let sd = StateDir::new(&ctx.root, id)?;
    let r = sd.record()?;
    match sd.status(&r) {
        Status::Stopped if all => Ok(()),
        Status::Stopped => Err(OciError::NotRunning {
            id: id.into(),
            status: "stopped".into(),
        }),
        // Waiting for start: nothing runs yet, the monitor takes the signal itself.
        Status::Created => {
            procfs::signal(r.pid, sig);
            Ok(())
        }
        Status::Running | Status::Paused if all || sig == libc::SIGKILL => {
            // SIGKILL cannot be forwarded: it goes to the container's processes, and the monitor
            // reports their end (137) and removes the envelope.
            if sig == libc::SIGKILL {
                sd.mark_killed();
            }
            let procs = procfs::descendants(r.pid);
            if procs.is_empty() {
                procfs::signal(r.pid, sig);
            }
            for p in procs {
                procfs::signal(p, sig);
            }
            // A frozen task takes the signal only once thawed (runc thaws after a kill too).
            thaw(&r);
            Ok(())
        }
        Status::Running | Status::Paused => {
            procfs::signal(r.pid, sig);
            Ok(())
        }
    }
}

/// `delete [--force] ID`. A container that does not exist is an error without `--force` only
/// (containerd calls `delete --force` again after `delete`, and after a failed `create`).
pub fn delete(ctx: &Context, id: &str, force: bool) -> Result<(), OciError> {
    let sd = StateDir::new(&ctx.root, id)?;
    let r = match sd.record() {
        Ok(r) => r,
        Err(OciError::NotFound { .. }) if force => return sd.remove(),
        Err(e) => return Err(e),
    };
    let status = sd.status(&r);
    match status {
        Status::Stopped => {}
        _ if !force => {
            return Err(OciError::NotStopped {
                id: id.into(),
                status: status.to_string(),
            })
        }
        Status::Created => {
            procfs::signal(r.pid, libc::SIGKILL);
            wait_stopped(&r, DELETE_WAIT);
        }
        Status::Running | Status::Paused => {
            sd.mark_killed();
            thaw(&r);
            for p in procfs::descendants(r.pid) {
                procfs::signal(p, libc::SIGKILL);
            }
            if !wait_stopped(&r, DELETE_WAIT) {
                ctx.log.error(&format!(
                    "container {id}: the monitor did not exit {DELETE_WAIT:?} after the kill; killing it"
                ));
                for p in procfs::descendants(r.pid) {
                    procfs::signal(p, libc::SIGKILL);
                }
                procfs::signal(r.pid, libc::SIGKILL);
                wait_stopped(&r, DELETE_WAIT);
            }
        }
    }
    // The monitor removes its mount points when it ends; not when it was SIGKILLed.
    for point in r.rootfs_view.iter().chain(&r.bind_views) {
        monitor::remove_point(point);
    }
    // The container's cgroup stays after the exit (containerd reads it, as runc's does) until
    // here; a monitor killed by a group OOM kill (v2 memory.oom.group) left it too.
    if let Some(path) = &r.cgroup {
        remove_cgroup(path)?;
    }
    sd.remove()
}

/// Removes the container's cgroup and whatever is left in it; gone already is fine.
fn remove_cgroup(path: &str) -> Result<(), OciError> {
    let root = crate::HostConfig::default().cgroup_root;
    let fail = |source| OciError::Cgroup {
        path: path.to_string(),
        source,
    };
    match Envelope::open_at(&root, path) {
        Ok(e) => e.remove().map_err(fail),
        Err(EnvelopeError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(())
        }
        Err(e) => Err(fail(e)),
    }
}

/// Thaws a paused container (nothing to do when it is not).
fn thaw(r: &Record) {
    if let Some(cg) = r.cgroup.as_deref().filter(|cg| state::is_frozen(cg)) {
        let root = crate::HostConfig::default().cgroup_root;
        if let Ok(e) = Envelope::open_at(&root, cg) {
            let _ = e.set_frozen(false);
        }
    }
}

/// Waits until the monitor has exited; `false` on timeout.
fn wait_stopped(r: &Record, timeout: Duration) -> bool {
    let give_up = Instant::now() + timeout;
    while procfs::alive(r.pid, r.pid_start_time) {
        if Instant::now() >= give_up {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    true
}

/// `ps ID`: the monitor and every process of the container, or none once it stopped.
pub fn ps(ctx: &Context, id: &str) -> Result<Vec<i32>, OciError> {
    let sd = StateDir::new(&ctx.root, id)?;
    let r = sd.record()?;
    if sd.status(&r) == Status::Stopped {
        return Ok(Vec::new());
    }
    let mut pids = vec![r.pid];
    pids.extend(procfs::descendants(r.pid));
    Ok(pids)
}

/// `features`: what hybox-runc supports, in the runtime spec's `features` format.
pub fn features() -> serde_json::Value {
    serde_json::json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": "1.1.0",
        "hooks": [],
        "mountOptions": ["bind", "rbind", "ro", "rw", "nosuid", "nodev", "noexec", "size"],
        "linux": {
            "namespaces": ["pid", "mount", "ipc", "uts", "network", "user", "cgroup"],
            "capabilities": DEFAULT_CAPABILITIES,
            "cgroup": {"v1": true, "v2": true, "systemd": false, "systemdUser": false},
            // A profile narrows hybox's allow-list (`oci::seccomp`): no NOTIFY, no TRACE; it
            // applies to x86_64, the only arch hybox runs (the others' syscalls are killed).
            "seccomp": {
                "enabled": true,
                "actions": ["SCMP_ACT_ALLOW", "SCMP_ACT_ERRNO", "SCMP_ACT_KILL",
                    "SCMP_ACT_KILL_PROCESS", "SCMP_ACT_KILL_THREAD", "SCMP_ACT_LOG", "SCMP_ACT_TRAP"],
                "operators": ["SCMP_CMP_EQ", "SCMP_CMP_GE", "SCMP_CMP_GT", "SCMP_CMP_LE",
                    "SCMP_CMP_LT", "SCMP_CMP_MASKED_EQ", "SCMP_CMP_NE"],
                "archs": ["SCMP_ARCH_X86_64"]
            },
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false}
        },
        "annotations": {
            "org.hybox.backends": "wasm,native",
            "org.hybox.version": env!("CARGO_PKG_VERSION"),
            "org.hybox.capabilities": "accepted from the default set, none granted"
        }
    })
}

/// A signal as runc takes it: a number, or a name with or without `SIG`.
pub fn parse_signal(s: &str) -> Result<i32, OciError> {
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=64).contains(&n) {
            Ok(n)
        } else {
            Err(OciError::BadSignal(s.into()))
        };
    }
    let name = s.strip_prefix("SIG").unwrap_or(s);
    let n = match name {
        "HUP" => libc::SIGHUP,
        "INT" => libc::SIGINT,
        "QUIT" => libc::SIGQUIT,
        "KILL" => libc::SIGKILL,
        "USR1" => libc::SIGUSR1,
        "USR2" => libc::SIGUSR2,
        "TERM" => libc::SIGTERM,
        "CONT" => libc::SIGCONT,
        "STOP" => libc::SIGSTOP,
        "WINCH" => libc::SIGWINCH,
        "ABRT" => libc::SIGABRT,
        "ALRM" => libc::SIGALRM,
        "PIPE" => libc::SIGPIPE,
        _ => return Err(OciError::BadSignal(s.into())),
    };
    Ok(n)
}

#[cfg(test)]
mod tests {
    #[test]
    fn signals_by_number_and_name() {
        assert_eq!(super::parse_signal("9").unwrap(), libc::SIGKILL);
        assert_eq!(super::parse_signal("SIGTERM").unwrap(), libc::SIGTERM);
        assert_eq!(super::parse_signal("HUP").unwrap(), libc::SIGHUP);
        assert!(super::parse_signal("0").is_err());
        assert!(super::parse_signal("SIGBOGUS").is_err());
    }

    #[test]
    fn features_parse_as_the_spec_type() {
        let f: oci_spec::runtime::Features =
            serde_json::from_value(super::features()).expect("features parse");
        assert_eq!(f.oci_version_min(), "1.0.0");
    }
}
