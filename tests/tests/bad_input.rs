//! Bad input gets a precise 4xx and never takes the server down: malformed JSON, invalid names,
//! unknown routes, wrong methods, oversized bodies.

use base64::Engine as _;
use courier_e2e::{Courier, DEFAULT_NAMESPACE, fork_function, raw_request_status};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// A little over the 1 MiB management body limit.
const OVERSIZED: usize = 1024 * 1024 + 64 * 1024;

async fn send_raw_body(
    courier: &Courier,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, String) {
    let resp = courier
        .admin(method, path)
        .header("Content-Type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

async fn send_json(
    courier: &Courier,
    method: Method,
    path: &str,
    body: &Value,
) -> (StatusCode, String) {
    send_raw_body(courier, method, path, &body.to_string()).await
}

#[tokio::test(flavor = "multi_thread")]
async fn malformed_json_is_400_with_a_message_on_every_management_route() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    for (method, path) in [
        (Method::POST, "/system/functions"),
        (Method::PUT, "/system/functions"),
        (Method::DELETE, "/system/functions"),
        (Method::POST, "/system/scale-function/echo"),
        (Method::POST, "/system/secrets"),
        (Method::PUT, "/system/secrets"),
        (Method::DELETE, "/system/secrets"),
    ] {
        for body in [
            r#"{"service": "x","#,
            "not json at all",
            r#"["an", "array"]"#,
        ] {
            let (status, message) = send_raw_body(&courier, method.clone(), path, body).await;
            assert_eq!(
                status,
                StatusCode::BAD_REQUEST,
                "{method} {path} with {body:?}: {message}"
            );
            assert!(
                !message.trim().is_empty(),
                "{method} {path}: 400 without a message"
            );
        }
    }
    courier.assert_healthy().await;
    let status = courier.status("echo", DEFAULT_NAMESPACE).await;
    assert!(status.is_some(), "echo survived the bad updates");
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_function_names_are_400() {
    let courier = Courier::start().await;
    for name in [
        "Bad_Name",
        "a/b",
        "..",
        "",
        "-leading-dash",
        "trailing-dash-",
        "UPPER",
        &"x".repeat(64),
    ] {
        let (status, message) = send_json(
            &courier,
            Method::POST,
            "/system/functions",
            &fork_function(name, "cat"),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "deploy {name:?}: {message}"
        );
        assert!(
            !message.trim().is_empty(),
            "deploy {name:?}: 400 without a message"
        );
    }
    let (status, message) = send_json(
        &courier,
        Method::POST,
        "/system/functions",
        &json!({ "image": "courier/no-name:test", "envProcess": "cat" }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "deploy without a service name: {message}"
    );

    assert!(
        courier.list(DEFAULT_NAMESPACE).await.is_empty(),
        "nothing was deployed"
    );
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_secret_names_are_400() {
    let courier = Courier::start().await;
    for name in ["Bad_Name", "a/b", "..", ""] {
        let (status, message) = send_json(
            &courier,
            Method::POST,
            "/system/secrets",
            &json!({ "name": name, "namespace": DEFAULT_NAMESPACE, "value": "v" }),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "secret {name:?}: {message}"
        );
    }
    assert!(
        courier.list_secrets().await.is_empty(),
        "nothing was stored"
    );
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_delete_without_a_function_name_is_400() {
    let courier = Courier::start().await;
    let (status, message) = send_json(
        &courier,
        Method::DELETE,
        "/system/functions",
        &json!({ "namespace": DEFAULT_NAMESPACE }),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_deploy_that_names_a_missing_secret_is_400() {
    let courier = Courier::start().await;
    let mut deployment = fork_function("needs-secret", "cat");
    deployment["secrets"] = json!(["does-not-exist"]);
    let (status, message) =
        send_json(&courier, Method::POST, "/system/functions", &deployment).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");
    assert!(
        courier
            .status("needs-secret", DEFAULT_NAMESPACE)
            .await
            .is_none()
    );
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_routes_are_404() {
    let courier = Courier::start().await;
    for path in [
        "/nope",
        "/system/nope",
        "/systems/functions",
        "/system/functions/extra/segments",
        "/functions/echo",
    ] {
        let resp = courier.admin(Method::GET, path).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "GET {path}");
    }
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_wrong_method_on_a_known_route_is_405() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    for (method, path) in [
        (Method::PATCH, "/system/functions"),
        (Method::GET, "/system/scale-function/echo"),
        (Method::DELETE, "/system/info"),
        (Method::POST, "/system/namespaces"),
        (Method::POST, "/system/logs?name=echo"),
        (Method::PATCH, "/system/secrets"),
        (Method::DELETE, "/system/function/echo"),
        (Method::POST, "/healthz"),
    ] {
        let resp = courier.admin(method.clone(), path).send().await.unwrap();
        assert_eq!(
            resp.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path}"
        );
    }
    courier.assert_healthy().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_oversized_management_body_is_413() {
    let courier = Courier::start().await;
    let credentials =
        base64::engine::general_purpose::STANDARD.encode(format!("admin:{}", courier.password()));

    // Declared with Content-Length.
    let mut body =
        br#"{"service":"huge","image":"x","envProcess":"cat","annotations":{"pad":""#.to_vec();
    body.resize(OVERSIZED, b'a');
    body.extend_from_slice(br#""}}"#);
    let head = format!(
        "POST /system/functions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let status = raw_request_status(courier.port(), &head, body).await;
    assert_eq!(status, 413, "Content-Length body over 1 MiB");

    // Chunked, so the size is only known while reading.
    let mut chunked = Vec::new();
    for _ in 0..(OVERSIZED / 65_536 + 1) {
        chunked.extend_from_slice(format!("{:x}\r\n", 65_536).as_bytes());
        chunked.extend(std::iter::repeat_n(b' ', 65_536));
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");
    let head = format!(
        "POST /system/secrets HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    let status = raw_request_status(courier.port(), &head, chunked).await;
    assert_eq!(status, 413, "chunked body over 1 MiB");

    courier.assert_healthy().await;
    assert!(courier.status("huge", DEFAULT_NAMESPACE).await.is_none());
}
