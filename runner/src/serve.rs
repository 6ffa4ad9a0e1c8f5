//! `hybox serve`: every function bundle of a directory over HTTP (axum on tokio), each call isolated.
//!
//! - `POST /v1/functions/{name}/invoke`: the request body is the function's stdin, its stdout the
//!   response body; `x-hybox-outcome`, `x-hybox-exit-code`, `x-hybox-backend`, `x-hybox-start`,
//!   `x-hybox-duration-ms`, `x-hybox-run-id` and `x-hybox-limit` say what happened. `?report=1`
//!   returns `{"start", "stdout", "stderr", "report"}` as JSON instead. A call that ran answers 200
//!   whatever its outcome; 404 unknown function, 429 (with `Retry-After`) when the function's
//!   concurrency and queue are full, 503 while draining, 500 when hybox could not run the call.
//! - `GET /v1/functions`: name, backend, decision reasons, limits of every function, and the bundles
//!   that were skipped with why.
//! - `GET /healthz`, `GET /metrics` (Prometheus text).
//!
//! Calls are blocking (a wasm worker round trip, a native sandbox): they run on tokio's blocking
//! pool, at most `max_concurrency` per function (a semaphore; the wasm pool has as many workers),
//! with at most `max_queue` more waiting. SIGTERM or SIGINT drains: no new connections or calls,
//! in-flight calls finish, then every function's workers and envelopes are torn down. A second signal
//! tears everything down at once and exits.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, Query, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::function::{Function, FunctionError, FunctionOptions, Invocation};
use crate::policy::{Overrides, Policy};
use crate::workload::{Workload, MANIFEST};
use crate::HostConfig;

mod http_fn;
mod metrics;
mod routes;

use metrics::{CallLabels, DeathLabels, FnLabels, LimitLabels, Metrics, RejectLabels, StartLabels};

/// What `hybox serve` needs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub functions_dir: PathBuf,
    pub listen: SocketAddr,
    pub max_concurrency: usize,
    pub max_queue: usize,
    /// Overrides every bundle policy's `resources.timeout`.
    pub timeout: Option<crate::units::Duration>,
    pub native_pool: usize,
    pub max_body: usize,
    pub host: HostConfig,
}

/// Why the server could not start or stopped badly.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("cannot read the functions directory {path}")]
    ReadDir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot listen on {addr}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the HTTP server failed")]
    Http(#[source] std::io::Error),
    #[error("bundles `{first}` and `{second}` claim overlapping routes ({first_route} and {second_route}): a request path may reach only one function")]
    RouteClash {
        first: String,
        first_route: String,
        second: String,
        second_route: String,
    },
    #[error("function `{function}`: http.route: {why}")]
    Route { function: String, why: String },
}

/// A bundle that was not loaded, and why (the full error chain, one line).
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub path: String,
    pub error: String,
}

