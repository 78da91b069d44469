//! The worker against a real embedded queue and a scripted function: what it writes to the
//! invocation ledger for each attempt, what it keeps of a result, what it skips, and the
//! trace context each attempt is sent. No gateway: the worker's settings lookup fails and the
//! configured retry policy applies.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use courier_core::ledger::{CallRecord, CallSource, CallState};
use courier_core::queue::QueueRequest;
use courier_core::retry::RetryPolicy;
use courier_core::trace::TraceParent;
use courier_ledger::{Cancel, Ledger};
use courier_queue::{LedgerConfig, Message, QueueConfig, WorkQueue};
use courier_queue_worker::{Answer, FunctionCaller, WorkerConfig};
use http::HeaderMap;
use tokio_util::sync::CancellationToken;

mod support;

const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const WAIT: Duration = Duration::from_secs(20);

/// A function that answers by path: `/flaky` 503 twice then 200, `/down` 503 always, `/echo`
/// its body with its Content-Type, anything else 404. Remembers every request.
#[derive(Default)]
struct Scripted {
    seen: Mutex<Vec<http::Request<Bytes>>>,
}

#[async_trait::async_trait]
impl FunctionCaller for Scripted {
    async fn call(&self, request: http::Request<Bytes>) -> Result<Answer, String> {
        let path = request.uri().path().to_owned();
        let body = request.body().clone();
        let content_type = request.headers().get(http::header::CONTENT_TYPE).cloned();
        let flaky_calls = {
            let mut seen = self.seen.lock().unwrap();
            seen.push(request);
            seen.iter().filter(|r| r.uri().path() == path).count()
        };
        let mut headers = HeaderMap::new();
        let (status, body) = match path.as_str() {
            "/function/fn/flaky" if flaky_calls <= 2 => (503, Bytes::from_static(b"not yet")),
            "/function/fn/flaky" => (200, Bytes::from_static(b"ok")),
            "/function/fn/down" => (503, Bytes::from_static(b"down")),
            "/function/fn/echo" => {
                if let Some(content_type) = content_type {
                    headers.insert(http::header::CONTENT_TYPE, content_type);
                }
                (200, body)
            }
            _ => (404, Bytes::new()),
        };
        Ok(Answer {
            status,
            headers,
            body,
        })
    }
}

impl Scripted {
    fn seen(&self) -> Vec<http::request::Parts> {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .map(|r| {
                let mut parts = http::Request::new(()).into_parts().0;
                parts.uri = r.uri().clone();
                parts.headers = r.headers().clone();
                parts
            })
            .collect()
    }
}

