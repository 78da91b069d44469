//! Prometheus metrics on `/metrics`, with the OpenFaaS gateway series names and labels.

use std::time::Duration;

use courier_e2e::{Courier, DEFAULT_NAMESPACE, eventually, fork_function, metric_sum};
use reqwest::{Method, StatusCode};
use serde_json::json;

const READY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn invocations_are_counted_per_function_and_status_code() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier
        .deploy(&fork_function("broken", "sh -c 'exit 1'"))
        .await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    courier.wait_ready("broken", DEFAULT_NAMESPACE, READY).await;

    for path in ["echo", "echo.openfaas-fn"] {
        let resp = courier
            .invoke(Method::POST, path, Some(b"count me".to_vec()))
            .await;
        assert_eq!(resp.status(), StatusCode::OK, "/function/{path}");
    }
    let resp = courier.invoke(Method::POST, "broken", None).await;
    assert_eq!(resp.status(), StatusCode::INTERNAL_SERVER_ERROR);

    let echo = [("function_name", "echo.openfaas-fn")];
    let echo_ok = [("function_name", "echo.openfaas-fn"), ("code", "200")];
    let broken_500 = [("function_name", "broken.openfaas-fn"), ("code", "500")];
    let text = eventually(Duration::from_secs(10), "invocation counters", || async {
        let text = courier.metrics().await;
        (metric_sum(&text, "gateway_function_invocation_total", &echo_ok) == Some(2.0)
            && metric_sum(&text, "gateway_function_invocation_total", &broken_500) == Some(1.0))
        .then_some(text)
    })
    .await;

    assert_eq!(
        metric_sum(&text, "gateway_function_invocation_total", &echo),
        Some(2.0),
        "no other codes for echo\n{text}"
    );
    assert_eq!(
        metric_sum(&text, "gateway_function_invocation_started", &echo),
        Some(2.0),
        "started\n{text}"
    );
    assert_eq!(
        metric_sum(&text, "gateway_functions_seconds_count", &echo),
        Some(2.0),
        "histogram count\n{text}"
    );
    let seconds = metric_sum(&text, "gateway_functions_seconds_sum", &echo)
        .unwrap_or_else(|| panic!("no gateway_functions_seconds_sum\n{text}"));
    assert!(seconds > 0.0 && seconds < 30.0, "duration sum {seconds}");
    assert!(
        text.contains("# TYPE gateway_function_invocation_total counter"),
        "Prometheus TYPE line\n{text}"
    );
    assert!(
        text.contains("# TYPE gateway_functions_seconds histogram"),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_are_served_as_prometheus_text_without_credentials() {
    let courier = Courier::start().await;
    let resp = courier
        .anonymous(Method::GET, "/metrics")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("text/plain"),
        "content type {content_type:?}"
    );
    let text = resp.text().await.unwrap();
    assert!(text.lines().any(|l| l.starts_with("# TYPE ")), "{text}");
}

#[tokio::test(flavor = "multi_thread")]
async fn service_count_reports_each_function_desired_replicas() {
    let courier = Courier::start().await;
    let mut pair = fork_function("pair", "cat");
    pair["labels"] = json!({ "com.openfaas.scale.min": "2" });
    courier.deploy(&pair).await;
    courier.deploy(&fork_function("single", "cat")).await;

    eventually(
        Duration::from_secs(20),
        "gateway_service_count for both functions",
        || async {
            let text = courier.metrics().await;
            let pair = metric_sum(
                &text,
                "gateway_service_count",
                &[("function_name", "pair.openfaas-fn")],
            );
            let single = metric_sum(
                &text,
                "gateway_service_count",
                &[("function_name", "single.openfaas-fn")],
            );
            (pair == Some(2.0) && single == Some(1.0)).then_some(())
        },
    )
    .await;

    courier.scale("single", 3).await;
    eventually(
        Duration::from_secs(20),
        "gateway_service_count to follow a scale",
        || async {
            let text = courier.metrics().await;
            let single = metric_sum(
                &text,
                "gateway_service_count",
                &[("function_name", "single.openfaas-fn")],
            );
            (single == Some(3.0)).then_some(())
        },
    )
    .await;
}