/// Loads every bundle directory in `dir` (sorted by name). A directory that fails (bad manifest,
/// bad artifact, no backend, compile error, duplicate name) is reported on stderr and skipped.
pub fn load_functions(
    dir: &Path,
    opts: &FunctionOptions,
    timeout: Option<crate::units::Duration>,
) -> Result<(Vec<Function>, Vec<Skipped>), ServeError> {
    let entries = std::fs::read_dir(dir).map_err(|e| ServeError::ReadDir {
        path: dir.display().to_string(),
        source: e,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    let mut loaded: Vec<Function> = Vec::new();
    let mut skipped = Vec::new();
    for d in dirs {
        let result = load_one(&d, opts, timeout).and_then(|f| {
            if loaded.iter().any(|g| g.name() == f.name()) {
                Err(format!(
                    "a function named `{}` is already loaded from another bundle",
                    f.name()
                ))
            } else {
                Ok(f)
            }
        });
        match result {
            Ok(f) => {
                eprintln!(
                    "hybox serve: loaded `{}` from {} ({} backend)",
                    f.name(),
                    d.display(),
                    f.backend()
                );
                loaded.push(f);
            }
            Err(error) => {
                eprintln!("hybox serve: skipping {}: {error}", d.display());
                skipped.push(Skipped {
                    path: d.display().to_string(),
                    error,
                });
            }
        }
    }
    Ok((loaded, skipped))
}

fn load_one(
    dir: &Path,
    opts: &FunctionOptions,
    timeout: Option<crate::units::Duration>,
) -> Result<Function, String> {
    if !dir.join(MANIFEST).exists() {
        return Err(format!("no {MANIFEST} (not a function bundle)"));
    }
    let workload = Workload::detect(dir).map_err(|e| crate::error_chain(&e))?;
    let mut policy = match &workload {
        Workload::Bundle(b) => match &b.policy {
            Some(p) => Policy::from_file(p).map_err(|e| crate::error_chain(&e))?,
            None => Policy::default(),
        },
        Workload::Single(_) => Policy::default(),
    };
    if timeout.is_some() {
        policy = policy
            .with_overrides(&Overrides {
                timeout,
                ..Overrides::default()
            })
            .map_err(|e| crate::error_chain(&e))?;
    }
    Function::load(dir, Some(policy), opts).map_err(|e| crate::error_chain(&e))
}

// ---------------------------------------------------------------------------------------------------
// The server.

struct Served {
    function: Arc<Function>,
    slots: Arc<Semaphore>,
    queued: AtomicUsize,
    max_queue: usize,
    labels: FnLabels,
    /// Kept-alive connections to an HTTP function's worker.
    conns: http_fn::Conns,
}

struct AppState {
    functions: BTreeMap<String, Served>,
    /// Routes claimed at the root by HTTP functions (`http.route`).
    routes: routes::Routes,
    skipped: Vec<Skipped>,
    metrics: Metrics,
    draining: AtomicBool,
}

/// Runs the server until `stop` delivers a signal number (the CLI's [`crate::cli::signals::drain_on_signal`]
/// sends the first SIGTERM or SIGINT), then drains and tears everything down.
pub fn run(
    cfg: ServeConfig,
    stop: tokio::sync::mpsc::UnboundedReceiver<i32>,
) -> Result<(), ServeError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("hybox-serve")
        .build()
        .map_err(ServeError::Runtime)?;
    rt.block_on(serve(cfg, stop))
}

async fn serve(
    cfg: ServeConfig,
    mut sig_rx: tokio::sync::mpsc::UnboundedReceiver<i32>,
) -> Result<(), ServeError> {
    let opts = FunctionOptions {
        host: cfg.host.clone(),
        max_concurrency: cfg.max_concurrency.max(1),
        ..FunctionOptions::default()
    };
    let dir = cfg.functions_dir.clone();
    let timeout = cfg.timeout;
    let native_pool = cfg.native_pool;
    let (functions, skipped) = tokio::task::spawn_blocking(move || {
        let opts = FunctionOptions {
            native_pool,
            ..opts
        };
        load_functions(&dir, &opts, timeout)
    })
    .await
    .map_err(|e| ServeError::Runtime(std::io::Error::other(e)))??;
    let routes = routes::claimed(&functions)?;
    for (route, name) in &routes {
        eprintln!("hybox serve: route {route} -> `{name}`");
    }
    let metrics = Metrics::new();
    let mut map = BTreeMap::new();
    for f in functions {
        let labels = FnLabels {
            function: f.name().to_string(),
            backend: f.backend().to_string(),
        };
        // Series that exist from the start, so a scrape shows every function.
        metrics.in_flight.get_or_create(&labels).set(0);
        metrics.queue_depth.get_or_create(&labels).set(0);
        if let Some(h) = f.http() {
            h.set_report_sink(http_fn::metrics_sink(&metrics, &labels));
        }
        map.insert(
            f.name().to_string(),
            Served {
                slots: Arc::new(Semaphore::new(f.max_concurrency())),
                function: Arc::new(f),
                queued: AtomicUsize::new(0),
                max_queue: cfg.max_queue,
                labels,
                conns: http_fn::Conns::default(),
            },
        );
    }
    let state = Arc::new(AppState {
        functions: map,
        routes,
        skipped,
        metrics,
        draining: AtomicBool::new(false),
    });
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/functions", get(list))
        .route(
            "/v1/functions/{name}/invoke",
            post(invoke).fallback(http_fn::forward),
        )
        // wasi:http functions: every method, the rest of the path and the query forwarded.
        .route("/v1/functions/{name}", any(http_fn::forward))
        .route("/v1/functions/{name}/", any(http_fn::forward))
        .route("/v1/functions/{name}/{*rest}", any(http_fn::forward))
        .fallback(routes::routed)
        .layer(DefaultBodyLimit::max(cfg.max_body))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|e| ServeError::Bind {
            addr: cfg.listen,
            source: e,
        })?;
    let local = listener.local_addr().map_err(|e| ServeError::Bind {
        addr: cfg.listen,
        source: e,
    })?;
    if !local.ip().is_loopback() {
        eprintln!("hybox serve: warning: listening on {local}, which is not a loopback address");
    }
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "hybox serve: listening on http://{local} ({} functions, {} skipped)",
            state.functions.len(),
            state.skipped.len()
        );
        let _ = out.flush();
    }
    let drain_state = state.clone();
    let shutdown = async move {
        let sig = sig_rx.recv().await.unwrap_or(libc::SIGTERM);
        eprintln!(
            "hybox serve: signal {sig}: draining (in-flight calls finish, new ones are refused)"
        );
        drain_state.draining.store(true, Ordering::SeqCst);
    };
    // No Nagle: a streamed response (a wasi:http function's head, then its body chunks) would
    // otherwise wait for the client's delayed ACK (~40 ms) between its first writes.
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(ServeError::Http)?;
    // Connections are closed; calls whose client went away may still run on the blocking pool.
    let t = Instant::now();
    for s in state.functions.values() {
        s.function.shutdown();
    }
    let longest = state
        .functions
        .values()
        .map(|s| s.function.policy().resources.timeout.as_std())
        .max()
        .unwrap_or_default();
    let give_up = t + longest + Duration::from_secs(5);
    while Instant::now() < give_up
        && state
            .functions
            .values()
            .any(|s| s.slots.available_permits() < s.function.max_concurrency())
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Every function's workers, pre-built sandboxes and envelopes go with the last reference.
    let names: Vec<String> = state.functions.keys().cloned().collect();
    drop(state);
    // Pre-built sandboxes that served a call finish their teardown in the background.
    let give_up = Instant::now() + Duration::from_secs(10);
    while crate::sandbox::pending_teardowns() > 0 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let left = crate::envelope::teardown_all();
    for e in &left {
        eprintln!("hybox serve: teardown: {e}");
    }
    eprintln!(
        "hybox serve: drained {} functions in {:.0} ms; stopped",
        names.len(),
        t.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

async fn healthz(State(state): State<Arc<AppState>>) -> Response {
    if state.draining.load(Ordering::SeqCst) {
        (StatusCode::SERVICE_UNAVAILABLE, "draining\n").into_response()
    } else {
        (StatusCode::OK, "ok\n").into_response()
    }
}

async fn metrics_text(State(state): State<Arc<AppState>>) -> Response {
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &state.metrics.registry) {
        return (StatusCode::INTERNAL_SERVER_ERROR, format!("encode: {e}\n")).into_response();
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        out,
    )
        .into_response()
}

