//! One attempt of a queued call, through the gateway's synchronous route.

use std::time::Duration;

use bytes::Bytes;
use courier_core::headers::HOP_BY_HOP;
use courier_core::queue::QueueRequest;
use courier_core::retry::parse_retry_after;
use courier_core::trace::TraceContext;
use courier_invoke::{Answer, FunctionCaller};
use http::HeaderMap;
use time::OffsetDateTime;

use crate::config::WorkerConfig;

/// The header by which a caller asks for this call's result to be kept in the ledger
/// (`true`); it is the worker's to read and is not forwarded to the function.
pub(crate) const KEEP_RESULT_HEADER: &str = "X-Courier-Keep-Result";

/// Whether the queued call asked for its result to be kept (`X-Courier-Keep-Result: true`,
/// any case).
pub(crate) fn keep_result_requested(request: &QueueRequest) -> bool {
    request
        .header
        .iter()
        .filter(|(name, _)| name.eq_ignore_ascii_case(KEEP_RESULT_HEADER))
        .flat_map(|(_, values)| values)
        .any(|value| value.trim().eq_ignore_ascii_case("true"))
}

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

/// The `/function/...` request for a queued call: its method, path, query, headers and body,
/// with `trace` (this attempt's context) in place of the stored `traceparent` and
/// `tracestate`, and without the worker's own `X-Courier-Keep-Result`.
fn function_request(
    request: &QueueRequest,
    trace: &TraceContext,
) -> Result<http::Request<Bytes>, String> {
    let method = http::Method::from_bytes(request.method.as_bytes()).unwrap_or(http::Method::POST);
    let uri = function_url("", request);
    let mut builder = http::Request::builder().method(method).uri(uri);
    for (name, values) in &request.header {
        let lower = name.to_ascii_lowercase();
        if lower == "host"
            || lower == "content-length"
            || HOP_BY_HOP.iter().any(|h| h.as_str() == lower)
            || crate::trace::is_trace_header(&lower)
            || lower.eq_ignore_ascii_case(KEEP_RESULT_HEADER)
        {
            continue;
        }
        for value in values {
            builder = builder.header(name.as_str(), value.as_str());
        }
    }
    let mut http_request = builder
        .body(Bytes::from(request.body.clone()))
        .map_err(|e| format!("the queued call is not a valid request: {e}"))?;
    trace.apply(http_request.headers_mut());
    Ok(http_request)
}

/// Invokes the function once, sending it `trace`.
pub(crate) async fn invoke(
    caller: &dyn FunctionCaller,
    config: &WorkerConfig,
    request: &QueueRequest,
    trace: &TraceContext,
) -> Outcome {
    let http_request = match function_request(request, trace) {
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
    use courier_core::trace::TraceParent;

    const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn stored_call(headers: &[(&str, &str)]) -> QueueRequest {
        let mut request = QueueRequest {
            function: "echo".into(),
            method: "POST".into(),
            body: b"hi".to_vec(),
            ..QueueRequest::default()
        };
        for (name, value) in headers {
            request
                .header
                .entry((*name).to_owned())
                .or_default()
                .push((*value).to_owned());
        }
        request
    }

    #[test]
    fn the_function_gets_the_attempt_traceparent_not_the_stored_one() {
        let request = stored_call(&[
            ("Traceparent", SENT),
            ("Tracestate", "rojo=1"),
            ("X-Custom", "kept"),
        ]);
        let stored = crate::trace::stored(&request).unwrap();
        let attempt = crate::trace::next_hop(&stored);
        let sent = function_request(&request, &attempt).unwrap();
        let headers = sent.headers();
        assert_eq!(headers.get_all("traceparent").iter().count(), 1);
        let parent = TraceParent::parse(headers["traceparent"].to_str().unwrap()).unwrap();
        assert_eq!(parent.trace_id, stored.parent.trace_id, "the same trace");
        assert_ne!(parent.parent_id, stored.parent.parent_id, "a new parent");
        assert_eq!(parent, attempt.parent);
        assert_eq!(headers["tracestate"], "rojo=1");
        assert_eq!(headers["x-custom"], "kept");
        assert_eq!(sent.body().as_ref(), b"hi");
    }

    #[test]
    fn the_keep_result_header_is_read_by_the_worker_and_not_forwarded() {
        let request = stored_call(&[("X-Courier-Keep-Result", "true"), ("X-Custom", "kept")]);
        assert!(keep_result_requested(&request));
        let context = courier_core::trace::TraceContext::mint([1; 16], [2; 8]);
        let sent = function_request(&request, &context).unwrap();
        assert!(!sent.headers().contains_key("x-courier-keep-result"));
        assert_eq!(sent.headers()["x-custom"], "kept");

        assert!(keep_result_requested(&stored_call(&[(
            "x-courier-keep-result",
            " TRUE "
        )])));
        assert!(!keep_result_requested(&stored_call(&[(
            "X-Courier-Keep-Result",
            "false"
        )])));
        assert!(!keep_result_requested(&stored_call(&[])));
    }

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
