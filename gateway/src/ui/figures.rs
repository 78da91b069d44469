//! The figures the dashboard shows that `/system/*` does not serve: per-function invocation
//! counts, error rates and median latency read off the gateway's own metrics
//! (`GET /ui/api/stats`); the queue's depth, calls in flight, the oldest waiting call's age
//! and the worker's settled-message counter (`GET /ui/api/queue`); and what the connectors
//! and the scheduler count per topic and function (`GET /ui/api/connectors`).
//!
//! Figures of components that run in the same process (`courier up`: the queue worker, the
//! connectors, the scheduler) are read off the shared metrics registry by their series
//! names; a component that is not in the process gives `None`, shown as "n/a". Rates are the
//! script's business (differences between polls); the gateway keeps no history.
//!
//! The arithmetic (which series is an error, where the median falls, sums by label) is plain
//! functions over collected metric families; the handlers only collect and answer. Knows the
//! gateway's metrics, the other components' series names, the queue seam and the ledger;
//! never a provider or a queue backend.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::State;
use courier_core::ledger::CallState;
use courier_ledger::CallFilter;
use prometheus::core::Collector;
use prometheus::proto::{MetricFamily, MetricType};
use serde::Serialize;

use crate::Gateway;
use crate::error::ApiError;

/// How many records of a state the queue figures count at most.
const STATE_COUNT_LIMIT: usize = 1000;

/// How long the ledger's part of the queue figures is served again before the ledger is
/// listed anew: every open Queue page polls each second, and a list walks the JetStream
/// ledger bucket, so the lists run at most this often per gateway, however many people look.
const LEDGER_FIGURES_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// One function's invocation figures since the gateway started.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct FunctionFigures {
    /// Completed invocations, every status.
    pub(crate) invocations: u64,
    /// Those answered with a status of 400 or above.
    pub(crate) errors: u64,
    /// The upper bound of the latency bucket holding the median, in seconds; `None` before the
    /// first invocation or when the median is beyond the last bucket.
    pub(crate) p50_seconds: Option<f64>,
}

/// One function's latency histogram summed over status codes: the sample count, then
/// (upper bound, cumulative count) per bucket.
type Latencies = (u64, Vec<(f64, u64)>);

/// The label value named `name` of a metric.
fn label<'a>(metric: &'a prometheus::proto::Metric, name: &str) -> Option<&'a str> {
    metric
        .get_label()
        .iter()
        .find(|l| l.name() == name)
        .map(|l| l.value())
}

/// Figures per `name.namespace` from the `gateway_function_invocation_total` and
/// `gateway_functions_seconds` families.
pub(crate) fn figures(
    totals: &[MetricFamily],
    seconds: &[MetricFamily],
) -> BTreeMap<String, FunctionFigures> {
    let mut out: BTreeMap<String, FunctionFigures> = BTreeMap::new();
    for metric in totals.iter().flat_map(|f| f.get_metric()) {
        let Some(function) = label(metric, "function_name") else {
            continue;
        };
        let count = metric.get_counter().get_value() as u64;
        let failed = label(metric, "code")
            .and_then(|c| c.parse::<u16>().ok())
            .is_some_and(|c| c >= 400);
        let entry = out.entry(function.to_owned()).or_default();
        entry.invocations += count;
        if failed {
            entry.errors += count;
        }
    }
    // Buckets summed over every status code, per function.
    let mut buckets: BTreeMap<&str, Latencies> = BTreeMap::new();
    for metric in seconds.iter().flat_map(|f| f.get_metric()) {
        let Some(function) = label(metric, "function_name") else {
            continue;
        };
        let histogram = metric.get_histogram();
        let (total, sums) = buckets.entry(function).or_default();
        *total += histogram.get_sample_count();
        for (i, bucket) in histogram.get_bucket().iter().enumerate() {
            match sums.get_mut(i) {
                Some(sum) => sum.1 += bucket.cumulative_count(),
                None => sums.push((bucket.upper_bound(), bucket.cumulative_count())),
            }
        }
    }
    for (function, (total, sums)) in buckets {
        if total == 0 {
            continue;
        }
        let half = total.div_ceil(2);
        let p50 = sums
            .iter()
            .find(|(_, cumulative)| *cumulative >= half)
            .map(|(bound, _)| *bound);
        out.entry(function.to_owned()).or_default().p50_seconds = p50;
    }
    out
}

/// The figures' handlers' state: the gateway, the process's metrics registry and the ledger
/// figures last read.
pub(crate) type FiguresState = (Arc<Gateway>, prometheus::Registry, Arc<LedgerFiguresCache>);

/// The ledger's part of the queue figures (queued, running, retrying), with when it was read.
#[derive(Debug, Default)]
pub(crate) struct LedgerFiguresCache(
    tokio::sync::Mutex<Option<(std::time::Instant, LedgerFigures)>>,
);

