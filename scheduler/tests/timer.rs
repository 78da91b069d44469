//! The timer loop under tokio's paused clock, with a fake invoker that records every call: fires
//! land on their instants, catalog edits take effect, the overlap and missed-fire policies
//! hold, and call ids let the queue store each fire once.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use courier_core::FunctionStatus;
use courier_invoke::{Answer, Call, Enqueued, FunctionList, InvokeError, Invoker, ReadyCall};
use courier_scheduler::{Clock, DispatchMode, SchedulerConfig, State, StateStore, call_id};
use prometheus::Registry;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// The wall-clock time the tests start at: a quarter second past a whole second, so fires
/// are visibly on the second, not on the start.
fn start_time() -> DateTime<Utc> {
    at("2026-01-01T10:00:00.250Z")
}

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap_or_else(|e| panic!("{text}: {e}"))
        .to_utc()
}

/// One call the fake invoker saw.
#[derive(Debug, Clone)]
struct Seen {
    how: &'static str,
    function: String,
    scheduled: String,
    call_id: String,
    /// The wall-clock time it was handed over.
    at: DateTime<Utc>,
    topic: String,
    connector: String,
    body_len: usize,
}

/// Records calls; answers `is_outstanding` as told; stores each call id once like the queue.
struct FakeInvoker {
    clock: Clock,
    seen: Mutex<Vec<Seen>>,
    stored: Mutex<HashSet<String>>,
    outstanding: AtomicBool,
    call_duration: Duration,
    /// When each call was made ready ahead (`Invoker::ready`), by call id.
    readied: Mutex<Vec<(String, DateTime<Utc>)>>,
    /// Make `ready` fail, as an invoker that cannot encode the call would.
    refuse_ready: AtomicBool,
}

impl FakeInvoker {
    fn new(clock: Clock) -> Arc<Self> {
        Self::with_call_duration(clock, Duration::ZERO)
    }

    fn with_call_duration(clock: Clock, call_duration: Duration) -> Arc<Self> {
        Arc::new(Self {
            clock,
            seen: Mutex::default(),
            stored: Mutex::default(),
            outstanding: AtomicBool::new(false),
            call_duration,
            readied: Mutex::default(),
            refuse_ready: AtomicBool::new(false),
        })
    }

    fn record(&self, how: &'static str, call: &Call) {
        let header = |name: &str| {
            call.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        self.seen.lock().unwrap().push(Seen {
            how,
            function: call.function.clone(),
            scheduled: header("x-scheduled-time"),
            call_id: call.call_id.clone().unwrap_or_default(),
            at: self.clock.now(),
            topic: header("x-topic"),
            connector: header("x-connector"),
            body_len: call.body.len(),
        });
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    fn scheduled_times(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.scheduled).collect()
    }
}

#[async_trait::async_trait]
impl Invoker for FakeInvoker {
    async fn call(&self, call: Call, _timeout: Duration) -> Result<Answer, InvokeError> {
        self.record("call", &call);
        tokio::time::sleep(self.call_duration).await;
        Ok(Answer {
            status: 200,
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        })
    }

    async fn enqueue(&self, call: Call) -> Result<Enqueued, InvokeError> {
        self.record("enqueue", &call);
        let call_id = call.call_id.clone().unwrap_or_default();
        let duplicate = !self.stored.lock().unwrap().insert(call_id.clone());
        Ok(Enqueued {
            call_id,
            duplicate,
            seq: Some(1),
        })
    }

    fn ready(&self, call: Call) -> Result<ReadyCall, InvokeError> {
        if self.refuse_ready.load(Ordering::SeqCst) {
            return Err(InvokeError::Invalid("cannot encode".to_owned()));
        }
        self.readied
            .lock()
            .unwrap()
            .push((call.call_id.clone().unwrap_or_default(), self.clock.now()));
        Ok(ReadyCall::new(call))
    }

    async fn is_outstanding(&self, _enqueued: &Enqueued) -> Result<bool, InvokeError> {
        Ok(self.outstanding.load(Ordering::SeqCst))
    }

