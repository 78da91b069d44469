//! Synchronous invocation: `/function/{name}[.{namespace}][/{path}][?query]`, any method.
//! The request and response bodies stream through a pooled client; nothing is buffered.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::response::IntoResponse;
use bytes::Bytes;
use courier_core::headers::{
    X_CALL_ID, X_FORWARDED_FOR, X_FORWARDED_HOST, X_START_TIME, strip_hop_by_hop,
};
use courier_core::{FunctionRef, ProviderError};
use http::uri::{PathAndQuery, Scheme};
use http::{HeaderValue, Uri, header};
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::Gateway;
use crate::error::ApiError;
use crate::metrics::FunctionMetrics;
use crate::readiness;
use crate::server::GatewayBody;

/// A request body on its way to a function: a caller's, streamed, or one already in memory
/// (a queued call invoked in-process).
pub(crate) type UpstreamBody = Either<Incoming, Full<Bytes>>;

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

/// A parsed invocation target with its metric handles, cached by path segment so the hot path
/// neither re-parses nor re-resolves labels.
#[derive(Debug)]
pub(crate) struct Route {
    function: FunctionRef,
    metrics: FunctionMetrics,
}

/// Routes by the path segment that named them (`echo`, `echo.team-a`).
#[derive(Debug, Default)]
pub(crate) struct Routes {
    by_segment: RwLock<HashMap<String, Arc<Route>>>,
}

/// Most distinct segments remembered before the cache starts over.
const ROUTE_CACHE_LIMIT: usize = 4096;

impl Routes {
    /// The route named by `segment`, if the function exists. Unknown functions get no cache
    /// entry and no metric series, so made-up names cannot grow either.
    fn get(&self, gateway: &Gateway, segment: &str) -> Result<Arc<Route>, ApiError> {
        if let Some(route) = self.by_segment.read().expect("routes lock").get(segment) {
            return Ok(route.clone());
        }
        let function = existing_function(gateway, segment)?;
        let route = Arc::new(Route {
            metrics: gateway.metrics.for_function(&function.qualified()),
            function,
        });
        let mut routes = self.by_segment.write().expect("routes lock");
        if routes.len() >= ROUTE_CACHE_LIMIT {
            routes.clear();
        }
        routes.insert(segment.to_owned(), route.clone());
        Ok(route)
    }

    /// Drops every cached route to `function` (it was removed).
    pub(crate) fn forget(&self, function: &FunctionRef) {
        self.by_segment
            .write()
            .expect("routes lock")
            .retain(|_, route| route.function != *function);
    }
}

/// The function a `/function/` or `/async-function/` path segment (`NAME[.NS]`) names, if it
/// is deployed (ready or not); 404 otherwise.
pub(crate) fn existing_function(gateway: &Gateway, segment: &str) -> Result<FunctionRef, ApiError> {
    let function = FunctionRef::parse_invocation(segment)
        .map_err(|e| ApiError::NotFound(format!("error finding function: {e}")))?;
    match gateway.provider.resolve(&function) {
        Ok(_) | Err(ProviderError::NotReady(_)) => Ok(function),
        Err(ProviderError::NotFound { .. }) => Err(ApiError::NotFound(format!(
            "error finding function {function}: not found"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Handles one invocation; the request body is hyper's own, never boxed or buffered.
/// `forwarded_for` is the caller's address, made into a header value once per connection.
pub(crate) async fn invoke(
    gateway: &Gateway,
    forwarded_for: Option<HeaderValue>,
    request: Request<UpstreamBody>,
) -> Response<GatewayBody> {
    let started = Instant::now();
    let (segment, rest) = split_path(request.uri().path());
    let route = match gateway.routes.get(gateway, segment) {
        Ok(route) => route,
        Err(e) => return e.into_response().map(Either::Right),
    };
    let path_and_query = match upstream_path(rest, request.uri().query()) {
        Ok(path_and_query) => path_and_query,
        Err(e) => return e.into_response().map(Either::Right),
    };
    let in_flight = route.metrics.started();
    let response = forward(
        gateway,
        &route.function,
        path_and_query,
        forwarded_for,
        request,
    )
    .await;
    let response = response.unwrap_or_else(|e| e.into_response().map(Either::Right));
    route.metrics.completed(
        &gateway.metrics,
        response.status(),
        started.elapsed().as_secs_f64(),
    );
    drop(in_flight);
    response
}

/// The path and query the function is asked for: what follows the function's name, and the
/// caller's query as it came.
fn upstream_path(rest: &str, query: Option<&str>) -> Result<PathAndQuery, ApiError> {
    let path_and_query = match query {
        Some(query) => {
            let mut text = String::with_capacity(rest.len() + 1 + query.len());
            text.push_str(rest);
            text.push('?');
            text.push_str(query);
            PathAndQuery::from_maybe_shared(Bytes::from(text))
        }
        None => PathAndQuery::from_maybe_shared(Bytes::copy_from_slice(rest.as_bytes())),
    };
    path_and_query.map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))
}

async fn forward(
    gateway: &Gateway,
    function: &FunctionRef,
    path_and_query: PathAndQuery,
    forwarded_for: Option<HeaderValue>,
    request: Request<UpstreamBody>,
) -> Result<Response<GatewayBody>, ApiError> {
    let start_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let start_time = HeaderValue::from(u64::try_from(start_nanos).unwrap_or(u64::MAX));
    let endpoint = readiness::endpoint(gateway, function).await?;

    let (mut parts, body) = request.into_parts();
    let mut uri = http::uri::Parts::default();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(endpoint.authority);
    uri.path_and_query = Some(path_and_query);
    parts.uri =
        Uri::from_parts(uri).map_err(|e| ApiError::BadRequest(format!("invalid path: {e}")))?;
    // Replicas speak HTTP/1.1 whatever the caller used (h2c included).
    parts.version = http::Version::HTTP_11;
    let headers = &mut parts.headers;
    strip_hop_by_hop(headers);
    let minted_call_id = if headers.contains_key(X_CALL_ID) {
        None
    } else {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
        let id = HeaderValue::from_str(text).expect("a uuid is a valid header value");
        headers.insert(X_CALL_ID, id.clone());
        Some(id)
    };
    headers.append(X_START_TIME, start_time.clone());
    if let Some(host) = headers.remove(header::HOST)
        && !headers.contains_key(X_FORWARDED_HOST)
    {
        headers.insert(X_FORWARDED_HOST, host);
    }
    if let Some(forwarded_for) = forwarded_for
        && !headers.contains_key(X_FORWARDED_FOR)
    {
        headers.insert(X_FORWARDED_FOR, forwarded_for);
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
    Ok(Response::from_parts(parts, Either::Left(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_function_gets_the_rest_of_the_path_and_the_query_as_sent() {
        assert_eq!(upstream_path("/", None).unwrap().as_str(), "/");
        assert_eq!(
            upstream_path("/a/b", Some("x=1&y=%20")).unwrap().as_str(),
            "/a/b?x=1&y=%20"
        );
        assert_eq!(upstream_path("/", Some("")).unwrap().as_str(), "/?");
    }

    #[test]
    fn path_splits_into_name_and_rest() {
        assert_eq!(split_path("/function/echo"), ("echo", "/"));
        assert_eq!(split_path("/function/echo/"), ("echo", "/"));
        assert_eq!(split_path("/function/echo.ns/a/b"), ("echo.ns", "/a/b"));
        assert_eq!(split_path("/function/.openfaas-fn"), (".openfaas-fn", "/"));
    }
}
