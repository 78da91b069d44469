//! What the scheduler reports: each occurrence logs one structured line and bumps its series
//! together, so logs and metrics never disagree.
//!
//! - `scheduler_fires_total{function_name}`: fires handed to the invoker and accepted;
//! - `scheduler_skips_total{function_name,reason}`: fires not made, `reason` one of
//!   `overlap` (the previous fire was still outstanding), `missed` (due while the scheduler was
//!   down or stalled), `error` (the invoker failed, or too many dispatches were waiting),
//!   `duplicate` (the queue already held this fire, stored by another replica);
//! - `scheduler_lateness_seconds`: from a fire's scheduled time to the moment it was handed to
//!   the invoker (catch-up runs excluded).
//!
//! `function_name` is `name.namespace`; a schedule's series are removed with the schedule.

use chrono::{DateTime, Utc};
use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, Opts, Registry};

use crate::view::format_time;

/// Lateness buckets, fine-grained from 0.5 ms (a timer wakes within a millisecond).
const LATENESS_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Why a fire was not made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SkipReason {
    Overlap,
    Missed,
    Error,
    Duplicate,
}

impl SkipReason {
    const ALL: [SkipReason; 4] = [Self::Overlap, Self::Missed, Self::Error, Self::Duplicate];

    fn as_str(self) -> &'static str {
        match self {
            Self::Overlap => "overlap",
            Self::Missed => "missed",
            Self::Error => "error",
            Self::Duplicate => "duplicate",
        }
    }
}

/// The scheduler's series, registered on the registry the caller injects.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    fires: IntCounterVec,
    skips: IntCounterVec,
    lateness: Histogram,
}

impl Metrics {
    pub(crate) fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let fires = IntCounterVec::new(
            Opts::new(
                "scheduler_fires_total",
                "Scheduled fires handed to the invoker",
            ),
            &["function_name"],
        )?;
        let skips = IntCounterVec::new(
            Opts::new(
                "scheduler_skips_total",
                "Scheduled fires not made, by reason",
            ),
            &["function_name", "reason"],
        )?;
        let lateness = Histogram::with_opts(
            HistogramOpts::new(
                "scheduler_lateness_seconds",
                "Time from a fire's scheduled time to its hand-over to the invoker",
            )
            .buckets(LATENESS_BUCKETS.to_vec()),
        )?;
        registry.register(Box::new(fires.clone()))?;
        registry.register(Box::new(skips.clone()))?;
        registry.register(Box::new(lateness.clone()))?;
        Ok(Self {
            fires,
            skips,
            lateness,
        })
    }

    /// A fire is about to be handed to the invoker.
    pub(crate) fn handing_over(
        &self,
        scheduled: DateTime<Utc>,
        now: DateTime<Utc>,
        catch_up: bool,
    ) {
        if !catch_up {
            let late = (now - scheduled).to_std().unwrap_or_default();
            self.lateness.observe(late.as_secs_f64());
        }
    }

    /// The fire counter of one schedule, looked up once when the schedule is set so that a
    /// fire costs no label lookup.
    pub(crate) fn fire_counter(&self, function: &str) -> IntCounter {
        self.fires.with_label_values(&[function])
    }

    /// The invoker accepted a fire (logged at debug: fires are counted, and at thousands a
    /// second a line each would drown the log).
    pub(crate) fn fired(
        counter: &IntCounter,
        function: &str,
        scheduled: DateTime<Utc>,
        call_id: &str,
        catch_up: bool,
    ) {
        counter.inc();
        tracing::debug!(
            function,
            scheduled = %format_time(scheduled),
            call_id,
            catch_up,
            "Scheduled fire handed over."
        );
    }

    /// A fire was not made.
    pub(crate) fn skipped(
        &self,
        function: &str,
        scheduled: DateTime<Utc>,
        reason: SkipReason,
        detail: &str,
    ) {
        self.skipped_many(function, scheduled, scheduled, 1, reason, detail);
    }

    /// `count` fires from `first` to `last` were not made.
    pub(crate) fn skipped_many(
        &self,
        function: &str,
        first: DateTime<Utc>,
        last: DateTime<Utc>,
        count: u64,
        reason: SkipReason,
        detail: &str,
    ) {
        if count == 0 {
            return;
        }
        self.skips
            .with_label_values(&[function, reason.as_str()])
            .inc_by(count);
        let (first, last) = (format_time(first), format_time(last));
        match reason {
            SkipReason::Error => tracing::warn!(
                function,
                scheduled = %last,
                reason = reason.as_str(),
                error = detail,
                "Scheduled fire failed."
            ),
            SkipReason::Duplicate => tracing::debug!(
                function,
                scheduled = %last,
                reason = reason.as_str(),
                "Scheduled fire already stored by another replica."
            ),
            SkipReason::Overlap | SkipReason::Missed => tracing::info!(
                function,
                first_scheduled = %first,
                scheduled = %last,
                count,
                reason = reason.as_str(),
                detail,
                "Scheduled fire skipped."
            ),
        }
    }

    /// A schedule is gone: drop its series so labels stay bounded by the schedules deployed.
    pub(crate) fn forget(&self, function: &str) {
        let _ = self.fires.remove_label_values(&[function]);
        for reason in SkipReason::ALL {
            let _ = self.skips.remove_label_values(&[function, reason.as_str()]);
        }
    }
}
