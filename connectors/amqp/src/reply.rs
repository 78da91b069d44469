//! Replies published to AMQP queues (`com.courier.reply-topic` names a queue): through the
//! default exchange, persistent, mandatory (an unroutable reply is an error, not a silent
//! drop), confirmed by the broker.

use std::sync::RwLock;
use std::time::Duration;

use async_trait::async_trait;
use courier_connector::{Reply, ReplyError, ReplySink};
use lapin::options::BasicPublishOptions;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Channel, Confirmation};

/// Longest one publish (and its confirmation) may take.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Publishes replies on the current connection's confirm channel.
#[derive(Default)]
pub struct AmqpReplies {
    channel: RwLock<Option<Channel>>,
}

impl std::fmt::Debug for AmqpReplies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AmqpReplies").finish_non_exhaustive()
    }
}

impl AmqpReplies {
    /// Uses `channel` (in confirm mode) from now on; `None` while disconnected.
    pub(crate) fn set_channel(&self, channel: Option<Channel>) {
        *self.channel.write().unwrap_or_else(|p| p.into_inner()) = channel;
    }

    fn channel(&self) -> Option<Channel> {
        self.channel
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

#[async_trait]
impl ReplySink for AmqpReplies {
    async fn publish(&self, destination: &str, reply: &Reply) -> Result<(), ReplyError> {
        let channel = self
            .channel()
            .ok_or_else(|| ReplyError("not connected to the AMQP broker".into()))?;
        let mut table = FieldTable::default();
        for (name, value) in &reply.headers {
            table.insert(
                name.as_str().into(),
                AMQPValue::LongString(LongString::from(value.as_bytes().to_vec())),
            );
        }
        let mut properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(table);
        if let Some(id) = reply.headers.get("x-call-id").and_then(|v| v.to_str().ok()) {
            properties = properties.with_message_id(id.into());
        }
        if let Some(ct) = reply
            .headers
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
        {
            properties = properties.with_content_type(ct.into());
        }
        let publish = async {
            channel
                .basic_publish(
                    "".into(),
                    destination.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        ..BasicPublishOptions::default()
                    },
                    &reply.body,
                    properties,
                )
                .await?
                .await
        };
        match tokio::time::timeout(PUBLISH_TIMEOUT, publish).await {
            Ok(Ok(Confirmation::Ack(None) | Confirmation::NotRequested)) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(_)))) => Err(ReplyError(format!(
                "no queue named {destination} (the reply was returned)"
            ))),
            Ok(Ok(Confirmation::Nack(_))) => {
                Err(ReplyError("the broker refused the reply (nack)".into()))
            }
            Ok(Err(e)) => Err(ReplyError(format!("publishing the reply: {e}"))),
            Err(_) => Err(ReplyError(format!(
                "no confirmation within {PUBLISH_TIMEOUT:?}"
            ))),
        }
    }
}
