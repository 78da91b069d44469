//! The figures the dashboard shows that `/system/*` does not serve: per-function invocation
//! counts, error rates and median latency read off the gateway's own metrics
//! (`GET /ui/api/stats`), and the queue's depth (`GET /ui/api/queue`).
//!
//! The arithmetic (which series is an error, where the median falls) is plain functions over
//! collected metric families; the handlers only collect and answer. Knows the gateway's
//! metrics, the queue seam and the ledger; never a provider or a queue backend.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use courier_core::ledger::CallState;
use courier_ledger::CallFilter;
use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use serde::Serialize;

use crate::Gateway;
use crate::error::ApiError;

/// How many records of a state the queue figures count at most.
const STATE_COUNT_LIMIT: usize = 1000;

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

/// `GET /ui/api/stats`: [`FunctionFigures`] keyed by `name.namespace`.
pub(crate) async fn stats(
    State(gateway): State<Arc<Gateway>>,
) -> Json<BTreeMap<String, FunctionFigures>> {
    let metrics = &gateway.metrics;
    Json(figures(
        &metrics.invocation_total.collect(),
        &metrics.functions_seconds.collect(),
    ))
}

/// What `GET /ui/api/queue` answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueFigures {
    /// Messages stored and not yet acknowledged (waiting, leased or waiting for a retry).
    pending: u64,
    /// Dead letters kept.
    dead_letters: usize,
    /// Calls the ledger shows running (at most [`STATE_COUNT_LIMIT`]); `None` when the ledger
    /// is off.
    running: Option<usize>,
    /// Calls the ledger shows waiting for a retry (at most [`STATE_COUNT_LIMIT`]).
    retrying: Option<usize>,
}

/// `GET /ui/api/queue`.
pub(crate) async fn queue(
    State(gateway): State<Arc<Gateway>>,
) -> Result<Json<QueueFigures>, ApiError> {
    let queue = gateway.queue.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "asynchronous invocation is not enabled on this gateway (no --queue)".into(),
        )
    })?;
    let unavailable = |e: courier_queue::Error| ApiError::Unavailable(format!("the queue: {e}"));
    let pending = queue.pending().await.map_err(unavailable)?;
    let dead_letters = queue.dead_letters().await.map_err(unavailable)?.len();
    Ok(Json(QueueFigures {
        pending,
        dead_letters,
        running: count(&gateway, CallState::Running).await,
        retrying: count(&gateway, CallState::Retrying).await,
    }))
}

/// How many calls the ledger holds in `state` (at most [`STATE_COUNT_LIMIT`]); `None` when
/// there is no ledger or it cannot be read.
async fn count(gateway: &Gateway, state: CallState) -> Option<usize> {
    let filter = CallFilter {
        function: None,
        state: Some(state),
        limit: STATE_COUNT_LIMIT,
    };
    let calls = gateway.ledger.as_ref()?.list(&filter).await.ok()?;
    Some(calls.len())
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
    fn no_invocations_no_figures() {
        let totals = IntCounterVec::new(Opts::new("t", "t"), &["function_name", "code"]).unwrap();
        let seconds =
            HistogramVec::new(HistogramOpts::new("s", "s"), &["function_name", "code"]).unwrap();
        assert!(figures(&totals.collect(), &seconds.collect()).is_empty());
    }
}
