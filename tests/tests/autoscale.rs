//! The autoscaler: scaling labels checked at deploy and update, and (with the real binary and
//! real fork-mode processes) functions following their load up, back down after the down
//! delay, and to zero when idle.

use courier_e2e::{Courier, DEFAULT_NAMESPACE, fork_function};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn send_json(courier: &Courier, method: Method, body: &Value) -> (StatusCode, String) {
    let resp = courier
        .admin(method, "/system/functions")
        .json(body)
        .send()
        .await
        .expect("send /system/functions");
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

fn with_labels(name: &str, labels: Value) -> Value {
    let mut deployment = fork_function(name, "cat");
    deployment["labels"] = labels;
    deployment
}

#[tokio::test(flavor = "multi_thread")]
async fn invalid_scale_labels_are_refused_at_deploy_and_update_with_the_reason() {
    let courier = Courier::start().await;
    let cases = [
        ("com.openfaas.scale.min", "two"),
        ("com.openfaas.scale.max", "0"),
        ("com.openfaas.scale.target", "-5"),
        ("com.openfaas.scale.type", "memory"),
        ("com.openfaas.scale.target-proportion", "2"),
        ("com.openfaas.scale.zero", "maybe"),
        ("com.openfaas.scale.zero-duration", "soon"),
        ("com.openfaas.scale.autoscaler", "keda"),
    ];
    for (label, value) in cases {
        let (status, body) = send_json(
            &courier,
            Method::POST,
            &with_labels("bad", json!({ label: value })),
        )
        .await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "deploy {label}={value}: {body}"
        );
        assert!(
            body.contains(label) && body.contains(value),
            "deploy {label}={value}: the message should name both: {body}"
        );
    }
    assert!(
        courier.status("bad", DEFAULT_NAMESPACE).await.is_none(),
        "a refused deploy creates nothing"
    );

    courier
        .deploy(&with_labels(
            "good",
            json!({ "com.openfaas.scale.max": "4" }),
        ))
        .await;
    let (status, body) = send_json(
        &courier,
        Method::PUT,
        &with_labels(
            "good",
            json!({ "com.openfaas.scale.min": "5", "com.openfaas.scale.max": "4" }),
        ),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "update min > max: {body}");
    assert!(body.contains("com.openfaas.scale.min"), "{body}");
    let status = courier.status("good", DEFAULT_NAMESPACE).await.unwrap();
    assert_eq!(
        status["labels"]["com.openfaas.scale.max"], "4",
        "a refused update changes nothing: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn cpu_scaling_is_refused_on_the_local_provider_saying_why() {
    let courier = Courier::start().await;
    let (status, body) = send_json(
        &courier,
        Method::POST,
        &with_labels("cpu", json!({ "com.openfaas.scale.type": "cpu" })),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body.contains("cpu") && body.contains("CPU metrics"),
        "the message should say the provider has no CPU metrics: {body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn valid_scale_labels_are_accepted() {
    let courier = Courier::start().await;
    courier
        .deploy(&with_labels(
            "ok",
            json!({
                "com.openfaas.scale.min": "1",
                "com.openfaas.scale.max": "5",
                "com.openfaas.scale.target": "2",
                "com.openfaas.scale.type": "capacity",
                "com.openfaas.scale.target-proportion": "0.8",
                "com.openfaas.scale.zero": "true",
                "com.openfaas.scale.zero-duration": "1m30s",
            }),
        ))
        .await;
    courier
        .deploy(&with_labels(
            "external",
            json!({ "com.openfaas.scale.autoscaler": "external" }),
        ))
        .await;
    // A max above the provider's limit is capped, not refused.
    courier
        .deploy(&with_labels(
            "big",
            json!({ "com.openfaas.scale.max": "1000" }),
        ))
        .await;
}
