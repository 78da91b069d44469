//! Asynchronous invocation end to end: `/async-function` stores the call, the queue worker
//! inside `courier up` invokes the function, retries failures from the queue, and posts the
//! final outcome to `X-Callback-Url` — received here by a real HTTP server.

use std::collections::HashSet;
use std::time::Duration;

use courier_e2e::callback::CallbackReceiver;
use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, call_id, fork_function, http_function, random_token,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);
const CALLBACKS: Duration = Duration::from_secs(30);

async fn web_with_retries(courier: &Courier, attempts: u32) {
    let mut web = http_function("web", &random_token());
    web["annotations"] = json!({
        "com.openfaas.retry.attempts": attempts.to_string(),
        "com.openfaas.retry.min_wait": "50ms",
        "com.openfaas.retry.max_wait": "200ms",
    });
    courier.deploy(&web).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_queued_call_reaches_the_function_and_its_result_reaches_the_callback() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;

    let resp = courier
        .submit_async("echo", &receiver.url("/done"), "hello async")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = call_id(&resp);
    assert!(resp.headers().contains_key("x-start-time"));

    let got = receiver.wait_for(1, CALLBACKS).await;
    let cb = &got[0];
    assert_eq!(cb.path, "/done");
    assert_eq!(cb.body, b"hello async");
    assert_eq!(cb.header("x-call-id"), id);
    assert_eq!(cb.header("x-function-status"), "200");
    assert_eq!(cb.header("x-function-name"), "echo");
    assert_eq!(cb.header("x-retry"), "1");
    assert!(!cb.header("x-retry-max").is_empty());
    assert!(
        cb.header("x-duration-seconds").parse::<f64>().is_ok(),
        "{cb:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn path_query_headers_and_body_reach_the_function_unchanged() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    web_with_retries(&courier, 3).await;
    let resp = courier
        .client()
        .post(courier.url("/async-function/web.openfaas-fn/a/b?x=1&y=2"))
        .header("X-Callback-Url", receiver.url("/cb"))
        .header("X-Custom", "kept")
        .header("X-Call-Id", "caller-chosen-id")
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(call_id(&resp), "caller-chosen-id");
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(
        got[0].header("x-function-status"),
        "200",
        "callback {:?}\n{}",
        got[0],
        courier.output()
    );
    let seen: Value = serde_json::from_slice(&got[0].body)
        .unwrap_or_else(|e| panic!("not the function's JSON ({e}): {:?}", got[0]));
    assert_eq!(seen["path"], "/a/b");
    assert_eq!(seen["query"], "x=1&y=2");
    assert_eq!(seen["body"], "payload");
    assert_eq!(seen["headers"]["x-custom"], "kept");
    assert_eq!(seen["headers"]["x-call-id"], "caller-chosen-id");
    assert_eq!(got[0].header("x-call-id"), "caller-chosen-id");
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_submissions_get_clear_4xx_answers() {
    let courier = Courier::builder()
        .arg("--max-async-body-bytes")
        .arg("1000")
        .start()
        .await;
    courier.deploy(&fork_function("echo", "cat")).await;
    let client = courier.client();
    let unknown = client
        .post(courier.url("/async-function/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), StatusCode::NOT_FOUND);
    let bad_cb = client
        .post(courier.url("/async-function/echo"))
        .header("X-Callback-Url", "not a url")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_cb.status(), StatusCode::BAD_REQUEST);
    assert!(bad_cb.text().await.unwrap().contains("X-Callback-Url"));
    let get = client
        .get(courier.url("/async-function/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), StatusCode::METHOD_NOT_ALLOWED);
    let big = client
        .post(courier.url("/async-function/echo"))
        .body(vec![b'x'; 1001])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let fits = client
        .post(courier.url("/async-function/echo"))
        .body(vec![b'x'; 1000])
        .send()
        .await
        .unwrap();
    assert_eq!(fits.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_same_call_id_submitted_twice_runs_once() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    for _ in 0..2 {
        let resp = courier
            .client()
            .post(courier.url("/async-function/echo"))
            .header("X-Callback-Url", receiver.url("/cb"))
            .header("X-Call-Id", "only-once")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    receiver.wait_for(1, CALLBACKS).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(receiver.received().len(), 1, "{:?}", receiver.received());
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_calls_are_retried_from_the_queue_until_they_succeed() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    web_with_retries(&courier, 5).await;
    let resp = courier
        .submit_async("web/flaky/k/2", &receiver.url("/cb"), "")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].header("x-function-status"), "200", "{:?}", got[0]);
    assert_eq!(got[0].header("x-retry"), "3");
    assert_eq!(got[0].header("x-retry-max"), "5");
    assert_eq!(got[0].body, b"ok after 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn when_attempts_run_out_the_last_failure_is_posted_once() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    web_with_retries(&courier, 2).await;
    courier
        .submit_async("web/status/503", &receiver.url("/cb"), "")
        .await;
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].header("x-function-status"), "503");
    assert_eq!(got[0].header("x-retry"), "2");
    assert_eq!(got[0].header("x-retry-max"), "2");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_status_that_is_not_retried_is_final_at_once() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    web_with_retries(&courier, 5).await;
    courier
        .submit_async("web/status/400", &receiver.url("/cb"), "")
        .await;
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].header("x-function-status"), "400");
    assert_eq!(got[0].header("x-retry"), "1");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_callback_refused_for_a_while_is_retried_until_taken() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    receiver.answer_with(503);
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    courier
        .submit_async("echo", &receiver.url("/cb"), "persist")
        .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(receiver.received().is_empty());
    receiver.answer_with(200);
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].body, b"persist");
}

