//! Test doubles for connector tests (feature `testing`): a recording [`Invoker`] whose answers
//! are scripted per function, and a ready [`Pipeline`] over a fixed topic map.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use courier_core::FunctionStatus;
use courier_core::retry::RetryPolicy;
use courier_invoke::{Answer, Call, Enqueued, InvokeError, Invoker};
use http::HeaderMap;

use crate::config::{ConnectorConfig, InvocationMode};
use crate::metrics::ConnectorMetrics;
use crate::pipeline::{DeadLetters, Pipeline, SourceInfo};
use crate::reply::ReplySink;
use crate::topics::{TopicMap, TopicWatch};

/// One call the invoker saw (sync or queued).
#[derive(Debug, Clone)]
pub struct RecordedCall {
    /// `name.namespace`.
    pub function: String,
    /// The request headers.
    pub headers: HeaderMap,
    /// The body.
    pub body: Bytes,
    /// The call id.
    pub call_id: Option<String>,
    /// When it arrived.
    pub at: Instant,
    /// The status it was answered with (`None`: queued).
    pub status: Option<u16>,
}

impl RecordedCall {
    /// The body as text.
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// A header as text, `""` when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }
}

/// One dead letter the invoker stored.
#[derive(Debug, Clone)]
pub struct RecordedDeadLetter {
    /// `name.namespace`.
    pub function: String,
    /// The body of the call.
    pub body: Bytes,
    /// The call id.
    pub call_id: Option<String>,
    /// Attempts made.
    pub attempts: u64,
    /// The last status, if the function answered.
    pub last_status: Option<u16>,
    /// Why.
    pub error: String,
}

/// Status of the n-th call (1-based) of a function with a given body.
type Script = Arc<dyn Fn(&str, u64) -> u16 + Send + Sync>;

#[derive(Default)]
struct State {
    calls: Vec<RecordedCall>,
    dead_letters: Vec<RecordedDeadLetter>,
    scripts: HashMap<String, Script>,
    /// Calls so far per (function, body).
    counts: HashMap<(String, Bytes), u64>,
    delay: Duration,
    dead_letter_failures: u64,
}

/// A fake [`Invoker`] that records everything and answers 200 (`ok`) unless scripted.
#[derive(Clone, Default)]
pub struct RecordingInvoker {
    state: Arc<Mutex<State>>,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: Arc<AtomicUsize>,
}

impl std::fmt::Debug for RecordingInvoker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingInvoker").finish_non_exhaustive()
    }
}

impl RecordingInvoker {
    /// An invoker that answers every call 200.
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every call (and every `delay`) takes this long.
    pub fn set_delay(&self, delay: Duration) {
        self.state().delay = delay;
    }

    /// `function` answers `script(body, n)` to its n-th call with that body.
    pub fn script(
        &self,
        function: &str,
        script: impl Fn(&str, u64) -> u16 + Send + Sync + 'static,
    ) {
        self.state()
            .scripts
            .insert(function.to_owned(), Arc::new(script));
    }

    /// The next `n` dead letters are refused.
    pub fn fail_dead_letters(&self, n: u64) {
        self.state().dead_letter_failures = n;
    }

    /// Every call so far, in arrival order.
    pub fn calls(&self) -> Vec<RecordedCall> {
        self.state().calls.clone()
    }

    /// Calls of `function` so far.
    pub fn calls_of(&self, function: &str) -> Vec<RecordedCall> {
        self.calls()
            .into_iter()
            .filter(|c| c.function == function)
            .collect()
    }

    /// Every dead letter so far.
    pub fn dead_letters(&self) -> Vec<RecordedDeadLetter> {
        self.state().dead_letters.clone()
    }

    /// Bodies seen per function, with how often each was seen.
    pub fn bodies(&self) -> BTreeMap<String, BTreeMap<String, usize>> {
        let mut out: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        for c in self.calls() {
            *out.entry(c.function.clone())
                .or_default()
                .entry(c.body_text())
                .or_default() += 1;
        }
        out
    }

    /// The most calls that ran at once.
    pub fn max_concurrency(&self) -> usize {
        self.max_in_flight.load(Ordering::SeqCst)
    }