/// Queued, running and retrying calls as the ledger lists them.
type LedgerFigures = [Option<Unfinished>; 3];

impl LedgerFiguresCache {
    /// The figures read at most [`LEDGER_FIGURES_TTL`] ago, or read now.
    async fn get(&self, gateway: &Gateway) -> LedgerFigures {
        let mut cached = self.0.lock().await;
        if let Some((at, figures)) = *cached
            && at.elapsed() < LEDGER_FIGURES_TTL
        {
            return figures;
        }
        let figures = [
            unfinished(gateway, CallState::Queued).await,
            unfinished(gateway, CallState::Running).await,
            unfinished(gateway, CallState::Retrying).await,
        ];
        *cached = Some((std::time::Instant::now(), figures));
        figures
    }
}

/// `GET /ui/api/stats`: [`FunctionFigures`] keyed by `name.namespace`.
pub(crate) async fn stats(
    State((gateway, _, _)): State<FiguresState>,
) -> Json<BTreeMap<String, FunctionFigures>> {
    let metrics = &gateway.metrics;
    Json(figures(
        &metrics.invocation_total.collect(),
        &metrics.functions_seconds.collect(),
    ))
}

/// The sum of every series of the family `name` (counters and gauges), or `None` when the
/// registry has no such family (its component does not run in this process).
pub(crate) fn family_sum(families: &[MetricFamily], name: &str) -> Option<f64> {
    let family = families.iter().find(|f| f.name() == name)?;
    Some(
        family
            .get_metric()
            .iter()
            .map(|m| metric_value(family, m))
            .sum(),
    )
}

/// A counter's or gauge's value (0 for other kinds).
fn metric_value(family: &MetricFamily, metric: &prometheus::proto::Metric) -> f64 {
    match family.get_field_type() {
        MetricType::COUNTER => metric.get_counter().get_value(),
        MetricType::GAUGE => metric.get_gauge().get_value(),
        _ => 0.0,
    }
}

/// Every series of the family `name`, with its family.
fn series<'a>(
    families: &'a [MetricFamily],
    name: &'a str,
) -> impl Iterator<Item = (&'a MetricFamily, &'a prometheus::proto::Metric)> {
    families
        .iter()
        .filter(move |f| f.name() == name)
        .flat_map(|f| f.get_metric().iter().map(move |m| (f, m)))
}

/// The family `name` summed by the value of label `by` (other labels summed over).
pub(crate) fn sum_by(families: &[MetricFamily], name: &str, by: &str) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for (family, metric) in series(families, name) {
        if let Some(key) = label(metric, by) {
            *out.entry(key.to_owned()).or_default() += metric_value(family, metric);
        }
    }
    out
}

/// The family `name` summed by the values of labels `by` and `then`.
fn sum_by_two(
    families: &[MetricFamily],
    name: &str,
    by: &str,
    then: &str,
) -> BTreeMap<String, BTreeMap<String, f64>> {
    let mut out: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for (family, metric) in series(families, name) {
        if let (Some(a), Some(b)) = (label(metric, by), label(metric, then)) {
            *out.entry(a.to_owned())
                .or_default()
                .entry(b.to_owned())
                .or_default() += metric_value(family, metric);
        }
    }
    out
}

/// Unix milliseconds now.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// What `GET /ui/api/queue` answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueFigures {
    /// When these figures were read, Unix milliseconds (the script's rates divide by it).
    at_ms: u64,
    /// Messages stored and not yet acknowledged (waiting, leased or waiting for a retry).
    pending: u64,
    /// Dead letters kept.
    dead_letters: usize,
    /// Calls the ledger shows running (at most [`STATE_COUNT_LIMIT`]); `None` when the ledger
    /// is off.
    running: Option<usize>,
    /// Calls the ledger shows waiting for a retry (at most [`STATE_COUNT_LIMIT`]).
    retrying: Option<usize>,
    /// Calls the queue worker of this process is invoking now
    /// (`queue_worker_function_invocation_inflight`); `None` when no worker runs here.
    in_flight: Option<u64>,
    /// The age of the oldest call the ledger shows not yet finished (queued, running or
    /// retrying), in seconds; `None` when there is none or the ledger is off.
    oldest_age_seconds: Option<f64>,
    /// Whether [`Self::oldest_age_seconds`] is only a lower bound (a state held more than
    /// [`STATE_COUNT_LIMIT`] calls, and only the newest were read).
    oldest_is_lower_bound: bool,
    /// Messages the worker of this process settled since it started
    /// (`queue_worker_messages_processed_total`); `None` when no worker runs here.
    processed_total: Option<u64>,
    /// Retries the worker scheduled (`queue_worker_retries_total`).
    retries_total: Option<u64>,
}

