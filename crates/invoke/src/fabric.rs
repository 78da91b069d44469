//! [`Invoker`]: what a trigger does with an event, and [`Fabric`], its implementation over a
//! [`FunctionCaller`] and a [`WorkQueue`].

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier_core::headers::{X_CALL_ID, X_CALLBACK_URL, X_START_TIME};
use courier_core::ledger::{CallRecord, CallSource};
use courier_core::queue::{GoUrl, QueueRequest, stored_headers};
use courier_core::trace::{SpanKind, SpanRecord, SpanValue, Spans, TraceContext, entry_span_ids};
use courier_queue::{Message, Published, WorkQueue};
use http::HeaderValue;
use time::OffsetDateTime;

use crate::call::Ready;
use crate::{
    Answer, Call, Enqueued, FunctionCaller, InvokeError, ReadyCall, dead_letter_record,
    keep_dead_letter,
};

/// What a trigger (connector, scheduler) can do with a function call.
#[async_trait::async_trait]
pub trait Invoker: Send + Sync + 'static {
    /// Calls the function now, through the gateway (so it counts in the gateway's metrics),
    /// and returns its whole answer. `Err` only when no answer came (unreachable, timeout); a
    /// 5xx answer is `Ok` with that status.
    async fn call(&self, call: Call, timeout: Duration) -> Result<Answer, InvokeError>;

    /// Stores the call durably in the work queue as an OpenFaaS `QueueRequest`; the queue
    /// worker invokes it with its retries, callbacks (`X-Callback-Url` in `call.headers`) and
    /// dead letters. Returns once stored; the same call id within the queue's dedup window is
    /// stored once (`duplicate: true`).
    async fn enqueue(&self, call: Call) -> Result<Enqueued, InvokeError>;

    /// Does ahead what [`Invoker::enqueue`] would do before reaching the queue (encoding the
    /// `QueueRequest`), for [`Invoker::enqueue_ready`] to finish later. The default does
    /// nothing ahead. A call made ready carries the `X-Start-Time` of this moment.
    fn ready(&self, call: Call) -> Result<ReadyCall, InvokeError> {
        Ok(ReadyCall::new(call))
    }

    /// [`Invoker::enqueue`] for a call made ready with [`Invoker::ready`] (of this invoker).
    async fn enqueue_ready(&self, ready: ReadyCall) -> Result<Enqueued, InvokeError> {
        match ready.0 {
            Ready::Call(call) => self.enqueue(call).await,
            Ready::Encoded { call_id, .. } => Err(InvokeError::Invalid(format!(
                "call {call_id} was made ready by another invoker"
            ))),
        }
    }

    /// [`Invoker::enqueue_ready`] for each of `ready`, answered in their order. The default
    /// hands them over concurrently; [`Fabric`] stores them with one
    /// [`WorkQueue::publish_batch`]. The scheduler hands a burst of fires due on one second
    /// over this way.
    async fn enqueue_ready_batch(
        &self,
        ready: Vec<ReadyCall>,
    ) -> Vec<Result<Enqueued, InvokeError>> {
        futures_util::future::join_all(ready.into_iter().map(|ready| self.enqueue_ready(ready)))
            .await
    }

    /// Whether a queued call is still waiting, running or waiting for a retry (false once it
    /// was acknowledged or dead-lettered, and when the queue cannot tell).
    async fn is_outstanding(&self, enqueued: &Enqueued) -> Result<bool, InvokeError>;

    /// Keeps a call given up on as a dead letter (served at `/system/dead-letters`, replayable
    /// with `courier dlq replay`).
    async fn dead_letter(
        &self,
        call: &Call,
        attempts: u64,
        last_status: Option<u16>,
        error: &str,
    ) -> Result<(), InvokeError>;
}

impl std::fmt::Debug for dyn Invoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Invoker")
    }
}

/// The [`Invoker`] of every Courier process: synchronous calls through `caller`, queued
/// calls and dead letters in `queue`.
#[derive(Debug, Clone)]
pub struct Fabric {
    caller: Arc<dyn FunctionCaller>,
    queue: Option<Arc<dyn WorkQueue>>,
    /// Where each queued call's `courier.enqueue` span goes; `None` builds none.
    spans: Option<Spans>,
}

impl Fabric {
    /// Calls through `caller`; queues in `queue` (without one, `enqueue` and `dead_letter`
    /// fail with [`InvokeError::NoQueue`]).
    pub fn new(caller: Arc<dyn FunctionCaller>, queue: Option<Arc<dyn WorkQueue>>) -> Self {
        Self {
            caller,
            queue,
            spans: None,
        }
    }

