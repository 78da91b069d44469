//! `courier calls list|show|wait|result|cancel` and `courier invoke --async --wait`: the
//! invocation ledger from the command line, against a real `courier up`, with the exit
//! statuses scripts rely on (0 succeeded, 1 failed / dead-lettered / cancelled or an error,
//! 2 when a wait's timeout ends first), and the ledger's server flags refused at start when
//! their values are bad.

use std::process::Stdio;
use std::time::{Duration, Instant};

use courier_e2e::{
    CliOutput, Courier, DEFAULT_NAMESPACE, call_id, courier_bin, eventually, fork_function,
    http_function, random_token, run_cli,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);

/// Starts `courier up` with a fork-mode `echo` (`cat`).
async fn courier_with_echo() -> Courier {
    let courier = Courier::start().await;
    deploy_echo(&courier).await;
    courier
}

async fn deploy_echo(courier: &Courier) {
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
}

/// Deploys the HTTP fixture as `web`, with two attempts 50-200 ms apart, so a failing call is
/// dead-lettered within a second.
async fn deploy_web(courier: &Courier) {
    let mut web = http_function("web", &random_token());
    web["annotations"] = json!({
        "com.openfaas.retry.attempts": "2",
        "com.openfaas.retry.min_wait": "50ms",
        "com.openfaas.retry.max_wait": "200ms",
    });
    courier.deploy(&web).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
}

/// `POST /async-function/{path}` with `headers` and `body`; asserts 202 and returns the call id.
async fn submit(courier: &Courier, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    let mut request = courier
        .anonymous(Method::POST, &format!("/async-function/{path}"))
        .body(body.to_owned());
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let resp = request.send().await.expect("submit an asynchronous call");
    assert_eq!(
        resp.status(),
        StatusCode::ACCEPTED,
        "POST /async-function/{path}"
    );
    call_id(&resp)
}

/// Runs `courier calls <args>` against `courier`.
async fn calls(courier: &Courier, args: &[&str]) -> CliOutput {
    let mut cmd = courier.cli();
    cmd.arg("calls").args(args);
    run_cli(cmd, None).await
}

/// `courier calls wait ID` (30 s), which must succeed; the record it printed.
async fn wait_succeeded(courier: &Courier, id: &str) -> Value {
    let out = calls(courier, &["wait", id, "--timeout", "30s"]).await;
    out.assert_success(&format!("courier calls wait {id}"));
    record(&out)
}

/// The JSON on a command's stdout.
fn record(out: &CliOutput) -> Value {
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("stdout is not JSON: {e}\n{out}"))
}

