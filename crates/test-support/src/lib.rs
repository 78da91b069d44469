//! What Courier's tests share (never a dependency of the product): a real nats-server per
//! test ([`nats`]) or a three-node JetStream cluster of them ([`nats_cluster`]), used by
//! `courier-queue`'s JetStream tests and by the end-to-end suite; a real Kafka-compatible broker
//! (tansu) per test ([`kafka`]) and the shared RabbitMQ with a cuttable proxy in front of it
//! ([`amqp`]), used by the connectors' tests; and reading a metric off a registry
//! ([`metrics::sample`]).

pub mod amqp;
pub mod kafka;
pub mod metrics;
pub mod nats;
pub mod nats_cluster;
mod server;
