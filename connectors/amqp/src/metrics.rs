//! The AMQP connector's own metrics: queue depths and reconnections.

use prometheus::{IntCounter, IntGaugeVec, Opts, Registry};

/// Handles to the AMQP gauges.
#[derive(Debug, Clone)]
pub struct AmqpMetrics {
    /// `connector_queue_depth_messages{queue}`: messages ready in the queue (from a passive
    /// declare, refreshed every `--amqp-depth-interval`).
    pub queue_depth: IntGaugeVec,
    /// `connector_amqp_reconnects_total`: connections made again after losing one.
    pub reconnects: IntCounter,
}

impl AmqpMetrics {
    /// Registers the metrics on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            queue_depth: IntGaugeVec::new(
                Opts::new(
                    "connector_queue_depth_messages",
                    "Messages ready in an AMQP queue the connector consumes.",
                ),
                &["queue"],
            )?,
            reconnects: IntCounter::with_opts(Opts::new(
                "connector_amqp_reconnects_total",
                "Connections to the AMQP broker made again after one was lost.",
            ))?,
        };
        registry.register(Box::new(m.queue_depth.clone()))?;
        registry.register(Box::new(m.reconnects.clone()))?;
        Ok(m)
    }
}
