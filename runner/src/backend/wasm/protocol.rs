//! How the supervisor and a wasm worker talk, one-shot or warm: the same frames over two pipes
//! (the worker reads requests at [`JOB_FD`](super::JOB_FD) and writes answers at
//! [`RESULT_FD`](super::RESULT_FD)).
//!
//! A frame is `u32 LE frame length | u32 LE JSON length | JSON | raw bytes`. The frame length comes
//! first so that a reader bounds what it allocates before it reads anything else: the worker runs
//! untrusted code, and the supervisor never trusts the sizes it announces.
//!
//! - One-shot: the supervisor sends one [`Job`] frame (raw bytes: the guest's stdin in capture
//!   mode) and closes the pipe; the worker answers one [`WorkerResult`] frame (raw bytes: the
//!   captured stdout then stderr, their lengths in the JSON).
//! - Warm: the load is a [`Job`] frame (no raw bytes) answered by a [`LoadReply`] frame; each call
//!   a [`CallRequest`] frame (raw bytes: stdin) answered by a [`WorkerResult`] frame.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::policy::Policy;
use crate::report::Outcome;
use crate::workload::Format;

/// Largest JSON part of an answer the supervisor accepts; the raw bytes are bounded by the
/// policy's output caps on top of it.
pub const MAX_ANSWER_JSON: u64 = 1 << 20;

/// A frame could not be written, read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The pipe failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The other side closed its pipe without sending a frame.
    #[error("the other side closed its pipe before sending anything")]
    Closed,
    /// The stream ended inside a frame.
    #[error("truncated frame")]
    Truncated,
    /// The announced frame is larger than the reader accepts.
    #[error("frame of {len} bytes, at most {max} expected")]
    TooLarge { len: u64, max: u64 },
    /// The JSON length points past the frame's end.
    #[error("bad frame: a JSON part of {json} bytes in a frame of {frame}")]
    BadJsonLength { json: u64, frame: u64 },
    /// The JSON part is not the message expected.
    #[error("{what}: {source}")]
    Json {
        what: &'static str,
        #[source]
        source: serde_json::Error,
    },
    /// A result's raw bytes are not the stdout and stderr its JSON announces.
    #[error("result: expected {expected} output bytes, found {found}")]
    OutputLength { expected: usize, found: usize },
}

/// One run, as the worker receives it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Job {
    pub artifact: PathBuf,
    pub format: Format,
    /// `argv[1..]`; `argv[0]` is the artifact's file name.
    pub args: Vec<String>,
    /// The guest's complete environment.
    pub env: Vec<(String, String)>,
    pub policy: Policy,
    /// `Some((stdout_max, stderr_max))` when output is captured; `None` when stdio is inherited.
    pub capture: Option<(u64, u64)>,
    /// A per-run host directory preopened at `/tmp` (created and removed by the supervisor).
    pub tmp_dir: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    /// Wall-clock budget from the moment the worker starts.
    pub timeout_ms: u64,
    /// The worker runs in a network namespace of its own (`netns`, or `wasm.os_sandbox`'s), whose
    /// only interface is its own `lo`: then the unspecified address with port 0, which wasmtime
    /// checks for the implicit bind of every TCP connect, can only mean that `lo`.
    #[serde(default)]
    pub own_network_namespace: bool,
    /// The store's memory limit is the envelope's own, with no headroom
    /// ([`HostConfig::wasm_memory_headroom`](crate::HostConfig::wasm_memory_headroom) `false`).
    #[serde(default)]
    pub store_memory_is_cgroup_limit: bool,
}

/// What the worker reports.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerResult {
    pub outcome: Outcome,
    /// Worker start to the guest's first instruction (compile or cache load included).
    pub startup_us: u64,
    pub run_us: u64,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub details: crate::report::details::WasmDetails,
}

/// A [`WorkerResult`] on the wire: its captured output follows as raw bytes.
#[derive(Serialize, Deserialize)]
struct ResultHeader {
    result: WorkerResult,
    stdout_len: usize,
    stderr_len: usize,
}

/// A warm worker's answer to its load job.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoadReply {
    /// Why the guest could not be loaded (compile error, bad artifact, link error).
    pub error: Option<String>,
    /// `cache_hit`, `compile_us`, `load_us`, `wasm_memory_limit`...
    pub details: crate::report::details::WasmDetails,
}

/// One call of a warm worker; the frame's raw bytes are the guest's stdin.
#[derive(Debug, Serialize, Deserialize)]
pub struct CallRequest {
    /// argv[1..]; argv[0] is the artifact's file name.
    pub args: Vec<String>,
}

/// One frame as read: its JSON part and its raw bytes.
#[derive(Debug)]
pub struct Frame {
    /// The frame after its length: the JSON length, the JSON, the raw bytes.
    bytes: Vec<u8>,
    json_len: usize,
}

impl Frame {
    /// The JSON part.
    pub fn json(&self) -> &[u8] {
        &self.bytes[4..4 + self.json_len]
    }

    /// The raw bytes after the JSON.
    pub fn tail(&self) -> &[u8] {
        &self.bytes[4 + self.json_len..]
    }

    /// The JSON part as a `what` message.
    pub fn message<T: DeserializeOwned>(&self, what: &'static str) -> Result<T, ProtocolError> {
        serde_json::from_slice(self.json()).map_err(|source| ProtocolError::Json { what, source })
    }

    /// A job and the guest's stdin.
    pub fn job(&self) -> Result<(Job, Vec<u8>), ProtocolError> {
        Ok((self.message("job")?, self.tail().to_vec()))
    }

