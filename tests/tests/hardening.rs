//! What a hostile or careless caller cannot do: reach credentials from a function, grow the
//! server without bound, shadow CGI variables, escape the sandbox's launcher, or make an update
//! or a secret removal break running functions.

use std::time::Duration;

use courier_e2e::{Courier, DEFAULT_NAMESPACE, bubblewrap_installed, fork_function, run_cli};
use reqwest::{Method, StatusCode};
use serde_json::json;

const READY: Duration = Duration::from_secs(20);

#[tokio::test(flavor = "multi_thread")]
async fn courier_invoke_never_hands_the_admin_credentials_to_the_function() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("env", "env")).await;
    courier.wait_ready("env", DEFAULT_NAMESPACE, READY).await;
    let mut cmd = courier.cli();
    cmd.args(["invoke", "env"]);
    let out = run_cli(cmd, Some(b"")).await;
    assert!(out.status.success(), "{out}");
    assert!(out.stdout.contains("Http_Method=POST"), "{out}");
    assert!(!out.stdout.contains("Http_Authorization"), "{out}");
    assert!(!out.stdout.contains(&courier.password()), "{out}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_path_header_cannot_shadow_http_path_or_http_method() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("env", "env")).await;
    courier.wait_ready("env", DEFAULT_NAMESPACE, READY).await;
    let body = courier
        .client()
        .post(courier.url("/function/env/real"))
        .header("Path", "/forged")
        .header("Method", "FORGED")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.lines().any(|l| l == "Http_Path=/real"), "{body}");
    assert!(body.lines().any(|l| l == "Http_Method=POST"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn repeated_slashes_in_a_function_path_reach_the_function_as_sent() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("env", "env")).await;
    courier.wait_ready("env", DEFAULT_NAMESPACE, READY).await;
    let body = courier
        .invoke(Method::GET, "env/a//b", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.lines().any(|l| l == "Http_Path=/a//b"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn calls_to_unknown_functions_create_no_metric_series() {
    let courier = Courier::start().await;
    for i in 0..20 {
        let resp = courier
            .invoke(Method::GET, &format!("ghost-{i}"), None)
            .await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    }
    let metrics = courier.metrics().await;
    assert!(!metrics.contains("ghost-"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_removed_function_leaves_no_metric_series_behind() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("gone", "cat")).await;
    courier.wait_ready("gone", DEFAULT_NAMESPACE, READY).await;
    assert_eq!(
        courier.invoke(Method::POST, "gone", None).await.status(),
        StatusCode::OK
    );
    let resp = courier
        .admin(Method::DELETE, "/system/functions")
        .json(&json!({"functionName": "gone"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let metrics = courier.metrics().await;
    assert!(!metrics.contains("gone.openfaas-fn"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn more_than_a_hundred_replicas_are_refused_with_400() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("f", "cat")).await;
    let resp = courier
        .admin(Method::POST, "/system/scale-function/f")
        .json(&json!({"serviceName": "f", "replicas": 1_000_000_000u64}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let mut big = fork_function("big", "cat");
    big["labels"] = json!({"com.openfaas.scale.min": "101"});
    let resp = courier
        .admin(Method::POST, "/system/functions")
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(courier.status("big", DEFAULT_NAMESPACE).await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn loader_variables_are_refused_for_sandboxed_functions() {
    if !bubblewrap_installed() {
        return;
    }
    let courier = Courier::start().await;
    for var in ["LD_PRELOAD", "LD_LIBRARY_PATH", "GCONV_PATH"] {
        let mut f = fork_function("inject", "cat");
        f["envVars"] = json!({ var: "/tmp/x.so" });
        let resp = courier
            .admin(Method::POST, "/system/functions")
            .json(&f)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{var}");
        let text = resp.text().await.unwrap();
        assert!(text.contains(var), "{text}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn home_directories_are_hidden_from_sandboxed_functions() {
    if !bubblewrap_installed() {
        return;
    }
    let courier = Courier::start().await;
    let probe = "sh -c 'for d in /root /home; do if [ -e $d ]; then echo $d visible; else echo $d hidden; fi; done'";
    courier.deploy(&fork_function("probe", probe)).await;
    courier.wait_ready("probe", DEFAULT_NAMESPACE, READY).await;
    let body = courier
        .invoke(Method::POST, "probe", None)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("/root hidden"), "{body}");
    assert!(body.contains("/home hidden"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_secret_in_use_cannot_be_removed() {
    let courier = Courier::start().await;
    courier.create_secret("token", "abc").await;
    let mut f = fork_function("user", "cat /var/openfaas/secrets/token");
    f["secrets"] = json!(["token"]);
    courier.deploy(&f).await;
    let resp = courier
        .admin(Method::DELETE, "/system/secrets")
        .json(&json!({"name": "token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    assert!(resp.text().await.unwrap().contains("user"));
    courier
        .admin(Method::DELETE, "/system/functions")
        .json(&json!({"functionName": "user"}))
        .send()
        .await
        .unwrap();
    let resp = courier
        .admin(Method::DELETE, "/system/secrets")
        .json(&json!({"name": "token"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_fork_replica_answers_429_past_max_inflight() {
    let courier = Courier::start().await;
    let mut f = fork_function("slow", "sh -c 'sleep 1; echo done'");
    f["envVars"] = json!({"max_inflight": "1"});
    courier.deploy(&f).await;
    courier.wait_ready("slow", DEFAULT_NAMESPACE, READY).await;
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let client = courier.client();
            let url = courier.url("/function/slow");
            tokio::spawn(async move { client.post(url).send().await.unwrap().status() })
        })
        .collect();
    let mut statuses = Vec::new();
    for call in calls {
        statuses.push(call.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == StatusCode::OK).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
            .count(),
        2,
        "{statuses:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_call_in_flight_during_an_update_completes() {
    let courier = Courier::start().await;
    courier
        .deploy(&fork_function("job", "sh -c 'sleep 1; echo v1'"))
        .await;
    courier.wait_ready("job", DEFAULT_NAMESPACE, READY).await;
    let client = courier.client();
    let url = courier.url("/function/job");
    let in_flight = tokio::spawn(async move {
        let resp = client.post(url).send().await.unwrap();
        (resp.status(), resp.text().await.unwrap())
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = courier
        .admin(Method::PUT, "/system/functions")
        .json(&fork_function("job", "sh -c 'echo v2'"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::ACCEPTED);
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body.trim(), "v1");
    let after = courier.invoke_until_ok("job", b"", READY).await;
    assert_eq!(String::from_utf8_lossy(&after).trim(), "v2");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_http_2_caller_reaches_an_http_1_function() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = client
        .post(courier.url("/function/echo"))
        .body("over h2")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.text().await.unwrap(), "over h2");
}
