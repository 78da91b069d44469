//! What Courier's tests share (never a dependency of the product): a real nats-server per
//! test ([`nats`]), used by `courier-queue`'s JetStream tests and by the end-to-end suite.

pub mod nats;
