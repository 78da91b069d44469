//! The gateway's autoscaler (`courier_gateway::Gateway::autoscale`, unchanged) run over this
//! provider. The Kubernetes API server is the only thing mocked: a [`FakeCluster`] that keeps
//! the function Deployments, their EndpointSlices, the autoscaler's Lease and PodMetrics, and
//! records every call. Calls go through the gateway's real proxy path to a real local HTTP
//! server standing in for the function's pods (the EndpointSlices point at it).

use std::sync::Arc;
use std::time::Duration;

use courier_core::{FunctionDeployment, Provider};
use courier_gateway::{AutoscaleConfig, Gateway, GatewayConfig};
use http::Method;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::fake_api::{ClusterView, FakeCluster, function_deployment};
use crate::{KubernetesConfig, KubernetesProvider, LeaseConfig};

const NS: &str = "openfaas-fn";
/// How long a call to the stand-in function takes.
const CALL: Duration = Duration::from_millis(300);

/// A stand-in for the function's pods: answers every request `CALL` later (keep-alive).
async fn function_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buffer = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Requests carry no body here: a request ends at the blank line.
                    while !buffer.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                        }
                    }
                    let end = buffer.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
                    buffer.drain(..end);
                    tokio::time::sleep(CALL).await;
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    if socket.write_all(answer).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    port
}

fn function(name: &str, labels: &[(&str, &str)], replicas: i32) -> (String, Value) {
    let mut spec = FunctionDeployment::test(name, "cat");
    spec.labels = Some(
        labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    );
    (
        format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}"),
        function_deployment(&spec, replicas),
    )
}

/// An EndpointSlice with one ready address: the stand-in server.
fn slice(name: &str, port: u16) -> (String, Value) {
    (
        format!("/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices/{name}-x"),
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": format!("{name}-x"), "namespace": NS, "resourceVersion": "5",
                          "labels": { "kubernetes.io/service-name": name } },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": ["127.0.0.1"], "conditions": { "ready": true } }],
            "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
        }),
    )
}

/// Capacity scaling, one call in flight per replica.
const BY_CAPACITY: [(&str, &str); 4] = [
    ("com.openfaas.scale.type", "capacity"),
    ("com.openfaas.scale.target", "1"),
    ("com.openfaas.scale.target-proportion", "1.0"),
    ("com.openfaas.scale.max", "5"),
];

async fn provider(client: kube::Client, lease: Option<&str>) -> Arc<KubernetesProvider> {
    let config = KubernetesConfig {
        namespace_selector: None,
        autoscaler_lease: lease.map(|identity| LeaseConfig {
            duration: Duration::from_secs(2),
            renew_every: Duration::from_millis(100),
            ..LeaseConfig::new(identity)
        }),
        ..KubernetesConfig::default()
    };
    tokio::time::timeout(
        Duration::from_secs(5),
        KubernetesProvider::start(client, config),
    )
    .await
    .expect("the provider started in time")
    .unwrap()
}