    /// Reports a `courier.enqueue` span for every call it queues (`--otlp-endpoint`).
    #[must_use]
    pub fn with_spans(mut self, spans: Option<Spans>) -> Self {
        self.spans = spans;
        self
    }

    /// Ends `span` (begun in `ready`) now, failed with `error` when storing failed, and
    /// reports it.
    fn finish_span(&self, span: Option<Box<SpanRecord>>, error: Option<&InvokeError>) {
        if let (Some(spans), Some(mut span)) = (&self.spans, span) {
            span.end = SystemTime::now();
            span.error = error.map(ToString::to_string);
            spans.record(*span);
        }
    }

    fn queue(&self) -> Result<&Arc<dyn WorkQueue>, InvokeError> {
        self.queue.as_ref().ok_or(InvokeError::NoQueue)
    }
}

/// The gateway URI of `call`: `/function/{function}{path}`.
fn function_uri(call: &Call) -> String {
    let function = call.function.trim_matches('/');
    if call.path.is_empty() {
        format!("/function/{function}/")
    } else if call.path.starts_with('/') {
        format!("/function/{function}{}", call.path)
    } else {
        format!("/function/{function}/{}", call.path)
    }
}

fn call_id_header(id: &str) -> Result<HeaderValue, InvokeError> {
    HeaderValue::from_str(id).map_err(|_| InvokeError::Invalid(format!("call id {id:?}")))
}

/// The `QueueRequest` for `call` with id `id`, as the gateway's `/async-function` stores it,
/// and the trace context it carries: the call's own `traceparent` (a Kafka or AMQP message's,
/// a caller's) when valid, a fresh one otherwise (a malformed one is replaced, not kept), and
/// whether it was the call's own.
fn queue_request(call: &Call, id: &str) -> Result<(QueueRequest, TraceContext, bool), InvokeError> {
    let mut headers = call.headers.clone();
    headers.insert(X_CALL_ID, call_id_header(id)?);
    let start_nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    headers.insert(X_START_TIME, HeaderValue::from(start_nanos));
    let sent = TraceContext::from_headers(&headers);
    let own = sent.is_some();
    let trace = sent.unwrap_or_else(|| {
        let random = uuid::Uuid::new_v4().into_bytes();
        let span = uuid::Uuid::new_v4().into_bytes();
        TraceContext::mint(random, span[..8].try_into().expect("8 bytes"))
    });
    trace.apply(&mut headers);
    let callback_url = match headers.get(X_CALLBACK_URL) {
        None => None,
        Some(value) => {
            let text = value
                .to_str()
                .map_err(|_| InvokeError::Invalid("X-Callback-Url is not text".into()))?;
            Some(GoUrl::parse(text).map_err(|e| InvokeError::Invalid(e.to_string()))?)
        }
    };
    let (path, query) = call.path_and_query();
    let request = QueueRequest {
        header: stored_headers(&headers),
        body: call.body.to_vec(),
        method: http::Method::POST.to_string(),
        path: path.to_owned(),
        query_string: query.to_owned(),
        function: call.function.clone(),
        callback_url,
        ..QueueRequest::default()
    };
    Ok((request, trace, own))
}

/// The `courier.enqueue` span of call `id`, begun now: under the span of the message that
/// brought it when that carried a context (`own`), else the root of the call's trace with
/// the minted context's own span id (so the worker's hops hang under it).
fn enqueue_span(call: &Call, id: &str, trace: &TraceContext, own: bool) -> SpanRecord {
    let fresh = uuid::Uuid::new_v4().into_bytes()[..8]
        .try_into()
        .expect("8 bytes");
    let (span_id, parent_id) = entry_span_ids(trace, own, fresh);
    let mut attributes = vec![
        ("faas.invoked_name", SpanValue::Text(call.function.clone())),
        ("courier.call_id", SpanValue::Text(id.to_owned())),
    ];
    if let Some(source) = &call.source {
        attributes.push(("courier.source", SpanValue::Text(source.kind().to_owned())));
    }
    let now = SystemTime::now();
    SpanRecord {
        trace_id: trace.parent.trace_id,
        span_id,
        parent_id,
        name: "courier.enqueue",
        kind: SpanKind::Producer,
        start: now,
        end: now,
        attributes,
        error: None,
    }
}

