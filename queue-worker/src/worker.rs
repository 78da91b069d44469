//! The worker loop: fetch deliveries while there is room (a few fetches out at once, and as
//! many calls ahead as finished during the last fetch, so a slot given back starts the next
//! call without waiting a queue round trip), run each call in its own task under
//! a global and a per-function cap (held until the function answers; the outcome is then
//! recorded and settled under a cap of its own, while the next call starts), park deliveries
//! of functions at their cap (kept alive), and on shutdown stop fetching, let running calls
//! finish within the drain deadline and hand back everything else.
//!
//! Each call's story goes to the invocation ledger on the way: an attempt begins (a cancelled
//! or already finished call is settled without running, unless it finished but its callback
//! was never posted: then it runs again for the callback), the attempt ends (retrying, or
//! final with its kept result, written before the callback so a waiting caller hears at
//! once), the callback's outcome. On the worker side the ledger is best effort: see
//! [`Worker::recorded`].

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use courier_core::ledger::{KeptResult, Then};
use courier_core::queue::{DeadLetterRecord, QueueRequest};
use courier_ledger::{Begin, Finish, Ledger, LedgerError};
use courier_queue::{Delivery, Settlement, WorkQueue};
use futures_util::future::BoxFuture;
use futures_util::stream::FuturesUnordered;
use futures_util::{FutureExt as _, StreamExt as _};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::callback::{self, CallbackInfo};
use crate::config::WorkerConfig;
use crate::invoke::{self, Outcome};
use crate::metrics::WorkerMetrics;
use crate::policies::Policies;
use crate::spans::CallSpan;
use crate::trace;
use courier_invoke::{FunctionCaller, GatewayHttp, dead_letter_record, keep_dead_letter};

/// How often `queue_worker_pending_messages` is refreshed.
const PENDING_REFRESH: Duration = Duration::from_secs(1);

/// How long one fetch waits for work before the loop looks around again.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// Most fetches out at the queue at once.
const MAX_FETCHES: usize = 4;

/// How long the loop waits before fetching again after a fetch failed.
const FETCH_PAUSE: Duration = Duration::from_secs(1);

/// A fetch's answer.
struct Fetched {
    /// The room it was sent for (the loop reserved it).
    room: usize,
    /// The loop's count of slots given back when it was sent.
    given_back: usize,
    /// What it brought.
    deliveries: courier_queue::Result<Vec<(Delivery, JobBegin)>>,
}

/// Calls the loop may fetch for now, besides those it fetches ahead: free slots, less the
/// calls parked for their function (a function at its cap does not hold up the others).
fn free_room(slots: &Slots, max_inflight: usize) -> usize {
    let parked_total: usize = slots.parked.values().map(VecDeque::len).sum();
    slots
        .global
        .available_permits()
        .min(max_inflight.saturating_sub(parked_total))
}

/// Parked calls whose function has room: they wait for one of the worker's slots (they were
/// fetched ahead), not for their function's.
fn waiting_for_the_worker(slots: &Slots) -> usize {
    slots
        .parked
        .iter()
        .map(|(function, jobs)| {
            let room = slots
                .per_function
                .get(function)
                .map_or(usize::MAX, |limit| limit.available_permits());
            jobs.len().min(room)
        })
        .sum()
}

/// Longest a ledger write may take before the worker carries on without it.
const LEDGER_TIMEOUT: Duration = Duration::from_secs(10);

/// Consumes one WorkQueue.
#[derive(Debug)]
pub struct Worker {
    queue: Arc<dyn WorkQueue>,
    ledger: Ledger,
    config: WorkerConfig,
    client: reqwest::Client,
    caller: Arc<dyn FunctionCaller>,
    policies: Policies,
    metrics: WorkerMetrics,
    /// Calls whose function has answered and whose outcome is being recorded (callback,
    /// ledger, settle) after their [`Slot`] was given back: at most `max_inflight`.
    settling: Arc<Semaphore>,
}

