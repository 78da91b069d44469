//! The worker's caps against a real embedded queue, a function that records when each call
//! reached it, and a real (slow) callback receiver on a loopback socket: a call's place under
//! the per-function cap is given back when the function answers, not after its callback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use courier_core::queue::{GoUrl, QueueRequest};
use courier_queue::{Message, QueueConfig};
use courier_queue_worker::{Answer, FunctionCaller, WorkerConfig};
use http::HeaderMap;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::time::Instant;

mod support;

/// How long the callback receiver takes to answer each callback.
const CALLBACK_DELAY: Duration = Duration::from_secs(3);

/// A function that answers at once and remembers when each call reached it.
#[derive(Default)]
struct Recorded {
    reached: Mutex<Vec<Instant>>,
}

#[async_trait::async_trait]
impl FunctionCaller for Recorded {
    async fn call(&self, _request: http::Request<Bytes>) -> Result<Answer, String> {
        self.reached.lock().unwrap().push(Instant::now());
        Ok(Answer {
            status: 200,
            headers: HeaderMap::new(),
            body: Bytes::from_static(b"done"),
        })
    }
}

/// A callback receiver that reads each request and answers 200 after [`CALLBACK_DELAY`];
/// returns its URL and when each callback was answered.
async fn slow_receiver() -> (String, Arc<Mutex<Vec<Instant>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/done", listener.local_addr().unwrap());
    let answered = Arc::new(Mutex::new(Vec::new()));
    let log = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                // The callback is small: its head and body arrive in the first reads.
                let _ =
                    tokio::time::timeout(Duration::from_millis(500), socket.read(&mut buf)).await;
                tokio::time::sleep(CALLBACK_DELAY).await;
                log.lock().unwrap().push(Instant::now());
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
                    .await;
            });
        }
    });
    (url, answered)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_slow_callback_does_not_hold_the_functions_place() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("queue.redb").display());
    let queue = courier_queue::open(&url, QueueConfig::default())
        .await
        .unwrap();
    let (callback, answered) = slow_receiver().await;
    for id in ["first", "second"] {
        let request = QueueRequest {
            function: "fn".into(),
            method: "POST".into(),
            callback_url: Some(GoUrl::parse(&callback).unwrap()),
            ..QueueRequest::default()
        };
        queue
            .publish(Message {
                id: id.to_owned(),
                payload: Bytes::from(serde_json::to_vec(&request).unwrap()),
            })
            .await
            .unwrap();
    }
    let function = Arc::new(Recorded::default());
    let config = WorkerConfig {
        // Nothing listens there: the function settings fall back to the defaults.
        gateway: "http://127.0.0.1:1".into(),
        max_inflight_per_function: 1,
        callback_timeout: CALLBACK_DELAY * 3,
        drain_timeout: Duration::from_secs(1),
        ..WorkerConfig::default()
    };
    let (stop, running) = support::start_worker(queue.clone(), config, function.clone());

    let until = Instant::now() + CALLBACK_DELAY * 4;
    while answered.lock().unwrap().len() < 2 {
        assert!(
            Instant::now() < until,
            "the callbacks were not both answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let reached = function.reached.lock().unwrap().clone();
    let first_callback_answered = answered.lock().unwrap()[0];
    assert_eq!(reached.len(), 2, "each call ran once");
    assert!(
        reached[1] < first_callback_answered,
        "the second call reached the function {:?} after the first, only once the first \
         call's callback was answered: the slot was held through the callback",
        reached[1] - reached[0]
    );
    assert!(
        reached[1] - reached[0] < CALLBACK_DELAY / 2,
        "the second call waited {:?} for the function's one place",
        reached[1] - reached[0]
    );
    stop.cancel();
    running.await.unwrap();
}

/// A function that takes [`Busy::TAKES`] per call and counts how many of its calls, and of
/// each function's, run at once.
#[derive(Default)]
struct Busy {
    now: Mutex<std::collections::HashMap<String, usize>>,
    most: Mutex<std::collections::HashMap<String, usize>>,
    reached: Mutex<Vec<String>>,
}

impl Busy {
    const TAKES: Duration = Duration::from_millis(2);

    fn enter(&self, function: &str) {
        let mut now = self.now.lock().unwrap();
        *now.entry(function.to_owned()).or_default() += 1;
        let all: usize = now.values().sum();
        let mut most = self.most.lock().unwrap();
        for (key, value) in [(function, now[function]), ("*", all)] {
            let most = most.entry(key.to_owned()).or_default();
            *most = (*most).max(value);
        }
    }

    fn most(&self, function: &str) -> usize {
        self.most
            .lock()
            .unwrap()
            .get(function)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait::async_trait]
impl FunctionCaller for Busy {
    async fn call(&self, request: http::Request<Bytes>) -> Result<Answer, String> {
        let function = request.uri().path().trim_start_matches("/function/");
        let function = function.trim_end_matches('/').to_owned();
        let id = request.headers()["x-call-id"].to_str().unwrap().to_owned();
        self.enter(&function);
        self.reached.lock().unwrap().push(id);
        tokio::time::sleep(Self::TAKES).await;
        *self.now.lock().unwrap().get_mut(&function).unwrap() -= 1;
        Ok(Answer {
            status: 200,
            headers: HeaderMap::new(),
            body: Bytes::new(),
        })
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_fetched_ahead_keep_both_caps_run_once_and_are_recorded_once() {
    // One function whose cap is the worker's (calls are fetched ahead and begun with the
    // fetch), then two functions whose caps bind first.
    for (functions, global, per_function) in [(&["a"][..], 4, 4), (&["a", "b"][..], 6, 2)] {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("file://{}", dir.path().join("queue.redb").display());
        let queue = courier_queue::open(&url, QueueConfig::default())
            .await
            .unwrap();
        let mut ids = Vec::new();
        for i in 0..200 {
            let function = functions[i % functions.len()];
            let id = format!("call-{i}");
            let mut request = QueueRequest {
                function: function.into(),
                method: "POST".into(),
                ..QueueRequest::default()
            };
            request.header.insert("X-Call-Id".into(), vec![id.clone()]);
            queue
                .publish(Message {
                    id: id.clone(),
                    payload: Bytes::from(serde_json::to_vec(&request).unwrap()),
                })
                .await
                .unwrap();
            ids.push(id);
        }
        let function = Arc::new(Busy::default());
        let config = WorkerConfig {
            // Nothing listens there: the function settings fall back to the defaults.
            gateway: "http://127.0.0.1:1".into(),
            max_inflight: global,
            max_inflight_per_function: per_function,
            drain_timeout: Duration::from_secs(1),
            ..WorkerConfig::default()
        };
        let (stop, running) = support::start_worker(queue.clone(), config, function.clone());
        let until = Instant::now() + Duration::from_secs(30);
        while queue.pending().await.unwrap() > 0 {
            assert!(Instant::now() < until, "calls left unsettled");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        stop.cancel();
        running.await.unwrap();

        let mut reached = function.reached.lock().unwrap().clone();
        reached.sort();
        let mut expected = ids.clone();
        expected.sort();
        assert_eq!(reached, expected, "every call ran, once");
        assert!(
            function.most("*") <= global,
            "{} calls ran at once; the worker's cap is {global}",
            function.most("*")
        );
        for name in functions {
            assert!(
                function.most(name) <= per_function,
                "{} calls of {name} ran at once; its cap is {per_function}",
                function.most(name)
            );
        }
        let ledger = courier_ledger::Ledger::new(queue.clone());
        for id in &ids {
            let record = ledger.get(id).await.unwrap().expect("a record");
            assert_eq!(
                record.state,
                courier_core::ledger::CallState::Succeeded,
                "{id}"
            );
            assert_eq!(record.attempts.len(), 1, "{id}: {:?}", record.attempts);
        }
    }
}