#[derive(Serialize)]
struct FunctionInfo {
    name: String,
    backend: String,
    reasons: Vec<String>,
    artifact: String,
    limits: serde_json::Value,
    max_concurrency: usize,
    max_queue: usize,
    /// Native: pre-built sandboxes kept ready (0: every call is cold).
    native_pool: usize,
    /// Native: why the pool could not pre-build its last sandbox, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pool_error: Option<String>,
    /// HTTP functions: the route claimed at the root (`http.route`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    route: Option<String>,
}

#[derive(Serialize)]
struct FunctionList {
    functions: Vec<FunctionInfo>,
    skipped: Vec<Skipped>,
}

async fn list(State(state): State<Arc<AppState>>) -> Json<FunctionList> {
    let functions = state
        .functions
        .values()
        .map(|s| {
            let f = &s.function;
            FunctionInfo {
                name: f.name().to_string(),
                backend: f.backend().to_string(),
                reasons: f.reasons().to_vec(),
                artifact: f.artifact().display().to_string(),
                limits: serde_json::to_value(&f.policy().resources).unwrap_or_default(),
                max_concurrency: f.max_concurrency(),
                max_queue: s.max_queue,
                native_pool: f.native_pool(),
                pool_error: f.pool_error(),
                route: f.policy().http.route.clone(),
            }
        })
        .collect();
    Json(FunctionList {
        functions,
        skipped: state.skipped.clone(),
    })
}

