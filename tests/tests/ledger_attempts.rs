//! The invocation ledger as the queue worker writes it, end to end with the real `courier up`
//! on the embedded store and on NATS JetStream: every attempt with its status and the delay
//! before the next, the final state (succeeded, failed, dead-lettered), kept results served
//! byte for byte (and cut at `--ledger-max-result-bytes`), the callback's outcome, and the
//! caller's W3C trace context carried to the function and the callback.
//!
//! The JetStream tests are skipped loudly without a nats-server 2.10+, unless
//! `COURIER_TEST_REQUIRE_BROKERS=1`.

use std::time::Duration;

use courier_e2e::callback::CallbackReceiver;
use courier_e2e::{Courier, DEFAULT_NAMESPACE, call_id, eventually, http_function, random_token};
use courier_test_support::nats::NatsServer;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);
const CALLBACKS: Duration = Duration::from_secs(30);
/// How long a record may take to show what the worker wrote after an event the test saw.
const SETTLED: Duration = Duration::from_secs(15);

/// A caller's trace context (the W3C example).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_PARENT: &str = "00f067aa0ba902b7";
const TRACESTATE: &str = "rojo=00f067aa0ba902b7";

/// The label (or annotation) that keeps every result of a function.
const KEEP_RESULT: &str = "com.courier.ledger.result";

/// Deploys the HTTP fixture as `web` with three fast attempts, and as `kept` (labelled to
/// keep its results).
async fn deploy_functions(courier: &Courier) {
    let retries = json!({
        "com.openfaas.retry.attempts": "3",
        "com.openfaas.retry.min_wait": "50ms",
        "com.openfaas.retry.max_wait": "200ms",
    });
    let mut web = http_function("web", &random_token());
    web["annotations"] = retries.clone();
    courier.deploy(&web).await;
    let mut kept = http_function("kept", &random_token());
    kept["annotations"] = retries;
    kept["labels"] = json!({ KEEP_RESULT: "true" });
    courier.deploy(&kept).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    courier.wait_ready("kept", DEFAULT_NAMESPACE, READY).await;
}

/// `courier up --queue nats://…` plus `args`.
async fn courier_on_jetstream(nats: &NatsServer, args: &[&str]) -> Courier {
    let mut builder = Courier::builder().arg("--queue").arg(nats.url());
    for arg in args {
        builder = builder.arg(*arg);
    }
    builder.start().await
}

/// `POST /async-function/{path}` with `headers` and `body`; asserts 202 and returns the id.
async fn submit(courier: &Courier, path: &str, headers: &[(&str, &str)], body: Vec<u8>) -> String {
    let mut request = courier
        .client()
        .post(courier.url(&format!("/async-function/{path}")))
        .body(body);
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().await.expect("submit an asynchronous call");
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "POST /async-function/{path}\n{}",
        courier.output()
    );
    call_id(&resp)
}

/// `GET /system/calls/{id}` (with `?wait=…` when given): the record, asserting 200.
async fn record(courier: &Courier, id: &str, wait: Option<&str>) -> Value {
    let path = match wait {
        Some(wait) => format!("/system/calls/{id}?wait={wait}"),
        None => format!("/system/calls/{id}"),
    };
    let resp = courier
        .admin(Method::GET, &path)
        .timeout(Duration::from_secs(60))
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    let status = resp.status();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::OK, "GET {path}: {body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {body}"))
}

/// The record once its state is final (long-polled), asserting that it is.
async fn final_record(courier: &Courier, id: &str) -> Value {
    let record = record(courier, id, Some("30s")).await;
    let state = record["state"].as_str().unwrap_or_default();
    assert!(
        ["succeeded", "failed", "dead-lettered", "cancelled"].contains(&state),
        "call {id} is not final after waiting: {record:#}\n{}",
        courier.output()
    );
    record
}

/// The record once `done` holds for it.
async fn record_when(
    courier: &Courier,
    id: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let what = format!("the record of call {id} to show {what}");
    eventually(SETTLED, &what, || async {
        let record = record(courier, id, None).await;
        done(&record).then_some(record)
    })
    .await
}

/// The statuses of every attempt in `record`.
fn statuses(record: &Value) -> Vec<u64> {
    attempts(record)
        .iter()
        .map(|a| a["status"].as_u64().unwrap_or_default())
        .collect()
}

