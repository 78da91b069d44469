//! Courier's shared core: the OpenFaaS wire types, the [`Provider`] seam, and the pure rules
//! every component applies the same way (function and namespace names, the `name.namespace`
//! invocation form, hop-by-hop headers, Go-compatible JSON decoding, Go duration strings, the
//! autoscaler's labels and decision, the faas-cli stack file format).
//!
//! Invariant: this crate does no IO. It knows no sockets, no processes, no files, no tokio, no
//! environment. It must never know which provider or queue backend is in use.

pub mod autoscale;
pub mod decode;
pub mod duration;
pub mod function;
pub mod headers;
pub mod ledger;
pub mod logs;
pub mod names;
pub mod provider;
pub mod queue;
pub mod retry;
pub mod secret;
pub mod stack;
pub mod system;
pub mod trace;

pub use function::{FunctionDeployment, FunctionResources, FunctionStatus};
pub use logs::{LogMessage, LogRequest};
pub use names::{DEFAULT_NAMESPACE, FunctionRef};
pub use provider::{Endpoint, LogStream, Provider, ProviderError};
pub use secret::{Secret, SecretSummary};
