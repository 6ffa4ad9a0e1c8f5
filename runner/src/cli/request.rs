//! `hybox run COMPONENT --request METHOD PATH [--header K:V]... [--body FILE|-]`: one request to
//! a wasi:http/proxy component, without `hybox serve` and without a TCP listener. The component
//! runs exactly as under `hybox serve` (its worker in its own envelope and network namespace, a
//! fresh store and instance for the request, the policy's limits), the request goes to the
//! worker's private Unix socket, and the response is printed as HTTP/1.1 text on stdout: status
//! line, headers, blank line, body (streamed). The request's report (outcome, status, refused
//! outbound hosts, the policy with its `http` grants) goes to `--json` / `--report`, a summary
//! line to stderr; the exit status is the outcome's (`docs/exit-codes.md`).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use serde::Serialize;

use super::RunArgs;
use crate::backend::wasm::http::{component_world, HttpCallReport, HttpFunction, World};
use crate::policy::Policy;
use crate::report::{Degradation, Outcome};
use crate::workload::Workload;
use crate::HostConfig;

/// Why the request could not be made (the component's own failures are outcomes, not these).
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    #[error("--request needs a wasi:http/proxy component (one exporting wasi:http/incoming-handler); {artifact} is {what}: run it without --request")]
    NotProxy { artifact: String, what: String },
    #[error("--header {0:?}: expected NAME:VALUE")]
    Header(String),
    #[error("--body {path}: cannot read it")]
    Body {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Workload(String),
    #[error("cannot load the policy")]
    Policy(#[source] crate::policy::PolicyError),
    #[error("cannot start the HTTP function")]
    Load(#[source] crate::backend::BackendError),
    #[error("the request to the worker failed: {0}")]
    Send(String),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// The JSON report of one `--request`.
#[derive(Debug, Serialize)]
pub struct RequestReport {
    pub hybox_version: String,
    pub artifact: String,
    pub world: World,
    pub method: String,
    pub path: String,
    #[serde(flatten)]
    pub call: HttpCallReport,
    pub exit_status: i32,
    pub degradations: Vec<Degradation>,
    /// Load-time details of the worker (`network_namespace`, `cache_hit`, `compile_us`, ...).
    pub load: crate::report::details::WasmDetails,
    /// The policy the request ran under (its `http.outbound_hosts` are the granted hosts).
    pub policy: Policy,
}

/// The request the flags describe.
struct Wanted {
    method: hyper::Method,
    path: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

fn wanted(args: &RunArgs) -> Result<Wanted, RequestError> {
    let (method, path) = match args.request.as_slice() {
        [m, p] => (m.clone(), p.clone()),
        _ => unreachable!("clap takes exactly two values"),
    };
    let method = hyper::Method::from_bytes(method.to_ascii_uppercase().as_bytes())
        .map_err(|_| RequestError::Send(format!("{method:?} is not an HTTP method")))?;
    let mut headers = Vec::new();
    for h in &args.headers {
        let (k, v) = h
            .split_once(':')
            .filter(|(k, _)| !k.trim().is_empty())
            .ok_or_else(|| RequestError::Header(h.clone()))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let body = match &args.body {
        None => Vec::new(),
        Some(p) if p == Path::new("-") => {
            let mut b = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut b).map_err(|e| {
                RequestError::Body {
                    path: "-".into(),
                    source: e,
                }
            })?;
            b
        }
        Some(p) => std::fs::read(p).map_err(|e| RequestError::Body {
            path: p.display().to_string(),
            source: e,
        })?,
    };
    Ok(Wanted {
        method,
        path,
        headers,
        body,
    })
}

/// The policy for the request: `--policy`, else the bundle's own, else the built-in default;
/// then the command line's overrides.
fn policy(args: &RunArgs) -> Result<Policy, RequestError> {
    let workload = Workload::detect(&args.artifact)
        .map_err(|e| RequestError::Workload(crate::error_chain(&e)))?;
    let p = match (&args.policy, &workload) {
        (Some(p), _) => Policy::from_file(p),
        (None, Workload::Bundle(b)) if b.policy.is_some() => {
            Policy::from_file(b.policy.as_deref().expect("checked"))
        }
        (None, _) => Ok(Policy::default()),
    }
    .map_err(RequestError::Policy)?;
    p.with_overrides(&args.overrides.to_overrides())
        .map_err(RequestError::Policy)
}

/// The component's path: the file itself, or a bundle's wasm variant.
fn component(artifact: &Path) -> Result<PathBuf, RequestError> {
    let workload =
        Workload::detect(artifact).map_err(|e| RequestError::Workload(crate::error_chain(&e)))?;
    workload
        .variant(crate::policy::Backend::Wasm)
        .map(|a| a.path.clone())
        .ok_or_else(|| RequestError::NotProxy {
            artifact: artifact.display().to_string(),
            what: "not a wasm workload".into(),
        })
}

/// Runs the request; returns the exit status (after printing the response and the report).
pub fn run(args: &RunArgs) -> i32 {
    match run_inner(args) {
        Ok(status) => status,
        Err(e) => {
            eprintln!("hybox: error: {}", crate::error_chain(&e));
            match e {
                RequestError::NotProxy { .. }
                | RequestError::Header(_)
                | RequestError::Policy(_)
                | RequestError::Workload(_) => crate::exit::USAGE,
                _ => crate::exit::RUNNER_FAILED,
            }
        }
    }
}

fn run_inner(args: &RunArgs) -> Result<i32, RequestError> {
    let wasm = component(&args.artifact)?;
    match component_world(&wasm) {
        Some(World::HttpProxy) => {}
        other => {
            return Err(RequestError::NotProxy {
                artifact: args.artifact.display().to_string(),
                what: match other {
                    Some(w) => format!("a {w} component"),
                    None => "not a component".into(),
                },
            })
        }
    }
    let want = wanted(args)?;
    let policy = policy(args)?;
    // Created before the run, as for every `hybox run`: a report path that cannot be written
    // fails before anything runs.
    let mut report_file = match &args.report {
        Some(p) => Some(std::fs::File::create(p).map_err(|e| RequestError::Body {
            path: p.display().to_string(),
            source: e,
        })?),
        None => None,
    };
    let f = HttpFunction::load(&args.artifact, &policy, &HostConfig::default(), 1)
        .map_err(RequestError::Load)?;
    let (tx, rx) = mpsc::channel::<HttpCallReport>();
    let tx = std::sync::Mutex::new(tx);
    f.set_report_sink(std::sync::Arc::new(move |r: &HttpCallReport| {
        let _ = tx.lock().unwrap_or_else(|e| e.into_inner()).send(r.clone());
    }));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(RequestError::Runtime)?;
    let sent = rt.block_on(send(&f, &want));
    let complete = sent?;
    // The worker reports the request once its body is over; the deadline bounds the wait.
    let wait = policy.resources.timeout.as_std() + Duration::from_secs(5);
    let call = rx.recv_timeout(wait).unwrap_or_else(|_| HttpCallReport {
        run_id: String::new(),
        outcome: Outcome::Trap {
            message: "the worker sent no report for the request".into(),
        },
        status: None,
        denied: Vec::new(),
        duration_us: 0,
        details: Default::default(),
    });
    let exit_status = match (&call.outcome, complete) {
        (Outcome::Exited { code: 0 }, false) => crate::exit::RUNNER_FAILED,
        (o, _) => o.exit_status(),
    };
    let report = RequestReport {
        hybox_version: env!("CARGO_PKG_VERSION").to_string(),
        artifact: args.artifact.display().to_string(),
        world: World::HttpProxy,
        method: want.method.to_string(),
        path: want.path.clone(),
        exit_status,
        degradations: f.degradations().to_vec(),
        load: f.load_details(),
        policy: policy.clone(),
        call,
    };
    let json = serde_json::to_string_pretty(&report).expect("report serialises");
    if let Some(file) = &mut report_file {
        let _ = file.write_all(format!("{json}\n").as_bytes());
    }
    if args.json {
        println!("{json}");
    }
    let granted = &policy.http.outbound_hosts;
    eprintln!(
        "hybox: {} {} {}: {} ({}, {:.1} ms{}{})",
        report.artifact,
        report.method,
        report.path,
        report
            .call
            .status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "no response".into()),
        report.call.outcome,
        report.call.duration_us as f64 / 1e3,
        if granted.is_empty() {
            String::new()
        } else {
            format!(", outbound granted: {}", granted.join(", "))
        },
        if report.call.denied.is_empty() {
            String::new()
        } else {
            format!(", outbound refused: {}", report.call.denied.join(", "))
        },
    );
    Ok(exit_status)
}

/// Sends the request to the worker and prints the response as it arrives; returns whether its
/// body ended cleanly.
async fn send(f: &HttpFunction, want: &Wanted) -> Result<bool, RequestError> {
    let err = |what: &str, e: &dyn std::fmt::Display| RequestError::Send(format!("{what}: {e}"));
    let stream = tokio::net::UnixStream::connect(f.socket_path())
        .await
        .map_err(|e| err("connect to the worker", &e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| err("worker connection", &e))?;
    tokio::spawn(conn);
    let mut req = hyper::Request::builder()
        .method(want.method.clone())
        .uri(want.path.as_str());
    let mut has_host = false;
    for (k, v) in &want.headers {
        has_host |= k.eq_ignore_ascii_case("host");
        req = req.header(k, v);
    }
    if !has_host {
        req = req.header(hyper::header::HOST, "localhost");
    }
    let req = req
        .body(axum::body::Body::from(want.body.clone()))
        .map_err(|e| err("the request", &e))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| err("the worker's answer", &e))?;
    let mut out = std::io::stdout().lock();
    let status = resp.status();
    let _ = writeln!(
        out,
        "HTTP/1.1 {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    );
    for (k, v) in resp.headers() {
        let _ = writeln!(out, "{k}: {}", String::from_utf8_lossy(v.as_bytes()));
    }
    let _ = writeln!(out);
    let mut body = resp.into_body();
    loop {
        let frame = std::future::poll_fn(|cx| {
            hyper::body::Body::poll_frame(std::pin::Pin::new(&mut body), cx)
        })
        .await;
        match frame {
            None => break,
            Some(Ok(f)) => {
                if let Some(data) = f.data_ref() {
                    let _ = out.write_all(data);
                    let _ = out.flush();
                }
            }
            // The function failed after its response started (the deadline, a trap): the body
            // is cut, and the report says why.
            Some(Err(_)) => return Ok(false),
        }
    }
    let _ = out.flush();
    Ok(true)
}