/// `GET /ui/api/queue`.
pub(crate) async fn queue(
    State((gateway, registry, ledger_figures)): State<FiguresState>,
) -> Result<Json<QueueFigures>, ApiError> {
    let queue = gateway.queue.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "asynchronous invocation is not enabled on this gateway (no --queue)".into(),
        )
    })?;
    let unavailable = |e: courier_queue::Error| ApiError::Unavailable(format!("the queue: {e}"));
    let pending = queue.pending().await.map_err(unavailable)?;
    let dead_letters = queue.dead_letters().await.map_err(unavailable)?.len();
    let at_ms = now_ms();
    let [queued, running, retrying] = ledger_figures.get(&gateway).await;
    let oldest = [&queued, &running, &retrying]
        .into_iter()
        .flatten()
        .filter_map(|u| u.oldest_ms)
        .min();
    let oldest_is_lower_bound = [&queued, &running, &retrying]
        .into_iter()
        .flatten()
        .any(|u| u.count >= STATE_COUNT_LIMIT);
    let families = registry.gather();
    let whole = |name: &str| family_sum(&families, name).map(|v| v.max(0.0) as u64);
    Ok(Json(QueueFigures {
        at_ms,
        pending,
        dead_letters,
        running: running.map(|u| u.count),
        retrying: retrying.map(|u| u.count),
        in_flight: whole("queue_worker_function_invocation_inflight"),
        oldest_age_seconds: oldest.map(|ms| at_ms.saturating_sub(ms) as f64 / 1000.0),
        oldest_is_lower_bound,
        processed_total: whole("queue_worker_messages_processed_total"),
        retries_total: whole("queue_worker_retries_total"),
    }))
}

/// The calls of one state the ledger holds.
#[derive(Debug, Clone, Copy)]
struct Unfinished {
    /// How many (at most [`STATE_COUNT_LIMIT`]).
    count: usize,
    /// When the oldest of those read was accepted, Unix milliseconds.
    oldest_ms: Option<u64>,
}

/// The calls the ledger holds in `state` (at most [`STATE_COUNT_LIMIT`]); `None` when there
/// is no ledger or it cannot be read.
async fn unfinished(gateway: &Gateway, state: CallState) -> Option<Unfinished> {
    let filter = CallFilter {
        function: None,
        state: Some(state),
        limit: STATE_COUNT_LIMIT,
    };
    let calls = gateway.ledger.as_ref()?.list(&filter).await.ok()?;
    Some(Unfinished {
        count: calls.len(),
        oldest_ms: calls
            .iter()
            .map(|c| c.created_at_ms())
            .filter(|ms| *ms > 0)
            .min(),
    })
}

/// What `GET /ui/api/connectors` answers: the connectors' and the scheduler's counters in
/// this process. Every map is empty when its component does not run here.
#[derive(Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ConnectorFigures {
    /// When these figures were read, Unix milliseconds.
    at_ms: u64,
    /// Whether a connector runs in this process (its series are registered).
    connectors_running: bool,
    /// Whether the scheduler runs in this process.
    scheduler_running: bool,
    /// Messages received per topic or queue (`connector_messages_received_total`).
    received: BTreeMap<String, u64>,
    /// Messages no function subscribed to, per topic (`connector_messages_unrouted_total`).
    unrouted: BTreeMap<String, u64>,
    /// Kafka consumer lag per topic, summed over partitions (`connector_lag_messages`).
    lag: BTreeMap<String, i64>,
    /// Messages ready in each AMQP queue (`connector_queue_depth_messages`).
    depth: BTreeMap<String, i64>,
    /// Per `name.namespace`, connector invocations by outcome (`success`, `failed`,
    /// `queued`, `dead_letter`; `connector_invocations_total`).
    invocations: BTreeMap<String, BTreeMap<String, u64>>,
    /// Cron fires handed over per `name.namespace` (`scheduler_fires_total`).
    fires: BTreeMap<String, u64>,
    /// Cron fires not made per `name.namespace`, by reason (`scheduler_skips_total`).
    skips: BTreeMap<String, BTreeMap<String, u64>>,
}

