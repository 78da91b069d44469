//! What survives `courier up` being stopped and started again on the same data directory.

use std::time::Duration;

use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, fork_function, http_function, random_token, wait_process_count,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);

fn names(list: &[Value], key: &str) -> Vec<String> {
    let mut names: Vec<String> = list
        .iter()
        .map(|v| v[key].as_str().unwrap_or_default().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn functions_and_secrets_survive_a_restart_and_run_again() {
    let mut courier = Courier::start().await;
    courier.create_secret("api-key", "persisted-value").await;
    let mut reader = fork_function("reader", r#"sh -c 'cat "$COURIER_SECRETS_DIR/api-key"'"#);
    reader["secrets"] = json!(["api-key"]);
    reader["labels"] = json!({ "team": "blue" });
    reader["annotations"] = json!({ "note": "kept" });
    courier.deploy(&reader).await;
    let marker = random_token();
    courier.deploy(&http_function("web", &marker)).await;
    courier.wait_ready("reader", DEFAULT_NAMESPACE, READY).await;
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    let before = courier.status("reader", DEFAULT_NAMESPACE).await.unwrap();

    courier.restart().await;

    let list = courier.list(DEFAULT_NAMESPACE).await;
    assert_eq!(names(&list, "name"), ["reader", "web"]);
    assert_eq!(names(&courier.list_secrets().await, "name"), ["api-key"]);
    let after = courier.status("reader", DEFAULT_NAMESPACE).await.unwrap();
    for key in [
        "image",
        "envProcess",
        "labels",
        "annotations",
        "secrets",
        "createdAt",
    ] {
        assert_eq!(after[key], before[key], "{key} changed across the restart");
    }

    let answer = courier
        .invoke_until_ok("reader", b"", Duration::from_secs(20))
        .await;
    assert_eq!(answer, b"persisted-value");
    courier.wait_ready("web", DEFAULT_NAMESPACE, READY).await;
    let resp = courier.invoke(Method::GET, "web/after-restart", None).await;
    assert_eq!(resp.status(), StatusCode::OK);
    wait_process_count(&marker, 1, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn deleted_functions_and_secrets_stay_deleted_after_a_restart() {
    let mut courier = Courier::start().await;
    courier.create_secret("gone", "x").await;
    courier.create_secret("kept", "y").await;
    courier.deploy(&fork_function("removed", "cat")).await;
    courier.deploy(&fork_function("remains", "cat")).await;

    let resp = courier
        .admin(Method::DELETE, "/system/functions")
        .json(&json!({ "functionName": "removed", "namespace": DEFAULT_NAMESPACE }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let resp = courier
        .admin(Method::DELETE, "/system/secrets")
        .json(&json!({ "name": "gone", "namespace": DEFAULT_NAMESPACE }))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "delete secret: {}",
        resp.status()
    );

    courier.restart().await;

    assert_eq!(
        names(&courier.list(DEFAULT_NAMESPACE).await, "name"),
        ["remains"]
    );
    assert_eq!(names(&courier.list_secrets().await, "name"), ["kept"]);
    let resp = courier.invoke(Method::POST, "removed", None).await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn the_generated_password_survives_a_restart() {
    let mut courier = Courier::builder().without_password_env().start().await;
    let first = courier.password();

    courier.restart().await;

    assert_eq!(
        courier.password(),
        first,
        "the password file was regenerated"
    );
    let resp = courier
        .anonymous(Method::GET, "/system/functions")
        .basic_auth("admin", Some(&first))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