#[tokio::test(flavor = "multi_thread")]
async fn nothing_is_lost_when_courier_is_killed_mid_burst() {
    let mut courier = Courier::builder().arg("--ack-wait").arg("2s").start().await;
    let receiver = CallbackReceiver::start().await;
    let mut slow = http_function("web", &random_token());
    slow["annotations"] = json!({"com.openfaas.retry.min_wait": "50ms"});
    courier.deploy(&slow).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;

    const CALLS: usize = 40;
    for i in 0..CALLS {
        let resp = courier
            .submit_async("web/sleep?s=0.2", &receiver.url(&format!("/cb/{i}")), "")
            .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED, "call {i}");
    }
    receiver.wait_for(5, CALLBACKS).await;
    courier.crash_and_restart().await;

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let got = receiver.received();
        let distinct: HashSet<&str> = got.iter().map(|c| c.path.as_str()).collect();
        if distinct.len() == CALLS {
            eprintln!(
                "all {CALLS} calls completed after kill -9: {} callbacks, {} duplicates",
                got.len(),
                got.len() - CALLS
            );
            assert!(got.iter().all(|c| c.header("x-function-status") == "200"));
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {CALLS} calls completed after the crash",
            distinct.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn queue_worker_metrics_count_submitted_and_processed_calls() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    for _ in 0..3 {
        courier
            .submit_async("echo", &receiver.url("/cb"), "m")
            .await;
    }
    receiver.wait_for(3, CALLBACKS).await;
    let metrics = courier.metrics().await;
    assert!(
        metrics.contains("queue_worker_messages_submitted_total 3"),
        "{metrics}"
    );
    let processed_line = metrics
        .lines()
        .find(|l| l.starts_with("queue_worker_messages_processed_total"))
        .unwrap_or_default();
    assert!(processed_line.ends_with(" 3"), "{processed_line}");
}

