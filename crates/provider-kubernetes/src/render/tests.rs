use std::time::Duration;

use courier_core::function::LABEL_SCALE_MIN;
use k8s_openapi::api::apps::v1::DeploymentStatus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::json;

use super::*;

fn echo() -> FunctionRef {
    FunctionRef::new("echo", None).unwrap()
}

fn render(spec: &FunctionDeployment, secrets: &SecretUse, pods: &PodOptions) -> Deployment {
    FunctionObjects {
        function: &FunctionRef::new(&spec.service, None).unwrap(),
        spec,
        secrets,
        revision: "2026-11-26T10:00:00Z",
        pods,
    }
    .deployment()
    .unwrap()
}

/// A function using everything a FunctionDeployment can ask for.
fn full_spec() -> FunctionDeployment {
    FunctionDeployment {
        env_vars: Some([("custom_env".into(), "custom_env_value".into())].into()),
        constraints: Some(vec!["node.kubernetes.io/arch == amd64".into()]),
        secrets: Some(vec!["api-key".into(), "registry".into()]),
        labels: Some([(LABEL_SCALE_MIN.to_owned(), "2".to_owned())].into()),
        annotations: Some([("topic".into(), "orders".into())].into()),
        limits: Some(FunctionResources {
            memory: Some("5Mi".into()),
            cpu: Some("100m".into()),
            ..FunctionResources::default()
        }),
        requests: Some(FunctionResources {
            memory: Some("1Mi".into()),
            ..FunctionResources::default()
        }),
        read_only_root_filesystem: true,
        ..FunctionDeployment::test("echo", "cat")
    }
}

fn full_secrets() -> SecretUse {
    SecretUse {
        mounted: vec!["api-key".into()],
        pull: vec!["registry".into()],
    }
}

/// The Deployment as the API server would hand it back, scaled to `replicas`.
fn as_stored(mut deployment: Deployment, replicas: i32, available: i32) -> Deployment {
    deployment.metadata.creation_timestamp = Some(Time("2026-11-26T10:00:00Z".parse().unwrap()));
    deployment.spec.as_mut().unwrap().replicas = Some(replicas);
    deployment.status = Some(DeploymentStatus {
        available_replicas: Some(available),
        ..DeploymentStatus::default()
    });
    deployment
}

#[test]
fn a_minimal_function_renders_like_faas_netes() {
    let spec = FunctionDeployment::test("echo", "cat");
    let objects = FunctionObjects {
        function: &echo(),
        spec: &spec,
        secrets: &SecretUse::default(),
        revision: "2026-11-26T10:00:00Z",
        pods: &PodOptions::default(),
    };
    insta::assert_yaml_snapshot!("minimal_deployment", objects.deployment().unwrap());
    insta::assert_yaml_snapshot!("minimal_service", objects.service());
}

#[test]
fn a_function_using_every_option_renders_each_one() {
    let pods = PodOptions {
        image_pull_policy: Some("Always".into()),
        run_as_user: Some(1000),
        ..PodOptions::default()
    };
    insta::assert_yaml_snapshot!(
        "full_deployment",
        render(&full_spec(), &full_secrets(), &pods)
    );
}

#[test]
fn status_echoes_exactly_what_was_deployed() {
    for spec in [FunctionDeployment::test("echo", "cat"), full_spec()] {
        let replicas = initial_replicas(&spec);
        let deployment = as_stored(
            render(&spec, &full_secrets(), &PodOptions::default()),
            i32::try_from(replicas).unwrap(),
            1,
        );
        let expected = FunctionStatus::from_deployment(
            &spec,
            "openfaas-fn",
            replicas,
            1,
            "2026-11-26T10:00:00Z".into(),
        );
        assert_eq!(status(&deployment), expected);
    }
}

#[test]
fn status_of_an_empty_env_map_keeps_it_present() {
    let spec = FunctionDeployment {
        env_vars: Some(BTreeMap::new()),
        ..FunctionDeployment::test("env-test-verbs", "env")
    };
    let deployment = as_stored(
        render(&spec, &SecretUse::default(), &PodOptions::default()),
        1,
        0,
    );
    let json = serde_json::to_value(status(&deployment)).unwrap();
    assert_eq!(json["envVars"], json!({}));
}

#[test]
fn a_deployment_made_elsewhere_is_read_back_from_its_pod_template() {
    let mut deployment = as_stored(
        render(&full_spec(), &full_secrets(), &PodOptions::default()),
        2,
        2,
    );
    deployment
        .metadata
        .annotations
        .as_mut()
        .unwrap()
        .remove(ANNOTATION_SPEC);
    let status = status(&deployment);
    assert_eq!(status.name, "echo");
    assert_eq!(status.image, "local/echo:latest");
    assert_eq!(status.env_process, "cat");
    assert_eq!(
        status.env_vars,
        Some([("custom_env".into(), "custom_env_value".into())].into())
    );
    assert_eq!(
        status.secrets,
        Some(vec!["api-key".into(), "registry".into()])
    );
    assert_eq!(
        status.constraints,
        Some(vec!["node.kubernetes.io/arch=amd64".into()])
    );
    assert_eq!(status.labels[LABEL_FUNCTION], "echo");
    assert_eq!(status.labels[LABEL_SCALE_MIN], "2");
    assert_eq!(status.annotations["topic"], "orders");
    assert!(
        !status.annotations.contains_key(ANNOTATION_REVISION),
        "Courier's own annotations are not the function's"
    );
    assert_eq!(status.limits, full_spec().limits);
    assert_eq!(status.requests, full_spec().requests);
    assert!(status.read_only_root_filesystem);
    assert_eq!((status.replicas, status.available_replicas), (2, 2));
}

