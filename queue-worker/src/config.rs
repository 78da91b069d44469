//! How the worker runs.

use std::time::Duration;

use courier_core::retry::RetryPolicy;

/// The worker's settings.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// The gateway's base URL (`http://127.0.0.1:8080`): functions are invoked through its
    /// `/function/` route and their retry annotations read from `/system/function/`.
    pub gateway: String,
    /// The admin password for `/system/*` (reading annotations); `None` when auth is off.
    pub password: Option<String>,
    /// Calls in flight at once, all functions together.
    pub max_inflight: usize,
    /// Calls in flight at once for one function, so a slow function cannot take every slot.
    pub max_inflight_per_function: usize,
    /// Retry policy for functions without retry annotations.
    pub retry: RetryPolicy,
    /// The queue's lease: deliveries are kept alive at a third of it while a call runs.
    pub ack_wait: Duration,
    /// Longest a single invocation may take (the gateway's upstream timeout applies too).
    pub invoke_timeout: Duration,
    /// Attempts to deliver one callback before giving up.
    pub callback_attempts: u32,
    /// Timeout of one callback POST.
    pub callback_timeout: Duration,
    /// On shutdown, how long in-flight calls may take to finish before they are handed back.
    pub drain_timeout: Duration,
    /// Largest function answer body kept in the ledger for a call that keeps its result
    /// (`--ledger-max-result-bytes`); a larger one is kept cut to this size and marked
    /// truncated.
    pub ledger_max_result_bytes: usize,
    /// Where the spans of each attempt, callback and dead-lettering go (`--otlp-endpoint`);
    /// `None` builds no span.
    pub spans: Option<courier_core::trace::Spans>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            gateway: "http://127.0.0.1:8080".into(),
            password: None,
            max_inflight: 50,
            max_inflight_per_function: 10,
            retry: RetryPolicy::default(),
            ack_wait: Duration::from_secs(30),
            invoke_timeout: Duration::from_secs(300),
            callback_attempts: 5,
            callback_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(30),
            ledger_max_result_bytes: 256 * 1024,
            spans: None,
        }
    }
}
