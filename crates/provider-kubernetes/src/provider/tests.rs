use std::time::Duration;

use courier_core::DEFAULT_NAMESPACE;
use courier_core::function::LABEL_SCALE_MIN;
use futures_util::StreamExt;
use http::Method;
use serde_json::{Value, json};

use super::*;
use crate::config::PodOptions;
use crate::fake_api::{FakeApi, TEST_DEADLINE, failure, list, not_found};

const NS: &str = DEFAULT_NAMESPACE;
const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/openfaas-fn/deployments";
const SERVICES: &str = "/api/v1/namespaces/openfaas-fn/services";
const SECRETS: &str = "/api/v1/namespaces/openfaas-fn/secrets";
const PODS: &str = "/api/v1/namespaces/openfaas-fn/pods";

fn provider() -> (KubernetesProvider, FakeApi) {
    let (client, api) = FakeApi::pair();
    (
        KubernetesProvider::without_watches(client, KubernetesConfig::default()),
        api,
    )
}

/// Runs the provider's side and the fake server's side together, within the test deadline.
async fn scenario<T>(
    provider_side: impl Future<Output = T>,
    server_side: impl Future<Output = ()>,
) -> T {
    let both = async { tokio::join!(provider_side, server_side).0 };
    tokio::time::timeout(TEST_DEADLINE, both)
        .await
        .expect("the scenario did not finish: a call is missing or unexpected")
}

/// A function Deployment as the API server hands it back.
fn stored(spec: &FunctionDeployment, replicas: i32, available: i32) -> Value {
    let function = FunctionRef::new(&spec.service, None).unwrap();
    let deployment = FunctionObjects {
        function: &function,
        spec,
        secrets: &SecretUse::default(),
        revision: "2026-11-26T10:00:00Z",
        pods: &PodOptions::default(),
    }
    .deployment()
    .unwrap();
    let mut json = serde_json::to_value(deployment).unwrap();
    json["spec"]["replicas"] = json!(replicas);
    json["metadata"]["creationTimestamp"] = json!("2026-11-26T10:00:00Z");
    json["metadata"]["resourceVersion"] = json!("7");
    json["status"] = json!({ "availableReplicas": available });
    json
}

fn echo() -> FunctionDeployment {
    FunctionDeployment::test("echo", "cat")
}

fn stored_secret(name: &str, type_: &str, managed_by: Option<&str>) -> Value {
    let mut secret = json!({
        "apiVersion": "v1", "kind": "Secret", "type": type_,
        "metadata": { "name": name, "namespace": NS, "resourceVersion": "3" },
        "data": { name: "b2xk" },
    });
    if let Some(by) = managed_by {
        secret["metadata"]["labels"] = json!({ "app.kubernetes.io/managed-by": by });
    }
    secret
}

fn echo_ref() -> FunctionRef {
    FunctionRef::new("echo", None).unwrap()
}

// === deploy ===

#[tokio::test]
async fn deploy_applies_without_replicas_then_scales_to_scale_min() {
    let (provider, mut api) = provider();
    let spec = FunctionDeployment {
        labels: Some([(LABEL_SCALE_MIN.to_owned(), "2".to_owned())].into()),
        ..echo()
    };
    let result = scenario(provider.deploy(NS, spec.clone()), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
        let deployment = api
            .expect(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/echo?fieldManager=courier&force=true"),
                201,
                stored(&spec, 1, 0),
            )
            .await;
        assert_eq!(deployment["kind"], "Deployment");
        assert_eq!(
            deployment["spec"].get("replicas"),
            None,
            "replicas are never applied"
        );
        assert_eq!(
            deployment["spec"]["template"]["spec"]["containers"][0]["image"],
            "local/echo:latest"
        );
        let annotation = &deployment["metadata"]["annotations"][render::ANNOTATION_SPEC];
        let stored_spec: FunctionDeployment =
            serde_json::from_str(annotation.as_str().unwrap()).unwrap();
        assert_eq!(stored_spec, spec);
        let service = api
            .expect(
                Method::PATCH,
                &format!("{SERVICES}/echo?fieldManager=courier&force=true"),
                201,
                json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "echo"}}),
            )
            .await;
        assert_eq!(service["kind"], "Service");
        assert_eq!(
            service["spec"]["selector"],
            json!({ "faas_function": "echo" })
        );
        let scale = api
            .expect(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/echo/scale?fieldManager=courier-scale"),
                200,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "echo"}, "spec": {"replicas": 2}}),
            )
            .await;
        assert_eq!(scale, json!({ "spec": { "replicas": 2 } }));
    })
    .await;
    result.unwrap();
    assert!(
        matches!(
            provider.resolve(&echo_ref()),
            Err(ProviderError::NotReady(_))
        ),
        "a deployed function is known at once, and not ready until a pod is"
    );
}

