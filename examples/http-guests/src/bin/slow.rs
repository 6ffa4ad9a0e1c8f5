//! Never finishes in time. `/stream`: answers 200 at once, then writes a line every 100 ms for a
//! minute (the body is cut at the deadline). Any other path: waits a minute in a host call
//! (a monotonic-clock pollable, where no wasm runs) before answering at all.
use std::time::Duration;

use wasi::clocks::monotonic_clock::subscribe_duration;
use wasi::http::types::{Fields, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam};

struct Slow;

fn sleep(d: Duration) {
    subscribe_duration(d.as_nanos() as u64).block();
}

impl wasi::exports::http::incoming_handler::Guest for Slow {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        if request.path_with_query().unwrap_or_default().starts_with("/stream") {
            let resp = OutgoingResponse::new(Fields::new());
            let body = resp.body().expect("the body is taken once");
            ResponseOutparam::set(out, Ok(resp));
            let stream = body.write().expect("the stream is taken once");
            for i in 0..600 {
                hybox_http_guests::write_all(&stream, format!("tick {i}\n").as_bytes());
                stream.blocking_flush().expect("flush the body");
                sleep(Duration::from_millis(100));
            }
            drop(stream);
            OutgoingBody::finish(body, None).expect("finish the body");
        } else {
            sleep(Duration::from_secs(60));
            hybox_http_guests::respond_text(out, 200, "finally\n");
        }
    }
}

wasi::http::proxy::export!(Slow);

fn main() {}
