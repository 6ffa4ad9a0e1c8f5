//! The plain HTTP/1.1 client of tests/http_serve.rs (a std `TcpStream`, loopback only), and the
//! loopback upstream its outbound tests call.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// A response as the client read it; `complete` is false when the body ended early (the
/// connection closed before its announced end).
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub complete: bool,
}

impl Resp {
    pub fn header(&self, name: &str) -> String {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One HTTP/1.1 request on a fresh connection; the body (if any) is written from another thread
/// in 64 KiB pieces while the response is read, as a streaming client does.
pub fn send(addr: SocketAddr, method: &str, path: &str, body: Option<Vec<u8>>) -> Resp {
    let announced = body.as_ref().map(Vec::len).unwrap_or(0);
    send_announcing(addr, method, path, announced, body)
}

/// [`send`], with `announced` as the content-length whatever the body's length (a client that
/// announces more than it sends, then waits).
pub fn send_announcing(
    addr: SocketAddr,
    method: &str,
    path: &str,
    announced: usize,
    body: Option<Vec<u8>>,
) -> Resp {
    let stream = TcpStream::connect(addr).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-length: {announced}\r\ncontent-type: application/x-test\r\n\r\n"
    );
    let writer = std::thread::spawn(move || {
        w.write_all(head.as_bytes())?;
        if let Some(b) = body {
            for piece in b.chunks(64 << 10) {
                w.write_all(piece)?;
            }
        }
        w.flush()
    });
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {line:?}"));
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).expect("header line");
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':').expect("a header");
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let complete = if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        read_chunked(&mut r, &mut body)
    } else if let Some(n) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(n, 0);
        r.read_exact(&mut body).is_ok()
    } else {
        r.read_to_end(&mut body).is_ok()
    };
    let _ = writer.join();
    Resp {
        status,
        headers,
        body,
        complete,
    }
}

/// Reads a chunked body; true when its last (empty) chunk arrived.
pub fn read_chunked(r: &mut impl BufRead, body: &mut Vec<u8>) -> bool {
    loop {
        let mut size = String::new();
        if r.read_line(&mut size).unwrap_or(0) == 0 {
            return false;
        }
        let Ok(n) = usize::from_str_radix(size.trim().split(';').next().unwrap_or(""), 16) else {
            return false;
        };
        if n == 0 {
            return true;
        }
        let start = body.len();
        body.resize(start + n, 0);
        if r.read_exact(&mut body[start..]).is_err() {
            body.truncate(start);
            return false;
        }
        let mut crlf = [0u8; 2];
        if r.read_exact(&mut crlf).is_err() {
            return false;
        }
    }
}

pub fn metrics(addr: SocketAddr) -> String {
    send(addr, "GET", "/metrics", None).text()
}

/// A loopback HTTP server answering `204` to every request; counts the connections it accepted.
pub fn upstream() -> (SocketAddr, std::sync::Arc<AtomicUsize>) {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let seen = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for c in l.incoming().flatten() {
            counter.fetch_add(1, Ordering::SeqCst);
            let mut r = BufReader::new(c.try_clone().unwrap());
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
                line.clear();
            }
            let mut c = c;
            let _ = c.write_all(b"HTTP/1.1 204 No Content\r\nconnection: close\r\n\r\n");
        }
    });
    (addr, seen)
}