struct Rig {
    queue: Arc<dyn WorkQueue>,
    ledger: Ledger,
    function: Arc<Scripted>,
    stop: CancellationToken,
    worker: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start(ledger: LedgerConfig, max_result_bytes: usize) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("queue.redb").display());
        let queue = courier_queue::open(
            &url,
            QueueConfig {
                ledger,
                ..QueueConfig::default()
            },
        )
        .await
        .unwrap();
        let function = Arc::new(Scripted::default());
        let config = WorkerConfig {
            // Nothing listens there: the function settings fall back to `retry`.
            gateway: "http://127.0.0.1:1".into(),
            retry: RetryPolicy {
                attempts: 3,
                codes: vec![503],
                min_wait: Duration::from_millis(10),
                max_wait: Duration::from_millis(20),
            },
            drain_timeout: Duration::from_secs(1),
            ledger_max_result_bytes: max_result_bytes,
            ..WorkerConfig::default()
        };
        let (stop, worker) = support::start_worker(queue.clone(), config, function.clone());
        Self {
            ledger: Ledger::new(queue.clone()),
            queue,
            function,
            stop,
            worker,
            _dir: dir,
        }
    }

    async fn publish(&self, id: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) {
        let request = queued(path, headers, body);
        self.queue
            .publish(Message {
                id: id.to_owned(),
                payload: Bytes::from(serde_json::to_vec(&request).unwrap()),
            })
            .await
            .unwrap();
    }

    async fn final_record(&self, id: &str) -> CallRecord {
        let until = tokio::time::Instant::now() + WAIT;
        loop {
            match self.ledger.get(id).await {
                Ok(Some(record)) if record.state.is_final() => return record,
                Ok(_) => {}
                Err(e) => panic!("reading the record of {id}: {e}"),
            }
            assert!(tokio::time::Instant::now() < until, "{id} never ended");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn settled(&self) {
        let until = tokio::time::Instant::now() + WAIT;
        while self.queue.pending().await.unwrap() > 0 {
            assert!(tokio::time::Instant::now() < until, "calls left unsettled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        self.worker.await.unwrap();
    }
}

fn queued(path: &str, headers: &[(&str, &str)], body: &[u8]) -> QueueRequest {
    let mut request = QueueRequest {
        function: "fn".into(),
        method: "POST".into(),
        path: path.into(),
        body: body.to_vec(),
        ..QueueRequest::default()
    };
    for (name, value) in headers {
        request
            .header
            .entry((*name).to_owned())
            .or_default()
            .push((*value).to_owned());
    }
    request
}

fn traceparent(parts: &http::request::Parts) -> TraceParent {
    let value = parts.headers["traceparent"].to_str().unwrap();
    TraceParent::parse(value).unwrap_or_else(|| panic!("{value:?} is not a traceparent"))
}

#[tokio::test(flavor = "multi_thread")]
async fn each_attempt_is_recorded_and_sent_the_calls_trace_with_a_fresh_parent() {
    let rig = Rig::start(LedgerConfig::default(), 1024).await;
    rig.publish("flaky-1", "/flaky", &[("Traceparent", SENT)], b"")
        .await;
    let record = rig.final_record("flaky-1").await;
    assert_eq!(record.state, CallState::Succeeded);
    let statuses: Vec<Option<u16>> = record.attempts.iter().map(|a| a.status).collect();
    assert_eq!(statuses, [Some(503), Some(503), Some(200)]);
    assert!(record.attempts[0].next_delay_seconds.is_some());
    assert!(record.attempts[1].next_delay_seconds.is_some());
    assert_eq!(record.attempts[2].next_delay_seconds, None);
    assert_eq!(record.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(record.result, None, "nothing kept unless asked");

    let stored = TraceParent::parse(SENT).unwrap();
    let seen = rig.function.seen();
    assert_eq!(seen.len(), 3);
    let parents: Vec<TraceParent> = seen.iter().map(traceparent).collect();
    for parent in &parents {
        assert_eq!(parent.trace_id, stored.trace_id);
        assert_ne!(parent.parent_id, stored.parent_id);
    }
    assert_ne!(parents[0].parent_id, parents[1].parent_id);
    assert_ne!(parents[1].parent_id, parents[2].parent_id);
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_kept_result_is_written_with_the_final_record_and_the_header_stays_with_the_worker() {
    let rig = Rig::start(LedgerConfig::default(), 4).await;
    let headers = [
        ("X-Courier-Keep-Result", "true"),
        ("Content-Type", "application/x-bytes"),
    ];
    rig.publish("kept-1", "/echo", &headers, &[0, 1, 2, 255, 254])
        .await;
    let record = rig.final_record("kept-1").await;
    let summary = record.result.expect("a kept result");
    assert_eq!(summary.status, 200);
    assert_eq!(summary.content_type.as_deref(), Some("application/x-bytes"));
    assert_eq!(summary.bytes, 5);
    assert!(summary.truncated);
    let kept = rig.ledger.result("kept-1").await.unwrap().unwrap();
    assert_eq!(kept.body, [0, 1, 2, 255], "cut at the configured limit");
    assert_eq!(kept.content_type(), Some("application/x-bytes"));

    let seen = rig.function.seen();
    assert!(!seen[0].headers.contains_key("x-courier-keep-result"));
    assert_eq!(seen[0].headers["content-type"], "application/x-bytes");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_status_that_is_not_retried_ends_failed_and_one_that_runs_out_dead_lettered() {
    let rig = Rig::start(LedgerConfig::default(), 1024).await;
    rig.publish("missing-1", "/missing", &[], b"").await;
    let record = rig.final_record("missing-1").await;
    assert_eq!(record.state, CallState::Failed);
    assert_eq!(record.attempts.len(), 1);
    assert_eq!(record.attempts[0].status, Some(404));

    rig.publish("down-1", "/down", &[], b"").await;
    let record = rig.final_record("down-1").await;
    assert_eq!(record.state, CallState::DeadLettered);
    assert_eq!(record.attempts.len(), 3);
    assert!(
        rig.queue.dead_letter("down-1").await.unwrap().is_some(),
        "the letter is kept before the record says so"
    );
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cancelled_call_is_settled_without_running() {
    let rig = Rig::start(LedgerConfig::default(), 1024).await;
    // The record is written and cancelled before the message is published, so the worker
    // cannot take the call first.
    let request = queued("/echo", &[], b"never");
    let record = CallRecord::queued(
        "cancel-1",
        "fn",
        CallSource::Async,
        time::OffsetDateTime::now_utc(),
        String::new(),
        None,
    );
    let row = courier_ledger::row(&record);
    rig.queue
        .ledger_update(
            "cancel-1",
            Arc::new(move |_| courier_queue::LedgerChange::Put {
                row: row.clone(),
                result: None,
            }),
            true,
        )
        .await
        .unwrap();
    assert!(matches!(
        rig.ledger.cancel("cancel-1").await.unwrap(),
        Cancel::Cancelled(_)
    ));
    rig.queue
        .publish(Message {
            id: "cancel-1".into(),
            payload: Bytes::from(serde_json::to_vec(&request).unwrap()),
        })
        .await
        .unwrap();
    rig.settled().await;
    assert!(
        rig.function.seen().is_empty(),
        "a cancelled call never runs"
    );
    let record = rig.ledger.get("cancel-1").await.unwrap().unwrap();
    assert_eq!(record.state, CallState::Cancelled);
    assert!(record.attempts.is_empty());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_stored_without_a_trace_gets_one_and_the_record_names_it() {
    let rig = Rig::start(LedgerConfig::default(), 1024).await;
    rig.publish("untraced-1", "/echo", &[], b"x").await;
    let record = rig.final_record("untraced-1").await;
    let seen = rig.function.seen();
    assert_eq!(record.trace_id, traceparent(&seen[0]).trace_id_hex());
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_ledger_off_calls_run_as_before() {
    let off = LedgerConfig {
        retention: Duration::ZERO,
        ..LedgerConfig::default()
    };
    let rig = Rig::start(off, 1024).await;
    rig.publish("off-1", "/flaky", &[("X-Courier-Keep-Result", "true")], b"")
        .await;
    rig.publish("off-2", "/echo", &[], b"x").await;
    rig.settled().await;
    let seen = rig.function.seen();
    assert_eq!(seen.len(), 4, "three attempts and one call");
    let flaky: Vec<TraceParent> = seen
        .iter()
        .filter(|p| p.uri.path().ends_with("/flaky"))
        .map(traceparent)
        .collect();
    assert!(
        flaky.iter().all(|p| p.trace_id == flaky[0].trace_id),
        "a minted trace is the same on every attempt"
    );
    assert!(rig.ledger.get("off-1").await.unwrap_err().is_off());
    rig.stop().await;
}

/// A callback receiver that answers 200 to every POST and counts them.
async fn callback_receiver() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/cb", listener.local_addr().unwrap());
    let posts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = posts.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Headers, then the body by Content-Length.
                let body_start = loop {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break at + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..body_start]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < body_start + length {
                    let Ok(n) = stream.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, posts)
}

/// Writes the record of a call that ended `succeeded` with a callback posted `posts` times.
async fn ended(rig: &Rig, id: &str, callback: &str, posts: u32) {
    let mut record = CallRecord::queued(
        id,
        "fn",
        CallSource::Async,
        time::OffsetDateTime::now_utc(),
        String::new(),
        Some(callback.to_owned()),
    );
    record
        .begin_attempt(time::OffsetDateTime::now_utc())
        .unwrap();
    record.finish_attempt(
        time::OffsetDateTime::now_utc(),
        Duration::from_millis(5),
        Some(200),
        None,
        courier_core::ledger::Then::Done,
    );
    record.record_callback(time::OffsetDateTime::now_utc(), posts, Some(200), posts > 0);
    let row = courier_ledger::row(&record);
    rig.queue
        .ledger_update(
            id,
            Arc::new(move |_| courier_queue::LedgerChange::Put {
                row: row.clone(),
                result: None,
            }),
            true,
        )
        .await
        .unwrap();
}

async fn publish_with_callback(rig: &Rig, id: &str, callback: &str) {
    let mut request = queued("/echo", &[], b"again");
    request.callback_url = Some(courier_core::queue::GoUrl::parse(callback).unwrap());
    rig.queue
        .publish(Message {
            id: id.to_owned(),
            payload: Bytes::from(serde_json::to_vec(&request).unwrap()),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_of_an_ended_call_whose_callback_was_posted_is_settled_without_running() {
    let rig = Rig::start(LedgerConfig::default(), 1024).await;
    let (url, posts) = callback_receiver().await;
    ended(&rig, "done-1", &url, 1).await;
    publish_with_callback(&rig, "done-1", &url).await;
    rig.settled().await;
    assert!(rig.function.seen().is_empty());
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 0);
    let record = rig.ledger.get("done-1").await.unwrap().unwrap();
    assert_eq!(record.attempts.len(), 1, "the record is left as it was");
    rig.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_redelivery_of_an_ended_call_whose_callback_never_went_runs_again_for_it() {
    // The worker wrote the final record, then died before posting the callback.
    let rig = Rig::start(LedgerConfig::default(), 1024).await;
    let (url, posts) = callback_receiver().await;
    ended(&rig, "crashed-1", &url, 0).await;
    publish_with_callback(&rig, "crashed-1", &url).await;
    rig.settled().await;
    assert_eq!(rig.function.seen().len(), 1, "run again");
    assert_eq!(posts.load(std::sync::atomic::Ordering::SeqCst), 1);
    let record = rig.ledger.get("crashed-1").await.unwrap().unwrap();
    assert_eq!(record.state, CallState::Succeeded);
    assert_eq!(
        record.attempts.len(),
        1,
        "the final record's attempts are kept"
    );
    let callback = record.callback.unwrap();
    assert!(callback.delivered);
    assert_eq!(callback.attempts, 1);
    rig.stop().await;
}
