//! HTTP functions: a component that exports `wasi:http/incoming-handler` (the `wasi:http/proxy`
//! world that Spin, `wasmtime serve` and wasmCloud functions are written against), served by one
//! long-lived worker process in the function's own envelope. See `docs/serve.md`.
//!
//! The supervisor ([`HttpFunction`]) creates the envelope, starts `hybox __wasm-worker --http`,
//! moves it into the envelope and only then sends the load job, so the untrusted compile happens
//! inside the envelope (as for every other wasm run). The worker (`super::http_worker`) answers
//! with a load reply, then serves HTTP/1.1 on a Unix socket in a private (0700) scratch directory:
//! the server forwards each request there and streams the answer back. Every request gets a fresh
//! `Store` and instance from one pre-instantiated `ProxyPre`, the policy's memory, fuel and timeout.
//!
//! Pipes, as for the warm worker: fd 3 carries the load job (and its closing tells the worker to
//! exit), fd 4 the load reply and then one [`HttpCallReport`] per finished request (what the
//! metrics count: the outcome after the body, not only the one at the response head). Messages are
//! `u32 LE length | JSON`.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::{Job, SUPERVISOR_GRACE, WORKER_SUBCOMMAND};
use crate::backend::process::Spawned;
use crate::backend::{BackendError, EnvelopeJoin};
use crate::envelope::{Envelope, IoLimit, Limits};
use crate::host::HostConfig;
use crate::policy::{Backend, OnUnenforceable, Policy};
use crate::report::{Degradation, Outcome};
use crate::workload::{Format, Workload};

/// The extra argument that turns `hybox __wasm-worker` into an HTTP function's worker.
pub const HTTP_ARG: &str = "--http";
/// The export that makes a component an HTTP function (any `0.2.x` version).
pub const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";
/// Largest message either side accepts (a load job holds a policy; a report a trap message).
pub(crate) const MAX_MESSAGE: u64 = 1 << 20;

/// The world a component serves, read from its exports without compiling it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum World {
    /// Exports `wasi:http/incoming-handler`: one request in, one response out.
    HttpProxy,
    /// Exports `wasi:cli/run`: stdin in, stdout out.
    Command,
    /// Neither (a library component).
    Other,
}

impl std::fmt::Display for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            World::HttpProxy => "wasi:http/proxy",
            World::Command => "wasi:cli/command",
            World::Other => "neither wasi:cli/command nor wasi:http/proxy",
        })
    }
}

/// Which world the component at `path` serves: its top-level exports (nested components and
/// modules are not looked into). `None` when `path` is not a component binary (a core module, a
/// text file, a precompiled artifact) or does not parse.
pub fn component_world(path: &Path) -> Option<World> {
    let bytes = std::fs::read(path).ok()?;
    if !wasmparser::Parser::is_component(&bytes) {
        return None;
    }
    let (mut depth, mut http, mut run) = (0usize, false, false);
    for payload in wasmparser::Parser::new(0).parse_all(&bytes) {
        match payload.ok()? {
            wasmparser::Payload::Version { .. } => depth += 1,
            wasmparser::Payload::End(_) => depth = depth.saturating_sub(1),
            wasmparser::Payload::ComponentExportSection(s) if depth == 1 => {
                for e in s {
                    let name = e.ok()?.name.name;
                    let base = name.split('@').next().unwrap_or(name);
                    http |= base == INCOMING_HANDLER;
                    run |= base == "wasi:cli/run";
                }
            }
            _ => {}
        }
    }
    Some(if http {
        World::HttpProxy
    } else if run {
        World::Command
    } else {
        World::Other
    })
}

/// The load job of an HTTP worker.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HttpLoad {
    pub job: Job,
    /// Where the worker binds its Unix socket (in a 0700 directory of the supervisor's).
    pub socket: PathBuf,
    /// Requests the worker serves at once (its pooling allocator's instance slots).
    pub concurrency: u32,
}

/// The worker's answer to the load job.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct HttpLoadReply {
    pub error: Option<String>,
    pub details: crate::report::details::WasmDetails,
}

