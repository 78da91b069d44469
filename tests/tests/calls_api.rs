//! The invocation ledger end to end (`/system/calls`): every queued call has a record from its
//! 202 on, `?wait=` long-polls until it ends, lists filter and sort, a cancelled call never
//! runs, results are kept on request, trace context travels with the call, and records
//! survive a `kill -9`. Each test runs on the embedded store and on JetStream (skipped, loudly,
//! without a nats-server 2.10+).

use std::time::Duration;

use courier_e2e::callback::CallbackReceiver;
use courier_e2e::ledger::{Backend, call_path, is_trace_id, trace_id_of};
use courier_e2e::{Courier, DEFAULT_NAMESPACE, fork_function, http_function, parse_rfc3339};
use courier_e2e::{random_token, url_encode};
use reqwest::header::HeaderValue;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::OffsetDateTime;

const READY: Duration = Duration::from_secs(20);
const SETTLE: Duration = Duration::from_secs(30);
const CALLBACKS: Duration = Duration::from_secs(30);

/// A caller's W3C trace context.
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";

/// Runs each named `async fn(Backend)` as a test on both backends: `embedded::<name>` and
/// `jetstream::<name>`.
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(courier_e2e::ledger::Backend::Embedded).await;
                }
            )*
        }
        mod jetstream {
            $(
                #[tokio::test(flavor = "multi_thread")]
                async fn $name() {
                    super::$name(courier_e2e::ledger::Backend::JetStream).await;
                }
            )*
        }
    };
}

on_both_backends!(
    a_queued_call_has_a_record_with_its_function_source_and_trace_id,
    wait_answers_as_soon_as_the_call_ends,
    wait_ends_at_its_timeout_with_the_record_as_it_is,
    unknown_and_hostile_ids_are_400_or_404_and_the_server_lives_on,
    the_calls_api_needs_the_admin_password,
    a_list_filters_by_function_and_state_newest_first,
    a_cancelled_queued_call_never_runs_and_a_started_one_cannot_be_cancelled,
    a_callers_traceparent_is_the_records_trace_and_reaches_the_function_and_callback,
    a_malformed_traceparent_is_replaced_not_echoed,
    a_kept_result_comes_back_with_the_functions_status_and_bytes,
    a_replayed_dead_letter_has_a_record_of_its_own_naming_the_original,
    records_survive_a_kill_9_of_courier,
);

async fn deploy_web(courier: &Courier, annotations: Value) {
    let mut web = http_function("web", &random_token());
    web["annotations"] = annotations;
    courier.deploy(&web).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
}

fn state(record: &Value) -> &str {
    record["state"].as_str().unwrap_or_default()
}

fn ids(records: &[Value]) -> Vec<&str> {
    records
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default())
        .collect()
}

async fn a_queued_call_has_a_record_with_its_function_source_and_trace_id(backend: Backend) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    let receiver = CallbackReceiver::start().await;
    deploy_web(&courier, json!({})).await;

    let before = OffsetDateTime::now_utc();
    let resp = courier
        .submit_async("web/sleep?s=0.5", &receiver.url("/cb"), "x")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = courier_e2e::call_id(&resp);
    let record = courier
        .call(&id)
        .await
        .unwrap_or_else(|| panic!("no record right after the 202\n{}", courier.output()));
    assert_eq!(record["id"], id.as_str(), "{record}");
    assert_eq!(record["function"], "web", "{record}");
    assert_eq!(record["namespace"], DEFAULT_NAMESPACE, "{record}");
    assert_eq!(record["source"], json!({"kind": "async"}), "{record}");
    assert!(
        ["queued", "running", "succeeded"].contains(&state(&record)),
        "{record}"
    );
    let trace_id = record["traceId"].as_str().unwrap_or_default();
    assert!(is_trace_id(trace_id), "{record}");
    let created = parse_rfc3339(record["createdAt"].as_str().expect("createdAt"));
    let slack = time::Duration::seconds(2);
    assert!(
        created >= before - slack && created <= OffsetDateTime::now_utc() + slack,
        "createdAt {created} is not the time of the submission"
    );
    assert_eq!(record["callback"]["url"], receiver.url("/cb").as_str());

    // Once it ends: one attempt, the function's status, the callback's outcome.
    let (done, _) = courier.call_waiting(&id, "20s").await;
    assert_eq!(state(&done), "succeeded", "{done}");
    let attempts = done["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{done}");
    assert_eq!(attempts[0]["status"], 200, "{done}");
    assert!(
        attempts[0]["durationSeconds"]
            .as_f64()
            .is_some_and(|s| s >= 0.4),
        "{done}"
    );
    assert!(attempts[0]["startedAt"].as_str().is_some(), "{done}");
    assert_eq!(done["traceId"], trace_id, "the trace id never changes");
    receiver.wait_for(1, CALLBACKS).await;
    let called_back = courier
        .wait_call(&id, "the callback recorded", SETTLE, |r| {
            r["callback"]["delivered"] == true
        })
        .await;
    assert_eq!(called_back["callback"]["status"], 200, "{called_back}");
    assert_eq!(called_back["callback"]["attempts"], 1, "{called_back}");
}

