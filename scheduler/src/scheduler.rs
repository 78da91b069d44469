//! The timer loop: one task holds every schedule in a time-ordered set, sleeps until the
//! earliest fire (`tokio::time::sleep_until`, never a per-second tick), follows the function
//! catalog, and hands due fires to dispatch tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::FunctionStatus;
use courier_invoke::{Call, FunctionList, Invoker};
use prometheus::{IntCounter, Registry};
use tokio::sync::{Semaphore, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::Clock;
use crate::dispatch::{Dispatcher, Fire, Gate, InFlight, Slot, fire_call};
use crate::error::{Error, Result};
use crate::metrics::{Metrics, SkipReason};
use crate::policy::{
    CONCURRENCY_ANNOTATION, Concurrency, MISSED_ANNOTATION, Missed, SCHEDULE_ANNOTATION,
    ScheduleSpec, has_cron_topic,
};
use crate::state::{self, State, StateStore};

/// Fires due together are handed to one dispatch task per this many.
const DISPATCH_BATCH: usize = 64;

/// How long before a fire time the loop wakes to make its fires ready (overlap and dispatch
/// checks, the batches), so that at the instant itself they only need to be handed out.
const PREPARE_LEAD: Duration = Duration::from_millis(50);

/// [`PREPARE_LEAD`] on the wall clock.
fn prepare_lead() -> chrono::Duration {
    chrono::Duration::from_std(PREPARE_LEAD).unwrap_or_default()
}

/// Missed fires counted one by one before the rest are jumped over (a per-second schedule
/// down for a day has 86,400).
const MAX_MISSED_WALK: u64 = 100_000;

/// How fires reach functions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DispatchMode {
    /// Store each fire in the work queue (`Invoker::enqueue`): durable, retried by the queue
    /// worker, and stored once across scheduler replicas thanks to the derived call id.
    #[default]
    Queue,
    /// Call the function now (`Invoker::call`) and wait for its answer; a failed call is kept
    /// as a dead letter.
    Sync,
}

impl FromStr for DispatchMode {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "queue" => Ok(Self::Queue),
            "sync" => Ok(Self::Sync),
            other => Err(format!("{other:?} is not queue or sync")),
        }
    }
}

/// How the scheduler runs.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How fires reach functions (default: through the queue).
    pub mode: DispatchMode,
    /// The state file remembering the last fire handled per schedule, e.g.
    /// `<data-dir>/scheduler/state.json`. `None`: nothing is remembered, so no fire is ever
    /// recognised as missed across a restart.
    pub state_path: Option<PathBuf>,
    /// Sync mode: how long one call may take (default 60 s).
    pub call_timeout: Duration,
    /// How many calls to the invoker may run at once (default 1,024): a synchronous call per
    /// fire in sync mode, a batch of up to 64 fires in queue mode; more wait their turn.
    pub max_concurrent_dispatches: usize,
    /// How many dispatches may exist at once, running or waiting (default 4,096); a fire
    /// beyond that is skipped with reason `error`.
    pub max_pending_dispatches: usize,
    /// A fire handled more than this after its time counts as missed (the `missed` policy
    /// decides); sooner, it fires late. Covers restarts and stalls (default 5 s).
    pub missed_after: Duration,
    /// How soon after a fire the state file is rewritten (default 1 s); all fires within that
    /// time share one write.
    pub state_flush_interval: Duration,
    /// How long shutdown waits for dispatches in flight before cancelling them (default 5 s).
    pub drain_timeout: Duration,
    /// Where the time comes from (default: the system clock).
    pub clock: Clock,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            mode: DispatchMode::Queue,
            state_path: None,
            call_timeout: Duration::from_secs(60),
            max_concurrent_dispatches: 1024,
            max_pending_dispatches: 4096,
            missed_after: Duration::from_secs(5),
            state_flush_interval: Duration::from_secs(1),
            drain_timeout: Duration::from_secs(5),
            clock: Clock::system(),
        }
    }
}