    /// A call request and the guest's stdin.
    pub fn call(&self) -> Result<(CallRequest, Vec<u8>), ProtocolError> {
        Ok((self.message("call request")?, self.tail().to_vec()))
    }

    /// A result and the captured stdout and stderr.
    pub fn result(&self) -> Result<(WorkerResult, Vec<u8>, Vec<u8>), ProtocolError> {
        let h: ResultHeader = self.message("result")?;
        let tail = self.tail();
        let expected = h.stdout_len.saturating_add(h.stderr_len);
        if tail.len() != expected {
            return Err(ProtocolError::OutputLength {
                expected,
                found: tail.len(),
            });
        }
        let (o, e) = tail.split_at(h.stdout_len);
        Ok((h.result, o.to_vec(), e.to_vec()))
    }
}

/// Writes one frame: `message` as JSON, then the raw bytes of `tail`, in one write.
pub fn write_frame(
    out: &mut impl Write,
    message: &impl Serialize,
    tail: &[&[u8]],
) -> Result<(), ProtocolError> {
    let json = serde_json::to_vec(message).expect("protocol messages always serialise");
    let tail_len: usize = tail.iter().map(|t| t.len()).sum();
    let too_long = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "frame over 4 GiB");
    let json_len = u32::try_from(json.len()).map_err(|_| too_long())?;
    let frame_len = json
        .len()
        .checked_add(4)
        .and_then(|n| n.checked_add(tail_len))
        .and_then(|n| u32::try_from(n).ok())
        .ok_or_else(too_long)?;
    let mut buf = Vec::with_capacity(8 + json.len() + tail_len);
    buf.extend_from_slice(&frame_len.to_le_bytes());
    buf.extend_from_slice(&json_len.to_le_bytes());
    buf.extend_from_slice(&json);
    for t in tail {
        buf.extend_from_slice(t);
    }
    out.write_all(&buf)?;
    Ok(())
}

/// Sends a job (and the guest's stdin).
pub fn write_job(out: &mut impl Write, job: &Job, stdin: &[u8]) -> Result<(), ProtocolError> {
    write_frame(out, job, &[stdin])
}

/// Sends a result and the captured output.
pub fn write_result(
    out: &mut impl Write,
    r: &WorkerResult,
    stdout: &[u8],
    stderr: &[u8],
) -> Result<(), ProtocolError> {
    let h = ResultHeader {
        result: r.clone(),
        stdout_len: stdout.len(),
        stderr_len: stderr.len(),
    };
    write_frame(out, &h, &[stdout, stderr])
}

/// Reads one frame of at most `max` bytes; `Ok(None)` on a clean end of stream before its first
/// byte.
pub fn read_frame(input: &mut impl Read, max: u64) -> Result<Option<Frame>, ProtocolError> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        match input.read(&mut len[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(ProtocolError::Truncated),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    let frame = u32::from_le_bytes(len) as u64;
    if frame > max {
        return Err(ProtocolError::TooLarge { len: frame, max });
    }
    if frame < 4 {
        return Err(ProtocolError::BadJsonLength { json: 0, frame });
    }
    let mut bytes = vec![0u8; frame as usize];
    input.read_exact(&mut bytes).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => ProtocolError::Truncated,
        _ => e.into(),
    })?;
    let json = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as u64;
    if json > frame - 4 {
        return Err(ProtocolError::BadJsonLength { json, frame });
    }
    Ok(Some(Frame {
        bytes,
        json_len: json as usize,
    }))
}

/// Whether `fd` becomes readable (or hangs up) within `wait` (`poll(2)`, retried on EINTR).
pub fn readable_within(fd: &File, wait: Duration) -> std::io::Result<bool> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().min(i32::MAX as u128) as i32;
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let n = unsafe { libc::poll(&mut pfd, 1, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n > 0 {
            return Ok(true);
        }
        if left.is_zero() {
            return Ok(false);
        }
    }
}

/// Waits up to `wait` for a frame to start, then reads it. `Ok(None)`: nothing within `wait`; an
/// end of stream (the worker died) is [`ProtocolError::Closed`].
pub fn read_frame_within(
    input: &mut File,
    wait: Duration,
    max: u64,
) -> Result<Option<Frame>, ProtocolError> {
    if !readable_within(input, wait)? {
        return Ok(None);
    }
    // Readable or hung up: read (a hang-up without data is an end of stream, an error here).
    match read_frame(input, max)? {
        Some(f) => Ok(Some(f)),
        None => Err(ProtocolError::Closed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_result_round_trips_and_a_bad_frame_is_refused() {
        let r = WorkerResult {
            outcome: Outcome::Exited { code: 3 },
            startup_us: 1,
            run_us: 2,
            stdout_bytes: 5,
            stderr_bytes: 1,
            stdout_truncated: false,
            stderr_truncated: false,
            details: Default::default(),
        };
        let mut wire = Vec::new();
        write_result(&mut wire, &r, b"hello", b"!").unwrap();
        let f = read_frame(&mut &wire[..], 1 << 20).unwrap().unwrap();
        let (back, o, e) = f.result().unwrap();
        assert_eq!(
            (back.outcome, o, e),
            (r.outcome, b"hello".to_vec(), b"!".to_vec())
        );

        assert!(read_frame(&mut &[][..], 10).unwrap().is_none());
        assert!(matches!(
            read_frame(&mut &wire[..], 8),
            Err(ProtocolError::TooLarge { .. })
        ));
        assert!(matches!(
            read_frame(&mut &wire[..wire.len() - 1], 1 << 20),
            Err(ProtocolError::Truncated)
        ));
        let mut bad = wire.clone();
        bad[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            read_frame(&mut &bad[..], 1 << 20),
            Err(ProtocolError::BadJsonLength { .. })
        ));
    }
}
