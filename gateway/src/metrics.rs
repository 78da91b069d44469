//! The gateway's Prometheus metrics, with OpenFaaS's series names and labels so existing
//! dashboards and alert rules work. `function_name` is always `name.namespace`.

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};

/// Handles to the gateway's metrics.
#[derive(Debug, Clone)]
pub struct Metrics {
    /// `gateway_function_invocation_total{function_name,code}`: completed invocations.
    pub invocation_total: IntCounterVec,
    /// `gateway_functions_seconds{function_name,code}`: time to the function's response.
    pub functions_seconds: HistogramVec,
    /// `gateway_function_invocation_started{function_name}`: invocations begun.
    pub invocation_started: IntCounterVec,
    /// `gateway_service_count{function_name}`: desired replicas per function.
    pub service_count: IntGaugeVec,
}

impl Metrics {
    /// Registers the gateway's metrics on `registry`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let metrics = Self {
            invocation_total: IntCounterVec::new(
                Opts::new("gateway_function_invocation_total", "Function metrics"),
                &["function_name", "code"],
            )?,
            functions_seconds: HistogramVec::new(
                HistogramOpts::new("gateway_functions_seconds", "Function time taken"),
                &["function_name", "code"],
            )?,
            invocation_started: IntCounterVec::new(
                Opts::new(
                    "gateway_function_invocation_started",
                    "The total number of function HTTP requests started.",
                ),
                &["function_name"],
            )?,
            service_count: IntGaugeVec::new(
                Opts::new("gateway_service_count", "Service replicas"),
                &["function_name"],
            )?,
        };
        registry.register(Box::new(metrics.invocation_total.clone()))?;
        registry.register(Box::new(metrics.functions_seconds.clone()))?;
        registry.register(Box::new(metrics.invocation_started.clone()))?;
        registry.register(Box::new(metrics.service_count.clone()))?;
        Ok(metrics)
    }

    /// Completed invocations of `function_name` (`name.namespace`), all status codes.
    pub fn invocations_of(&self, function_name: &str) -> u64 {
        use prometheus::core::Collector;
        self.invocation_total
            .collect()
            .iter()
            .flat_map(|family| family.get_metric())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "function_name" && l.value() == function_name)
            })
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }
}
