//! The worker loop: fetch deliveries while there is room, run each call in its own task under
//! a global and a per-function cap, park deliveries of functions at their cap (kept alive),
//! and on shutdown stop fetching, let running calls finish within the drain deadline and hand
//! back everything else.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use courier_core::queue::{DeadLetterRecord, QueueRequest};
use courier_queue::{Delivery, WorkQueue};
use futures_util::FutureExt as _;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::callback::{self, CallbackInfo};
use crate::config::WorkerConfig;
use crate::invoke::{self, Outcome};
use crate::metrics::WorkerMetrics;
use crate::policies::Policies;
use courier_invoke::{FunctionCaller, GatewayHttp, dead_letter_record, keep_dead_letter};

/// How often `queue_worker_pending_messages` is refreshed.
const PENDING_REFRESH: Duration = Duration::from_secs(1);

/// How long one fetch waits for work before the loop looks around again.
const FETCH_WAIT: Duration = Duration::from_millis(500);

/// Consumes one WorkQueue.
#[derive(Debug)]
pub struct Worker {
    queue: Arc<dyn WorkQueue>,
    config: WorkerConfig,
    client: reqwest::Client,
    caller: Arc<dyn FunctionCaller>,
    policies: Policies,
    metrics: WorkerMetrics,
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
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(config.max_inflight.max(1))
            .build()?;
        let caller =
            caller.unwrap_or_else(|| Arc::new(GatewayHttp::new(client.clone(), &config.gateway)));
        Ok(Arc::new(Self {
            queue,
            config,
            client,
            caller,
            policies: Policies::default(),
            metrics,
        }))
    }

    /// Runs until `shutdown`, then drains.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let (done, mut done_rx) = mpsc::channel::<String>(self.config.max_inflight.max(1) * 2);
        let mut slots = Slots {
            parked: HashMap::new(),
            per_function: HashMap::new(),
            global: Arc::new(Semaphore::new(self.config.max_inflight.max(1))),
            tracker: TaskTracker::new(),
            done,
            abandon: CancellationToken::new(),
        };
        let mut keep_parked_alive = tokio::time::interval(self.config.ack_wait / 3);
        let mut last_pending = Instant::now() - PENDING_REFRESH;
        loop {
            // Start parked jobs whose function has room again.
            while let Ok(function) = done_rx.try_recv() {
                self.start_parked(&function, &mut slots);
            }
            let parked_total: usize = slots.parked.values().map(VecDeque::len).sum();
            let room = slots
                .global
                .available_permits()
                .min(self.config.max_inflight.saturating_sub(parked_total));
            if room == 0 {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    Some(function) = done_rx.recv() => {
                        self.start_parked(&function, &mut slots);
                    }
                    _ = keep_parked_alive.tick() => keep_alive(&slots.parked).await,
                }
                continue;
            }
            if shutdown.is_cancelled() {
                break;
            }
            if keep_parked_alive.tick().now_or_never().is_some() {
                keep_alive(&slots.parked).await;
            }
            // Never abandoned half-way: a fetch dropped after the queue leased its messages
            // would leave them leased to nobody until their lease ran out. It returns within
            // FETCH_WAIT; what it brings after a shutdown signal is handed back below.
            let batch = self.queue.fetch(room, FETCH_WAIT).await;
            let deliveries = match batch {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "Fetching from the queue failed; retrying.");
                    tokio::select! {
                        () = shutdown.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            for delivery in deliveries {
                let request = match serde_json::from_slice::<QueueRequest>(
                    &delivery.message.payload,
                ) {
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
                    .push_back(Job { delivery, request });
                self.start_parked(&function, &mut slots);
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
                let function = job.request.function.clone();
                worker
                    .process(job, abandon, (function_permit, global_permit))
                    .await;
                let _ = done.send(function).await;
            });
        }
    }

    /// Runs one call to its outcome and settles the delivery.
    async fn process(
        &self,
        job: Job,
        abandon: CancellationToken,
        _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
    ) {
        let Job { delivery, request } = job;
        let started = Instant::now();
        let call_id = request
            .header
            .get("X-Call-Id")
            .and_then(|v| v.first())
            .cloned()
            .unwrap_or_else(|| delivery.message.id.clone());
        let function = request.function.clone();
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
        let outcome = tokio::select! {
            outcome = self.keeping_alive(&delivery, invoke::invoke(self.caller.as_ref(), &self.config, &request)) => outcome,
            () = abandon.cancelled() => {
                gauge.dec();
                let _ = delivery.retry_after(Duration::ZERO).await;
                return;
            }
        };
        gauge.dec();
        if policy.should_retry(outcome.status, attempt) {
            let delay = policy.delay(attempt, outcome.retry_after, jitter());
            tracing::info!(call_id = %call_id, function = %function, attempt, status = outcome.status, delay_ms = delay.as_millis() as u64, "Call failed; retrying later.");
            self.metrics
                .retries
                .with_label_values(&[function.as_str()])
                .inc();
            if let Err(e) = delivery.retry_after(delay).await {
                tracing::warn!(call_id = %call_id, error = %e, "Could not schedule the retry; the queue will redeliver after the lease.");
            }
            return;
        }
        let exhausted = outcome.status.is_none_or(|s| policy.codes.contains(&s));
        if let Some(url) = &request.callback_url {
            let url = url.to_url_string();
            let info = CallbackInfo {
                url: &url,
                call_id: &call_id,
                function: &function,
                duration: started.elapsed(),
                attempts: attempt,
                max_attempts: policy.attempts,
            };
            let posted = self
                .keeping_alive(
                    &delivery,
                    callback::post(&self.client, &self.config, &info, &outcome),
                )
                .await;
            let result = if posted { "delivered" } else { "failed" };
            self.metrics.callbacks.with_label_values(&[result]).inc();
            if !posted {
                tracing::error!(call_id = %call_id, callback = %url, "Callback not delivered after every attempt.");
            }
        }
        if exhausted {
            log_dead_letter(&call_id, &function, attempt, &outcome);
            self.metrics
                .dead_letters
                .with_label_values(&[function.as_str()])
                .inc();
            let record = dead_letter_record(
                &call_id,
                &function,
                attempt,
                outcome.status,
                outcome.error.clone().unwrap_or_default(),
                Some(request),
            );
            self.give_up(delivery, &record).await;
            return;
        }
        tracing::info!(call_id = %call_id, function = %function, status = outcome.status, attempt, "Queued call completed.");
        if let Err(e) = delivery.ack().await {
            tracing::warn!(call_id = %call_id, error = %e, "Could not settle the delivery; it may be delivered again.");
        }
        self.metrics.processed.inc();
    }

    /// Keeps `record` as a dead letter, then removes the delivery from the queue. When the
    /// letter cannot be stored, the delivery is left to come back after its lease rather than
    /// dropped.
    async fn give_up(&self, delivery: Delivery, record: &DeadLetterRecord) {
        if let Err(e) = keep_dead_letter(&*self.queue, record).await {
            tracing::error!(call_id = %record.call_id, error = %e, "Could not keep the dead letter; the call will be delivered again after its lease.");
            return;
        }
        if let Err(e) = delivery.dead_letter().await {
            tracing::warn!(call_id = %record.call_id, error = %e, "Could not settle the delivery; it may be delivered again.");
        }
        self.metrics.processed.inc();
    }

    /// Runs `work` while keeping `delivery`'s lease alive.
    async fn keeping_alive<T>(&self, delivery: &Delivery, work: impl Future<Output = T>) -> T {
        let mut tick = tokio::time::interval(self.config.ack_wait / 3);
        tick.tick().await; // the first tick is immediate
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return out,
                _ = tick.tick() => {
                    if let Err(e) = delivery.keep_alive().await {
                        tracing::warn!(call_id = %delivery.message.id, error = %e, "Keep-alive failed.");
                    }
                }
            }
        }
    }
}

async fn keep_alive(parked: &HashMap<String, VecDeque<Job>>) {
    for job in parked.values().flatten() {
        let _ = job.delivery.keep_alive().await;
    }
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
