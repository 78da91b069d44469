//! An OTLP/HTTP receiver for the trace tests: a real HTTP/1 server on loopback that records
//! every POST to `/v1/traces` (content type and raw protobuf body) and answers 200 with an
//! empty protobuf body (an `ExportTraceServiceResponse` with nothing rejected).
//!
//! Tests need no protobuf decoder: span names and attribute values appear in the body as
//! UTF-8, trace and span ids as their raw bytes. Give `courier` the receiver with
//! `--otlp-endpoint` (or `OTEL_EXPORTER_OTLP_ENDPOINT`) set to [`OtlpReceiver::endpoint`].

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The path OTLP/HTTP takes traces on.
pub const TRACES_PATH: &str = "/v1/traces";

/// One export as received.
#[derive(Debug, Clone)]
pub struct TraceExport {
    /// The request's `Content-Type` ("" when absent); `application/x-protobuf` for OTLP/HTTP.
    pub content_type: String,
    /// The raw body: an `ExportTraceServiceRequest`.
    pub body: Vec<u8>,
}

impl TraceExport {
    /// Whether the body holds `needle` (a span name, an attribute value, an id's bytes).
    pub fn contains(&self, needle: &[u8]) -> bool {
        contains(&self.body, needle)
    }
}

/// Records trace exports; stops when dropped.
#[derive(Debug)]
pub struct OtlpReceiver {
    port: u16,
    exports: Arc<Mutex<Vec<TraceExport>>>,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Starts a receiver on a free loopback port. Anything but a POST to `/v1/traces` gets a
    /// 404 and is not recorded.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind OTLP receiver");
        let port = listener.local_addr().expect("local addr").port();
        let exports = Arc::new(Mutex::new(Vec::new()));
        let recorded = exports.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: hyper::Request<Incoming>| {
                        let recorded = recorded.clone();
                        async move {
                            let is_export = req.method() == hyper::Method::POST
                                && req.uri().path() == TRACES_PATH;
                            let content_type = req
                                .headers()
                                .get(hyper::header::CONTENT_TYPE)
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes().to_vec())
                                .unwrap_or_default();
                            let mut resp = hyper::Response::new(Full::new(Bytes::new()));
                            if is_export {
                                recorded
                                    .lock()
                                    .unwrap()
                                    .push(TraceExport { content_type, body });
                                resp.headers_mut().insert(
                                    hyper::header::CONTENT_TYPE,
                                    hyper::header::HeaderValue::from_static(
                                        "application/x-protobuf",
                                    ),
                                );
                            } else {
                                *resp.status_mut() = hyper::StatusCode::NOT_FOUND;
                            }
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            port,
            exports,
            task,
        }
    }

    /// The base URL to give as `--otlp-endpoint` (`/v1/traces` is appended by the exporter).
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The full traces URL (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` style).
    pub fn traces_url(&self) -> String {
        format!("{}{TRACES_PATH}", self.endpoint())
    }

    /// Every export recorded so far.
    pub fn exports(&self) -> Vec<TraceExport> {
        self.exports.lock().unwrap().clone()
    }

    /// Whether some export holds a span named `name`.
    pub fn has_span(&self, name: &str) -> bool {
        self.exports().iter().any(|e| e.contains(name.as_bytes()))
    }

    /// Whether some export holds the 16-byte trace id.
    pub fn has_trace_id(&self, trace_id: &[u8; 16]) -> bool {
        self.exports().iter().any(|e| e.contains(trace_id))
    }

    /// Whether some export holds the trace id written as 32 hex digits (as in a
    /// `traceparent` or a ledger record's `traceId`). Panics on malformed hex.
    pub fn has_trace_id_hex(&self, trace_id: &str) -> bool {
        self.has_trace_id(&trace_id_bytes(trace_id))
    }

    /// Whether one export holds both a span named `name` and the trace id (hex): the span
    /// was exported in that trace (spans of one export batch may belong to several traces).
    pub fn has_span_in_trace(&self, name: &str, trace_id: &str) -> bool {
        let id = trace_id_bytes(trace_id);
        self.exports()
            .iter()
            .any(|e| e.contains(name.as_bytes()) && e.contains(&id))
    }

    /// Waits until a span named `name` was exported; panics after `timeout`.
    pub async fn wait_for_span(&self, name: &str, timeout: Duration) {
        self.wait_until(timeout, &format!("a span named {name:?}"), || {
            self.has_span(name)
        })
        .await;
    }

    /// Waits until a span named `name` was exported in the trace `trace_id` (hex); panics
    /// after `timeout`.
    pub async fn wait_for_span_in_trace(&self, name: &str, trace_id: &str, timeout: Duration) {
        let what = format!("a span named {name:?} in trace {trace_id}");
        self.wait_until(timeout, &what, || self.has_span_in_trace(name, trace_id))
            .await;
    }

    async fn wait_until(&self, timeout: Duration, what: &str, done: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + timeout;
        while !done() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no OTLP export with {what} within {timeout:?} ({} exports received)",
                self.exports().len()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The 16 bytes of a trace id written as 32 hex digits.
pub fn trace_id_bytes(hex: &str) -> [u8; 16] {
    assert!(
        hex.len() == 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "{hex:?} is not a 32-digit hex trace id"
    );
    let mut id = [0u8; 16];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex digit pair");
    }
    id
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hex_trace_id_becomes_its_bytes() {
        let id = trace_id_bytes("4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(id[0], 0x4b);
        assert_eq!(id[15], 0x36);
    }

    #[tokio::test]
    async fn posts_to_v1_traces_are_recorded_and_others_refused() {
        let receiver = OtlpReceiver::start().await;
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut body = b"\x0a\x10courier.accept".to_vec();
        body.extend_from_slice(&trace_id_bytes("4bf92f3577b34da6a3ce929d0e0e4736"));
        let resp = client
            .post(receiver.traces_url())
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert!(resp.bytes().await.unwrap().is_empty());
        let other = client
            .post(format!("{}/v1/metrics", receiver.endpoint()))
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(other.status(), 404);

        let exports = receiver.exports();
        assert_eq!(exports.len(), 1);
        assert_eq!(exports[0].content_type, "application/x-protobuf");
        receiver
            .wait_for_span_in_trace(
                "courier.accept",
                "4bf92f3577b34da6a3ce929d0e0e4736",
                Duration::from_secs(1),
            )
            .await;
        assert!(!receiver.has_span("courier.callback"));
        assert!(!receiver.has_trace_id_hex("00000000000000000000000000000001"));
    }
}
