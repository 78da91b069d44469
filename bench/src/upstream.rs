//! The fast upstream: answers any request with 200 and a small fixed body
//! after reading and discarding the request body. `GET /_/health` is 200 too.

use std::{convert::Infallible, net::Ipv4Addr};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;

/// The fixed response body (64 bytes).
const BODY: &[u8; 64] = b"OK courier-bench upstream 0123456789abcdefghijklmnopqrstuvwxyz\n\n";

pub(crate) async fn run(port: u16) -> anyhow::Result<()> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, port)).await?;
    eprintln!("upstream listening on {}", listener.local_addr()?);
    crate::server::serve(listener, handle).await
}

async fn handle(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/_/health" {
        return Ok(text(Bytes::from_static(b"OK\n")));
    }
    // A body that fails mid-way is the client's problem; answer anyway.
    let _ = drain(req.into_body()).await;
    Ok(text(Bytes::from_static(BODY)))
}

fn text(body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Reads a body to its end without keeping it.
pub(crate) async fn drain(mut body: Incoming) -> Result<(), hyper::Error> {
    while let Some(frame) = body.frame().await {
        frame?;
    }
    Ok(())
}