#[tokio::test]
async fn deploying_into_a_namespace_that_does_not_exist_is_not_found() {
    let (provider, mut api) = provider();
    let result = scenario(provider.deploy(NS, echo()), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
        let mut missing = not_found("namespaces", NS);
        missing["details"] = json!({ "name": NS, "kind": "namespaces" });
        api.expect(Method::PATCH, &format!("{DEPLOYMENTS}/echo"), 404, missing)
            .await;
    })
    .await;
    assert!(
        matches!(&result, Err(ProviderError::NotFound { kind: "namespace", name }) if name == NS),
        "{result:?}"
    );
}

#[tokio::test]
async fn deploying_an_existing_function_is_already_exists() {
    let (provider, mut api) = provider();
    let result = scenario(provider.deploy(NS, echo()), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            200,
            stored(&echo(), 1, 1),
        )
        .await;
    })
    .await;
    assert!(matches!(
        result,
        Err(ProviderError::AlreadyExists {
            kind: "function",
            ..
        })
    ));
}

#[tokio::test]
async fn deploying_while_the_old_version_is_still_being_deleted_is_a_conflict() {
    let (provider, mut api) = provider();
    let mut deleting = stored(&echo(), 1, 1);
    deleting["metadata"]["deletionTimestamp"] = json!("2026-11-26T10:05:00Z");
    let result = scenario(provider.deploy(NS, echo()), async {
        api.expect(Method::GET, &format!("{DEPLOYMENTS}/echo"), 200, deleting)
            .await;
    })
    .await;
    assert!(matches!(&result, Err(ProviderError::Conflict(msg)) if msg.contains("being removed")));
}

#[tokio::test]
async fn deploying_with_a_missing_secret_is_refused_before_anything_is_written() {
    let (provider, mut api) = provider();
    let spec = FunctionDeployment {
        secrets: Some(vec!["api-key".into()]),
        ..echo()
    };
    let result = scenario(provider.deploy(NS, spec), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
        api.expect(
            Method::GET,
            &format!("{SECRETS}/api-key"),
            404,
            not_found("secrets", "api-key"),
        )
        .await;
    })
    .await;
    assert!(
        matches!(&result, Err(ProviderError::Invalid(msg)) if msg.contains("unable to fetch secrets")),
        "{result:?}"
    );
}

