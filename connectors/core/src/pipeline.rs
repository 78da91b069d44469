//! The per-message pipeline: look up the topic's functions, invoke them all concurrently
//! (synchronously with retries, or by storing queued calls), hand calls that keep failing to
//! dead letters, publish replies, and say how the source must settle the message.
//!
//! # The settle contract
//!
//! [`Pipeline::handle`] returns an [`Outcome`] only the source acts on:
//!
//! * [`Outcome::Settle`]: every function reached its outcome (succeeded, stored on the queue,
//!   or dead-lettered by Courier): commit / ack the message.
//! * [`Outcome::Reject`]: some function failed for good and the source owns dead letters
//!   ([`DeadLetters::Source`]): reject the message without requeue (AMQP `nack`, routed by the
//!   queue's dead-letter exchange). Only sources that asked for it see this.
//! * [`Outcome::Unsettled`]: handling was cut short (shutdown drain deadline, revoked
//!   partition, lost channel) before every function reached an outcome: do **not** settle; the
//!   broker delivers the message again, so it runs at least once.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier_core::ledger::CallSource;
use courier_core::retry::{RetryPolicy, parse_retry_after};
use courier_invoke::{Answer, Call, Invoker};
use futures_util::future::join_all;
use http::{HeaderMap, HeaderName, HeaderValue, header};

use crate::config::{ConnectorConfig, InvocationMode};
use crate::metrics::{ConnectorMetrics, InvocationOutcome};
use crate::reply::{Reply, ReplySink};
use crate::stop::Stop;
use crate::topics::{Subscriber, TopicWatch};

/// `X-Topic`: the topic (or queue) the message came from.
pub static X_TOPIC: HeaderName = HeaderName::from_static("x-topic");
/// `X-Connector`: which connector invoked the function.
pub static X_CONNECTOR: HeaderName = HeaderName::from_static("x-connector");
/// `X-Call-Id`: the call id, on replies.
pub static X_CALL_ID: HeaderName = HeaderName::from_static("x-call-id");
/// `X-Function-Name`: the function that produced a reply.
pub static X_FUNCTION_NAME: HeaderName = HeaderName::from_static("x-function-name");
/// `X-Function-Status`: the status of the call that produced a reply.
pub static X_FUNCTION_STATUS: HeaderName = HeaderName::from_static("x-function-status");

/// Namespace of the call ids derived from source coordinates (UUID v5).
const CALL_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6f1c_2a4e_93d0_4b57_a1f2_8c3e_5d7b_9e01);

/// Longest pause between two attempts to store a dead letter that the store refused.
const DEAD_LETTER_MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Slack on top of a call's own timeout before the connector stops waiting for the invoker.
const INVOKER_SLACK: Duration = Duration::from_secs(5);

/// One message from a source, already translated.
#[derive(Debug, Clone)]
pub struct Message {
    /// The topic (Kafka) or queue (AMQP) it came from; matched against `topic` annotations.
    pub topic: String,
    /// The payload: the request body.
    pub body: Bytes,
    /// Headers the source derived from the message (`X-Kafka-*`, `X-Rabbitmq-*`, ...).
    pub headers: HeaderMap,
    /// The message's key at the source (Kafka), carried on to replies.
    pub key: Option<Bytes>,
    /// Stable coordinates of the message at the source (`kafka/topic/partition/offset`), so a
    /// message delivered again gets the same call ids; `None` when the source has none.
    pub source_id: Option<String>,
    /// Where the message came from, for the ledger record of a queued call.
    pub origin: Option<CallSource>,
}

/// What the source must do with a handled message (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Commit / ack.
    Settle,
    /// Reject without requeue: the broker dead-letters it.
    Reject,
    /// Leave unsettled: it will be delivered again.
    Unsettled,
}

/// Who keeps the calls that exhausted their attempts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadLetters {
    /// Courier's dead letters (`Invoker::dead_letter`, served at `/system/dead-letters`).
    Courier,
    /// The broker, through [`Outcome::Reject`] (e.g. an AMQP dead-letter exchange).
    Source,
}

/// What the pipeline knows about the source that feeds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceInfo {
    /// `X-Connector` header value, e.g. `courier-connector-kafka`.
    pub connector: &'static str,
    /// Who keeps dead letters.
    pub dead_letters: DeadLetters,
}

