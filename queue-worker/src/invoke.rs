//! One attempt of a queued call, through the gateway's synchronous route.

use std::time::Duration;

use bytes::Bytes;
use courier_core::headers::HOP_BY_HOP;
use courier_core::queue::QueueRequest;
use courier_core::retry::parse_retry_after;
use courier_invoke::{Answer, FunctionCaller};
use http::HeaderMap;
use time::OffsetDateTime;

use crate::config::WorkerConfig;

/// What one attempt gave.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// The function's status; `None` when neither the gateway nor the function answered.
    pub(crate) status: Option<u16>,
    /// The response headers.
    pub(crate) headers: HeaderMap,
    /// The response body (empty when there was none).
    pub(crate) body: Bytes,
    /// What went wrong, for logs and dead letters.
    pub(crate) error: Option<String>,
    /// The function's `Retry-After`, if it sent one we understand.
    pub(crate) retry_after: Option<Duration>,
}

impl Outcome {
    fn failed(error: String) -> Self {
        Self {
            status: None,
            headers: HeaderMap::new(),
            body: Bytes::new(),
            error: Some(error),
            retry_after: None,
        }
    }
}

/// The gateway URL that invokes `request`'s function with its path and query.
pub(crate) fn function_url(gateway: &str, request: &QueueRequest) -> String {
    let mut url = format!(
        "{}/function/{}",
        gateway.trim_end_matches('/'),
        request.function.trim_matches('/')
    );
    if request.path.is_empty() {
        url.push('/');
    } else {
        if !request.path.starts_with('/') {
            url.push('/');
        }
        url.push_str(&request.path);
    }
    if !request.query_string.is_empty() {
        url.push('?');
        url.push_str(&request.query_string);
    }
    url
}

/// The `/function/...` request for a queued call: its method, path, query, headers and body.
fn function_request(request: &QueueRequest) -> Result<http::Request<Bytes>, String> {
    let method = http::Method::from_bytes(request.method.as_bytes()).unwrap_or(http::Method::POST);
    let uri = function_url("", request);
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, values) in &request.header {
        let lower = name.to_ascii_lowercase();
        if lower == "host"
            || lower == "content-length"
            || HOP_BY_HOP.iter().any(|h| h.as_str() == lower)
        {
            continue;
        }
        for value in values {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    builder
        .body(Bytes::from(request.body.clone()))
        .map_err(|e| format!("the queued call is not a valid request: {e}"))
}

/// Invokes the function once.
pub(crate) async fn invoke(
    caller: &dyn FunctionCaller,
    config: &WorkerConfig,
    request: &QueueRequest,
) -> Outcome {
    let http_request = match function_request(request) {
        Ok(r) => r,
        Err(e) => return Outcome::failed(e),
    };
    let (status, headers, body) =
        match tokio::time::timeout(config.invoke_timeout, caller.call(http_request)).await {
            Err(_) => {
                return Outcome::failed(format!("no answer within {:?}", config.invoke_timeout));
            }
            Ok(Err(e)) => return Outcome::failed(e),
            Ok(Ok(Answer {
                status,
                headers,
                body,
            })) => (status, headers, body),
        };
    let retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, OffsetDateTime::now_utc()));
    Outcome {
        status: Some(status),
        error: (status >= 400).then(|| format!("function answered {status}")),
        headers,
        body,
        retry_after,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_call_goes_to_the_gateway_function_route_with_path_and_query() {
        let mut r = QueueRequest {
            function: "echo.team".into(),
            ..QueueRequest::default()
        };
        assert_eq!(
            function_url("http://gw:8080/", &r),
            "http://gw:8080/function/echo.team/"
        );
        r.path = "/a/b".into();
        r.query_string = "x=1".into();
        assert_eq!(
            function_url("http://gw:8080", &r),
            "http://gw:8080/function/echo.team/a/b?x=1"
        );
    }
}