/// What one request did, reported by the worker once the handler and its body are done.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HttpCallReport {
    /// The request's run id (also its `x-hybox-run-id` header).
    pub run_id: String,
    /// `exited` (code 0) when the handler returned, else what stopped it (timeout, oom, trap, ...).
    pub outcome: Outcome,
    /// The status the client got, if a response started.
    pub status: Option<u16>,
    /// Outbound requests refused (`host:port` each).
    pub denied: Vec<String>,
    /// Store creation to the handler's end (after its body).
    pub duration_us: u64,
    /// `instantiate_us`, `fuel_consumed`, ...
    pub details: crate::report::details::WasmDetails,
}

/// Called with every finished request's report (the server's metrics).
pub type ReportSink = Arc<dyn Fn(&HttpCallReport) + Send + Sync>;

/// Writes one `u32 LE length | JSON` message.
pub(crate) fn write_json(out: &mut impl Write, value: &impl Serialize) -> std::io::Result<()> {
    let json = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(4 + json.len());
    buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
    buf.extend_from_slice(&json);
    out.write_all(&buf)
}

/// Reads one message; `Ok(None)` on a clean end of stream before its first byte.
pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(
    input: &mut impl Read,
) -> std::io::Result<Option<T>> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_le_bytes(len) as u64;
    if len > MAX_MESSAGE {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("message of {len} bytes, at most {MAX_MESSAGE} expected"),
        ));
    }
    let mut buf = vec![0u8; len as usize];
    input.read_exact(&mut buf)?;
    serde_json::from_slice(&buf)
        .map(Some)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

/// The running worker, seen from the supervisor.
struct Worker {
    child: Spawned,
    /// Kept open: the worker exits when it closes.
    _requests: File,
    /// Set by the report reader when the worker's reply pipe ends (the worker exited or died).
    gone: Arc<std::sync::atomic::AtomicBool>,
    /// The envelope's OOM kills when this worker started.
    ooms_at_start: u64,
    /// Why the kernel refused the worker its own network namespace, if it did.
    refused: Option<String>,
}

