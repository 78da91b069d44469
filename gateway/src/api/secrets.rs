//! `/system/secrets`: names are listed, values are never returned or logged.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use courier_core::decode::decode_json;
use courier_core::names::validate_name;
use courier_core::{Secret, SecretSummary};
use http::StatusCode;

use super::functions::NamespaceQuery;
use super::namespace_of;
use crate::Gateway;
use crate::error::ApiError;

fn secret(query: &NamespaceQuery, body: &[u8]) -> Result<(String, Secret), ApiError> {
    let secret: Secret = decode_json(body)?;
    validate_name("secret", &secret.name)?;
    let namespace = namespace_of(query.namespace(), &secret.namespace)?;
    Ok((namespace, secret))
}

pub(super) async fn list(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Vec<SecretSummary>>, ApiError> {
    let namespace = namespace_of(q.namespace(), "")?;
    Ok(Json(gateway.provider.list_secrets(&namespace).await?))
}

pub(super) async fn create(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (namespace, secret) = secret(&q, &body)?;
    gateway.provider.create_secret(&namespace, secret).await?;
    Ok(StatusCode::ACCEPTED)
}

pub(super) async fn update(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (namespace, secret) = secret(&q, &body)?;
    gateway.provider.update_secret(&namespace, secret).await?;
    Ok(StatusCode::ACCEPTED)
}

pub(super) async fn delete(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (namespace, secret) = secret(&q, &body)?;
    gateway
        .provider
        .delete_secret(&namespace, &secret.name)
        .await?;
    Ok(StatusCode::ACCEPTED)
}