    async fn dead_letter(
        &self,
        _call: &Call,
        _attempts: u64,
        _last_status: Option<u16>,
        _error: &str,
    ) -> Result<(), InvokeError> {
        Ok(())
    }
}

fn scheduled_function(name: &str, schedule: &str, extra: &[(&str, &str)]) -> FunctionStatus {
    let mut annotations = BTreeMap::from([
        ("topic".to_owned(), "cron-function".to_owned()),
        ("schedule".to_owned(), schedule.to_owned()),
    ]);
    for (k, v) in extra {
        annotations.insert((*k).to_owned(), (*v).to_owned());
    }
    FunctionStatus {
        name: name.to_owned(),
        namespace: "openfaas-fn".to_owned(),
        annotations,
        ..FunctionStatus::default()
    }
}

/// A running scheduler and what it talks to.
struct Harness {
    catalog: watch::Sender<FunctionList>,
    invoker: Arc<FakeInvoker>,
    registry: Registry,
    shutdown: CancellationToken,
    task: JoinHandle<courier_scheduler::Result<()>>,
}

impl Harness {
    fn start(
        functions: Vec<FunctionStatus>,
        config: SchedulerConfig,
        invoker: Arc<FakeInvoker>,
    ) -> Self {
        let (catalog, rx) = watch::channel(Arc::new(functions));
        let registry = Registry::new();
        let shutdown = CancellationToken::new();
        let task = {
            let registry = registry.clone();
            let invoker: Arc<dyn Invoker> = invoker.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                courier_scheduler::run(config, rx, invoker, &registry, shutdown).await
            })
        };
        Self {
            catalog,
            invoker,
            registry,
            shutdown,
            task,
        }
    }

    fn deploy(&self, functions: Vec<FunctionStatus>) {
        self.catalog.send_replace(Arc::new(functions));
    }

    async fn stop(self) -> Arc<FakeInvoker> {
        self.shutdown.cancel();
        self.task
            .await
            .expect("scheduler task")
            .expect("scheduler stops cleanly");
        self.invoker
    }

    fn counter(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric(&self.registry, name, labels)
    }
}

fn metric(registry: &Registry, name: &str, labels: &[(&str, &str)]) -> f64 {
    courier_test_support::metrics::sample(registry, name, labels).unwrap_or(0.0)
}

fn config(clock: Clock) -> SchedulerConfig {
    SchedulerConfig {
        clock,
        ..SchedulerConfig::default()
    }
}

async fn pass(duration: Duration) {
    tokio::time::sleep(duration).await;
}

#[tokio::test(start_paused = true)]
async fn fires_are_made_ready_ahead_and_land_on_their_instants_with_the_cron_headers() {
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::new(clock);
    let harness = Harness::start(
        vec![scheduled_function("tick", "*/2 * * * * *", &[])],
        config(clock),
        invoker,
    );
    pass(Duration::from_millis(5_500)).await;
    let invoker = harness.stop().await;
    let seen = invoker.seen();
    assert_eq!(
        invoker.scheduled_times(),
        ["2026-01-01T10:00:02Z", "2026-01-01T10:00:04Z"]
    );
    for s in &seen {
        assert_eq!(s.how, "enqueue");
        assert_eq!(s.function, "tick.openfaas-fn");
        assert_eq!(s.topic, "cron-function");
        assert_eq!(s.connector, "courier-scheduler");
        assert_eq!(s.body_len, 0);
        let late = s.at - at(&s.scheduled);
        assert!(
            late >= chrono::TimeDelta::zero() && late <= chrono::TimeDelta::milliseconds(1),
            "{s:?} handed over {late} after its time"
        );
    }
    // Each call was made ready (encoded) before its instant, within the 50 ms lead.
    let readied = invoker.readied.lock().unwrap().clone();
    assert_eq!(readied.len(), seen.len(), "{readied:?}");
    for (s, (id, when)) in seen.iter().zip(&readied) {
        assert_eq!(&s.call_id, id);
        let ahead = at(&s.scheduled) - *when;
        assert!(
            ahead > chrono::TimeDelta::zero() && ahead <= chrono::TimeDelta::milliseconds(50),
            "made ready {ahead} before its time"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_that_cannot_be_made_ready_is_a_failed_fire_not_a_silent_drop() {
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::new(clock);
    invoker.refuse_ready.store(true, Ordering::SeqCst);
    let harness = Harness::start(
        vec![scheduled_function("tick", "* * * * * *", &[])],
        config(clock),
        invoker.clone(),
    );
    pass(Duration::from_millis(2_000)).await; // :01 and :02
    let error = [("function_name", "tick.openfaas-fn"), ("reason", "error")];
    assert_eq!(harness.counter("scheduler_skips_total", &error), 2.0);
    invoker.refuse_ready.store(false, Ordering::SeqCst);
    pass(Duration::from_millis(1_000)).await; // :03 goes out
    let invoker = harness.stop().await;
    assert_eq!(invoker.scheduled_times(), ["2026-01-01T10:00:03Z"]);
}

#[tokio::test(start_paused = true)]
async fn fires_count_and_lateness_is_observed() {
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function("tick", "* * * * * *", &[])],
        config(clock),
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(3_500)).await;
    let labels = [("function_name", "tick.openfaas-fn")];
    assert_eq!(harness.counter("scheduler_fires_total", &labels), 3.0);
    assert_eq!(harness.counter("scheduler_lateness_seconds", &[]), 3.0);
    harness.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_catalog_update_takes_effect_within_a_second() {
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function("tick", "0 0 * * * *", &[])],
        config(clock),
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(250)).await; // 10:00:00.500
    harness.deploy(vec![scheduled_function("tick", "* * * * * *", &[])]);
    pass(Duration::from_millis(1_000)).await; // 10:00:01.500
    let invoker = harness.stop().await;
    assert_eq!(invoker.scheduled_times(), ["2026-01-01T10:00:01Z"]);
}