/// A running call's place under the global and per-function caps. It is given back, and the
/// worker loop told, once the function has answered (or the call ends before that), so the
/// next call can start while this one's outcome is recorded.
struct Slot {
    permits: Option<(OwnedSemaphorePermit, OwnedSemaphorePermit)>,
    done: mpsc::Sender<String>,
    function: String,
}

impl Slot {
    fn release(&mut self) {
        if self.permits.take().is_some() {
            // One message per slot; the channel holds more than the slots there can be
            // between two drains of the loop, so it is never full.
            let _ = self.done.try_send(std::mem::take(&mut self.function));
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.release();
    }
}

/// The worker loop's bookkeeping of who may run.
struct Slots {
    /// Fetched calls waiting for their function to have room, by function.
    parked: HashMap<String, VecDeque<Job>>,
    /// The per-function caps.
    per_function: HashMap<String, Arc<Semaphore>>,
    /// The global cap.
    global: Arc<Semaphore>,
    /// Running calls.
    tracker: TaskTracker,
    /// Told the function of every call that finished (its slot is free again).
    done: mpsc::Sender<String>,
    /// Cancelled after the drain deadline: running calls hand their delivery back.
    abandon: CancellationToken,
}

/// A delivery with its decoded call.
struct Job {
    delivery: Delivery,
    request: QueueRequest,
    /// Whether the attempt's start was recorded with the fetch.
    begin: JobBegin,
}

/// When a job's attempt start is written to the ledger.
enum JobBegin {
    /// With the fetch, which said this (`None`: it could not tell, or the ledger is off: run).
    AtFetch(Option<Begin>),
    /// When the job starts (it may wait for its function's slot first, and stays
    /// cancellable meanwhile).
    AtStart,
}

impl Worker {
    /// A worker over `queue` that calls functions through the gateway at `config.gateway`
    /// over HTTP.
    pub fn new(
        queue: Arc<dyn WorkQueue>,
        config: WorkerConfig,
        metrics: WorkerMetrics,
    ) -> Result<Arc<Self>, reqwest::Error> {
        Self::with_caller(queue, config, metrics, None)
    }

    /// A worker that calls functions through `caller` (HTTP to `config.gateway` when `None`).
    pub fn with_caller(
        queue: Arc<dyn WorkQueue>,
        config: WorkerConfig,
        metrics: WorkerMetrics,
        caller: Option<Arc<dyn FunctionCaller>>,
    ) -> Result<Arc<Self>, reqwest::Error> {
        let max_inflight = config.max_inflight.max(1);
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(max_inflight)
            .build()?;
        let caller =
            caller.unwrap_or_else(|| Arc::new(GatewayHttp::new(client.clone(), &config.gateway)));
        Ok(Arc::new(Self {
            ledger: Ledger::new(queue.clone()),
            queue,
            config,
            client,
            caller,
            policies: Policies::default(),
            metrics,
            settling: Arc::new(Semaphore::new(max_inflight)),
        }))
    }

