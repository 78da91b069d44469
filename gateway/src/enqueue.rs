//! Asynchronous invocation: `POST /async-function/{name}[.{namespace}][/{path}][?query]`
//! stores the call in the WorkQueue as an OpenFaaS QueueRequest and answers 202 with
//! `X-Call-Id` only once the queue confirmed it is stored. Unknown functions are 404 (a
//! deliberate difference from OpenFaaS CE); an unparsable `X-Callback-Url` is 400; a body past
//! the limit is 413; a queue that cannot store the call is 503, never a silent 202.
//!
//! The call carries a W3C trace context (the caller's `traceparent`, or a fresh one) in its
//! stored headers, and its ledger record (`queued`, source `async`) is written with the
//! publish, in the same queue commit. With spans on (`--otlp-endpoint`) the accept is a
//! `courier.accept` span: under the caller's span when it sent one, else the root of the
//! call's trace (the minted context's span id is the accept span's, so every later hop
//! hangs under it).

use axum::response::IntoResponse;
use bytes::Bytes;
use courier_core::headers::{X_CALL_ID, X_CALLBACK_URL, X_START_TIME};
use courier_core::ledger::{CallRecord, CallSource, check_call_id};
use courier_core::queue::{GoUrl, QueueRequest, stored_headers};
use courier_core::trace::{SpanKind, SpanRecord, SpanValue, TraceContext, entry_span_ids};
use courier_queue::{Message, Published};
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Either, Limited};
use hyper::body::Incoming;
use time::OffsetDateTime;

use crate::Gateway;
use crate::error::ApiError;
use crate::server::GatewayBody;

/// The route prefix of asynchronous invocations.
pub(crate) const PREFIX: &str = "/async-function/";

