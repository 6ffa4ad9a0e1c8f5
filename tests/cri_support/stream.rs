//! A client of containerd's CRI streaming server, the URL that `Exec` and `Attach` return (what
//! `kubectl exec -it` and `kubectl attach` reach through kubelet). containerd 1.6 vendors kubelet's
//! streaming server, which takes SPDY or WebSocket; this is WebSocket (tungstenite) with the
//! `v4.channel.k8s.io` subprotocol: every binary message starts with its channel's number (0
//! stdin, 1 stdout, 2 stderr, 3 the status as a JSON `metav1.Status`, 4 terminal resizes as
//! `{"Width":W,"Height":H}`). Loopback only: containerd's server listens on 127.0.0.1.

use std::net::TcpStream;
use std::time::{Duration, Instant};

use tungstenite::client::IntoClientRequest;
use tungstenite::{Message, WebSocket};

const STDIN: u8 = 0;
const STDOUT: u8 = 1;
const STDERR: u8 = 2;
const STATUS: u8 = 3;
const RESIZE: u8 = 4;

/// What a stream has carried so far.
#[derive(Debug, Default)]
pub struct Streamed {
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// The status message, once the server sent it (at the process's end).
    pub status: Option<serde_json::Value>,
    /// The server closed the stream.
    pub closed: bool,
}

impl Streamed {
    pub fn out(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    pub fn err(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
    /// The exit code the status says: 0 for `Success`, the `ExitCode` cause of a
    /// `NonZeroExitCode` failure; `None` for any other failure (its message says why).
    pub fn exit_code(&self) -> Option<i32> {
        let s = self.status.as_ref()?;
        if s["status"] == "Success" {
            return Some(0);
        }
        s["details"]["causes"]
            .as_array()?
            .iter()
            .find(|c| c["reason"] == "ExitCode")?["message"]
            .as_str()?
            .parse()
            .ok()
    }
    /// The failure's message, if the status is one.
    pub fn failure(&self) -> Option<String> {
        let s = self.status.as_ref()?;
        (s["status"] == "Failure").then(|| s["message"].as_str().unwrap_or("").to_string())
    }
}

/// One open stream (an exec'd process or an attach).
pub struct Stream {
    ws: WebSocket<TcpStream>,
    pub got: Streamed,
}

impl Stream {
    /// Opens the URL `Exec` or `Attach` returned (`http://127.0.0.1:PORT/exec/TOKEN`).
    pub fn open(url: &str) -> Stream {
        let ws_url = url.replacen("http://", "ws://", 1);
        let addr = ws_url
            .trim_start_matches("ws://")
            .split('/')
            .next()
            .unwrap()
            .to_string();
        assert!(
            addr.starts_with("127.0.0.1:") || addr.starts_with("[::1]:"),
            "the streaming server is not on loopback: {url}"
        );
        let tcp = TcpStream::connect(&addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        tcp.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut req = ws_url.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "Sec-WebSocket-Protocol",
            "v4.channel.k8s.io".parse().unwrap(),
        );
        let (ws, resp) = tungstenite::client(req, tcp)
            .unwrap_or_else(|e| panic!("WebSocket handshake with {url}: {e}"));
        assert_eq!(
            resp.headers()
                .get("Sec-WebSocket-Protocol")
                .and_then(|v| v.to_str().ok()),
            Some("v4.channel.k8s.io"),
            "{resp:?}"
        );
        Stream {
            ws,
            got: Streamed::default(),
        }
    }

    fn send(&mut self, channel: u8, data: &[u8]) {
        let mut msg = vec![channel];
        msg.extend_from_slice(data);
        self.ws
            .send(Message::Binary(msg.into()))
            .unwrap_or_else(|e| panic!("send on channel {channel}: {e}"));
    }

    pub fn stdin(&mut self, data: &str) {
        self.send(STDIN, data.as_bytes());
    }

    pub fn resize(&mut self, width: u16, height: u16) {
        let size = serde_json::json!({"Width": width, "Height": height}).to_string();
        self.send(RESIZE, size.as_bytes());
    }

    /// Reads until `done` holds for what came so far, the stream closes, or `timeout`.
    pub fn read_until(&mut self, timeout: Duration, done: impl Fn(&Streamed) -> bool) -> &Streamed {
        let until = Instant::now() + timeout;
        while !done(&self.got) && !self.got.closed {
            assert!(
                Instant::now() < until,
                "stream: nothing awaited after {timeout:?}: {:?} / {:?} / {:?}",
                self.got.out(),
                self.got.err(),
                self.got.status
            );
            match self.ws.read() {
                Ok(Message::Binary(m)) if !m.is_empty() => {
                    let (ch, data) = (m[0], &m[1..]);
                    match ch {
                        STDOUT => self.got.stdout.extend_from_slice(data),
                        STDERR => self.got.stderr.extend_from_slice(data),
                        STATUS if !data.is_empty() => {
                            self.got.status =
                                Some(serde_json::from_slice(data).unwrap_or_else(|e| {
                                    panic!("status {:?}: {e}", String::from_utf8_lossy(data))
                                }))
                        }
                        _ => {}
                    }
                }
                Ok(Message::Close(_)) => self.got.closed = true,
                Ok(_) => {}
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(tungstenite::Error::ConnectionClosed | tungstenite::Error::AlreadyClosed) => {
                    self.got.closed = true
                }
                Err(e) => panic!("stream: {e}"),
            }
        }
        &self.got
    }

    /// Reads to the end (the status, then the close).
    pub fn finish(mut self, timeout: Duration) -> Streamed {
        self.read_until(timeout, |_| false);
        self.got
    }

    /// Leaves the stream (an attach detaches: the container goes on).
    pub fn detach(mut self) {
        let _ = self.ws.close(None);
        let _ = self.ws.flush();
    }
}