/// Runs the scheduler until `shutdown`: follows `catalog` (the deployed functions), fires
/// scheduled functions through `invoker`, reports on `registry`. Returns an error only when it
/// cannot start (state file unusable, metrics already registered).
pub async fn run(
    config: SchedulerConfig,
    mut catalog: watch::Receiver<FunctionList>,
    invoker: Arc<dyn Invoker>,
    registry: &Registry,
    shutdown: CancellationToken,
) -> Result<()> {
    let metrics = Metrics::register(registry)?;
    let store = config.state_path.clone().map(StateStore::new);
    let state = match &store {
        Some(store) => {
            store.prepare()?;
            match store.load() {
                Ok(state) => state,
                Err(e @ Error::StateCorrupt { .. }) => {
                    tracing::warn!(error = %e, "Ignoring the scheduler state; no missed fires will be caught up.");
                    State::default()
                }
                Err(e) => return Err(e),
            }
        }
        None => State::default(),
    };
    let writer = store.map(StateWriter::start);
    let mut timer = Timer::new(config, invoker, metrics, state, writer.is_some());
    let functions = catalog.borrow_and_update().clone();
    timer.follow(&functions);
    tracing::info!(
        schedules = timer.entries.len(),
        mode = ?timer.config.mode,
        "Scheduler started."
    );
    let mut catalog_open = true;
    loop {
        // Let the dispatch tasks just spawned run before computing next fire times, and
        // compute them a batch at a time so a burst's hand-over never waits behind them.
        while !timer.handled.is_empty() {
            tokio::task::yield_now().await;
            timer.reschedule_handled(DISPATCH_BATCH);
        }
        let wake = timer.wake_at();
        let flush = timer.flush_at;
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            () = sleep_until(wake) => {
                if let Some(due) = timer.due_soon() {
                    // Everything due at `due` is made ready ahead, batch by batch (each batch
                    // task starts with the overlap checks that ask the queue), yielding in
                    // between; the batches go out together at the instant itself.
                    let (open, gate) = watch::channel(false);
                    while timer.prepare(due, &gate) {
                        tokio::task::yield_now().await;
                    }
                    timer.clock.wait_until(due).await;
                    open.send_replace(true);
                }
            }
            changed = catalog.changed(), if catalog_open => match changed {
                Ok(()) => {
                    let functions = catalog.borrow_and_update().clone();
                    timer.follow(&functions);
                }
                Err(_) => {
                    tracing::warn!("The function catalog stopped; keeping the schedules known so far.");
                    catalog_open = false;
                }
            },
            () = sleep_until(flush) => {
                if let Some(writer) = &writer {
                    timer.flush(writer);
                }
            }
        }
    }
    timer.reschedule_handled(usize::MAX);
    timer.drain().await;
    if let Some(writer) = writer {
        writer.finish(timer.state).await;
    }
    tracing::info!("Scheduler stopped.");
    Ok(())
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The annotations that make up a schedule: a change to any of them replaces the schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    schedule: String,
    concurrency: Option<String>,
    missed: Option<String>,
}

impl Fingerprint {
    fn of(annotations: &BTreeMap<String, String>) -> Option<Self> {
        if !has_cron_topic(annotations) {
            return None;
        }
        Some(Self {
            schedule: annotations.get(SCHEDULE_ANNOTATION)?.clone(),
            concurrency: annotations.get(CONCURRENCY_ANNOTATION).cloned(),
            missed: annotations.get(MISSED_ANNOTATION).cloned(),
        })
    }

    /// Whether `annotations` still say the same, without copying them.
    fn matches(&self, annotations: &BTreeMap<String, String>) -> bool {
        has_cron_topic(annotations)
            && annotations.get(SCHEDULE_ANNOTATION) == Some(&self.schedule)
            && annotations.get(CONCURRENCY_ANNOTATION) == self.concurrency.as_ref()
            && annotations.get(MISSED_ANNOTATION) == self.missed.as_ref()
    }
}

/// One scheduled function.
#[derive(Debug)]
struct Entry {
    function: Arc<str>,
    namespace: Arc<str>,
    fingerprint: Fingerprint,
    spec: ScheduleSpec,
    /// Its place in the time-ordered set (`None`: it never fires again).
    next: Option<DateTime<Utc>>,
    slot: Arc<Slot>,
    /// Its `scheduler_fires_total` series.
    fires: IntCounter,
    /// The call of the fire at `next`, built ahead so that a fire costs little at its instant.
    prepared: Option<Call>,
}

impl Entry {
    fn prepare(&mut self) {
        self.prepared = self
            .next
            .map(|at| fire_call(&self.function, &self.namespace, at));
    }
}

/// A fire the loop has dealt with, waiting for its schedule's next time.
struct Handled {
    key: Arc<str>,
    /// The fire time handled (the latest one, for a run of missed fires).
    last: DateTime<Utc>,
    /// The next fire time when already known (`None`: compute it from `last`).
    next: Option<Option<DateTime<Utc>>>,
}