#[tokio::test(flavor = "multi_thread")]
async fn courier_invoke_async_prints_the_call_id_and_the_callback_follows() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    let mut cmd = courier.cli();
    cmd.args([
        "invoke",
        "echo",
        "--async",
        "--callback",
        &receiver.url("/cli"),
    ]);
    let out = courier_e2e::run_cli(cmd, Some(b"from the cli")).await;
    assert!(out.status.success(), "{out}");
    let id = out.stdout.trim().to_owned();
    assert!(!id.is_empty(), "{out}");
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].header("x-call-id"), id);
    assert_eq!(got[0].body, b"from the cli");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_that_runs_out_of_attempts_becomes_a_dead_letter_that_can_be_replayed() {
    let courier = Courier::start().await;
    let receiver = CallbackReceiver::start().await;
    web_with_retries(&courier, 2).await;
    let resp = courier
        .submit_async("web/flaky/dl/2", &receiver.url("/cb"), "body")
        .await;
    let id = call_id(&resp);
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].header("x-function-status"), "503");

    // Listed (newest first), with the OpenFaaS-style summary fields.
    let letters: Value = courier
        .admin_json(Method::GET, "/system/dead-letters")
        .await;
    let letters = letters.as_array().expect("an array");
    assert_eq!(letters.len(), 1, "{letters:?}");
    let letter = &letters[0];
    assert_eq!(letter["callId"], id.as_str());
    assert_eq!(letter["function"], "web");
    assert_eq!(letter["namespace"], DEFAULT_NAMESPACE);
    assert_eq!(letter["attempts"], 2);
    assert_eq!(letter["lastStatus"], 503);
    assert!(letter["failedAt"].as_str().is_some_and(|t| !t.is_empty()));
    assert!(
        letter.get("request").is_none(),
        "the list leaves the request out"
    );

    // Shown in full, by id, also through the CLI (one line per letter, call id first).
    let shown: Value = courier
        .admin_json(Method::GET, &format!("/system/dead-letters/{id}"))
        .await;
    assert_eq!(shown["request"]["Function"], "web");
    let mut list = courier.cli();
    list.args(["dlq", "list"]);
    let out = courier_e2e::run_cli(list, None).await;
    assert!(out.status.success(), "{out}");
    assert!(
        out.stdout.lines().next().unwrap_or("").starts_with(&id),
        "{out}"
    );

    // Replayed: the flaky function now succeeds (third call), the callback says so, and the
    // dead letter is gone.
    let mut replay = courier.cli();
    replay.args(["dlq", "replay", &id]);
    let out = courier_e2e::run_cli(replay, None).await;
    assert!(out.status.success(), "{out}");
    let got = receiver.wait_for(2, CALLBACKS).await;
    assert_eq!(got[1].header("x-call-id"), id);
    assert_eq!(got[1].header("x-function-status"), "200");
    let after: Value = courier
        .admin_json(Method::GET, "/system/dead-letters")
        .await;
    assert_eq!(after, json!([]));

    // Unknown ids are 404; purge answers how many it removed.
    let missing = courier
        .admin(Method::GET, "/system/dead-letters/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    let purged: Value = courier
        .admin_json(Method::DELETE, "/system/dead-letters")
        .await;
    assert_eq!(purged["removed"], 0);
    let anonymous = courier
        .anonymous(Method::GET, "/system/dead-letters")
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_long_burst_runs_every_call_once_on_its_first_delivery() {
    // With a short lease the worker's keep-alive ticks often; no fetch may be abandoned
    // half-way (its messages would wait out a lease and come back as a second attempt).
    let courier = Courier::builder()
        .arg("--ack-wait")
        .arg("1500ms")
        .start()
        .await;
    let receiver = CallbackReceiver::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    const CALLS: usize = 300;
    for i in 0..CALLS {
        let resp = courier
            .submit_async("echo", &receiver.url(&format!("/cb/{i}")), "x")
            .await;
        assert_eq!(resp.status(), StatusCode::ACCEPTED);
    }
    let got = receiver.wait_for(CALLS, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let got_after = receiver.received();
    assert_eq!(
        got_after.len(),
        CALLS,
        "duplicates: {}",
        got_after.len() - got.len().min(got_after.len())
    );
    let retried: Vec<_> = got_after
        .iter()
        .filter(|c| c.header("x-retry") != "1")
        .collect();
    assert!(
        retried.is_empty(),
        "{} calls needed a second delivery: {:?}",
        retried.len(),
        retried.first()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_running_past_its_lease_is_kept_alive_and_runs_once() {
    // A 1 s lease and a call of 2.5 s: without the worker's keep-alives (every third of the
    // lease) the call would be delivered again while it still runs.
    let courier = Courier::builder().arg("--ack-wait").arg("1s").start().await;
    let receiver = CallbackReceiver::start().await;
    web_with_retries(&courier, 3).await;
    let resp = courier
        .submit_async("web/sleep?s=2.5", &receiver.url("/slow"), "")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = call_id(&resp);
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].header("x-function-status"), "200", "{:?}", got[0]);
    assert_eq!(got[0].body, b"slept");
    // Long enough for a second delivery's attempt to end and post its own callback.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(receiver.received().len(), 1, "the call ran twice");
    let record = courier
        .admin_json(Method::GET, &format!("/system/calls/{id}"))
        .await;
    assert_eq!(record["state"], "succeeded", "{record}");
    assert_eq!(
        record["attempts"].as_array().map(Vec::len),
        Some(1),
        "{record}"
    );
}
