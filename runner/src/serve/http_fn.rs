//! wasi:http functions in `hybox serve`: `/v1/functions/{name}/...` forwarded to the function's
//! worker (HTTP/1.1 over its Unix socket) with the rest of the path, the query, the method, the
//! headers and the streaming body; its status, headers and streaming body back, with the
//! `x-hybox-*` headers. The metrics count each request when the worker reports it over (after its
//! body), so a body cut by the timeout counts as a timeout. See `docs/serve.md`.
//!
//! Connections to the worker are kept alive ([`Conns`]): a new Unix-socket connection and HTTP/1.1
//! handshake per request cost as much as the request itself. Reuse shares nothing between
//! requests inside the worker: each still gets a fresh store and instance.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::Response;

use super::{
    admit, error, outcome_kind, AppState, CallLabels, FnLabels, LimitLabels, Metrics, StartLabels,
};
use crate::backend::wasm::http::{HttpCallReport, HttpFunction, ReportSink};

/// Headers that belong to one connection, not to the request (RFC 9110, 7.6.1): never forwarded.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// A request put back together from what the `/invoke` handler extracted.
pub(super) fn rebuild(method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Request {
    let mut r = Request::new(Body::from(body));
    *r.method_mut() = method;
    *r.uri_mut() = uri;
    *r.headers_mut() = headers;
    r
}

/// Every route under `/v1/functions/{name}` that is not a stdin function's `POST .../invoke`.
pub(super) async fn forward(
    State(state): State<Arc<AppState>>,
    UrlPath(params): UrlPath<HashMap<String, String>>,
    req: Request,
) -> Response {
    let name = params.get("name").cloned().unwrap_or_default();
    // The path after `/v1/functions/{name}`, as the client wrote it (not percent-decoded).
    let prefix = format!("/v1/functions/{name}");
    let rest = req.uri().path().strip_prefix(&prefix).unwrap_or("");
    let rest = if rest.is_empty() { "/" } else { rest }.to_string();
    forward_to(state, name, req, &rest).await
}

/// Sends `req` to the function `name`'s worker, as a request for `rest` (the path the guest sees)
/// with the query, and streams the answer back.
pub(super) async fn forward_to(
    state: Arc<AppState>,
    name: String,
    req: Request,
    rest: &str,
) -> Response {
    let Some(served) = state.functions.get(&name) else {
        return error(StatusCode::NOT_FOUND, format!("no function named `{name}`"));
    };
    let Some(http) = served.function.http() else {
        return error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("function `{name}` reads stdin: POST /v1/functions/{name}/invoke"),
        );
    };
    let permit = match admit(&state, served, &name).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let m = &state.metrics;
    let t0 = Instant::now();
    let path_query = match req.uri().query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_string(),
    };
    let (parts, body) = req.into_parts();
    let mut up = hyper::Request::builder()
        .method(parts.method)
        .uri(path_query.as_str());
    for (k, v) in &parts.headers {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            up = up.header(k, v);
        }
    }
    if !parts.headers.contains_key(axum::http::header::HOST) {
        up = up.header(axum::http::header::HOST, "localhost");
    }
    let mut up = match up.body(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request: {e}")),
    };
    let mut start = crate::function::Start::Warm;
    // A kept-alive connection first: the worker serves many requests per connection (each still
    // in a fresh store and instance); only a fresh connection's failure restarts the worker.
    // Counted in flight from now until the response is over (or failed).
    let in_flight = InFlight::new(m.in_flight.get_or_create(&served.labels).clone());
    let mut pooled = served.conns.take().await;
    let (sender, resp) = loop {
        let (mut sender, reused) = match pooled.take() {
            Some(s) => (s, true),
            None => match connect(&served.function, http, &mut start).await {
                Ok(s) => {
                    m.http_connections.get_or_create(&served.labels).inc();
                    (s, false)
                }
                Err(why) => {
                    m.errors.get_or_create(&served.labels).inc();
                    return error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("function `{name}`: no worker: {why}"),
                    );
                }
            },
        };
        match sender.try_send_request(up).await {
            Ok(resp) => break (sender, Ok(resp)),
            // A kept-alive connection that closed before it took the request (the worker ended
            // it, or died idle): the request was not sent, so it goes on a fresh connection.
            Err(mut e) if reused && e.message().is_some() => {
                up = e.take_message().expect("checked above");
            }
            Err(e) => break (sender, Err(e.into_error())),
        }
    };
    m.starts
        .get_or_create(&StartLabels {
            function: served.labels.function.clone(),
            backend: served.labels.backend.clone(),
            start: start.to_string(),
        })
        .inc();
    match resp {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            // The slot is held until the response is over (its body streamed to the end); then
            // the connection goes back to the idle list, before the client sees the end.
            let body = GiveBack {
                body,
                back: Some((sender, served.conns.clone(), permit, in_flight)),
            };
            let mut set = |k: &'static str, v: String| {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    parts.headers.insert(HeaderName::from_static(k), v);
                }
            };
            set("x-hybox-start", start.to_string());
            set(
                "x-hybox-duration-ms",
                format!("{:.3}", t0.elapsed().as_secs_f64() * 1e3),
            );
            Response::from_parts(parts, Body::new(body))
        }
        Err(e) => {
            // The worker went away during the request: the cgroup OOM killer, or a crash.
            drop(permit);
            drop(in_flight);
            m.errors.get_or_create(&served.labels).inc();
            let oom = http.worker_oom_killed();
            let mut r = error(
                StatusCode::BAD_GATEWAY,
                format!(
                    "function `{name}`: the worker died during the request ({}): {e}",
                    if oom {
                        "killed by the envelope's OOM killer"
                    } else {
                        "the next request starts a new one"
                    }
                ),
            );
            if oom {
                let h = r.headers_mut();
                h.insert("x-hybox-outcome", HeaderValue::from_static("oom"));
                h.insert("x-hybox-limit", HeaderValue::from_static("memory"));
            }
            r
        }
    }
}