/// The loop's state: every schedule, ordered by next fire.
struct Timer {
    config: SchedulerConfig,
    clock: Clock,
    entries: HashMap<Arc<str>, Entry>,
    /// (next fire, `name.namespace`), earliest first.
    queue: BTreeSet<(DateTime<Utc>, Arc<str>)>,
    /// Invalid schedules already reported, so each is logged once.
    rejected: HashMap<Arc<str>, Fingerprint>,
    state: State,
    persist: bool,
    flush_at: Option<Instant>,
    dispatcher: Arc<Dispatcher>,
    tracker: TaskTracker,
    /// Fires handled whose schedules wait to be put back in the set.
    handled: Vec<Handled>,
    /// Fires due together, waiting to be handed to a dispatch task.
    batch: Vec<Fire>,
}

impl Timer {
    fn new(
        config: SchedulerConfig,
        invoker: Arc<dyn Invoker>,
        metrics: Metrics,
        state: State,
        persist: bool,
    ) -> Self {
        let dispatcher = Arc::new(Dispatcher {
            invoker,
            metrics,
            permits: Semaphore::new(config.max_concurrent_dispatches.max(1)),
            clock: config.clock,
            mode: config.mode,
            call_timeout: config.call_timeout,
            cancel: CancellationToken::new(),
            in_flight: Arc::default(),
        });
        Self {
            clock: config.clock,
            config,
            entries: HashMap::new(),
            queue: BTreeSet::new(),
            rejected: HashMap::new(),
            state,
            persist,
            flush_at: None,
            dispatcher,
            tracker: TaskTracker::new(),
            handled: Vec::new(),
            batch: Vec::new(),
        }
    }

    /// When the loop wakes next: [`PREPARE_LEAD`] before the earliest fire.
    fn wake_at(&self) -> Option<Instant> {
        self.queue
            .first()
            .map(|(at, _)| self.clock.deadline(*at - prepare_lead()))
    }

    /// The instant to hand out next when it is at most [`PREPARE_LEAD`] away (or past); `None`
    /// when the loop woke early (the sleep is capped) and should sleep again.
    fn due_soon(&self) -> Option<DateTime<Utc>> {
        let (first, _) = self.queue.first()?;
        let now = self.clock.now();
        (*first - prepare_lead() <= now).then(|| (*first).max(now))
    }

    /// Brings the schedules in line with the function list; only new, changed and removed
    /// schedules are recomputed.
    fn follow(&mut self, functions: &[FunctionStatus]) {
        let mut seen: HashSet<Arc<str>> = HashSet::with_capacity(self.entries.len());
        for f in functions {
            let key: Arc<str> = Arc::from(format!("{}.{}", f.name, f.namespace));
            if let Some(entry) = self.entries.get(&key)
                && entry.fingerprint.matches(&f.annotations)
            {
                seen.insert(key);
                continue;
            }
            if self
                .rejected
                .get(&key)
                .is_some_and(|fp| fp.matches(&f.annotations))
            {
                seen.insert(key);
                continue;
            }
            let Some(fingerprint) = Fingerprint::of(&f.annotations) else {
                continue;
            };
            seen.insert(key.clone());
            match ScheduleSpec::from_annotations(&f.annotations) {
                Some(Ok(spec)) => {
                    self.rejected.remove(&key);
                    self.upsert(key, f, fingerprint, spec);
                }
                Some(Err(error)) => {
                    tracing::warn!(function = %key, error, "Schedule ignored: invalid annotation.");
                    self.unschedule(&key, true);
                    self.rejected.insert(key, fingerprint);
                }
                None => {}
            }
        }
        let gone: Vec<Arc<str>> = self
            .entries
            .keys()
            .filter(|k| !seen.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            tracing::info!(function = %key, "Schedule removed.");
            self.unschedule(&key, true);
            if self.state.schedules.remove(&*key).is_some() {
                self.mark_dirty();
            }
        }
        self.rejected.retain(|k, _| seen.contains(k));
    }

