//! One connection to the broker: declare the topology, consume every queue, settle deliveries
//! after their outcome, read queue depths. A session ends on shutdown (graceful: consumers
//! cancelled, work in flight finished until the drain deadline, connection closed) or when the
//! connection or a channel is lost (work in flight abandoned at once: its deliveries belong to
//! a dead channel and the broker delivers them again). The caller then connects again with a
//! new connection and new channels, so a delivery tag of an old channel is never acked on a
//! new one (lapin's auto-recovery is not used; ackers of a closed channel refuse to act).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier_connector::{Outcome, Pipeline, Stop};
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ConnectionProperties, Consumer, ErrorKind, ExchangeKind};
use tokio::task::JoinSet;

use crate::args::{AmqpArgs, ExchangeType};
use crate::delivery::{self, DeliveryParts};
use crate::metrics::AmqpMetrics;
use crate::reply::AmqpReplies;

/// Longest the connection handshake may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest one broker operation (declare, bind, qos, consume, ack, close) may take.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a session ended other than by shutdown.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// Connecting (or the handshake) failed.
    #[error("connecting: {0}")]
    Connect(String),
    /// Declaring or binding the topology failed.
    #[error("setting up {what}: {error}")]
    Setup {
        /// What was being set up.
        what: String,
        /// Why it failed.
        error: String,
    },
    /// A consumer ended: the channel or the connection was lost.
    #[error("consuming {queue}: {error}")]
    Lost {
        /// The queue.
        queue: String,
        /// Why.
        error: String,
    },
}

/// What a session needs.
pub(crate) struct Session<'a> {
    pub(crate) args: &'a AmqpArgs,
    pub(crate) url: &'a str,
    pub(crate) queues: &'a [String],
    pub(crate) pipeline: &'a Pipeline,
    pub(crate) replies: &'a Arc<AmqpReplies>,
    pub(crate) metrics: &'a AmqpMetrics,
    pub(crate) stop: &'a Stop,
}

impl Session<'_> {
    /// Runs one connection until shutdown (`Ok`) or until it is lost (`Err`). `connected` is
    /// called once the topology is in place and consumers are about to start.
    pub(crate) async fn run(&self, connected: impl FnOnce()) -> Result<(), SessionError> {
        let properties =
            ConnectionProperties::default().with_connection_name(delivery::CONNECTOR.into());
        let connection =
            match tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(self.url, properties))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => return Err(SessionError::Connect(e.to_string())),
                Err(_) => {
                    return Err(SessionError::Connect(format!(
                        "no handshake within {CONNECT_TIMEOUT:?}"
                    )));
                }
            };
        let result = self.consume(&connection, connected).await;
        self.replies.set_channel(None);
        let _ = tokio::time::timeout(
            OPERATION_TIMEOUT,
            connection.close(200, "courier connector stopping".into()),
        )
        .await;
        result
    }

    async fn consume(
        &self,
        connection: &Connection,
        connected: impl FnOnce(),
    ) -> Result<(), SessionError> {
        self.declare_topology(connection).await?;
        let replies = open_channel(connection, "the reply channel").await?;
        op(
            "the reply channel",
            replies.confirm_select(ConfirmSelectOptions::default()),
        )
        .await?;
        self.replies.set_channel(Some(replies));

        let session_stop = self.stop.child();
        let mut tasks: JoinSet<Result<(), SessionError>> = JoinSet::new();
        for queue in self.queues {
            let what = format!("consumer of {queue}");
            let channel = open_channel(connection, &what).await?;
            op(
                &what,
                channel.basic_qos(self.args.amqp_prefetch, BasicQosOptions::default()),
            )
            .await?;
            let consumer = op(
                &what,
                channel.basic_consume(
                    queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                ),
            )
            .await?;
            tasks.spawn(consume_queue(
                queue.clone(),
                channel,
                consumer,
                self.pipeline.clone(),
                session_stop.clone(),
            ));
        }
        let depth_channel = open_channel(connection, "the depth channel").await?;
        tasks.spawn(watch_depths(
            depth_channel,
            self.queues.to_vec(),
            self.args.amqp_depth_interval,
            self.metrics.clone(),
            session_stop.clone(),
        ));
        connected();
        tracing::info!(queues = %self.queues.join(","), prefetch = self.args.amqp_prefetch, "AMQP connector consuming.");

        let mut outcome = Ok(());
        while let Some(ended) = tasks.join_next().await {
            let ended = ended.unwrap_or_else(|e| {
                Err(SessionError::Lost {
                    queue: "?".into(),
                    error: format!("consumer task failed: {e}"),
                })
            });
            if let Err(e) = ended
                && outcome.is_ok()
            {
                // One consumer lost its channel: give up on this connection altogether.
                session_stop.abandon_now();
                outcome = Err(e);
            }
        }
        outcome
    }

    async fn declare_topology(&self, connection: &Connection) -> Result<(), SessionError> {
        if let Some(exchange) = &self.args.amqp_exchange {
            ensure_exchange(connection, exchange, self.args.amqp_exchange_type).await?;
        }
        for queue in self.queues {
            ensure_queue(connection, queue).await?;
            if let Some(exchange) = &self.args.amqp_exchange {
                let channel = open_channel(connection, "bindings").await?;
                for key in self.args.routing_keys(queue) {
                    op(
                        &format!("binding {queue} to {exchange} with {key}"),
                        channel.queue_bind(
                            queue.as_str().into(),
                            exchange.as_str().into(),
                            key.as_str().into(),
                            QueueBindOptions::default(),
                            FieldTable::default(),
                        ),
                    )
                    .await?;
                }
                close(&channel).await;
            }
        }
        Ok(())
    }
}