#[tokio::test]
async fn deploy_mounts_secrets_and_pulls_with_registry_credentials() {
    let (provider, mut api) = provider();
    let spec = FunctionDeployment {
        secrets: Some(vec!["api-key".into(), "registry".into()]),
        ..echo()
    };
    let result = scenario(provider.deploy(NS, spec.clone()), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
        api.expect(
            Method::GET,
            &format!("{SECRETS}/api-key"),
            200,
            stored_secret("api-key", "Opaque", Some("courier")),
        )
        .await;
        api.expect(
            Method::GET,
            &format!("{SECRETS}/registry"),
            200,
            stored_secret("registry", "kubernetes.io/dockerconfigjson", None),
        )
        .await;
        let deployment = api
            .expect(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/echo"),
                200,
                stored(&spec, 1, 0),
            )
            .await;
        let pod = &deployment["spec"]["template"]["spec"];
        assert_eq!(pod["imagePullSecrets"], json!([{ "name": "registry" }]));
        assert_eq!(
            pod["volumes"][0]["projected"]["sources"],
            json!([{ "secret": { "name": "api-key" } }])
        );
        assert_eq!(
            pod["containers"][0]["volumeMounts"][0]["mountPath"],
            "/var/openfaas/secrets"
        );
        api.expect(
            Method::PATCH,
            &format!("{SERVICES}/echo"),
            200,
            json!({"kind": "Service"}),
        )
        .await;
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn an_invalid_object_is_the_callers_to_fix() {
    let (provider, mut api) = provider();
    let spec = FunctionDeployment {
        limits: Some(courier_core::FunctionResources {
            memory: Some("lots".into()),
            ..Default::default()
        }),
        ..echo()
    };
    let result = scenario(provider.deploy(NS, spec), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
        api.expect(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/echo"),
            422,
            failure(
                422,
                "Invalid",
                "quantities must match the regular expression",
            ),
        )
        .await;
    })
    .await;
    assert!(
        matches!(&result, Err(ProviderError::Invalid(msg)) if msg.contains("quantities")),
        "{result:?}"
    );
}

#[tokio::test]
async fn namespaces_that_are_not_served_are_refused_without_a_call() {
    let (provider, _api) = provider();
    let result = provider.deploy("team-b", echo()).await;
    assert!(matches!(&result, Err(ProviderError::Invalid(msg)) if msg.contains("not served")));
    assert!(matches!(
        provider.list_secrets("team-b").await,
        Err(ProviderError::Invalid(_))
    ));
    assert_eq!(provider.namespaces().await.unwrap(), [DEFAULT_NAMESPACE]);
}

// === update ===

#[tokio::test]
async fn updating_an_unknown_function_is_not_found() {
    let (provider, mut api) = provider();
    let result = scenario(provider.update(NS, echo()), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
    })
    .await;
    assert!(matches!(
        result,
        Err(ProviderError::NotFound {
            kind: "function",
            ..
        })
    ));
}

#[tokio::test]
async fn update_applies_without_replicas_whatever_scale_min_says() {
    for labels in [None, Some("2")] {
        let (provider, mut api) = provider();
        let spec = FunctionDeployment {
            image: "local/echo:v2".into(),
            labels: labels.map(|min| [(LABEL_SCALE_MIN.to_owned(), min.to_owned())].into()),
            ..echo()
        };
        let result = scenario(provider.update(NS, spec.clone()), async {
            api.expect(
                Method::GET,
                &format!("{DEPLOYMENTS}/echo"),
                200,
                stored(&echo(), 3, 3),
            )
            .await;
            let deployment = api
                .expect(
                    Method::PATCH,
                    &format!("{DEPLOYMENTS}/echo?fieldManager=courier&force=true"),
                    200,
                    stored(&spec, 3, 3),
                )
                .await;
            assert_eq!(deployment["spec"].get("replicas"), None);
            assert_eq!(
                deployment["spec"]["template"]["spec"]["containers"][0]["image"],
                "local/echo:v2"
            );
            api.expect(
                Method::PATCH,
                &format!("{SERVICES}/echo"),
                200,
                json!({"kind": "Service"}),
            )
            .await;
            // No scale call: the count stays the autoscaler's (or the scale API's).
        })
        .await;
        result.unwrap();
    }
}