/// How one function's share of a message ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FunctionOutcome {
    Succeeded,
    Queued,
    DeadLettered,
    Rejected,
    Abandoned,
}

/// What to do after one attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Decision {
    /// The call succeeded.
    Done,
    /// Try again after this long.
    RetryAfter(Duration),
    /// Give up: dead-letter it.
    GiveUp,
}

/// The result of one attempt, as the retry decision sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Attempt {
    /// The function's status; `None` when it was not reached.
    pub(crate) status: Option<u16>,
    /// The function's `Retry-After`.
    pub(crate) retry_after: Option<Duration>,
    /// Whether an invoker error may pass on another try (ignored when `status` is set).
    pub(crate) retryable: bool,
}

/// The retry decision after attempt number `attempt` (1-based). Pure.
pub(crate) fn decide(policy: &RetryPolicy, attempt: u64, result: Attempt, jitter: f64) -> Decision {
    if result.status.is_some_and(|s| (200..300).contains(&s)) {
        return Decision::Done;
    }
    if result.status.is_none() && !result.retryable {
        return Decision::GiveUp;
    }
    if policy.should_retry(result.status, attempt) {
        Decision::RetryAfter(policy.delay(attempt, result.retry_after, jitter))
    } else {
        Decision::GiveUp
    }
}

/// The call id of `function`'s call for a message: derived from the source coordinates when
/// there are some (the same message gives the same id, so the queue can drop a duplicate),
/// random otherwise.
pub fn call_id(source_id: Option<&str>, function: &str) -> String {
    match source_id {
        Some(id) => uuid::Uuid::new_v5(&CALL_ID_NAMESPACE, format!("{id}\n{function}").as_bytes())
            .to_string(),
        None => uuid::Uuid::new_v4().to_string(),
    }
}

/// The pipeline of one connector; cheap to clone.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    config: ConnectorConfig,
    source: SourceInfo,
    topics: TopicWatch,
    invoker: Arc<dyn Invoker>,
    replies: Option<Arc<dyn ReplySink>>,
    metrics: ConnectorMetrics,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pipeline")
            .field("config", &self.inner.config)
            .field("source", &self.inner.source)
            .finish_non_exhaustive()
    }
}