/// Declares `queue` durable unless it exists. A passive declare first: declaring an existing
/// queue with other arguments (e.g. its `x-dead-letter-exchange`) would fail.
async fn ensure_queue(connection: &Connection, queue: &str) -> Result<(), SessionError> {
    let what = format!("queue {queue}");
    let channel = open_channel(connection, &what).await?;
    let passive = channel.queue_declare(
        queue.into(),
        QueueDeclareOptions::default().passive(),
        FieldTable::default(),
    );
    if exists(&what, passive).await? {
        close(&channel).await;
        return Ok(());
    }
    // The failed passive declare closed that channel.
    let channel = open_channel(connection, &what).await?;
    op(
        &what,
        channel.queue_declare(
            queue.into(),
            QueueDeclareOptions::durable(),
            FieldTable::default(),
        ),
    )
    .await?;
    tracing::info!(queue, "AMQP queue declared (durable).");
    close(&channel).await;
    Ok(())
}

/// Declares `exchange` durable with `kind` unless it exists.
async fn ensure_exchange(
    connection: &Connection,
    exchange: &str,
    kind: ExchangeType,
) -> Result<(), SessionError> {
    let what = format!("exchange {exchange}");
    let kind = match kind {
        ExchangeType::Direct => ExchangeKind::Direct,
        ExchangeType::Topic => ExchangeKind::Topic,
        ExchangeType::Fanout => ExchangeKind::Fanout,
    };
    let channel = open_channel(connection, &what).await?;
    let passive = channel.exchange_declare(
        exchange.into(),
        kind.clone(),
        ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    );
    if exists(&what, passive).await? {
        close(&channel).await;
        return Ok(());
    }
    let channel = open_channel(connection, &what).await?;
    op(
        &what,
        channel.exchange_declare(
            exchange.into(),
            kind,
            ExchangeDeclareOptions {
                durable: true,
                ..ExchangeDeclareOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    tracing::info!(exchange, "AMQP exchange declared (durable).");
    close(&channel).await;
    Ok(())
}

/// Runs a passive declare: whether the object exists (a 404 says it does not, and closes
/// the channel it ran on).
async fn exists<T>(
    what: &str,
    passive: impl Future<Output = lapin::Result<T>>,
) -> Result<bool, SessionError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, passive).await {
        Ok(Ok(_)) => Ok(true),
        Ok(Err(e)) if is_not_found(&e) => Ok(false),
        Ok(Err(e)) => Err(setup(what, e)),
        Err(_) => Err(setup(what, "timed out")),
    }
}

/// Closes a channel used for set-up (a close that fails or hangs changes nothing).
async fn close(channel: &Channel) {
    let _ = tokio::time::timeout(OPERATION_TIMEOUT, channel.close(200, "ok".into())).await;
}

fn is_not_found(e: &lapin::Error) -> bool {
    matches!(e.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404)
}

fn setup(what: &str, error: impl std::fmt::Display) -> SessionError {
    SessionError::Setup {
        what: what.to_owned(),
        error: error.to_string(),
    }
}

async fn open_channel(connection: &Connection, what: &str) -> Result<Channel, SessionError> {
    op(what, connection.create_channel()).await
}

/// A broker operation with the operation timeout.
async fn op<T>(
    what: &str,
    operation: impl Future<Output = lapin::Result<T>>,
) -> Result<T, SessionError> {
    match tokio::time::timeout(OPERATION_TIMEOUT, operation).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(setup(what, e)),
        Err(_) => Err(setup(
            what,
            format!("timed out after {OPERATION_TIMEOUT:?}"),
        )),
    }
}

