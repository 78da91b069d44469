//! What the queue's integration tests share: a real nats-server per test ([`nats`]).

#![allow(dead_code, unreachable_pub)]

pub mod nats;