    fn upsert(
        &mut self,
        key: Arc<str>,
        f: &FunctionStatus,
        fingerprint: Fingerprint,
        spec: ScheduleSpec,
    ) {
        let slot = match self.entries.get(&key) {
            Some(old) => old.slot.clone(),
            None => Arc::default(),
        };
        self.unschedule(&key, false);
        let fires = self.dispatcher.metrics.fire_counter(&key);
        let now = self.clock.now();
        // Resume after the last fire handled for this very schedule (so fires due while the
        // scheduler was down are seen, and a policy edit loses nothing); a new or edited
        // schedule starts from now.
        let resume = self
            .state
            .schedules
            .get(&*key)
            .filter(|h| h.schedule == spec.expression.source)
            .map(|h| h.last.min(now))
            .unwrap_or(now);
        let next = spec.expression.next_after(resume);
        tracing::info!(
            function = %key,
            schedule = %spec.expression.source,
            timezone = spec.expression.zone.name(),
            concurrency = %spec.concurrency,
            missed = %spec.missed,
            next = ?next.map(crate::view::format_time),
            "Schedule set."
        );
        if let Some(at) = next {
            self.queue.insert((at, key.clone()));
        }
        self.entries.insert(
            key,
            Entry {
                function: Arc::from(f.name.as_str()),
                namespace: Arc::from(f.namespace.as_str()),
                fingerprint,
                spec,
                next,
                slot,
                fires,
                prepared: next.map(|at| fire_call(&f.name, &f.namespace, at)),
            },
        );
    }

    /// Takes a schedule out of the set; `forget` also drops its metric series (a removed
    /// schedule, not an edited one).
    fn unschedule(&mut self, key: &Arc<str>, forget: bool) {
        if let Some(entry) = self.entries.remove(key) {
            if let Some(at) = entry.next {
                self.queue.remove(&(at, key.clone()));
            }
            if forget {
                self.dispatcher.metrics.forget(key);
            }
        }
    }

    /// Makes fires due by `due` ready, up to one batch ([`DISPATCH_BATCH`]) handed to a
    /// dispatch task that waits for `gate`; true when more are due. Their schedules' next
    /// times are computed later, after the loop has yielded to the dispatch tasks
    /// ([`Timer::reschedule_handled`]), so a burst of fires due at the same instant (thousands
    /// of schedules on the same second) goes out at once.
    fn prepare(&mut self, due: DateTime<Utc>, gate: &Gate) -> bool {
        let now = self.clock.now();
        let mut more = false;
        while let Some((at, key)) = self.queue.pop_first() {
            if at > due {
                self.queue.insert((at, key));
                break;
            }
            if let Some(done) = self.handle(key, at, now) {
                self.handled.push(done);
            }
            if self.batch.len() >= DISPATCH_BATCH {
                more = self.queue.first().is_some_and(|(next, _)| *next <= due);
                break;
            }
        }
        if !self.batch.is_empty() {
            let fires = std::mem::take(&mut self.batch);
            self.tracker
                .spawn(self.dispatcher.clone().dispatch_batch(fires, gate.clone()));
        }
        more
    }

    /// Puts the schedules of up to `count` fires just handled back in the set.
    fn reschedule_handled(&mut self, count: usize) {
        let keep = self.handled.len().saturating_sub(count);
        let handled: Vec<Handled> = self.handled.drain(keep..).collect();
        for done in handled {
            self.reschedule(done);
        }
    }

    /// One due fire: fire it (late is fine up to `missed_after`), or apply the missed policy
    /// to the run of fires that fell due too long ago.
    fn handle(&mut self, key: Arc<str>, at: DateTime<Utc>, now: DateTime<Utc>) -> Option<Handled> {
        let horizon = now - self.config.missed_after;
        let entry = self.entries.get_mut(&key)?;
        if at >= horizon {
            dispatch_fire(
                &self.dispatcher,
                &mut self.batch,
                &self.config,
                &key,
                entry,
                at,
                false,
            );
            return Some(Handled {
                key,
                last: at,
                next: None,
            });
        }
        let mut count = 0u64;
        let mut latest = at;
        let mut cursor = Some(at);
        while let Some(t) = cursor {
            if t >= horizon {
                break;
            }
            count += 1;
            latest = t;
            if count >= MAX_MISSED_WALK {
                cursor = entry.spec.expression.next_after(horizon);
                break;
            }
            cursor = entry.spec.expression.next_after(t);
        }
        let metrics = &self.dispatcher.metrics;
        match entry.spec.missed {
            Missed::Skip => metrics.skipped_many(
                &key,
                at,
                latest,
                count,
                SkipReason::Missed,
                "due while the scheduler was not running",
            ),
            Missed::Once => {
                metrics.skipped_many(
                    &key,
                    at,
                    latest,
                    count - 1,
                    SkipReason::Missed,
                    "due while the scheduler was not running; one catch-up run instead",
                );
                dispatch_fire(
                    &self.dispatcher,
                    &mut self.batch,
                    &self.config,
                    &key,
                    entry,
                    latest,
                    true,
                );
            }
        }
        Some(Handled {
            key,
            last: latest,
            next: Some(cursor),
        })
    }