#[tokio::test]
async fn update_first_hands_replicas_an_older_courier_applied_to_the_scale_manager() {
    let (provider, mut api) = provider();
    let mut current = stored(&echo(), 4, 4);
    current["metadata"]["managedFields"] = json!([
        {
            "manager": "courier", "operation": "Apply", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1",
            "fieldsV1": { "f:spec": { "f:replicas": {}, "f:template": {} } },
        },
        {
            "manager": "kube-controller-manager", "operation": "Update", "apiVersion": "apps/v1",
            "fieldsType": "FieldsV1", "subresource": "status",
            "fieldsV1": { "f:status": {} },
        },
    ]);
    let result = scenario(provider.update(NS, echo()), async {
        api.expect(Method::GET, &format!("{DEPLOYMENTS}/echo"), 200, current)
            .await;
        let hand_over = api
            .expect(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/echo?fieldManager=courier-scale&force=true"),
                200,
                stored(&echo(), 4, 4),
            )
            .await;
        assert_eq!(
            hand_over,
            json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": { "name": "echo", "namespace": NS },
                "spec": { "replicas": 4 },
            }),
            "only the replicas, at their current count"
        );
        let deployment = api
            .expect(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/echo?fieldManager=courier&force=true"),
                200,
                stored(&echo(), 4, 4),
            )
            .await;
        assert_eq!(deployment["spec"].get("replicas"), None);
        api.expect(
            Method::PATCH,
            &format!("{SERVICES}/echo"),
            200,
            json!({"kind": "Service"}),
        )
        .await;
    })
    .await;
    result.unwrap();
}

#[test]
fn only_courier_applies_of_the_replicas_count_as_owning_them() {
    let with_fields = |manager: &str, operation: &str, subresource: Option<&str>| {
        let mut deployment: Deployment = serde_json::from_value(stored(&echo(), 1, 1)).unwrap();
        deployment.metadata.managed_fields = Some(vec![
            serde_json::from_value(json!({
                "manager": manager, "operation": operation, "subresource": subresource,
                "fieldsType": "FieldsV1", "fieldsV1": { "f:spec": { "f:replicas": {} } },
            }))
            .unwrap(),
        ]);
        applies_replicas(&deployment)
    };
    assert!(with_fields("courier", "Apply", None));
    assert!(
        !with_fields("courier", "Update", None),
        "a plain create or update"
    );
    assert!(!with_fields("courier-scale", "Update", Some("scale")));
    assert!(!with_fields("kube-controller-manager", "Apply", None));
    let deployment: Deployment = serde_json::from_value(stored(&echo(), 1, 1)).unwrap();
    assert!(!applies_replicas(&deployment), "no managed fields at all");
}

// === delete ===

#[tokio::test]
async fn delete_removes_the_deployment_in_the_foreground_and_the_service() {
    let (provider, mut api) = provider();
    provider.routing.add_function(NS, "echo");
    let result = scenario(provider.delete(NS, "echo"), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            200,
            stored(&echo(), 1, 1),
        )
        .await;
        let options = api
            .expect(
                Method::DELETE,
                &format!("{DEPLOYMENTS}/echo"),
                200,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
            )
            .await;
        assert_eq!(options["propagationPolicy"], "Foreground");
        api.expect(
            Method::DELETE,
            &format!("{SERVICES}/echo"),
            404,
            not_found("services", "echo"),
        )
        .await;
    })
    .await;
    result.unwrap();
    assert!(matches!(
        provider.resolve(&echo_ref()),
        Err(ProviderError::NotFound { .. })
    ));
}

#[tokio::test]
async fn a_deployment_that_is_not_a_function_is_not_deleted() {
    let (provider, mut api) = provider();
    let result = scenario(provider.delete(NS, "coredns"), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/coredns"),
            200,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "coredns"}}),
        )
        .await;
    })
    .await;
    assert!(
        matches!(&result, Err(ProviderError::Invalid(msg)) if msg == "Not a function: coredns")
    );
}

// === list, status, scale ===

