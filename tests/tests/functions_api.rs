//! The OpenFaaS management API for functions: deploy, update, delete, status, list, and the
//! lenient decoding real clients depend on (key case, nulls, form bodies, double slashes).

use std::time::Duration;

use courier_e2e::{
    Courier, DEFAULT_NAMESPACE, eventually, fork_function, form_body, parse_rfc3339, replicas_field,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const READY: Duration = Duration::from_secs(20);

async fn send_json(
    courier: &Courier,
    method: Method,
    path: &str,
    body: &Value,
) -> (StatusCode, String) {
    let resp = courier.admin(method, path).json(body).send().await.unwrap();
    let status = resp.status();
    (status, resp.text().await.unwrap_or_default())
}

fn find<'a>(list: &'a [Value], name: &str) -> Option<&'a Value> {
    list.iter().find(|f| f["name"] == name)
}

#[tokio::test(flavor = "multi_thread")]
async fn deploy_answers_202_and_a_second_deploy_of_the_same_name_409() {
    let courier = Courier::start().await;
    let deployment = fork_function("echo", "cat");

    let (first, body) = send_json(&courier, Method::POST, "/system/functions", &deployment).await;
    assert_eq!(first, StatusCode::ACCEPTED, "first deploy: {body}");

    let (second, body) = send_json(&courier, Method::POST, "/system/functions", &deployment).await;
    assert_eq!(second, StatusCode::CONFLICT, "duplicate deploy: {body}");

    assert_eq!(
        courier.list(DEFAULT_NAMESPACE).await.len(),
        1,
        "still one function"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn update_answers_202_for_a_deployed_function_and_404_for_an_unknown_one() {
    let courier = Courier::start().await;

    let (unknown, body) = send_json(
        &courier,
        Method::PUT,
        "/system/functions",
        &fork_function("ghost", "cat"),
    )
    .await;
    assert_eq!(
        unknown,
        StatusCode::NOT_FOUND,
        "update of an unknown function: {body}"
    );
    assert!(
        courier.status("ghost", DEFAULT_NAMESPACE).await.is_none(),
        "a failed update must not create the function"
    );

    courier.deploy(&fork_function("echo", "cat")).await;
    let mut updated = fork_function("echo", "env");
    updated["image"] = json!("courier/echo:v2");
    updated["labels"] = json!({ "stage": "two" });
    let (status, body) = send_json(&courier, Method::PUT, "/system/functions", &updated).await;
    assert_eq!(status, StatusCode::ACCEPTED, "update: {body}");

    let after = eventually(
        Duration::from_secs(10),
        "the update to show in status",
        || async {
            let status = courier.status("echo", DEFAULT_NAMESPACE).await?;
            (status["image"] == "courier/echo:v2").then_some(status)
        },
    )
    .await;
    assert_eq!(after["envProcess"], "env");
    assert_eq!(after["labels"]["stage"], "two");
    assert_eq!(after["labels"]["faas_function"], "echo");
}

#[tokio::test(flavor = "multi_thread")]
async fn delete_answers_202_and_the_function_is_gone_afterwards() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;

    let delete = json!({ "functionName": "echo", "namespace": DEFAULT_NAMESPACE });
    let (status, body) = send_json(&courier, Method::DELETE, "/system/functions", &delete).await;
    assert_eq!(status, StatusCode::ACCEPTED, "delete: {body}");

    assert!(
        courier.status("echo", DEFAULT_NAMESPACE).await.is_none(),
        "status after delete"
    );
    assert!(
        courier.list(DEFAULT_NAMESPACE).await.is_empty(),
        "list after delete"
    );
    let invoke = courier
        .invoke(Method::POST, "echo", Some(b"x".to_vec()))
        .await;
    assert_eq!(
        invoke.status(),
        StatusCode::NOT_FOUND,
        "invoke after delete"
    );

    let (again, body) = send_json(&courier, Method::DELETE, "/system/functions", &delete).await;
    assert_eq!(again, StatusCode::NOT_FOUND, "second delete: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_of_an_unknown_function_is_404() {
    let courier = Courier::start().await;
    let resp = courier
        .admin(Method::GET, "/system/function/nope?namespace=openfaas-fn")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let resp = courier
        .admin(Method::GET, "/system/function/nope")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND, "without ?namespace=");
}

#[tokio::test(flavor = "multi_thread")]
async fn status_of_a_minimal_deployment_has_every_openfaas_field() {
    let courier = Courier::start().await;
    let before = time::OffsetDateTime::now_utc();
    courier.deploy(&fork_function("echo", "cat")).await;
    let status = courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;

    assert_eq!(status["name"], "echo");
    assert_eq!(status["image"], "courier/echo:test");
    assert_eq!(status["namespace"], DEFAULT_NAMESPACE);
    assert_eq!(status["envProcess"], "cat");
    assert_eq!(
        status["labels"]["faas_function"], "echo",
        "labels: {status}"
    );
    assert!(
        status["labels"].is_object(),
        "labels is an object: {status}"
    );
    assert_eq!(
        status["annotations"],
        json!({}),
        "annotations are {{}} when empty: {status}"
    );
    assert_eq!(status["readOnlyRootFilesystem"], false, "{status}");
    assert_eq!(
        replicas_field(&status, "replicas"),
        1,
        "default replicas: {status}"
    );
    assert!(
        replicas_field(&status, "availableReplicas") >= 1,
        "{status}"
    );
    assert!(
        status["invocationCount"].is_number(),
        "invocationCount: {status}"
    );

    let created = parse_rfc3339(status["createdAt"].as_str().expect("createdAt is a string"));
    let slack = time::Duration::seconds(5);
    assert!(
        created >= before - slack && created <= time::OffsetDateTime::now_utc() + slack,
        "createdAt {created} is not the deploy time (deployed after {before})"
    );

    for absent in ["envVars", "limits", "requests", "secrets", "constraints"] {
        assert!(
            status.get(absent).is_none_or(Value::is_null),
            "{absent} must be absent when not sent: {status}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn status_and_list_echo_every_field_that_was_sent() {
    let courier = Courier::start().await;
    courier.create_secret("api-key", "s3cr3t").await;
    let annotation_json = "{\n  \"key\": \"value\",\n  \"list\": [1, 2]\n}\n";
    let deployment = json!({
        "service": "meta",
        "image": "docker.io/functions/alpine:latest",
        "namespace": DEFAULT_NAMESPACE,
        "envProcess": "env",
        "envVars": { "custom_env": "custom_env_value" },
        "labels": { "upstream_uri": "example.com", "canary_build": "true" },
        "annotations": { "important-date": "Wed 17 Feb 2021", "some-json": annotation_json },
        "limits": { "memory": "5Mi", "cpu": "100m" },
        "requests": { "memory": "1Mi", "cpu": "10m" },
        "secrets": ["api-key"],
        "constraints": ["node.platform.os == linux"],
        "readOnlyRootFilesystem": true,
    });
    courier.deploy(&deployment).await;

    let status = courier
        .status("meta", DEFAULT_NAMESPACE)
        .await
        .expect("meta exists");
    let list = courier.list(DEFAULT_NAMESPACE).await;
    let listed = find(&list, "meta").expect("meta is listed").clone();

    for (what, got) in [("status", &status), ("list entry", &listed)] {
        assert_eq!(got["image"], "docker.io/functions/alpine:latest", "{what}");
        assert_eq!(got["namespace"], DEFAULT_NAMESPACE, "{what}");
        assert_eq!(got["envProcess"], "env", "{what}");
        assert_eq!(
            got["envVars"],
            json!({ "custom_env": "custom_env_value" }),
            "{what}"
        );
        assert_eq!(got["labels"]["upstream_uri"], "example.com", "{what}");
        assert_eq!(got["labels"]["canary_build"], "true", "{what}");
        assert_eq!(got["labels"]["faas_function"], "meta", "{what}");
        assert_eq!(
            got["annotations"]["important-date"], "Wed 17 Feb 2021",
            "{what}"
        );
        assert_eq!(got["annotations"]["some-json"], annotation_json, "{what}");
        assert_eq!(got["limits"]["memory"], "5Mi", "{what}");
        assert_eq!(got["limits"]["cpu"], "100m", "{what}");
        assert_eq!(got["requests"]["memory"], "1Mi", "{what}");
        assert_eq!(got["requests"]["cpu"], "10m", "{what}");
        assert_eq!(got["secrets"], json!(["api-key"]), "{what}");
        assert_eq!(
            got["constraints"],
            json!(["node.platform.os == linux"]),
            "{what}"
        );
        assert_eq!(got["readOnlyRootFilesystem"], true, "{what}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn list_shows_each_function_with_its_invocation_count() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("called", "cat")).await;
    courier.deploy(&fork_function("idle", "cat")).await;
    courier.wait_ready("called", DEFAULT_NAMESPACE, READY).await;

    for _ in 0..2 {
        let resp = courier
            .invoke(Method::POST, "called", Some(b"hi".to_vec()))
            .await;
        assert_eq!(resp.status(), StatusCode::OK);
    }

    let list = eventually(
        Duration::from_secs(15),
        "invocationCount of 2 for called",
        || async {
            let list = courier.list(DEFAULT_NAMESPACE).await;
            let count = find(&list, "called")?["invocationCount"].as_f64()?;
            (count == 2.0).then_some(list)
        },
    )
    .await;
    assert_eq!(list.len(), 2, "both functions are listed: {list:?}");
    let idle = find(&list, "idle").expect("idle is listed");
    assert_eq!(idle["invocationCount"].as_f64(), Some(0.0), "idle: {idle}");
    assert_eq!(idle["image"], "courier/idle:test");
}

#[tokio::test(flavor = "multi_thread")]
async fn json_keys_are_matched_case_insensitively() {
    let courier = Courier::start().await;
    let deployment = json!({
        "SERVICE": "mixed",
        "Image": "courier/mixed:test",
        "ENVPROCESS": "cat",
        "Labels": { "team": "blue" },
        "envvars": { "custom_env": "yes" },
    });
    courier.deploy(&deployment).await;

    let status = courier
        .status("mixed", DEFAULT_NAMESPACE)
        .await
        .expect("mixed exists");
    assert_eq!(status["name"], "mixed");
    assert_eq!(status["image"], "courier/mixed:test");
    assert_eq!(status["envProcess"], "cat");
    assert_eq!(status["labels"]["team"], "blue");
    assert_eq!(status["envVars"], json!({ "custom_env": "yes" }));
}

#[tokio::test(flavor = "multi_thread")]
async fn unknown_keys_are_ignored_and_null_maps_are_accepted() {
    let courier = Courier::start().await;
    let deployment = json!({
        "service": "lenient",
        "image": "courier/lenient:test",
        "envProcess": "cat",
        "labels": null,
        "annotations": null,
        "registryAuth": "ignored",
        "network": "func_functions",
        "somethingFromTheFuture": { "nested": [1, 2, 3] },
    });
    courier.deploy(&deployment).await;

    let status = courier
        .status("lenient", DEFAULT_NAMESPACE)
        .await
        .expect("lenient exists");
    assert_eq!(status["labels"]["faas_function"], "lenient", "{status}");
    assert_eq!(status["annotations"], json!({}), "{status}");
    assert!(status.get("somethingFromTheFuture").is_none(), "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_form_encoded_deploy_answers_exactly_202_and_the_function_runs() {
    let courier = Courier::start().await;
    let body = form_body(&[
        ("service", "formfn"),
        ("image", "courier/formfn:test"),
        ("envProcess", "cat"),
        ("namespace", DEFAULT_NAMESPACE),
    ]);
    let resp = courier
        .admin(Method::POST, "/system/functions")
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "{}",
        resp.text().await.unwrap_or_default()
    );

    let status = courier.wait_ready("formfn", DEFAULT_NAMESPACE, READY).await;
    assert_eq!(status["image"], "courier/formfn:test");
    assert_eq!(status["envProcess"], "cat");
    let answer = courier
        .invoke(Method::POST, "formfn", Some(b"via form".to_vec()))
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    assert_eq!(answer.text().await.unwrap(), "via form");
}

#[tokio::test(flavor = "multi_thread")]
async fn namespace_is_taken_from_the_body_or_the_query() {
    let courier = Courier::start().await;

    let mut in_body = fork_function("bodyns", "cat");
    in_body["namespace"] = json!("team-a");
    courier.deploy(&in_body).await;

    let (status, body) = send_json(
        &courier,
        Method::POST,
        "/system/functions?namespace=team-b",
        &fork_function("queryns", "cat"),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "deploy with ?namespace=: {body}"
    );

    let a = courier
        .status("bodyns", "team-a")
        .await
        .expect("bodyns in team-a");
    assert_eq!(a["namespace"], "team-a");
    let b = courier
        .status("queryns", "team-b")
        .await
        .expect("queryns in team-b");
    assert_eq!(b["namespace"], "team-b");
    assert!(
        courier.status("bodyns", DEFAULT_NAMESPACE).await.is_none(),
        "not in the default namespace"
    );
    assert!(courier.list(DEFAULT_NAMESPACE).await.is_empty());
    let team_a = courier.list("team-a").await;
    assert_eq!(team_a.len(), 1);
    assert_eq!(team_a[0]["name"], "bodyns");

    courier.wait_ready("bodyns", "team-a", READY).await;
    let invoked = courier
        .invoke(Method::POST, "bodyns.team-a", Some(b"ns".to_vec()))
        .await;
    assert_eq!(invoked.status(), StatusCode::OK, "invoke name.namespace");
    assert_eq!(invoked.text().await.unwrap(), "ns");
    let wrong_ns = courier
        .invoke(Method::POST, "bodyns", Some(b"ns".to_vec()))
        .await;
    assert_eq!(
        wrong_ns.status(),
        StatusCode::NOT_FOUND,
        "bodyns is not in openfaas-fn"
    );

    // Delete with the namespace only in the query (the gateway's own scaler style).
    let (status, body) = send_json(
        &courier,
        Method::DELETE,
        "/system/functions?namespace=team-a",
        &json!({ "functionName": "bodyns" }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "delete with ?namespace=: {body}"
    );
    assert!(courier.status("bodyns", "team-a").await.is_none());

    // Delete with the namespace only in the body (faas-cli style).
    let (status, body) = send_json(
        &courier,
        Method::DELETE,
        "/system/functions",
        &json!({ "functionName": "queryns", "namespace": "team-b" }),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::ACCEPTED,
        "delete with body namespace: {body}"
    );
    assert!(courier.status("queryns", "team-b").await.is_none());
}

#[tokio::test(flavor = "multi_thread")]
async fn double_slash_paths_are_served_like_single_slash_paths() {
    let courier = Courier::start().await;

    let deploy = courier
        .admin(Method::POST, "//system/functions")
        .json(&fork_function("slashes", "cat"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        deploy.status(),
        StatusCode::ACCEPTED,
        "POST //system/functions"
    );

    let list = courier
        .admin(Method::GET, "//system/functions")
        .send()
        .await
        .unwrap();
    assert_eq!(list.status(), StatusCode::OK, "GET //system/functions");
    let list: Value = list.json().await.expect("a JSON list, not a redirect");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["name"], "slashes");
}

#[tokio::test(flavor = "multi_thread")]
async fn scale_request_sets_the_desired_replicas_shown_in_status() {
    let courier = Courier::start().await;
    courier.deploy(&fork_function("echo", "cat")).await;
    courier.wait_ready("echo", DEFAULT_NAMESPACE, READY).await;

    let resp = courier
        .admin(Method::POST, "/system/scale-function/echo")
        .json(&json!({ "serviceName": "echo", "replicas": 3, "namespace": DEFAULT_NAMESPACE }))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "scale answered {}",
        resp.status()
    );
    let status = courier.status("echo", DEFAULT_NAMESPACE).await.unwrap();
    assert_eq!(replicas_field(&status, "replicas"), 3, "{status}");

    // Namespace in the query only.
    let resp = courier
        .admin(
            Method::POST,
            "/system/scale-function/echo?namespace=openfaas-fn",
        )
        .json(&json!({ "serviceName": "echo", "replicas": 2 }))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "scale answered {}",
        resp.status()
    );
    let status = courier.status("echo", DEFAULT_NAMESPACE).await.unwrap();
    assert_eq!(replicas_field(&status, "replicas"), 2, "{status}");
}

#[tokio::test(flavor = "multi_thread")]
async fn scaling_an_unknown_function_is_404() {
    let courier = Courier::start().await;
    let resp = courier
        .admin(Method::POST, "/system/scale-function/ghost")
        .json(&json!({ "serviceName": "ghost", "replicas": 1, "namespace": DEFAULT_NAMESPACE }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread")]
async fn system_info_names_the_provider_and_both_versions() {
    let courier = Courier::start().await;
    let resp = courier
        .admin(Method::GET, "/system/info")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let info: Value = resp.json().await.unwrap();

    for pointer in [
        "/provider/provider",
        "/provider/orchestration",
        "/provider/version/release",
        "/provider/version/sha",
        "/version/release",
        "/version/sha",
        "/arch",
    ] {
        let value = info
            .pointer(pointer)
            .and_then(Value::as_str)
            .unwrap_or_default();
        assert!(
            !value.is_empty(),
            "{pointer} must be a non-empty string: {info}"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn namespaces_always_include_openfaas_fn() {
    let courier = Courier::start().await;
    let resp = courier
        .admin(Method::GET, "/system/namespaces")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let namespaces: Value = resp.json().await.expect("namespaces are JSON");
    let namespaces = namespaces.as_array().expect("namespaces are a JSON array");
    assert!(
        namespaces.iter().any(|n| n == DEFAULT_NAMESPACE),
        "{namespaces:?} lacks openfaas-fn"
    );
    assert!(namespaces.iter().all(Value::is_string), "{namespaces:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn healthz_answers_200() {
    let courier = Courier::start().await;
    let resp = courier
        .anonymous(Method::GET, "/healthz")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
