//! The Kafka connector: consumes the configured topics with a consumer group and runs every
//! message through the connector core's pipeline to the functions whose `topic` annotation
//! lists the topic. The only crate that builds librdkafka.
//!
//! What it owns: Kafka options ([`KafkaArgs`]), translating a Kafka message into a core
//! message (body = value; `X-Kafka-Key`, `X-Kafka-Partition`, `X-Kafka-Offset`,
//! `X-Kafka-<Header>`; see [`headers`]), ordering (per partition, or per key), and offsets.
//! Offsets are stored only once every function of a message reached its outcome and only up
//! to the highest contiguous finished offset ([`offsets::OffsetTracker`]); librdkafka commits
//! stored offsets in the background (`enable.auto.commit` with `enable.auto.offset.store=false`)
//! and once more on shutdown. A crash therefore replays unfinished messages instead of losing
//! them (at-least-once; call ids derived from topic/partition/offset let the queue drop
//! duplicates in async mode). Replies go to Kafka topics ([`KafkaReplies`]).
//!
//! What it never knows: how functions are reached (the [`courier_invoke::Invoker`]), the queue
//! backend, the provider, or retry and dead-letter rules (the core's pipeline).

mod args;
mod consumer;
pub mod headers;
mod metrics;
pub mod offsets;
mod partition;
mod reply;

use std::sync::Arc;

use courier_connector::{
    ConnectorConfig, ConnectorMetrics, DeadLetters, Pipeline, ReplySink, SourceInfo, Stop,
    TopicWatch,
};
use courier_invoke::{FunctionList, Invoker};
use prometheus::Registry;
use rdkafka::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{Consumer, StreamConsumer};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use args::{InitialOffset, KafkaArgs, Ordering, SaslMechanism, SecurityProtocol};
pub use metrics::KafkaMetrics;
pub use reply::KafkaReplies;

use consumer::{KafkaContext, Loop};

/// Why the Kafka connector could not run.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The options are incomplete or contradictory.
    #[error("invalid Kafka connector options: {0}")]
    Config(String),
    /// librdkafka refused the configuration or the subscription.
    #[error("Kafka client: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    /// The metrics could not be registered (registered twice?).
    #[error("registering the Kafka connector's metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// Runs the Kafka connector until `shutdown`: consumes `args.kafka_topics`, invokes the
/// subscribed functions through `invoker` as `config` says, and commits offsets after the
/// outcome. Returns once messages in flight finished (or the drain timeout passed) and the
/// final commit was made.
pub async fn run(
    args: KafkaArgs,
    config: ConnectorConfig,
    catalog: watch::Receiver<FunctionList>,
    invoker: Arc<dyn Invoker>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let consumer_settings = args.consumer_settings()?;
    let producer_settings = args.producer_settings()?;
    let topics = args.topics();
    let core_metrics = ConnectorMetrics::register(registry, "kafka")?;
    let kafka_metrics = KafkaMetrics::register(registry)?;

    let mut client = ClientConfig::new();
    for (k, v) in &consumer_settings {
        client.set(*k, v);
    }
    client.set_log_level(if args.kafka_debug.is_some() {
        RDKafkaLogLevel::Debug
    } else {
        RDKafkaLogLevel::Warning
    });
    let consumer: StreamConsumer<KafkaContext> =
        client.create_with_context(KafkaContext::new(kafka_metrics))?;
    let topic_refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    consumer.subscribe(&topic_refs)?;
    let replies: Arc<dyn ReplySink> = Arc::new(KafkaReplies::new(&producer_settings)?);

    let topic_map = TopicWatch::start(
        catalog,
        config.retry.clone(),
        config.catalog_grace,
        shutdown.clone(),
    )
    .await;
    let stop = Stop::with_drain(&shutdown, config.drain_timeout);
    let pipeline = Pipeline::new(
        config,
        SourceInfo {
            connector: headers::CONNECTOR,
            dead_letters: DeadLetters::Courier,
        },
        topic_map,
        invoker,
        Some(replies),
        core_metrics,
    );
    tracing::info!(
        brokers = %args.kafka_brokers.join(","),
        topics = %topics.join(","),
        group = %args.kafka_group,
        ordering = ?args.kafka_ordering,
        mode = ?pipeline.config().mode,
        "Kafka connector consuming."
    );
    Loop {
        consumer: Arc::new(consumer),
        pipeline,
        ordering: args.kafka_ordering,
        max_in_flight: usize::from(args.kafka_max_in_flight),
        buffer: args.kafka_partition_buffer as usize,
        stop,
        shutdown,
    }
    .run()
    .await;
    Ok(())
}
