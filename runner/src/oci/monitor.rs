//! The monitor: the process `create` leaves behind, whose pid goes into `--pid-file` (like
//! conmon for podman). containerd's shim is a child subreaper: when `create` exits, the monitor is
//! reparented to it, and the shim reaps it and reports its exit status as the container's. So the
//! monitor waits on the state directory's fifo until `start`, then runs the container through
//! [`crate::Sandbox`] (its own envelope, namespaces, shim or wasm worker) with the stdio fds
//! containerd gave `create`, forwards the signals `kill` sends it, records the outcome and exits
//! with the container's status.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;

use crate::envelope::{Envelope, IoLimit};
use crate::oci::log::Log;
use crate::oci::state::{ExitRecord, StateDir};
use crate::oci::{procfs, OciError};
use crate::{HostConfig, RunOptions, Sandbox, Stdio};

/// The monitor's exit status when the container could not be started at all (hybox's own
/// failure, as `hybox run` reports it).
const START_FAILED: i32 = crate::exit::RUNNER_FAILED;

/// The signals the monitor passes on to the container's process (its sandbox: the native shim,
/// which forwards them to the workload, or the wasm worker). SIGKILL cannot be caught: `kill`
/// sends it to the container's processes directly.
const FORWARDED: [i32; 7] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
];

/// Where the container goes: its cgroup, the run id, the rootfs view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Placement {
    /// The container's cgroup, exactly `linux.cgroupsPath` (containerd reads statistics and OOM
    /// events from the cgroup of the pid in the pid file), or [`DEFAULT_CGROUP_PARENT`]`/ID`
    /// when the bundle names none.
    pub cgroup_path: String,
    pub run_id: Option<String>,
    /// A native container's rootfs, bound by the monitor (in a mount namespace of its own) at
    /// `.1`, the path the policy names: see [`RootfsView`].
    pub rootfs: Option<RootfsView>,
    /// `--console-socket`: where the monitor sends the master of the container's pty.
    pub console_socket: Option<std::path::PathBuf>,
    /// The namespaces the container joins by path (a pod's). The monitor opens them at `create`
    /// and hands the sandbox `/proc/self/fd/N` of its open fds: what `start` joins is what
    /// `create` checked, even if the process whose `/proc/PID/ns/*` was named has ended since
    /// and its pid been reused.
    pub joins: Vec<crate::backend::NamespaceJoin>,
    /// `--preserve-fds`: how many fds from 3 the container's process gets (the monitor keeps
    /// them open from `create` on and hands them to the sandbox).
    pub pass_fds: u32,
}

/// The parent of the cgroup of a container whose bundle names no `linux.cgroupsPath`.
pub const DEFAULT_CGROUP_PARENT: &str = "/hybox-runc";

/// Where a native container's sandbox finds the bundle's rootfs. The native sandbox reaches its
/// rootfs as its own unprivileged host uid (the shim binds it from inside its user namespace), so
/// every directory above it must be searchable by anyone; containerd's bundles sit under state
/// directories that are not (0700 roots). The monitor therefore binds the rootfs, in a private
/// mount namespace of its own that the sandbox inherits, at [`RootfsView::view`] under
/// [`VIEW_BASE`] (0711), and removes the empty mount point when it ends; nothing is mounted on
/// the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootfsView {
    pub rootfs: std::path::PathBuf,
    pub view: std::path::PathBuf,
    /// The bundle's bind sources (Docker's `containers/ID/hosts`, volumes), each bound at its own
    /// mount point next to the rootfs's for the same reason: `(source, view)`.
    pub binds: Vec<(std::path::PathBuf, std::path::PathBuf)>,
}

/// Where the monitors' rootfs views are.
pub const VIEW_BASE: &str = "/run/hybox-runc/rootfs";

impl RootfsView {
    /// A fresh mount point for `rootfs` (not created yet).
    pub fn new(rootfs: &std::path::Path) -> RootfsView {
        RootfsView {
            rootfs: rootfs.to_path_buf(),
            view: std::path::Path::new(VIEW_BASE).join(crate::host::new_run_id()),
            binds: Vec::new(),
        }
    }

