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
