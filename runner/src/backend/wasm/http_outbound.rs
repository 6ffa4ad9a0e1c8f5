//! Outbound HTTP of an HTTP function's guest (`wasi:http/outgoing-handler`), in the worker: denied
//! unless the policy's `http.outbound_hosts` grants the request's `host:port`.
//!
//! The match is on the authority the guest wrote, exactly (the host lowercased, the port defaulted
//! to the scheme's): no name is resolved to compare it with a grant, so `localhost:8080` or
//! `127.1:8080` is not `127.0.0.1:8080`, and a granted name is connected to by that name. The
//! connection is made to the matched grant itself, never to anything the request's headers say
//! (a `Host` header does not pick the address). Plain HTTP only: this build has no TLS client, so
//! an `https` request to a granted host fails with `TLS-protocol-error` before any connection.
//! Every refusal is remembered (`host:port`) for the response's `x-hybox-denied` header and the
//! request's report.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use http_body_util::BodyExt;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

/// The `send_request` hook of one request's store.
pub(super) struct Outbound {
    /// `host:port` pairs, as validated by the policy (`crate::policy::check_authority`).
    granted: Vec<String>,
    denied: Arc<Mutex<Vec<String>>>,
}

impl Outbound {
    pub(super) fn new(granted: Vec<String>, denied: Arc<Mutex<Vec<String>>>) -> Outbound {
        Outbound { granted, denied }
    }
}

/// The text of the `x-hybox-denied` header.
pub(super) fn denied_text(hosts: &[String]) -> String {
    format!(
        "outbound HTTP to {} (not in the policy's http.outbound_hosts)",
        hosts.join(", ")
    )
}

type IoFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;
type SendFuture = Box<
    dyn Future<Output = wasmtime_wasi_http::Result<(hyper::http::Response<WasiBody>, IoFuture)>>
        + Send,
>;

/// The request's target as granted hosts are written: `host:port`, host lowercase.
fn target(uri: &hyper::http::Uri) -> String {
    let port = uri.port_u16().unwrap_or(match uri.scheme_str() {
        Some("https") => 443,
        _ => 80,
    });
    format!("{}:{port}", uri.host().unwrap_or("?").to_ascii_lowercase())
}

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        request: hyper::http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        let target = target(request.uri());
        let Some(grant) = self.granted.iter().find(|g| **g == target).cloned() else {
            self.denied
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(target);
            return Box::new(async { Err(Error::HttpRequestDenied) });
        };
        if request.uri().scheme_str() != Some("http") {
            return Box::new(async { Err(Error::TlsProtocolError) });
        }
        Box::new(send(grant, request, options))
    }
}

/// Sends `req` to `grant` (a granted `host:port`) on a new HTTP/1.1 connection. The request's own
/// deadline bounds it all; `options`' connect and first-byte timeouts apply within it.
async fn send(
    grant: String,
    mut req: hyper::http::Request<WasiBody>,
    options: Option<RequestOptions>,
) -> wasmtime_wasi_http::Result<(hyper::http::Response<WasiBody>, IoFuture)> {
    let long = Duration::from_secs(600);
    let connect_timeout = options.and_then(|o| o.connect_timeout).unwrap_or(long);
    let first_byte = options.and_then(|o| o.first_byte_timeout).unwrap_or(long);
    let stream = tokio::time::timeout(connect_timeout, tokio::net::TcpStream::connect(&grant))
        .await
        .map_err(|_| Error::ConnectionTimeout)?
        .map_err(Error::Connect)?;
    let _ = stream.set_nodelay(true);
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(wasmtime_wasi_http::io::TokioIo::new(stream)).await?;
    // Origin form on the wire: the scheme and authority are only for a proxy.
    let path = req
        .uri()
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    *req.uri_mut() = hyper::http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
    let mut response = Box::pin(tokio::time::timeout(first_byte, sender.send_request(req)));
    let mut conn = Some(conn);
    // The connection's I/O is driven while the response head is awaited, then handed back as the
    // I/O future (dropped with the request's store, so nothing outlives the request).
    let res = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = response.as_mut().poll(cx) {
            return Poll::Ready(r.map_err(|_| Error::ConnectionReadTimeout));
        }
        if let Some(c) = conn.as_mut() {
            if let Poll::Ready(r) = Pin::new(c).poll(cx) {
                conn = None;
                if let Err(e) = r {
                    return Poll::Ready(Ok(Err(e)));
                }
                return response
                    .as_mut()
                    .poll(cx)
                    .map(|r| r.map_err(|_| Error::ConnectionReadTimeout));
            }
        }
        Poll::Pending
    })
    .await??;
    let io: IoFuture = Box::new(async move {
        match conn {
            Some(c) => c.await.map_err(Error::from),
            None => Ok(()),
        }
    });
    Ok((res.map(|b| b.map_err(Error::from).boxed_unsync()), io))
}
