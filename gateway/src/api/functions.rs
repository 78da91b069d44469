//! `/system/functions`, `/system/function/{name}`, `/system/scale-function/{name}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use courier_core::autoscale::{LABEL_SCALE_TYPE, ScalePolicy, ScaleType};
use courier_core::decode::{decode_form, decode_json};
use courier_core::function::{DeleteFunctionRequest, ScaleServiceRequest};
use courier_core::names::validate_name;
use courier_core::{FunctionDeployment, FunctionStatus};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;

use super::{is_form, namespace_of};
use crate::Gateway;
use crate::error::ApiError;

/// `?namespace=`
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(super) struct NamespaceQuery {
    namespace: Option<String>,
}

impl NamespaceQuery {
    pub(super) fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }
}

pub(super) async fn list(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Json<Vec<FunctionStatus>>, ApiError> {
    let namespace = namespace_of(q.namespace(), "")?;
    let mut functions = gateway.provider.list(&namespace).await?;
    for f in &mut functions {
        let name = format!("{}.{}", f.name, f.namespace);
        f.invocation_count = gateway.metrics.invocations_of(&name) as f64;
    }
    Ok(Json(functions))
}

/// Decodes and validates a deployment body; returns it with its namespace.
fn deployment(
    headers: &HeaderMap,
    query: &NamespaceQuery,
    body: &[u8],
) -> Result<(String, FunctionDeployment), ApiError> {
    let spec: FunctionDeployment = if is_form(headers, body) {
        decode_form(body)?
    } else {
        decode_json(body)?
    };
    validate_name("function", &spec.service)
        .map_err(|e| ApiError::BadRequest(format!("validation failed: service: {e}")))?;
    if spec.image.trim().is_empty() {
        return Err(ApiError::BadRequest(
            "validation failed: image: is required".into(),
        ));
    }
    for secret in spec.secrets.iter().flatten() {
        validate_name("secret", secret)?;
    }
    let namespace = namespace_of(query.namespace(), &spec.namespace)?;
    Ok((namespace, spec))
}

/// The checks every spec passes: its scaling labels, then the ones the gateway was
/// configured with (a schedule that parses, ...).
fn check(gateway: &Gateway, spec: &FunctionDeployment) -> Result<(), ApiError> {
    check_scaling(gateway, spec)?;
    for check in &gateway.config.spec_checks {
        (check.0)(spec).map_err(|e| ApiError::BadRequest(format!("validation failed: {e}")))?;
    }
    Ok(())
}

/// The `com.openfaas.scale.*` labels must parse, and ask for nothing the provider cannot do.
fn check_scaling(gateway: &Gateway, spec: &FunctionDeployment) -> Result<(), ApiError> {
    let empty = BTreeMap::new();
    let labels = spec.labels.as_ref().unwrap_or(&empty);
    let scaling = gateway.provider.scaling();
    let policy = ScalePolicy::from_labels(labels, scaling.max_replicas)
        .map_err(|e| ApiError::BadRequest(format!("validation failed: {e}")))?;
    if policy.kind == ScaleType::Cpu && !scaling.cpu_metrics {
        return Err(ApiError::BadRequest(format!(
            "validation failed: label {LABEL_SCALE_TYPE}: cpu needs CPU metrics, which the {} \
             provider does not have; use rps or capacity",
            gateway.provider.info().provider
        )));
    }
    Ok(())
}

pub(super) async fn deploy(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<NamespaceQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (namespace, spec) = deployment(&headers, &q, &body)?;
    check(&gateway, &spec)?;
    gateway.provider.deploy(&namespace, spec).await?;
    gateway.changes.notify_one();
    Ok(StatusCode::ACCEPTED)
}

pub(super) async fn update(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<NamespaceQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let (namespace, spec) = deployment(&headers, &q, &body)?;
    check(&gateway, &spec)?;
    gateway.provider.update(&namespace, spec).await?;
    gateway.changes.notify_one();
    Ok(StatusCode::ACCEPTED)
}

pub(super) async fn delete(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let request: DeleteFunctionRequest = decode_json(&body)?;
    if request.function_name.is_empty() {
        return Err(ApiError::BadRequest("functionName is required".into()));
    }
    validate_name("function", &request.function_name)?;
    let namespace = namespace_of(q.namespace(), &request.namespace)?;
    gateway
        .provider
        .delete(&namespace, &request.function_name)
        .await?;
    let function = courier_core::FunctionRef {
        name: request.function_name,
        namespace,
    };
    gateway.routes.forget(&function);
    gateway.metrics.forget(&function.qualified());
    gateway.changes.notify_one();
    Ok(StatusCode::ACCEPTED)
}

pub(super) async fn status(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
) -> Result<Response, ApiError> {
    let namespace = namespace_of(q.namespace(), "")?;
    if validate_name("function", &name).is_err() {
        return Err(ApiError::NotFoundEmpty);
    }
    match gateway.provider.status(&namespace, &name).await {
        Ok(status) => Ok(Json(status).into_response()),
        Err(courier_core::ProviderError::NotFound { .. }) => Err(ApiError::NotFoundEmpty),
        Err(e) => Err(e.into()),
    }
}

pub(super) async fn scale(
    State(gateway): State<Arc<Gateway>>,
    Path(name): Path<String>,
    Query(q): Query<NamespaceQuery>,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    if body.is_empty() {
        return Err(ApiError::BadRequest(
            "Error reading request body: empty".into(),
        ));
    }
    let request: ScaleServiceRequest = decode_json(&body)?;
    validate_name("function", &name)?;
    let namespace = namespace_of(q.namespace(), &request.namespace)?;
    gateway
        .provider
        .scale(&namespace, &name, request.replicas)
        .await?;
    Ok(StatusCode::ACCEPTED)
}
