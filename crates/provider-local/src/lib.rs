//! Courier's default provider: every function is a local program, run as one or more replicas
//! on this machine and sandboxed with bubblewrap when it is present.
//!
//! - Fork mode (the classic watchdog contract): each replica is an in-process HTTP listener on
//!   loopback that forks the function's command once per request (body on stdin, stdout back,
//!   CGI-style `Http_*` variables).
//! - HTTP mode (`envVars.mode=http`, the of-watchdog contract): each replica is a long-running
//!   process listening on `127.0.0.1:$PORT`, ready once `GET /_/health` answers (or it accepts
//!   connections), restarted with backoff when it exits.
//!
//! Either way a ready replica is a loopback address, so the gateway proxies to every function
//! the same way. Function specs and secrets persist in the data directory.
//!
//! Invariant: this crate knows the [`courier_core::Provider`] seam and nothing of the gateway,
//! HTTP routing, authentication or queues.

mod cpu;
mod error;
mod logbook;
mod process;
mod provider;
mod replica;
mod runtime;
mod sandbox;
mod store;

pub use error::{Error, Result};
pub use provider::{LocalConfig, LocalProvider};
pub use sandbox::SandboxMode;