#[tokio::test(start_paused = true)]
async fn a_new_function_is_picked_up_and_others_are_left_alone() {
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function("slow", "*/2 * * * * *", &[])],
        config(clock),
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(1_000)).await; // 10:00:01.250
    harness.deploy(vec![
        scheduled_function("slow", "*/2 * * * * *", &[]),
        scheduled_function("fast", "* * * * * *", &[]),
    ]);
    pass(Duration::from_millis(2_000)).await; // 10:00:03.250
    let invoker = harness.stop().await;
    let mut fires: Vec<(String, String)> = invoker
        .seen()
        .into_iter()
        .map(|s| (s.function, s.scheduled))
        .collect();
    fires.sort();
    assert_eq!(
        fires,
        [
            (
                "fast.openfaas-fn".to_owned(),
                "2026-01-01T10:00:02Z".to_owned()
            ),
            (
                "fast.openfaas-fn".to_owned(),
                "2026-01-01T10:00:03Z".to_owned()
            ),
            (
                "slow.openfaas-fn".to_owned(),
                "2026-01-01T10:00:02Z".to_owned()
            ),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn removing_the_function_stops_its_fires() {
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function("tick", "* * * * * *", &[])],
        config(clock),
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(2_000)).await; // 10:00:02.250: fired at :01 and :02
    harness.deploy(vec![]);
    pass(Duration::from_millis(5_000)).await;
    let labels = [("function_name", "tick.openfaas-fn")];
    assert_eq!(
        harness.counter("scheduler_fires_total", &labels),
        0.0,
        "a removed schedule's series are dropped"
    );
    let invoker = harness.stop().await;
    assert_eq!(
        invoker.scheduled_times(),
        ["2026-01-01T10:00:01Z", "2026-01-01T10:00:02Z"]
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_cron_topic_stops_its_fires() {
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function("tick", "* * * * * *", &[])],
        config(clock),
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(1_000)).await;
    let mut unscheduled = scheduled_function("tick", "* * * * * *", &[]);
    unscheduled
        .annotations
        .insert("topic".to_owned(), "orders".to_owned());
    harness.deploy(vec![unscheduled]);
    pass(Duration::from_millis(3_000)).await;
    let invoker = harness.stop().await;
    assert_eq!(invoker.scheduled_times(), ["2026-01-01T10:00:01Z"]);
}

#[tokio::test(start_paused = true)]
async fn forbid_skips_fires_while_the_previous_one_is_outstanding() {
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::new(clock);
    invoker.outstanding.store(true, Ordering::SeqCst);
    let harness = Harness::start(
        vec![scheduled_function("tick", "* * * * * *", &[])],
        config(clock),
        invoker.clone(),
    );
    pass(Duration::from_millis(3_000)).await; // :01 fired, :02 and :03 skipped
    let overlap = [("function_name", "tick.openfaas-fn"), ("reason", "overlap")];
    assert_eq!(harness.counter("scheduler_skips_total", &overlap), 2.0);
    invoker.outstanding.store(false, Ordering::SeqCst);
    pass(Duration::from_millis(1_000)).await; // :04 fires again
    let invoker = harness.stop().await;
    assert_eq!(
        invoker.scheduled_times(),
        ["2026-01-01T10:00:01Z", "2026-01-01T10:00:04Z"]
    );
}

