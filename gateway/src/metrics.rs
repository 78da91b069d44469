//! The gateway's Prometheus metrics, with OpenFaaS's series names and labels so existing
//! dashboards and alert rules work. `function_name` is always `name.namespace`.

use courier_core::system::VersionInfo;
use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry,
};

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
    /// `queue_worker_messages_submitted_total`: asynchronous calls stored in the queue.
    pub submitted: IntCounter,
}

impl Metrics {
    /// Registers the gateway's metrics on `registry`, and `courier_build_info{release,sha} 1`.
    pub fn register(registry: &Registry, version: &VersionInfo) -> Result<Self, prometheus::Error> {
        let build_info = IntGauge::with_opts(
            Opts::new(
                "courier_build_info",
                "The running Courier build (always 1).",
            )
            .const_label("release", &version.release)
            .const_label("sha", &version.sha),
        )?;
        build_info.set(1);
        registry.register(Box::new(build_info))?;
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
            submitted: IntCounter::with_opts(Opts::new(
                "queue_worker_messages_submitted_total",
                "Asynchronous calls stored in the queue.",
            ))?,
        };
        registry.register(Box::new(metrics.submitted.clone()))?;
        registry.register(Box::new(metrics.invocation_total.clone()))?;
        registry.register(Box::new(metrics.functions_seconds.clone()))?;
        registry.register(Box::new(metrics.invocation_started.clone()))?;
        registry.register(Box::new(metrics.service_count.clone()))?;
        Ok(metrics)
    }

    /// The handles one function's invocations update, resolved once instead of per call.
    pub(crate) fn for_function(&self, function_name: &str) -> FunctionMetrics {
        FunctionMetrics {
            started: self.invocation_started.with_label_values(&[function_name]),
            ok_total: self
                .invocation_total
                .with_label_values(&[function_name, "200"]),
            ok_seconds: self
                .functions_seconds
                .with_label_values(&[function_name, "200"]),
            label: function_name.to_owned(),
        }
    }

    /// The `gateway_function_invocation_total` series of `function_name`.
    fn invocation_series(&self, function_name: &str) -> Vec<prometheus::proto::Metric> {
        use prometheus::core::Collector;
        self.invocation_total
            .collect()
            .into_iter()
            .flat_map(|family| family.get_metric().to_vec())
            .filter(|m| {
                m.get_label()
                    .iter()
                    .any(|l| l.name() == "function_name" && l.value() == function_name)
            })
            .collect()
    }

    /// Removes every series of a removed function.
    pub(crate) fn forget(&self, function_name: &str) {
        let _ = self
            .invocation_started
            .remove_label_values(&[function_name]);
        let codes: Vec<String> = self
            .invocation_series(function_name)
            .iter()
            .filter_map(|m| {
                m.get_label()
                    .iter()
                    .find(|l| l.name() == "code")
                    .map(|l| l.value().to_owned())
            })
            .chain(std::iter::once("200".to_owned()))
            .collect();
        for code in codes {
            let _ = self
                .invocation_total
                .remove_label_values(&[function_name, &code]);
            let _ = self
                .functions_seconds
                .remove_label_values(&[function_name, &code]);
        }
    }

    /// Completed invocations of `function_name` (`name.namespace`), all status codes.
    pub fn invocations_of(&self, function_name: &str) -> u64 {
        self.invocation_series(function_name)
            .iter()
            .map(|m| m.get_counter().get_value() as u64)
            .sum()
    }
}

/// One function's invocation metrics; the common 200 series are pre-resolved.
#[derive(Debug, Clone)]
pub(crate) struct FunctionMetrics {
    started: IntCounter,
    ok_total: IntCounter,
    ok_seconds: Histogram,
    label: String,
}

impl FunctionMetrics {
    /// An invocation began.
    pub(crate) fn started(&self) {
        self.started.inc();
    }

    /// An invocation ended with `status` after `seconds`.
    pub(crate) fn completed(&self, metrics: &Metrics, status: http::StatusCode, seconds: f64) {
        if status == http::StatusCode::OK {
            self.ok_total.inc();
            self.ok_seconds.observe(seconds);
        } else {
            let code = status.as_str();
            metrics
                .invocation_total
                .with_label_values(&[self.label.as_str(), code])
                .inc();
            metrics
                .functions_seconds
                .with_label_values(&[self.label.as_str(), code])
                .observe(seconds);
        }
    }
}
