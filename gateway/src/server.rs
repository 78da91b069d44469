//! The HTTP server: an accept loop over hyper (HTTP/1.1 and h2c), with a header read timeout
//! and graceful shutdown. `dispatch` sends `/function/*` straight to the invocation proxy with
//! hyper's own body type (no boxing, no routing table); everything else goes through the axum
//! router.
//!
//! Graceful shutdown is per connection: each connection task polls only its own oneshot, an
//! atomic check. (hyper-util's `GracefulShutdown` makes every connection poll one shared
//! `watch` channel, whose waiter list is behind a mutex taken on every poll of every
//! connection: a lock both workers fight over several times per request.)

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
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
    let mut connections = Connections::default();
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
        // Once per connection, not per request.
        let forwarded_for = HeaderValue::from_str(&peer.ip().to_string()).ok();
        let service = hyper::service::service_fn(move |request| {
            dispatch(
                gateway.clone(),
                router.clone(),
                forwarded_for.clone(),
                request,
            )
        });
        let connection = builder
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let (id, stop) = connections.open();
        let open = connections.open.clone();
        connections.tasks.spawn(async move {
            let mut connection = std::pin::pin!(connection);
            let mut stop = stop;
            let result = tokio::select! {
                biased;
                result = connection.as_mut() => result,
                _ = &mut stop => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            open.lock().expect("connections lock").remove(&id);
            if let Err(e) = result {
                tracing::debug!(error = %e, "Connection ended with an error.");
            }
        });
    }
    drop(listener);
    // Long polls answer now with what they have, so their connections can finish.
    gateway.stopping.cancel();
    connections.shutdown().await;
    Ok(())
}

/// The open connections: a stop signal for each, and their tasks to wait for.
#[derive(Default)]
struct Connections {
    next_id: u64,
    open: Arc<Mutex<HashMap<u64, oneshot::Sender<()>>>>,
    tasks: TaskTracker,
}

impl Connections {
    /// Registers a new connection: its id and the receiver that asks it to finish.
    fn open(&mut self) -> (u64, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        self.next_id += 1;
        self.open
            .lock()
            .expect("connections lock")
            .insert(self.next_id, tx);
        (self.next_id, rx)
    }

    /// Asks every open connection to finish its current request and close, then waits for all.
    async fn shutdown(self) {
        let stops: Vec<_> = self
            .open
            .lock()
            .expect("connections lock")
            .drain()
            .map(|(_, stop)| stop)
            .collect();
        for stop in stops {
            let _ = stop.send(());
        }
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// Routes one request: invocations to the proxy, the rest to the axum router.
async fn dispatch(
    gateway: Arc<Gateway>,
    router: NormalizedRouter,
    forwarded_for: Option<HeaderValue>,
    mut request: Request<Incoming>,
) -> Result<Response<GatewayBody>, Infallible> {
    // `//function/x` (a base URL ending in `/`, as Airflow builds them) is `/function/x`.
    if request.uri().path().starts_with("//")
        && let Some(uri) = trim_leading_slashes(request.uri())
    {
        *request.uri_mut() = uri;
    }
    if request.uri().path().starts_with(invoke::PREFIX) {
        return Ok(invoke::invoke(&gateway, forwarded_for, request.map(Either::Left)).await);
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