/// The ledger row of a call about to be queued as `request`.
fn ledger_row(
    call: &Call,
    id: &str,
    request: &QueueRequest,
    trace: &TraceContext,
) -> courier_queue::LedgerRow {
    let record = CallRecord::queued(
        id,
        &call.function,
        call.source.clone().unwrap_or(CallSource::Async),
        OffsetDateTime::now_utc(),
        trace.parent.trace_id_hex(),
        request.callback_url.as_ref().map(GoUrl::to_url_string),
    );
    courier_ledger::row(&record)
}

#[async_trait::async_trait]
impl Invoker for Fabric {
    async fn call(&self, call: Call, timeout: Duration) -> Result<Answer, InvokeError> {
        let id = call.id_or_new();
        let uri = function_uri(&call);
        let mut request = http::Request::builder()
            .method(http::Method::POST)
            .uri(&uri)
            .body(call.body)
            .map_err(|e| InvokeError::Invalid(format!("{uri}: {e}")))?;
        *request.headers_mut() = call.headers;
        request
            .headers_mut()
            .insert(X_CALL_ID, call_id_header(&id)?);
        match tokio::time::timeout(timeout, self.caller.call(request)).await {
            Err(_) => Err(InvokeError::Timeout(timeout)),
            Ok(Err(e)) => Err(InvokeError::Unreachable(e)),
            Ok(Ok(answer)) => Ok(answer),
        }
    }

    async fn enqueue(&self, call: Call) -> Result<Enqueued, InvokeError> {
        let ready = self.ready(call)?;
        self.enqueue_ready(ready).await
    }

    fn ready(&self, call: Call) -> Result<ReadyCall, InvokeError> {
        self.queue()?;
        let call_id = call.id_or_new();
        let (request, trace, own) = queue_request(&call, &call_id)?;
        let payload = request.to_json();
        let row = ledger_row(&call, &call_id, &request, &trace);
        let span = self
            .spans
            .as_ref()
            .map(|_| Box::new(enqueue_span(&call, &call_id, &trace, own)));
        Ok(ReadyCall(Ready::Encoded {
            call_id,
            payload: payload.into(),
            row: Some(row),
            span,
        }))
    }

    async fn enqueue_ready(&self, ready: ReadyCall) -> Result<Enqueued, InvokeError> {
        let (call_id, payload, row, span) = match ready.0 {
            Ready::Encoded {
                call_id,
                payload,
                row,
                span,
            } => (call_id, payload, row, span),
            Ready::Call(call) => return self.enqueue(call).await,
        };
        let stored = self
            .queue()?
            .publish_recorded(
                Message {
                    id: call_id.clone(),
                    payload,
                },
                row,
            )
            .await
            .map_err(InvokeError::from);
        self.finish_span(span, stored.as_ref().err());
        let receipt = stored?;
        Ok(Enqueued {
            call_id,
            duplicate: receipt.published == Published::Duplicate,
            seq: receipt.seq,
        })
    }

    async fn enqueue_ready_batch(
        &self,
        ready: Vec<ReadyCall>,
    ) -> Vec<Result<Enqueued, InvokeError>> {
        let Ok(queue) = self.queue() else {
            return ready.iter().map(|_| Err(InvokeError::NoQueue)).collect();
        };
        // Calls made ready elsewhere are encoded here; one that cannot be answers alone.
        let mut answers: Vec<Option<Result<Enqueued, InvokeError>>> =
            Vec::with_capacity(ready.len());
        let mut ids = Vec::with_capacity(ready.len());
        let mut spans = Vec::with_capacity(ready.len());
        let mut messages = Vec::with_capacity(ready.len());
        for ready in ready {
            let encoded = match ready.0 {
                Ready::Call(call) => self.ready(call).map(|ready| ready.0),
                encoded @ Ready::Encoded { .. } => Ok(encoded),
            };
            match encoded {
                Ok(Ready::Encoded {
                    call_id,
                    payload,
                    row,
                    span,
                }) => {
                    spans.push(span);
                    messages.push((
                        Message {
                            id: call_id.clone(),
                            payload,
                        },
                        row,
                    ));
                    ids.push(call_id);
                    answers.push(None);
                }
                Ok(Ready::Call(call)) => answers.push(Some(Err(InvokeError::Invalid(format!(
                    "call {} could not be encoded",
                    call.call_id.unwrap_or_default()
                ))))),
                Err(e) => answers.push(Some(Err(e))),
            }
        }
        let mut receipts = queue
            .publish_batch(messages)
            .await
            .into_iter()
            .zip(ids)
            .zip(spans)
            .map(|((receipt, call_id), span)| {
                let receipt = receipt.map_err(InvokeError::from);
                self.finish_span(span, receipt.as_ref().err());
                let receipt = receipt?;
                Ok(Enqueued {
                    call_id,
                    duplicate: receipt.published == Published::Duplicate,
                    seq: receipt.seq,
                })
            });
        answers
            .into_iter()
            .map(|answer| {
                answer.unwrap_or_else(|| {
                    receipts.next().unwrap_or_else(|| {
                        Err(InvokeError::Invalid(
                            "the queue answered a batch with too few receipts".to_owned(),
                        ))
                    })
                })
            })
            .collect()
    }