async fn wait_answers_as_soon_as_the_call_ends(backend: Backend) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    deploy_web(&courier, json!({})).await;
    let id = courier.submit("web/sleep?s=1", &[], "").await;
    let (record, took) = courier.call_waiting(&id, "30s").await;
    assert_eq!(state(&record), "succeeded", "{record}");
    assert!(
        took >= Duration::from_millis(500),
        "answered after {took:?}, before the 1 s call could end: {record}"
    );
    assert!(
        took < Duration::from_secs(10),
        "a wait of 30 s on a 1 s call took {took:?}"
    );

    // A call that has ended answers a wait at once.
    let (again, took) = courier.call_waiting(&id, "30s").await;
    assert_eq!(again, record);
    assert!(took < Duration::from_secs(2), "took {took:?}");
}

async fn wait_ends_at_its_timeout_with_the_record_as_it_is(backend: Backend) {
    // No queue worker: the call stays queued.
    let Some(courier) = backend.start_command("gateway", &[]).await else {
        return;
    };
    courier.deploy(&fork_function("echo", "cat")).await;
    let id = courier.submit("echo", &[], "never run").await;
    let (record, took) = courier.call_waiting(&id, "1500ms").await;
    assert_eq!(state(&record), "queued", "{record}");
    assert_eq!(record["attempts"], json!([]), "{record}");
    assert!(
        took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
        "a wait of 1.5 s took {took:?}"
    );
    // `wait=0s` and no wait at all answer at once.
    let (now, took) = courier.call_waiting(&id, "0s").await;
    assert_eq!(now, record);
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

async fn unknown_and_hostile_ids_are_400_or_404_and_the_server_lives_on(backend: Backend) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    courier.deploy(&fork_function("echo", "cat")).await;

    for suffix in ["", "/result"] {
        let path = format!("{}{suffix}", call_path("never-queued"));
        let resp = courier.admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    let resp = courier.cancel_call("never-queued").await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);

    let long = "x".repeat(10 * 1024);
    let hostile: [(&str, &[StatusCode]); 9] = [
        ("%00", &[StatusCode::BAD_REQUEST]),
        ("%FF", &[StatusCode::BAD_REQUEST]),
        ("a%09b", &[StatusCode::BAD_REQUEST]),
        ("%0d%0aSet-Cookie:%20x=1", &[StatusCode::BAD_REQUEST]),
        (&long, &[StatusCode::BAD_REQUEST]),
        ("..%2F..", &[StatusCode::NOT_FOUND]),
        ("..%2F..%2Fdead-letters", &[StatusCode::NOT_FOUND]),
        ("%2e%2e", &[StatusCode::BAD_REQUEST, StatusCode::NOT_FOUND]),
        ("%E2%80%AE%20*%3E", &[StatusCode::NOT_FOUND]),
    ];
    for (id, allowed) in hostile {
        for (method, suffix) in [
            (Method::GET, ""),
            (Method::GET, "?wait=1s"),
            (Method::DELETE, ""),
            (Method::GET, "/result"),
        ] {
            let path = format!("/system/calls/{id}{suffix}");
            let resp = courier
                .admin(method.clone(), &path)
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: {e}\n{}", courier.output()));
            assert!(
                allowed.contains(&resp.status()),
                "{method} {path} answered {}",
                resp.status()
            );
        }
    }

    // Bad queries are 400.
    let id = courier.submit("echo", &[], "x").await;
    for query in ["wait=5m1s", "wait=1h", "wait=soon", "wait=-1s", "bogus=1"] {
        let path = format!("{}?{query}", call_path(&id));
        let resp = courier.admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "GET {path}");
    }
    for query in [
        "state=done",
        "limit=0",
        "limit=1001",
        "limit=many",
        "function=Bad_Name",
        "function=echo.kube-system",
        "namespace=openfaas-fn",
    ] {
        let path = format!("/system/calls?{query}");
        let resp = courier.admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "GET {path}");
    }

    // A caller's X-Call-Id must be one the ledger can address.
    let too_long = "y".repeat(257);
    let bad_ids = [
        HeaderValue::from_str(&too_long).unwrap(),
        HeaderValue::from_str("tab\there").unwrap(),
        HeaderValue::from_bytes(b"caf\xe9").unwrap(),
    ];
    for bad in bad_ids {
        let resp = courier
            .client()
            .post(courier.url("/async-function/echo"))
            .header("X-Call-Id", bad.clone())
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "X-Call-Id {bad:?}");
        assert!(resp.text().await.unwrap().contains("X-Call-Id"));
    }
    // A caller's id with odd but printable characters is addressable as given.
    for odd in ["order 42", "orders/42?x#y", "../../etc/passwd", "a.b*>"] {
        let id = courier.submit("echo", &[("X-Call-Id", odd)], "x").await;
        assert_eq!(id, odd);
        let record = courier
            .call(odd)
            .await
            .unwrap_or_else(|| panic!("no record for {odd:?}\n{}", courier.output()));
        assert_eq!(record["id"], odd);
    }

    courier.assert_healthy().await;
}