    /// Puts a handled schedule back in the set at its next fire time, and remembers the fire.
    fn reschedule(&mut self, done: Handled) {
        let Handled { key, last, next } = done;
        let Some(entry) = self.entries.get_mut(&key) else {
            return;
        };
        let next = next.unwrap_or_else(|| entry.spec.expression.next_after(last));
        entry.next = next;
        entry.prepare();
        match next {
            Some(next) => {
                self.queue.insert((next, key.clone()));
            }
            None => tracing::info!(function = %key, "Schedule has no further fire times."),
        }
        if self.persist {
            let schedule = &entry.spec.expression.source;
            match self.state.schedules.get_mut(&*key) {
                Some(handled) if handled.schedule == *schedule => handled.last = last,
                _ => {
                    self.state.schedules.insert(
                        key.to_string(),
                        state::Handled {
                            schedule: schedule.clone(),
                            last,
                        },
                    );
                }
            }
            if self.flush_at.is_none() {
                self.flush_at = Some(Instant::now() + self.config.state_flush_interval);
            }
        }
    }

    fn mark_dirty(&mut self) {
        if self.persist && self.flush_at.is_none() {
            self.flush_at = Some(Instant::now() + self.config.state_flush_interval);
        }
    }

    fn flush(&mut self, writer: &StateWriter) {
        self.flush_at = None;
        writer.save(self.state.clone());
    }

    /// Stops handing out fires: waits for dispatches in flight up to the drain timeout, then
    /// cancels the rest.
    async fn drain(&mut self) {
        self.tracker.close();
        if tokio::time::timeout(self.config.drain_timeout, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                in_flight = self.dispatcher.in_flight(),
                "Scheduled fires still in flight at shutdown; cancelling them."
            );
            self.dispatcher.cancel.cancel();
            self.tracker.wait().await;
        }
        self.dispatcher.cancel.cancel();
    }
}

/// Adds a fire to the batch being collected, unless the overlap policy or the dispatch limit
/// skips it.
fn dispatch_fire(
    dispatcher: &Arc<Dispatcher>,
    batch: &mut Vec<Fire>,
    config: &SchedulerConfig,
    key: &Arc<str>,
    entry: &mut Entry,
    scheduled: DateTime<Utc>,
    catch_up: bool,
) {
    let forbid = entry.spec.concurrency == Concurrency::Forbid;
    if forbid && entry.slot.busy() {
        let detail = match config.mode {
            DispatchMode::Queue => "the previous fire is still being handed to the queue",
            DispatchMode::Sync => "the previous fire is still running",
        };
        dispatcher
            .metrics
            .skipped(key, scheduled, SkipReason::Overlap, detail);
        return;
    }
    if dispatcher.in_flight() >= config.max_pending_dispatches {
        dispatcher.metrics.skipped(
            key,
            scheduled,
            SkipReason::Error,
            "too many fires waiting to be handed over",
        );
        return;
    }
    // The prepared call is for the regular fire at `next`; a catch-up builds its own.
    let call = if catch_up {
        None
    } else {
        entry.prepared.take()
    };
    let fire = Fire {
        call,
        label: key.clone(),
        function: entry.function.clone(),
        namespace: entry.namespace.clone(),
        fires: entry.fires.clone(),
        scheduled,
        catch_up,
        forbid_overlap: forbid && config.mode == DispatchMode::Queue,
        in_flight: InFlight::enter(&entry.slot, &dispatcher.in_flight),
        ready: None,
    };
    batch.push(fire);
}

/// Writes state snapshots in the background, one at a time, the newest winning.
struct StateWriter {
    store: StateStore,
    latest: watch::Sender<Option<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl StateWriter {
    fn start(store: StateStore) -> Self {
        let (latest, mut rx) = watch::channel::<Option<State>>(None);
        let background = store.clone();
        let task = tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let Some(state) = rx.borrow_and_update().clone() else {
                    continue;
                };
                save(&background, state).await;
            }
        });
        Self {
            store,
            latest,
            task,
        }
    }

    fn save(&self, state: State) {
        self.latest.send_replace(Some(state));
    }

    /// Waits for the background writes, then writes the final state.
    async fn finish(self, state: State) {
        drop(self.latest);
        let _ = self.task.await;
        save(&self.store, state).await;
    }
}

async fn save(store: &StateStore, state: State) {
    let store = store.clone();
    match tokio::task::spawn_blocking(move || store.save(&state)).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "Cannot save the scheduler state."),
        Err(e) => tracing::warn!(error = %e, "Saving the scheduler state panicked."),
    }
}