/// A new HTTP/1.1 connection to the worker; a worker that is gone (killed by the OOM killer,
/// crashed) is restarted first (`start` becomes cold).
async fn connect(
    function: &Arc<crate::function::Function>,
    http: &HttpFunction,
    start: &mut crate::function::Start,
) -> Result<Sender, String> {
    let stream = match tokio::net::UnixStream::connect(http.socket_path()).await {
        Ok(s) => s,
        Err(_) => {
            let f = function.clone();
            let restarted =
                tokio::task::spawn_blocking(move || f.http().map(|h| h.ensure_worker())).await;
            match restarted {
                Ok(Some(Ok(_))) => {
                    *start = crate::function::Start::Cold;
                    tokio::net::UnixStream::connect(http.socket_path())
                        .await
                        .map_err(|e| format!("connect to the restarted worker: {e}"))?
                }
                Ok(Some(Err(e))) => return Err(crate::error_chain(&e)),
                Ok(None) => return Err("not an HTTP function".into()),
                Err(e) => return Err(format!("restart task: {e}")),
            }
        }
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("worker connection: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

type Sender = hyper::client::conn::http1::SendRequest<Body>;

/// The worker's response body on its way to the client. At its end the request's slot is freed
/// and its connection goes back to the idle list (or, if hyper has not yet made it ready, is
/// announced as returning), before the client can send its next request. Dropped before its end
/// (the client went away, the body was cut), the connection is dropped too: it cannot be reused.
struct GiveBack {
    body: hyper::body::Incoming,
    back: Option<(Sender, Conns, tokio::sync::OwnedSemaphorePermit, InFlight)>,
}

impl hyper::body::Body for GiveBack {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, hyper::Error>>> {
        let frame = std::task::ready!(std::pin::Pin::new(&mut self.body).poll_frame(cx));
        if frame.is_none() {
            if let Some((mut sender, conns, permit, in_flight)) = self.back.take() {
                drop((permit, in_flight));
                match sender.poll_ready(cx) {
                    std::task::Poll::Ready(Ok(())) => conns.put(sender),
                    std::task::Poll::Ready(Err(_)) => {}
                    std::task::Poll::Pending => {
                        use std::sync::atomic::Ordering::SeqCst;
                        conns.returning.fetch_add(1, SeqCst);
                        tokio::spawn(async move {
                            if sender.ready().await.is_ok() {
                                conns.put(sender);
                            }
                            conns.returning.fetch_sub(1, SeqCst);
                            conns.returned.notify_waiters();
                        });
                    }
                }
            }
        }
        std::task::Poll::Ready(frame)
    }

    // Never "ended" before `poll_frame` says so: the end is where the connection goes back.
    fn is_end_stream(&self) -> bool {
        false
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// One request counted in `hybox_in_flight` while it lives.
struct InFlight(prometheus_client::metrics::gauge::Gauge);

impl InFlight {
    fn new(g: prometheus_client::metrics::gauge::Gauge) -> InFlight {
        g.inc();
        InFlight(g)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// Most idle connections kept per function (more in flight at once are closed when done).
const MAX_IDLE: usize = 64;

/// The idle kept-alive connections to one HTTP function's worker. A connection is in the list
/// only between requests: taken for one request, put back once its response is over.
#[derive(Default, Clone)]
pub(super) struct Conns {
    idle: Arc<std::sync::Mutex<Vec<Sender>>>,
    /// Connections whose response is over but that hyper has not yet made ready for another
    /// request (microseconds): a request that finds no idle one waits for these first.
    returning: Arc<std::sync::atomic::AtomicUsize>,
    returned: Arc<tokio::sync::Notify>,
}

/// How long a request waits for a returning connection before it opens a new one.
const RETURN_WAIT: std::time::Duration = std::time::Duration::from_millis(5);

impl Conns {
    /// An idle connection that is still open and ready, if any (closed ones are dropped); one
    /// about to come back is waited for, briefly.
    async fn take(&self) -> Option<Sender> {
        use std::sync::atomic::Ordering::SeqCst;
        loop {
            // Created before the check: a return after it still wakes this wait.
            let returned = self.returned.notified();
            if let Some(s) = self.pop() {
                return Some(s);
            }
            if self.returning.load(SeqCst) == 0 {
                return None;
            }
            if tokio::time::timeout(RETURN_WAIT, returned).await.is_err() {
                return self.pop();
            }
        }
    }
    fn pop(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(s) = idle.pop() {
            if !s.is_closed() && s.is_ready() {
                return Some(s);
            }
        }
        None
    }
    fn put(&self, s: Sender) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(s);
        }
        drop(idle);
        self.returned.notify_waiters();
    }
}

/// Counts each finished request of one function: invocations by outcome, latency, limit hits.
pub(super) fn metrics_sink(m: &Metrics, labels: &FnLabels) -> ReportSink {
    let invocations = m.invocations.clone();
    let latency = m.latency.clone();
    let limit_hits = m.limit_hits.clone();
    let l = labels.clone();
    Arc::new(move |r: &HttpCallReport| {
        invocations
            .get_or_create(&CallLabels {
                function: l.function.clone(),
                backend: l.backend.clone(),
                outcome: outcome_kind(&r.outcome),
            })
            .inc();
        latency
            .get_or_create(&l)
            .observe(r.duration_us as f64 / 1e6);
        if let Some(limit) = r.outcome.limit() {
            let limit = serde_json::to_value(limit)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_else(|| "unknown".into());
            limit_hits
                .get_or_create(&LimitLabels {
                    function: l.function.clone(),
                    backend: l.backend.clone(),
                    limit,
                })
                .inc();
        }
    })
}