    /// A mount point for bind source `source`, to be bound by [`RootfsView::mount`]; returns it.
    pub fn add_bind(&mut self, source: &std::path::Path) -> std::path::PathBuf {
        let mut name = self.view.as_os_str().to_owned();
        name.push(format!(".b{}", self.binds.len()));
        let view = std::path::PathBuf::from(name);
        self.binds.push((source.to_path_buf(), view.clone()));
        view
    }

    /// Every mount point: the rootfs's, then the binds'.
    pub fn points(&self) -> Vec<std::path::PathBuf> {
        std::iter::once(self.view.clone())
            .chain(self.binds.iter().map(|(_, v)| v.clone()))
            .collect()
    }

    /// In the monitor: a private mount namespace, the mount point, the bind.
    fn mount(&self) -> Result<(), String> {
        use std::os::unix::fs::DirBuilderExt;
        let cstr = |p: &std::path::Path| std::ffi::CString::new(p.as_os_str().as_encoded_bytes());
        // SAFETY: unshare with a constant flag has no memory effects.
        if unsafe { libc::unshare(libc::CLONE_NEWNS) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNS): {}",
                std::io::Error::last_os_error()
            ));
        }
        // Nothing mounted from here on may propagate back to the host.
        // SAFETY: constant NUL-terminated strings and null data.
        if unsafe {
            libc::mount(
                c"none".as_ptr(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        } != 0
        {
            return Err(format!(
                "make / private: {}",
                std::io::Error::last_os_error()
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o711)
            .create(VIEW_BASE)
            .map_err(|e| format!("create {VIEW_BASE}: {e}"))?;
        let pairs = std::iter::once((self.rootfs.clone(), self.view.clone()))
            .chain(self.binds.iter().cloned());
        for (source, point) in pairs {
            // A file is bound on a file, a directory on a directory.
            let made = if source.is_dir() {
                std::fs::DirBuilder::new().mode(0o755).create(&point)
            } else {
                std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o644)
                    .open(&point)
                    .map(drop)
            };
            made.map_err(|e| format!("create {}: {e}", point.display()))?;
            let (src, dst) = match (cstr(&source), cstr(&point)) {
                (Ok(s), Ok(d)) => (s, d),
                _ => return Err("a path with a NUL byte".into()),
            };
            // SAFETY: NUL-terminated paths, a null type and data (a bind takes neither).
            if unsafe {
                libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                )
            } != 0
            {
                return Err(format!(
                    "bind {} at {}: {}",
                    source.display(),
                    point.display(),
                    std::io::Error::last_os_error()
                ));
            }
        }
        Ok(())
    }

    /// The mount point gone (the bind dies with the monitor's mount namespace).
    pub fn remove(&self) {
        for point in self.points() {
            if let Ok(c) = std::ffi::CString::new(point.as_os_str().as_encoded_bytes()) {
                // SAFETY: a NUL-terminated path; failing (not mounted here) is fine.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
            remove_point(&point);
        }
    }
}

/// A mount point, a directory or a file, once nothing is mounted on it.
pub fn remove_point(point: &std::path::Path) {
    if std::fs::remove_dir(point).is_err() {
        let _ = std::fs::remove_file(point);
    }
}

impl Placement {
    /// The container's cgroup at `linux.cgroupsPath` as given (absolute: from the hierarchies'
    /// roots; relative: under the caller's own cgroup, as runc does). A systemd-style path
    /// (`slice:prefix:name`) is refused: hybox builds its cgroups itself.
    pub fn for_container(cgroups_path: Option<&str>, id: &str) -> Result<Placement, OciError> {
        let cgroup_path = match cgroups_path.filter(|p| !p.is_empty()) {
            Some(p) if p.contains(':') => {
                return Err(OciError::Refused {
                    field: "linux.cgroupsPath".into(),
                    message: format!(
                        "{p:?} is a systemd cgroup path; hybox-runc builds cgroupfs paths only \
                         (SystemdCgroup = false)"
                    ),
                })
            }
            Some(p) => p.to_string(),
            None => format!("{DEFAULT_CGROUP_PARENT}/{id}"),
        };
        let ok = |s: &str| {
            !s.is_empty()
                && !s.starts_with('.')
                && s.len() <= 200
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
        };
        Ok(Placement {
            cgroup_path,
            run_id: ok(id).then(|| id.to_string()),
            rootfs: None,
            console_socket: None,
            joins: Vec::new(),
            pass_fds: 0,
        })
    }
}

/// Forks the monitor; returns its pid once it is waiting for `start`. The caller must be
/// single-threaded (checked by `create`): the child goes on running Rust code after the fork.
pub(super) fn spawn(
    sd: &StateDir,
    sandbox: Sandbox,
    placement: &Placement,
    log: Log,
) -> Result<i32, OciError> {
    let mut fds = [0; 2];
    // SAFETY: a pointer to two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(OciError::io("readiness pipe")(
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    let (ready_r, ready_w) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: the caller is single-threaded (create checks /proc/self/status), so the child is a
    // complete copy of the process and may go on running ordinary Rust code, allocations included.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(OciError::io("fork the monitor")(
            std::io::Error::last_os_error(),
        ));
    }
    if pid == 0 {
        drop(ready_r);
        let status = main(sd, &sandbox, placement, &log, ready_w);
        // The monitor is its own process, forked above: it ends here with the container's status
        // (what containerd's shim reaps), after everything (the envelope's kill included) is done:
        // no destructor may run twice. The caller's process, `create`, goes on below.
        std::process::exit(status);
    }
    drop(ready_w);
    let mut said = Vec::new();
    let _ = std::fs::File::from(ready_r).read_to_end(&mut said);
    if said.first() == Some(&b'k') {
        return Ok(pid);
    }
    // The monitor failed before it was ready: reap it, report what it said.
    let mut st = 0;
    // SAFETY: waiting for our own child; st is a live int.
    unsafe { libc::waitpid(pid, &mut st, 0) };
    Err(OciError::Monitor {
        why: if said.is_empty() {
            format!("exited before it was ready (wait status {st})")
        } else {
            String::from_utf8_lossy(&said).into_owned()
        },
    })
}

