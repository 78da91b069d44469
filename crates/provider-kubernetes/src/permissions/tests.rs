//! Every code path of the provider, run against a [`FakeCluster`] that records the RBAC check
//! each API call needs: what each path needs, and that [`PERMISSIONS`] is exactly their union.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use courier_core::function::LABEL_SCALE_MIN;
use courier_core::{FunctionDeployment, LogRequest, Provider, Secret};
use serde_json::json;

use super::*;
use crate::fake_api::{Access, ClusterView, FakeCluster, TEST_DEADLINE};
use crate::{KubernetesConfig, KubernetesProvider};

const NS: &str = "openfaas-fn";

fn pod() -> (String, serde_json::Value) {
    (
        format!("/api/v1/namespaces/{NS}/pods/echo-1"),
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "echo-1", "namespace": NS, "labels": { "faas_function": "echo" } },
        }),
    )
}

fn labelled_namespace(name: &str) -> (String, serde_json::Value) {
    (
        format!("/api/v1/namespaces/{name}"),
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": name, "labels": { "openfaas": "1" } },
        }),
    )
}

/// `verb resource` of each check, sorted.
fn short(accesses: &BTreeSet<Access>) -> Vec<String> {
    let mut out: Vec<String> = accesses.iter().map(ToString::to_string).collect();
    out.sort();
    out
}

/// Runs `path`, then returns what it needed.
async fn needs<T>(
    view: &ClusterView,
    path: impl Future<Output = Result<T, courier_core::ProviderError>>,
) -> BTreeSet<Access> {
    view.take();
    tokio::time::timeout(TEST_DEADLINE, path)
        .await
        .expect("the call finished")
        .expect("the call succeeded");
    view.take()
}

