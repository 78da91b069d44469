//! The exporter against a real local HTTP receiver: what reaches `/v1/traces`, and that
//! recording never waits on the network.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use courier_core::trace::{SpanKind, SpanRecord, SpanValue};
use courier_telemetry::{Config, OtlpSpans};
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

const TRACE_ID: [u8; 16] = [
    0x4b, 0xf9, 0x2f, 0x35, 0x77, 0xb3, 0x4d, 0xa6, 0xa3, 0xce, 0x92, 0x9d, 0x0e, 0x0e, 0x47, 0x36,
];
const ACCEPT_SPAN: [u8; 8] = [0xa1, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7, 0xa8];
const ATTEMPT_SPAN: [u8; 8] = [0xb1, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8];

/// One POST as the receiver got it.
#[derive(Debug, Clone)]
struct Post {
    path: String,
    content_type: String,
    body: Vec<u8>,
}

/// A minimal OTLP/HTTP receiver: records every POST, answers 200 with an empty protobuf body.
struct Receiver {
    port: u16,
    posts: Arc<Mutex<Vec<Post>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let posts = Arc::new(Mutex::new(Vec::new()));
        let recorded = posts.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let recorded = recorded.clone();
                let service = service_fn(move |req: hyper::Request<Incoming>| {
                    let recorded = recorded.clone();
                    async move {
                        let path = req.uri().path().to_owned();
                        let content_type = req
                            .headers()
                            .get(hyper::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("")
                            .to_owned();
                        let body = req.into_body().collect().await.unwrap().to_bytes().to_vec();
                        recorded.lock().unwrap().push(Post {
                            path,
                            content_type,
                            body,
                        });
                        let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                        resp.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            "application/x-protobuf".parse().unwrap(),
                        );
                        Ok::<_, Infallible>(resp)
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { port, posts, task }
    }

    fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn posts(&self) -> Vec<Post> {
        self.posts.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn accept_span() -> SpanRecord {
    let start = SystemTime::now();
    SpanRecord {
        trace_id: TRACE_ID,
        span_id: ACCEPT_SPAN,
        parent_id: None,
        name: "courier.accept",
        kind: SpanKind::Server,
        start,
        end: start + Duration::from_millis(3),
        attributes: vec![
            ("faas.invoked_name", SpanValue::Text("echo".into())),
            ("courier.call_id", SpanValue::Text("call-42".into())),
        ],
        error: None,
    }
}

fn failed_attempt_span() -> SpanRecord {
    let start = SystemTime::now();
    SpanRecord {
        trace_id: TRACE_ID,
        span_id: ATTEMPT_SPAN,
        parent_id: Some(ACCEPT_SPAN),
        name: "courier.attempt",
        kind: SpanKind::Client,
        start,
        end: start + Duration::from_millis(20),
        attributes: vec![("http.response.status_code", SpanValue::Int(502))],
        error: Some("function answered 502".into()),
    }
}

#[tokio::test]
async fn recorded_spans_reach_the_receiver_as_protobuf_after_shutdown() {
    let receiver = Receiver::start().await;
    let (spans, telemetry) = OtlpSpans::start(&receiver.base_url(), "gateway").unwrap();
    spans.record(accept_span());
    spans.record(failed_attempt_span());
    telemetry.shutdown().await.unwrap();

    let posts = receiver.posts();
    assert!(!posts.is_empty(), "no export reached the receiver");
    for post in &posts {
        assert_eq!(post.path, "/v1/traces");
        assert_eq!(post.content_type, "application/x-protobuf");
    }
    let body: Vec<u8> = posts.into_iter().flat_map(|p| p.body).collect();
    for text in [
        "courier.accept",
        "courier.attempt",
        "service.name",
        "courier.component",
        "gateway",
        "call-42",
        "function answered 502",
    ] {
        assert!(contains(&body, text.as_bytes()), "{text:?} not exported");
    }
    assert!(contains(&body, &TRACE_ID), "trace id bytes not exported");
    assert!(contains(&body, &ACCEPT_SPAN), "accept span id not exported");
    assert!(
        contains(&body, &ATTEMPT_SPAN),
        "attempt span id not exported"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_with_or_without_the_traces_path_posts_to_v1_traces() {
    let receiver = Receiver::start().await;
    for endpoint in [
        receiver.base_url(),
        format!("{}/", receiver.base_url()),
        format!("{}/v1/traces", receiver.base_url()),
    ] {
        let (spans, telemetry) = OtlpSpans::start(&endpoint, "queue-worker").unwrap();
        spans.record(accept_span());
        telemetry.shutdown().await.unwrap();
    }
    let paths: Vec<String> = receiver.posts().into_iter().map(|p| p.path).collect();
    assert_eq!(paths, ["/v1/traces"; 3]);
}

#[tokio::test]
async fn spans_are_sent_on_the_interval_without_waiting_for_shutdown() {
    let receiver = Receiver::start().await;
    let config = Config {
        export_interval: Duration::from_millis(100),
        ..Config::new(receiver.base_url(), "gateway")
    };
    let (spans, telemetry) = OtlpSpans::start_with(config).unwrap();
    spans.record(accept_span());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !receiver
        .posts()
        .iter()
        .any(|p| contains(&p.body, b"courier.accept"))
    {
        assert!(Instant::now() < deadline, "no export within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    telemetry.shutdown().await.unwrap();
}

#[tokio::test]
async fn recording_never_blocks_when_the_receiver_is_down() {
    // A port that was free a moment ago: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let config = Config {
        export_timeout: Duration::from_millis(500),
        shutdown_timeout: Duration::from_secs(1),
        ..Config::new(format!("http://127.0.0.1:{port}"), "gateway")
    };
    let (spans, telemetry) = OtlpSpans::start_with(config).unwrap();

    let started = Instant::now();
    for _ in 0..10_000 {
        spans.record(failed_attempt_span());
    }
    let recording = started.elapsed();
    assert!(
        recording < Duration::from_millis(500),
        "10,000 records took {recording:?}"
    );

    let started = Instant::now();
    let _ = telemetry.shutdown().await; // may time out: nothing can be sent
    let stopping = started.elapsed();
    assert!(
        stopping < Duration::from_secs(3),
        "shutdown took {stopping:?}"
    );

    // After shutdown, spans are dropped quietly.
    spans.record(accept_span());
}

#[tokio::test]
async fn spans_recorded_after_shutdown_are_not_sent() {
    let receiver = Receiver::start().await;
    let (spans, telemetry) = OtlpSpans::start(&receiver.base_url(), "gateway").unwrap();
    telemetry.shutdown().await.unwrap();
    spans.record(accept_span());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        receiver
            .posts()
            .iter()
            .all(|p| !contains(&p.body, b"courier.accept"))
    );
}

#[tokio::test]
async fn dropping_the_guard_still_flushes_in_the_background() {
    let receiver = Receiver::start().await;
    let (spans, telemetry) = OtlpSpans::start(&receiver.base_url(), "gateway").unwrap();
    spans.record(accept_span());
    drop(telemetry);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !receiver
        .posts()
        .iter()
        .any(|p| contains(&p.body, b"courier.accept"))
    {
        assert!(
            Instant::now() < deadline,
            "nothing flushed within 10 s of the drop"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