    /// Runs until `shutdown`, then drains.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let max_inflight = self.config.max_inflight.max(1);
        // Each slot sends one message when given back; between two drains of the loop fewer
        // than twice the global cap can be sent.
        let (done, mut done_rx) = mpsc::channel::<String>(max_inflight * 4);
        let mut slots = Slots {
            parked: HashMap::new(),
            per_function: HashMap::new(),
            global: Arc::new(Semaphore::new(max_inflight)),
            tracker: TaskTracker::new(),
            done,
            abandon: CancellationToken::new(),
        };
        let mut keep_parked_alive = tokio::time::interval(self.config.ack_wait / 3);
        let mut last_pending = Instant::now() - PENDING_REFRESH;
        // Fetches out at the queue, each with the room it was sent for (`reserved` in all) and
        // the count of slots given back when it was sent. A slot given back is fetched for at
        // once, while earlier fetches are still out.
        let mut fetches = FuturesUnordered::new();
        let mut reserved = 0;
        // Slots given back so far, and how many were given back while the last fetch was out:
        // about as many calls will finish while the next one is. The loop fetches that many
        // ahead (parked until a slot is free), so a slot given back starts a call at once
        // instead of after a queue round trip. Calls that take long give few slots back: then
        // nothing is fetched ahead.
        let mut given_back: usize = 0;
        let mut ahead: usize = 0;
        // After a failed fetch, no new one before this.
        let mut pause_until: Option<Instant> = None;
        loop {
            // Start parked jobs whose function has room again.
            while let Ok(function) = done_rx.try_recv() {
                given_back += 1;
                self.start_parked(&function, &mut slots);
            }
            if shutdown.is_cancelled() {
                break;
            }
            let room = (free_room(&slots, max_inflight) + ahead)
                .saturating_sub(waiting_for_the_worker(&slots) + reserved);
            let paused = pause_until.is_some_and(|until| Instant::now() < until);
            if room > 0 && fetches.len() < MAX_FETCHES && !paused {
                if keep_parked_alive.tick().now_or_never().is_some() {
                    keep_alive(&slots.parked).await;
                }
                // When no function is short of room (its cap binds before the worker's), each
                // attempt's start is recorded with the fetch that hands it out (in the same
                // transaction on the embedded store): no ledger round trip of its own. A call
                // fetched ahead starts when a slot is given back, about a queue round trip
                // later. Otherwise a call may wait for its function's slot, and it stays
                // `queued` (cancellable) until it starts.
                let begin_at_fetch =
                    self.least_function_room(&slots) >= slots.global.available_permits();
                reserved += room;
                fetches.push(self.fetch(room, begin_at_fetch, given_back));
                continue;
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                Some(function) = done_rx.recv() => {
                    given_back += 1;
                    self.start_parked(&function, &mut slots);
                }
                Some(fetched) = fetches.next() => {
                    reserved -= fetched.room;
                    ahead = (given_back - fetched.given_back).min(max_inflight);
                    match fetched.deliveries {
                        Ok(deliveries) => self.take(deliveries, &mut slots).await,
                        Err(e) => {
                            tracing::warn!(error = %e, "Fetching from the queue failed; retrying.");
                            pause_until = Some(Instant::now() + FETCH_PAUSE);
                        }
                    }
                }
                () = tokio::time::sleep_until(pause_until.unwrap_or_else(Instant::now)), if paused => {
                    pause_until = None;
                }
                _ = keep_parked_alive.tick() => keep_alive(&slots.parked).await,
            }
            // The pending gauge is a queue round trip: refresh it once a second, not per batch.
            if last_pending.elapsed() >= PENDING_REFRESH {
                last_pending = Instant::now();
                if let Ok(pending) = self.queue.pending().await {
                    self.metrics
                        .pending
                        .set(i64::try_from(pending).unwrap_or(i64::MAX));
                }
            }
        }
        // A fetch is never abandoned half-way: one dropped after the queue leased its messages
        // would leave them leased to nobody until their lease ran out. Each returns within
        // FETCH_WAIT; what they bring now is handed back.
        while let Some(fetched) = fetches.next().await {
            for (delivery, _) in fetched.deliveries.unwrap_or_default() {
                let _ = delivery.retry_after(Duration::ZERO).await;
            }
        }
        // Shutdown: hand back what never started, let the rest finish within the deadline.
        for (_, jobs) in slots.parked.drain() {
            for job in jobs {
                let _ = job.delivery.retry_after(Duration::ZERO).await;
            }
        }
        slots.tracker.close();
        if tokio::time::timeout(self.config.drain_timeout, slots.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "In-flight calls still running after the drain deadline; handing them back."
            );
            slots.abandon.cancel();
            slots.tracker.wait().await;
        }
    }

    /// Fetches up to `room` deliveries, their attempts begun with the fetch when
    /// `begin_at_fetch`; answers with `room` (what the loop reserved for it) and `given_back`
    /// (the loop's count of slots given back when it was sent).
    fn fetch(
        &self,
        room: usize,
        begin_at_fetch: bool,
        given_back: usize,
    ) -> BoxFuture<'_, Fetched> {
        async move {
            let deliveries = if begin_at_fetch {
                self.queue
                    .fetch_begun(room, FETCH_WAIT, courier_ledger::begin_update(mint_trace))
                    .await
                    .map(|begun| {
                        begun
                            .into_iter()
                            .map(|courier_queue::Begun { delivery, row }| {
                                let begun = courier_ledger::begun(&delivery.message.id, row);
                                let id = &delivery.message.id;
                                ledger_failed(id, "begin_attempt", begun.as_ref().err());
                                (delivery, JobBegin::AtFetch(begun.ok()))
                            })
                            .collect()
                    })
            } else {
                self.queue.fetch(room, FETCH_WAIT).await.map(|deliveries| {
                    deliveries
                        .into_iter()
                        .map(|delivery| (delivery, JobBegin::AtStart))
                        .collect()
                })
            };
            Fetched {
                room,
                given_back,
                deliveries,
            }
        }
        .boxed()
    }

    /// Decodes fetched deliveries and starts them (or parks them while their function is at
    /// its cap); a delivery that is not a queued call is dead-lettered.
    async fn take(self: &Arc<Self>, deliveries: Vec<(Delivery, JobBegin)>, slots: &mut Slots) {
        for (delivery, begin) in deliveries {
            let request = match serde_json::from_slice::<QueueRequest>(&delivery.message.payload) {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(call_id = %delivery.message.id, error = %e, "Queued message is not a QueueRequest; dead-lettered.");
                    let record = dead_letter_record(
                        &delivery.message.id,
                        "",
                        delivery.attempt,
                        None,
                        format!("the queued message is not a QueueRequest: {e}"),
                        None,
                    );
                    self.give_up(delivery, &record).await;
                    continue;
                }
            };
            let function = request.function.clone();
            slots
                .parked
                .entry(function.clone())
                .or_default()
                .push_back(Job {
                    delivery,
                    request,
                    begin,
                });
            self.start_parked(&function, slots);
        }
    }

    /// The fewest calls any function could start now: its free slots (a function not seen
    /// yet has its whole cap).
    fn least_function_room(&self, slots: &Slots) -> usize {
        let cap = self.config.max_inflight_per_function.max(1);
        slots
            .per_function
            .values()
            .map(|limit| limit.available_permits())
            .fold(cap, usize::min)
    }

    /// Starts parked jobs of `function` while it and the worker have free slots.
    fn start_parked(self: &Arc<Self>, function: &str, slots: &mut Slots) {
        let cap = self.config.max_inflight_per_function.max(1);
        let limit = slots
            .per_function
            .entry(function.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(cap)))
            .clone();
        while let Some(queue) = slots.parked.get_mut(function) {
            if queue.is_empty() {
                slots.parked.remove(function);
                break;
            }
            let Ok(function_permit) = limit.clone().try_acquire_owned() else {
                break;
            };
            let Ok(global_permit) = slots.global.clone().try_acquire_owned() else {
                break;
            };
            let job = queue.pop_front().expect("not empty");
            let worker = self.clone();
            let done = slots.done.clone();
            let abandon = slots.abandon.clone();
            slots.tracker.spawn(async move {
                let slot = Slot {
                    permits: Some((function_permit, global_permit)),
                    done,
                    function: job.request.function.clone(),
                };
                worker.process(job, abandon, slot).await;
            });
        }
    }

    /// Runs one call to its outcome and settles the delivery.
    async fn process(&self, job: Job, abandon: CancellationToken, mut slot: Slot) {
        let Job {
            delivery,
            mut request,
            begin: begun,
        } = job;
        let started = Instant::now();
        let call_id = request
            .header
            .get("X-Call-Id")
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_else(|| delivery.message.id.clone());
        // The ledger's key is the message id (a replay has its own record; its request keeps
        // the original X-Call-Id for the callback).
        let ledger_id = delivery.message.id.clone();
        let function = request.function.clone();
        let call_trace = trace::ensure(&mut request, &call_id);
        // Shared with the ledger's updates, which rebuild a missing record from it.
        let request = Arc::new(request);
        let begun = match begun {
            JobBegin::AtFetch(begun) => begun,
            JobBegin::AtStart => {
                self.recorded(
                    &delivery,
                    "begin_attempt",
                    self.ledger.begin_attempt(&ledger_id, &request),
                )
                .await
            }
        };
        // `rerun`: the call ended (its final record is written) but the worker stopped
        // before its callback was posted; it runs again so the callback is not lost (at least
        // once, as without a ledger), and its final record is left as it is.
        let (skipped, rerun) = match begun {
            Some(Begin::Cancelled) => (Some("cancelled"), false),
            Some(Begin::AlreadyFinal(state)) => {
                if self.callback_pending(&delivery, &ledger_id, &request).await {
                    (None, true)
                } else {
                    (Some(state.as_str()), false)
                }
            }
            Some(Begin::Run) | None => (None, false),
        };
        if let Some(state) = skipped {
            tracing::info!(call_id = %call_id, function = %function, state, "Queued call is already settled in the ledger; not run.");
            if let Err(e) = delivery.ack().await {
                tracing::warn!(call_id = %call_id, error = %e, "Could not settle the delivery; it may be delivered again.");
            }
            self.metrics.processed.inc();
            return;
        }
        if rerun {
            tracing::info!(call_id = %call_id, function = %function, "Queued call ended but its callback was never posted; running it again for the callback.");
        }
        let gauge = self
            .metrics
            .inflight
            .with_label_values(&[function.as_str()]);
        gauge.inc();
        let policy = self
            .policies
            .get(&self.client, &self.config, &function)
            .await;
        let attempt = delivery.attempt;
        let attempt_started = Instant::now();
        let attempt_began = std::time::SystemTime::now();
        let attempt_trace = trace::next_hop(&call_trace);
        let outcome = tokio::select! {
            outcome = self.keeping_alive(&delivery, invoke::invoke(self.caller.as_ref(), &self.config, &request, &attempt_trace)) => outcome,
            () = abandon.cancelled() => {
                gauge.dec();
                let handed_back = Finish {
                    duration: attempt_started.elapsed(),
                    status: None,
                    error: Some("handed back: the worker stopped before the attempt ended".into()),
                    then: Then::RetryAfter(Duration::ZERO),
                };
                if rerun {
                    let _ = delivery.retry_after(Duration::ZERO).await;
                } else {
                    let _ = self.finish_and_settle(delivery, Settlement::RetryAfter(Duration::ZERO), &ledger_id, (&request, handed_back, None)).await;
                }
                return;
            }
        };
        gauge.dec();
        let attempt_took = attempt_started.elapsed();
        // The function is done with it: its slot goes to the next call while this one's
        // outcome is recorded (at most `max_inflight` at a time).
        let _settling = self.settling.clone().acquire_owned().await;
        slot.release();
        let call_span = CallSpan {
            call: &call_trace,
            call_id: &call_id,
            function: &function,
        };
        if let Some(spans) = &self.config.spans {
            spans.record(call_span.attempt(
                &attempt_trace,
                (attempt_began, std::time::SystemTime::now()),
                attempt,
                outcome.status,
                outcome.error.as_deref(),
            ));
        }
        let retry = &policy.retry;
        if retry.should_retry(outcome.status, attempt) {
            let delay = retry.delay(attempt, outcome.retry_after, jitter());
            tracing::info!(call_id = %call_id, function = %function, attempt, status = outcome.status, delay_ms = delay.as_millis() as u64, "Call failed; retrying later.");
            self.metrics
                .retries
                .with_label_values(&[function.as_str()])
                .inc();
            // Recorded before the retry is scheduled (in the same step where the queue can),
            // so the next attempt cannot begin first.
            let settled = if rerun {
                delivery.retry_after(delay).await
            } else {
                let finish = attempt_finish(&outcome, attempt_took, Then::RetryAfter(delay));
                self.finish_and_settle(
                    delivery,
                    Settlement::RetryAfter(delay),
                    &ledger_id,
                    (&request, finish, None),
                )
                .await
            };
            if let Err(e) = settled {
                tracing::warn!(call_id = %call_id, error = %e, "Could not schedule the retry; the queue will redeliver after the lease.");
            }
            return;
        }
        let exhausted = outcome.status.is_none_or(|s| retry.codes.contains(&s));
        if exhausted {
            // The letter is kept before the ledger says `dead-lettered`: a redelivery of a
            // call the ledger calls final is settled without running, so the letter must
            // already exist.
            let letter = dead_letter_record(
                &call_id,
                &function,
                attempt,
                outcome.status,
                outcome.error.clone().unwrap_or_default(),
                Some(QueueRequest::clone(&request)),
            );
            if let Err(e) = keep_dead_letter(&*self.queue, &letter).await {
                tracing::error!(call_id = %call_id, error = %e, "Could not keep the dead letter; the call will be delivered again after its lease.");
                let error = format!(
                    "{}; the dead letter could not be kept ({e}): the call comes back after its lease",
                    outcome.error.as_deref().unwrap_or("no answer")
                );
                let finish = Finish {
                    error: Some(error),
                    ..attempt_finish(
                        &outcome,
                        attempt_took,
                        Then::RetryAfter(self.config.ack_wait),
                    )
                };
                if !rerun {
                    self.recorded(
                        &delivery,
                        "finish_attempt",
                        self.ledger
                            .finish_attempt(&ledger_id, &request, finish, None),
                    )
                    .await;
                }
                return;
            }
            if let Some(spans) = &self.config.spans {
                spans.record(call_span.dead_letter(
                    &trace::next_hop(&call_trace),
                    std::time::SystemTime::now(),
                    attempt,
                    &letter.error,
                ));
            }
        }
        let kept = (policy.keep_result || invoke::keep_result_requested(&request))
            .then(|| kept_result(&outcome, self.config.ledger_max_result_bytes))
            .flatten();
        let then = if exhausted {
            Then::DeadLetter
        } else {
            Then::Done
        };
        let settlement = if exhausted {
            Settlement::DeadLetter
        } else {
            Settlement::Ack
        };
        let finish = attempt_finish(&outcome, attempt_took, then);
        let settled = match &request.callback_url {
            // No callback: the final record and the settle in one step.
            None if rerun => settle(delivery, settlement).await,
            None => {
                self.finish_and_settle(delivery, settlement, &ledger_id, (&request, finish, kept))
                    .await
            }
            Some(url) => {
                // The final record goes first: a caller waiting on the call hears as soon as
                // the function is done, not after the callback.
                if !rerun {
                    self.recorded(
                        &delivery,
                        "finish_attempt",
                        self.ledger
                            .finish_attempt(&ledger_id, &request, finish, kept),
                    )
                    .await;
                }
                let url = url.to_url_string();
                let callback_trace = trace::next_hop(&call_trace);
                let callback_began = std::time::SystemTime::now();
                let info = CallbackInfo {
                    url: &url,
                    call_id: &call_id,
                    function: &function,
                    duration: started.elapsed(),
                    attempts: attempt,
                    max_attempts: retry.attempts,
                    trace: &callback_trace,
                };
                let posted = self
                    .keeping_alive(
                        &delivery,
                        callback::post(&self.client, &self.config, &info, &outcome),
                    )
                    .await;
                let result = if posted.delivered {
                    "delivered"
                } else {
                    "failed"
                };
                self.metrics.callbacks.with_label_values(&[result]).inc();
                if let Some(spans) = &self.config.spans {
                    spans.record(call_span.callback(
                        &callback_trace,
                        (callback_began, std::time::SystemTime::now()),
                        &url,
                        posted.attempts,
                        posted.status,
                        posted.delivered,
                    ));
                }
                if !posted.delivered {
                    tracing::error!(call_id = %call_id, callback = %url, attempts = posted.attempts, status = posted.status, "Callback not delivered.");
                }
                // The callback's outcome and the settle in one step.
                let (recorded, settled) = self
                    .ledger
                    .callback_and_settle(
                        delivery,
                        settlement,
                        &ledger_id,
                        (posted.attempts, posted.status, posted.delivered),
                    )
                    .await;
                ledger_failed(&ledger_id, "record_callback", recorded.as_ref().err());
                settled
            }
        };
        if exhausted {
            log_dead_letter(&call_id, &function, attempt, &outcome);
            self.metrics
                .dead_letters
                .with_label_values(&[function.as_str()])
                .inc();
        } else {
            // Debug, not info: every call's outcome is in the ledger (`courier calls`), and a
            // line per call was a measurable share of the worker's CPU (BENCHMARKS.md).
            tracing::debug!(call_id = %call_id, function = %function, status = outcome.status, attempt, "Queued call completed.");
        }
        if let Err(e) = settled {
            tracing::warn!(call_id = %call_id, error = %e, "Could not settle the delivery; it may be delivered again.");
        }
        self.metrics.processed.inc();
    }

    /// Ends the current attempt of call `id` in the ledger and settles `delivery`, in one step
    /// where the queue has one; a failed ledger write is logged and does not stop the settle.
    async fn finish_and_settle(
        &self,
        delivery: Delivery,
        settlement: Settlement,
        id: &str,
        parts: (&Arc<QueueRequest>, Finish, Option<KeptResult>),
    ) -> courier_queue::Result<()> {
        let (record, settled) = self
            .ledger
            .finish_and_settle(delivery, settlement, id, parts)
            .await;
        ledger_failed(id, "finish_attempt", record.as_ref().err());
        settled
    }

    /// Whether call `id`, which the ledger says has ended, has a callback that was never
    /// posted: the worker that ran it stopped between the final record and the callback.
    /// When the record cannot be read, a call with a callback counts as pending (a
    /// duplicate callback is better than a lost one).
    async fn callback_pending(
        &self,
        delivery: &Delivery,
        id: &str,
        request: &QueueRequest,
    ) -> bool {
        if request.callback_url.is_none() {
            return false;
        }
        match self.recorded(delivery, "get", self.ledger.get(id)).await {
            Some(Some(record)) => record
                .callback
                .is_some_and(|callback| callback.attempts == 0),
            Some(None) | None => true,
        }
    }

    /// Keeps `record` as a dead letter, then removes the delivery from the queue. When the
    /// letter cannot be stored, the delivery is left to come back after its lease rather than
    /// dropped.
    async fn give_up(&self, delivery: Delivery, record: &DeadLetterRecord) {
        if let Err(e) = keep_dead_letter(&*self.queue, record).await {
            tracing::error!(call_id = %record.call_id, error = %e, "Could not keep the dead letter; the call will be delivered again after its lease.");
            return;
        }
        self.settle_dead_letter(delivery, &record.call_id).await;
    }

    /// Removes a delivery whose dead letter is kept from the queue.
    async fn settle_dead_letter(&self, delivery: Delivery, call_id: &str) {
        if let Err(e) = delivery.dead_letter().await {
            tracing::warn!(call_id = %call_id, error = %e, "Could not settle the delivery; it may be delivered again.");
        }
        self.metrics.processed.inc();
    }

    /// Runs a ledger write (`what`, for the log) while keeping `delivery`'s lease alive.
    ///
    /// On the worker side the ledger is best effort: a call is never held up or lost for
    /// it. With the ledger off (`--ledger-retention 0`) the write is skipped silently; any
    /// other failure, or no answer within [`LEDGER_TIMEOUT`], is logged as a warning and the
    /// call carries on (`None`): the record then shows an earlier step, never a wrong one
    /// (an attempt that never recorded its end is marked abandoned by the next one).
    async fn recorded<T>(
        &self,
        delivery: &Delivery,
        what: &'static str,
        write: impl Future<Output = Result<T, LedgerError>>,
    ) -> Option<T> {
        match self
            .keeping_alive(delivery, tokio::time::timeout(LEDGER_TIMEOUT, write))
            .await
        {
            Ok(Ok(value)) => Some(value),
            Ok(Err(e)) if e.is_off() => None,
            Ok(Err(e)) => {
                tracing::warn!(call_id = %delivery.message.id, ledger = what, error = %e, "Ledger write failed; the call carries on without it.");
                None
            }
            Err(_) => {
                tracing::warn!(call_id = %delivery.message.id, ledger = what, timeout_ms = LEDGER_TIMEOUT.as_millis() as u64, "Ledger write timed out; the call carries on without it.");
                None
            }
        }
    }

    /// Runs `work` while keeping `delivery`'s lease alive.
    async fn keeping_alive<T>(&self, delivery: &Delivery, work: impl Future<Output = T>) -> T {
        // One timer on the stack, reset after each keep-alive: an `interval` costs a boxed
        // timer and an immediate first tick on every call, and almost every call ends before
        // its first keep-alive is due.
        let period = self.config.ack_wait / 3;
        let due = tokio::time::sleep(period);
        tokio::pin!(work, due);
        loop {
            tokio::select! {
                out = &mut work => return out,
                () = &mut due => {
                    if let Err(e) = delivery.keep_alive().await {
                        tracing::warn!(call_id = %delivery.message.id, error = %e, "Keep-alive failed.");
                    }
                    due.as_mut().reset(tokio::time::Instant::now() + period);
                }
            }
        }
    }
}