/// The monitor itself; returns its exit status.
fn main(sd: &StateDir, sandbox: &Sandbox, placement: &Placement, log: &Log, ready: OwnedFd) -> i32 {
    // Its own session: a signal to containerd's process group or terminal does not reach it.
    // SAFETY: setsid has no memory effects; it fails only for a group leader, which a fresh
    // child is not.
    unsafe { libc::setsid() };
    let _ = std::env::set_current_dir("/");
    // The shim hands `create` its own listening socket as fd 3 (not CLOEXEC): nothing but stdio
    // and the readiness pipe may survive into the monitor and, through it, the container.
    // The fds `--preserve-fds` passes are kept for the container (3..3+N).
    let passed: Vec<i32> = (3..3 + placement.pass_fds as i32).collect();
    let mut keep = passed.clone();
    keep.push(ready.as_raw_fd());
    close_fds_except(&keep);
    let mut ready = std::fs::File::from(ready);
    // The pod's namespaces, open from now on (see `Placement::joins`).
    let mut joins = Vec::new();
    let mut held = Vec::new();
    for j in &placement.joins {
        match crate::backend::native::join::open_namespace(j.kind, &j.path) {
            Ok(fd) => {
                joins.push(crate::backend::NamespaceJoin {
                    kind: j.kind,
                    path: format!("/proc/self/fd/{}", fd.as_raw_fd()).into(),
                });
                held.push(fd);
            }
            Err(e) => {
                let _ = write!(ready, "open namespace {}: {e}", j.path.display());
                return START_FAILED;
            }
        }
    }
    if let Some(sock) = &placement.console_socket {
        if let Err(e) = crate::oci::console::give_pty(sock) {
            let _ = write!(ready, "console socket {}: {e}", sock.display());
            return START_FAILED;
        }
    }
    let fifo = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(sd.fifo())
    {
        Ok(f) => f,
        Err(e) => {
            let _ = write!(ready, "open {}: {e}", sd.fifo().display());
            return START_FAILED;
        }
    };
    // hybox-runc, its own binary without the wasm worker (docs/oci.md), runs a wasm container's
    // worker from the hybox binary beside it: opened now, so `create` fails if it is missing and
    // `start` executes the file `create` checked, whatever is on disk by then.
    let worker = match sandbox.decision().backend == crate::policy::Backend::Wasm
        && !crate::backend::wasm::exe::runs_the_worker()
    {
        true => match crate::backend::wasm::exe::open_sibling() {
            Ok(fd) => Some(fd),
            Err(e) => {
                let _ = write!(ready, "{e}");
                return START_FAILED;
            }
        },
        false => None,
    };
    // The container's cgroup, with the monitor in it before `create` returns: the pid in the
    // pid file is then in the container's cgroup from the start, as runc's init is.
    let limits = crate::envelope::Limits::from(&sandbox.policy().resources);
    let root = HostConfig::default().cgroup_root;
    // The disk throttles (`linux.resources.blockIO`) before anything joins: on v1 their blkio
    // leaf is joined with the others from then on.
    let envelope =
        match Envelope::create_at(&root, &placement.cgroup_path, &limits).and_then(|mut e| {
            let io = IoLimit::from_policy(&sandbox.policy().resources.io)?;
            e.limit_io(&root, &io)?;
            e.enter().map(|()| e)
        }) {
            Ok(e) => e,
            Err(e) => {
                let e = OciError::Cgroup {
                    path: placement.cgroup_path.clone(),
                    source: e,
                };
                let _ = write!(ready, "{}", crate::error_chain(&e));
                return START_FAILED;
            }
        };
    if ready.write_all(b"k").is_err() {
        return START_FAILED;
    }
    drop(ready);
    if let Err(e) = wait_for_start(&fifo) {
        log.error(&format!("container {}: waiting for start: {e}", sd.id));
        return START_FAILED;
    }
    drop(fifo);
    if let Some(v) = &placement.rootfs {
        if let Err(e) = v.mount() {
            log.error(&format!("container {}: rootfs: {e}", sd.id));
            eprintln!("hybox-runc: container {}: rootfs: {e}", sd.id);
            v.remove();
            let _ = sd.write_exit(&ExitRecord {
                status: START_FAILED,
                outcome: format!("rootfs: {e}"),
            });
            return START_FAILED;
        }
    }
    forward_signals();
    let opts = RunOptions {
        // With process.terminal the stdio are the pty `give_pty` made: the controlling terminal.
        stdio: if placement.console_socket.is_some() {
            Stdio::Terminal
        } else {
            Stdio::Inherit
        },
        // A wasm guest that outgrows the container's memory limit is ended by the kernel's OOM
        // kill of the envelope, as a native one is: containerd learns of an OOM only from the
        // cgroup's OOM event (CRI `OOMKilled`, Docker's `OOMKilled`), which hybox must not fake.
        host: HostConfig {
            hybox_path: worker
                .as_ref()
                .map(|fd| format!("/proc/self/fd/{}", fd.as_raw_fd()).into()),
            wasm_memory_headroom: false,
            cache_dir: crate::backend::wasm::artifact::runtime_cache_dir(),
            ..HostConfig::default()
        },
        run_id: placement.run_id.clone(),
        join_namespaces: joins,
        pass_fds: passed,
        ..RunOptions::default()
    };
    let (status, outcome) = match sandbox.run_in(&opts, envelope) {
        Ok(r) if matches!(r.report.outcome, crate::report::Outcome::SetupError { .. }) => {
            let msg = r.report.outcome.to_string();
            log.error(&format!("container {}: cannot start: {msg}", sd.id));
            // Also on the container's stderr: `ctr run` and `docker logs` show it to the user.
            eprintln!("hybox-runc: container {}: cannot start: {msg}", sd.id);
            (r.report.exit_status, msg)
        }
        Ok(r) => {
            log.info(&format!(
                "container {}: {} on {} ({}){}; exit status {}",
                sd.id,
                r.report.outcome,
                r.report.backend,
                r.report.reasons.join("; "),
                compile_cache(&r.report.details.wasm),
                r.report.exit_status
            ));
            (r.report.exit_status, r.report.outcome.to_string())
        }
        Err(e) => {
            let msg = crate::error_chain(&e);
            log.error(&format!("container {}: cannot start: {msg}", sd.id));
            // Also on the container's stderr: `ctr run` and `docker logs` show it to the user.
            eprintln!("hybox-runc: container {}: cannot start: {msg}", sd.id);
            (START_FAILED, msg)
        }
    };
    // A SIGKILL from `kill`/`delete --force` that landed while the sandbox was being built ends
    // the start half-way (a setup error, a broken pipe): what ended it is the kill.
    let (status, outcome) = if status == START_FAILED && sd.was_killed() {
        (137, format!("killed (SIGKILL) while it started: {outcome}"))
    } else {
        (status, outcome)
    };
    drop(held);
    drop(worker);
    if let Some(v) = &placement.rootfs {
        v.remove();
    }
    let _ = sd.write_exit(&ExitRecord { status, outcome });
    status
}

