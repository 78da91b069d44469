//! The fires due together, handed to the invoker in their own task so the timer loop never
//! waits: the call a fire makes, the overlap check that needs the queue, the hand-over of a
//! burst as one batch (queue mode), retries of a failed enqueue.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use courier_core::ledger::CallSource;
use courier_invoke::{Call, Enqueued, InvokeError, Invoker, ReadyCall};
use http::{HeaderMap, HeaderName, HeaderValue};
use prometheus::IntCounter;
use tokio::sync::{Semaphore, SemaphorePermit, TryAcquireError, watch};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::metrics::{Metrics, SkipReason};
use crate::policy::CRON_TOPIC;
use crate::scheduler::DispatchMode;
use crate::view::format_time;

/// The connector name fires carry in `X-Connector`.
pub const CONNECTOR: &str = "courier-scheduler";

/// `X-Topic`, `cron-function` on every fire.
pub const X_TOPIC: HeaderName = HeaderName::from_static("x-topic");
/// `X-Connector`, [`CONNECTOR`] on every fire.
pub const X_CONNECTOR: HeaderName = HeaderName::from_static("x-connector");
/// `X-Scheduled-Time`, the fire time in RFC 3339 (UTC).
pub const X_SCHEDULED_TIME: HeaderName = HeaderName::from_static("x-scheduled-time");

/// How long a fire the queue could not take for now (a retryable error: the queue is
/// unavailable, e.g. a JetStream stream electing a new leader after a node died, which takes a
/// few seconds) is tried again. Its call id is derived from the schedule and the instant, so a
/// late store is still once per instant.
const ENQUEUE_RETRY_FOR: Duration = Duration::from_secs(15);

/// The longest wait between two tries of a fire.
const ENQUEUE_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// The pause before the second enqueue attempt (doubled before each further one).
const ENQUEUE_BACKOFF: Duration = Duration::from_millis(100);

/// The uuid namespace fire call ids are derived in.
const CALL_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x5c1e_d01e_c0de_4a11_8f1e_0000_c0c0_a5e5);

/// The call id of the fire of `name.namespace` scheduled at `scheduled`: a uuid v5, the same
/// in every replica and after every restart, so the queue stores each fire once.
pub fn call_id(function: &str, namespace: &str, scheduled: DateTime<Utc>) -> String {
    call_id_at(
        function,
        namespace,
        &scheduled.to_rfc3339_opts(SecondsFormat::AutoSi, true),
    )
}

fn call_id_at(function: &str, namespace: &str, time: &str) -> String {
    let name = format!("{function}.{namespace}@{time}");
    uuid::Uuid::new_v5(&CALL_ID_NAMESPACE, name.as_bytes()).to_string()
}

/// The call a fire makes: empty body, `X-Topic: cron-function`, `X-Connector:
/// courier-scheduler`, `X-Scheduled-Time: <RFC 3339>`, and the derived call id.
pub fn fire_call(function: &str, namespace: &str, scheduled: DateTime<Utc>) -> Call {
    // Fire times are whole seconds, where both renderings agree: format once.
    let precise = scheduled.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    let call_id = call_id_at(function, namespace, &precise);
    let shown = if scheduled.timestamp_subsec_nanos() == 0 {
        precise
    } else {
        format_time(scheduled)
    };
    let mut headers = HeaderMap::with_capacity(4);
    headers.insert(X_TOPIC, HeaderValue::from_static(CRON_TOPIC));
    headers.insert(X_CONNECTOR, HeaderValue::from_static(CONNECTOR));
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(shown)) {
        headers.insert(X_SCHEDULED_TIME, value);
    }
    Call {
        function: format!("{function}.{namespace}"),
        path: "/".to_owned(),
        headers,
        body: Bytes::new(),
        call_id: Some(call_id),
        source: Some(CallSource::Cron {
            scheduled_at: format_time(scheduled),
        }),
    }
}

/// What the dispatches of one schedule share: how many are in flight, and the last fire the
/// queue accepted (to ask whether it is still outstanding).
#[derive(Debug, Default)]
pub(crate) struct Slot {
    in_flight: AtomicUsize,
    last_enqueued: Mutex<Option<Enqueued>>,
}

impl Slot {
    pub(crate) fn busy(&self) -> bool {
        self.in_flight.load(Ordering::Acquire) > 0
    }