/// Consumes one queue until `stop` (then cancels the consumer and finishes what it started)
/// or until the channel is lost.
async fn consume_queue(
    queue: String,
    channel: Channel,
    mut consumer: Consumer,
    pipeline: Pipeline,
    stop: Stop,
) -> Result<(), SessionError> {
    let mut in_flight = JoinSet::new();
    let ended = loop {
        tokio::select! {
            () = stop.stopping() => break Ok(()),
            next = consumer.next() => match next {
                Some(Ok(d)) => {
                    in_flight.spawn(handle_delivery(d, queue.clone(), pipeline.clone(), stop.clone()));
                }
                Some(Err(e)) => break Err(e.to_string()),
                None => break Err("the broker cancelled the consumer".to_owned()),
            },
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
        }
    };
    if ended.is_ok() {
        // No new deliveries; the ones buffered but not started go back when the channel closes.
        let _ = tokio::time::timeout(
            OPERATION_TIMEOUT,
            channel.basic_cancel(consumer.tag(), BasicCancelOptions::default()),
        )
        .await;
    } else {
        stop.abandon_now();
    }
    while in_flight.join_next().await.is_some() {}
    ended.map_err(|error| SessionError::Lost { queue, error })
}

/// Runs one delivery through the pipeline and settles it on its own channel.
async fn handle_delivery(delivery: Delivery, queue: String, pipeline: Pipeline, stop: Stop) {
    let Delivery {
        delivery_tag,
        routing_key,
        redelivered,
        properties,
        data,
        acker,
        ..
    } = delivery;
    let text_header = |name: &str| {
        properties
            .headers()
            .as_ref()
            .and_then(|table| table.inner().get(name))
            .and_then(|value| match value {
                AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
                AMQPValue::ShortString(s) => Some(s.as_str()),
                _ => None,
            })
    };
    let message = delivery::message(
        DeliveryParts {
            queue: &queue,
            routing_key: routing_key.as_str(),
            message_id: properties.message_id().as_ref().map(|id| id.as_str()),
            content_type: properties.content_type().as_ref().map(|ct| ct.as_str()),
            redelivered,
            traceparent: text_header("traceparent"),
            tracestate: text_header("tracestate"),
        },
        Bytes::from(data),
    );
    let outcome = pipeline.handle(message, &stop).await;
    let settled = match outcome {
        Outcome::Settle => {
            tokio::time::timeout(OPERATION_TIMEOUT, acker.ack(BasicAckOptions::default())).await
        }
        Outcome::Reject => {
            tokio::time::timeout(
                OPERATION_TIMEOUT,
                acker.nack(BasicNackOptions {
                    requeue: false,
                    multiple: false,
                }),
            )
            .await
        }
        Outcome::Unsettled => {
            tracing::debug!(queue = %queue, delivery_tag, "Delivery left unsettled; the broker delivers it again.");
            return;
        }
    };
    match settled {
        Ok(Ok(true)) => {}
        Ok(Ok(false)) => {
            tracing::info!(queue = %queue, delivery_tag, "Channel closed before the ack; the broker delivers the message again.");
        }
        Ok(Err(e)) => {
            tracing::warn!(queue = %queue, delivery_tag, error = %e, "Ack failed; the broker delivers the message again.");
        }
        Err(_) => tracing::warn!(queue = %queue, delivery_tag, "Ack timed out."),
    }
}

/// Reads the depth of every queue (passive declare) every `interval`.
async fn watch_depths(
    channel: Channel,
    queues: Vec<String>,
    interval: Duration,
    metrics: AmqpMetrics,
    stop: Stop,
) -> Result<(), SessionError> {
    let mut tick = tokio::time::interval(interval.max(Duration::from_millis(100)));
    loop {
        tokio::select! {
            () = stop.stopping() => return Ok(()),
            _ = tick.tick() => {}
        }
        for queue in &queues {
            let declared = tokio::time::timeout(
                OPERATION_TIMEOUT,
                channel.queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions::default().passive(),
                    FieldTable::default(),
                ),
            )
            .await;
            match declared {
                Ok(Ok(q)) => metrics
                    .queue_depth
                    .with_label_values(&[queue])
                    .set(i64::from(q.message_count())),
                Ok(Err(e)) => {
                    // The consumers notice a lost connection themselves; a depth is not
                    // worth ending the session for.
                    tracing::debug!(queue = %queue, error = %e, "Queue depth not read.");
                    return Ok(());
                }
                Err(_) => tracing::debug!(queue = %queue, "Queue depth timed out."),
            }
        }
    }
}