/// [`ConnectorFigures`] from a registry's families.
pub(crate) fn connector_figures(families: &[MetricFamily], at_ms: u64) -> ConnectorFigures {
    let whole = |m: BTreeMap<String, f64>| -> BTreeMap<String, u64> {
        m.into_iter().map(|(k, v)| (k, v.max(0.0) as u64)).collect()
    };
    let signed = |m: BTreeMap<String, f64>| -> BTreeMap<String, i64> {
        m.into_iter().map(|(k, v)| (k, v as i64)).collect()
    };
    let has = |name: &str| families.iter().any(|f| f.name() == name);
    ConnectorFigures {
        at_ms,
        connectors_running: has("connector_messages_received_total"),
        scheduler_running: has("scheduler_fires_total"),
        received: whole(sum_by(
            families,
            "connector_messages_received_total",
            "topic",
        )),
        unrouted: whole(sum_by(
            families,
            "connector_messages_unrouted_total",
            "topic",
        )),
        lag: signed(sum_by(families, "connector_lag_messages", "topic")),
        depth: signed(sum_by(families, "connector_queue_depth_messages", "queue")),
        invocations: sum_by_two(
            families,
            "connector_invocations_total",
            "function_name",
            "outcome",
        )
        .into_iter()
        .map(|(k, v)| (k, whole(v)))
        .collect(),
        fires: whole(sum_by(families, "scheduler_fires_total", "function_name")),
        skips: sum_by_two(families, "scheduler_skips_total", "function_name", "reason")
            .into_iter()
            .map(|(k, v)| (k, whole(v)))
            .collect(),
    }
}

/// `GET /ui/api/connectors`.
pub(crate) async fn connectors(
    State((_, registry, _)): State<FiguresState>,
) -> Json<ConnectorFigures> {
    Json(connector_figures(&registry.gather(), now_ms()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts};

    #[test]
    fn errors_are_statuses_of_400_and_above_and_the_median_is_a_bucket_bound() {
        let totals = IntCounterVec::new(Opts::new("t", "t"), &["function_name", "code"]).unwrap();
        let seconds = HistogramVec::new(
            HistogramOpts::new("s", "s").buckets(vec![0.1, 1.0, 10.0]),
            &["function_name", "code"],
        )
        .unwrap();
        totals.with_label_values(&["echo.fn", "200"]).inc_by(3);
        totals.with_label_values(&["echo.fn", "500"]).inc_by(1);
        totals.with_label_values(&["echo.fn", "404"]).inc_by(1);
        for s in [0.05, 0.5, 0.5] {
            seconds.with_label_values(&["echo.fn", "200"]).observe(s);
        }
        seconds.with_label_values(&["echo.fn", "500"]).observe(5.0);
        let got = figures(&totals.collect(), &seconds.collect());
        assert_eq!(
            got["echo.fn"],
            FunctionFigures {
                invocations: 5,
                errors: 2,
                p50_seconds: Some(1.0),
            }
        );
    }

    #[test]
    fn connector_figures_sum_over_the_labels_they_do_not_keep() {
        let registry = prometheus::Registry::new();
        let received = IntCounterVec::new(
            Opts::new("connector_messages_received_total", "r")
                .const_labels(prometheus::labels! { "connector".to_owned() => "kafka".to_owned() }),
            &["topic"],
        )
        .unwrap();
        let lag = prometheus::IntGaugeVec::new(
            Opts::new("connector_lag_messages", "l"),
            &["topic", "partition"],
        )
        .unwrap();
        let invocations = IntCounterVec::new(
            Opts::new("connector_invocations_total", "i"),
            &["function_name", "outcome"],
        )
        .unwrap();
        registry.register(Box::new(received.clone())).unwrap();
        registry.register(Box::new(lag.clone())).unwrap();
        registry.register(Box::new(invocations.clone())).unwrap();
        received.with_label_values(&["orders"]).inc_by(5);
        lag.with_label_values(&["orders", "0"]).set(3);
        lag.with_label_values(&["orders", "1"]).set(4);
        invocations
            .with_label_values(&["f.openfaas-fn", "success"])
            .inc_by(4);
        invocations
            .with_label_values(&["f.openfaas-fn", "dead_letter"])
            .inc();
        let got = connector_figures(&registry.gather(), 7);
        assert!(got.connectors_running);
        assert!(!got.scheduler_running);
        assert_eq!(got.received["orders"], 5);
        assert_eq!(got.lag["orders"], 7);
        assert_eq!(got.invocations["f.openfaas-fn"]["success"], 4);
        assert_eq!(got.invocations["f.openfaas-fn"]["dead_letter"], 1);
        assert!(got.fires.is_empty() && got.depth.is_empty());
        assert_eq!(
            family_sum(&registry.gather(), "connector_lag_messages"),
            Some(7.0)
        );
        assert_eq!(family_sum(&registry.gather(), "nope"), None);
    }

    #[test]
    fn no_invocations_no_figures() {
        let totals = IntCounterVec::new(Opts::new("t", "t"), &["function_name", "code"]).unwrap();
        let seconds =
            HistogramVec::new(HistogramOpts::new("s", "s"), &["function_name", "code"]).unwrap();
        assert!(figures(&totals.collect(), &seconds.collect()).is_empty());
    }
}
