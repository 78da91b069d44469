//! `Fabric` against a real embedded queue (a redb file) and a real gateway-shaped HTTP
//! server: what triggers queue is what the queue worker reads, duplicates are stored once,
//! outstanding follows settlement, and dead letters carry the original request.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier_core::queue::{DeadLetterRecord, QueueRequest};
use courier_invoke::{Call, Fabric, FunctionCaller, GatewayHttp, InvokeError, Invoker};
use courier_queue::{Delivery, QueueConfig, WorkQueue};
use http::HeaderValue;

async fn embedded_queue(dir: &tempfile::TempDir) -> Arc<dyn WorkQueue> {
    let url = format!("file://{}", dir.path().join("queue.redb").display());
    courier_queue::open(&url, QueueConfig::default())
        .await
        .expect("open the embedded queue")
}

fn unreachable_gateway() -> Arc<dyn FunctionCaller> {
    // Nothing listens on port 9 on loopback.
    Arc::new(GatewayHttp::new(
        reqwest::Client::new(),
        "http://127.0.0.1:9",
    ))
}

/// The next stored call, as the queue worker reads it.
async fn next_request(queue: &Arc<dyn WorkQueue>) -> (Delivery, QueueRequest) {
    let delivery = queue
        .fetch(1, Duration::from_secs(2))
        .await
        .expect("fetch")
        .pop()
        .expect("one delivery");
    let request = serde_json::from_slice(&delivery.message.payload).expect("a QueueRequest");
    (delivery, request)
}

fn call(id: &str) -> Call {
    let mut headers = http::HeaderMap::new();
    headers.insert("x-topic", HeaderValue::from_static("orders"));
    Call {
        function: "echo.team".into(),
        path: "/".into(),
        headers,
        body: Bytes::from_static(b"payload"),
        call_id: Some(id.into()),
        source: None,
    }
}

#[tokio::test]
async fn a_queued_call_is_an_openfaas_queue_request_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = embedded_queue(&dir).await;
    let fabric = Fabric::new(unreachable_gateway(), Some(queue.clone()));

    let first = fabric.enqueue(call("fire-1")).await.expect("enqueue");
    assert_eq!(first.call_id, "fire-1");
    assert!(!first.duplicate);
    let again = fabric.enqueue(call("fire-1")).await.expect("enqueue again");
    assert!(again.duplicate, "the same call id within the dedup window");
    assert_eq!(queue.pending().await.expect("pending"), 1);
    assert!(fabric.is_outstanding(&first).await.expect("outstanding"));

    let (delivery, request) = next_request(&queue).await;
    assert_eq!(request.function, "echo.team");
    assert_eq!(request.body, b"payload");
    assert_eq!(request.header["X-Call-Id"], ["fire-1"]);
    assert_eq!(request.header["X-Topic"], ["orders"]);
    delivery.ack().await.expect("ack");
    assert!(!fabric.is_outstanding(&first).await.expect("outstanding"));
}

#[tokio::test]
async fn a_call_made_ready_ahead_is_stored_like_an_enqueued_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = embedded_queue(&dir).await;
    let fabric = Fabric::new(unreachable_gateway(), Some(queue.clone()));

    let ready = fabric.ready(call("fire-2")).expect("encode");
    assert_eq!(ready.call_id(), Some("fire-2"));
    assert!(
        ready.into_call().is_none(),
        "encoded ahead, not kept as a call"
    );
    // Nothing reaches the queue until the hand-over.
    assert_eq!(queue.pending().await.expect("pending"), 0);

    let stored = fabric
        .enqueue_ready(fabric.ready(call("fire-2")).expect("encode"))
        .await
        .expect("enqueue");
    assert_eq!(stored.call_id, "fire-2");
    assert!(!stored.duplicate);
    let again = fabric.enqueue(call("fire-2")).await.expect("enqueue again");
    assert!(
        again.duplicate,
        "the same call id, however it was handed over"
    );
    assert!(fabric.is_outstanding(&stored).await.expect("outstanding"));

    let (delivery, request) = next_request(&queue).await;
    assert_eq!(request.function, "echo.team");
    assert_eq!(request.body, b"payload");
    assert_eq!(request.header["X-Call-Id"], ["fire-2"]);
    assert_eq!(request.header["X-Topic"], ["orders"]);
    assert!(request.header.contains_key("X-Start-Time"));
    delivery.ack().await.expect("ack");
}

