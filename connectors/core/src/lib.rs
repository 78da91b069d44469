//! The connector core: everything event connectors share, whatever the broker.
//!
//! * [`topics`]: the topic map — which functions subscribe to which topic (the `topic`
//!   annotation, comma-separated), with each subscriber's retry policy and reply topic — kept
//!   current from the function catalog's watch channel.
//! * [`pipeline`]: the per-message pipeline. [`Pipeline::handle`] fans a message out to every
//!   subscribed function concurrently, synchronously through the gateway with retries
//!   ([`courier_core::retry::RetryPolicy`]), or by storing queued calls; calls that keep
//!   failing go to dead letters; successful answers are published to reply topics. It returns
//!   an [`Outcome`] saying how the source must settle the message (the settle contract).
//! * [`config`]: the options common to every connector ([`ConnectorArgs`]).
//! * [`metrics`], [`stop`], [`reply`], [`secret`]: metrics, cancellation, the reply seam and
//!   values kept out of logs.
//!
//! **Invariants.** The core never knows Kafka or AMQP: sources translate broker messages into
//! [`Message`]s and [`Outcome`]s into commits and acks, and publish replies through
//! [`ReplySink`]. It never knows the queue backend or the provider: functions are reached only
//! through [`courier_invoke::Invoker`], and known only through the catalog's function list.

pub mod config;
pub mod metrics;
pub mod pipeline;
pub mod reply;
pub mod secret;
pub mod stop;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod topics;

pub use config::{ConnectorArgs, ConnectorConfig, InvocationMode};
pub use metrics::{ConnectorMetrics, InvocationOutcome};
pub use pipeline::{DeadLetters, Message, Outcome, Pipeline, SourceInfo, call_id};
pub use reply::{Reply, ReplyError, ReplySink};
pub use secret::{Secret, SecretUrl};
pub use stop::Stop;
pub use topics::{ANNOTATION_REPLY_TOPIC, ANNOTATION_TOPIC, Subscriber, TopicMap, TopicWatch};