async fn the_calls_api_needs_the_admin_password(backend: Backend) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    for (method, path) in [
        (Method::GET, "/system/calls".to_owned()),
        (Method::GET, call_path("x")),
        (Method::GET, format!("{}?wait=1s", call_path("x"))),
        (Method::DELETE, call_path("x")),
        (Method::GET, format!("{}/result", call_path("x"))),
    ] {
        let anonymous = courier
            .anonymous(method.clone(), &path)
            .send()
            .await
            .unwrap();
        assert_eq!(
            anonymous.status(),
            StatusCode::UNAUTHORIZED,
            "{method} {path}"
        );
        let wrong = courier
            .anonymous(method.clone(), &path)
            .basic_auth("admin", Some("not-the-password"))
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED, "{method} {path}");
    }
    let empty = courier.calls("").await;
    assert!(empty.is_empty(), "{empty:?}");
}

async fn a_list_filters_by_function_and_state_newest_first(backend: Backend) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    deploy_web(&courier, json!({})).await;

    // Oldest first: echo, echo, a web call that fails (404 is not retried), echo.
    let mut submitted = Vec::new();
    for path in ["echo", "echo", "web/status/404", "echo.openfaas-fn"] {
        submitted.push(courier.submit(path, &[], "x").await);
        // createdAt has millisecond resolution: keep the order unambiguous.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &submitted {
        let (record, _) = courier.call_waiting(id, "30s").await;
        assert!(
            ["succeeded", "failed"].contains(&state(&record)),
            "{record}"
        );
    }
    let [e1, e2, w, e3] = [0, 1, 2, 3].map(|i| submitted[i].as_str());

    let all = courier.calls("").await;
    assert_eq!(ids(&all), [e3, w, e2, e1], "newest first");
    for record in &all {
        assert!(record["attempts"].is_array(), "full records: {record}");
    }
    assert_eq!(ids(&courier.calls("function=echo").await), [e3, e2, e1]);
    assert_eq!(
        ids(&courier.calls("function=echo.openfaas-fn").await),
        [e3, e2, e1]
    );
    assert_eq!(ids(&courier.calls("function=web").await), [w]);
    assert_eq!(ids(&courier.calls("state=failed").await), [w]);
    assert_eq!(
        ids(&courier.calls("state=succeeded&function=echo&limit=2").await),
        [e3, e2]
    );
    assert_eq!(ids(&courier.calls("limit=1").await), [e3]);
    assert!(courier.calls("state=failed&function=echo").await.is_empty());
    assert!(courier.calls("state=queued").await.is_empty());
    assert!(courier.calls("function=nobody").await.is_empty());
    assert!(
        courier
            .calls("function=echo.other-namespace")
            .await
            .is_empty()
    );
    let failed = courier.call(w).await.expect("the failed call");
    assert_eq!(failed["attempts"][0]["status"], 404, "{failed}");
}

