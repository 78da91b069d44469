//! The local process runtime: replicas are real processes, scaling starts and stops them, a call
//! to a function at zero replicas brings it back, crashed replicas are restarted, updates and
//! deletes replace or stop processes, shutdown leaves no orphans, and the bubblewrap sandbox.

use std::time::Duration;

use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, bubblewrap_installed, count_processes, eventually, fork_function,
    http_function, python, random_token, replicas_field, wait_process_count, wait_processes_gone,
};
use nix::sys::signal::Signal;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);
const PROCESSES: Duration = Duration::from_secs(15);

/// A fork command that reports uid, whether `/` is writable, and whether `/tmp` is.
const SANDBOX_PROBE: &str = "sh -c 'id -u; if touch /x 2>/dev/null; then echo root-writable; \
     else echo root-read-only; fi; if echo tmp-ok > /tmp/probe 2>/dev/null; then cat /tmp/probe; \
     else echo tmp-not-writable; fi'";

async fn provider_sandbox(courier: &Courier) -> Option<String> {
    let info: Value = courier
        .admin(Method::GET, "/system/info")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    info.pointer("/provider/sandbox")
        .and_then(Value::as_str)
        .map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_min_scale_label_starts_that_many_replicas() {
    let courier = Courier::start().await;
    let marker = random_token();
    let mut web = http_function("web", &marker);
    web["labels"] = json!({ "com.openfaas.scale.min": "2" });
    courier.deploy(&web).await;

    let status = courier
        .status("web", DEFAULT_NAMESPACE)
        .await
        .expect("web exists");
    assert_eq!(replicas_field(&status, "replicas"), 2, "{status}");
    courier
        .wait_available("web", DEFAULT_NAMESPACE, 2, READY)
        .await;
    wait_process_count(&marker, 2, PROCESSES).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_changes_the_number_of_running_processes() {
    let courier = Courier::start().await;
    let marker = random_token();
    courier.deploy(&http_function("web", &marker)).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    wait_process_count(&marker, 1, PROCESSES).await;

    courier.scale("web", 3).await;
    let status = courier
        .wait_available("web", DEFAULT_NAMESPACE, 3, READY)
        .await;
    assert_eq!(replicas_field(&status, "replicas"), 3, "{status}");
    wait_process_count(&marker, 3, PROCESSES).await;

    courier.scale("web", 1).await;
    wait_process_count(&marker, 1, PROCESSES).await;
    let status = courier.status("web", DEFAULT_NAMESPACE).await.unwrap();
    assert_eq!(replicas_field(&status, "replicas"), 1, "{status}");
    let resp = courier
        .invoke(Method::GET, "web/after-scale-down", None)
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_to_zero_stops_every_process_and_a_call_brings_one_back() {
    let courier = Courier::start().await;
    let marker = random_token();
    courier.deploy(&http_function("web", &marker)).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;

    courier.scale("web", 0).await;
    let status = courier.status("web", DEFAULT_NAMESPACE).await.unwrap();
    assert_eq!(replicas_field(&status, "replicas"), 0, "{status}");
    wait_processes_gone(&marker, PROCESSES).await;
    eventually(PROCESSES, "availableReplicas to drop to 0", || async {
        let status = courier.status("web", DEFAULT_NAMESPACE).await?;
        (replicas_field(&status, "availableReplicas") == 0).then_some(())
    })
    .await;

    let resp = courier
        .invoke(Method::POST, "web/wake-up", Some(b"hello".to_vec()))
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "the call that scales from zero"
    );
    let seen: Value = resp.json().await.unwrap();
    assert_eq!(seen["path"], "/wake-up");
    assert_eq!(seen["body"], "hello");

    let status = courier.status("web", DEFAULT_NAMESPACE).await.unwrap();
    assert!(
        replicas_field(&status, "availableReplicas") >= 1,
        "{status}"
    );
    assert!(
        count_processes(&marker) >= 1,
        "no process after scaling from zero"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_calls_to_a_function_at_zero_wake_it_once_and_all_succeed() {
    let courier = Courier::start().await;
    let marker = random_token();
    courier.deploy(&http_function("web", &marker)).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    courier.scale("web", 0).await;
    wait_processes_gone(&marker, PROCESSES).await;

    let calls: Vec<_> = (0..8)
        .map(|i| {
            let client = courier.client();
            let url = courier.url(&format!("/function/web/call-{i}"));
            tokio::spawn(async move { client.get(url).send().await.unwrap().status() })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), StatusCode::OK);
    }
    let status = courier.status("web", DEFAULT_NAMESPACE).await.unwrap();
    assert_eq!(
        replicas_field(&status, "replicas"),
        1,
        "woken once: {status}"
    );
    assert_eq!(count_processes(&marker), 1, "one replica process");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_function_scaled_to_zero_still_answers_a_call() {
    let courier = Courier::start().await;
    courier
        .deploy(&fork_function("test-scale-from-zero", "sha512sum"))
        .await;
    courier
        .wait_ready("test-scale-from-zero", DEFAULT_NAMESPACE, READY)
        .await;

    courier.scale("test-scale-from-zero", 0).await;
    let status = courier
        .status("test-scale-from-zero", DEFAULT_NAMESPACE)
        .await
        .unwrap();
    assert_eq!(replicas_field(&status, "replicas"), 0, "{status}");

    let resp = courier
        .invoke(
            Method::POST,
            "test-scale-from-zero.openfaas-fn",
            Some(b"abc".to_vec()),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let digest = resp.text().await.unwrap();
    assert!(
        digest.starts_with("ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a"),
        "sha512sum of abc: {digest}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_crashed_http_replica_is_restarted() {
    let courier = Courier::start().await;
    let marker = random_token();
    courier.deploy(&http_function("web", &marker)).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;

    let crash = courier.invoke(Method::GET, "web/crash", None).await;
    assert_eq!(crash.status(), StatusCode::BAD_GATEWAY);

    let body = courier
        .invoke_until_ok("web/after-crash", b"again", Duration::from_secs(20))
        .await;
    let seen: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(seen["path"], "/after-crash");
    wait_process_count(&marker, 1, PROCESSES).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_update_replaces_the_running_process_with_the_new_configuration() {
    let courier = Courier::start().await;
    let old_marker = random_token();
    let mut web = http_function("web", &old_marker);
    web["envVars"]["custom_env"] = json!("first");
    courier.deploy(&web).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    wait_process_count(&old_marker, 1, PROCESSES).await;

    let new_marker = random_token();
    let mut updated = http_function("web", &new_marker);
    updated["envVars"]["custom_env"] = json!("second");
    let resp = courier
        .admin(Method::PUT, "/system/functions")
        .json(&updated)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    eventually(
        Duration::from_secs(20),
        "calls to see custom_env=second",
        || async {
            let resp = courier.invoke(Method::GET, "web/env", None).await;
            if resp.status() != StatusCode::OK {
                return None;
            }
            let seen: Value = resp.json().await.ok()?;
            (seen["env"]["custom_env"] == "second").then_some(())
        },
    )
    .await;
    wait_processes_gone(&old_marker, PROCESSES).await;
    wait_process_count(&new_marker, 1, PROCESSES).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_function_stops_its_processes() {
    let courier = Courier::start().await;
    let marker = random_token();
    let mut web = http_function("web", &marker);
    web["labels"] = json!({ "com.openfaas.scale.min": "2" });
    courier.deploy(&web).await;
    wait_process_count(&marker, 2, PROCESSES).await;

    let resp = courier
        .admin(Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "web", "namespace": DEFAULT_NAMESPACE }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    wait_processes_gone(&marker, PROCESSES).await;
    let resp = courier.invoke(Method::GET, "web", None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sync_call_in_flight_is_answered_before_courier_exits_on_sigterm() {
    let mut courier = Courier::start().await;
    courier.deploy(&http_function("web", &random_token())).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;

    let client = courier.client();
    let url = courier.url("/function/web/sleep?s=2");
    let in_flight = tokio::spawn(async move {
        let resp = client.get(url).send().await.expect("the call in flight");
        (resp.status(), resp.text().await.expect("its body"))
    });
    // Let the call reach the function, then ask courier to stop.
    tokio::time::sleep(Duration::from_millis(700)).await;
    let status = courier.signal_and_wait(Signal::SIGTERM).await;
    assert!(
        status.success(),
        "courier exited with {status}\n{}",
        courier.output()
    );
    let (code, body) = in_flight.await.expect("the caller task");
    assert_eq!(code, StatusCode::OK, "{body}");
    assert_eq!(body, "slept");
}

async fn shutdown_leaves_no_function_process(sig: Signal) {
    let mut courier = Courier::start().await;
    let http_marker = random_token();
    let mut web = http_function("web", &http_marker);
    web["labels"] = json!({ "com.openfaas.scale.min": "2" });
    courier.deploy(&web).await;

    let fork_marker = random_token();
    let sleeper = format!(
        r#"{} -c "import time; time.sleep(60)" {fork_marker}"#,
        python()
    );
    courier.deploy(&fork_function("sleeper", &sleeper)).await;
    courier
        .wait_available("web", DEFAULT_NAMESPACE, 2, READY)
        .await;
    courier
        .wait_ready("sleeper", DEFAULT_NAMESPACE, READY)
        .await;
    wait_process_count(&http_marker, 2, PROCESSES).await;

    // A call in flight while courier is asked to stop.
    let client = courier.client();
    let url = courier.url("/function/sleeper");
    let in_flight = tokio::spawn(async move { client.post(url).body("zzz").send().await });
    wait_process_count(&fork_marker, 1, PROCESSES).await;

    let status = courier.signal_and_wait(sig).await;
    assert!(
        status.success(),
        "courier exited with {status} on {sig}\n{}",
        courier.output()
    );
    wait_processes_gone(&http_marker, Duration::from_secs(3)).await;
    wait_processes_gone(&fork_marker, Duration::from_secs(3)).await;
    in_flight.abort();
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_stops_every_function_process_and_exits_zero() {
    shutdown_leaves_no_function_process(Signal::SIGTERM).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn ctrl_c_stops_every_function_process_and_exits_zero() {
    shutdown_leaves_no_function_process(Signal::SIGINT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn with_bubblewrap_functions_run_as_non_root_on_a_read_only_root_with_a_writable_tmp() {
    if !bubblewrap_installed() {
        eprintln!("skipped: bubblewrap is not installed");
        return;
    }
    let courier = Courier::start().await;
    assert_eq!(
        provider_sandbox(&courier).await.as_deref(),
        Some("bubblewrap")
    );

    courier.deploy(&fork_function("probe", SANDBOX_PROBE)).await;
    courier.wait_ready("probe", DEFAULT_NAMESPACE, READY).await;
    let resp = courier.invoke(Method::POST, "probe", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.text().await.unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert_eq!(lines.len(), 3, "{body}");
    assert!(
        lines[0].parse::<u32>().is_ok_and(|uid| uid != 0),
        "uid: {body}"
    );
    assert_eq!(lines[1], "root-read-only", "{body}");
    assert_eq!(lines[2], "tmp-ok", "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_on_runs_http_and_fork_functions_as_non_root() {
    if !bubblewrap_installed() {
        eprintln!("skipped: bubblewrap is not installed");
        return;
    }
    let courier = Courier::builder().arg("--sandbox").arg("on").start().await;
    assert_eq!(
        provider_sandbox(&courier).await.as_deref(),
        Some("bubblewrap")
    );

    courier.deploy(&http_function("web", &random_token())).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    let resp = courier.invoke(Method::GET, "web/in-sandbox", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let seen: Value = resp.json().await.unwrap();
    assert!(
        seen["uid"].as_u64().is_some_and(|uid| uid != 0),
        "HTTP function uid: {seen}"
    );

    courier.deploy(&fork_function("probe", SANDBOX_PROBE)).await;
    courier.wait_ready("probe", DEFAULT_NAMESPACE, READY).await;
    let body = courier
        .invoke(Method::POST, "probe", None)
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<&str> = body.lines().collect();
    assert!(
        lines
            .first()
            .and_then(|l| l.parse::<u32>().ok())
            .is_some_and(|uid| uid != 0),
        "fork function uid: {body}"
    );
    assert_eq!(lines.get(1), Some(&"root-read-only"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn sandbox_off_runs_functions_without_bubblewrap() {
    let courier = Courier::builder().arg("--sandbox").arg("off").start().await;
    assert_ne!(
        provider_sandbox(&courier).await.as_deref(),
        Some("bubblewrap")
    );

    let marker = random_token();
    courier.deploy(&http_function("web", &marker)).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    let resp = courier.invoke(Method::GET, "web/unsandboxed", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(
        courier_e2e::count_sandbox_launchers(&marker),
        0,
        "a bwrap process carries the function with --sandbox off"
    );
}