#[tokio::test(start_paused = true)]
async fn allow_fires_even_while_the_previous_one_is_outstanding() {
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::new(clock);
    invoker.outstanding.store(true, Ordering::SeqCst);
    let harness = Harness::start(
        vec![scheduled_function(
            "tick",
            "* * * * * *",
            &[("com.courier.schedule.concurrency", "allow")],
        )],
        config(clock),
        invoker,
    );
    pass(Duration::from_millis(3_000)).await;
    let invoker = harness.stop().await;
    assert_eq!(
        invoker.scheduled_times(),
        [
            "2026-01-01T10:00:01Z",
            "2026-01-01T10:00:02Z",
            "2026-01-01T10:00:03Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn sync_mode_forbids_a_fire_while_the_previous_call_runs() {
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::with_call_duration(clock, Duration::from_millis(2_500));
    let harness = Harness::start(
        vec![scheduled_function("tick", "* * * * * *", &[])],
        SchedulerConfig {
            mode: DispatchMode::Sync,
            ..config(clock)
        },
        invoker,
    );
    // The call from :01 runs until :03.5, so :02 and :03 are skipped; :04 fires.
    pass(Duration::from_millis(4_000)).await;
    let invoker = harness.stop().await;
    let seen = invoker.seen();
    assert!(seen.iter().all(|s| s.how == "call"));
    assert_eq!(
        invoker.scheduled_times(),
        ["2026-01-01T10:00:01Z", "2026-01-01T10:00:04Z"]
    );
}

#[tokio::test(start_paused = true)]
async fn sync_mode_with_allow_overlaps_calls() {
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::with_call_duration(clock, Duration::from_millis(2_500));
    let harness = Harness::start(
        vec![scheduled_function(
            "tick",
            "* * * * * *",
            &[("com.courier.schedule.concurrency", "allow")],
        )],
        SchedulerConfig {
            mode: DispatchMode::Sync,
            ..config(clock)
        },
        invoker,
    );
    pass(Duration::from_millis(3_000)).await;
    let invoker = harness.stop().await;
    assert_eq!(invoker.seen().len(), 3);
}

fn state_with(path: &PathBuf, key: &str, schedule: &str, last: &str) {
    let store = StateStore::new(path);
    store.prepare().unwrap();
    let mut state = State::default();
    state.schedules.insert(
        key.to_owned(),
        courier_scheduler::state::Handled {
            schedule: schedule.to_owned(),
            last: at(last),
        },
    );
    store.save(&state).unwrap();
}

#[tokio::test(start_paused = true)]
async fn missed_once_catches_up_exactly_one_run_for_the_fires_missed_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheduler/state.json");
    // Down since 09:58:00: 09:58:10 .. 09:59:50 (11 fires) fell due more than 5 s ago.
    state_with(
        &path,
        "tick.openfaas-fn",
        "*/10 * * * * *",
        "2026-01-01T09:58:00Z",
    );
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::new(clock);
    // The queue still holds the catch-up run when the next fire comes due.
    invoker.outstanding.store(true, Ordering::SeqCst);
    let harness = Harness::start(
        vec![scheduled_function(
            "tick",
            "*/10 * * * * *",
            &[("com.courier.schedule.missed", "once")],
        )],
        SchedulerConfig {
            state_path: Some(path),
            ..config(clock)
        },
        invoker,
    );
    pass(Duration::from_millis(100)).await;
    let missed = [("function_name", "tick.openfaas-fn"), ("reason", "missed")];
    assert_eq!(harness.counter("scheduler_skips_total", &missed), 10.0);
    // 10:00:00 was due 0.25 s before the start (late, not missed), but the catch-up run is
    // still outstanding: `forbid` (the default) skips it as an overlap.
    let overlap = [("function_name", "tick.openfaas-fn"), ("reason", "overlap")];
    assert_eq!(harness.counter("scheduler_skips_total", &overlap), 1.0);
    let invoker = harness.stop().await;
    // The one catch-up run, for the latest missed time.
    assert_eq!(invoker.scheduled_times(), ["2026-01-01T09:59:50Z"]);
}

#[tokio::test(start_paused = true)]
async fn missed_once_with_allow_runs_the_catch_up_and_the_late_fire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scheduler/state.json");
    state_with(
        &path,
        "tick.openfaas-fn",
        "*/10 * * * * *",
        "2026-01-01T09:58:00Z",
    );
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function(
            "tick",
            "*/10 * * * * *",
            &[
                ("com.courier.schedule.missed", "once"),
                ("com.courier.schedule.concurrency", "allow"),
            ],
        )],
        SchedulerConfig {
            state_path: Some(path),
            ..config(clock)
        },
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(100)).await;
    let invoker = harness.stop().await;
    assert_eq!(
        invoker.scheduled_times(),
        ["2026-01-01T09:59:50Z", "2026-01-01T10:00:00Z"]
    );
}

