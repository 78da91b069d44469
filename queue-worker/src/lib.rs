//! The queue worker: takes queued calls off the `WorkQueue`, invokes each function through
//! the gateway's synchronous route (so scale-from-zero and metrics apply), retries what failed
//! with the function's retry policy, and posts the final outcome to the caller's
//! `X-Callback-Url`. A delivery is settled only after its outcome is final and the callback
//! was delivered or gave up; retries live in the queue (`retry_after`), so they survive a crash
//! of the worker. Each attempt, the final outcome (and, when asked for, the result) and the
//! callback's fate are written to the invocation ledger (`courier-ledger`), best effort: a
//! ledger that is off or failing never stops or loses a call. Every hop (attempt, callback)
//! carries the call's W3C trace context with a fresh parent span id; with `--otlp-endpoint`
//! each is also reported as a span (`spans`).
//!
//! Invariant: the worker knows the WorkQueue seam and the gateway's HTTP API; it never knows
//! which queue backend or provider runs, and never touches function processes.

mod callback;
mod config;
mod invoke;
mod metrics;
mod policies;
mod spans;
mod trace;
mod worker;

pub use config::WorkerConfig;
pub use courier_invoke::{Answer, FunctionCaller, GatewayHttp, MAX_RESPONSE_BYTES};
pub use metrics::WorkerMetrics;
pub use worker::Worker;
