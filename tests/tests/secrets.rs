//! Secrets: the `/system/secrets` API (values never read back) and how a function receives
//! its secrets (`/var/openfaas/secrets/<name>` in the sandbox, `$COURIER_SECRETS_DIR` always).

use std::time::Duration;

use base64::Engine as _;
use courier_e2e::{Courier, DEFAULT_NAMESPACE, bubblewrap_installed, eventually, fork_function};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);

async fn send(courier: &Courier, method: Method, body: &Value) -> (StatusCode, String) {
    let resp = courier
        .admin(method, "/system/secrets")
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

fn secret(name: &str, value: &str) -> Value {
    json!({ "name": name, "namespace": DEFAULT_NAMESPACE, "value": value })
}

/// Deploys `name` reading its own secret `name` with `cmd`, and returns the first answer.
async fn deploy_secret_reader(courier: &Courier, name: &str, cmd: &str) -> Vec<u8> {
    let mut reader = fork_function(name, cmd);
    reader["secrets"] = json!([name]);
    courier.deploy(&reader).await;
    courier.wait_ready(name, DEFAULT_NAMESPACE, READY).await;
    let resp = courier.invoke(Method::POST, name, None).await;
    let status = resp.status();
    let body = resp.bytes().await.unwrap().to_vec();
    assert_eq!(
        status,
        StatusCode::OK,
        "{cmd} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn creating_a_secret_answers_202_and_a_duplicate_409() {
    let courier = Courier::start().await;
    let (status, body) = send(&courier, Method::POST, &secret("api-key", "one")).await;
    assert_eq!(status, StatusCode::ACCEPTED, "create: {body}");
    let (status, body) = send(&courier, Method::POST, &secret("api-key", "two")).await;
    assert_eq!(status, StatusCode::CONFLICT, "duplicate create: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_secret_list_shows_name_and_namespace_but_never_the_value() {
    let courier = Courier::start().await;
    courier.create_secret("api-key", "TopSecretValue123").await;
    courier
        .create_secret("db-password", "AnotherHiddenValue456")
        .await;

    let resp = courier
        .admin(Method::GET, "/system/secrets?namespace=openfaas-fn")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.text().await.unwrap();
    assert!(
        !text.contains("TopSecretValue123"),
        "a value leaked: {text}"
    );
    assert!(
        !text.contains("AnotherHiddenValue456"),
        "a value leaked: {text}"
    );

    let list: Value = serde_json::from_str(&text).unwrap();
    let mut names: Vec<&str> = list
        .as_array()
        .expect("a JSON array")
        .iter()
        .map(|s| {
            assert_eq!(s["namespace"], DEFAULT_NAMESPACE, "{s}");
            assert!(s.get("value").is_none_or(|v| v.is_null() || v == ""), "{s}");
            assert!(
                s.get("rawValue").is_none_or(|v| v.is_null() || v == ""),
                "{s}"
            );
            s["name"].as_str().expect("name is a string")
        })
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["api-key", "db-password"]);

    let without_namespace = courier
        .admin(Method::GET, "/system/secrets")
        .send()
        .await
        .unwrap();
    assert_eq!(without_namespace.status(), StatusCode::OK);
    let list: Value = without_namespace.json().await.unwrap();
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(2),
        "default namespace: {list}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn updating_an_unknown_secret_is_404_and_a_known_one_succeeds() {
    let courier = Courier::start().await;
    let (status, body) = send(&courier, Method::PUT, &secret("ghost", "x")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "update unknown: {body}");
    assert!(
        courier.list_secrets().await.is_empty(),
        "a failed update must not create it"
    );

    courier.create_secret("api-key", "one").await;
    let (status, body) = send(&courier, Method::PUT, &secret("api-key", "two")).await;
    assert!(
        status.is_success(),
        "update known answered {status}: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn deleting_a_secret_removes_it_from_the_list() {
    let courier = Courier::start().await;
    courier.create_secret("api-key", "one").await;
    courier.create_secret("keep-me", "two").await;

    let (status, body) = send(
        &courier,
        Method::DELETE,
        &json!({ "name": "api-key", "namespace": DEFAULT_NAMESPACE }),
    )
    .await;
    assert!(status.is_success(), "delete answered {status}: {body}");
    let names: Vec<Value> = courier
        .list_secrets()
        .await
        .iter()
        .map(|s| s["name"].clone())
        .collect();
    assert_eq!(names, [json!("keep-me")]);

    // The name is free again.
    let (status, body) = send(&courier, Method::POST, &secret("api-key", "three")).await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "re-create after delete: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sandboxed_function_reads_its_secret_from_var_openfaas_secrets() {
    if !bubblewrap_installed() {
        eprintln!("skipped: bubblewrap is not installed");
        return;
    }
    let courier = Courier::start().await;
    let value = "s3cr3t value\nwith a second line";
    courier.create_secret("secret-string", value).await;
    let body = deploy_secret_reader(
        &courier,
        "secret-string",
        "cat /var/openfaas/secrets/secret-string",
    )
    .await;
    assert_eq!(body, value.as_bytes());
}

async fn secrets_dir_holds_the_secret(sandbox: &str) {
    let courier = Courier::builder()
        .arg("--sandbox")
        .arg(sandbox)
        .start()
        .await;
    courier.create_secret("api-key", "from-the-dir").await;
    let body = deploy_secret_reader(
        &courier,
        "api-key",
        r#"sh -c 'cat "$COURIER_SECRETS_DIR/api-key"'"#,
    )
    .await;
    assert_eq!(body, b"from-the-dir", "--sandbox {sandbox}");
}

#[tokio::test(flavor = "multi_thread")]
async fn courier_secrets_dir_holds_the_function_secrets_without_a_sandbox() {
    secrets_dir_holds_the_secret("off").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn courier_secrets_dir_holds_the_function_secrets_with_the_default_sandbox() {
    secrets_dir_holds_the_secret("auto").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_raw_value_secret_reaches_the_function_as_exact_bytes() {
    let courier = Courier::start().await;
    let bytes: Vec<u8> = vec![0, 1, 2, 0xfe, 0xff, b'\n', b'a', 0x80];
    let raw = base64::engine::general_purpose::STANDARD.encode(&bytes);
    let (status, body) = send(
        &courier,
        Method::POST,
        &json!({ "name": "secret-bytes", "namespace": DEFAULT_NAMESPACE, "rawValue": raw }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "create rawValue secret: {body}"
    );
    let body = deploy_secret_reader(
        &courier,
        "secret-bytes",
        r#"sh -c 'cat "$COURIER_SECRETS_DIR/secret-bytes"'"#,
    )
    .await;
    assert_eq!(body, bytes);
}

#[tokio::test(flavor = "multi_thread")]
async fn an_updated_secret_reaches_the_function_after_it_is_redeployed() {
    let courier = Courier::start().await;
    courier.create_secret("rotating", "old-value").await;
    let cmd = r#"sh -c 'cat "$COURIER_SECRETS_DIR/rotating"'"#;
    let first = deploy_secret_reader(&courier, "rotating", cmd).await;
    assert_eq!(first, b"old-value");

    let (status, body) = send(&courier, Method::PUT, &secret("rotating", "new-value")).await;
    assert!(status.is_success(), "update answered {status}: {body}");
    let mut redeploy = fork_function("rotating", cmd);
    redeploy["secrets"] = json!(["rotating"]);
    redeploy["annotations"] = json!({ "secret-hash": "2" });
    let resp = courier
        .admin(Method::PUT, "/system/functions")
        .json(&redeploy)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);

    eventually(
        Duration::from_secs(15),
        "the function to read new-value",
        || async {
            let resp = courier.invoke(Method::POST, "rotating", None).await;
            (resp.status() == StatusCode::OK && resp.bytes().await.ok()?.as_ref() == b"new-value")
                .then_some(())
        },
    )
    .await;
}