    fn last_enqueued(&self) -> Option<Enqueued> {
        self.last_enqueued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn set_last_enqueued(&self, enqueued: Enqueued) {
        *self
            .last_enqueued
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(enqueued);
    }
}

/// Marks a dispatch in flight, for its schedule and for the scheduler's total, until dropped.
#[derive(Debug)]
pub(crate) struct InFlight(Arc<Slot>, Arc<AtomicUsize>);

impl InFlight {
    pub(crate) fn enter(slot: &Arc<Slot>, total: &Arc<AtomicUsize>) -> Self {
        slot.in_flight.fetch_add(1, Ordering::AcqRel);
        total.fetch_add(1, Ordering::AcqRel);
        Self(slot.clone(), total.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.1.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What every dispatch of one scheduler shares.
#[derive(Debug)]
pub(crate) struct Dispatcher {
    pub(crate) invoker: Arc<dyn Invoker>,
    pub(crate) metrics: Metrics,
    pub(crate) permits: Semaphore,
    pub(crate) clock: Clock,
    pub(crate) mode: DispatchMode,
    pub(crate) call_timeout: Duration,
    /// Cancelled when shutdown's drain time is over.
    pub(crate) cancel: CancellationToken,
    /// Fires handed to dispatch and not finished.
    pub(crate) in_flight: Arc<AtomicUsize>,
}

/// One fire on its way to the invoker.
#[derive(Debug)]
pub(crate) struct Fire {
    /// The call, when prepared ahead (built in the task otherwise).
    pub(crate) call: Option<Call>,
    /// `name.namespace`, the metric label.
    pub(crate) label: Arc<str>,
    pub(crate) function: Arc<str>,
    pub(crate) namespace: Arc<str>,
    /// The schedule's `scheduler_fires_total` series.
    pub(crate) fires: IntCounter,
    pub(crate) scheduled: DateTime<Utc>,
    /// A catch-up run for fires missed while the scheduler was down.
    pub(crate) catch_up: bool,
    /// Ask the queue whether the previous fire is still outstanding before handing this one
    /// over (concurrency `forbid` in queue mode).
    pub(crate) forbid_overlap: bool,
    pub(crate) in_flight: InFlight,
    /// Queue mode: the call made ready (encoded) before the fire's instant.
    pub(crate) ready: Option<ReadyCall>,
}

/// Opens (`true`) at the instant the fires of a batch are due.
pub(crate) type Gate = watch::Receiver<bool>;

impl Fire {
    /// The call: the prepared one the first time, a fresh copy after that.
    fn call(&mut self) -> Call {
        self.call
            .take()
            .unwrap_or_else(|| fire_call(&self.function, &self.namespace, self.scheduled))
    }
}

impl Dispatcher {
    /// How many fires are in flight (handed to dispatch, not finished).
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Dispatches fires that fall due together, concurrently, in one task: a burst of
    /// thousands of fires on the same second costs a few spawns, not thousands. Started ahead
    /// of the fires' instant: the overlap checks that ask the queue run first, the invoker
    /// makes each call ready (encoded), then the fires wait for `gate` to open (at their
    /// instant) and are handed over: in queue mode all at once, as one batch (one command to
    /// the queue); in sync mode as concurrent calls.
    pub(crate) async fn dispatch_batch(self: Arc<Self>, fires: Vec<Fire>, mut gate: Gate) {
        let fires: Vec<Fire> =
            futures_util::future::join_all(fires.into_iter().map(|fire| self.check(fire)))
                .await
                .into_iter()
                .flatten()
                .filter_map(|fire| self.make_ready(fire))
                .collect();
        if fires.is_empty() {
            return;
        }
        let opened = tokio::select! {
            biased;
            open = gate.wait_for(|open| *open) => open.is_ok(),
            () = self.cancel.cancelled() => false,
        };
        if !opened {
            for fire in &fires {
                self.fail(fire, "the scheduler stopped before the fire's time");
            }
            return;
        }
        match self.mode {
            DispatchMode::Queue => self.enqueue_batch(fires).await,
            DispatchMode::Sync => {
                futures_util::future::join_all(fires.into_iter().map(|fire| self.hand_over(fire)))
                    .await;
            }
        }
    }

    /// Queue mode: hands the fires over in one [`Invoker::enqueue_ready_batch`] (one permit,
    /// one command to the queue for the whole burst), then settles each fire's answer; a fire
    /// whose enqueue failed with a retryable error is tried again alone.
    async fn enqueue_batch(&self, mut fires: Vec<Fire>) {
        let Some(first) = fires.first() else {
            return;
        };
        let Some(_permit) = self.permit(first).await else {
            for fire in &fires[1..] {
                self.fail(
                    fire,
                    "the scheduler stopped before the fire was handed over",
                );
            }
            return;
        };
        let now = self.clock.now();
        let mut ready = Vec::with_capacity(fires.len());
        for fire in &mut fires {
            self.metrics
                .handing_over(fire.scheduled, now, fire.catch_up);
            // Made ready ahead (see `make_ready`); a fresh call otherwise.
            ready.push(match fire.ready.take() {
                Some(ready) => ready,
                None => ReadyCall::new(fire.call()),
            });
        }
        let outcomes = self.invoker.enqueue_ready_batch(ready).await;
        if outcomes.len() != fires.len() {
            for fire in &fires {
                self.fail(fire, "the invoker answered the batch with the wrong count");
            }
            return;
        }
        futures_util::future::join_all(
            fires
                .into_iter()
                .zip(outcomes)
                .map(|(fire, outcome)| self.settle_enqueue(fire, outcome)),
        )
        .await;
    }

    /// Waits for a permit to call the invoker; `None` when the scheduler stops first.
    async fn permit(&self, fire: &Fire) -> Option<SemaphorePermit<'_>> {
        // A free permit is taken without waiting (the usual case, and no cancellation waiter
        // is registered for it: a burst of fires would contend on the token's lock).
        match self.permits.try_acquire() {
            Ok(permit) => Some(permit),
            Err(TryAcquireError::Closed) => None,
            Err(TryAcquireError::NoPermits) => tokio::select! {
                biased;
                permit = self.permits.acquire() => permit.ok(),
                () = self.cancel.cancelled() => {
                    self.fail(fire, "the scheduler stopped before the fire was handed over");
                    None
                }
            },
        }
    }

    /// Concurrency `forbid` in queue mode: asks the queue whether the schedule's previous fire
    /// is still outstanding; the fire is dropped (and counted as skipped) when it is.
    async fn check(&self, fire: Fire) -> Option<Fire> {
        if !fire.forbid_overlap {
            return Some(fire);
        }
        let Some(previous) = fire.in_flight.0.last_enqueued() else {
            return Some(fire);
        };
        let _permit = self.permit(&fire).await?;
        match self.invoker.is_outstanding(&previous).await {
            Ok(false) => Some(fire),
            Ok(true) => {
                self.metrics.skipped(
                    &fire.label,
                    fire.scheduled,
                    SkipReason::Overlap,
                    "the previous fire is still queued or running",
                );
                None
            }
            Err(e) => {
                self.fail(
                    &fire,
                    &format!("cannot tell whether the previous fire is outstanding: {e}"),
                );
                None
            }
        }
    }

    /// Queue mode: has the invoker encode the fire's call now, ahead of its instant. A call
    /// that cannot be encoded fails the fire (it would fail at the instant too).
    fn make_ready(&self, mut fire: Fire) -> Option<Fire> {
        if self.mode != DispatchMode::Queue {
            return Some(fire);
        }
        match self.invoker.ready(fire.call()) {
            Ok(ready) => {
                fire.ready = Some(ready);
                Some(fire)
            }
            Err(e) => {
                self.fail(&fire, &format!("cannot encode the call: {e}"));
                None
            }
        }
    }

    /// Sync mode: calls the function for one fire, with a permit.
    async fn hand_over(&self, fire: Fire) {
        let Some(_permit) = self.permit(&fire).await else {
            return;
        };
        self.call(fire).await;
    }

    /// Counts a fire the queue answered; a retryable failure is tried again (built afresh:
    /// the invoker took the call, and no copy is kept for the rare retry), with a growing
    /// back-off, for up to [`ENQUEUE_RETRY_FOR`].
    async fn settle_enqueue(&self, mut fire: Fire, mut outcome: Result<Enqueued, InvokeError>) {
        let slot = fire.in_flight.0.clone();
        let mut backoff = ENQUEUE_BACKOFF;
        let mut attempt = 1;
        let started = tokio::time::Instant::now();
        loop {
            match outcome {
                Ok(enqueued) => {
                    if enqueued.duplicate {
                        self.metrics.skipped(
                            &fire.label,
                            fire.scheduled,
                            SkipReason::Duplicate,
                            "already stored",
                        );
                    } else {
                        Metrics::fired(
                            &fire.fires,
                            &fire.label,
                            fire.scheduled,
                            &enqueued.call_id,
                            fire.catch_up,
                        );
                    }
                    slot.set_last_enqueued(enqueued);
                    return;
                }
                Err(e) if e.is_retryable() && started.elapsed() < ENQUEUE_RETRY_FOR => {
                    tracing::debug!(function = %fire.label, attempt, error = %e, "Enqueue failed; retrying.");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = self.cancel.cancelled() => {
                            self.fail(&fire, &format!("enqueue failed ({e}); the scheduler stopped"));
                            return;
                        }
                    }
                    backoff = (backoff * 2).min(ENQUEUE_BACKOFF_MAX);
                    attempt += 1;
                    outcome = self.invoker.enqueue(fire.call()).await;
                }
                Err(e) => {
                    self.fail(&fire, &format!("enqueue failed: {e}"));
                    return;
                }
            }
        }
    }

    async fn call(&self, mut fire: Fire) {
        self.metrics
            .handing_over(fire.scheduled, self.clock.now(), fire.catch_up);
        let call = fire.call();
        let call_id = call.call_id.clone().unwrap_or_default();
        let answer = tokio::select! {
            answer = self.invoker.call(call, self.call_timeout) => answer,
            () = self.cancel.cancelled() => {
                self.fail(&fire, "the scheduler stopped before the function answered");
                return;
            }
        };
        match answer {
            Ok(answer) => {
                Metrics::fired(
                    &fire.fires,
                    &fire.label,
                    fire.scheduled,
                    &call_id,
                    fire.catch_up,
                );
                if answer.status >= 400 {
                    tracing::warn!(function = %fire.label, call_id, status = answer.status, "Scheduled call answered with an error.");
                }
                if answer.status >= 500 {
                    self.keep_dead_letter(
                        &mut fire,
                        Some(answer.status),
                        "function answered with a server error",
                    )
                    .await;
                }
            }
            Err(e) => {
                self.fail(&fire, &format!("call failed: {e}"));
                self.keep_dead_letter(&mut fire, None, &e.to_string()).await;
            }
        }
    }

    /// A failed synchronous fire is kept as a dead letter so it is visible and replayable.
    async fn keep_dead_letter(&self, fire: &mut Fire, status: Option<u16>, error: &str) {
        if let Err(e) = self
            .invoker
            .dead_letter(&fire.call(), 1, status, error)
            .await
        {
            tracing::warn!(function = %fire.label, error = %e, "Cannot keep the failed scheduled call as a dead letter.");
        }
    }

    fn fail(&self, fire: &Fire, detail: &str) {
        self.metrics
            .skipped(&fire.label, fire.scheduled, SkipReason::Error, detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn call_ids_depend_only_on_function_namespace_and_time() {
        let t = at("2026-01-01T10:00:02Z");
        assert_eq!(
            call_id("tick", "openfaas-fn", t),
            call_id("tick", "openfaas-fn", t)
        );
        assert_ne!(call_id("tick", "openfaas-fn", t), call_id("tick", "dev", t));
        assert_ne!(
            call_id("tick", "openfaas-fn", t),
            call_id("tock", "openfaas-fn", t)
        );
        assert_ne!(
            call_id("tick", "openfaas-fn", t),
            call_id("tick", "openfaas-fn", at("2026-01-01T10:00:04Z"))
        );
        // Stable across releases: replicas of different versions must agree.
        assert_eq!(
            call_id("tick", "openfaas-fn", t),
            "6aafc09f-e3b2-5e1a-8c46-65323537a1fc"
        );
    }

    #[test]
    fn a_fire_is_an_empty_post_with_the_cron_headers() {
        let call = fire_call("tick", "openfaas-fn", at("2026-01-01T10:00:02Z"));
        assert_eq!(call.function, "tick.openfaas-fn");
        assert_eq!(call.path, "/");
        assert!(call.body.is_empty());
        assert_eq!(call.headers["x-topic"], "cron-function");
        assert_eq!(call.headers["x-connector"], "courier-scheduler");
        assert_eq!(call.headers["x-scheduled-time"], "2026-01-01T10:00:02Z");
        assert_eq!(
            call.source,
            Some(CallSource::Cron {
                scheduled_at: "2026-01-01T10:00:02Z".into()
            })
        );
        assert_eq!(
            call.call_id.as_deref(),
            Some(call_id("tick", "openfaas-fn", at("2026-01-01T10:00:02Z")).as_str())
        );
    }
}