/// What the wasm compile cache did for this start, for the exit line of the log (empty for a
/// native container): an operator reads there why a wasm container was slow to start.
fn compile_cache(w: &crate::report::details::WasmDetails) -> String {
    match (w.cache_hit, &w.cache_entry) {
        (Some(true), Some(e)) => format!("; module from the compile cache ({e})"),
        (Some(false), _) => {
            let why = w
                .cache_error
                .as_deref()
                .or(w.cache_rejected.as_deref())
                .map(|e| format!(": {e}"))
                .unwrap_or_else(|| match w.cache_entry {
                    Some(_) => " (not in the compile cache)".into(),
                    None => " (no compile cache directory)".into(),
                });
            format!(
                "; module compiled in {} ms{why}",
                w.compile_us.unwrap_or(0) / 1000
            )
        }
        _ => String::new(),
    }
}

/// Blocks until `start` writes its byte. A fifo opened for reading that never had a writer polls
/// as not ready (Linux reports POLLHUP only after a writer has come and gone), so this sleeps
/// until `start` opens it.
fn wait_for_start(mut fifo: &std::fs::File) -> std::io::Result<()> {
    loop {
        let mut p = libc::pollfd {
            fd: fifo.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one live pollfd.
        let n = unsafe { libc::poll(&mut p, 1, -1) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut b = [0u8; 1];
        return match fifo.read(&mut b) {
            Ok(1) => Ok(()),
            Ok(_) => Err(std::io::Error::other("the fifo was closed without a start")),
            Err(e) => Err(e),
        };
    }
}

/// Every fd above stdio but `keep` closed.
fn close_fds_except(keep: &[i32]) {
    let fds: Vec<i32> = match std::fs::read_dir("/proc/self/fd") {
        Ok(d) => d
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
            .collect(),
        Err(_) => return,
    };
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closing an fd of this process that nothing else in it owns: the monitor
            // has just been forked and holds no File or socket but `keep`'s.
            unsafe { libc::close(fd) };
        }
    }
}

