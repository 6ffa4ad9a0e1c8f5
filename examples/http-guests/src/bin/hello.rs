//! The smallest HTTP function: `200 hello from wasi:http (METHOD PATH)`.
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Hello;

impl wasi::exports::http::incoming_handler::Guest for Hello {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let text = format!(
            "hello from wasi:http ({:?} {})\n",
            request.method(),
            request.path_with_query().unwrap_or_default()
        );
        hybox_http_guests::respond_text(out, 200, &text);
    }
}

wasi::http::proxy::export!(Hello);

fn main() {}
