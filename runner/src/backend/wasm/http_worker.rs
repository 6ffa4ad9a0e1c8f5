//! The worker of an HTTP function: `hybox __wasm-worker --http` (see `super::http` for the
//! supervisor and the pipes).
//!
//! One engine with the pooling allocator, the compiled component and one `ProxyPre`; HTTP/1.1
//! (hyper) on the Unix socket the supervisor named. Per request: a fresh `Store` with a fresh WASI
//! context, the policy's store limits, fuel and epoch deadline, a fresh instance, `handle` called,
//! everything dropped at the end. Nothing of an instance survives its request.
//!
//! The timeout covers the whole request, the response body included: running wasm is stopped by
//! the epoch deadline (a ticker thread bumps the engine's epoch), a guest waiting in a host call
//! (a pollable: a clock, a body stream that is slow to arrive or to drain) by a tokio timeout
//! around the request's task, which drops the store. A response whose handler failed after its head
//! was sent is cut (the body ends with an error, so the client sees an incomplete body, never a
//! complete-looking one); its cause is in the request's report.
//!
//! Outbound HTTP is denied unless the policy's `http.outbound_hosts` grants the request's exact
//! `host:port` (`super::http_outbound`); a refused `host:port` is named in the response's
//! `x-hybox-denied` header and the report.

use std::convert::Infallible;
use std::fs::File;
use std::os::fd::FromRawFd;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::http::{HeaderName, HeaderValue, Response, StatusCode};
use wasmtime::component::ResourceTable;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::http::{read_json, write_json, HttpCallReport, HttpLoad, HttpLoadReply};
use super::http_outbound::{denied_text, Outbound};
use super::worker::{
    self, classify, fuel_budget, wasm_memory_limit, CappedPipe, Captured, Limiter,
};
use super::{Job, JOB_FD, RESULT_FD};
use crate::report::Outcome;

/// How often the engine's epoch advances: the granularity of a running guest's deadline.
const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Store data of one request.
struct HttpState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    limiter: Limiter,
    hooks: Outbound,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// What every request shares.
struct Served {
    pre: ProxyPre<HttpState>,
    job: Job,
    fuel: Option<u64>,
    timeout: Duration,
    /// Where finished requests' reports go (the reply pipe).
    reports: Mutex<File>,
}

/// Builds the engine (pooling allocator with `concurrency` slots plus two, async support for the
/// wasi:http host), loads (cache or compile) the component and pre-instantiates the proxy world.
fn load(
    load: &HttpLoad,
    details: &mut crate::report::details::WasmDetails,
) -> Result<(Engine, ProxyPre<HttpState>), String> {
    let policy = &load.job.policy;
    let memory = wasm_memory_limit(policy.resources.memory.bytes());
    let page = 64 * 1024;
    let slot_memory = usize::try_from(memory.div_ceil(page) * page).unwrap_or(usize::MAX);
    let slots = load.concurrency.saturating_add(2);
    let per_component = policy.wasm.max_instances.max(1);
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(slots)
        .total_core_instances(slots.saturating_mul(per_component))
        .total_memories(slots.saturating_mul(per_component))
        .total_tables(slots.saturating_mul(per_component))
        .total_stacks(slots)
        .max_memory_size(slot_memory)
        .table_elements(usize::try_from(policy.wasm.max_table_elements).unwrap_or(usize::MAX));
    let mut config = worker::engine_config(policy, false);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    // Copy-on-write images of the initial memory: instantiating is mapping, not copying.
    config.memory_init_cow(true);
    // The guest's wasm stack lives on the fiber's stack: leave room above max_wasm_stack for the
    // host calls made from it.
    let stack = (policy.wasm.max_stack.bytes() as usize).saturating_add(1 << 20);
    config.async_stack_size(stack.max(2 << 20));
    let engine = Engine::new(&config).map_err(|e| format!("wasm engine: {e:#}"))?;
    let t = Instant::now();
    let (loaded, _) = worker::load(&engine, &load.job, details).map_err(|o| o.to_string())?;
    details.load_us = Some(t.elapsed().as_micros() as u64);
    details.wasm_memory_limit = Some(memory);
    details.pool_slots = Some(slots.into());
    let component = match loaded {
        worker::Loaded::Component(c) => c,
        worker::Loaded::Module(_) => return Err("an HTTP function must be a component".into()),
    };
    let mut linker = wasmtime::component::Linker::<HttpState>::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| format!("link WASI p2: {e:#}"))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| format!("link wasi:http: {e:#}"))?;
    let pre = linker
        .instantiate_pre(&component)
        .map_err(|e| format!("link: {e:#}"))?;
    let pre =
        ProxyPre::new(pre).map_err(|e| format!("link: not a wasi:http/proxy component: {e:#}"))?;
    Ok((engine, pre))
}

