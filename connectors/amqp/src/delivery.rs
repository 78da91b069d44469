//! AMQP delivery → core message, as OpenFaaS Pro's rabbitmq-connector does: the body, with
//! `X-Rabbitmq-Msg-Id` (the message id), `X-Rabbitmq-Routing-Key`, and the message's content
//! type as `Content-Type`. Pure.

use bytes::Bytes;
use courier_connector::Message;
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
    Message {
        topic: parts.queue.to_owned(),
        body,
        headers,
        key: None,
        source_id: parts
            .message_id
            .filter(|id| !id.is_empty())
            .map(|id| format!("amqp/{}/{id}", parts.queue)),
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
            },
            Bytes::new(),
        );
        assert!(!m.headers.contains_key("x-rabbitmq-msg-id"));
        assert!(!m.headers.contains_key("x-rabbitmq-redelivered"));
        assert!(!m.headers.contains_key("content-type"));
        assert_eq!(m.source_id, None);
    }
}