impl Pipeline {
    /// A pipeline for `source` over the given topic map, invoker and (optional) reply sink.
    pub fn new(
        config: ConnectorConfig,
        source: SourceInfo,
        topics: TopicWatch,
        invoker: Arc<dyn Invoker>,
        replies: Option<Arc<dyn ReplySink>>,
        metrics: ConnectorMetrics,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                config,
                source,
                topics,
                invoker,
                replies,
                metrics,
            }),
        }
    }

    /// The settings.
    pub fn config(&self) -> &ConnectorConfig {
        &self.inner.config
    }

    /// The metrics.
    pub fn metrics(&self) -> &ConnectorMetrics {
        &self.inner.metrics
    }

    /// Handles one message: every function subscribed to its topic, concurrently.
    pub async fn handle(&self, message: Message, stop: &Stop) -> Outcome {
        let inner = &self.inner;
        inner.metrics.message_received(&message.topic);
        let subscribers = inner.topics.current().subscribers(&message.topic);
        if subscribers.is_empty() {
            inner
                .metrics
                .unrouted
                .with_label_values(&[&message.topic])
                .inc();
            tracing::debug!(topic = %message.topic, source_id = ?message.source_id, "No function subscribes to this topic; message skipped.");
            return Outcome::Settle;
        }
        let headers = self.call_headers(&message);
        let outcomes = join_all(
            subscribers
                .iter()
                .map(|sub| self.invoke(sub, &message, headers.clone(), stop)),
        )
        .await;
        if outcomes.contains(&FunctionOutcome::Abandoned) {
            Outcome::Unsettled
        } else if outcomes.contains(&FunctionOutcome::Rejected) {
            Outcome::Reject
        } else {
            Outcome::Settle
        }
    }

    /// The headers every call for `message` carries.
    fn call_headers(&self, message: &Message) -> HeaderMap {
        let mut headers = message.headers.clone();
        if let Ok(topic) = HeaderValue::from_str(&message.topic) {
            headers.insert(X_TOPIC.clone(), topic);
        }
        headers.insert(
            X_CONNECTOR.clone(),
            HeaderValue::from_static(self.inner.source.connector),
        );
        if let Some(ct) = &self.inner.config.content_type
            && !headers.contains_key(header::CONTENT_TYPE)
        {
            headers.insert(header::CONTENT_TYPE, ct.clone());
        }
        headers
    }

    async fn invoke(
        &self,
        sub: &Subscriber,
        message: &Message,
        headers: HeaderMap,
        stop: &Stop,
    ) -> FunctionOutcome {
        let call = Call {
            function: sub.function.clone(),
            path: "/".to_owned(),
            headers,
            body: message.body.clone(),
            call_id: Some(call_id(message.source_id.as_deref(), &sub.function)),
            source: message.origin.clone(),
        };
        match self.inner.config.mode {
            InvocationMode::Sync => self.call_with_retries(sub, message, call, stop).await,
            InvocationMode::Async => self.enqueue_with_retries(sub, message, call, stop).await,
        }
    }

    async fn call_with_retries(
        &self,
        sub: &Subscriber,
        message: &Message,
        call: Call,
        stop: &Stop,
    ) -> FunctionOutcome {
        let inner = &self.inner;
        let timeout = inner.config.call_timeout;
        let call_id = call.call_id.clone().unwrap_or_default();
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let result = tokio::select! {
                () = stop.abandoned() => return FunctionOutcome::Abandoned,
                r = tokio::time::timeout(timeout + INVOKER_SLACK, inner.invoker.call(call.clone(), timeout)) => r,
            };
            let (seen, error, answer) = match result {
                Ok(Ok(answer)) => (attempt_of(&answer), None, Some(answer)),
                Ok(Err(e)) => (
                    Attempt {
                        status: None,
                        retry_after: None,
                        retryable: e.is_retryable(),
                    },
                    Some(e.to_string()),
                    None,
                ),
                Err(_) => (
                    Attempt {
                        status: None,
                        retry_after: None,
                        retryable: true,
                    },
                    Some(format!("no answer within {timeout:?}")),
                    None,
                ),
            };
            match decide(&sub.retry, attempt, seen, jitter()) {
                Decision::Done => {
                    inner
                        .metrics
                        .invocation(&sub.function, InvocationOutcome::Success);
                    tracing::debug!(function = %sub.function, call_id = %call_id, topic = %message.topic, attempt, status = seen.status, "Function invoked.");
                    let Some(answer) = answer else {
                        return FunctionOutcome::Succeeded;
                    };
                    return self.reply(sub, message, &call, &answer, stop).await;
                }
                Decision::RetryAfter(delay) => {
                    inner
                        .metrics
                        .invocation(&sub.function, InvocationOutcome::Failed);
                    tracing::info!(function = %sub.function, call_id = %call_id, topic = %message.topic, attempt, status = seen.status, error = error.as_deref().unwrap_or(""), delay_ms = delay.as_millis() as u64, "Call failed; retrying.");
                    tokio::select! {
                        () = stop.stopping() => return FunctionOutcome::Abandoned,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Decision::GiveUp => {
                    inner
                        .metrics
                        .invocation(&sub.function, InvocationOutcome::Failed);
                    let error = error.unwrap_or_else(|| {
                        format!("function answered {}", seen.status.unwrap_or_default())
                    });
                    return self
                        .give_up(sub, message, &call, attempt, seen.status, &error, stop)
                        .await;
                }
            }
        }
    }

    async fn enqueue_with_retries(
        &self,
        sub: &Subscriber,
        message: &Message,
        call: Call,
        stop: &Stop,
    ) -> FunctionOutcome {
        let inner = &self.inner;
        let timeout = inner.config.call_timeout;
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let result = tokio::select! {
                () = stop.abandoned() => return FunctionOutcome::Abandoned,
                r = tokio::time::timeout(timeout, inner.invoker.enqueue(call.clone())) => r,
            };
            let (retryable, error) = match result {
                Ok(Ok(enqueued)) => {
                    inner
                        .metrics
                        .invocation(&sub.function, InvocationOutcome::Queued);
                    tracing::debug!(function = %sub.function, call_id = %enqueued.call_id, duplicate = enqueued.duplicate, topic = %message.topic, "Call queued.");
                    return FunctionOutcome::Queued;
                }
                Ok(Err(e)) => (e.is_retryable(), e.to_string()),
                Err(_) => (true, format!("the queue did not answer within {timeout:?}")),
            };
            let seen = Attempt {
                status: None,
                retry_after: None,
                retryable,
            };
            match decide(&sub.retry, attempt, seen, jitter()) {
                Decision::RetryAfter(delay) => {
                    tracing::warn!(function = %sub.function, topic = %message.topic, attempt, error = %error, delay_ms = delay.as_millis() as u64, "Could not queue the call; retrying.");
                    tokio::select! {
                        () = stop.stopping() => return FunctionOutcome::Abandoned,
                        () = tokio::time::sleep(delay) => {}
                    }
                }
                Decision::Done | Decision::GiveUp => {
                    return self
                        .give_up(sub, message, &call, attempt, None, &error, stop)
                        .await;
                }
            }
        }
    }

    /// Publishes a successful answer to the function's reply topic, when it has one.
    async fn reply(
        &self,
        sub: &Subscriber,
        message: &Message,
        call: &Call,
        answer: &Answer,
        stop: &Stop,
    ) -> FunctionOutcome {
        let (Some(destination), Some(sink)) = (&sub.reply_topic, &self.inner.replies) else {
            return FunctionOutcome::Succeeded;
        };
        let reply = Reply {
            body: answer.body.clone(),
            headers: reply_headers(message, call, answer),
            key: message.key.clone(),
        };
        let mut attempt = 0u64;
        loop {
            attempt += 1;
            let result = tokio::select! {
                () = stop.abandoned() => return FunctionOutcome::Abandoned,
                r = sink.publish(destination, &reply) => r,
            };
            let error = match result {
                Ok(()) => {
                    self.inner
                        .metrics
                        .replies
                        .with_label_values(&["published"])
                        .inc();
                    tracing::debug!(function = %sub.function, destination = %destination, "Reply published.");
                    return FunctionOutcome::Succeeded;
                }
                Err(e) => e,
            };
            self.inner
                .metrics
                .replies
                .with_label_values(&["failed"])
                .inc();
            if attempt >= sub.retry.attempts {
                let error = format!("reply to {destination} not published: {error}");
                return self
                    .give_up(
                        sub,
                        message,
                        call,
                        attempt,
                        Some(answer.status),
                        &error,
                        stop,
                    )
                    .await;
            }
            let delay = sub.retry.delay(attempt, None, jitter());
            tracing::warn!(function = %sub.function, destination = %destination, attempt, error = %error, delay_ms = delay.as_millis() as u64, "Reply not published; retrying.");
            tokio::select! {
                () = stop.stopping() => return FunctionOutcome::Abandoned,
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The call exhausted its attempts: dead-letter it (Courier), or ask the source to.
    #[allow(clippy::too_many_arguments)]
    async fn give_up(
        &self,
        sub: &Subscriber,
        message: &Message,
        call: &Call,
        attempts: u64,
        last_status: Option<u16>,
        error: &str,
        stop: &Stop,
    ) -> FunctionOutcome {
        let inner = &self.inner;
        let call_id = call.call_id.as_deref().unwrap_or_default();
        if inner.source.dead_letters == DeadLetters::Source {
            inner
                .metrics
                .invocation(&sub.function, InvocationOutcome::DeadLetter);
            tracing::warn!(function = %sub.function, call_id = %call_id, topic = %message.topic, attempts, status = last_status, error = %error, "Call failed for good; the message is rejected to the broker's dead-letter exchange.");
            return FunctionOutcome::Rejected;
        }
        let mut backoff = Duration::from_millis(200);
        loop {
            let result = tokio::select! {
                () = stop.abandoned() => return FunctionOutcome::Abandoned,
                r = tokio::time::timeout(
                    inner.config.call_timeout,
                    inner.invoker.dead_letter(call, attempts, last_status, error),
                ) => r,
            };
            let failure = match result {
                Ok(Ok(())) => {
                    inner
                        .metrics
                        .invocation(&sub.function, InvocationOutcome::DeadLetter);
                    tracing::warn!(function = %sub.function, call_id = %call_id, topic = %message.topic, attempts, status = last_status, error = %error, "Call failed for good; stored in dead letters.");
                    return FunctionOutcome::DeadLettered;
                }
                Ok(Err(e)) => e.to_string(),
                Err(_) => "the dead-letter store did not answer".to_owned(),
            };
            tracing::error!(function = %sub.function, call_id = %call_id, error = %failure, "Could not store a dead letter; the message stays unsettled meanwhile.");
            tokio::select! {
                () = stop.stopping() => return FunctionOutcome::Abandoned,
                () = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(DEAD_LETTER_MAX_BACKOFF);
        }
    }
}

/// What the retry decision needs from an answer.
fn attempt_of(answer: &Answer) -> Attempt {
    let retry_after = answer
        .headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, time::OffsetDateTime::now_utc()));
    Attempt {
        status: Some(answer.status),
        retry_after,
        retryable: true,
    }
}

/// Headers of a reply: the call id, the function and its status, the source topic and the
/// answer's content type.
fn reply_headers(message: &Message, call: &Call, answer: &Answer) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(id) = call
        .call_id
        .as_deref()
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert(X_CALL_ID.clone(), id);
    }
    if let Ok(name) = HeaderValue::from_str(&call.function) {
        headers.insert(X_FUNCTION_NAME.clone(), name);
    }
    headers.insert(X_FUNCTION_STATUS.clone(), HeaderValue::from(answer.status));
    if let Ok(topic) = HeaderValue::from_str(&message.topic) {
        headers.insert(X_TOPIC.clone(), topic);
    }
    if let Some(ct) = answer.headers.get(header::CONTENT_TYPE) {
        headers.insert(header::CONTENT_TYPE, ct.clone());
    }
    headers
}

