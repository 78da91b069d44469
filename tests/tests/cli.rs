//! The `courier` client commands (deploy, list, describe, invoke, logs, remove, secret) talking
//! HTTP to a running gateway, and `courier up -f` / environment configuration.

use std::time::{Duration, Instant};

use courier_e2e::{Courier, DEFAULT_NAMESPACE, fork_function, replicas_field, run_cli};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tokio::io::AsyncBufReadExt as _;

const READY: Duration = Duration::from_secs(20);

/// A stack with a `cat` function (all the metadata, optionally a secret) and an `env` one.
fn stack_yaml(gateway: &str, with_secret: bool) -> String {
    let secrets = if with_secret {
        "    secrets:\n      - api-key\n"
    } else {
        ""
    };
    format!(
        r#"version: 1.0
provider:
  name: openfaas
  gateway: {gateway}
functions:
  stack-echo:
    lang: dockerfile
    image: courier/stack-echo:latest
    environment:
      fprocess: cat
    labels:
      team: blue
      com.openfaas.scale.min: "1"
    annotations:
      note: from-stack
{secrets}    limits:
      memory: 128Mi
      cpu: 500m
    requests:
      memory: 16Mi
      cpu: 50m
    readonly_root_filesystem: true
  stack-env:
    image: courier/stack-env:latest
    environment:
      fprocess: env
      custom_env: from-stack
"#
    )
}

fn write_stack(courier: &Courier) -> std::path::PathBuf {
    let path = courier.scratch_dir().join("stack.yml");
    std::fs::write(&path, stack_yaml(&courier.base_url(), true)).unwrap();
    path
}

