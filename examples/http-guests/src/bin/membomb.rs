//! Allocates (and touches) 1 MiB after another until memory runs out.
use wasi::http::types::{IncomingRequest, ResponseOutparam};

struct Membomb;

impl wasi::exports::http::incoming_handler::Guest for Membomb {
    fn handle(_request: IncomingRequest, out: ResponseOutparam) {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xa5; 1 << 20]);
            if hoard.len() == usize::MAX {
                break;
            }
        }
        hybox_http_guests::respond_text(out, 200, &format!("{} MiB\n", hoard.len()));
    }
}

wasi::http::proxy::export!(Membomb);

fn main() {}