    async fn is_outstanding(&self, enqueued: &Enqueued) -> Result<bool, InvokeError> {
        let Some(seq) = enqueued.seq else {
            return Ok(false);
        };
        Ok(self.queue()?.is_outstanding(seq).await?)
    }

    async fn dead_letter(
        &self,
        call: &Call,
        attempts: u64,
        last_status: Option<u16>,
        error: &str,
    ) -> Result<(), InvokeError> {
        let queue = self.queue()?;
        let id = call.id_or_new();
        let record = dead_letter_record(
            &id,
            &call.function,
            attempts,
            last_status,
            error.to_owned(),
            Some(queue_request(call, &id)?.0),
        );
        keep_dead_letter(&**queue, &record).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(function: &str, path: &str) -> Call {
        Call {
            function: function.into(),
            path: path.into(),
            ..Call::default()
        }
    }

    #[test]
    fn the_gateway_uri_carries_function_path_and_query() {
        assert_eq!(function_uri(&call("echo", "")), "/function/echo/");
        assert_eq!(
            function_uri(&call("echo.team", "/")),
            "/function/echo.team/"
        );
        assert_eq!(
            function_uri(&call("echo", "/a/b?x=1")),
            "/function/echo/a/b?x=1"
        );
        assert_eq!(function_uri(&call("echo", "a")), "/function/echo/a");
    }

    #[test]
    fn a_queued_call_keeps_headers_id_path_query_and_callback() {
        let mut c = call("echo.team", "/sub?x=1");
        c.headers
            .insert("x-topic", HeaderValue::from_static("orders"));
        c.headers.insert(
            X_CALLBACK_URL,
            HeaderValue::from_static("http://127.0.0.1:9/cb"),
        );
        c.body = bytes::Bytes::from_static(b"hi");
        let (request, trace, _) = queue_request(&c, "id-1").expect("valid");
        assert_eq!(request.header["X-Call-Id"], vec!["id-1".to_owned()]);
        assert_eq!(
            request.header["Traceparent"],
            vec![trace.parent.header_value()],
            "a call without a trace context gets a fresh one"
        );
        assert_eq!(request.header["X-Topic"], vec!["orders".to_owned()]);
        assert!(request.header.contains_key("X-Start-Time"));
        assert_eq!(request.path, "/sub");
        assert_eq!(request.query_string, "x=1");
        assert_eq!(request.function, "echo.team");
        assert_eq!(request.body, b"hi");
        assert_eq!(
            request.callback_url.map(|u| u.to_url_string()).as_deref(),
            Some("http://127.0.0.1:9/cb")
        );
    }

    #[test]
    fn a_valid_traceparent_is_kept_and_a_malformed_one_replaced() {
        let sent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut c = call("echo", "/");
        c.headers
            .insert("traceparent", HeaderValue::from_static(sent));
        c.headers.insert(
            "tracestate",
            HeaderValue::from_static("rojo=00f067aa0ba902b7"),
        );
        let (request, trace, _) = queue_request(&c, "id").expect("valid");
        assert_eq!(request.header["Traceparent"], vec![sent.to_owned()]);
        assert_eq!(
            request.header["Tracestate"],
            vec!["rojo=00f067aa0ba902b7".to_owned()]
        );
        assert_eq!(
            trace.parent.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );

        c.headers
            .insert("traceparent", HeaderValue::from_static("00-zz-bad-01"));
        let (request, trace, _) = queue_request(&c, "id").expect("valid");
        assert_ne!(
            request.header["Traceparent"],
            vec!["00-zz-bad-01".to_owned()]
        );
        assert_ne!(
            trace.parent.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(
            !request.header.contains_key("Tracestate"),
            "the state of a replaced context is dropped"
        );
    }

    #[test]
    fn a_bad_callback_url_is_an_invalid_call() {
        let mut c = call("echo", "/");
        c.headers
            .insert(X_CALLBACK_URL, HeaderValue::from_static("not a url"));
        assert!(matches!(
            queue_request(&c, "id"),
            Err(InvokeError::Invalid(_))
        ));
    }
}
