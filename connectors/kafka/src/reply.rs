//! Replies published to Kafka topics (`com.courier.reply-topic`), keyed like the source
//! message, with the reply headers as Kafka headers.

use std::time::Duration;

use async_trait::async_trait;
use courier_connector::{Reply, ReplyError, ReplySink};
use rdkafka::ClientConfig;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

use crate::Error;

/// Longest a reply may wait in the producer queue; delivery itself is bounded by the
/// producer's `message.timeout.ms`.
const QUEUE_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest one publish may take in all.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(40);

/// Publishes replies with an idempotent, acks=all producer.
pub struct KafkaReplies {
    producer: FutureProducer,
}

impl std::fmt::Debug for KafkaReplies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaReplies").finish_non_exhaustive()
    }
}

impl KafkaReplies {
    /// A producer with `settings`.
    pub fn new(settings: &[(&'static str, String)]) -> Result<Self, Error> {
        let mut config = ClientConfig::new();
        for (k, v) in settings {
            config.set(*k, v);
        }
        Ok(Self {
            producer: config.create()?,
        })
    }
}

#[async_trait]
impl ReplySink for KafkaReplies {
    async fn publish(&self, destination: &str, reply: &Reply) -> Result<(), ReplyError> {
        let mut headers = OwnedHeaders::new_with_capacity(reply.headers.len());
        for (name, value) in &reply.headers {
            headers = headers.insert(Header {
                key: name.as_str(),
                value: Some(value.as_bytes()),
            });
        }
        let mut record = FutureRecord::to(destination)
            .payload(reply.body.as_ref())
            .headers(headers);
        if let Some(key) = &reply.key {
            record = record.key(key.as_ref());
        }
        match tokio::time::timeout(PUBLISH_TIMEOUT, self.producer.send(record, QUEUE_TIMEOUT)).await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err((e, _))) => Err(ReplyError(format!("Kafka refused the reply: {e}"))),
            Err(_) => Err(ReplyError(format!(
                "no delivery report within {PUBLISH_TIMEOUT:?}"
            ))),
        }
    }
}