fn attempts(record: &Value) -> &Vec<Value> {
    record["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("no attempts array in {record:#}"))
}

/// The trace id and parent id of a `traceparent` value, checking its shape.
fn trace_parts(traceparent: &str) -> (String, String) {
    let parts: Vec<&str> = traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {traceparent:?}");
    assert_eq!(parts[0], "00", "traceparent {traceparent:?}");
    assert_eq!(parts[1].len(), 32, "traceparent {traceparent:?}");
    assert_eq!(parts[2].len(), 16, "traceparent {traceparent:?}");
    assert!(
        traceparent
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "traceparent {traceparent:?}"
    );
    (parts[1].to_owned(), parts[2].to_owned())
}

/// `GET /system/calls/{id}/result`.
async fn result(courier: &Courier, id: &str) -> reqwest::Response {
    courier
        .admin(Method::GET, &format!("/system/calls/{id}/result"))
        .send()
        .await
        .expect("GET /system/calls/{id}/result")
}

fn header<'a>(resp: &'a reqwest::Response, name: &str) -> &'a str {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

// --- Scenarios, each run on both backends -------------------------------------------------

/// `/flaky/<key>/2` answers 503 twice, then 200: three attempts, the first two with the delay
/// before the next, and the callback's delivery.
async fn fails_twice_then_succeeds(courier: &Courier, receiver: &CallbackReceiver) {
    let key = random_token();
    let id = submit(
        courier,
        &format!("web/flaky/{key}/2"),
        &[("X-Callback-Url", &receiver.url(&format!("/flaky/{key}")))],
        Vec::new(),
    )
    .await;
    let record = final_record(courier, &id).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    assert_eq!(record["id"], id.as_str());
    assert_eq!(record["function"], "web");
    assert_eq!(record["namespace"], DEFAULT_NAMESPACE);
    assert_eq!(record["source"]["kind"], "async");
    assert_eq!(statuses(&record), [503, 503, 200], "{record:#}");
    let attempts = attempts(&record);
    for (i, attempt) in attempts.iter().enumerate() {
        courier_e2e::parse_rfc3339(attempt["startedAt"].as_str().unwrap_or_default());
        assert!(
            attempt["durationSeconds"]
                .as_f64()
                .is_some_and(|d| d >= 0.0),
            "attempt {i}: {attempt}"
        );
        let delay = attempt.get("nextDelaySeconds").and_then(Value::as_f64);
        if i < 2 {
            // Between half and all of 50 ms, 100 ms (equal jitter), capped at 200 ms.
            assert!(
                delay.is_some_and(|d| d > 0.0 && d <= 0.2),
                "attempt {i} names the delay before the next: {attempt}"
            );
        } else {
            assert_eq!(delay, None, "the last attempt has no next: {attempt}");
        }
    }
    let first = courier_e2e::parse_rfc3339(attempts[0]["startedAt"].as_str().unwrap());
    let third = courier_e2e::parse_rfc3339(attempts[2]["startedAt"].as_str().unwrap());
    assert!(third > first, "attempts in order: {record:#}");

    receiver.wait_for(1, CALLBACKS).await;
    let record = record_when(courier, &id, "the callback delivered", |r| {
        r["callback"]["delivered"] == true
    })
    .await;
    assert_eq!(
        record["callback"],
        json!({"url": receiver.url(&format!("/flaky/{key}")), "status": 200, "attempts": 1,
            "delivered": true}),
        "{record:#}"
    );
}

/// `/status/503` on every attempt: dead-lettered after three.
async fn runs_out_of_attempts(courier: &Courier) {
    let id = submit(courier, "web/status/503", &[], Vec::new()).await;
    let record = final_record(courier, &id).await;
    assert_eq!(record["state"], "dead-lettered", "{record:#}");
    assert_eq!(statuses(&record), [503, 503, 503], "{record:#}");
    assert!(attempts(&record)[0]["nextDelaySeconds"].as_f64().is_some());
    assert_eq!(attempts(&record)[2].get("nextDelaySeconds"), None);
    assert!(
        attempts(&record)[2]["error"]
            .as_str()
            .is_some_and(|e| e.contains("503")),
        "{record:#}"
    );
    let letter = courier
        .admin_json(Method::GET, &format!("/system/dead-letters/{id}"))
        .await;
    assert_eq!(letter["callId"], id.as_str());
}

/// A call that asks (`X-Courier-Keep-Result: true`) gets its answer kept, every byte value
/// intact, with the function's status and content type.
async fn keeps_a_result_when_the_call_asks(courier: &Courier) {
    let body: Vec<u8> = (0..=255u8).collect();
    let id = submit(
        courier,
        "web/echo-bytes",
        &[
            ("X-Courier-Keep-Result", "true"),
            ("Content-Type", "application/x-courier-test"),
        ],
        body.clone(),
    )
    .await;
    let record = final_record(courier, &id).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    assert_eq!(
        record["result"],
        json!({"status": 200, "contentType": "application/x-courier-test", "bytes": 256,
            "truncated": false}),
        "{record:#}"
    );
    let resp = result(courier, &id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "application/x-courier-test");
    assert_eq!(header(&resp, "x-courier-result-truncated"), "");
    let kept = resp.bytes().await.expect("read the kept result");
    assert_eq!(kept.as_ref(), body.as_slice(), "byte for byte");
}

/// A caller's `traceparent` and `tracestate` reach the function (same trace, a new parent)
/// and the callback (same trace, another parent); the record names the trace. A call sent
/// without one gets a fresh trace, the same in the record and at the function.
async fn carries_the_callers_trace(courier: &Courier, receiver: &CallbackReceiver) {
    let sent = format!("00-{TRACE_ID}-{CALLER_PARENT}-01");
    let id = submit(
        courier,
        "web/traced",
        &[
            ("X-Callback-Url", &receiver.url("/traced")),
            ("traceparent", &sent),
            ("tracestate", TRACESTATE),
            ("X-Courier-Keep-Result", "true"),
        ],
        b"traced".to_vec(),
    )
    .await;
    let callback = eventually(CALLBACKS, "the traced call's callback", || async {
        receiver
            .received()
            .into_iter()
            .find(|c| c.path == "/traced")
    })
    .await;
    let seen: Value = serde_json::from_slice(&callback.body).expect("the echo is JSON");
    let at_function = seen["headers"]["traceparent"]
        .as_str()
        .unwrap_or_else(|| panic!("the function got no traceparent: {seen:#}"));
    let (trace, function_parent) = trace_parts(at_function);
    assert_eq!(trace, TRACE_ID, "the function joins the caller's trace");
    assert_ne!(function_parent, CALLER_PARENT, "the attempt is a new span");
    assert_eq!(seen["headers"]["tracestate"], TRACESTATE);
    assert_eq!(
        seen["headers"]["x-courier-keep-result"],
        Value::Null,
        "the worker's header is not forwarded"
    );

    let (trace, callback_parent) = trace_parts(callback.header("traceparent"));
    assert_eq!(trace, TRACE_ID, "the callback joins the caller's trace");
    assert_ne!(callback_parent, CALLER_PARENT);
    assert_ne!(
        callback_parent, function_parent,
        "the callback is a span of its own"
    );
    assert_eq!(callback.header("tracestate"), TRACESTATE);

    let record = final_record(courier, &id).await;
    assert_eq!(record["traceId"], TRACE_ID, "{record:#}");
    assert_eq!(
        record["result"]["status"], 200,
        "kept on request: {record:#}"
    );

    // No traceparent sent (and a malformed one is as good as none): a fresh trace.
    let id = submit(
        courier,
        "web/untraced",
        &[
            ("X-Callback-Url", &receiver.url("/untraced")),
            ("traceparent", "00-not-a-trace-01"),
        ],
        Vec::new(),
    )
    .await;
    let callback = eventually(CALLBACKS, "the untraced call's callback", || async {
        receiver
            .received()
            .into_iter()
            .find(|c| c.path == "/untraced")
    })
    .await;
    let seen: Value = serde_json::from_slice(&callback.body).expect("the echo is JSON");
    let (trace, _) = trace_parts(seen["headers"]["traceparent"].as_str().unwrap_or_default());
    assert_ne!(trace, TRACE_ID);
    let record = final_record(courier, &id).await;
    assert_eq!(record["traceId"], trace.as_str(), "{record:#}");
    assert_eq!(trace_parts(callback.header("traceparent")).0, trace);
}

// --- The embedded store ---------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_fails_twice_then_succeeds_shows_three_attempts_and_the_delays() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    deploy_functions(&courier).await;
    fails_twice_then_succeeds(&courier, &receiver).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_runs_out_of_attempts_shows_dead_lettered() {
    let courier = Courier::start().await;
    deploy_functions(&courier).await;
    runs_out_of_attempts(&courier).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_status_that_is_not_retried_shows_failed_after_one_attempt() {
    let courier = Courier::start().await;
    deploy_functions(&courier).await;
    let id = submit(&courier, "web/status/404", &[], Vec::new()).await;
    let record = final_record(&courier, &id).await;
    assert_eq!(record["state"], "failed", "{record:#}");
    assert_eq!(statuses(&record), [404], "{record:#}");
    assert_eq!(record.get("result"), None, "nothing kept unless asked");
    let resp = result(&courier, &id).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_kept_on_request_comes_back_byte_for_byte() {
    let courier = Courier::start().await;
    deploy_functions(&courier).await;
    keeps_a_result_when_the_call_asks(&courier).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_function_labelled_to_keep_results_keeps_every_result_and_others_keep_none() {
    let courier = Courier::start().await;
    deploy_functions(&courier).await;
    let body: Vec<u8> = (0..=255u8).rev().collect();
    let id = submit(
        &courier,
        "kept/echo-bytes",
        &[("Content-Type", "application/octet-stream")],
        body.clone(),
    )
    .await;
    let record = final_record(&courier, &id).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    let resp = result(&courier, &id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "content-type"), "application/octet-stream");
    assert_eq!(resp.bytes().await.unwrap().as_ref(), body.as_slice());

    // The same call to a function without the label, and without the header: nothing kept.
    let id = submit(&courier, "web/echo-bytes", &[], body).await;
    let record = final_record(&courier, &id).await;
    assert_eq!(record["state"], "succeeded", "{record:#}");
    assert_eq!(record.get("result"), None, "{record:#}");
    assert_eq!(result(&courier, &id).await.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_over_the_limit_is_kept_cut_and_marked_truncated() {
    let courier = Courier::builder()
        .arg("--ledger-max-result-bytes")
        .arg("1000")
        .start()
        .await;
    deploy_functions(&courier).await;
    let id = submit(
        &courier,
        "web/big?bytes=5000",
        &[("X-Courier-Keep-Result", "true")],
        Vec::new(),
    )
    .await;
    let record = final_record(&courier, &id).await;
    assert_eq!(
        record["result"],
        json!({"status": 200, "contentType": "text/plain", "bytes": 5000, "truncated": true}),
        "{record:#}"
    );
    let resp = result(&courier, &id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-courier-result-truncated"), "true");
    assert_eq!(header(&resp, "content-type"), "text/plain");
    let kept = resp.bytes().await.unwrap();
    assert_eq!(kept.as_ref(), vec![b'x'; 1000].as_slice());

    // At the limit exactly: whole, not marked.
    let id = submit(
        &courier,
        "web/big?bytes=1000",
        &[("X-Courier-Keep-Result", "true")],
        Vec::new(),
    )
    .await;
    final_record(&courier, &id).await;
    let resp = result(&courier, &id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-courier-result-truncated"), "");
    assert_eq!(resp.bytes().await.unwrap().len(), 1000);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_the_receiver_refuses_is_recorded_undelivered_with_its_attempts() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    receiver.answer_with(500);
    deploy_functions(&courier).await;
    let id = submit(
        &courier,
        "web/",
        &[("X-Callback-Url", &receiver.url("/refused"))],
        b"x".to_vec(),
    )
    .await;
    let record = final_record(&courier, &id).await;
    assert_eq!(
        record["state"], "succeeded",
        "the call itself succeeded: {record:#}"
    );
    // Five posts with backoff from 200 ms: about 3 s.
    let record = record_when(&courier, &id, "the callback given up", |r| {
        r["callback"]["attempts"].as_u64().unwrap_or_default() > 0
    })
    .await;
    assert_eq!(
        record["callback"],
        json!({"url": receiver.url("/refused"), "status": 500, "attempts": 5,
            "delivered": false}),
        "{record:#}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callers_trace_context_reaches_the_function_and_the_callback() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    deploy_functions(&courier).await;
    carries_the_callers_trace(&courier, &receiver).await;
}

// --- NATS JetStream -------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread")]
async fn on_jetstream_attempts_dead_letters_results_and_traces_are_recorded() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let courier = courier_on_jetstream(&nats, &[]).await;
    let receiver = CallbackReceiver::start().await;
    deploy_functions(&courier).await;
    fails_twice_then_succeeds(&courier, &receiver).await;
    runs_out_of_attempts(&courier).await;
    keeps_a_result_when_the_call_asks(&courier).await;
    carries_the_callers_trace(&courier, &receiver).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn on_jetstream_a_result_over_the_limit_is_kept_cut() {
    let Some(nats) = NatsServer::start().await else {
        return;
    };
    let courier = courier_on_jetstream(&nats, &["--ledger-max-result-bytes", "100"]).await;
    deploy_functions(&courier).await;
    let id = submit(&courier, "kept/big?bytes=300", &[], Vec::new()).await;
    let record = final_record(&courier, &id).await;
    assert_eq!(record["result"]["truncated"], true, "{record:#}");
    assert_eq!(record["result"]["bytes"], 300, "{record:#}");
    let resp = result(&courier, &id).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(header(&resp, "x-courier-result-truncated"), "true");
    assert_eq!(
        resp.bytes().await.unwrap().as_ref(),
        vec![b'x'; 100].as_slice()
    );
}