async fn a_cancelled_queued_call_never_runs_and_a_started_one_cannot_be_cancelled(
    backend: Backend,
) {
    // One call at a time: while the first runs, the second stays queued.
    let Some(courier) = backend.start(&["--max-inflight", "1"]).await else {
        return;
    };
    deploy_web(&courier, json!({})).await;
    let busy = courier.submit("web/sleep?s=3", &[], "").await;
    courier.wait_call_state(&busy, "running", SETTLE).await;

    // `/flaky/<key>/1` fails its first call with that key: a later call tells whether the
    // cancelled one ever reached the function.
    let key = random_token();
    let queued = courier.submit(&format!("web/flaky/{key}/1"), &[], "").await;
    let record = courier.call(&queued).await.expect("the queued call");
    assert_eq!(state(&record), "queued", "{record}");

    let resp = courier.cancel_call(&queued).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cancelled: Value = resp.json().await.expect("the cancelled record");
    assert_eq!(cancelled["id"], queued.as_str());
    assert_eq!(state(&cancelled), "cancelled");
    assert_eq!(cancelled["attempts"], json!([]));

    // Too late for the running call, and for the cancelled one a second time.
    let resp = courier.cancel_call(&busy).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(
        resp.text().await.unwrap().trim(),
        format!("call {busy} is running")
    );
    let resp = courier.cancel_call(&queued).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(resp.text().await.unwrap().contains("is cancelled"));

    // The worker takes the cancelled call off the queue without running it; the call behind
    // it runs.
    let behind = courier.submit("web/sleep?s=0", &[], "").await;
    let (done, _) = courier.call_waiting(&behind, "30s").await;
    assert_eq!(state(&done), "succeeded", "{done}");
    let (busy_done, _) = courier.call_waiting(&busy, "30s").await;
    assert_eq!(state(&busy_done), "succeeded", "{busy_done}");
    let resp = courier.cancel_call(&busy).await;
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert_eq!(
        resp.text().await.unwrap().trim(),
        format!("call {busy} is succeeded")
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let still = courier.call(&queued).await.expect("the cancelled call");
    assert_eq!(state(&still), "cancelled", "{still}");
    assert_eq!(still["attempts"], json!([]), "{still}");
    let first_seen = courier
        .invoke(Method::POST, &format!("web/flaky/{key}/1"), None)
        .await;
    assert_eq!(
        first_seen.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "the function had already seen the cancelled call"
    );
    assert_eq!(
        ids(&courier.calls("state=cancelled").await),
        [queued.as_str()]
    );
}

async fn a_callers_traceparent_is_the_records_trace_and_reaches_the_function_and_callback(
    backend: Backend,
) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    let receiver = CallbackReceiver::start().await;
    deploy_web(&courier, json!({})).await;
    let callback = receiver.url("/cb");
    let id = courier
        .submit(
            "web/traced",
            &[
                ("traceparent", TRACEPARENT),
                ("tracestate", "vendor=abc"),
                ("X-Callback-Url", &callback),
            ],
            "hi",
        )
        .await;
    let record = courier.call(&id).await.expect("a record");
    assert_eq!(record["traceId"], TRACE_ID, "{record}");

    let got = receiver.wait_for(1, CALLBACKS).await;
    let seen: Value = serde_json::from_slice(&got[0].body).expect("the function's JSON");
    let sent = seen["headers"]["traceparent"].as_str().unwrap_or_default();
    assert_eq!(trace_id_of(sent), TRACE_ID, "the function got {seen}");
    assert_eq!(seen["headers"]["tracestate"], "vendor=abc", "{seen}");
    assert_eq!(
        trace_id_of(got[0].header("traceparent")),
        TRACE_ID,
        "the callback got {:?}",
        got[0]
    );
}

