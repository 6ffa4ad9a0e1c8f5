//! wasi:http functions in `hybox serve`: `/v1/functions/{name}/...` forwarded to the function's
//! worker (HTTP/1.1 over its Unix socket) with the rest of the path, the query, the method, the
//! headers and the streaming body; its status, headers and streaming body back, with the
//! `x-hybox-*` headers. The metrics count each request when the worker reports it over (after its
//! body), so a body cut by the timeout counts as a timeout. See `docs/serve.md`.

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
use crate::backend::wasm::http::{HttpCallReport, ReportSink};

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
    forward_to(state, name, req).await
}

/// Sends `req` to the function `name`'s worker and streams the answer back.
pub(super) async fn forward_to(state: Arc<AppState>, name: String, req: Request) -> Response {
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
    // The path after `/v1/functions/{name}`, as the client wrote it (not percent-decoded).
    let prefix = format!("/v1/functions/{name}");
    let rest = req.uri().path().strip_prefix(&prefix).unwrap_or("");
    let rest = if rest.is_empty() { "/" } else { rest };
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
    let up = match up.body(body) {
        Ok(r) => r,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("bad request: {e}")),
    };
    let mut start = crate::function::Start::Warm;
    let stream = match tokio::net::UnixStream::connect(http.socket_path()).await {
        Ok(s) => Ok(s),
        Err(_) => {
            // The worker is gone (killed by the OOM killer, crashed): start a new one.
            let f = served.function.clone();
            let restarted =
                tokio::task::spawn_blocking(move || f.http().map(|h| h.ensure_worker())).await;
            match restarted {
                Ok(Some(Ok(_))) => {
                    start = crate::function::Start::Cold;
                    tokio::net::UnixStream::connect(http.socket_path())
                        .await
                        .map_err(|e| format!("connect to the restarted worker: {e}"))
                }
                Ok(Some(Err(e))) => Err(crate::error_chain(&e)),
                Ok(None) => Err("not an HTTP function".into()),
                Err(e) => Err(format!("restart task: {e}")),
            }
        }
    };
    let stream = match stream {
        Ok(s) => s,
        Err(why) => {
            m.errors.get_or_create(&served.labels).inc();
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{name}`: no worker: {why}"),
            );
        }
    };
    let io = hyper_util::rt::TokioIo::new(stream);
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
        Ok(x) => x,
        Err(e) => {
            m.errors.get_or_create(&served.labels).inc();
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("function `{name}`: worker connection: {e}"),
            );
        }
    };
    // The slot is held until the connection is over: the response body streamed to the end.
    let in_flight = m.in_flight.get_or_create(&served.labels).clone();
    in_flight.inc();
    tokio::spawn(async move {
        let _ = conn.await;
        drop(permit);
        in_flight.dec();
    });
    m.starts
        .get_or_create(&StartLabels {
            function: served.labels.function.clone(),
            backend: served.labels.backend.clone(),
            start: start.to_string(),
        })
        .inc();
    let ooms = http.oom_kills();
    match sender.send_request(up).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
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
            m.errors.get_or_create(&served.labels).inc();
            let oom = http.oom_kills() > ooms;
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