#[tokio::test(start_paused = true)]
async fn missed_skip_runs_nothing_for_the_fires_missed_while_down() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    state_with(
        &path,
        "tick.openfaas-fn",
        "*/10 * * * * *",
        "2026-01-01T09:58:00Z",
    );
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function("tick", "*/10 * * * * *", &[])],
        SchedulerConfig {
            state_path: Some(path),
            ..config(clock)
        },
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(100)).await;
    let missed = [("function_name", "tick.openfaas-fn"), ("reason", "missed")];
    assert_eq!(harness.counter("scheduler_skips_total", &missed), 11.0);
    let invoker = harness.stop().await;
    assert_eq!(invoker.scheduled_times(), ["2026-01-01T10:00:00Z"]);
}

#[tokio::test(start_paused = true)]
async fn an_edited_schedule_does_not_catch_up_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    state_with(
        &path,
        "tick.openfaas-fn",
        "*/5 * * * * *",
        "2026-01-01T09:58:00Z",
    );
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function(
            "tick",
            "*/10 * * * * *",
            &[("com.courier.schedule.missed", "once")],
        )],
        SchedulerConfig {
            state_path: Some(path),
            ..config(clock)
        },
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(100)).await;
    let invoker = harness.stop().await;
    assert!(invoker.seen().is_empty(), "{:?}", invoker.seen());
}