async fn a_malformed_traceparent_is_replaced_not_echoed(backend: Backend) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    let receiver = CallbackReceiver::start().await;
    deploy_web(&courier, json!({})).await;
    let callback = receiver.url("/cb");
    let bad = "00-ZZZZ2f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let id = courier
        .submit(
            "web/traced",
            &[
                ("traceparent", bad),
                ("tracestate", "vendor=abc"),
                ("X-Callback-Url", &callback),
            ],
            "hi",
        )
        .await;
    let record = courier.call(&id).await.expect("a record");
    let trace_id = record["traceId"].as_str().unwrap_or_default().to_owned();
    assert!(is_trace_id(&trace_id), "{record}");

    let got = receiver.wait_for(1, CALLBACKS).await;
    let seen: Value = serde_json::from_slice(&got[0].body).expect("the function's JSON");
    let sent = seen["headers"]["traceparent"].as_str().unwrap_or_default();
    assert_eq!(trace_id_of(sent), trace_id, "the function got {seen}");
    assert!(!sent.contains("ZZZZ"), "{seen}");
    assert!(
        seen["headers"].get("tracestate").is_none(),
        "the tracestate of a replaced traceparent is dropped: {seen}"
    );

    // A call without one gets a fresh trace, different for each call.
    let plain = courier.submit("web/plain", &[], "").await;
    let other = courier.call(&plain).await.expect("a record");
    let other_trace = other["traceId"].as_str().unwrap_or_default();
    assert!(is_trace_id(other_trace), "{other}");
    assert_ne!(other_trace, trace_id);
}

