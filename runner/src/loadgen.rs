//! `hybox bench-serve`: a small load generator for `hybox serve`, on loopback only (hyper client on
//! tokio). `concurrency` keep-alive connections each send calls back to back until `requests` calls
//! were made; the result is throughput and latency percentiles as the client saw them, and how many
//! calls were warm or cold starts (`x-hybox-start`).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;

/// What to measure.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    pub target: SocketAddr,
    pub function: String,
    pub requests: usize,
    pub concurrency: usize,
    pub warmup: usize,
    pub payload: Vec<u8>,
    /// The request path, instead of `/v1/functions/{function}/invoke` (a wasi:http function's
    /// route, or another server such as `wasmtime serve`, for comparisons on the same client).
    pub path: Option<String>,
}

/// What was measured.
#[derive(Debug, Clone, Serialize)]
pub struct LoadResult {
    pub function: String,
    pub requests: usize,
    pub concurrency: usize,
    pub seconds: f64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// HTTP status → count.
    pub statuses: std::collections::BTreeMap<u16, usize>,
    /// `x-hybox-start` → count.
    pub starts: std::collections::BTreeMap<String, usize>,
}

/// Why the load test could not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("refusing to load-test {0}: bench-serve only talks to loopback addresses")]
    NotLoopback(SocketAddr),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
    #[error("connect to {addr}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP: {0}")]
    Http(String),
}

/// One HTTP/1.1 connection to the server.
pub struct Conn {
    sender: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
}

/// A response, read whole.
pub struct Reply {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Conn {
    /// Connects (loopback only) and starts the connection task.
    pub async fn connect(addr: SocketAddr) -> Result<Conn, LoadError> {
        if !addr.ip().is_loopback() {
            return Err(LoadError::NotLoopback(addr));
        }
        let stream = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| LoadError::Connect { addr, source: e })?;
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(stream);
        let (sender, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| LoadError::Http(e.to_string()))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(Conn { sender, addr })
    }

    /// Sends one request and reads the whole response.
    pub async fn request(
        &mut self,
        method: &str,
        path: &str,
        body: Vec<u8>,
    ) -> Result<Reply, LoadError> {
        self.sender
            .ready()
            .await
            .map_err(|e| LoadError::Http(e.to_string()))?;
        let req = hyper::Request::builder()
            .method(method)
            .uri(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| LoadError::Http(e.to_string()))?;
        let resp = self
            .sender
            .send_request(req)
            .await
            .map_err(|e| LoadError::Http(e.to_string()))?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| LoadError::Http(e.to_string()))?
            .to_bytes();
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// Runs the load test (its own tokio runtime).
pub fn run(cfg: &LoadConfig) -> Result<LoadResult, LoadError> {
    if !cfg.target.ip().is_loopback() {
        return Err(LoadError::NotLoopback(cfg.target));
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cfg.concurrency.clamp(1, 2))
        .enable_all()
        .build()
        .map_err(LoadError::Runtime)?;
    rt.block_on(load(cfg))
}

async fn load(cfg: &LoadConfig) -> Result<LoadResult, LoadError> {
    let path = cfg
        .path
        .clone()
        .unwrap_or_else(|| format!("/v1/functions/{}/invoke", cfg.function));
    let concurrency = cfg.concurrency.max(1);
    // Warm-up, on one connection.
    {
        let mut c = Conn::connect(cfg.target).await?;
        for _ in 0..cfg.warmup {
            c.request("POST", &path, cfg.payload.clone()).await?;
        }
    }
    let next = Arc::new(AtomicUsize::new(0));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let mut c = Conn::connect(cfg.target).await?;
        let next = next.clone();
        let path = path.clone();
        let payload = cfg.payload.clone();
        let total = cfg.requests;
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut statuses = Vec::new();
            let mut starts = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < total {
                let t = Instant::now();
                let r = c.request("POST", &path, payload.clone()).await?;
                lat.push(t.elapsed());
                statuses.push(r.status);
                starts.push(
                    r.headers
                        .get("x-hybox-start")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string(),
                );
            }
            Ok::<_, LoadError>((lat, statuses, starts))
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    let mut statuses = std::collections::BTreeMap::new();
    let mut starts = std::collections::BTreeMap::new();
    for t in tasks {
        let (l, s, st) = t.await.map_err(|e| LoadError::Http(e.to_string()))??;
        lat.extend(l);
        for s in s {
            *statuses.entry(s).or_insert(0) += 1;
        }
        for s in st {
            *starts.entry(s).or_insert(0) += 1;
        }
    }
    let seconds = t0.elapsed().as_secs_f64();
    lat.sort();
    let pct = |p: f64| -> f64 {
        if lat.is_empty() {
            return 0.0;
        }
        let i = ((lat.len() as f64 * p).ceil() as usize).clamp(1, lat.len()) - 1;
        lat[i].as_secs_f64() * 1e3
    };
    Ok(LoadResult {
        function: cfg.function.clone(),
        requests: lat.len(),
        concurrency,
        seconds,
        throughput_per_s: lat.len() as f64 / seconds,
        p50_ms: pct(0.50),
        p90_ms: pct(0.90),
        p99_ms: pct(0.99),
        max_ms: pct(1.0),
        statuses,
        starts,
    })
}

impl LoadResult {
    /// One line for humans.
    pub fn summary(&self) -> String {
        format!(
            "{}: {} calls, {} connections, {:.2} s: {:.0} calls/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; status {:?}; starts {:?}",
            self.function,
            self.requests,
            self.concurrency,
            self.seconds,
            self.throughput_per_s,
            self.p50_ms,
            self.p90_ms,
            self.p99_ms,
            self.max_ms,
            self.statuses,
            self.starts
        )
    }
}