/// The gateway's own answer to `method path` (status and message), to compare with what the
/// CLI printed.
async fn server_says(courier: &Courier, method: Method, path: &str) -> (StatusCode, String) {
    let resp = courier
        .admin(method.clone(), path)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = resp.status();
    (
        status,
        resp.text().await.unwrap_or_default().trim().to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_wait_exits_0_and_prints_the_record_when_the_call_succeeds() {
    let courier = courier_with_echo().await;
    let id = submit(&courier, "echo", &[], "hello").await;

    let shown = wait_succeeded(&courier, &id).await;
    assert_eq!(shown["id"], id.as_str(), "{shown}");
    assert_eq!(shown["state"], "succeeded", "{shown}");
    assert_eq!(shown["function"], "echo", "{shown}");
    assert_eq!(shown["namespace"], DEFAULT_NAMESPACE, "{shown}");
    assert_eq!(shown["source"]["kind"], "async", "{shown}");
    let attempts = shown["attempts"].as_array().expect("attempts");
    assert_eq!(attempts.len(), 1, "{shown}");
    assert_eq!(attempts[0]["status"], 200, "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_wait_exits_1_when_the_call_is_dead_lettered() {
    let courier = Courier::start().await;
    deploy_web(&courier).await;
    let id = submit(&courier, "web/status/500", &[], "").await;

    let out = calls(&courier, &["wait", &id, "--timeout", "30s"]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    let shown = record(&out);
    assert_eq!(shown["state"], "dead-lettered", "{shown}");
    assert_eq!(
        shown["attempts"].as_array().map(Vec::len),
        Some(2),
        "{shown}"
    );
    assert!(out.stderr.contains("dead-lettered"), "{out}");
    assert!(
        out.stderr.contains("500"),
        "the last status is named\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn dlq_replay_prints_the_replays_own_call_id_which_names_the_original() {
    let courier = Courier::start().await;
    deploy_web(&courier).await;
    let id = submit(&courier, "web/status/500", &[], "").await;
    let out = calls(&courier, &["wait", &id]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");

    let mut replay = courier.cli();
    replay.args(["dlq", "replay", &id]);
    let out = run_cli(replay, None).await;
    out.assert_success("courier dlq replay");
    let replay_id = out
        .stdout
        .split_whitespace()
        .skip_while(|w| *w != "call")
        .nth(1)
        .unwrap_or_else(|| panic!("no replay id printed\n{out}"))
        .to_owned();
    assert_ne!(replay_id, id, "{out}");
    let shown = calls(&courier, &["show", &replay_id]).await;
    shown.assert_success("courier calls show (replay)");
    let shown = record(&shown);
    assert_eq!(
        shown["source"],
        json!({"kind": "replay", "callId": id}),
        "{shown}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_wait_exits_2_when_its_timeout_ends_before_the_call() {
    let courier = Courier::start().await;
    deploy_web(&courier).await;
    let id = submit(&courier, "web/sleep?s=5", &[], "").await;

    let started = Instant::now();
    let out = calls(&courier, &["wait", &id, "--timeout", "1s"]).await;
    let took = started.elapsed();
    assert_eq!(out.status.code(), Some(2), "{out}");
    assert!(
        took < Duration::from_secs(4),
        "the wait ended with its timeout, not the call: {took:?}\n{out}"
    );
    let shown = record(&out);
    assert!(
        ["queued", "running"].contains(&shown["state"].as_str().unwrap_or_default()),
        "{shown}"
    );
    assert!(
        out.stderr.contains(&format!("courier calls wait {id}")),
        "{out}"
    );

    // The call goes on; a second wait sees it through.
    let shown = wait_succeeded(&courier, &id).await;
    assert_eq!(shown["state"], "succeeded", "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_async_wait_prints_the_functions_answer() {
    let courier = courier_with_echo().await;
    let mut cmd = courier.cli();
    cmd.args(["invoke", "echo", "--async", "--wait"]);
    let out = run_cli(cmd, Some(b"answered through the queue")).await;
    out.assert_success("courier invoke echo --async --wait");
    assert_eq!(out.stdout, "answered through the queue", "{out}");

    // The call it made is in the ledger, with its answer kept.
    let list = calls(&courier, &["list", "--function", "echo", "--json"]).await;
    list.assert_success("courier calls list --json");
    let listed = record(&list);
    let first = &listed.as_array().expect("an array")[0];
    assert_eq!(first["state"], "succeeded", "{listed}");
    assert_eq!(first["result"]["status"], 200, "{listed}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_async_wait_exits_1_with_the_answer_on_stderr_when_the_call_fails() {
    let courier = Courier::start().await;
    let mut failing = fork_function("failing", "sh -c 'echo boom; exit 1'");
    failing["annotations"] = json!({
        "com.openfaas.retry.attempts": "2",
        "com.openfaas.retry.min_wait": "50ms",
        "com.openfaas.retry.max_wait": "200ms",
    });
    courier.deploy(&failing).await;
    courier
        .wait_ready("failing", DEFAULT_NAMESPACE, READY)
        .await;

    let mut cmd = courier.cli();
    cmd.args(["invoke", "failing", "--async", "--wait"]);
    let out = run_cli(cmd, Some(b"")).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(
        out.stderr.contains("boom"),
        "the answer goes to stderr\n{out}"
    );
    assert!(out.stderr.contains("dead-lettered"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_async_wait_exits_2_and_prints_the_call_id_when_its_timeout_ends_first() {
    let courier = Courier::start().await;
    courier
        .deploy(&fork_function("slow", "sh -c 'sleep 5; echo late'"))
        .await;
    courier.wait_ready("slow", DEFAULT_NAMESPACE, READY).await;

    let mut cmd = courier.cli();
    cmd.args(["invoke", "slow", "--async", "--wait", "--timeout", "1s"]);
    let out = run_cli(cmd, Some(b"")).await;
    assert_eq!(out.status.code(), Some(2), "{out}");
    let id = out.stdout.trim();
    assert!(!id.is_empty(), "{out}");
    let (status, _) = server_says(&courier, Method::GET, &format!("/system/calls/{id}")).await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the printed id is the call's\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_list_prints_a_table_newest_first_and_filters_by_function_and_state() {
    let courier = courier_with_echo().await;
    deploy_web(&courier).await;
    let first = submit(&courier, "echo", &[], "one").await;
    wait_succeeded(&courier, &first).await;
    let second = submit(&courier, "echo", &[], "two").await;
    wait_succeeded(&courier, &second).await;
    let failed = submit(&courier, "web/status/400", &[], "").await;
    let out = calls(&courier, &["wait", &failed]).await;
    assert_eq!(out.status.code(), Some(1), "a 400 is final at once\n{out}");
    assert_eq!(record(&out)["state"], "failed", "{out}");

    let out = calls(&courier, &["list"]).await;
    out.assert_success("courier calls list");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let header: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        header,
        [
            "CALL", "ID", "FUNCTION", "STATE", "ATTEMPTS", "CREATED", "SOURCE"
        ],
        "{out}"
    );
    let rows: Vec<Vec<&str>> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    let ids: Vec<&str> = rows.iter().map(|r| r[0]).collect();
    assert_eq!(
        ids,
        [failed.as_str(), &second, &first],
        "newest first\n{out}"
    );
    assert_eq!(rows[0][1..4], ["web.openfaas-fn", "failed", "1"], "{out}");
    assert_eq!(
        rows[1][1..4],
        ["echo.openfaas-fn", "succeeded", "1"],
        "{out}"
    );
    assert_eq!(rows[1][5], "async", "{out}");

    let out = calls(&courier, &["list", "--function", "echo"]).await;
    out.assert_success("courier calls list --function echo");
    assert_eq!(out.stdout.lines().count(), 3, "{out}");
    assert!(!out.stdout.contains(&failed), "{out}");

    let out = calls(&courier, &["list", "--state", "failed", "--json"]).await;
    out.assert_success("courier calls list --state failed --json");
    let listed = record(&out);
    let listed = listed.as_array().expect("an array");
    assert_eq!(listed.len(), 1, "{out}");
    assert_eq!(listed[0]["id"], failed.as_str(), "{out}");

    let out = calls(&courier, &["list", "--limit", "1", "--json"]).await;
    out.assert_success("courier calls list --limit 1");
    assert_eq!(record(&out).as_array().map(Vec::len), Some(1), "{out}");

    // Refused before anything is sent.
    let out = calls(&courier, &["list", "--state", "finished"]).await;
    assert!(!out.status.success(), "{out}");
    assert!(
        out.stderr.contains("dead-lettered"),
        "the states are listed\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_show_prints_the_record_and_an_unknown_id_fails_with_the_servers_message() {
    let courier = courier_with_echo().await;
    let id = submit(
        &courier,
        "echo",
        &[(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )],
        "x",
    )
    .await;
    wait_succeeded(&courier, &id).await;

    let out = calls(&courier, &["show", &id]).await;
    out.assert_success("courier calls show");
    let shown = record(&out);
    assert_eq!(shown["id"], id.as_str(), "{shown}");
    assert_eq!(
        shown["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{shown}"
    );
    assert!(out.stdout.contains("\n  \"id\""), "pretty-printed\n{out}");

    let (status, message) = server_says(&courier, Method::GET, "/system/calls/no-such-call").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!message.is_empty());
    for command in ["show", "wait", "result", "cancel"] {
        let out = calls(&courier, &[command, "no-such-call"]).await;
        assert_eq!(out.status.code(), Some(1), "calls {command}\n{out}");
        assert!(out.stdout.is_empty(), "calls {command}\n{out}");
        assert!(
            out.stderr.contains("no-such-call"),
            "calls {command} names the id\n{out}"
        );
        assert!(!out.stderr.contains("panicked"), "{out}");
    }
    let out = calls(&courier, &["show", "no-such-call"]).await;
    assert!(out.stderr.contains(&message), "the server's message\n{out}");

    // A hostile id is refused by the server, not a crash.
    let out = calls(&courier, &["show", &"x".repeat(300)]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_cancel_cancels_a_queued_call_and_refuses_one_that_started() {
    // One call of `web` at a time: the second waits in the queue while the first sleeps.
    let courier = Courier::builder()
        .arg("--max-inflight-per-function")
        .arg("1")
        .start()
        .await;
    deploy_web(&courier).await;
    let running = submit(&courier, "web/sleep?s=3", &[], "").await;
    eventually(
        Duration::from_secs(10),
        "the first call to start",
        || async {
            let shown = courier
                .admin_json(Method::GET, &format!("/system/calls/{running}"))
                .await;
            (shown["state"] == "running").then_some(())
        },
    )
    .await;
    let queued = submit(&courier, "web/sleep?s=3", &[], "").await;

    let out = calls(&courier, &["cancel", &queued]).await;
    out.assert_success("courier calls cancel (queued)");
    assert_eq!(record(&out)["state"], "cancelled", "{out}");

    // Once cancelled, or once started, a cancel is a 409: the server's message, exit 1.
    let (status, message) =
        server_says(&courier, Method::DELETE, &format!("/system/calls/{queued}")).await;
    assert_eq!(status, StatusCode::CONFLICT);
    let out = calls(&courier, &["cancel", &queued]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains(&message), "{out}");
    assert!(out.stderr.contains("cancelled"), "{out}");
    let out = calls(&courier, &["cancel", &running]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains("running"), "{out}");

    // Waiting on a cancelled call ends at once, unsuccessfully; it never ran.
    let out = calls(&courier, &["wait", &queued]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    let shown = record(&out);
    assert_eq!(shown["state"], "cancelled", "{shown}");
    assert_eq!(shown["attempts"], json!([]), "{shown}");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_result_prints_the_kept_body_and_says_when_none_was_kept() {
    let courier = courier_with_echo().await;
    let kept = submit(
        &courier,
        "echo",
        &[("X-Courier-Keep-Result", "true")],
        "kept bytes",
    )
    .await;
    wait_succeeded(&courier, &kept).await;
    let out = calls(&courier, &["result", &kept]).await;
    out.assert_success("courier calls result");
    assert_eq!(out.stdout, "kept bytes", "{out}");
    assert!(!out.stderr.contains("truncated"), "{out}");

    let not_kept = submit(&courier, "echo", &[], "gone").await;
    wait_succeeded(&courier, &not_kept).await;
    let (status, message) = server_says(
        &courier,
        Method::GET,
        &format!("/system/calls/{not_kept}/result"),
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let out = calls(&courier, &["result", &not_kept]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stdout.is_empty(), "{out}");
    assert!(out.stderr.contains(&message), "{out}");
    assert!(
        out.stderr.contains("com.courier.ledger.result"),
        "the message says how to opt in\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_result_past_ledger_max_result_bytes_is_printed_truncated_with_a_note() {
    let courier = Courier::builder()
        .arg("--ledger-max-result-bytes")
        .arg("4")
        .start()
        .await;
    deploy_echo(&courier).await;
    let id = submit(
        &courier,
        "echo",
        &[("X-Courier-Keep-Result", "true")],
        "0123456789",
    )
    .await;
    wait_succeeded(&courier, &id).await;
    let out = calls(&courier, &["result", &id]).await;
    out.assert_success("courier calls result (truncated)");
    assert_eq!(out.stdout, "0123", "{out}");
    assert!(out.stderr.contains("truncated"), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn with_ledger_retention_0_from_the_environment_the_ledger_is_off() {
    let courier = Courier::builder()
        .env("COURIER_LEDGER_RETENTION", "0")
        .start()
        .await;
    deploy_echo(&courier).await;
    let id = submit(&courier, "echo", &[], "x").await;
    let (status, message) =
        server_says(&courier, Method::GET, &format!("/system/calls/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(message.contains("off"), "{message}");
    let out = calls(&courier, &["show", &id]).await;
    assert_eq!(out.status.code(), Some(1), "{out}");
    assert!(out.stderr.contains(&message), "{out}");
}

/// Runs `courier <args>` with `env` in an empty directory; it must exit on its own.
async fn run_courier(args: &[&str], env: &[(&str, &str)]) -> CliOutput {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut cmd = tokio::process::Command::new(courier_bin());
    for (name, _) in std::env::vars() {
        if name.starts_with("COURIER_") {
            cmd.env_remove(name);
        }
    }
    cmd.args(args)
        .envs(env.iter().copied())
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    run_cli(cmd, None).await
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_ledger_flags_stop_every_queue_process_at_start_with_the_flag_named() {
    let queue = "--queue=nats://127.0.0.1:1";
    let bad: [(&[&str], &str); 3] = [
        (&["--ledger-retention", "soon"], "--ledger-retention"),
        (&["--ledger-max-records", "0"], "--ledger-max-records"),
        (
            &["--ledger-max-result-bytes", "lots"],
            "--ledger-max-result-bytes",
        ),
    ];
    for process in [
        &["up", "--listen", "127.0.0.1:0"][..],
        &["gateway", "--listen", "127.0.0.1:0"],
        &["queue-worker", queue],
        &["scheduler", queue],
        &["connector", "kafka", queue],
        &["connector", "amqp", queue],
    ] {
        for (flag, name) in bad {
            let args: Vec<&str> = process.iter().chain(flag).copied().collect();
            let out = run_courier(&args, &[]).await;
            assert_eq!(out.status.code(), Some(2), "courier {args:?}\n{out}");
            assert!(out.stderr.contains(name), "courier {args:?}\n{out}");
        }
    }
    for (var, value, name) in [
        ("COURIER_LEDGER_RETENTION", "soon", "--ledger-retention"),
        ("COURIER_LEDGER_MAX_RECORDS", "-1", "--ledger-max-records"),
        (
            "COURIER_LEDGER_MAX_RESULT_BYTES",
            "99999999999",
            "--ledger-max-result-bytes",
        ),
    ] {
        let out = run_courier(&["queue-worker", queue], &[(var, value)]).await;
        assert_eq!(out.status.code(), Some(2), "{var}={value}\n{out}");
        assert!(out.stderr.contains(name), "{var}={value}\n{out}");
    }
}