/// A gateway over `provider` running its autoscaler every 50 ms, until `stop`.
fn gateway(provider: Arc<KubernetesProvider>, stop: &CancellationToken) -> Arc<Gateway> {
    let gateway = Gateway::new(
        provider,
        None,
        GatewayConfig::default(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    let config = AutoscaleConfig {
        interval: Duration::from_millis(50),
        down_delay: Duration::from_secs(60),
    };
    let (running, stop) = (gateway.clone(), stop.clone());
    tokio::spawn(async move { running.autoscale(config, stop).await });
    gateway
}

/// Keeps `callers` calls to `name` in flight through `gateway` until `stop`.
fn load(gateway: &Arc<Gateway>, name: &str, callers: usize, stop: &CancellationToken) {
    for _ in 0..callers {
        let (gateway, stop) = (gateway.clone(), stop.clone());
        let uri = format!("/function/{name}");
        tokio::spawn(async move {
            while !stop.is_cancelled() {
                let request = http::Request::post(uri.as_str())
                    .body(bytes::Bytes::new())
                    .unwrap();
                let response = gateway.call_function(request).await;
                assert_eq!(response.status(), 200, "the call went through");
            }
        });
    }
}

/// The replica counts PATCHed to `name`'s scale subresource, in order.
fn scaled(view: &ClusterView, name: &str) -> Vec<i64> {
    let path = format!("/apis/apps/v1/namespaces/{NS}/deployments/{name}/scale");
    view.calls()
        .iter()
        .filter(|c| c.uri.split('?').next() == Some(path.as_str()))
        .map(|c| {
            assert_eq!(c.method, Method::PATCH, "the scale subresource is patched");
            c.body["spec"]["replicas"]
                .as_i64()
                .expect("a replica count")
        })
        .collect()
}

async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scales_up_through_the_scale_subresource_and_external_or_fixed_functions_are_left_alone()
 {
    let port = function_server().await;
    let external = [
        BY_CAPACITY.as_slice(),
        &[("com.openfaas.scale.autoscaler", "external")],
    ]
    .concat();
    let fixed = [
        ("com.openfaas.scale.type", "capacity"),
        ("com.openfaas.scale.target", "1"),
        ("com.openfaas.scale.min", "2"),
        ("com.openfaas.scale.max", "2"),
    ];
    let (client, view) = FakeCluster::start(vec![
        function("busy", &BY_CAPACITY, 1),
        function("external", &external, 1),
        // At 1 replica although min = max = 2 (whoever owns it set it so): an autoscaler that
        // did not leave it alone would scale it to 2.
        function("fixed", &fixed, 1),
        slice("busy", port),
        slice("external", port),
        slice("fixed", port),
    ]);
    let stop = CancellationToken::new();
    let provider = provider(client, None).await;
    let gateway = gateway(provider.clone(), &stop);
    for name in ["busy", "external", "fixed"] {
        load(&gateway, name, 3, &stop);
    }

    until("busy is scaled to 3", || scaled(&view, "busy").contains(&3)).await;
    // A few more rounds under the same load.
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.cancel();
    let busy = scaled(&view, "busy");
    assert!(
        busy.iter().all(|&r| r > 1 && r <= 3),
        "up with the load (3 in flight, 1 per replica), never down: {busy:?}"
    );
    assert_eq!(
        scaled(&view, "external"),
        Vec::<i64>::new(),
        "external: left to the HPA/KEDA"
    );
    assert_eq!(
        scaled(&view, "fixed"),
        Vec::<i64>::new(),
        "min == max: nothing to decide"
    );
    let status = provider.status(NS, "busy").await.unwrap();
    assert_eq!(status.replicas, 3, "the Deployment has the new count");
    provider.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_gateway_holding_the_lease_scales() {
    let port = function_server().await;
    let (client, view) =
        FakeCluster::start(vec![function("busy", &BY_CAPACITY, 1), slice("busy", port)]);
    let stop = CancellationToken::new();
    let a = provider(client.clone(), Some("gateway-a")).await;
    until("gateway-a holds the lease", || a.autoscaler_leader()).await;
    let b = provider(client, Some("gateway-b")).await;
    let (gateway_a, gateway_b) = (gateway(a.clone(), &stop), gateway(b.clone(), &stop));
    // Different loads, so each gateway's decision is told apart by its replica count.
    load(&gateway_a, "busy", 2, &stop);
    load(&gateway_b, "busy", 4, &stop);

    until("the leader scales busy to 2", || {
        scaled(&view, "busy").contains(&2)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(a.autoscaler_leader() && !b.autoscaler_leader());
    stop.cancel();
    let counts = scaled(&view, "busy");
    assert!(
        counts.iter().all(|&r| r == 2),
        "only gateway-a (2 in flight) scaled, never gateway-b (4 in flight): {counts:?}"
    );
    a.shutdown().await;
    b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cpu_scaling_reads_pod_metrics_in_millicores() {
    let labels = [
        ("com.openfaas.scale.type", "cpu"),
        ("com.openfaas.scale.target", "100"),
        ("com.openfaas.scale.target-proportion", "1.0"),
        ("com.openfaas.scale.max", "10"),
    ];
    let pod = |name: &str, cpu: &str| {
        (
            format!("/apis/metrics.k8s.io/v1beta1/namespaces/{NS}/pods/{name}"),
            json!({
                "apiVersion": "metrics.k8s.io/v1beta1", "kind": "PodMetrics",
                "metadata": { "name": name, "namespace": NS, "labels": { "faas_function": "burn" } },
                "timestamp": "2026-11-26T10:00:00Z", "window": "15s",
                "containers": [{ "name": "burn", "usage": { "cpu": cpu, "memory": "10Mi" } }],
            }),
        )
    };
    // 250m + 0.5 core (in nanocores, as metrics-server reports) = 750m: 8 replicas of 100m.
    let (client, view) = FakeCluster::start(vec![
        function("burn", &labels, 1),
        pod("burn-1", "250m"),
        pod("burn-2", "500000000n"),
    ]);
    let stop = CancellationToken::new();
    let provider = provider(client, None).await;
    let _gateway = gateway(provider.clone(), &stop);
    until("burn is scaled", || !scaled(&view, "burn").is_empty()).await;
    stop.cancel();
    assert_eq!(scaled(&view, "burn")[0], 8);
    let asked = view
        .calls()
        .into_iter()
        .find(|c| c.uri.starts_with("/apis/metrics.k8s.io/"))
        .expect("the metrics API was read");
    assert_eq!(asked.method, Method::GET);
    assert!(
        asked.uri.contains("labelSelector=faas_function%3Dburn"),
        "{}",
        asked.uri
    );
    provider.shutdown().await;
}
