//! The lease rule, and candidates competing against the fake API server (`FakeCluster`: the
//! Kubernetes API server is the only thing mocked; it keeps the Lease and refuses a stale
//! update with 409 as the real one does).

use std::sync::Arc;

use courier_core::Provider;
use serde_json::json;

use super::*;
use crate::fake_api::{ClusterView, FakeCluster};
use crate::{KubernetesConfig, KubernetesProvider};

const LEASE_PATH: &str =
    "/apis/coordination.k8s.io/v1/namespaces/openfaas-fn/leases/courier-autoscaler";

fn held_by(holder: Option<&str>, seconds: i32) -> LeaseSpec {
    LeaseSpec {
        holder_identity: holder.map(str::to_owned),
        lease_duration_seconds: Some(seconds),
        ..LeaseSpec::default()
    }
}

#[test]
fn the_rule_creates_renews_waits_and_takes_over() {
    let d = Duration::from_secs(15);
    let none = Duration::ZERO;
    let cases = [
        (None, none, Action::Create),
        (Some(held_by(Some("me"), 15)), none, Action::Renew),
        (
            Some(held_by(Some("other"), 15)),
            Duration::from_secs(14),
            Action::StandBy,
        ),
        (
            Some(held_by(Some("other"), 15)),
            Duration::from_secs(15),
            Action::TakeOver,
        ),
        (
            Some(held_by(Some("other"), 3)),
            Duration::from_secs(3),
            Action::TakeOver,
        ),
        (Some(held_by(None, 15)), none, Action::TakeOver),
        (Some(held_by(Some(""), 15)), none, Action::TakeOver),
    ];
    for (lease, unchanged, want) in cases {
        assert_eq!(
            decide(lease.as_ref(), "me", unchanged, d),
            want,
            "{lease:?} {unchanged:?}"
        );
    }
}

fn candidate(client: kube::Client, identity: &str) -> Arc<KubernetesProvider> {
    let config = KubernetesConfig {
        autoscaler_lease: Some(LeaseConfig {
            duration: Duration::from_secs(1),
            renew_every: Duration::from_millis(100),
            ..LeaseConfig::new(identity)
        }),
        ..KubernetesConfig::default()
    };
    let provider = Arc::new(KubernetesProvider::without_watches(client, config));
    provider.spawn_lease();
    provider
}

async fn until(what: &str, deadline: Duration, check: impl Fn() -> bool) -> Duration {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    start.elapsed()
}

fn holder(view: &ClusterView) -> Option<String> {
    view.calls()
        .iter()
        .rev()
        .find(|c| c.uri.starts_with(LEASE_PATH) && c.method == http::Method::PUT)
        .and_then(|c| c.body["spec"]["holderIdentity"].as_str().map(str::to_owned))
}

#[tokio::test]
async fn one_candidate_leads_the_other_stands_by_and_takes_over_when_it_is_released() {
    let (client, view) = FakeCluster::start(vec![]);
    let a = candidate(client.clone(), "gateway-a");
    until("a leads", Duration::from_secs(5), || a.autoscaler_leader()).await;
    let b = candidate(client, "gateway-b");
    // Longer than the lease's duration: a keeps renewing, so b never leads.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(a.autoscaler_leader() && !b.autoscaler_leader());
    }
    assert_eq!(holder(&view).as_deref(), Some("gateway-a"), "a renews");

    a.shutdown().await;
    assert!(!a.autoscaler_leader());
    until("b leads", Duration::from_secs(5), || b.autoscaler_leader()).await;
    assert_eq!(holder(&view).as_deref(), Some("gateway-b"));
    b.shutdown().await;
}

#[tokio::test]
async fn a_lease_whose_holder_stopped_renewing_is_taken_over_after_its_duration() {
    let lease = json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": { "name": "courier-autoscaler", "namespace": "openfaas-fn", "resourceVersion": "3" },
        "spec": { "holderIdentity": "gone", "leaseDurationSeconds": 1, "leaseTransitions": 4 },
    });
    let (client, view) = FakeCluster::start(vec![(LEASE_PATH.into(), lease)]);
    let b = candidate(client, "gateway-b");
    let waited = until("b leads", Duration::from_secs(5), || b.autoscaler_leader()).await;
    assert!(
        waited >= Duration::from_millis(900),
        "took over after {waited:?}, before the lease's duration ran out"
    );
    let takeover = view
        .calls()
        .into_iter()
        .find(|c| c.method == http::Method::PUT)
        .expect("a conditional update");
    assert_eq!(takeover.body["metadata"]["resourceVersion"], "3");
    assert_eq!(takeover.body["spec"]["holderIdentity"], "gateway-b");
    assert_eq!(takeover.body["spec"]["leaseTransitions"], 5);
    b.shutdown().await;
}