/// Logs a failed ledger write of call `id` (`what`, for the log); the ledger being off is not
/// a failure.
fn ledger_failed(id: &str, what: &'static str, error: Option<&LedgerError>) {
    if let Some(e) = error.filter(|e| !e.is_off()) {
        tracing::warn!(call_id = %id, ledger = what, error = %e, "Ledger write failed; the call carries on without it.");
    }
}

/// Mints the trace context of a call stored without one, as [`trace::ensure`] does before
/// each attempt, for the record the ledger rebuilds when the call has none. The ledger's key
/// is the message id; the trace is minted from the call id, which a replay keeps in its
/// request's `X-Call-Id`.
fn mint_trace(request: &mut QueueRequest, message_id: &str) {
    let call_id = request
        .header
        .get("X-Call-Id")
        .and_then(|v| v.first())
        .cloned()
        .unwrap_or_else(|| message_id.to_owned());
    trace::ensure(request, &call_id);
}

/// Settles `delivery` as `settlement`, without a ledger write.
async fn settle(delivery: Delivery, settlement: Settlement) -> courier_queue::Result<()> {
    match settlement {
        Settlement::Ack => delivery.ack().await,
        Settlement::RetryAfter(delay) => delivery.retry_after(delay).await,
        Settlement::DeadLetter => delivery.dead_letter().await,
    }
}

async fn keep_alive(parked: &HashMap<String, VecDeque<Job>>) {
    for job in parked.values().flatten() {
        let _ = job.delivery.keep_alive().await;
    }
}

/// How an attempt that gave `outcome` after `took` ended, for the ledger.
fn attempt_finish(outcome: &Outcome, took: Duration, then: Then) -> Finish {
    Finish {
        duration: took,
        status: outcome.status,
        error: outcome.error.clone(),
        then,
    }
}

/// The function's answer as the ledger keeps it (nothing when it never answered).
fn kept_result(outcome: &Outcome, max_bytes: usize) -> Option<KeptResult> {
    let status = outcome.status?;
    Some(KeptResult::capture(
        status,
        &outcome.headers,
        &outcome.body,
        max_bytes,
    ))
}

fn log_dead_letter(call_id: &str, function: &str, attempts: u64, outcome: &Outcome) {
    tracing::error!(
        call_id,
        function,
        attempts,
        status = outcome.status,
        error = outcome.error.as_deref().unwrap_or(""),
        "Queued call failed after its last attempt; dead-lettered."
    );
}

/// A number in [0, 1) for backoff jitter.
fn jitter() -> f64 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(b)) / (f64::from(u32::MAX) + 1.0)
}
