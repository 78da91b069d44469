//! The worker's Prometheus metrics, with OpenFaaS Pro's queue-worker series names.

use prometheus::{IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Handles to the worker's metrics.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    /// `queue_worker_messages_processed_total`: deliveries settled (acked or dead-lettered).
    pub processed: IntCounter,
    /// `queue_worker_pending_messages`: messages stored and not yet settled.
    pub pending: IntGauge,
    /// `queue_worker_function_invocation_inflight{function_name}`.
    pub inflight: IntGaugeVec,
    /// `queue_worker_retries_total{function_name}`: attempts scheduled again.
    pub retries: IntCounterVec,
    /// `queue_worker_dead_letters_total{function_name}`: calls given up on.
    pub dead_letters: IntCounterVec,
    /// `queue_worker_callbacks_total{result}`: callbacks `delivered` or `failed`.
    pub callbacks: IntCounterVec,
}

impl WorkerMetrics {
    /// Registers the worker's metrics on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            processed: IntCounter::with_opts(Opts::new(
                "queue_worker_messages_processed_total",
                "Queued calls settled (acknowledged or dead-lettered).",
            ))?,
            pending: IntGauge::with_opts(Opts::new(
                "queue_worker_pending_messages",
                "Queued calls stored and not yet settled.",
            ))?,
            inflight: IntGaugeVec::new(
                Opts::new(
                    "queue_worker_function_invocation_inflight",
                    "Queued calls being invoked now.",
                ),
                &["function_name"],
            )?,
            retries: IntCounterVec::new(
                Opts::new(
                    "queue_worker_retries_total",
                    "Queued calls scheduled again.",
                ),
                &["function_name"],
            )?,
            dead_letters: IntCounterVec::new(
                Opts::new(
                    "queue_worker_dead_letters_total",
                    "Queued calls given up on after their attempts.",
                ),
                &["function_name"],
            )?,
            callbacks: IntCounterVec::new(
                Opts::new("queue_worker_callbacks_total", "Callbacks by result."),
                &["result"],
            )?,
        };
        registry.register(Box::new(m.processed.clone()))?;
        registry.register(Box::new(m.pending.clone()))?;
        registry.register(Box::new(m.inflight.clone()))?;
        registry.register(Box::new(m.retries.clone()))?;
        registry.register(Box::new(m.dead_letters.clone()))?;
        registry.register(Box::new(m.callbacks.clone()))?;
        Ok(m)
    }
}
