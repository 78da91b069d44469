//! The Kafka connector's own metrics: consumer lag and committed offsets per partition.

use prometheus::{IntGaugeVec, Opts, Registry};

/// Handles to the Kafka gauges.
#[derive(Debug, Clone)]
pub struct KafkaMetrics {
    /// `connector_lag_messages{topic,partition}`: high watermark − committed offset.
    pub lag: IntGaugeVec,
    /// `connector_commit_offset{topic,partition}`: the last committed offset (the next to
    /// consume after a restart).
    pub commit_offset: IntGaugeVec,
}

impl KafkaMetrics {
    /// Registers the gauges on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let m = Self {
            lag: IntGaugeVec::new(
                Opts::new(
                    "connector_lag_messages",
                    "Kafka consumer lag: the partition's high watermark minus the group's \
                     committed offset.",
                ),
                &["topic", "partition"],
            )?,
            commit_offset: IntGaugeVec::new(
                Opts::new(
                    "connector_commit_offset",
                    "The offset last committed for the partition (the next to consume).",
                ),
                &["topic", "partition"],
            )?,
        };
        registry.register(Box::new(m.lag.clone()))?;
        registry.register(Box::new(m.commit_offset.clone()))?;
        Ok(m)
    }
}