#[derive(serde::Deserialize)]
struct InvokeQuery {
    report: Option<String>,
}

fn error(status: StatusCode, msg: String) -> Response {
    (status, Json(serde_json::json!({ "error": msg }))).into_response()
}

/// Decrements the queue gauge however the wait ends (also when the client goes away).
struct Queued<'a> {
    served: &'a Served,
    metrics: &'a Metrics,
}

impl Drop for Queued<'_> {
    fn drop(&mut self) {
        self.served.queued.fetch_sub(1, Ordering::SeqCst);
        self.metrics
            .queue_depth
            .get_or_create(&self.served.labels)
            .dec();
    }
}

async fn invoke(
    State(state): State<Arc<AppState>>,
    UrlPath(name): UrlPath<String>,
    Query(q): Query<InvokeQuery>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    request_headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(served) = state.functions.get(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no function named `{name}`"));
    };
    if served.function.http().is_some() {
        // A wasi:http function's own `/invoke` path.
        let req = http_fn::rebuild(method, uri, request_headers, body);
        return http_fn::forward_to(state.clone(), name, req, "/invoke").await;
    }
    let m = &state.metrics;
    let permit = match admit(&state, served, &name).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let in_flight = m.in_flight.get_or_create(&served.labels).clone();
    in_flight.inc();
    let f = served.function.clone();
    let t0 = Instant::now();
    let joined = tokio::task::spawn_blocking(move || {
        let r = f.invoke(&body);
        drop(permit);
        r
    })
    .await;
    in_flight.dec();
    let elapsed = t0.elapsed();
    let result = match joined {
        Ok(r) => r,
        Err(e) => Err(FunctionError::Closed(format!(
            "{name} (call task failed: {e})"
        ))),
    };
    let call = match result {
        Ok(c) => c,
        Err(e) => {
            m.errors.get_or_create(&served.labels).inc();
            if matches!(
                e,
                FunctionError::Backend {
                    source: crate::backend::BackendError::WarmWorkerDied { .. },
                    ..
                }
            ) {
                worker_death(m, served, "in_call");
            }
            return error(StatusCode::INTERNAL_SERVER_ERROR, crate::error_chain(&e));
        }
    };
    record(m, served, &call, elapsed);
    if q.report.as_deref().is_some_and(|v| v == "1" || v == "true") {
        let body = serde_json::json!({
            "start": call.start,
            "stdout": String::from_utf8_lossy(&call.stdout),
            "stderr": String::from_utf8_lossy(&call.stderr),
            "report": call.report,
        });
        let mut r = Json(body).into_response();
        headers(r.headers_mut(), &call, elapsed);
        return r;
    }
    let mut r = (StatusCode::OK, call.stdout.clone()).into_response();
    r.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers(r.headers_mut(), &call, elapsed);
    r
}

