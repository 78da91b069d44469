//! What every standalone component process (`courier queue-worker`, `courier scheduler`,
//! `courier connector ...`) serves besides its work: `GET /healthz` (liveness and readiness
//! probes) and `GET /metrics` (its Prometheus registry), on `--listen`.

use std::net::SocketAddr;

use anyhow::{Context, Result};
use axum::Router;
use axum::extract::State;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Binds `listen` and serves `/healthz` and `/metrics` until `shutdown`; returns the bound
/// address (port 0 picks a free one) once listening.
pub(crate) async fn serve(
    listen: SocketAddr,
    registry: prometheus::Registry,
    shutdown: CancellationToken,
) -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/healthz", get(|| async { "OK" }))
        .route("/metrics", get(metrics))
        .with_state(registry);
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "Metrics endpoint stopped.");
        }
    });
    Ok(bound)
}

async fn metrics(
    State(registry): State<prometheus::Registry>,
) -> impl axum::response::IntoResponse {
    let mut text = String::new();
    if let Err(e) = prometheus::TextEncoder::new().encode_utf8(&registry.gather(), &mut text) {
        return (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            [(http::header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            format!("encoding metrics: {e}\n"),
        );
    }
    (
        http::StatusCode::OK,
        [(
            http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}
