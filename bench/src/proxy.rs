//! The baseline: a minimal pooled hyper reverse proxy, the practical limit
//! for any proxy in front of the upstream.
//!
//! One `hyper_util` legacy `Client` (keep-alive pool, `TCP_NODELAY`) is
//! built once; each request keeps its method, path, query, headers (minus
//! hop-by-hop ones) and streamed body, and the upstream response is streamed
//! back as is. Nothing else: no routing, auth, metrics or logging.

use std::{convert::Infallible, net::SocketAddr, time::Duration};

use bytes::Bytes;
use http::{
    HeaderMap, Request, Response, StatusCode, Uri, header,
    uri::{Authority, PathAndQuery},
};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::TokioExecutor,
};
use tokio::net::TcpListener;

type Upstream = Client<HttpConnector, Incoming>;
type ProxyBody = Either<Incoming, Full<Bytes>>;

pub(crate) async fn run(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(connector);
    let authority: Authority = upstream.to_string().parse()?;

    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "proxy listening on {} -> {upstream}",
        listener.local_addr()?
    );
    crate::server::serve(listener, move |req| {
        forward(client.clone(), authority.clone(), req)
    })
    .await
}

async fn forward(
    client: Upstream,
    upstream: Authority,
    mut req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let path_and_query = req.uri().path_and_query().cloned();
    let mut parts = http::uri::Parts::default();
    parts.scheme = Some(http::uri::Scheme::HTTP);
    parts.authority = Some(upstream);
    parts.path_and_query = Some(path_and_query.unwrap_or_else(|| PathAndQuery::from_static("/")));
    *req.uri_mut() = match Uri::from_parts(parts) {
        Ok(uri) => uri,
        Err(_) => return Ok(error(StatusCode::BAD_REQUEST)),
    };
    strip_hop_by_hop(req.headers_mut());

    match client.request(req).await {
        Ok(response) => {
            let mut response = response.map(Either::Left);
            strip_hop_by_hop(response.headers_mut());
            Ok(response)
        }
        Err(_) => Ok(error(StatusCode::BAD_GATEWAY)),
    }
}

fn error(status: StatusCode) -> Response<ProxyBody> {
    let mut response = Response::new(Either::Right(Full::new(Bytes::new())));
    *response.status_mut() = status;
    response
}

/// Removes the headers that describe one connection rather than the message
/// (RFC 9110 §7.6.1), including those named by `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| !name.is_empty())
        .collect();
    for name in named {
        headers.remove(name.as_str());
    }
    for name in [
        header::CONNECTION,
        header::TE,
        header::TRAILER,
        header::TRANSFER_ENCODING,
        header::UPGRADE,
        header::PROXY_AUTHORIZATION,
        header::PROXY_AUTHENTICATE,
    ] {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}
