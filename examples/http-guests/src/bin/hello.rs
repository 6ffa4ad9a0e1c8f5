//! The smallest HTTP function: `200 hello from wasi:http (METHOD PATH)`. `/count` answers how many
//! requests this instance has handled, itself included: always 1 where every request gets a fresh
//! instance (a global that survived a request would count on).
use std::sync::atomic::{AtomicU32, Ordering};

use wasi::http::types::{IncomingRequest, ResponseOutparam};

static HANDLED: AtomicU32 = AtomicU32::new(0);

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let n = HANDLED.fetch_add(1, Ordering::SeqCst) + 1;
        let path = request.path_with_query().unwrap_or_default();
        let text = if path == "/count" {
            format!("requests handled by this instance: {n}\n")
        } else {
            format!("hello from wasi:http ({:?} {path})\n", request.method())
        };
        hybox_http_guests::respond_text(out, 200, &text);
    }
}

wasi::http::proxy::export!(Hello);

fn main() {}