/// Every code path, in an order that works (a secret before the function that uses it): the
/// name of each, with the checks it needed.
async fn exercise() -> BTreeMap<&'static str, BTreeSet<Access>> {
    let mut needed = BTreeMap::new();

    // The start-up: the watches of the default namespace and of a labelled one.
    let (client, view) =
        FakeCluster::start(vec![labelled_namespace(NS), labelled_namespace("team-b")]);
    let provider = tokio::time::timeout(
        TEST_DEADLINE,
        KubernetesProvider::start(client, KubernetesConfig::default()),
    )
    .await
    .expect("start finished")
    .expect("start succeeded");
    assert_eq!(provider.namespaces().await.unwrap(), [NS, "team-b"]);
    // Each watch opens its watch once it has listed: 2 per namespace, and the namespaces'.
    let all_open = async {
        while view.open_watches() < 5 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(TEST_DEADLINE, all_open)
        .await
        .expect("every watch opened");
    needed.insert("start (watches, namespace discovery)", view.take());
    provider.shutdown().await;

    // The API calls, on a provider without watches.
    let (client, view) = FakeCluster::start(vec![pod()]);
    let provider = KubernetesProvider::without_watches(client, KubernetesConfig::default());
    let secret = |value: &str| Secret {
        name: "api-key".into(),
        value: value.into(),
        ..Secret::default()
    };
    let spec = FunctionDeployment {
        secrets: Some(vec!["api-key".into()]),
        labels: Some([(LABEL_SCALE_MIN.to_owned(), "2".to_owned())].into()),
        ..FunctionDeployment::test("echo", "cat")
    };
    let logs = LogRequest {
        name: "echo".into(),
        namespace: NS.into(),
        instance: None,
        tail: None,
        follow: false,
        since_unix_nanos: None,
    };
    needed.insert(
        "create_secret",
        needs(&view, provider.create_secret(NS, secret("v1"))).await,
    );
    needed.insert(
        "list_secrets",
        needs(&view, provider.list_secrets(NS)).await,
    );
    needed.insert(
        "update_secret",
        needs(&view, provider.update_secret(NS, secret("v2"))).await,
    );
    needed.insert(
        "deploy",
        needs(&view, provider.deploy(NS, spec.clone())).await,
    );
    needed.insert("update", needs(&view, provider.update(NS, spec)).await);
    needed.insert("scale", needs(&view, provider.scale(NS, "echo", 0)).await);
    needed.insert("status", needs(&view, provider.status(NS, "echo")).await);
    needed.insert("list", needs(&view, provider.list(NS)).await);
    needed.insert("logs", needs(&view, provider.logs(logs)).await);
    needed.insert(
        "cpu_millicores",
        needs(&view, provider.cpu_millicores(NS, "echo")).await,
    );
    needed.insert("delete", needs(&view, provider.delete(NS, "echo")).await);
    needed.insert(
        "delete_secret",
        needs(&view, provider.delete_secret(NS, "api-key")).await,
    );

    // The autoscaler's lease: taken, then released at shutdown.
    let (client, view) = FakeCluster::start(vec![]);
    let config = KubernetesConfig {
        autoscaler_lease: Some(crate::LeaseConfig::new("gateway-a")),
        ..KubernetesConfig::default()
    };
    let provider = KubernetesProvider::without_watches(client, config);
    provider.spawn_lease();
    let leads = async {
        while !provider.autoscaler_leader() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(TEST_DEADLINE, leads)
        .await
        .expect("the lease was taken");
    provider.shutdown().await;
    needed.insert("autoscaler lease", view.take());
    needed
}

#[tokio::test]
async fn each_code_path_needs_exactly_these_permissions() {
    let needed: BTreeMap<&str, Vec<String>> = exercise()
        .await
        .iter()
        .map(|(path, accesses)| (*path, short(accesses)))
        .collect();
    let expected: BTreeMap<&str, Vec<&str>> = [
        (
            "start (watches, namespace discovery)",
            vec![
                "list deployments",
                "list endpointslices",
                "list namespaces",
                "watch deployments",
                "watch endpointslices",
                "watch namespaces",
            ],
        ),
        ("create_secret", vec!["create secrets"]),
        ("list_secrets", vec!["list secrets"]),
        ("update_secret", vec!["get secrets", "update secrets"]),
        (
            "deploy",
            vec![
                "create deployments",
                "create services",
                "get deployments",
                "get secrets",
                "patch deployments",
                "patch deployments/scale",
                "patch services",
            ],
        ),
        (
            "update",
            vec![
                "get deployments",
                "get secrets",
                "patch deployments",
                "patch services",
            ],
        ),
        ("scale", vec!["get deployments", "patch deployments/scale"]),
        ("status", vec!["get deployments"]),
        ("list", vec!["list deployments"]),
        ("logs", vec!["get deployments", "get pods/log", "list pods"]),
        ("cpu_millicores", vec!["list pods"]),
        (
            "autoscaler lease",
            vec!["create leases", "get leases", "update leases"],
        ),
        (
            "delete",
            vec!["delete deployments", "delete services", "get deployments"],
        ),
        (
            "delete_secret",
            vec!["delete secrets", "get secrets", "list deployments"],
        ),
    ]
    .into();
    assert_eq!(needed.len(), expected.len());
    for (path, verbs) in &expected {
        assert_eq!(needed[path], *verbs, "{path}");
    }
}

#[tokio::test]
async fn the_permissions_are_exactly_what_the_code_paths_need() {
    let used: BTreeSet<Access> = exercise().await.into_values().flatten().collect();
    let granted: BTreeSet<Access> = PERMISSIONS
        .iter()
        .flat_map(|p| {
            p.verbs.iter().map(|verb| Access {
                scope: p.scope,
                api_group: p.api_group.to_owned(),
                resource: p.resource.to_owned(),
                verb,
            })
        })
        .collect();
    let unused: Vec<_> = granted.difference(&used).collect();
    let missing: Vec<_> = used.difference(&granted).collect();
    assert!(
        unused.is_empty() && missing.is_empty(),
        "PERMISSIONS grants what no code path needs: {unused:?}; lacks {missing:?}"
    );
}

#[test]
fn permission_verbs_are_sorted_and_resources_unique() {
    let mut seen = BTreeSet::new();
    for p in PERMISSIONS {
        assert!(p.verbs.is_sorted(), "{p:?}");
        assert!(seen.insert((p.api_group, p.resource)), "{p:?} twice");
    }
}

/// The crate docs' table row of a permission: `| scope | group | resource | verbs |`.
fn doc_row(p: &Permission) -> String {
    let scope = match p.scope {
        PermissionScope::ServedNamespace => "each served namespace",
        PermissionScope::Cluster => "cluster",
    };
    let group = if p.api_group.is_empty() {
        "core"
    } else {
        p.api_group
    };
    format!(
        "//! | {scope} | `{group}` | `{}` | {} | {} |",
        p.resource,
        p.verbs.join(", "),
        p.used_by
    )
}

#[test]
fn the_crate_docs_list_exactly_these_permissions() {
    let docs = include_str!("../lib.rs");
    let rows: Vec<&str> = docs
        .lines()
        .filter(|l| {
            l.starts_with("//! | ") && !l.starts_with("//! | where") && !l.starts_with("//! |---")
        })
        .collect();
    let expected: Vec<String> = PERMISSIONS.iter().map(doc_row).collect();
    assert_eq!(rows, expected, "update the table in lib.rs");
}