async fn courier_with_echo() -> Courier {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    courier
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_from_a_stack_file_returns_once_the_functions_are_ready() {
    let courier = Courier::start().await;
    let mut secret = courier.cli();
    secret.args(["secret", "create", "api-key", "--from-literal", "v"]);
    run_cli(secret, None)
        .await
        .assert_success("courier secret create");
    let stack = write_stack(&courier);

    let mut deploy = courier.cli();
    deploy.arg("deploy").arg("-f").arg(&stack);
    let out = run_cli(deploy, None).await;
    out.assert_success("courier deploy -f stack.yml");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("stack-echo"),
        "deploy progress names the function\n{out}"
    );

    // No polling: deploy only returns once the functions are ready.
    let echo = courier
        .status("stack-echo", DEFAULT_NAMESPACE)
        .await
        .expect("stack-echo deployed");
    assert!(
        replicas_field(&echo, "availableReplicas") >= 1,
        "not ready after deploy: {echo}"
    );
    let env = courier
        .status("stack-env", DEFAULT_NAMESPACE)
        .await
        .expect("stack-env deployed");
    assert!(
        replicas_field(&env, "availableReplicas") >= 1,
        "not ready after deploy: {env}"
    );

    assert_eq!(echo["image"], "courier/stack-echo:latest");
    assert_eq!(echo["labels"]["team"], "blue", "{echo}");
    assert_eq!(echo["annotations"]["note"], "from-stack", "{echo}");
    assert_eq!(echo["secrets"], json!(["api-key"]), "{echo}");
    assert_eq!(echo["limits"]["memory"], "128Mi", "{echo}");
    assert_eq!(echo["limits"]["cpu"], "500m", "{echo}");
    assert_eq!(echo["requests"]["memory"], "16Mi", "{echo}");
    assert_eq!(echo["readOnlyRootFilesystem"], true, "{echo}");

    let resp = courier
        .invoke(Method::POST, "stack-echo", Some(b"from the stack".to_vec()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "from the stack");
    let resp = courier.invoke(Method::GET, "stack-env", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.text().await.unwrap();
    assert!(body.lines().any(|l| l == "custom_env=from-stack"), "{body}");

    // Deploying the same stack again updates in place.
    let mut again = courier.cli();
    again.arg("deploy").arg("-f").arg(&stack);
    run_cli(again, None)
        .await
        .assert_success("second courier deploy -f stack.yml");
    assert_eq!(courier.list(DEFAULT_NAMESPACE).await.len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn list_prints_one_line_per_function_with_the_name_first() {
    let courier = courier_with_echo().await;
    courier.deploy(&fork_function("second-fn", "cat")).await;

    let mut list = courier.cli();
    list.arg("list");
    let out = run_cli(list, None).await;
    out.assert_success("courier list");
    for name in ["echo", "second-fn"] {
        let lines = out
            .stdout
            .lines()
            .filter(|l| l.split_whitespace().next() == Some(name))
            .count();
        assert_eq!(lines, 1, "one line starting with {name}\n{out}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn describe_shows_a_function_and_fails_for_an_unknown_one() {
    let courier = courier_with_echo().await;

    let mut describe = courier.cli();
    describe.args(["describe", "echo"]);
    let out = run_cli(describe, None).await;
    out.assert_success("courier describe echo");
    assert!(out.stdout.contains("echo"), "{out}");
    assert!(
        out.stdout.contains("courier/echo:test"),
        "describe shows the image\n{out}"
    );

    let mut unknown = courier.cli();
    unknown.args(["describe", "ghost"]);
    let out = run_cli(unknown, None).await;
    assert!(
        !out.status.success(),
        "describe of an unknown function succeeded\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn invoke_sends_stdin_and_prints_the_response_body() {
    let courier = courier_with_echo().await;
    let mut invoke = courier.cli();
    invoke.args(["invoke", "echo"]);
    let out = run_cli(invoke, Some(b"hello courier")).await;
    out.assert_success("courier invoke echo");
    assert_eq!(out.stdout.trim_end_matches('\n'), "hello courier", "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn logs_prints_the_function_log_lines() {
    let courier = courier_with_echo().await;
    let resp = courier
        .invoke(Method::POST, "echo", Some(b"log me".to_vec()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    // `courier logs` may follow; read until the line shows up, then stop it.
    let deadline = Instant::now() + Duration::from_secs(20);
    let seen = 'attempts: loop {
        let mut logs = courier.cli();
        logs.args(["logs", "echo"]);
        let mut child = logs.spawn().expect("spawn courier logs");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let mut seen = Vec::new();
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(remaining, lines.next_line()).await {
                Ok(Ok(Some(line))) => {
                    let found = line.contains("Wrote 6 Bytes");
                    seen.push(line);
                    if found {
                        let _ = child.kill().await;
                        break 'attempts seen;
                    }
                }
                // The command ended without the line (logs not flushed yet): try again.
                Ok(_) => break,
                Err(_) => {
                    let _ = child.kill().await;
                    panic!("courier logs never printed the Wrote line; saw {seen:?}");
                }
            }
        }
        let status = child.wait().await.expect("wait for courier logs");
        assert!(
            status.success(),
            "courier logs failed with {status}; saw {seen:?}"
        );
        assert!(
            Instant::now() < deadline,
            "courier logs never printed the Wrote line; saw {seen:?}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    assert!(
        seen.iter().any(|l| l.contains("Forking fprocess")),
        "no Forking line before the Wrote line: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn remove_deletes_the_function_and_fails_for_an_unknown_one() {
    let courier = courier_with_echo().await;
    let mut remove = courier.cli();
    remove.args(["remove", "echo"]);
    run_cli(remove, None)
        .await
        .assert_success("courier remove echo");
    assert!(courier.status("echo", DEFAULT_NAMESPACE).await.is_none());

    let mut again = courier.cli();
    again.args(["remove", "echo"]);
    let out = run_cli(again, None).await;
    assert!(
        !out.status.success(),
        "removing an unknown function succeeded\n{out}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn secret_create_list_and_remove_round_trip() {
    let courier = Courier::start().await;

    let mut create = courier.cli();
    create.args([
        "secret",
        "create",
        "api-key",
        "--from-literal",
        "HiddenValue42",
    ]);
    run_cli(create, None)
        .await
        .assert_success("courier secret create");
    let listed = courier.list_secrets().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["name"], "api-key");

    let mut list = courier.cli();
    list.args(["secret", "list"]);
    let out = run_cli(list, None).await;
    out.assert_success("courier secret list");
    assert!(out.stdout.contains("api-key"), "{out}");
    assert!(
        !out.stdout.contains("HiddenValue42"),
        "secret list printed a value\n{out}"
    );

    // The value reaches a function.
    let mut reader = fork_function("reader", r#"sh -c 'cat "$COURIER_SECRETS_DIR/api-key"'"#);
    reader["secrets"] = json!(["api-key"]);
    courier.deploy(&reader).await;
    let body = courier.invoke_until_ok("reader", b"", READY).await;
    assert_eq!(body, b"HiddenValue42");

    // A secret still used by a function cannot be removed (409); remove the function first.
    let mut in_use = courier.cli();
    in_use.args(["secret", "remove", "api-key"]);
    let out = run_cli(in_use, None).await;
    assert!(!out.status.success(), "{out}");
    assert!(out.stderr.contains("reader"), "{out}");
    let mut remove_fn = courier.cli();
    remove_fn.args(["remove", "reader"]);
    run_cli(remove_fn, None)
        .await
        .assert_success("courier remove");

    let mut remove = courier.cli();
    remove.args(["secret", "remove", "api-key"]);
    run_cli(remove, None)
        .await
        .assert_success("courier secret remove");
    assert!(courier.list_secrets().await.is_empty());
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_finds_the_password_through_the_data_dir() {
    let courier = Courier::builder().without_password_env().start().await;
    courier.deploy(&fork_function("echo", "cat")).await;

    let mut by_flag = courier.bare_cli();
    by_flag
        .env("COURIER_GATEWAY", courier.base_url())
        .arg("list")
        .arg("--data-dir")
        .arg(courier.data_dir());
    let out = run_cli(by_flag, None).await;
    out.assert_success("courier list --data-dir");
    assert!(out.stdout.lines().any(|l| l.starts_with("echo")), "{out}");

    let mut by_env = courier.bare_cli();
    by_env
        .env("COURIER_GATEWAY", courier.base_url())
        .env("COURIER_DATA_DIR", courier.data_dir())
        .arg("list");
    let out = run_cli(by_env, None).await;
    out.assert_success("courier list with COURIER_DATA_DIR");
    assert!(out.stdout.lines().any(|l| l.starts_with("echo")), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_client_takes_the_gateway_from_the_flag() {
    let courier = courier_with_echo().await;
    let mut list = courier.bare_cli();
    list.env("COURIER_BASIC_AUTH_PASSWORD", courier.password())
        .arg("list")
        .arg("--gateway")
        .arg(courier.base_url());
    let out = run_cli(list, None).await;
    out.assert_success("courier list --gateway");
    assert!(out.stdout.lines().any(|l| l.starts_with("echo")), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn client_commands_fail_with_a_wrong_password() {
    let courier = courier_with_echo().await;
    let mut list = courier.cli();
    list.env("COURIER_BASIC_AUTH_PASSWORD", "definitely-wrong")
        .arg("list");
    let out = run_cli(list, None).await;
    assert!(
        !out.status.success(),
        "list with a wrong password succeeded\n{out}"
    );
    assert!(!out.stdout.lines().any(|l| l.starts_with("echo")), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_deploys_the_stack_file_given_with_f() {
    let dir = tempfile::tempdir().unwrap();
    let stack = dir.path().join("stack.yml");
    // The gateway URL in the file is not used by `courier up`; no secret exists yet.
    std::fs::write(&stack, stack_yaml("http://127.0.0.1:8080", false)).unwrap();

    let courier = Courier::builder()
        .arg("-f")
        .arg(stack.to_str().unwrap())
        .start()
        .await;
    courier
        .wait_ready("stack-echo", DEFAULT_NAMESPACE, READY)
        .await;
    courier
        .wait_ready("stack-env", DEFAULT_NAMESPACE, READY)
        .await;
    let resp = courier
        .invoke(Method::POST, "stack-echo", Some(b"up -f".to_vec()))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "up -f");
}

#[tokio::test(flavor = "multi_thread")]
async fn up_reads_the_listen_address_and_data_dir_from_the_environment() {
    // start() only succeeds if courier listens on COURIER_LISTEN.
    let mut courier = Courier::builder()
        .config_via_env()
        .without_password_env()
        .start()
        .await;
    // password() reads <COURIER_DATA_DIR>/secrets/basic-auth-password.
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;

    courier.restart().await;
    let list = courier.list(DEFAULT_NAMESPACE).await;
    assert_eq!(list.len(), 1, "{list:?}");
    let body = courier.invoke_until_ok("echo", b"env config", READY).await;
    assert_eq!(body, b"env config");
}

/// The harness itself: a port taken between being picked and being bound (by a test running
/// beside this one) makes `courier up` exit with "Address already in use"; the start moves to
/// another port instead of failing the test.
#[tokio::test(flavor = "multi_thread")]
async fn a_start_on_a_port_taken_meanwhile_moves_to_another() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let port = taken.local_addr().expect("local addr").port();
    let courier = Courier::builder().first_port(port).start().await;
    assert_ne!(
        courier.port(),
        port,
        "courier cannot listen on a taken port"
    );
    let resp = reqwest::get(courier.url("/healthz"))
        .await
        .expect("GET /healthz");
    assert_eq!(resp.status(), StatusCode::OK);
    drop(taken);
}
