//! The connector core's Prometheus metrics. Each source registers its own set on the injected
//! registry with a constant `connector` label (`kafka`, `amqp`), so both sources can run in one
//! process and their series merge under the same names.
//!
//! Labels stay bounded: topics are the configured ones, functions the deployed ones.

use prometheus::{IntCounterVec, Opts, Registry, labels};

/// `connector_invocations_total` outcomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InvocationOutcome {
    /// A synchronous call answered 2xx.
    Success,
    /// A synchronous call failed (non-2xx, unreachable, timeout); it may be retried.
    Failed,
    /// The call was given up on and handed to dead letters.
    DeadLetter,
    /// The call was stored on the durable queue (async mode).
    Queued,
}

impl InvocationOutcome {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failed => "failed",
            Self::DeadLetter => "dead_letter",
            Self::Queued => "queued",
        }
    }
}

/// Handles to one connector's core metrics.
#[derive(Debug, Clone)]
pub struct ConnectorMetrics {
    /// `connector_messages_received_total{connector,topic}`.
    pub received: IntCounterVec,
    /// `connector_invocations_total{connector,function_name,outcome}`: one per synchronous
    /// attempt (`success`/`failed`), per stored call (`queued`), per dead letter.
    pub invocations: IntCounterVec,
    /// `connector_messages_unrouted_total{connector,topic}`: messages no function subscribed
    /// to (settled without a call).
    pub unrouted: IntCounterVec,
    /// `connector_replies_total{connector,result}`: responses published to a reply topic
    /// (`published`) or not (`failed`).
    pub replies: IntCounterVec,
}

impl ConnectorMetrics {
    /// Registers the metrics of connector `connector` (e.g. `kafka`) on `registry`.
    pub fn register(registry: &Registry, connector: &str) -> Result<Self, prometheus::Error> {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_labels(labels! { "connector".to_owned() => connector.to_owned() })
        };
        let m = Self {
            received: IntCounterVec::new(
                opts(
                    "connector_messages_received_total",
                    "Messages received from the source, by topic (or queue).",
                ),
                &["topic"],
            )?,
            invocations: IntCounterVec::new(
                opts(
                    "connector_invocations_total",
                    "Function invocations by connectors: synchronous attempts (success, failed), \
                     queued calls (queued) and dead letters (dead_letter).",
                ),
                &["function_name", "outcome"],
            )?,
            unrouted: IntCounterVec::new(
                opts(
                    "connector_messages_unrouted_total",
                    "Messages no function subscribed to; settled without invoking anything.",
                ),
                &["topic"],
            )?,
            replies: IntCounterVec::new(
                opts(
                    "connector_replies_total",
                    "Function responses published to their reply topic, by result.",
                ),
                &["result"],
            )?,
        };
        registry.register(Box::new(m.received.clone()))?;
        registry.register(Box::new(m.invocations.clone()))?;
        registry.register(Box::new(m.unrouted.clone()))?;
        registry.register(Box::new(m.replies.clone()))?;
        Ok(m)
    }

    /// Counts a message received on `topic`.
    pub fn message_received(&self, topic: &str) {
        self.received.with_label_values(&[topic]).inc();
    }

    /// Counts one invocation outcome of `function`.
    pub fn invocation(&self, function: &str, outcome: InvocationOutcome) {
        self.invocations
            .with_label_values(&[function, outcome.as_str()])
            .inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Encoder;

    #[test]
    fn two_connectors_share_one_registry() {
        let registry = Registry::new();
        let kafka = ConnectorMetrics::register(&registry, "kafka").unwrap();
        let amqp = ConnectorMetrics::register(&registry, "amqp").unwrap();
        kafka.message_received("orders");
        amqp.message_received("orders");
        amqp.invocation("f.openfaas-fn", InvocationOutcome::DeadLetter);
        let mut text = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&registry.gather(), &mut text)
            .unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(
            text.contains(
                r#"connector_messages_received_total{connector="kafka",topic="orders"} 1"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"connector_messages_received_total{connector="amqp",topic="orders"} 1"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"connector_invocations_total{connector="amqp",function_name="f.openfaas-fn",outcome="dead_letter"} 1"#), "{text}");
        assert!(ConnectorMetrics::register(&registry, "kafka").is_err());
    }
}
