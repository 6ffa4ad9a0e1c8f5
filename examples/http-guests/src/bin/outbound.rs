//! Tries an outbound request to the host named by `?host=NAME` (default example.com) and answers
//! 502 with the error the host gave, or 200 with the upstream status if it was allowed.
use wasi::http::outgoing_handler;
use wasi::http::types::{Fields, IncomingRequest, OutgoingRequest, ResponseOutparam, Scheme};

struct Outbound;

impl wasi::exports::http::incoming_handler::Guest for Outbound {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let query = request.path_with_query().unwrap_or_default();
        let host = query
            .split_once("host=")
            .map(|(_, h)| h.split('&').next().unwrap_or("").to_string())
            .unwrap_or_else(|| "example.com".into());
        let req = OutgoingRequest::new(Fields::new());
        req.set_scheme(Some(&Scheme::Http)).expect("a valid scheme");
        req.set_authority(Some(&host)).expect("a valid authority");
        req.set_path_with_query(Some("/")).expect("a valid path");
        let result = outgoing_handler::handle(req, None).and_then(|fut| {
            fut.subscribe().block();
            fut.get().expect("ready after block").expect("taken once")
        });
        match result {
            Ok(resp) => hybox_http_guests::respond_text(
                out,
                200,
                &format!("upstream {host} answered {}\n", resp.status()),
            ),
            Err(e) => hybox_http_guests::respond_text(
                out,
                502,
                &format!("outbound request to {host} failed: {e:?}\n"),
            ),
        }
    }
}

wasi::http::proxy::export!(Outbound);

fn main() {}