impl Worker {
    fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A wasi:http function: one worker in the function's own envelope, serving requests on a Unix
/// socket. Dropping it kills the worker and destroys the envelope.
pub struct HttpFunction {
    run_id: String,
    policy: Policy,
    host: HostConfig,
    load: HttpLoadTemplate,
    socket: PathBuf,
    // Drop order: the worker, then the envelope, then the socket's directory.
    worker: Mutex<Option<Worker>>,
    envelope: Option<Envelope>,
    _dir: crate::scratch::ScratchDir,
    sink: Arc<Mutex<Option<ReportSink>>>,
    /// Workers get their own network namespace (until the kernel refuses one).
    private_net: std::sync::atomic::AtomicBool,
    degradations: Vec<Degradation>,
    load_details: Mutex<crate::report::details::WasmDetails>,
}

/// What every (re)start of the worker sends.
struct HttpLoadTemplate {
    job: Job,
    concurrency: u32,
}

impl HttpFunction {
    /// Creates the envelope, starts the worker in it and loads `artifact` (a component exporting
    /// `wasi:http/incoming-handler`). `concurrency` requests run at once, each with the policy's
    /// memory: the envelope's memory limit is `concurrency` times the policy's.
    pub fn load(
        artifact: &Path,
        policy: &Policy,
        host: &HostConfig,
        concurrency: usize,
    ) -> Result<HttpFunction, BackendError> {
        let preflight = |why: String| BackendError::Workload {
            artifact: artifact.to_path_buf(),
            why,
        };
        let workload = Workload::detect(artifact).map_err(|e| preflight(e.to_string()))?;
        let art = workload
            .variant(Backend::Wasm)
            .ok_or_else(|| preflight("no wasm variant".into()))?
            .clone();
        if art.format != Format::WasmComponent {
            return Err(preflight(format!(
                "an HTTP function must be a component binary ({} given)",
                art.format
            )));
        }
        let mut degradations = Vec::new();
        if policy.wasm.os_sandbox {
            degradations.push(super::os_sandbox_unavailable(
                policy,
                "namespaces and a seccomp filter around the HTTP function's worker are not implemented in this build".into(),
                "",
            )?);
        }
        let concurrency = concurrency.clamp(1, 256) as u32;
        let run_id = format!("http-{}", crate::host::new_run_id());
        let mut limits = Limits::from(&policy.resources);
        limits.memory_bytes = limits.memory_bytes.saturating_mul(concurrency as u64);
        let envelope =
            match Envelope::create(&host.cgroup_root, &host.cgroup_parent, &run_id, &limits)
                .and_then(|mut e| {
                    e.limit_io(
                        &host.cgroup_root,
                        &IoLimit::from_policy(&policy.resources.io)?,
                    )?;
                    Ok(e)
                }) {
                Ok(e) => Some(e),
                Err(e)
                    if e.is_unavailable()
                        && policy.on_unenforceable == OnUnenforceable::Degrade =>
                {
                    degradations.push(Degradation {
                        what: "envelope".into(),
                        why: e.to_string(),
                    });
                    None
                }
                Err(e) => return Err(BackendError::Envelope(e)),
            };
        let dir = crate::scratch::scratch_dir("hybox-http-").map_err(BackendError::io(
            "create the HTTP function's socket directory",
        ))?;
        let socket = dir.path().join("s");
        let job = Job {
            artifact: art.path.clone(),
            format: art.format.clone(),
            args: Vec::new(),
            env: policy.workload_env().into_iter().collect(),
            policy: policy.clone(),
            capture: Some((
                policy.resources.stdout_max.bytes(),
                policy.resources.stderr_max.bytes(),
            )),
            // No `/tmp` per request yet: a request's files would need a directory per request.
            tmp_dir: None,
            cache_dir: super::artifact::cache_dir(host).ok(),
            timeout_ms: policy.resources.timeout.as_std().as_millis() as u64,
            own_network_namespace: false,
            store_memory_is_cgroup_limit: false,
        };
        let mut f = HttpFunction {
            run_id,
            policy: policy.clone(),
            host: host.clone(),
            load: HttpLoadTemplate { job, concurrency },
            socket,
            worker: Mutex::new(None),
            envelope,
            _dir: dir,
            sink: Arc::new(Mutex::new(None)),
            private_net: std::sync::atomic::AtomicBool::new(true),
            degradations,
            load_details: Mutex::new(crate::report::details::WasmDetails::default()),
        };
        let mut w = f.start()?;
        if let Some(why) = w.refused.take() {
            // Under `network: loopback` a shared loopback is a policy matter; under `none` the
            // namespace is defense in depth (the guest has no sockets, the hook refuses outbound
            // requests), and its absence takes nothing the policy promised.
            if policy.network == crate::policy::Network::Loopback {
                match super::private_loopback_unavailable(policy, why) {
                    Ok(d) => f.degradations.push(d),
                    Err(e) => {
                        w.kill();
                        return Err(e);
                    }
                }
            }
        }
        *f.worker.lock().unwrap_or_else(|e| e.into_inner()) = Some(w);
        Ok(f)
    }

