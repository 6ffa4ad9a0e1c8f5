//! Panics before answering: the host answers 500 with the trap.
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Panic;

impl wasi::exports::http::incoming_handler::Guest for Panic {
    fn handle(request: IncomingRequest, _out: ResponseOutparam) {
        panic!(
            "the handler panicked on purpose ({})",
            request.path_with_query().unwrap_or_default()
        );
    }
}

wasi::http::proxy::export!(Panic);

fn main() {}
