//! The baseline: the leanest pooled hyper reverse proxy, a copy of the team's reference
//! `shared/bench/bare-proxy` (35 lines) and nothing more, so that the ratio Courier is held to
//! is against the physical limit of a Rust proxy rather than a slower stand-in.
//!
//! Exactly as there: HTTP/1.1 only (no h2c detection), `TCP_NODELAY` on both sides, one
//! pooled legacy `Client` (up to 1,024 idle connections) built once, the request's path and
//! query re-aimed at the upstream with `format!`, bodies streamed both ways. No header
//! rewriting, routing, metrics, timeouts or logging. Its workspace build shares Courier's
//! release profile, so the two are compiled alike.

use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Uri};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioIo};
use std::net::SocketAddr;
use tokio::net::TcpListener;

pub(crate) async fn run(listen: SocketAddr, upstream: SocketAddr) -> anyhow::Result<()> {
    let upstream: &'static str = Box::leak(upstream.to_string().into_boxed_str());
    let mut conn = HttpConnector::new();
    conn.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(conn);
    let listener = TcpListener::bind(listen).await?;
    eprintln!(
        "proxy listening on {} -> {upstream}",
        listener.local_addr()?
    );
    crate::server::exit_when_orphaned();
    loop {
        let (stream, _) = listener.accept().await?;
        stream.set_nodelay(true).ok();
        let client = client.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |mut req: Request<Incoming>| {
                let client = client.clone();
                async move {
                    let pq = req
                        .uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                        .to_string();
                    *req.uri_mut() = Uri::try_from(format!("http://{upstream}{pq}"))
                        .expect("a valid path and query stays valid behind an authority");
                    client.request(req).await
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