/// A thread that passes [`FORWARDED`] signals on to the monitor's children (the sandbox's
/// process). If it cannot be installed the signals keep their default action and end the
/// monitor, which the container's processes survive only until their envelope is collected.
fn forward_signals() {
    let Ok(mut signals) = signal_hook::iterator::Signals::new(FORWARDED) else {
        return;
    };
    let me = std::process::id() as i32;
    let _ = std::thread::Builder::new()
        .name("hybox-runc-signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                for child in procfs::children(me) {
                    procfs::signal(child, sig);
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::Placement;

    #[test]
    fn the_cgroup_is_exactly_the_cgroups_path() {
        let p = Placement::for_container(Some("/hybox-test/ctr-run"), "ctr-run").unwrap();
        assert_eq!(p.cgroup_path, "/hybox-test/ctr-run");
        assert_eq!(p.run_id.as_deref(), Some("ctr-run"));
        let p = Placement::for_container(Some("pods/abc"), "abc").unwrap();
        assert_eq!(p.cgroup_path, "pods/abc");
        let e = Placement::for_container(Some("kubepods.slice:cri-containerd:abc"), "abc")
            .unwrap_err()
            .to_string();
        assert!(e.contains("linux.cgroupsPath"), "{e}");
        let p = Placement::for_container(None, "a b").unwrap();
        assert_eq!(
            (p.cgroup_path.as_str(), p.run_id),
            ("/hybox-runc/a b", None)
        );
    }
}