#[tokio::test(start_paused = true)]
async fn a_quick_restart_neither_catches_up_nor_loses_a_fire() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::new(clock);
    let functions = vec![scheduled_function(
        "tick",
        "*/2 * * * * *",
        &[("com.courier.schedule.missed", "once")],
    )];
    let with_state = || SchedulerConfig {
        state_path: Some(path.clone()),
        ..config(clock)
    };
    let first = Harness::start(functions.clone(), with_state(), invoker.clone());
    pass(Duration::from_millis(4_000)).await; // 10:00:04.250, fired :02 and :04
    first.stop().await;
    pass(Duration::from_millis(1_900)).await; // down over 10:00:06
    let second = Harness::start(functions, with_state(), invoker.clone());
    pass(Duration::from_millis(2_000)).await; // 10:00:08.150
    let missed = [("function_name", "tick.openfaas-fn"), ("reason", "missed")];
    assert_eq!(second.counter("scheduler_skips_total", &missed), 0.0);
    second.stop().await;
    assert_eq!(
        invoker.scheduled_times(),
        [
            "2026-01-01T10:00:02Z",
            "2026-01-01T10:00:04Z",
            // Due while restarting, 0.15 s before the new start: fired late, once.
            "2026-01-01T10:00:06Z",
            "2026-01-01T10:00:08Z"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn after_a_crash_refired_times_are_recognised_by_the_queue() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::new(clock);
    let functions = vec![scheduled_function(
        "tick",
        "* * * * * *",
        &[("com.courier.schedule.missed", "once")],
    )];
    let with_state = || SchedulerConfig {
        state_path: Some(path.clone()),
        state_flush_interval: Duration::from_secs(10),
        ..config(clock)
    };
    let first = Harness::start(functions.clone(), with_state(), invoker.clone());
    pass(Duration::from_millis(3_000)).await; // fired :01 :02 :03, state never written
    first.task.abort(); // a crash: no final state
    let _ = first.task.await;
    let second = Harness::start(functions, with_state(), invoker.clone());
    pass(Duration::from_millis(100)).await;
    second.stop().await;
    let stored: HashSet<String> = invoker.seen().into_iter().map(|s| s.call_id).collect();
    assert_eq!(stored.len(), 3, "nothing new was stored for the same times");
    assert_eq!(
        stored,
        [
            "2026-01-01T10:00:01Z",
            "2026-01-01T10:00:02Z",
            "2026-01-01T10:00:03Z"
        ]
        .iter()
        .map(|t| call_id("tick", "openfaas-fn", at(t)))
        .collect()
    );
}

#[tokio::test(start_paused = true)]
async fn two_replicas_derive_the_same_call_ids_so_each_fire_is_stored_once() {
    let clock = Clock::following_tokio(start_time());
    let invoker = FakeInvoker::new(clock);
    let functions = vec![scheduled_function("tick", "* * * * * *", &[])];
    let a = Harness::start(functions.clone(), config(clock), invoker.clone());
    let b = Harness::start(functions, config(clock), invoker.clone());
    pass(Duration::from_millis(3_000)).await;
    let fired = |h: &Harness| {
        h.counter(
            "scheduler_fires_total",
            &[("function_name", "tick.openfaas-fn")],
        )
    };
    let duplicates = |h: &Harness| {
        h.counter(
            "scheduler_skips_total",
            &[
                ("function_name", "tick.openfaas-fn"),
                ("reason", "duplicate"),
            ],
        )
    };
    assert_eq!(fired(&a) + fired(&b), 3.0);
    assert_eq!(duplicates(&a) + duplicates(&b), 3.0);
    a.stop().await;
    b.stop().await;
    let seen = invoker.seen();
    assert_eq!(seen.len(), 6);
    let ids: HashSet<String> = seen.iter().map(|s| s.call_id.clone()).collect();
    assert_eq!(ids.len(), 3);
    for s in &seen {
        assert_eq!(s.call_id, call_id("tick", "openfaas-fn", at(&s.scheduled)));
    }
}

#[tokio::test(start_paused = true)]
async fn an_invalid_schedule_fires_nothing_and_the_rest_still_run() {
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![
            scheduled_function("bad", "0 9 * *", &[]),
            scheduled_function("tick", "* * * * * *", &[]),
        ],
        config(clock),
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(1_000)).await;
    let invoker = harness.stop().await;
    assert_eq!(invoker.scheduled_times(), ["2026-01-01T10:00:01Z"]);
}

#[tokio::test(start_paused = true)]
async fn the_state_file_remembers_the_last_fire_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.json");
    let clock = Clock::following_tokio(start_time());
    let harness = Harness::start(
        vec![scheduled_function("tick", "*/2 * * * * *", &[])],
        SchedulerConfig {
            state_path: Some(path.clone()),
            ..config(clock)
        },
        FakeInvoker::new(clock),
    );
    pass(Duration::from_millis(4_000)).await;
    harness.stop().await;
    let state = StateStore::new(&path).load().unwrap();
    let handled = &state.schedules["tick.openfaas-fn"];
    assert_eq!(handled.schedule, "*/2 * * * * *");
    assert_eq!(handled.last, at("2026-01-01T10:00:04Z"));
}

#[tokio::test(start_paused = true)]
async fn a_second_scheduler_on_the_same_registry_is_refused() {
    let clock = Clock::following_tokio(start_time());
    let registry = Registry::new();
    let (_tx, rx) = watch::channel::<FunctionList>(Arc::new(vec![]));
    let shutdown = CancellationToken::new();
    let first = {
        let registry = registry.clone();
        let rx = rx.clone();
        let shutdown = shutdown.clone();
        let invoker: Arc<dyn Invoker> = FakeInvoker::new(clock);
        tokio::spawn(async move {
            courier_scheduler::run(config(clock), rx, invoker, &registry, shutdown).await
        })
    };
    pass(Duration::from_millis(10)).await;
    let invoker: Arc<dyn Invoker> = FakeInvoker::new(clock);
    let second =
        courier_scheduler::run(config(clock), rx, invoker, &registry, shutdown.clone()).await;
    assert!(matches!(second, Err(courier_scheduler::Error::Metrics(_))));
    shutdown.cancel();
    first.await.unwrap().unwrap();
}