    /// The Unix socket the worker serves HTTP/1.1 on.
    pub fn socket_path(&self) -> &Path {
        &self.socket
    }
    pub fn run_id(&self) -> &str {
        &self.run_id
    }
    pub fn degradations(&self) -> &[Degradation] {
        &self.degradations
    }
    pub fn envelope(&self) -> Option<&Envelope> {
        self.envelope.as_ref()
    }
    /// What the last load reported (`cache_hit`, `compile_us`, `pool_slots`, ...).
    pub fn load_details(&self) -> crate::report::details::WasmDetails {
        self.load_details
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Sets where finished requests' reports go (replacing any earlier sink).
    pub fn set_report_sink(&self, sink: ReportSink) {
        *self.sink.lock().unwrap_or_else(|e| e.into_inner()) = Some(sink);
    }

    /// Restarts the worker if it is gone (exited, killed by the cgroup OOM killer). Returns
    /// whether it started a new one. Blocking (a load: a compile-cache hit, not a compile).
    pub fn ensure_worker(&self) -> Result<bool, BackendError> {
        let mut g = self.worker.lock().unwrap_or_else(|e| e.into_inner());
        let alive = g
            .as_ref()
            .is_some_and(|w| !w.gone.load(std::sync::atomic::Ordering::SeqCst));
        if alive {
            return Ok(false);
        }
        if let Some(w) = g.take() {
            w.kill();
        }
        if let Some(env) = &self.envelope {
            let _ = env.kill_all();
        }
        let _ = std::fs::remove_file(&self.socket);
        *g = Some(self.start()?);
        Ok(true)
    }

    /// Starts the worker, moves it into the envelope, sends the load job and waits for the answer;
    /// then a thread reads the worker's per-request reports until its reply pipe ends.
    fn start(&self) -> Result<Worker, BackendError> {
        let exe = super::worker_exe(&self.host)?;
        let (req_r, req_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| BackendError::io("pipe")(e.into()))?;
        let (rep_r, rep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| BackendError::io("pipe")(e.into()))?;
        let started = BackendError::io(format!(
            "start the HTTP function's worker {}",
            exe.path().display()
        ));
        // Its own network namespace (only its own `lo`) unless the policy grants outbound hosts,
        // which it must reach from the host's network; the WASI sockets and the outbound hook
        // still decide what the guest may use.
        let private = self.policy.http.outbound_hosts.is_empty()
            && self.private_net.load(std::sync::atomic::Ordering::SeqCst);
        let spawned = if private {
            super::netns::spawn_private(|flags| spawn_http_worker(&exe, &req_r, &rep_w, flags))
                .map(|(c, what)| (c, Some(what)))
        } else {
            spawn_http_worker(&exe, &req_r, &rep_w, 0).map(|c| (c, None))
        };
        let (child, namespace, refused) = match spawned {
            Ok((c, ns)) => (c, ns, None),
            Err(e) if private && super::netns::refused(&e) => {
                // Remembered: a restarted worker does not try again.
                self.private_net
                    .store(false, std::sync::atomic::Ordering::SeqCst);
                let why = format!("clone(CLONE_NEWUSER|CLONE_NEWNET) failed: {e}");
                let c = spawn_http_worker(&exe, &req_r, &rep_w, 0).map_err(started)?;
                (c, None, Some(why))
            }
            Err(e) => return Err(started(e)),
        };
        drop(req_r);
        drop(rep_w);
        let mut requests = File::from(req_w);
        let mut replies = File::from(rep_r);
        let kill = |mut c: Spawned| {
            let _ = c.kill();
            c.wait()
        };
        // Into the envelope before the worker has seen a byte of the guest: it is blocked reading.
        if let Some(env) = &self.envelope {
            if let Err(e) = env.join(child.id() as i32) {
                let _ = kill(child);
                return Err(BackendError::io(
                    "move the HTTP function's worker into the envelope",
                )(e));
            }
        }
        let mut job = self.load.job.clone();
        job.own_network_namespace = namespace.is_some();
        let load = HttpLoad {
            job,
            socket: self.socket.clone(),
            concurrency: self.load.concurrency,
        };
        if let Err(e) = write_json(&mut requests, &load) {
            let _ = kill(child);
            return Err(BackendError::io(
                "send the load job to the HTTP function's worker",
            )(e));
        }
        // Loading includes a compile on a cache miss: give it the policy's whole timeout.
        let wait = self.policy.resources.timeout.as_std() + SUPERVISOR_GRACE;
        let artifact = self.load.job.artifact.clone();
        match super::protocol::readable_within(&replies, wait) {
            Ok(true) => {}
            Ok(false) => {
                let _ = kill(child);
                return Err(BackendError::WarmLoad {
                    artifact,
                    why: format!("no answer to the load job within {wait:?}"),
                });
            }
            Err(e) => {
                let _ = kill(child);
                return Err(BackendError::io("wait for the HTTP worker's load answer")(
                    e,
                ));
            }
        }
        let reply = match read_json::<HttpLoadReply>(&mut replies) {
            Ok(Some(r)) => r,
            other => {
                let status = kill(child);
                return Err(BackendError::WarmLoad {
                    artifact,
                    why: format!(
                        "no load answer from the HTTP worker ({}; worker exit: {status:?})",
                        match other {
                            Ok(_) => "end of stream".to_string(),
                            Err(e) => e.to_string(),
                        }
                    ),
                });
            }
        };
        if let Some(why) = reply.error {
            let _ = kill(child);
            return Err(BackendError::WarmLoad { artifact, why });
        }
        let mut details = reply.details;
        details.network_namespace = namespace.map(str::to_string);
        *self.load_details.lock().unwrap_or_else(|e| e.into_inner()) = details;
        let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (sink, flag) = (self.sink.clone(), gone.clone());
        let reader = std::thread::Builder::new()
            .name("hybox-http-reports".into())
            .spawn(move || {
                while let Ok(Some(r)) = read_json::<HttpCallReport>(&mut replies) {
                    let s = sink.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    if let Some(s) = s {
                        s(&r);
                    }
                }
                flag.store(true, std::sync::atomic::Ordering::SeqCst);
            });
        if let Err(e) = reader {
            let _ = kill(child);
            return Err(BackendError::io("start the HTTP worker's report reader")(e));
        }
        Ok(Worker {
            child,
            _requests: requests,
            gone,
            ooms_at_start: self.oom_kills(),
            refused,
        })
    }

    /// Whether the envelope's OOM killer fired since the current worker started (asked after a
    /// request failed: reading the cgroup's counters on every request would cost more than the
    /// request itself).
    pub fn worker_oom_killed(&self) -> bool {
        let at_start = self
            .worker
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|w| w.ooms_at_start);
        at_start.is_some_and(|n| self.oom_kills() > n)
    }