#[test]
fn env_process_wins_over_an_fprocess_variable() {
    let spec = FunctionDeployment {
        env_vars: Some([("fprocess".into(), "env".into()), ("a".into(), "1".into())].into()),
        ..FunctionDeployment::test("echo", "cat")
    };
    let deployment = render(&spec, &SecretUse::default(), &PodOptions::default());
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    let env: Vec<(String, Option<String>)> = container
        .env
        .iter()
        .flatten()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect();
    assert_eq!(
        env,
        [
            ("fprocess".to_owned(), Some("cat".to_owned())),
            ("a".to_owned(), Some("1".to_owned()))
        ]
    );
}

#[test]
fn the_functions_own_prometheus_scrape_annotation_is_kept() {
    let spec = FunctionDeployment {
        annotations: Some([("prometheus.io.scrape".into(), "true".into())].into()),
        ..FunctionDeployment::test("echo", "cat")
    };
    let deployment = render(&spec, &SecretUse::default(), &PodOptions::default());
    assert_eq!(
        deployment.metadata.annotations.unwrap()["prometheus.io.scrape"],
        "true"
    );
}

#[test]
fn a_constraint_that_is_not_key_value_is_refused() {
    let spec = FunctionDeployment {
        constraints: Some(vec!["linux".into()]),
        ..FunctionDeployment::test("echo", "cat")
    };
    let result = FunctionObjects {
        function: &echo(),
        spec: &spec,
        secrets: &SecretUse::default(),
        revision: "r",
        pods: &PodOptions::default(),
    }
    .deployment();
    assert!(matches!(result, Err(ProviderError::Invalid(msg)) if msg.contains("linux")));
}

#[test]
fn registry_credentials_are_pulled_with_and_other_secrets_mounted() {
    let secret_of_type = |type_: &str| Secret {
        type_: Some(type_.into()),
        ..Secret::default()
    };
    let mut use_ = SecretUse::default();
    use_.add("api-key", &secret_of_type("Opaque"));
    use_.add(
        "registry",
        &secret_of_type("kubernetes.io/dockerconfigjson"),
    );
    use_.add("plain", &Secret::default());
    assert_eq!(use_.mounted, ["api-key", "plain"]);
    assert_eq!(use_.pull, ["registry"]);
}

#[test]
fn probe_times_round_up_to_whole_seconds() {
    assert_eq!(seconds(Duration::from_millis(500), 1), 1);
    assert_eq!(seconds(Duration::from_millis(1500), 1), 2);
    assert_eq!(seconds(Duration::ZERO, 0), 0);
    assert_eq!(seconds(Duration::ZERO, 1), 1);
}

#[test]
fn an_api_secret_has_one_key_named_after_it_and_is_managed() {
    let secret = secret("openfaas-fn", "api-key", b"s3cr3t".to_vec());
    assert_eq!(
        secret.data.as_ref().unwrap()["api-key"].0,
        b"s3cr3t".to_vec()
    );
    assert!(is_managed_secret(&secret));
    assert!(!is_managed_secret(&Secret::default()));
}

#[test]
fn the_applied_deployment_never_holds_replicas() {
    let deployment = render(&full_spec(), &full_secrets(), &PodOptions::default());
    assert_eq!(deployment.spec.unwrap().replicas, None);
}

#[test]
fn a_function_starts_with_scale_min_replicas_if_above_zero_else_one() {
    let with_min = |min: &str| FunctionDeployment {
        labels: Some([(LABEL_SCALE_MIN.to_owned(), min.to_owned())].into()),
        ..FunctionDeployment::test("echo", "cat")
    };
    assert_eq!(
        initial_replicas(&FunctionDeployment::test("echo", "cat")),
        1
    );
    assert_eq!(initial_replicas(&with_min("3")), 3);
    assert_eq!(initial_replicas(&with_min("0")), 1);
    assert_eq!(initial_replicas(&with_min("many")), 1);
}

#[test]
fn every_function_container_runs_non_root_and_locked_down_by_default() {
    for read_only in [false, true] {
        let spec = FunctionDeployment {
            read_only_root_filesystem: read_only,
            ..FunctionDeployment::test("echo", "cat")
        };
        let deployment = render(&spec, &SecretUse::default(), &PodOptions::default());
        let json = serde_json::to_value(&deployment).unwrap();
        let container = &json["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            container["securityContext"],
            json!({
                "runAsNonRoot": true,
                "runAsUser": 12000,
                "allowPrivilegeEscalation": false,
                "capabilities": { "drop": ["ALL"] },
                "seccompProfile": { "type": "RuntimeDefault" },
                "readOnlyRootFilesystem": read_only,
            })
        );
        let tmp = container["volumeMounts"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|m| m["mountPath"] == "/tmp");
        assert_eq!(
            tmp.is_some(),
            read_only,
            "a writable /tmp exactly when the root file system is read-only"
        );
        assert_eq!(
            (
                &container["readinessProbe"]["httpGet"]["path"],
                &container["livenessProbe"]["httpGet"]["path"]
            ),
            (&json!("/_/health"), &json!("/_/health"))
        );
    }
}

#[test]
fn keeping_the_images_user_still_requires_non_root() {
    let pods = PodOptions {
        run_as_user: None,
        ..PodOptions::default()
    };
    let deployment = render(
        &FunctionDeployment::test("echo", "cat"),
        &SecretUse::default(),
        &pods,
    );
    let container = &deployment.spec.unwrap().template.spec.unwrap().containers[0];
    let context = container.security_context.as_ref().unwrap();
    assert_eq!(
        (context.run_as_user, context.run_as_non_root),
        (None, Some(true))
    );
}