/// A concurrency slot for a call of `served`: at once, else after a wait in the bounded queue;
/// else the answer to send (503 draining, 429 queue full).
async fn admit(
    state: &AppState,
    served: &Served,
    name: &str,
) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    let m = &state.metrics;
    if state.draining.load(Ordering::SeqCst) {
        m.rejected
            .get_or_create(&RejectLabels {
                function: name.to_string(),
                reason: "draining".into(),
            })
            .inc();
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down".into(),
        ));
    }
    // A slot now, else a place in the bounded queue, else 429.
    let permit = match served.slots.clone().try_acquire_owned() {
        Ok(p) => p,
        Err(_) => {
            if served.queued.fetch_add(1, Ordering::SeqCst) >= served.max_queue {
                served.queued.fetch_sub(1, Ordering::SeqCst);
                m.rejected
                    .get_or_create(&RejectLabels {
                        function: name.to_string(),
                        reason: "queue_full".into(),
                    })
                    .inc();
                let mut r = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    format!(
                        "function `{name}` is at its concurrency limit ({}) and its queue is full ({})",
                        served.function.max_concurrency(),
                        served.max_queue
                    ),
                );
                r.headers_mut().insert(
                    axum::http::header::RETRY_AFTER,
                    HeaderValue::from_static("1"),
                );
                return Err(r);
            }
            m.queue_depth.get_or_create(&served.labels).inc();
            let _queued = Queued { served, metrics: m };
            match served.slots.clone().acquire_owned().await {
                Ok(p) => p,
                Err(_) => {
                    return Err(error(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "the server is shutting down".into(),
                    ))
                }
            }
        }
    };
    Ok(permit)
}

/// The outcome's kind (`exited`, `timeout`, `oom`, `trap`, ...): header- and label-safe.
pub fn outcome_kind(o: &crate::report::Outcome) -> String {
    serde_json::to_value(o)
        .ok()
        .and_then(|v| v.get("kind").and_then(|k| k.as_str()).map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn worker_death(m: &Metrics, served: &Served, when: &str) {
    m.worker_deaths
        .get_or_create(&DeathLabels {
            function: served.labels.function.clone(),
            backend: served.labels.backend.clone(),
            when: when.into(),
        })
        .inc();
}

fn record(m: &Metrics, served: &Served, call: &Invocation, elapsed: Duration) {
    let l = &served.labels;
    if call.report.details.wasm.worker_replaced.is_some() {
        worker_death(m, served, "idle");
    }
    m.invocations
        .get_or_create(&CallLabels {
            function: l.function.clone(),
            backend: l.backend.clone(),
            outcome: outcome_kind(&call.report.outcome),
        })
        .inc();
    m.latency.get_or_create(l).observe(elapsed.as_secs_f64());
    m.starts
        .get_or_create(&StartLabels {
            function: l.function.clone(),
            backend: l.backend.clone(),
            start: call.start.to_string(),
        })
        .inc();
    if let Some(limit) = call.report.limit_fired {
        let limit = serde_json::to_value(limit)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_else(|| "unknown".into());
        m.limit_hits
            .get_or_create(&LimitLabels {
                function: l.function.clone(),
                backend: l.backend.clone(),
                limit,
            })
            .inc();
    }
}

fn headers(h: &mut HeaderMap, call: &Invocation, elapsed: Duration) {
    let r = &call.report;
    let mut set = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    };
    set("x-hybox-outcome", outcome_kind(&r.outcome));
    set("x-hybox-exit-code", r.exit_status.to_string());
    set("x-hybox-backend", r.backend.to_string());
    set("x-hybox-start", call.start.to_string());
    set(
        "x-hybox-duration-ms",
        format!("{:.3}", elapsed.as_secs_f64() * 1e3),
    );
    set("x-hybox-run-id", r.run_id.clone());
    if let Some(l) = r.limit_fired {
        if let Some(s) = serde_json::to_value(l)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
        {
            set("x-hybox-limit", s);
        }
    }
}
