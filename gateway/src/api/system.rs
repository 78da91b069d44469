//! `/system/info`, `/system/namespaces`, `/healthz` and `/metrics`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use courier_core::system::GatewayInfo;
use http::{StatusCode, header};
use prometheus::{Encoder, TextEncoder};

use crate::Gateway;
use crate::error::ApiError;

pub(super) async fn info(State(gateway): State<Arc<Gateway>>) -> Json<GatewayInfo> {
    Json(GatewayInfo {
        provider: gateway.provider.info(),
        version: gateway.config.version.clone(),
        arch: std::env::consts::ARCH.to_owned(),
    })
}

pub(super) async fn namespaces(
    State(gateway): State<Arc<Gateway>>,
) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(gateway.provider.namespaces().await?))
}

pub(super) async fn healthz() -> &'static str {
    "OK"
}

/// Refreshes `gateway_service_count` from the provider, then renders every metric.
pub(super) async fn metrics(
    State((gateway, registry)): State<(Arc<Gateway>, prometheus::Registry)>,
) -> Response {
    let gauge = &gateway.metrics.service_count;
    gauge.reset();
    if let Ok(namespaces) = gateway.provider.namespaces().await {
        for namespace in namespaces {
            for f in gateway.provider.list(&namespace).await.unwrap_or_default() {
                let name = format!("{}.{}", f.name, f.namespace);
                gauge
                    .with_label_values(&[&name])
                    .set(i64::try_from(f.replicas).unwrap_or(i64::MAX));
            }
        }
    }
    let mut buf = Vec::new();
    if let Err(e) = TextEncoder::new().encode(&registry.gather(), &mut buf) {
        return ApiError::Internal(format!("encoding metrics: {e}")).into_response();
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, prometheus::TEXT_FORMAT)],
        buf,
    )
        .into_response()
}