    /// OOM kills in the envelope so far (a worker killed by the cgroup's OOM killer).
    pub fn oom_kills(&self) -> u64 {
        self.envelope
            .as_ref()
            .map(|e| e.usage().oom_kills)
            .unwrap_or(0)
    }
}

impl Drop for HttpFunction {
    fn drop(&mut self) {
        if let Some(w) = self
            .worker
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            w.kill();
        }
        if let Some(env) = self.envelope.take() {
            // destroy() kills anything left in the cgroup, removes it and verifies it is gone.
            if let Err(e) = env.destroy() {
                tracing::error!(error = %e, run_id = %self.run_id, "HTTP function envelope teardown");
            }
        }
    }
}

/// Starts `hybox __wasm-worker --http` with the request pipe at fd 3, the reply pipe at fd 4, no
/// other fds, an empty environment, stdin and stdout on /dev/null, stderr inherited; in the
/// namespaces `private_net` names (then with its own `lo` up), or in none.
fn spawn_http_worker(
    exe: &super::WorkerExe,
    req_r: &OwnedFd,
    rep_w: &OwnedFd,
    private_net: libc::c_int,
) -> std::io::Result<Spawned> {
    let (j, r) = (req_r.as_raw_fd(), rep_w.as_raw_fd());
    let program = crate::backend::process::Program {
        program: exe.fd(),
        name: exe.path(),
        args: &[WORKER_SUBCOMMAND, HTTP_ARG],
        namespaces: private_net,
        null_stdin_stdout: true,
    };
    let prepare = move || {
        if private_net != 0 {
            super::netns::loopback_up()?;
        }
        // SAFETY: in the child before exec, with both pipe ends open.
        unsafe { super::place_worker_fds(j, r, true) }
    };
    // SAFETY: `prepare` makes only raw syscalls (socket, ioctl, close, fcntl, dup2, close_range),
    // allocates nothing and cannot panic.
    unsafe { crate::backend::process::spawn(&program, &prepare) }
}