#[tokio::test]
async fn a_batch_is_stored_in_order_with_one_answer_per_call() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = embedded_queue(&dir).await;
    let fabric = Fabric::new(unreachable_gateway(), Some(queue.clone()));
    fabric.enqueue(call("fire-b0")).await.expect("enqueue");
    let mut bad = call("fire-bad");
    bad.headers.insert(
        courier_core::headers::X_CALLBACK_URL,
        HeaderValue::from_static("not a url"),
    );

    let answers = fabric
        .enqueue_ready_batch(vec![
            fabric.ready(call("fire-b1")).expect("encode"),
            // Not made ready ahead: encoded in the batch.
            courier_invoke::ReadyCall::new(call("fire-b2")),
            courier_invoke::ReadyCall::new(bad),
            fabric.ready(call("fire-b0")).expect("encode"),
        ])
        .await;

    assert_eq!(answers.len(), 4, "one answer per call");
    let stored: Vec<(String, bool)> = answers
        .iter()
        .filter_map(|answer| answer.as_ref().ok())
        .map(|e| (e.call_id.clone(), e.duplicate))
        .collect();
    assert_eq!(
        stored,
        [
            ("fire-b1".to_owned(), false),
            ("fire-b2".to_owned(), false),
            ("fire-b0".to_owned(), true)
        ]
    );
    assert!(
        matches!(answers[2], Err(InvokeError::Invalid(_))),
        "the bad call fails alone: {:?}",
        answers[2]
    );
    let seq = answers[1]
        .as_ref()
        .expect("stored")
        .seq
        .expect("a sequence");
    assert!(
        fabric
            .is_outstanding(answers[1].as_ref().expect("stored"))
            .await
            .expect("outstanding")
    );
    let mut ids = Vec::new();
    for _ in 0..3 {
        let (delivery, request) = next_request(&queue).await;
        ids.push(request.header["X-Call-Id"][0].clone());
        delivery.ack().await.expect("ack");
    }
    assert_eq!(ids, ["fire-b0", "fire-b1", "fire-b2"], "stored in order");
    assert!(!queue.is_outstanding(seq).await.expect("outstanding"));
}

#[tokio::test]
async fn a_queued_call_has_a_ledger_record_with_its_source_and_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = embedded_queue(&dir).await;
    let fabric = Fabric::new(unreachable_gateway(), Some(queue.clone()));
    let ledger = courier_ledger::Ledger::new(queue.clone());
    let mut fire = call("fire-cron");
    fire.source = Some(courier_core::ledger::CallSource::Cron {
        scheduled_at: "2026-12-04T10:00:00Z".into(),
    });
    fire.headers.insert(
        "traceparent",
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
    );
    let mut kafka = call("msg-kafka");
    kafka.source = Some(courier_core::ledger::CallSource::Kafka {
        topic: "orders".into(),
        partition: 1,
        offset: 7,
    });

    fabric.enqueue(fire).await.expect("enqueue");
    let answers = fabric
        .enqueue_ready_batch(vec![fabric.ready(kafka).expect("encode")])
        .await;
    assert!(answers[0].is_ok(), "{answers:?}");

    let cron = ledger
        .get("fire-cron")
        .await
        .expect("get")
        .expect("a record");
    assert_eq!(cron.state, courier_core::ledger::CallState::Queued);
    assert_eq!(
        (cron.function.as_str(), cron.namespace.as_str()),
        ("echo", "team")
    );
    assert_eq!(cron.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(
        serde_json::to_value(&cron.source).unwrap(),
        serde_json::json!({"kind": "cron", "scheduledAt": "2026-12-04T10:00:00Z"})
    );
    let kafka = ledger
        .get("msg-kafka")
        .await
        .expect("get")
        .expect("a record");
    assert_eq!(kafka.source.kind(), "kafka");
    assert_eq!(
        kafka.trace_id.len(),
        32,
        "a fresh trace id: {}",
        kafka.trace_id
    );
    // The stored request carries the trace context the record names.
    let (delivery, request) = next_request(&queue).await;
    assert!(
        request.header["Traceparent"][0].contains("4bf92f3577b34da6a3ce929d0e0e4736"),
        "{:?}",
        request.header
    );
    delivery.ack().await.expect("ack");
}

#[tokio::test]
async fn without_a_queue_nothing_is_made_ready() {
    let fabric = Fabric::new(unreachable_gateway(), None);
    assert!(matches!(
        fabric.ready(call("fire-3")),
        Err(InvokeError::NoQueue)
    ));
}

#[tokio::test]
async fn a_dead_letter_keeps_the_request_attempts_and_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let queue = embedded_queue(&dir).await;
    let fabric = Fabric::new(unreachable_gateway(), Some(queue.clone()));
    fabric
        .dead_letter(&call("msg-7"), 3, Some(500), "function answered 500")
        .await
        .expect("dead letter");
    let letter = queue
        .dead_letter("msg-7")
        .await
        .expect("read")
        .expect("kept");
    let record: DeadLetterRecord = serde_json::from_slice(&letter.record).expect("a record");
    assert_eq!(record.function, "echo");
    assert_eq!(record.namespace, "team");
    assert_eq!(record.attempts, 3);
    assert_eq!(record.last_status, Some(500));
    assert_eq!(record.error, "function answered 500");
    assert_eq!(record.request.expect("the request").body, b"payload");
}

#[tokio::test]
async fn without_a_queue_enqueue_says_so_and_an_unreachable_gateway_is_retryable() {
    let fabric = Fabric::new(unreachable_gateway(), None);
    let err = fabric.enqueue(call("x")).await.expect_err("no queue");
    assert!(matches!(err, InvokeError::NoQueue), "{err}");
    let err = fabric
        .call(call("x"), Duration::from_secs(5))
        .await
        .expect_err("nothing listens");
    assert!(err.is_retryable(), "{err}");
    assert_eq!(err.code(), "unreachable");
}