#[tokio::test]
async fn list_reports_every_function_with_its_replicas_sorted_by_name() {
    let (provider, mut api) = provider();
    let zeta = FunctionDeployment::test("zeta", "env");
    let result = scenario(provider.list(NS), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}?labelSelector=faas_function"),
            200,
            list(
                "DeploymentList",
                "apps/v1",
                vec![stored(&zeta, 2, 1), stored(&echo(), 0, 0)],
            ),
        )
        .await;
    })
    .await;
    let functions = result.unwrap();
    let summary: Vec<(&str, u64, u64)> = functions
        .iter()
        .map(|f| (f.name.as_str(), f.replicas, f.available_replicas))
        .collect();
    assert_eq!(summary, [("echo", 0, 0), ("zeta", 2, 1)]);
    assert_eq!(functions[0].created_at, "2026-11-26T10:00:00Z");
    assert_eq!(functions[0].labels["faas_function"], "echo");
}

#[tokio::test]
async fn status_of_an_unknown_function_is_not_found() {
    let (provider, mut api) = provider();
    let result = scenario(provider.status(NS, "echo"), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
    })
    .await;
    assert!(matches!(result, Err(ProviderError::NotFound { .. })));
}

#[tokio::test]
async fn scale_to_zero_patches_the_scale_subresource() {
    let (provider, mut api) = provider();
    let result = scenario(provider.scale(NS, "echo", 0), async {
        api.expect(Method::GET, &format!("{DEPLOYMENTS}/echo"), 200, stored(&echo(), 1, 1))
            .await;
        let patch = api
            .expect(
                Method::PATCH,
                &format!("{DEPLOYMENTS}/echo/scale?fieldManager=courier-scale"),
                200,
                json!({"apiVersion": "autoscaling/v1", "kind": "Scale", "metadata": {"name": "echo"}, "spec": {"replicas": 0}}),
            )
            .await;
        assert_eq!(patch, json!({ "spec": { "replicas": 0 } }));
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn scaling_a_function_deleted_meanwhile_is_not_found() {
    let (provider, mut api) = provider();
    let result = scenario(provider.scale(NS, "echo", 2), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            200,
            stored(&echo(), 1, 1),
        )
        .await;
        api.expect(
            Method::PATCH,
            &format!("{DEPLOYMENTS}/echo/scale"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
    })
    .await;
    assert!(
        matches!(&result, Err(ProviderError::NotFound { kind: "function", name }) if name == "echo.openfaas-fn"),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_failing_api_server_is_unavailable_and_says_so() {
    let (provider, mut api) = provider();
    let result = scenario(provider.list(NS), async {
        api.expect(
            Method::GET,
            DEPLOYMENTS,
            503,
            failure(503, "ServiceUnavailable", "etcd is unavailable"),
        )
        .await;
    })
    .await;
    assert!(
        matches!(&result, Err(ProviderError::Unavailable { context, .. })
            if context.starts_with("the Kubernetes API is unavailable")),
        "{result:?}"
    );
}

#[tokio::test]
async fn more_replicas_than_kubernetes_counts_are_refused() {
    let (provider, _api) = provider();
    let result = provider.scale(NS, "echo", u64::from(u32::MAX)).await;
    assert!(matches!(result, Err(ProviderError::Invalid(_))));
}

#[tokio::test(start_paused = true)]
async fn an_api_server_that_does_not_answer_is_unavailable_after_the_timeout() {
    let (client, mut api) = FakeApi::pair();
    let config = KubernetesConfig {
        request_timeout: Duration::from_secs(1),
        ..KubernetesConfig::default()
    };
    let provider = KubernetesProvider::without_watches(client, config);
    let result = scenario(provider.status(NS, "echo"), async {
        let (_request, _unanswered) = api.receive().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
    })
    .await;
    assert!(
        matches!(&result, Err(ProviderError::Unavailable { context, .. }) if context.contains("echo")),
        "{result:?}"
    );
}

// === secrets ===

#[tokio::test]
async fn create_secret_stores_one_key_named_after_it() {
    let (provider, mut api) = provider();
    let secret = Secret {
        name: "api-key".into(),
        raw_value: "AAEC".into(),
        ..Secret::default()
    };
    let result = scenario(provider.create_secret(NS, secret), async {
        let body = api
            .expect(
                Method::POST,
                &format!("{SECRETS}?fieldManager=courier"),
                201,
                stored_secret("api-key", "Opaque", Some("courier")),
            )
            .await;
        assert_eq!(body["type"], "Opaque");
        assert_eq!(body["data"], json!({ "api-key": "AAEC" }));
        assert_eq!(
            body["metadata"]["labels"]["app.kubernetes.io/managed-by"],
            "courier"
        );
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn creating_an_existing_secret_is_already_exists() {
    let (provider, mut api) = provider();
    let secret = Secret {
        name: "api-key".into(),
        value: "v".into(),
        ..Secret::default()
    };
    let result = scenario(provider.create_secret(NS, secret), async {
        api.expect(
            Method::POST,
            SECRETS,
            409,
            failure(409, "AlreadyExists", "secrets \"api-key\" already exists"),
        )
        .await;
    })
    .await;
    assert!(matches!(
        result,
        Err(ProviderError::AlreadyExists { kind: "secret", .. })
    ));
}

#[tokio::test]
async fn update_secret_replaces_the_value_of_a_managed_secret() {
    let (provider, mut api) = provider();
    let secret = Secret {
        name: "api-key".into(),
        value: "new".into(),
        ..Secret::default()
    };
    let result = scenario(provider.update_secret(NS, secret), async {
        api.expect(
            Method::GET,
            &format!("{SECRETS}/api-key"),
            200,
            stored_secret("api-key", "Opaque", Some("openfaas")),
        )
        .await;
        let body = api
            .expect(
                Method::PUT,
                &format!("{SECRETS}/api-key"),
                200,
                stored_secret("api-key", "Opaque", Some("openfaas")),
            )
            .await;
        assert_eq!(body["data"], json!({ "api-key": "bmV3" }));
        assert_eq!(
            body["metadata"]["resourceVersion"], "3",
            "the update is conditional"
        );
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn a_secret_not_managed_by_the_api_is_not_found_for_update_and_delete() {
    let (provider, mut api) = provider();
    let secret = Secret {
        name: "tls".into(),
        value: "x".into(),
        ..Secret::default()
    };
    let result = scenario(provider.update_secret(NS, secret), async {
        api.expect(
            Method::GET,
            &format!("{SECRETS}/tls"),
            200,
            stored_secret("tls", "kubernetes.io/tls", None),
        )
        .await;
    })
    .await;
    assert!(matches!(
        result,
        Err(ProviderError::NotFound { kind: "secret", .. })
    ));
    let result = scenario(provider.delete_secret(NS, "tls"), async {
        api.expect(
            Method::GET,
            &format!("{SECRETS}/tls"),
            200,
            stored_secret("tls", "kubernetes.io/tls", None),
        )
        .await;
    })
    .await;
    assert!(matches!(
        result,
        Err(ProviderError::NotFound { kind: "secret", .. })
    ));
}

#[tokio::test]
async fn a_secret_in_use_by_a_function_is_not_deleted() {
    let (provider, mut api) = provider();
    let user = FunctionDeployment {
        secrets: Some(vec!["api-key".into()]),
        ..echo()
    };
    let result = scenario(provider.delete_secret(NS, "api-key"), async {
        api.expect(
            Method::GET,
            &format!("{SECRETS}/api-key"),
            200,
            stored_secret("api-key", "Opaque", Some("courier")),
        )
        .await;
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}?labelSelector=faas_function"),
            200,
            list("DeploymentList", "apps/v1", vec![stored(&user, 1, 1)]),
        )
        .await;
    })
    .await;
    assert!(matches!(&result, Err(ProviderError::Conflict(msg)) if msg.contains("used by echo")));
}

#[tokio::test]
async fn delete_secret_removes_an_unused_one() {
    let (provider, mut api) = provider();
    let result = scenario(provider.delete_secret(NS, "api-key"), async {
        api.expect(
            Method::GET,
            &format!("{SECRETS}/api-key"),
            200,
            stored_secret("api-key", "Opaque", Some("courier")),
        )
        .await;
        api.expect(
            Method::GET,
            DEPLOYMENTS,
            200,
            list("DeploymentList", "apps/v1", vec![stored(&echo(), 1, 1)]),
        )
        .await;
        api.expect(
            Method::DELETE,
            &format!("{SECRETS}/api-key"),
            200,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Success"}),
        )
        .await;
    })
    .await;
    result.unwrap();
}

#[tokio::test]
async fn list_secrets_asks_for_managed_ones_and_returns_names_only() {
    let (provider, mut api) = provider();
    let result = scenario(provider.list_secrets(NS), async {
        api.expect(
            Method::GET,
            &format!("{SECRETS}?labelSelector=app.kubernetes.io/managed-by in (courier,openfaas)"),
            200,
            list(
                "SecretList",
                "v1",
                vec![
                    stored_secret("b", "Opaque", Some("courier")),
                    stored_secret("a", "Opaque", Some("openfaas")),
                ],
            ),
        )
        .await;
    })
    .await;
    let names: Vec<String> = result.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["a", "b"]);
}

// === logs ===

#[tokio::test]
async fn logs_read_each_pods_container_with_timestamps() {
    let (provider, mut api) = provider();
    let request = LogRequest {
        name: "echo".into(),
        namespace: NS.into(),
        instance: None,
        tail: None,
        follow: false,
        since_unix_nanos: None,
    };
    let pod = |name: &str| json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}});
    let result = scenario(provider.logs(request), async {
        api.expect(Method::GET, &format!("{DEPLOYMENTS}/echo"), 200, stored(&echo(), 2, 2))
            .await;
        api.expect(
            Method::GET,
            &format!("{PODS}?labelSelector=faas_function=echo"),
            200,
            list("PodList", "v1", vec![pod("echo-b"), pod("echo-a")]),
        )
        .await;
        for name in ["echo-a", "echo-b"] {
            let (received, send) = api.receive().await;
            received.assert_is(
                &Method::GET,
                &format!("{PODS}/{name}/log?container=echo&timestamps=true"),
            );
            let text = format!("2026-11-26T10:00:00Z Forking fprocess.\n2026-11-26T10:00:01Z Wrote 3 Bytes from {name}\n");
            send.send_response(http::Response::new(kube::client::Body::from(text.into_bytes())));
        }
    })
    .await;
    let lines: Vec<(String, String)> = result
        .unwrap()
        .map(|m| (m.instance, m.text))
        .collect()
        .await;
    assert_eq!(
        lines,
        [
            ("echo-a".into(), "Forking fprocess.".into()),
            ("echo-a".into(), "Wrote 3 Bytes from echo-a".into()),
            ("echo-b".into(), "Forking fprocess.".into()),
            ("echo-b".into(), "Wrote 3 Bytes from echo-b".into()),
        ]
    );
}

#[tokio::test]
async fn logs_of_an_unknown_function_are_not_found() {
    let (provider, mut api) = provider();
    let request = LogRequest {
        name: "echo".into(),
        namespace: NS.into(),
        instance: None,
        tail: Some(10),
        follow: true,
        since_unix_nanos: None,
    };
    let result = scenario(provider.logs(request), async {
        api.expect(
            Method::GET,
            &format!("{DEPLOYMENTS}/echo"),
            404,
            not_found("deployments.apps", "echo"),
        )
        .await;
    })
    .await;
    assert!(matches!(result, Err(ProviderError::NotFound { .. })));
}

#[tokio::test]
async fn info_names_the_kubernetes_provider() {
    let (provider, _api) = provider();
    let info = provider.info();
    assert_eq!(
        (info.provider.as_str(), info.orchestration.as_str()),
        ("courier-kubernetes", "kubernetes")
    );
    assert!(!info.version.release.is_empty() && !info.version.sha.is_empty());
}
