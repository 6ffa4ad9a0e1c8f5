//! Streams the request body back as the response body, chunk by chunk (never the whole body in
//! memory), with the request's content-type and an `x-echo-method` header.
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};
use wasi::io::streams::StreamError;

struct Echo;

impl wasi::exports::http::incoming_handler::Guest for Echo {
    fn handle(request: IncomingRequest, out: ResponseOutparam) {
        let mut list = vec![(
            "x-echo-method".to_string(),
            format!("{:?}", request.method()).into_bytes(),
        )];
        for v in request.headers().get(&"content-type".to_string()) {
            list.push(("content-type".into(), v));
        }
        let resp = OutgoingResponse::new(Fields::from_list(&list).expect("valid headers"));
        let out_body = resp.body().expect("the body is taken once");
        ResponseOutparam::set(out, Ok(resp));
        let in_body = request.consume().expect("the body is taken once");
        let input = in_body.stream().expect("the stream is taken once");
        let output = out_body.write().expect("the stream is taken once");
        loop {
            match input.blocking_read(64 * 1024) {
                Ok(chunk) => hybox_http_guests::write_all(&output, &chunk),
                Err(StreamError::Closed) => break,
                Err(e) => panic!("reading the request body: {e:?}"),
            }
        }
        output.blocking_flush().expect("flush the body");
        drop(output);
        drop(input);
        IncomingBody::finish(in_body);
        OutgoingBody::finish(out_body, None).expect("finish the body");
    }
}

wasi::http::proxy::export!(Echo);

fn main() {}
