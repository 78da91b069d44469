//! Where successful responses go when a function has a reply topic
//! (`com.courier.reply-topic`): each source publishes them on its own broker (a Kafka topic, an
//! AMQP queue), so the core never knows which one.

use async_trait::async_trait;
use bytes::Bytes;
use http::HeaderMap;

/// Why a reply was not published.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct ReplyError(pub String);

/// One reply: a function's successful response.
#[derive(Debug, Clone)]
pub struct Reply {
    /// The response body.
    pub body: Bytes,
    /// `X-Call-Id`, `X-Function-Name`, `X-Function-Status`, `X-Topic` (the source topic) and
    /// the response's `Content-Type`.
    pub headers: HeaderMap,
    /// The source message's key (Kafka), so a keyed stream stays keyed down the pipeline.
    pub key: Option<Bytes>,
}

/// Publishes replies; implemented by each source.
#[async_trait]
pub trait ReplySink: Send + Sync + 'static {
    /// Publishes `reply` to `destination` (a topic or queue name), returning once the broker
    /// confirmed it (or failed, or a timeout passed).
    async fn publish(&self, destination: &str, reply: &Reply) -> Result<(), ReplyError>;
}