/// A number in [0, 1) for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{RecordingInvoker, fast_config, pipeline_for, pipeline_with};
    use std::sync::Mutex;
    use tokio_util::sync::CancellationToken;

    fn message(topic: &str, body: &str, source_id: Option<&str>) -> Message {
        let mut headers = HeaderMap::new();
        headers.insert("x-kafka-partition", HeaderValue::from_static("0"));
        Message {
            topic: topic.into(),
            body: Bytes::from(body.to_owned()),
            headers,
            key: Some(Bytes::from_static(b"k")),
            source_id: source_id.map(str::to_owned),
            origin: None,
        }
    }

    fn policy(attempts: u64) -> RetryPolicy {
        RetryPolicy {
            attempts,
            ..RetryPolicy::default()
        }
    }

    const OK: Attempt = Attempt {
        status: Some(200),
        retry_after: None,
        retryable: true,
    };

    #[test]
    fn a_2xx_answer_is_done_whatever_the_attempt() {
        assert_eq!(decide(&policy(1), 1, OK, 0.5), Decision::Done);
        let created = Attempt {
            status: Some(201),
            ..OK
        };
        assert_eq!(decide(&policy(3), 3, created, 0.5), Decision::Done);
    }

    #[test]
    fn retryable_statuses_and_unreachable_functions_retry_while_attempts_remain() {
        let p = RetryPolicy {
            attempts: 3,
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(1),
            ..RetryPolicy::default()
        };
        let busy = Attempt {
            status: Some(503),
            ..OK
        };
        assert_eq!(
            decide(&p, 1, busy, 0.0),
            Decision::RetryAfter(Duration::from_millis(50))
        );
        assert_eq!(decide(&p, 3, busy, 0.0), Decision::GiveUp);
        let unreachable = Attempt { status: None, ..OK };
        assert!(matches!(
            decide(&p, 2, unreachable, 0.0),
            Decision::RetryAfter(_)
        ));
    }

    #[test]
    fn client_errors_and_permanent_invoker_errors_give_up_at_once() {
        let bad_request = Attempt {
            status: Some(400),
            ..OK
        };
        assert_eq!(decide(&policy(5), 1, bad_request, 0.0), Decision::GiveUp);
        let gone = Attempt {
            status: None,
            retry_after: None,
            retryable: false,
        };
        assert_eq!(decide(&policy(5), 1, gone, 0.0), Decision::GiveUp);
    }

    #[test]
    fn retry_after_from_the_function_sets_the_wait() {
        let p = RetryPolicy {
            min_wait: Duration::from_millis(100),
            max_wait: Duration::from_secs(10),
            ..policy(3)
        };
        let limited = Attempt {
            status: Some(429),
            retry_after: Some(Duration::from_secs(2)),
            retryable: true,
        };
        assert_eq!(
            decide(&p, 1, limited, 0.9),
            Decision::RetryAfter(Duration::from_secs(2))
        );
    }

    #[test]
    fn call_ids_follow_the_source_coordinates_and_the_function() {
        let a = call_id(Some("kafka/t/0/5"), "f.ns");
        assert_eq!(a, call_id(Some("kafka/t/0/5"), "f.ns"));
        assert_ne!(a, call_id(Some("kafka/t/0/5"), "g.ns"));
        assert_ne!(a, call_id(Some("kafka/t/0/6"), "f.ns"));
        assert_ne!(call_id(None, "f.ns"), call_id(None, "f.ns"));
    }

    #[tokio::test]
    async fn every_subscribed_function_gets_the_message_with_topic_and_connector_headers() {
        let invoker = RecordingInvoker::new();
        invoker.set_delay(Duration::from_millis(30));
        let pipeline = pipeline_for(
            &invoker,
            &[("a", "orders"), ("b", "orders"), ("c", "other")],
        );
        let outcome = pipeline
            .handle(
                message("orders", "hello", Some("kafka/orders/0/1")),
                &Stop::never(),
            )
            .await;
        assert_eq!(outcome, Outcome::Settle);
        let calls = invoker.calls();
        let mut functions: Vec<_> = calls.iter().map(|c| c.function.as_str()).collect();
        functions.sort_unstable();
        assert_eq!(functions, ["a.openfaas-fn", "b.openfaas-fn"]);
        assert_eq!(invoker.max_concurrency(), 2, "fan-out is concurrent");
        for c in &calls {
            assert_eq!(c.body_text(), "hello");
            assert_eq!(c.header("x-topic"), "orders");
            assert_eq!(c.header("x-connector"), "courier-connector-test");
            assert_eq!(c.header("x-kafka-partition"), "0");
            assert_eq!(
                c.call_id.as_deref(),
                Some(call_id(Some("kafka/orders/0/1"), &c.function).as_str())
            );
        }
        assert_eq!(
            pipeline
                .metrics()
                .invocations
                .with_label_values(&["a.openfaas-fn", "success"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_message_nobody_subscribes_to_is_settled_without_a_call() {
        let invoker = RecordingInvoker::new();
        let pipeline = pipeline_for(&invoker, &[("a", "orders")]);
        let outcome = pipeline
            .handle(message("nobody", "x", None), &Stop::never())
            .await;
        assert_eq!(outcome, Outcome::Settle);
        assert!(invoker.calls().is_empty());
        assert_eq!(
            pipeline
                .metrics()
                .unrouted
                .with_label_values(&["nobody"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_failing_call_is_retried_until_it_succeeds() {
        let invoker = RecordingInvoker::new();
        invoker.script("a.openfaas-fn", |_, n| if n < 3 { 503 } else { 200 });
        let pipeline = pipeline_for(&invoker, &[("a", "t")]);
        let outcome = pipeline
            .handle(message("t", "x", None), &Stop::never())
            .await;
        assert_eq!(outcome, Outcome::Settle);
        assert_eq!(invoker.calls().len(), 3);
        assert!(invoker.dead_letters().is_empty());
        let m = &pipeline.metrics().invocations;
        assert_eq!(m.with_label_values(&["a.openfaas-fn", "failed"]).get(), 2);
        assert_eq!(m.with_label_values(&["a.openfaas-fn", "success"]).get(), 1);
    }

    #[tokio::test]
    async fn a_call_that_keeps_failing_is_dead_lettered_and_the_message_settled() {
        let invoker = RecordingInvoker::new();
        invoker.script("a.openfaas-fn", |_, _| 500);
        let pipeline = pipeline_for(&invoker, &[("a", "t"), ("b", "t")]);
        let outcome = pipeline
            .handle(message("t", "poison", Some("src/1")), &Stop::never())
            .await;
        assert_eq!(outcome, Outcome::Settle);
        assert_eq!(invoker.calls_of("a.openfaas-fn").len(), 3);
        assert_eq!(invoker.calls_of("b.openfaas-fn").len(), 1);
        let dead = invoker.dead_letters();
        assert_eq!(dead.len(), 1);
        assert_eq!(dead[0].function, "a.openfaas-fn");
        assert_eq!(dead[0].attempts, 3);
        assert_eq!(dead[0].last_status, Some(500));
        assert_eq!(dead[0].body, "poison");
        assert_eq!(
            pipeline
                .metrics()
                .invocations
                .with_label_values(&["a.openfaas-fn", "dead_letter"])
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_client_error_is_dead_lettered_without_retry() {
        let invoker = RecordingInvoker::new();
        invoker.script("a.openfaas-fn", |_, _| 400);
        let pipeline = pipeline_for(&invoker, &[("a", "t")]);
        pipeline
            .handle(message("t", "x", None), &Stop::never())
            .await;
        assert_eq!(invoker.calls().len(), 1);
        assert_eq!(invoker.dead_letters()[0].attempts, 1);
    }

    #[tokio::test]
    async fn retry_annotations_of_the_function_win_over_the_connector_policy() {
        let invoker = RecordingInvoker::new();
        invoker.script("a.openfaas-fn", |_, _| 503);
        let mut config = fast_config();
        config.retry.attempts = 2;
        let f =
            crate::testing::function("a", &[("topic", "t"), ("com.openfaas.retry.attempts", "4")]);
        let (map, _) = crate::topics::TopicMap::build(&[f], &config.retry);
        let pipeline = Pipeline::new(
            config,
            SourceInfo {
                connector: "c",
                dead_letters: DeadLetters::Courier,
            },
            TopicWatch::fixed(map),
            Arc::new(invoker.clone()),
            None,
            ConnectorMetrics::register(&prometheus::Registry::new(), "t").unwrap(),
        );
        pipeline
            .handle(message("t", "x", None), &Stop::never())
            .await;
        assert_eq!(invoker.calls().len(), 4);
    }

    #[tokio::test]
    async fn a_source_that_owns_dead_letters_is_asked_to_reject() {
        let invoker = RecordingInvoker::new();
        invoker.script("a.openfaas-fn", |_, _| 500);
        let pipeline = pipeline_with(
            &invoker,
            &[("a", "t")],
            fast_config(),
            DeadLetters::Source,
            None,
        );
        let outcome = pipeline
            .handle(message("t", "x", None), &Stop::never())
            .await;
        assert_eq!(outcome, Outcome::Reject);
        assert!(invoker.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_refused_dead_letter_is_stored_again_until_it_sticks() {
        let invoker = RecordingInvoker::new();
        invoker.script("a.openfaas-fn", |_, _| 500);
        invoker.fail_dead_letters(2);
        let pipeline = pipeline_for(&invoker, &[("a", "t")]);
        let outcome = pipeline
            .handle(message("t", "x", None), &Stop::never())
            .await;
        assert_eq!(outcome, Outcome::Settle);
        assert_eq!(invoker.dead_letters().len(), 1);
    }

    #[tokio::test]
    async fn shutdown_during_a_retry_wait_leaves_the_message_unsettled() {
        let invoker = RecordingInvoker::new();
        invoker.script("a.openfaas-fn", |_, _| 503);
        let mut config = fast_config();
        config.retry.min_wait = Duration::from_secs(30);
        config.retry.max_wait = Duration::from_secs(30);
        let pipeline = pipeline_with(&invoker, &[("a", "t")], config, DeadLetters::Courier, None);
        let shutdown = CancellationToken::new();
        let stop = Stop::with_drain(&shutdown, Duration::from_secs(30));
        let handling = tokio::spawn({
            let stop = stop.clone();
            async move { pipeline.handle(message("t", "x", None), &stop).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        shutdown.cancel();
        let outcome = tokio::time::timeout(Duration::from_secs(5), handling)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(outcome, Outcome::Unsettled);
        assert!(invoker.dead_letters().is_empty());
    }

    #[tokio::test]
    async fn a_call_in_flight_finishes_within_the_drain_and_is_abandoned_after_it() {
        let invoker = RecordingInvoker::new();
        invoker.set_delay(Duration::from_millis(100));
        let pipeline = pipeline_for(&invoker, &[("a", "t")]);
        let shutdown = CancellationToken::new();
        let stop = Stop::with_drain(&shutdown, Duration::from_secs(5));
        let handling = tokio::spawn({
            let (pipeline, stop) = (pipeline.clone(), stop.clone());
            async move { pipeline.handle(message("t", "x", None), &stop).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        shutdown.cancel();
        assert_eq!(handling.await.unwrap(), Outcome::Settle);

        invoker.set_delay(Duration::from_secs(60));
        let stop = Stop::with_drain(&CancellationToken::new(), Duration::from_millis(10));
        let handling = tokio::spawn({
            let stop = stop.clone();
            async move { pipeline.handle(message("t", "y", None), &stop).await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        stop.abandon_now();
        assert_eq!(handling.await.unwrap(), Outcome::Unsettled);
    }

    #[tokio::test]
    async fn async_mode_stores_one_queued_call_per_function_and_settles() {
        let invoker = RecordingInvoker::new();
        let mut config = fast_config();
        config.mode = InvocationMode::Async;
        let pipeline = pipeline_with(
            &invoker,
            &[("a", "t"), ("b", "t")],
            config,
            DeadLetters::Courier,
            None,
        );
        let outcome = pipeline
            .handle(message("t", "x", Some("kafka/t/0/9")), &Stop::never())
            .await;
        assert_eq!(outcome, Outcome::Settle);
        let calls = invoker.calls();
        assert_eq!(calls.len(), 2);
        assert!(
            calls.iter().all(|c| c.status.is_none()),
            "queued, not called"
        );
        assert_ne!(calls[0].call_id, calls[1].call_id);
        assert_eq!(
            pipeline
                .metrics()
                .invocations
                .with_label_values(&["a.openfaas-fn", "queued"])
                .get(),
            1
        );
    }

    #[derive(Default)]
    struct Replies {
        published: Mutex<Vec<(String, Reply)>>,
        failures: Mutex<u64>,
    }

    #[async_trait::async_trait]
    impl ReplySink for Replies {
        async fn publish(
            &self,
            destination: &str,
            reply: &Reply,
        ) -> Result<(), crate::reply::ReplyError> {
            let mut failures = self.failures.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(crate::reply::ReplyError("broker down".into()));
            }
            self.published
                .lock()
                .unwrap()
                .push((destination.to_owned(), reply.clone()));
            Ok(())
        }
    }

    fn reply_pipeline(invoker: &RecordingInvoker, replies: Arc<Replies>) -> Pipeline {
        let config = fast_config();
        let functions = [
            crate::testing::function(
                "a",
                &[("topic", "t"), ("com.courier.reply-topic", "results")],
            ),
            crate::testing::function("b", &[("topic", "t")]),
        ];
        let (map, _) = crate::topics::TopicMap::build(&functions, &config.retry);
        Pipeline::new(
            config,
            SourceInfo {
                connector: "c",
                dead_letters: DeadLetters::Courier,
            },
            TopicWatch::fixed(map),
            Arc::new(invoker.clone()),
            Some(replies),
            ConnectorMetrics::register(&prometheus::Registry::new(), "t").unwrap(),
        )
    }

    #[tokio::test]
    async fn a_successful_answer_is_published_to_the_reply_topic() {
        let invoker = RecordingInvoker::new();
        let replies = Arc::new(Replies::default());
        let pipeline = reply_pipeline(&invoker, replies.clone());
        let outcome = pipeline
            .handle(message("t", "in", Some("kafka/t/0/3")), &Stop::never())
            .await;
        assert_eq!(outcome, Outcome::Settle);
        let published = replies.published.lock().unwrap().clone();
        assert_eq!(published.len(), 1, "only the function with a reply topic");
        let (destination, reply) = &published[0];
        assert_eq!(destination, "results");
        assert_eq!(reply.body, "ok: in");
        assert_eq!(reply.key.as_deref(), Some(&b"k"[..]));
        assert_eq!(
            reply.headers["x-call-id"],
            call_id(Some("kafka/t/0/3"), "a.openfaas-fn").as_str()
        );
        assert_eq!(reply.headers["x-function-name"], "a.openfaas-fn");
        assert_eq!(reply.headers["x-function-status"], "200");
        assert_eq!(reply.headers["x-topic"], "t");
        assert_eq!(reply.headers["content-type"], "text/plain");
    }

    #[tokio::test]
    async fn a_reply_that_cannot_be_published_is_retried_then_dead_lettered() {
        let invoker = RecordingInvoker::new();
        let replies = Arc::new(Replies::default());
        *replies.failures.lock().unwrap() = 1;
        let pipeline = reply_pipeline(&invoker, replies.clone());
        pipeline
            .handle(message("t", "in", None), &Stop::never())
            .await;
        assert_eq!(replies.published.lock().unwrap().len(), 1);
        assert!(invoker.dead_letters().is_empty());

        *replies.failures.lock().unwrap() = 100;
        let outcome = pipeline
            .handle(message("t", "in2", None), &Stop::never())
            .await;
        assert_eq!(outcome, Outcome::Settle);
        let dead = invoker.dead_letters();
        assert_eq!(dead.len(), 1);
        assert!(
            dead[0].error.contains("reply to results"),
            "{}",
            dead[0].error
        );
    }
}
