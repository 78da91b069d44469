//! Spans over OTLP/HTTP, end to end: the real `courier up --otlp-endpoint` exports its spans
//! to an OTLP receiver in the test (a plain HTTP server that keeps each export's bytes). A
//! caller's trace gets `courier.accept`, one `courier.attempt` per attempt (each with the
//! span id the function saw as its parent), `courier.callback` (the span id the receiver saw)
//! and, for a call given up, `courier.dead_letter`; a cron fire gets `courier.enqueue`.
//! `OTEL_EXPORTER_OTLP_ENDPOINT` works as the flag does. (That nothing is built without an
//! endpoint is the CLI's unit test: a receiver nobody is told about proves nothing.)

use std::time::Duration;

use courier_e2e::callback::CallbackReceiver;
use courier_e2e::otlp::OtlpReceiver;
use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, eventually, fork_function, http_function, random_token,
};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);
const CALLBACKS: Duration = Duration::from_secs(30);
/// How long spans may take to reach the receiver (the exporter posts a batch every second).
const EXPORTED: Duration = Duration::from_secs(20);

/// A caller's trace context (the W3C example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_PARENT: &str = "00f067aa0ba902b7";

/// Deploys the HTTP fixture as `web`, with three fast attempts.
async fn deploy_web(courier: &Courier) {
    let mut web = http_function("web", &random_token());
    web["annotations"] = json!({
        "com.openfaas.retry.attempts": "3",
        "com.openfaas.retry.min_wait": "50ms",
        "com.openfaas.retry.max_wait": "200ms",
    });
    courier.deploy(&web).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
}

/// The call's record once final (long-polled).
async fn final_record(courier: &Courier, id: &str) -> Value {
    courier.call_waiting(id, "30s").await.0
}

/// The parent span id of a `traceparent` value, as 8 bytes, after checking its trace.
fn parent_bytes(traceparent: &str, trace_id: &str) -> [u8; 8] {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    assert_eq!(parts[1], trace_id, "traceparent {traceparent:?}");
    let mut id = [0u8; 8];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&parts[2][2 * i..2 * i + 2], 16)
            .unwrap_or_else(|_| panic!("traceparent {traceparent:?}"));
    }
    id
}

/// Waits until some export holds `bytes` (a span id).
async fn wait_for_bytes(receiver: &OtlpReceiver, bytes: &[u8], what: &str) {
    eventually(EXPORTED, what, || async {
        receiver
            .exports()
            .iter()
            .any(|export| export.contains(bytes))
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_trace_gets_accept_attempt_callback_and_dead_letter_spans() {
    let otlp = OtlpReceiver::start().await;
    let courier = Courier::builder()
        .arg("--otlp-endpoint")
        .arg(otlp.endpoint())
        .start()
        .await;
    let callbacks = CallbackReceiver::start().await;
    deploy_web(&courier).await;

    // A call in the caller's trace, with a callback.
    let sent = format!("00-{TRACE_ID}-{CALLER_PARENT}-01");
    courier
        .submit(
            "web/traced",
            &[
                ("traceparent", &sent),
                ("X-Callback-Url", &callbacks.url("/traced")),
            ],
            "hello",
        )
        .await;
    let callback = eventually(CALLBACKS, "the traced call's callback", || async {
        callbacks
            .received()
            .into_iter()
            .find(|c| c.path == "/traced")
    })
    .await;
    let seen: Value = serde_json::from_slice(&callback.body).expect("the echo is JSON");
    let at_function = seen["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("the function got no traceparent: {seen:#}"));
    let attempt_span = parent_bytes(at_function, TRACE_ID);
    let callback_span = parent_bytes(callback.header("traceparent"), TRACE_ID);

    for name in ["courier.accept", "courier.attempt", "courier.callback"] {
        otlp.wait_for_span_in_trace(name, TRACE_ID, EXPORTED).await;
    }
    // The attempt's and the callback's spans are the ones their requests named as parent.
    wait_for_bytes(&otlp, &attempt_span, "the attempt's span id").await;
    wait_for_bytes(&otlp, &callback_span, "the callback's span id").await;
    assert!(
        otlp.exports()
            .iter()
            .all(|e| e.content_type == "application/x-protobuf"),
        "OTLP/HTTP carries protobuf"
    );

    // A call given up after its three attempts: a dead-letter span in its own trace.
    let id = courier.submit("web/status/500", &[], "hello").await;
    let record = final_record(&courier, &id).await;
    assert_eq!(record["state"], "dead-lettered", "{record:#}");
    let trace = record["traceId"].as_str().expect("a trace id").to_owned();
    otlp.wait_for_span_in_trace("courier.dead_letter", &trace, EXPORTED)
        .await;
    otlp.wait_for_span_in_trace("courier.attempt", &trace, EXPORTED)
        .await;
    // The minted trace's root is the accept span.
    otlp.wait_for_span_in_trace("courier.accept", &trace, EXPORTED)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_cron_fire_gets_an_enqueue_span_in_its_calls_trace() {
    let otlp = OtlpReceiver::start().await;
    let courier = Courier::builder()
        .arg("--otlp-endpoint")
        .arg(otlp.endpoint())
        .start()
        .await;
    let mut tick = fork_function("tick", "sh -c 'cat > /dev/null; echo ran'");
    tick["annotations"] = json!({ "topic": "cron-function", "schedule": "*/1 * * * * *" });
    courier.deploy(&tick).await;
    let record = eventually(READY, "a cron fire's record", || async {
        courier
            .calls("function=tick&state=succeeded")
            .await
            .into_iter()
            .next()
    })
    .await;
    let trace = record["traceId"].as_str().expect("a trace id").to_owned();
    otlp.wait_for_span_in_trace("courier.enqueue", &trace, EXPORTED)
        .await;
    otlp.wait_for_span_in_trace("courier.attempt", &trace, EXPORTED)
        .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_standard_environment_variable_names_the_endpoint_too() {
    let otlp = OtlpReceiver::start().await;
    let courier = Courier::builder()
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.endpoint())
        .start()
        .await;
    deploy_web(&courier).await;
    let id = courier.submit("web/traced", &[], "hello").await;
    let record = final_record(&courier, &id).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    let trace = record["traceId"].as_str().expect("a trace id").to_owned();
    otlp.wait_for_span_in_trace("courier.attempt", &trace, EXPORTED)
        .await;
    assert!(
        courier
            .output()
            .contains(&format!("spans: exported to {}", otlp.endpoint())),
        "the banner names the collector:\n{}",
        courier.output()
    );
}