async fn a_kept_result_comes_back_with_the_functions_status_and_bytes(backend: Backend) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    // Kept for every call of `keeper` (the annotation); for `web`, per call (the header).
    let mut keeper = fork_function("keeper", "cat");
    keeper["annotations"] = json!({ "com.courier.ledger.result": "true" });
    courier.deploy(&keeper).await;
    courier.wait_ready("keeper", DEFAULT_NAMESPACE, READY).await;
    deploy_web(&courier, json!({})).await;

    let body = "h\u{e9}llo {\"k\": [1, 2]} \u{1F600}\nend";
    let id = courier.submit("keeper", &[], body).await;
    let (record, _) = courier.call_waiting(&id, "30s").await;
    assert_eq!(state(&record), "succeeded", "{record}");
    assert_eq!(record["result"]["status"], 200, "{record}");
    assert_eq!(record["result"]["bytes"], body.len(), "{record}");
    assert_eq!(record["result"]["truncated"], false, "{record}");
    let resp = courier
        .admin(Method::GET, &format!("{}/result", call_path(&id)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(!resp.headers().contains_key("x-courier-result-truncated"));
    assert_eq!(
        resp.bytes().await.unwrap(),
        body.as_bytes(),
        "byte for byte"
    );

    // The function's own status and content type.
    let created = courier
        .submit("web/status/201", &[("X-Courier-Keep-Result", "true")], "")
        .await;
    let json_answer = courier
        .submit("web/described", &[("X-Courier-Keep-Result", "true")], "b")
        .await;
    for id in [&created, &json_answer] {
        courier.call_waiting(id, "30s").await;
    }
    let resp = courier
        .admin(Method::GET, &format!("{}/result", call_path(&created)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = courier
        .admin(Method::GET, &format!("{}/result", call_path(&json_answer)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let described: Value = resp.json().await.expect("the function's JSON, as kept");
    assert_eq!(described["path"], "/described");

    // Not kept: 404 saying how to opt in. Not ended yet: 409.
    let plain = courier.submit("web/sleep?s=0", &[], "").await;
    courier.call_waiting(&plain, "30s").await;
    let resp = courier
        .admin(Method::GET, &format!("{}/result", call_path(&plain)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("com.courier.ledger.result") && text.contains("X-Courier-Keep-Result"),
        "{text}"
    );
    let slow = courier
        .submit("web/sleep?s=5", &[("X-Courier-Keep-Result", "true")], "")
        .await;
    let resp = courier
        .admin(Method::GET, &format!("{}/result", call_path(&slow)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
}

async fn a_replayed_dead_letter_has_a_record_of_its_own_naming_the_original(backend: Backend) {
    let Some(courier) = backend.start(&[]).await else {
        return;
    };
    let receiver = CallbackReceiver::start().await;
    deploy_web(
        &courier,
        json!({
            "com.openfaas.retry.attempts": "2",
            "com.openfaas.retry.min_wait": "50ms",
            "com.openfaas.retry.max_wait": "200ms",
        }),
    )
    .await;
    let key = random_token();
    let resp = courier
        .submit_async(&format!("web/flaky/{key}/2"), &receiver.url("/cb"), "")
        .await;
    let original = courier_e2e::call_id(&resp);
    let (dead, _) = courier.call_waiting(&original, "30s").await;
    assert_eq!(state(&dead), "dead-lettered", "{dead}");
    let attempts = dead["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 2, "{dead}");
    assert_eq!(attempts[0]["status"], 503, "{dead}");
    assert!(attempts[0]["nextDelaySeconds"].as_f64().is_some(), "{dead}");

    let resp = courier
        .admin(
            Method::POST,
            &format!("/system/dead-letters/{}/replay", url_encode(&original)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    assert_eq!(resp.headers()["x-call-id"], original.as_str());
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let answer: Value = resp.json().await.expect("the replay's JSON");
    assert_eq!(answer["callId"], original.as_str());
    let replay = answer["replayId"].as_str().expect("replayId").to_owned();
    assert_ne!(replay, original);
    assert_eq!(location, call_path(&replay));

    let record = courier.call(&replay).await.expect("the replay's record");
    assert_eq!(
        record["source"],
        json!({"kind": "replay", "callId": original}),
        "{record}"
    );
    assert_eq!(record["function"], "web");
    assert_eq!(
        record["traceId"], dead["traceId"],
        "the replay keeps the trace"
    );
    assert!(
        parse_rfc3339(record["createdAt"].as_str().unwrap())
            > parse_rfc3339(dead["createdAt"].as_str().unwrap())
    );
    let (replayed, _) = courier.call_waiting(&replay, "30s").await;
    assert_eq!(state(&replayed), "succeeded", "{replayed}");
    // The callback still names the original call.
    let got = receiver.wait_for(2, CALLBACKS).await;
    assert_eq!(got[1].header("x-call-id"), original);
    // The original's record is as it was.
    let after = courier.call(&original).await.expect("the original");
    assert_eq!(state(&after), "dead-lettered");
}

async fn records_survive_a_kill_9_of_courier(backend: Backend) {
    // A short lease: a delivery the killed process held comes back soon after the restart.
    let Some(mut courier) = backend.start(&["--ack-wait", "2s"]).await else {
        return;
    };
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    let done = courier
        .submit("echo", &[("traceparent", TRACEPARENT)], "x")
        .await;
    let (before, _) = courier.call_waiting(&done, "30s").await;
    assert_eq!(state(&before), "succeeded", "{before}");
    // A later call, stored (durably) after the first one ended.
    let later = courier.submit("echo", &[], "y").await;
    let later_before = courier.call(&later).await.expect("the later call");

    courier.crash_and_restart().await;

    let after = courier
        .call(&done)
        .await
        .unwrap_or_else(|| panic!("the record is gone after kill -9\n{}", courier.output()));
    assert_eq!(after, before, "the ended call's record changed");
    assert_eq!(after["traceId"], TRACE_ID);
    let later_after = courier.call(&later).await.expect("the later call's record");
    for key in ["id", "function", "source", "createdAt", "traceId"] {
        assert_eq!(later_after[key], later_before[key], "{key}");
    }
    let (later_done, _) = courier.call_waiting(&later, "30s").await;
    assert_eq!(state(&later_done), "succeeded", "{later_done}");
    let listed = courier.calls("function=echo").await;
    assert_eq!(ids(&listed), [later.as_str(), done.as_str()]);
}

/// A wait is answered (with the record as it is) when courier shuts down, so the shutdown is
/// not held up for the rest of the wait.
#[tokio::test(flavor = "multi_thread")]
async fn a_wait_is_answered_when_courier_shuts_down() {
    let mut courier = Courier::builder().command("gateway").start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    let id = courier.submit("echo", &[], "never run").await;
    let request = courier
        .admin(Method::GET, &format!("{}?wait=4m", call_path(&id)))
        .timeout(Duration::from_secs(300))
        .send();
    let waiting = tokio::spawn(request);
    tokio::time::sleep(Duration::from_millis(700)).await;
    let started = std::time::Instant::now();
    let status = courier.stop().await;
    assert!(status.success(), "{}", courier.output());
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "shutdown took {:?}",
        started.elapsed()
    );
    let resp = waiting.await.unwrap().expect("the wait is answered");
    assert_eq!(resp.status(), StatusCode::OK);
    let record: Value = resp.json().await.unwrap();
    assert_eq!(state(&record), "queued", "{record}");
}

/// `--ledger-max-result-bytes`: a larger body is kept cut, and marked so.
#[tokio::test(flavor = "multi_thread")]
async fn a_result_past_the_limit_is_kept_truncated_and_marked() {
    let Some(courier) = Backend::Embedded
        .start(&["--ledger-max-result-bytes", "8"])
        .await
    else {
        return;
    };
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    let id = courier
        .submit(
            "echo",
            &[("X-Courier-Keep-Result", "true")],
            "0123456789abcdef",
        )
        .await;
    let (record, _) = courier.call_waiting(&id, "30s").await;
    assert_eq!(record["result"]["bytes"], 16, "{record}");
    assert_eq!(record["result"]["truncated"], true, "{record}");
    let resp = courier
        .admin(Method::GET, &format!("{}/result", call_path(&id)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["x-courier-result-truncated"], "true");
    assert_eq!(resp.bytes().await.unwrap(), &b"01234567"[..]);
}

/// `--ledger-retention 0`: calls still run; the API says the ledger is off.
#[tokio::test(flavor = "multi_thread")]
async fn with_the_ledger_off_calls_run_and_the_api_says_so() {
    let Some(courier) = Backend::Embedded.start(&["--ledger-retention", "0"]).await else {
        return;
    };
    let receiver = CallbackReceiver::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    let resp = courier
        .submit_async("echo", &receiver.url("/cb"), "still runs")
        .await;
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let id = courier_e2e::call_id(&resp);
    let got = receiver.wait_for(1, CALLBACKS).await;
    assert_eq!(got[0].body, b"still runs");
    for path in [call_path(&id), "/system/calls".to_owned()] {
        let resp = courier.admin(Method::GET, &path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "GET {path}");
        let text = resp.text().await.unwrap();
        assert!(text.contains("the invocation ledger is off"), "{text}");
    }
}
