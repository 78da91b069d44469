//! Connector options shared by every source: how functions are invoked (synchronously with the
//! connector's retries, or through the durable queue), the retry policy, timeouts and drain.

use std::time::Duration;

use clap::Args;
use courier_core::retry::RetryPolicy;
use http::HeaderValue;

/// How a message reaches its functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationMode {
    /// `Invoker::call` through the gateway, retried by the connector; the message is settled
    /// once every function succeeded or was dead-lettered.
    Sync,
    /// `Invoker::enqueue` on the durable queue; the message is settled once every call is
    /// stored, and the queue worker owns retries, callbacks and dead letters from then on.
    Async,
}

/// The connector core's settings.
#[derive(Debug, Clone)]
pub struct ConnectorConfig {
    /// Sync or async invocation.
    pub mode: InvocationMode,
    /// Retry policy of synchronous calls (and of storing asynchronous ones) for functions
    /// without `com.openfaas.retry.*` annotations.
    pub retry: RetryPolicy,
    /// Longest one synchronous call may take.
    pub call_timeout: Duration,
    /// `Content-Type` given to messages that carry none; `None` leaves them without one.
    pub content_type: Option<HeaderValue>,
    /// On shutdown, how long calls in flight may take before their messages are left
    /// unsettled (to be delivered again).
    pub drain_timeout: Duration,
    /// At start-up, how long to wait for the function catalog when it is still empty.
    pub catalog_grace: Duration,
}

impl Default for ConnectorConfig {
    fn default() -> Self {
        Self {
            mode: InvocationMode::Sync,
            retry: default_retry(),
            call_timeout: Duration::from_secs(120),
            content_type: None,
            drain_timeout: Duration::from_secs(10),
            catalog_grace: Duration::from_secs(2),
        }
    }
}

/// The connector's retry defaults: shorter than the queue worker's, because a synchronous
/// connector holds the message (and, for ordered sources, the messages behind it) meanwhile.
fn default_retry() -> RetryPolicy {
    RetryPolicy {
        attempts: 5,
        min_wait: Duration::from_millis(500),
        max_wait: Duration::from_secs(30),
        ..RetryPolicy::default()
    }
}

/// Options common to every connector (`courier up`, `courier connector kafka|amqp`).
#[derive(Debug, Clone, Args)]
pub struct ConnectorArgs {
    /// Invoke functions asynchronously: each message becomes a queued call (like
    /// /async-function), settled at the source as soon as the queue stored it; the queue worker
    /// then retries, dead-letters and posts callbacks. Default: synchronous calls through the
    /// gateway, retried by the connector, settled after the outcome.
    #[arg(long = "connector-async", env = "COURIER_CONNECTOR_ASYNC")]
    pub connector_async: bool,
    /// Attempts per function and message in synchronous mode, the first included (1 = no
    /// retry). A function's `com.openfaas.retry.attempts` annotation overrides it.
    #[arg(long, env = "COURIER_CONNECTOR_RETRY_ATTEMPTS", default_value_t = 5,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub connector_retry_attempts: u64,
    /// Function statuses that are retried (an unreachable function always is); overridden by
    /// `com.openfaas.retry.codes`.
    #[arg(
        long,
        env = "COURIER_CONNECTOR_RETRY_CODES",
        value_delimiter = ',',
        default_value = "408,429,500,502,503,504"
    )]
    pub connector_retry_codes: Vec<u16>,
    /// Wait before the first retry (Go duration); doubles per attempt, with jitter, up to the
    /// maximum. Overridden by `com.openfaas.retry.min_wait`.
    #[arg(long, env = "COURIER_CONNECTOR_RETRY_MIN_WAIT", default_value = "500ms",
          value_parser = duration)]
    pub connector_retry_min_wait: Duration,
    /// Longest wait between two attempts (Go duration). Overridden by
    /// `com.openfaas.retry.max_wait`.
    #[arg(long, env = "COURIER_CONNECTOR_RETRY_MAX_WAIT", default_value = "30s",
          value_parser = duration)]
    pub connector_retry_max_wait: Duration,
    /// Longest one synchronous call may take (Go duration).
    #[arg(long, env = "COURIER_CONNECTOR_TIMEOUT", default_value = "2m", value_parser = duration)]
    pub connector_timeout: Duration,
    /// Content-Type given to messages that carry none (e.g. `application/json`).
    #[arg(long, env = "COURIER_CONNECTOR_CONTENT_TYPE")]
    pub connector_content_type: Option<HeaderValue>,
    /// On shutdown, how long calls in flight may still take (Go duration); messages whose
    /// calls are cut short are not settled and will be delivered again.
    #[arg(long, env = "COURIER_CONNECTOR_DRAIN_TIMEOUT", default_value = "10s",
          value_parser = duration)]
    pub connector_drain_timeout: Duration,
}

impl ConnectorArgs {
    /// The settings these options describe.
    pub fn config(&self) -> ConnectorConfig {
        let mut retry = RetryPolicy {
            attempts: self.connector_retry_attempts,
            codes: self.connector_retry_codes.clone(),
            min_wait: self.connector_retry_min_wait,
            max_wait: self.connector_retry_max_wait,
        };
        if retry.max_wait < retry.min_wait {
            retry.max_wait = retry.min_wait;
        }
        ConnectorConfig {
            mode: if self.connector_async {
                InvocationMode::Async
            } else {
                InvocationMode::Sync
            },
            retry,
            call_timeout: self.connector_timeout,
            content_type: self.connector_content_type.clone(),
            drain_timeout: self.connector_drain_timeout,
            ..ConnectorConfig::default()
        }
    }
}

/// Parses a Go duration (`500ms`, `1m30s`) or a bare number of seconds.
pub fn duration(s: &str) -> Result<Duration, String> {
    courier_core::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        connector: ConnectorArgs,
    }

    #[test]
    fn defaults_are_sync_with_five_attempts() {
        let cli = Cli::try_parse_from(["x"]).unwrap();
        let config = cli.connector.config();
        assert_eq!(config.mode, InvocationMode::Sync);
        assert_eq!(config.retry, default_retry());
        assert_eq!(config.call_timeout, Duration::from_secs(120));
        assert_eq!(config.content_type, None);
    }

    #[test]
    fn every_option_is_parsed() {
        let cli = Cli::try_parse_from([
            "x",
            "--connector-async",
            "--connector-retry-attempts",
            "3",
            "--connector-retry-codes",
            "503,429",
            "--connector-retry-min-wait",
            "100ms",
            "--connector-retry-max-wait",
            "2s",
            "--connector-timeout",
            "5s",
            "--connector-content-type",
            "application/json",
            "--connector-drain-timeout",
            "1s",
        ])
        .unwrap();
        let config = cli.connector.config();
        assert_eq!(config.mode, InvocationMode::Async);
        assert_eq!(config.retry.attempts, 3);
        assert_eq!(config.retry.codes, vec![503, 429]);
        assert_eq!(config.retry.min_wait, Duration::from_millis(100));
        assert_eq!(config.retry.max_wait, Duration::from_secs(2));
        assert_eq!(config.call_timeout, Duration::from_secs(5));
        assert_eq!(config.content_type.unwrap(), "application/json");
        assert_eq!(config.drain_timeout, Duration::from_secs(1));
    }

    #[test]
    fn zero_attempts_are_refused() {
        assert!(Cli::try_parse_from(["x", "--connector-retry-attempts", "0"]).is_err());
    }
}
