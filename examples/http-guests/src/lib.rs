//! What the HTTP guests share: writing a whole buffer to an output stream (a body), as fast as the
//! host accepts it.
use wasi::http::types::{Fields, OutgoingBody, OutgoingResponse, ResponseOutparam};
use wasi::io::streams::OutputStream;

/// Writes all of `bytes`, waiting whenever the host's buffer is full (`check-write` is 0).
pub fn write_all(stream: &OutputStream, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        let n = loop {
            match stream.check_write() {
                Ok(0) => stream.subscribe().block(),
                Ok(n) => break n as usize,
                Err(e) => panic!("body stream closed: {e:?}"),
            }
        };
        let (now, rest) = bytes.split_at(n.min(bytes.len()));
        stream.write(now).expect("write to the body stream");
        bytes = rest;
    }
}

/// Sends `status` with a text/plain body and finishes the response.
pub fn respond_text(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::from_list(&[("content-type".into(), b"text/plain".to_vec())])
        .expect("content-type is a valid header");
    let resp = OutgoingResponse::new(headers);
    resp.set_status_code(status).expect("a valid status");
    let body = resp.body().expect("the body is taken once");
    ResponseOutparam::set(out, Ok(resp));
    let stream = body.write().expect("the stream is taken once");
    write_all(&stream, text.as_bytes());
    stream.blocking_flush().expect("flush the body");
    drop(stream);
    OutgoingBody::finish(body, None).expect("finish the body");
}
