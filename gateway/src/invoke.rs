//! Synchronous invocation: `/function/{name}[.{namespace}][/{path}][?query]`, any method.
//! The request and response bodies stream through a pooled client; nothing is buffered.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use courier_core::FunctionRef;
use courier_core::headers::{
    X_CALL_ID, X_FORWARDED_FOR, X_FORWARDED_HOST, X_START_TIME, strip_hop_by_hop,
};
use http::{HeaderValue, Uri, header};
use tokio::time::Instant;

use crate::Gateway;
use crate::error::ApiError;
use crate::readiness;

/// The route prefix of synchronous invocations.
pub(crate) const PREFIX: &str = "/function/";

/// Splits `/function/NAME[.NS][/rest]` into the name segment and the rest of the path.
fn split_path(path: &str) -> (&str, &str) {
    let tail = path.strip_prefix(PREFIX).unwrap_or("");
    match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, "/"),
    }
}

/// Handles one invocation.
pub(crate) async fn invoke(State(gateway): State<Arc<Gateway>>, request: Request) -> Response {
    let started = Instant::now();
    let (segment, rest) = split_path(request.uri().path());
    let rest = rest.to_owned();
    let function = match FunctionRef::parse_invocation(segment) {
        Ok(f) => f,
        Err(e) => {
            return ApiError::NotFound(format!("error finding function: {e}")).into_response();
        }
    };
    let label = function.qualified();
    let metrics = &gateway.metrics;
    metrics
        .invocation_started
        .with_label_values(&[&label])
        .inc();
    let response = forward(&gateway, &function, &rest, request).await;
    let response = response.unwrap_or_else(IntoResponse::into_response);
    let code = response.status();
    let code = code.as_str();
    metrics
        .invocation_total
        .with_label_values(&[&label, code])
        .inc();
    metrics
        .functions_seconds
        .with_label_values(&[&label, code])
        .observe(started.elapsed().as_secs_f64());
    response
}

async fn forward(
    gateway: &Gateway,
    function: &FunctionRef,
    rest: &str,
    request: Request,
) -> Result<Response, ApiError> {
    let start_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let start_time = HeaderValue::from_str(&start_nanos.to_string()).expect("digits");
    let endpoint = readiness::endpoint(gateway, function).await?;

    let (mut parts, body) = request.into_parts();
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{rest}?{q}"),
        None => rest.to_owned(),
    };
    parts.uri = Uri::builder()
        .scheme("http")
        .authority(endpoint.authority)
        .path_and_query(path_and_query)
        .build()
        .map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))?;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    let minted_call_id = if headers.contains_key(X_CALL_ID) {
        None
    } else {
        let id = HeaderValue::from_str(&uuid::Uuid::new_v4().to_string()).expect("uuid");
        headers.insert(X_CALL_ID, id.clone());
        Some(id)
    };
    headers.append(X_START_TIME, start_time.clone());
    if let Some(host) = headers.remove(header::HOST)
        && !headers.contains_key(X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if !headers.contains_key(X_FORWARDED_FOR)
        && let Some(ConnectInfo(peer)) = parts.extensions.get::<ConnectInfo<SocketAddr>>()
        && let Ok(v) = HeaderValue::from_str(&peer.ip().to_string())
    {
        headers.insert(X_FORWARDED_FOR, v);
    }
    let upstream = http::Request::from_parts(parts, body);
    let timeout = gateway.config.upstream_timeout;
    let response = match tokio::time::timeout(timeout, gateway.client.request(upstream)).await {
        Err(_) => {
            return Err(ApiError::GatewayTimeout(format!(
                "function {function} did not answer within {timeout:?}"
            )));
        }
        Ok(Err(e)) => {
            tracing::debug!(function = %function, error = %e, "Function unreachable.");
            return Err(ApiError::BadGateway(format!(
                "function {function} cannot be reached"
            )));
        }
        Ok(Ok(response)) => response,
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if let Some(id) = minted_call_id {
        parts.headers.insert(X_CALL_ID, id);
    }
    parts.headers.append(X_START_TIME, start_time);
    Ok(Response::from_parts(parts, Body::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_splits_into_name_and_rest() {
        assert_eq!(split_path("/function/echo"), ("echo", "/"));
        assert_eq!(split_path("/function/echo/"), ("echo", "/"));
        assert_eq!(split_path("/function/echo.ns/a/b"), ("echo.ns", "/a/b"));
        assert_eq!(split_path("/function/.openfaas-fn"), (".openfaas-fn", "/"));
    }
}