    async fn record(&self, call: &Call, queued: bool) -> u16 {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let (delay, status) = {
            let mut state = self.state();
            let n = state
                .counts
                .entry((call.function.clone(), call.body.clone()))
                .or_default();
            *n += 1;
            let n = *n;
            let status = match state.scripts.get(&call.function) {
                Some(script) => script(&String::from_utf8_lossy(&call.body), n),
                None => 200,
            };
            state.calls.push(RecordedCall {
                function: call.function.clone(),
                headers: call.headers.clone(),
                body: call.body.clone(),
                call_id: call.call_id.clone(),
                at: Instant::now(),
                status: (!queued).then_some(status),
            });
            (state.delay, status)
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        status
    }
}

#[async_trait]
impl Invoker for RecordingInvoker {
    async fn call(&self, call: Call, _timeout: Duration) -> Result<Answer, InvokeError> {
        let status = self.record(&call, false).await;
        let mut headers = HeaderMap::new();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain"),
        );
        let mut body = b"ok: ".to_vec();
        body.extend_from_slice(&call.body);
        Ok(Answer {
            status,
            headers,
            body: Bytes::from(body),
        })
    }

    async fn enqueue(&self, call: Call) -> Result<Enqueued, InvokeError> {
        self.record(&call, true).await;
        Ok(Enqueued {
            call_id: call.call_id.clone().unwrap_or_default(),
            duplicate: false,
            seq: None,
        })
    }

    async fn is_outstanding(&self, _e: &Enqueued) -> Result<bool, InvokeError> {
        Ok(false)
    }

    async fn dead_letter(
        &self,
        call: &Call,
        attempts: u64,
        last_status: Option<u16>,
        error: &str,
    ) -> Result<(), InvokeError> {
        let mut state = self.state();
        if state.dead_letter_failures > 0 {
            state.dead_letter_failures -= 1;
            return Err(crate::testing::store_unavailable());
        }
        state.dead_letters.push(RecordedDeadLetter {
            function: call.function.clone(),
            body: call.body.clone(),
            call_id: call.call_id.clone(),
            attempts,
            last_status,
            error: error.to_owned(),
        });
        Ok(())
    }
}

/// A retryable invoker error (the dead-letter store is down).
fn store_unavailable() -> InvokeError {
    InvokeError::Unreachable("dead-letter store unavailable (test)".into())
}

/// A deployed function `name` (namespace `openfaas-fn`) with `annotations`.
pub fn function(name: &str, annotations: &[(&str, &str)]) -> FunctionStatus {
    FunctionStatus {
        name: name.to_owned(),
        namespace: "openfaas-fn".to_owned(),
        annotations: annotations
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        ..FunctionStatus::default()
    }
}

/// Settings for tests: sync, 3 attempts, millisecond waits.
pub fn fast_config() -> ConnectorConfig {
    ConnectorConfig {
        mode: InvocationMode::Sync,
        retry: RetryPolicy {
            attempts: 3,
            min_wait: Duration::from_millis(1),
            max_wait: Duration::from_millis(5),
            ..RetryPolicy::default()
        },
        call_timeout: Duration::from_secs(5),
        ..ConnectorConfig::default()
    }
}

/// A sync pipeline (Courier dead letters, no replies) where each `(function, topic)` pair
/// subscribes `function` (namespace `openfaas-fn`) to `topic`.
pub fn pipeline_for(invoker: &RecordingInvoker, subscriptions: &[(&str, &str)]) -> Pipeline {
    pipeline_with(
        invoker,
        subscriptions,
        fast_config(),
        DeadLetters::Courier,
        None,
    )
}

/// A pipeline with every knob.
pub fn pipeline_with(
    invoker: &RecordingInvoker,
    subscriptions: &[(&str, &str)],
    config: ConnectorConfig,
    dead_letters: DeadLetters,
    replies: Option<Arc<dyn ReplySink>>,
) -> Pipeline {
    let mut topics: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (function, topic) in subscriptions {
        topics.entry(function).or_default().push(topic);
    }
    let functions: Vec<FunctionStatus> = topics
        .iter()
        .map(|(f, ts)| function(f, &[("topic", &ts.join(","))]))
        .collect();
    let (map, _) = TopicMap::build(&functions, &config.retry);
    let metrics = ConnectorMetrics::register(&prometheus::Registry::new(), "test")
        .unwrap_or_else(|e| panic!("register metrics: {e}"));
    Pipeline::new(
        config,
        SourceInfo {
            connector: "courier-connector-test",
            dead_letters,
        },
        TopicWatch::fixed(map),
        Arc::new(invoker.clone()),
        replies,
        metrics,
    )
}