/// Handles one asynchronous invocation.
pub(crate) async fn enqueue(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Response<GatewayBody> {
    match accept(gateway, request).await {
        Ok((call_id, start)) => {
            let mut resp = Response::new(Either::Right(axum::body::Body::empty()));
            *resp.status_mut() = StatusCode::ACCEPTED;
            resp.headers_mut().insert(X_CALL_ID, call_id);
            resp.headers_mut().insert(X_START_TIME, start);
            resp
        }
        Err(e) => e.into_response().map(Either::Right),
    }
}

async fn accept(
    gateway: &Gateway,
    request: Request<Incoming>,
) -> Result<(HeaderValue, HeaderValue), ApiError> {
    let Some(queue) = &gateway.queue else {
        return Err(ApiError::NotFound(
            "asynchronous invocation is not enabled on this gateway (no --queue)".into(),
        ));
    };
    let tail = request.uri().path().strip_prefix(PREFIX).unwrap_or("");
    let (segment, rest) = match tail.find('/') {
        Some(i) => (&tail[..i], &tail[i..]),
        None => (tail, ""),
    };
    let function = crate::invoke::existing_function(gateway, segment)?;
    if request.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed(
            "asynchronous invocation takes POST only".into(),
        ));
    }
    let began = std::time::SystemTime::now();
    let callback_url = match request.headers().get(X_CALLBACK_URL) {
        None => None,
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::BadRequest("X-Callback-Url is not valid text".into()))?;
            Some(GoUrl::parse(text).map_err(|e| ApiError::BadRequest(e.to_string()))?)
        }
    };
    // The call id is the ledger's key: a caller's must be one the ledger can address.
    let caller_id = match request.headers().get(X_CALL_ID) {
        None => None,
        Some(id) => {
            let text = id
                .to_str()
                .map_err(|_| ApiError::BadRequest("X-Call-Id is not valid text".into()))?;
            check_call_id(text).map_err(|e| ApiError::BadRequest(format!("X-Call-Id: {e}")))?;
            Some(id.clone())
        }
    };
    let (segment, rest, query) = (
        segment.to_owned(),
        rest.to_owned(),
        request.uri().query().unwrap_or("").to_owned(),
    );
    let (mut parts, body) = request.into_parts();
    let limit = gateway.config.max_async_body_bytes;
    let body: Bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e)
            if e.downcast_ref::<http_body_util::LengthLimitError>()
                .is_some() =>
        {
            return Err(ApiError::PayloadTooLarge(format!(
                "the request body exceeds {limit} bytes (--max-async-body-bytes)"
            )));
        }
        Err(e) => {
            return Err(ApiError::BadRequest(format!(
                "reading the request body: {e}"
            )));
        }
    };

    let headers = &mut parts.headers;
    // A fresh id is a UUID v7: time-ordered, so the ledger rows and dedup ids of calls
    // stored together sit together in the embedded store's B-trees (an update of a row
    // written a moment ago touches the pages the last commit wrote, not a random leaf).
    let call_id = caller_id.unwrap_or_else(|| {
        let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let text = uuid::Uuid::now_v7().hyphenated().encode_lower(&mut buf);
        HeaderValue::from_str(text).expect("a uuid is a valid header value")
    });
    // One clock read: X-Start-Time and the record's createdAt are the same instant.
    let now = OffsetDateTime::now_utc();
    let start_nanos = u64::try_from(now.unix_timestamp_nanos()).unwrap_or_default();
    let start = HeaderValue::from(start_nanos);
    headers.insert(X_CALL_ID, call_id.clone());
    headers.append(X_START_TIME, start.clone());
    // The caller's trace context when it is valid; a fresh one otherwise (a malformed
    // `traceparent` is replaced and its `tracestate` dropped, never stored).
    let sent = TraceContext::from_headers(headers);
    let caller_sent = sent.is_some();
    let trace = sent.unwrap_or_else(mint_trace);
    trace.apply(headers);
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let stored = stored_headers(headers);
    let id = call_id.to_str().unwrap_or_default().to_owned();
    let record = CallRecord::queued(
        &id,
        &segment,
        CallSource::Async,
        now,
        trace.parent.trace_id_hex(),
        callback_url.as_ref().map(GoUrl::to_url_string),
    );
    let call = QueueRequest {
        header: stored,
        host,
        body: body.to_vec(),
        method: Method::POST.to_string(),
        path: rest,
        query_string: query,
        function: segment,
        callback_url,
        ..QueueRequest::default()
    };
    let payload = call.to_json();
    let message = Message {
        id: id.clone(),
        payload: payload.into(),
    };
    // The record rides on the publish's own commit: no second write, no second fsync.
    let published = queue
        .publish_recorded(message, Some(courier_ledger::row(&record)))
        .await
        .map(|receipt| receipt.published);
    if let Some(spans) = &gateway.config.spans {
        let error = published.as_ref().err().map(ToString::to_string);
        let name = function.to_string();
        spans.record(accept_span(&trace, caller_sent, &id, &name, began, error));
    }
    match published {
        Ok(Published::Stored) => {
            gateway.metrics.submitted.inc();
            tracing::debug!(call_id = %id, function = %function, "Call queued.");
        }
        Ok(Published::Duplicate) => {
            tracing::info!(call_id = %id, function = %function, "Duplicate call id; stored once.");
        }
        Err(courier_queue::Error::TooLarge { size, limit }) => {
            return Err(ApiError::PayloadTooLarge(format!(
                "the queued call is {size} bytes; the queue takes at most {limit}"
            )));
        }
        Err(e) if e.is_retryable() => {
            tracing::warn!(call_id = %id, error = %e, "Queue unavailable; call refused.");
            return Err(ApiError::NotReady(format!(
                "the queue cannot store calls right now: {e}"
            )));
        }
        Err(e) => return Err(ApiError::Internal(format!("storing the call: {e}"))),
    }
    Ok((call_id, start))
}

/// The `courier.accept` span of call `id` of `function`: under the caller's span when it sent
/// a context, otherwise the trace's root with the minted context's own span id.
fn accept_span(
    trace: &TraceContext,
    caller_sent: bool,
    id: &str,
    function: &str,
    start: std::time::SystemTime,
    error: Option<String>,
) -> SpanRecord {
    let fresh = uuid::Uuid::new_v4().into_bytes()[..8]
        .try_into()
        .expect("8 bytes");
    let (span_id, parent_id) = entry_span_ids(trace, caller_sent, fresh);
    SpanRecord {
        trace_id: trace.parent.trace_id,
        span_id,
        parent_id,
        name: "courier.accept",
        kind: SpanKind::Server,
        start,
        end: std::time::SystemTime::now(),
        attributes: vec![
            ("faas.invoked_name", SpanValue::Text(function.to_owned())),
            ("courier.call_id", SpanValue::Text(id.to_owned())),
        ],
        error,
    }
}

/// A fresh trace context: random trace and span ids (uuid v4's random source).
pub(crate) fn mint_trace() -> TraceContext {
    let trace_id = uuid::Uuid::new_v4().into_bytes();
    let span = uuid::Uuid::new_v4().into_bytes();
    let mut span_id = [0u8; 8];
    span_id.copy_from_slice(&span[..8]);
    TraceContext::mint(trace_id, span_id)
}
