//! AMQP delivery → core message, as OpenFaaS Pro's rabbitmq-connector does: the body, with
//! `X-Rabbitmq-Msg-Id` (the message id), `X-Rabbitmq-Routing-Key`, and the message's content
//! type as `Content-Type`; a `traceparent`/`tracestate` message header passes on as the same
//! HTTP header. Pure.

use bytes::Bytes;
use courier_connector::Message;
use courier_core::ledger::CallSource;
use courier_core::trace::{TRACEPARENT, TRACESTATE};
use http::{HeaderMap, HeaderName, HeaderValue, header};

/// The `X-Connector` value of this connector.
pub const CONNECTOR: &str = "courier-connector-amqp";

/// `X-Rabbitmq-Msg-Id`.
pub static X_RABBITMQ_MSG_ID: HeaderName = HeaderName::from_static("x-rabbitmq-msg-id");
/// `X-Rabbitmq-Routing-Key`.
pub static X_RABBITMQ_ROUTING_KEY: HeaderName = HeaderName::from_static("x-rabbitmq-routing-key");
/// `X-Rabbitmq-Redelivered: true` on a message the broker delivered before.
pub static X_RABBITMQ_REDELIVERED: HeaderName = HeaderName::from_static("x-rabbitmq-redelivered");

/// What a delivery carries that the pipeline needs.
#[derive(Debug, Clone, Copy)]
pub struct DeliveryParts<'a> {
    /// The queue it was consumed from (the topic functions subscribe to).
    pub queue: &'a str,
    /// Its routing key.
    pub routing_key: &'a str,
    /// Its `message_id` property.
    pub message_id: Option<&'a str>,
    /// Its `content_type` property.
    pub content_type: Option<&'a str>,
    /// Whether the broker delivered it before.
    pub redelivered: bool,
    /// Its `traceparent` header (W3C trace context), passed on to the function.
    pub traceparent: Option<&'a str>,
    /// Its `tracestate` header.
    pub tracestate: Option<&'a str>,
}

/// The core message for a delivery. A message id makes the call ids stable across
/// redeliveries (`amqp/<queue>/<message id>`); without one they are random.
pub fn message(parts: DeliveryParts<'_>, body: Bytes) -> Message {
    let mut headers = HeaderMap::new();
    if let Some(v) = parts
        .message_id
        .and_then(|id| HeaderValue::from_str(id).ok())
    {
        headers.insert(X_RABBITMQ_MSG_ID.clone(), v);
    }
    if let Ok(v) = HeaderValue::from_str(parts.routing_key) {
        headers.insert(X_RABBITMQ_ROUTING_KEY.clone(), v);
    }
    if parts.redelivered {
        headers.insert(
            X_RABBITMQ_REDELIVERED.clone(),
            HeaderValue::from_static("true"),
        );
    }
    if let Some(v) = parts
        .content_type
        .and_then(|ct| HeaderValue::from_str(ct).ok())
    {
        headers.insert(header::CONTENT_TYPE, v);
    }
    // Checked where the call is queued or made (a malformed one is replaced there).
    for (name, value) in [
        (TRACEPARENT, parts.traceparent),
        (TRACESTATE, parts.tracestate),
    ] {
        if let Some(v) = value.and_then(|v| HeaderValue::from_str(v).ok()) {
            headers.insert(name, v);
        }
    }
    Message {
        topic: parts.queue.to_owned(),
        body,
        headers,
        key: None,
        source_id: parts
            .message_id
            .filter(|id| !id.is_empty())
            .map(|id| format!("amqp/{}/{id}", parts.queue)),
        origin: Some(CallSource::Amqp {
            queue: parts.queue.to_owned(),
            message_id: parts.message_id.map(str::to_owned),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_delivery_becomes_a_message_with_rabbitmq_headers() {
        let m = message(
            DeliveryParts {
                queue: "orders",
                routing_key: "orders.eu",
                message_id: Some("m-1"),
                content_type: Some("application/json"),
                redelivered: true,
                traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
                tracestate: Some("rojo=1"),
            },
            Bytes::from_static(b"{}"),
        );
        assert_eq!(m.topic, "orders");
        assert_eq!(m.body, "{}");
        assert_eq!(m.headers["x-rabbitmq-msg-id"], "m-1");
        assert_eq!(m.headers["x-rabbitmq-routing-key"], "orders.eu");
        assert_eq!(m.headers["x-rabbitmq-redelivered"], "true");
        assert_eq!(m.headers["content-type"], "application/json");
        assert_eq!(m.source_id.as_deref(), Some("amqp/orders/m-1"));
        assert_eq!(
            m.headers["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
        );
        assert_eq!(m.headers["tracestate"], "rojo=1");
        assert_eq!(
            m.origin,
            Some(CallSource::Amqp {
                queue: "orders".into(),
                message_id: Some("m-1".into())
            })
        );
    }

    #[test]
    fn without_a_message_id_there_is_no_stable_identity() {
        let m = message(
            DeliveryParts {
                queue: "q",
                routing_key: "",
                message_id: None,
                content_type: None,
                redelivered: false,
                traceparent: None,
                tracestate: None,
            },
            Bytes::new(),
        );
        assert!(!m.headers.contains_key("x-rabbitmq-msg-id"));
        assert!(!m.headers.contains_key("x-rabbitmq-redelivered"));
        assert!(!m.headers.contains_key("content-type"));
        assert!(!m.headers.contains_key("traceparent"));
        assert_eq!(m.source_id, None);
    }
}
