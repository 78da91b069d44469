//! What Courier's tests share (never a dependency of the product): a real nats-server per
//! test ([`nats`]), used by `courier-queue`'s JetStream tests and by the end-to-end suite; a
//! real Kafka-compatible broker (tansu) per test ([`kafka`]) and the shared RabbitMQ with a
//! cuttable proxy in front of it ([`amqp`]), used by the connectors' tests.

pub mod amqp;
pub mod kafka;
pub mod nats;
mod server;
