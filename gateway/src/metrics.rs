//! The gateway's Prometheus metrics, with OpenFaaS's series names and labels so existing
//! dashboards and alert rules work. `function_name` is always `name.namespace`.

use std::collections::HashMap;

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
    /// `gateway_function_invocation_inflight{function_name}`: invocations begun and not yet
    /// answered (the autoscaler's `capacity` load).
    pub invocation_inflight: IntGaugeVec,
    /// `gateway_autoscaler_desired_replicas{function_name}`: what the autoscaler last decided.
    pub autoscaler_desired: IntGaugeVec,
    /// `gateway_autoscaler_decisions_total{function_name,direction}`: replica changes the
    /// autoscaler made (`up`, `down`).
    pub autoscaler_decisions: IntCounterVec,
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
            invocation_inflight: IntGaugeVec::new(
                Opts::new(
                    "gateway_function_invocation_inflight",
                    "Function invocations in flight.",
                ),
                &["function_name"],
            )?,
            autoscaler_desired: IntGaugeVec::new(
                Opts::new(
                    "gateway_autoscaler_desired_replicas",
                    "Replicas the autoscaler wants the function to have.",
                ),
                &["function_name"],
            )?,
            autoscaler_decisions: IntCounterVec::new(
                Opts::new(
                    "gateway_autoscaler_decisions_total",
                    "Replica changes made by the autoscaler.",
                ),
                &["function_name", "direction"],
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
        registry.register(Box::new(metrics.invocation_inflight.clone()))?;
        registry.register(Box::new(metrics.autoscaler_desired.clone()))?;
        registry.register(Box::new(metrics.autoscaler_decisions.clone()))?;
        Ok(metrics)
    }

    /// The handles one function's invocations update, resolved once instead of per call.
    pub(crate) fn for_function(&self, function_name: &str) -> FunctionMetrics {
        FunctionMetrics {
            started: self.invocation_started.with_label_values(&[function_name]),
            inflight: self.invocation_inflight.with_label_values(&[function_name]),
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
        let _ = self
            .invocation_inflight
            .remove_label_values(&[function_name]);
        self.forget_autoscaler(function_name);
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

    /// Removes the autoscaler's series of a function it no longer scales.
    pub(crate) fn forget_autoscaler(&self, function_name: &str) {
        let _ = self
            .autoscaler_desired
            .remove_label_values(&[function_name]);
        for direction in ["up", "down"] {
            let _ = self
                .autoscaler_decisions
                .remove_label_values(&[function_name, direction]);
        }
    }

    /// Invocations started and in flight, per `function_name`, read in one pass over each
    /// series (the autoscaler's sample; no series is created).
    pub(crate) fn load_sample(&self) -> HashMap<String, (u64, i64)> {
        use prometheus::core::Collector;
        let mut out: HashMap<String, (u64, i64)> = HashMap::new();
        let name_of = |m: &prometheus::proto::Metric| {
            m.get_label()
                .iter()
                .find(|l| l.name() == "function_name")
                .map(|l| l.value().to_owned())
        };
        for family in self.invocation_started.collect() {
            for m in family.get_metric() {
                if let Some(name) = name_of(m) {
                    out.entry(name).or_default().0 = m.get_counter().get_value() as u64;
                }
            }
        }
        for family in self.invocation_inflight.collect() {
            for m in family.get_metric() {
                if let Some(name) = name_of(m) {
                    out.entry(name).or_default().1 = m.get_gauge().get_value() as i64;
                }
            }
        }
        out
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
    inflight: IntGauge,
    ok_total: IntCounter,
    ok_seconds: Histogram,
    label: String,
}

impl FunctionMetrics {
    /// An invocation began; it counts as in flight until the guard is dropped (answered,
    /// failed or abandoned by its caller).
    pub(crate) fn started(&self) -> InFlight<'_> {
        self.started.inc();
        self.inflight.inc();
        InFlight(&self.inflight)
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

/// One invocation in flight: decrements `gateway_function_invocation_inflight` when dropped.
/// An atomic add each way; no allocation, no lock.
#[derive(Debug)]
pub(crate) struct InFlight<'a>(&'a IntGauge);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.dec();
    }
}
