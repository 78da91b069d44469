//! The HTTP server: an accept loop over hyper (HTTP/1.1 and h2c), with a header read timeout
//! and graceful shutdown. `dispatch` sends `/function/*` straight to the invocation proxy with
//! hyper's own body type (no boxing, no routing table); everything else goes through the axum
//! router.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use http::{Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::Gateway;
use crate::path::NormalizedRouter;
use crate::{enqueue, invoke};

/// A response body: a function's, streamed as is, or one the gateway made.
pub(crate) type GatewayBody = Either<Incoming, Body>;

/// How long a client may take to send a request's headers (slow clients cannot hold
/// connections open forever).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Accepts connections until `shutdown`, then waits for open connections to finish.
pub(crate) async fn serve(
    gateway: Arc<Gateway>,
    listener: TcpListener,
    router: NormalizedRouter,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Usually out of file descriptors: back off instead of spinning.
                    tracing::warn!(error = %e, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let gateway = gateway.clone();
        let router = router.clone();
        let service = hyper::service::service_fn(move |request| {
            dispatch(gateway.clone(), router.clone(), peer, request)
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "Connection ended with an error.");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}

/// Routes one request: invocations to the proxy, the rest to the axum router.
async fn dispatch(
    gateway: Arc<Gateway>,
    router: NormalizedRouter,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    // `//function/x` (a base URL ending in `/`, as Airflow builds them) is `/function/x`.
    if request.uri().path().starts_with("//")
        && let Some(uri) = trim_leading_slashes(request.uri())
    {
        *request.uri_mut() = uri;
    }
    if request.uri().path().starts_with(invoke::PREFIX) {
        return Ok(invoke::invoke(&gateway, peer, request.map(Either::Left)).await);
    }
    if request.uri().path().starts_with(enqueue::PREFIX) {
        return Ok(enqueue::enqueue(&gateway, request).await);
    }
    let response = router
        .oneshot(request.map(Body::new))
        .await
        .unwrap_or_else(|never| match never {});
    Ok(response.map(Either::Right))
}

fn trim_leading_slashes(uri: &Uri) -> Option<Uri> {
    let path_and_query = uri.path_and_query()?.as_str();
    let trimmed = format!("/{}", path_and_query.trim_start_matches('/'));
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(trimmed.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leading_slashes_collapse_to_one() {
        let uri: Uri = "//function/echo//a?x=1".parse().unwrap();
        assert_eq!(
            trim_leading_slashes(&uri).unwrap().to_string(),
            "/function/echo//a?x=1"
        );
    }
}