/// Entry point of `hybox __wasm-worker --http`: reads the load job, binds the socket, answers, then
/// serves until the request pipe closes. Returns the worker's exit code.
pub fn serve_main() -> i32 {
    // SAFETY: the supervisor placed the request pipe's read end at JOB_FD and the reply pipe's write
    // end at RESULT_FD before exec (see `super::http::spawn_http_worker`); nothing else owns them.
    let (mut requests, mut replies) =
        unsafe { (File::from_raw_fd(JOB_FD), File::from_raw_fd(RESULT_FD)) };
    let job: HttpLoad = match read_json(&mut requests) {
        Ok(Some(j)) => j,
        Ok(None) => return 0,
        Err(e) => {
            eprintln!("hybox http worker: reading the load job: {e}");
            return 125;
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        // Blocking WASI calls (files) go to this pool: bounded, the envelope counts threads.
        .max_blocking_threads(4)
        .enable_all()
        .thread_name("hybox-http-worker")
        .build();
    let runtime = match runtime {
        Ok(r) => r,
        Err(e) => {
            eprintln!("hybox http worker: tokio runtime: {e}");
            return 125;
        }
    };
    let mut details = crate::report::details::WasmDetails::default();
    let loaded = load(&job, &mut details).and_then(|(engine, pre)| {
        let _guard = runtime.enter();
        let std = std::os::unix::net::UnixListener::bind(&job.socket)
            .map_err(|e| format!("bind {}: {e}", job.socket.display()))?;
        std.set_nonblocking(true)
            .map_err(|e| format!("socket: {e}"))?;
        let listener =
            tokio::net::UnixListener::from_std(std).map_err(|e| format!("socket: {e}"))?;
        Ok((engine, pre, listener))
    });
    let (loaded, error) = match loaded {
        Ok(l) => (Some(l), None),
        Err(e) => (None, Some(e)),
    };
    if let Err(e) = write_json(&mut replies, &HttpLoadReply { error, details }) {
        eprintln!("hybox http worker: writing the load answer: {e}");
        return 125;
    }
    let Some((engine, pre, listener)) = loaded else {
        return 0;
    };
    // The supervisor closes the request pipe to stop the worker (or dies, which does the same).
    let _ = std::thread::Builder::new()
        .name("stop".into())
        .spawn(move || {
            let mut b = [0u8; 1];
            while matches!(std::io::Read::read(&mut requests, &mut b), Ok(n) if n > 0) {}
            std::process::exit(0);
        });
    let ticker = engine.clone();
    let _ = std::thread::Builder::new()
        .name("epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            ticker.increment_epoch();
        });
    let served = Arc::new(Served {
        pre,
        fuel: fuel_budget(&job.job.policy),
        timeout: Duration::from_millis(job.job.timeout_ms),
        job: job.job,
        reports: Mutex::new(replies),
    });
    runtime.block_on(accept_loop(listener, served))
}

async fn accept_loop(listener: tokio::net::UnixListener, served: Arc<Served>) -> i32 {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                eprintln!("hybox http worker: accept: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let served = served.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let served = served.clone();
                async move { Ok::<_, Infallible>(handle(served, req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(wasmtime_wasi_http::io::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// The response body the server streams: the guest's, unless the handler then failed.
type Reply = Response<http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>>;

/// How the request's task ended.
struct Done {
    outcome: Outcome,
    details: crate::report::details::WasmDetails,
}

/// One request: fresh store, limits, deadline and instance; the response head as soon as the guest
/// sets it (or an error response naming what stopped it); the report once everything is over.
async fn handle(served: Arc<Served>, req: hyper::Request<Incoming>) -> Reply {
    let t0 = Instant::now();
    let run_id = crate::host::new_run_id();
    let denied = Arc::new(Mutex::new(Vec::new()));
    let (omax, emax) = served.job.capture.unwrap_or((0, 0));
    let captured = Captured {
        stdout: CappedPipe::new(omax as usize),
        stderr: CappedPipe::new(emax as usize),
    };
    let mut builder = match worker::wasi_builder(&served.job, Vec::new(), Some(&captured)) {
        Ok(b) => b,
        Err(e) => {
            let step = e.to_string();
            return failure_reply(&run_id, &Outcome::SetupError { step }, "", &[]);
        }
    };
    let mut store = Store::new(
        served.pre.engine(),
        HttpState {
            wasi: builder.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            limiter: worker::limiter(&served.job),
            hooks: Outbound::new(
                served.job.policy.http.outbound_hosts.clone(),
                denied.clone(),
            ),
        },
    );
    store.limiter(|s| &mut s.limiter);
    if let Some(f) = served.fuel {
        if let Err(e) = store.set_fuel(f) {
            let step = format!("store: {e:#}");
            return failure_reply(&run_id, &Outcome::SetupError { step }, "", &[]);
        }
    }
    let ticks = (served.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
    store.set_epoch_deadline(ticks);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let prepared = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .and_then(|r| Ok((r, store.data_mut().http().new_response_outparam(tx)?)));
    let (request, out) = match prepared {
        Ok(x) => x,
        Err(e) => {
            let mut r = plain(StatusCode::BAD_REQUEST, format!("bad request: {e:#}\n"));
            set(&mut r, "x-hybox-run-id", &run_id);
            return r;
        }
    };
    // The task's outcome, to the body (how it ends) and to the report.
    let (body_tx, body_rx) = tokio::sync::oneshot::channel::<Outcome>();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<Done>();
    let task_served = served.clone();
    tokio::spawn(async move {
        let s = task_served;
        let mut details = crate::report::details::WasmDetails::default();
        let t1 = Instant::now();
        let result = tokio::time::timeout(s.timeout, async {
            let proxy = s.pre.instantiate_async(&mut store).await?;
            details.instantiate_us = Some(t1.elapsed().as_micros() as u64);
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, request, out)
                .await
        })
        .await;
        let outcome = match result {
            Ok(Ok(())) => Outcome::Exited { code: 0 },
            Ok(Err(e)) => classify(e, store.data().limiter.hit.clone(), s.fuel),
            Err(_elapsed) => {
                details.timeout_in = Some("host call (request deadline)".into());
                Outcome::Timeout
            }
        };
        if let (Some(f), Ok(left)) = (s.fuel, store.get_fuel()) {
            details.fuel_consumed = Some(f.saturating_sub(left));
        }
        // The instance, its memory and its body stream go now.
        drop(store);
        let _ = body_tx.send(outcome.clone());
        let _ = done_tx.send(Done { outcome, details });
    });
    let (mut reply, status, done_rx) = match rx.await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let (mut parts, body) = resp.into_parts();
            // The guest cannot speak for hybox.
            let theirs: Vec<HeaderName> = parts
                .headers
                .keys()
                .filter(|k| k.as_str().starts_with("x-hybox-"))
                .cloned()
                .collect();
            for k in theirs {
                parts.headers.remove(&k);
            }
            let body = Guarded {
                inner: body,
                ended: false,
                broken: false,
                done: Some(body_rx),
                outcome: None,
                over: false,
            };
            let mut r = Response::from_parts(parts, body.boxed_unsync());
            set(&mut r, "x-hybox-outcome", "exited");
            set(&mut r, "x-hybox-exit-code", "0");
            (r, Some(status), done_rx)
        }
        Ok(Err(code)) => {
            let mut r = plain(
                StatusCode::BAD_GATEWAY,
                format!("the function answered with an error: {code:?}\n"),
            );
            set(&mut r, "x-hybox-outcome", "exited");
            (r, Some(502), done_rx)
        }
        // The guest never set a response: the task is over (or ends now); say why.
        Err(_) => {
            let done = done_rx.await.unwrap_or(Done {
                outcome: Outcome::Trap {
                    message: "the request's task ended without a result".into(),
                },
                details: crate::report::details::WasmDetails::default(),
            });
            let stderr = String::from_utf8_lossy(&captured.stderr.snapshot().0).into_owned();
            let list = denied.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let r = failure_reply(&run_id, &done.outcome, &stderr, &list);
            let status = r.status().as_u16();
            report(&served, &run_id, done, Some(status), list, t0, &captured);
            return r;
        }
    };
    set(&mut reply, "x-hybox-backend", "wasm");
    set(&mut reply, "x-hybox-world", "wasi:http/proxy");
    set(&mut reply, "x-hybox-run-id", &run_id);
    let list = denied.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if !list.is_empty() {
        set(&mut reply, "x-hybox-denied", &denied_text(&list));
    }
    // The report once the body is over (or cut).
    let (served2, run_id2) = (served.clone(), run_id.clone());
    tokio::spawn(async move {
        let done = done_rx.await.unwrap_or(Done {
            outcome: Outcome::Trap {
                message: "the request's task ended without a result".into(),
            },
            details: crate::report::details::WasmDetails::default(),
        });
        let list = denied.lock().unwrap_or_else(|e| e.into_inner()).clone();
        report(&served2, &run_id2, done, status, list, t0, &captured);
    });
    reply
}

fn report(
    served: &Served,
    run_id: &str,
    done: Done,
    status: Option<u16>,
    denied: Vec<String>,
    t0: Instant,
    captured: &Captured,
) {
    let mut details = done.details;
    let (_, stderr_bytes) = captured.stderr.snapshot();
    details.stderr_bytes = Some(stderr_bytes);
    let r = HttpCallReport {
        run_id: run_id.to_string(),
        outcome: done.outcome,
        status,
        denied,
        duration_us: t0.elapsed().as_micros() as u64,
        details,
    };
    let mut out = served.reports.lock().unwrap_or_else(|e| e.into_inner());
    if let Err(e) = write_json(&mut *out, &r) {
        eprintln!("hybox http worker: writing a report: {e}");
    }
}

/// The answer when the handler stopped before it responded: 504 for the timeout, 500 otherwise
/// (a trap, a memory or fuel limit), 502 when it returned without a response; the outcome in
/// the headers, its message and the guest's stderr (a panic message) in the body.
fn failure_reply(run_id: &str, outcome: &Outcome, stderr: &str, denied: &[String]) -> Reply {
    let status = match outcome {
        Outcome::Timeout => StatusCode::GATEWAY_TIMEOUT,
        Outcome::Exited { .. } => StatusCode::BAD_GATEWAY,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let mut text = match outcome {
        Outcome::Exited { .. } => "hybox: the function returned without a response\n".to_string(),
        o => format!("hybox: the function did not answer: {o}\n"),
    };
    if !stderr.is_empty() {
        text.push_str("stderr:\n");
        text.push_str(stderr);
        if !stderr.ends_with('\n') {
            text.push('\n');
        }
    }
    let mut r = plain(status, text);
    set(&mut r, "x-hybox-outcome", &outcome_kind(outcome));
    set(
        &mut r,
        "x-hybox-exit-code",
        &outcome.exit_status().to_string(),
    );
    if let Some(l) = outcome.limit() {
        if let Some(s) = serde_json::to_value(l)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
        {
            set(&mut r, "x-hybox-limit", &s);
        }
    }
    set(&mut r, "x-hybox-backend", "wasm");
    set(&mut r, "x-hybox-world", "wasi:http/proxy");
    set(&mut r, "x-hybox-run-id", run_id);
    if !denied.is_empty() {
        set(&mut r, "x-hybox-denied", &denied_text(denied));
    }
    r
}

/// The outcome's kind (`exited`, `timeout`, `oom`, `trap`, ...), as in the serde tag.
fn outcome_kind(o: &Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn plain(status: StatusCode, text: String) -> Reply {
    let body = http_body_util::Full::new(Bytes::from(text))
        .map_err(|never: Infallible| match never {})
        .boxed_unsync();
    let mut r = Response::new(body);
    *r.status_mut() = status;
    set(&mut r, "content-type", "text/plain; charset=utf-8");
    r
}

fn set<B>(r: &mut Response<B>, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        r.headers_mut().insert(HeaderName::from_static(name), v);
    }
}

/// The guest's response body, ended only once the handler's task is over: an error (a cut body)
/// if the handler failed, the end of the body if it returned.
struct Guarded {
    inner: HyperOutgoingBody,
    /// The guest's body ended (or broke: `broken`).
    ended: bool,
    broken: bool,
    done: Option<tokio::sync::oneshot::Receiver<Outcome>>,
    /// The task's outcome, once known (`None` also when the task vanished).
    outcome: Option<Outcome>,
    /// The error was returned: the body is over.
    over: bool,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        loop {
            if this.over {
                return Poll::Ready(None);
            }
            if !this.ended {
                match Pin::new(&mut this.inner).poll_frame(cx) {
                    Poll::Ready(Some(Ok(f))) => return Poll::Ready(Some(Ok(f))),
                    Poll::Ready(Some(Err(_))) => {
                        this.ended = true;
                        this.broken = true;
                    }
                    Poll::Ready(None) => this.ended = true,
                    Poll::Pending => {}
                }
            }
            if let Some(rx) = this.done.as_mut() {
                match std::future::Future::poll(Pin::new(rx), cx) {
                    // Both the body and the task are registered to wake this body.
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(r) => {
                        this.done = None;
                        this.outcome = r.ok();
                        continue;
                    }
                }
            }
            let ok = !this.broken && matches!(this.outcome, Some(Outcome::Exited { code: 0 }));
            if !ok {
                this.over = true;
                let why = match (&this.outcome, this.broken) {
                    (Some(Outcome::Exited { .. }), true) => "its body stream broke".to_string(),
                    (Some(o), _) => o.to_string(),
                    (None, _) => "the request's task ended without a result".into(),
                };
                return Poll::Ready(Some(Err(std::io::Error::other(format!(
                    "the function failed after its response started: {why}"
                )))));
            }
            if this.ended {
                return Poll::Ready(None);
            }
            // The handler returned; its last frames are still queued (the body wakes us).
            return Poll::Pending;
        }
    }
}
