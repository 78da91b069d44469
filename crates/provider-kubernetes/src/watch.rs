//! The watches that keep the [`RoutingTable`] and the [`ServedNamespaces`] current.
//!
//! - Per served namespace, one on function Deployments (which functions exist, for routing;
//!   the whole objects, for the [`FunctionCache`] that answers `Provider::list`) and one on
//!   EndpointSlices (which pods are ready).
//! - With a namespace selector, one on the cluster's namespaces (metadata only): a matching
//!   namespace that is not served yet gets its two watches and is served once both have
//!   listed it; one that stops matching (label removed, namespace deleted) has its watches
//!   stopped, is no longer served and is forgotten by the routing table.
//!
//! kube's watcher re-lists after a disconnect or an expired resource version, with its
//! default backoff; each full listing replaces what was known.

use std::collections::HashMap;
use std::sync::Arc;

use courier_core::function::LABEL_FUNCTION;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::FunctionCache;
use crate::routing::{LABEL_SERVICE_NAME, ReadySlice, RoutingTable};
use crate::served::ServedNamespaces;

/// Never served, even when labelled: OpenFaaS refuses it too.
const KUBE_SYSTEM: &str = "kube-system";

/// A change the table applies, with watcher objects already mapped to what it keeps.
#[derive(Debug)]
enum Change<T> {
    /// Created or changed.
    Apply(T),
    /// Deleted.
    Remove(T),
    /// All there is (after a listing).
    Replace(Vec<T>),
}

/// What every watch task shares: the client, what they keep current, and where they run.
#[derive(Clone)]
pub(crate) struct Watching {
    pub(crate) client: Client,
    pub(crate) table: Arc<RoutingTable>,
    pub(crate) cache: Arc<FunctionCache>,
    pub(crate) served: Arc<ServedNamespaces>,
    pub(crate) tracker: TaskTracker,
}

impl Watching {
    /// Starts both watches of `namespace`, until `stop`; the receiver fires once both have
    /// listed it (it errs if they stop first).
    pub(crate) fn spawn_namespace(
        &self,
        namespace: &str,
        stop: &CancellationToken,
    ) -> oneshot::Receiver<()> {
        let (functions_tx, functions_rx) = oneshot::channel();
        self.tracker.spawn(functions(
            Api::namespaced(self.client.clone(), namespace),
            namespace.to_owned(),
            self.table.clone(),
            self.cache.clone(),
            functions_tx,
            stop.clone(),
        ));
        let (slices_tx, slices_rx) = oneshot::channel();
        self.tracker.spawn(slices(
            Api::namespaced(self.client.clone(), namespace),
            namespace.to_owned(),
            self.table.clone(),
            slices_tx,
            stop.clone(),
        ));
        let (listed_tx, listed_rx) = oneshot::channel();
        self.tracker.spawn(async move {
            // A watch that stops drops its sender: then this ends without firing.
            if let (Ok(()), Ok(())) = futures_util::join!(functions_rx, slices_rx) {
                let _ = listed_tx.send(());
            }
        });
        listed_rx
    }

    /// Starts following the namespaces matching `selector`, until `stop`. The receiver fires
    /// after the first listing, with one receiver per namespace it found to serve, which
    /// fires once that namespace is served.
    pub(crate) fn spawn_discovery(
        &self,
        selector: String,
        stop: &CancellationToken,
    ) -> oneshot::Receiver<Vec<oneshot::Receiver<()>>> {
        let (listed_tx, listed_rx) = oneshot::channel();
        self.tracker.spawn(discover(
            Api::all(self.client.clone()),
            self.clone(),
            selector,
            listed_tx,
            stop.clone(),
        ));
        listed_rx
    }

    /// Starts serving the labelled `namespace` unless it is served already; the receiver
    /// fires once it is.
    fn discovered(
        &self,
        namespace: &str,
        known: &mut HashMap<String, CancellationToken>,
        stop: &CancellationToken,
    ) -> Option<oneshot::Receiver<()>> {
        if self.served.is_fixed(namespace)
            || namespace == KUBE_SYSTEM
            || known.contains_key(namespace)
        {
            return None;
        }
        tracing::info!(namespace, "Labelled namespace found; watching it.");
        let withdrawn = stop.child_token();
        let listed = self.spawn_namespace(namespace, &withdrawn);
        let (served_tx, served_rx) = oneshot::channel();
        let served = self.served.clone();
        let (name, token) = (namespace.to_owned(), withdrawn.clone());
        self.tracker.spawn(async move {
            if listed.await.is_ok() && served.serve_unless(&name, &token) {
                tracing::info!(namespace = %name, "Serving labelled namespace.");
                let _ = served_tx.send(());
            }
        });
        known.insert(namespace.to_owned(), withdrawn);
        Some(served_rx)
    }

    /// Stops serving the labelled `namespace`: its watches stop and its routes are dropped.
    fn withdrawn(&self, namespace: &str, known: &mut HashMap<String, CancellationToken>) {
        let Some(token) = known.remove(namespace) else {
            return;
        };
        token.cancel();
        self.served.withdraw(namespace);
        self.table.forget_namespace(namespace);
        self.cache.forget_namespace(namespace);
        tracing::info!(namespace, "Namespace no longer labelled; no longer served.");
    }
}

/// Follows the namespaces matching `selector` (their metadata only) and serves them.
async fn discover(
    api: Api<PartialObjectMeta<Namespace>>,
    watching: Watching,
    selector: String,
    listed: oneshot::Sender<Vec<oneshot::Receiver<()>>>,
    stop: CancellationToken,
) {
    let events = watcher(api, watcher::Config::default().labels(&selector)).default_backoff();
    let mut known: HashMap<String, CancellationToken> = HashMap::new();
    let mut listed = Some(listed);
    let (synced, _) = oneshot::channel();
    follow(
        events,
        |meta| meta.metadata.name.clone().unwrap_or_default(),
        |change| match change {
            Change::Apply(namespace) => {
                watching.discovered(&namespace, &mut known, &stop);
            }
            Change::Remove(namespace) => watching.withdrawn(&namespace, &mut known),
            Change::Replace(namespaces) => {
                let gone: Vec<String> = known
                    .keys()
                    .filter(|ns| !namespaces.contains(ns))
                    .cloned()
                    .collect();
                for namespace in gone {
                    watching.withdrawn(&namespace, &mut known);
                }
                let found: Vec<_> = namespaces
                    .iter()
                    .filter_map(|ns| watching.discovered(ns, &mut known, &stop))
                    .collect();
                if let Some(listed) = listed.take() {
                    let _ = listed.send(found);
                }
            }
        },
        "namespaces",
        "(cluster)",
        synced,
        stop.clone(),
    )
    .await;
}

/// Follows the function Deployments of one namespace: their names into the routing table,
/// the objects into the cache.
pub(crate) async fn functions(
    api: Api<Deployment>,
    namespace: String,
    table: Arc<RoutingTable>,
    cache: Arc<FunctionCache>,
    synced: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let events = watcher(api, watcher::Config::default().labels(LABEL_FUNCTION)).default_backoff();
    follow(
        events,
        |deployment: &Deployment| {
            let name = deployment.metadata.name.clone().unwrap_or_default();
            (name, deployment.clone())
        },
        |change| match change {
            Change::Apply((name, deployment)) => {
                table.add_function(&namespace, &name);
                cache.apply(&namespace, deployment);
            }
            Change::Remove((name, _)) => {
                table.remove_function(&namespace, &name);
                cache.remove(&namespace, &name);
            }
            Change::Replace(functions) => {
                let (names, deployments) = functions.into_iter().unzip();
                table.replace_functions(&namespace, names);
                cache.replace(&namespace, deployments);
            }
        },
        "functions",
        &namespace,
        synced,
        stop,
    )
    .await;
}

/// Follows the EndpointSlices of one namespace.
pub(crate) async fn slices(
    api: Api<EndpointSlice>,
    namespace: String,
    table: Arc<RoutingTable>,
    synced: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let events =
        watcher(api, watcher::Config::default().labels(LABEL_SERVICE_NAME)).default_backoff();
    follow(
        events,
        ReadySlice::from_endpoint_slice,
        |change| match change {
            Change::Apply(slice) => table.apply_slice(&namespace, slice),
            Change::Remove(slice) => table.remove_slice(&namespace, &slice.name),
            Change::Replace(slices) => table.replace_slices(&namespace, slices),
        },
        "endpoint slices",
        &namespace,
        synced,
        stop,
    )
    .await;
}

/// Feeds watcher events to `apply` until `stop`: listings are buffered and applied whole, so
/// the table never sees half a listing. Errors are logged; the stream retries by itself.
async fn follow<K, T, E>(
    events: impl Stream<Item = Result<Event<K>, E>>,
    map: impl Fn(&K) -> T,
    mut apply: impl FnMut(Change<T>),
    what: &str,
    namespace: &str,
    synced: oneshot::Sender<()>,
    stop: CancellationToken,
) where
    E: std::fmt::Display,
{
    let mut events = std::pin::pin!(events);
    let mut synced = Some(synced);
    let mut listing = Vec::new();
    loop {
        let event = tokio::select! {
            () = stop.cancelled() => return,
            event = events.next() => event,
        };
        match event {
            None => return,
            Some(Err(e)) => {
                tracing::warn!(namespace, watch = what, error = %e, "Watch failed; retrying.");
            }
            Some(Ok(Event::Init)) => listing.clear(),
            Some(Ok(Event::InitApply(object))) => listing.push(map(&object)),
            Some(Ok(Event::InitDone)) => {
                apply(Change::Replace(std::mem::take(&mut listing)));
                if let Some(synced) = synced.take() {
                    tracing::debug!(namespace, watch = what, "Watch synced.");
                    let _ = synced.send(());
                }
            }
            Some(Ok(Event::Apply(object))) => apply(Change::Apply(map(&object))),
            Some(Ok(Event::Delete(object))) => apply(Change::Remove(map(&object))),
        }
    }
}

#[cfg(test)]
mod tests {
    use courier_core::{DEFAULT_NAMESPACE, FunctionRef, ProviderError};
    use http::Method;
    use kube::client::Body;
    use serde_json::{Value, json};

    use super::*;
    use crate::fake_api::{
        FakeApi, TEST_DEADLINE, answer_with, failure, function_deployment, list,
    };
    use crate::{KubernetesConfig, KubernetesProvider};
    use courier_core::Provider;

    const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/openfaas-fn/endpointslices";
    const DEPLOYMENTS: &str = "/apis/apps/v1/namespaces/openfaas-fn/deployments";

    fn slice(ip: &str) -> Value {
        json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": { "name": "echo-x1", "namespace": DEFAULT_NAMESPACE, "resourceVersion": "5",
                          "labels": { LABEL_SERVICE_NAME: "echo" } },
            "addressType": "IPv4",
            "endpoints": [{ "addresses": [ip], "conditions": { "ready": true } }],
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
        })
    }

    fn echo() -> FunctionRef {
        FunctionRef::new("echo", None).unwrap()
    }

    async fn within_deadline<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(TEST_DEADLINE, f)
            .await
            .expect("the watch did not make the expected call in time")
    }

    #[tokio::test]
    async fn the_slice_watch_lists_then_follows_changes() {
        let (client, mut api) = FakeApi::pair();
        let table = Arc::new(RoutingTable::default());
        table.add_function(DEFAULT_NAMESPACE, "echo");
        let (synced_tx, synced) = oneshot::channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(slices(
            Api::namespaced(client, DEFAULT_NAMESPACE),
            DEFAULT_NAMESPACE.into(),
            table.clone(),
            synced_tx,
            stop.clone(),
        ));

        within_deadline(async {
            api.expect(
                Method::GET,
                &format!("{SLICES}?labelSelector={LABEL_SERVICE_NAME}"),
                200,
                list(
                    "EndpointSliceList",
                    "discovery.k8s.io/v1",
                    vec![slice("10.0.0.1")],
                ),
            )
            .await;
            synced.await.unwrap();
        })
        .await;
        assert_eq!(
            table.resolve(&echo()).unwrap().authority.as_str(),
            "10.0.0.1:8080"
        );

        within_deadline(async {
            let (watch, send) = api.receive().await;
            watch.assert_is(
                &Method::GET,
                &format!("{SLICES}?watch=true&resourceVersion=100"),
            );
            let event = json!({ "type": "DELETED", "object": slice("10.0.0.1") });
            send.send_response(http::Response::new(Body::from(
                format!("{event}\n").into_bytes(),
            )));
            // The watcher watches again once the event stream ends: the event is applied.
            let (_again, _pending) = api.receive().await;
            assert!(matches!(
                table.resolve(&echo()),
                Err(ProviderError::NotReady(_))
            ));
        })
        .await;
        stop.cancel();
        within_deadline(task).await.unwrap();
    }

    #[tokio::test]
    async fn the_function_watch_routes_and_caches_the_deployments() {
        let (client, mut api) = FakeApi::pair();
        let table = Arc::new(RoutingTable::default());
        let cache = Arc::new(FunctionCache::default());
        let (synced_tx, synced) = oneshot::channel();
        let stop = CancellationToken::new();
        tokio::spawn(functions(
            Api::namespaced(client, DEFAULT_NAMESPACE),
            DEFAULT_NAMESPACE.into(),
            table.clone(),
            cache.clone(),
            synced_tx,
            stop.clone(),
        ));
        let echo_deployment =
            function_deployment(&courier_core::FunctionDeployment::test("echo", "cat"), 2);
        within_deadline(async {
            api.expect(
                Method::GET,
                &format!("{DEPLOYMENTS}?labelSelector=faas_function"),
                200,
                list("DeploymentList", "apps/v1", vec![echo_deployment.clone()]),
            )
            .await;
            synced.await.unwrap();
        })
        .await;
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotReady(_))
        ));
        let cached = cache
            .list(DEFAULT_NAMESPACE)
            .expect("the namespace is listed");
        assert_eq!(cached.len(), 1);
        assert_eq!(cached[0].spec.as_ref().unwrap().replicas, Some(2));

        within_deadline(async {
            let (watch, send) = api.receive().await;
            watch.assert_is(&Method::GET, &format!("{DEPLOYMENTS}?watch=true"));
            let event = json!({ "type": "DELETED", "object": echo_deployment });
            send.send_response(http::Response::new(Body::from(
                format!("{event}\n").into_bytes(),
            )));
            let (_again, _pending) = api.receive().await;
        })
        .await;
        assert!(cache.list(DEFAULT_NAMESPACE).unwrap().is_empty());
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotFound { .. })
        ));
        stop.cancel();
    }

    #[tokio::test]
    async fn catalog_reads_are_served_from_the_watch_cache_without_listing_again() {
        let (client, api) = FakeApi::pair();
        let mut cluster = Cluster::start_with(
            api,
            200,
            vec![],
            vec![function_deployment(
                &courier_core::FunctionDeployment::test("echo", "cat"),
                3,
            )],
        );
        let config = KubernetesConfig {
            namespace_selector: None,
            ..KubernetesConfig::default()
        };
        let provider = within_deadline(KubernetesProvider::start(client, config))
            .await
            .unwrap();
        assert_eq!(
            cluster.listed(),
            [
                "/apis/apps/v1/namespaces/openfaas-fn/deployments",
                "/apis/discovery.k8s.io/v1/namespaces/openfaas-fn/endpointslices",
            ],
            "each watch lists once at start"
        );
        // A catalog refreshes every 500 ms in each component; the autoscaler every second.
        for _ in 0..50 {
            let functions = provider.list(DEFAULT_NAMESPACE).await.unwrap();
            assert_eq!(functions.len(), 1);
            assert_eq!(
                (functions[0].name.as_str(), functions[0].replicas),
                ("echo", 3)
            );
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert_eq!(
            cluster.listed(),
            Vec::<String>::new(),
            "no list call after start"
        );
        within_deadline(provider.shutdown()).await;
    }

    const NAMESPACES: &str = "/api/v1/namespaces";

    fn namespace(name: &str) -> Value {
        json!({
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": { "name": name, "labels": { "openfaas": "1" }, "resourceVersion": "9" },
        })
    }

    /// Plays the API server for start-up: answers every listing (namespaces: `namespaces`,
    /// or `namespace_status` when not 200; the rest: empty), leaves watches open, reports each
    /// listed path, and answers the namespaces watch with the events the test sends.
    struct Cluster {
        listed: tokio::sync::mpsc::UnboundedReceiver<String>,
        events: tokio::sync::mpsc::UnboundedSender<Value>,
    }

    impl Cluster {
        fn start(api: FakeApi, namespace_status: u16, namespaces: Vec<Value>) -> Self {
            Self::start_with(api, namespace_status, namespaces, vec![])
        }

        /// As [`start`](Self::start), listing `functions` as the Deployments of every
        /// namespace.
        fn start_with(
            mut api: FakeApi,
            namespace_status: u16,
            namespaces: Vec<Value>,
            functions: Vec<Value>,
        ) -> Self {
            let (listed_tx, listed) = tokio::sync::mpsc::unbounded_channel();
            let (events, mut events_rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
            let (requests_tx, mut requests) = tokio::sync::mpsc::unbounded_channel();
            // Receiving is not cancel-safe (the body is read): it gets a task of its own.
            tokio::spawn(async move {
                loop {
                    if requests_tx.send(api.receive().await).is_err() {
                        return;
                    }
                }
            });
            tokio::spawn(async move {
                let mut open = Vec::new();
                let mut namespace_watch = None;
                loop {
                    tokio::select! {
                        Some(event) = events_rx.recv() => {
                            let send: tower_test::mock::SendResponse<_> =
                                namespace_watch.take().expect("the namespaces watch is open");
                            send.send_response(http::Response::new(Body::from(
                                format!("{event}\n").into_bytes(),
                            )));
                        }
                        Some((request, send)) = requests.recv() => {
                            let (path, _) = request.uri.split_once('?').unwrap_or((&request.uri, ""));
                            if request.uri.contains("watch=true") {
                                if path == NAMESPACES {
                                    namespace_watch = Some(send);
                                } else {
                                    open.push(send);
                                }
                                continue;
                            }
                            let _ = listed_tx.send(path.to_owned());
                            let (status, answer) = match path {
                                NAMESPACES if namespace_status != 200 => (
                                    namespace_status,
                                    failure(namespace_status, "Forbidden", "namespaces is forbidden"),
                                ),
                                NAMESPACES => (
                                    200,
                                    list("PartialObjectMetadataList", "meta.k8s.io/v1", namespaces.clone()),
                                ),
                                p if p.ends_with("/deployments") => {
                                    (200, list("DeploymentList", "apps/v1", functions.clone()))
                                }
                                _ => (200, list("List", "v1", vec![])),
                            };
                            send.send_response(answer_with(status, &answer));
                        }
                        else => return,
                    }
                }
            });
            Self { listed, events }
        }

        /// The paths listed so far, sorted.
        fn listed(&mut self) -> Vec<String> {
            let mut out = Vec::new();
            while let Ok(path) = self.listed.try_recv() {
                out.push(path);
            }
            out.sort();
            out
        }
    }

    fn team_a() -> KubernetesConfig {
        KubernetesConfig {
            namespaces: vec!["team-a".into()],
            ..KubernetesConfig::default()
        }
    }

    #[tokio::test]
    async fn start_returns_once_every_watch_has_listed_and_serves_labelled_namespaces() {
        let (client, api) = FakeApi::pair();
        // openfaas-fn is labelled too: served once, first.
        let mut cluster = Cluster::start(
            api,
            200,
            vec![namespace("team-b"), namespace(DEFAULT_NAMESPACE)],
        );
        let provider = within_deadline(KubernetesProvider::start(client, team_a()))
            .await
            .unwrap();
        assert_eq!(
            provider.namespaces().await.unwrap(),
            [DEFAULT_NAMESPACE, "team-a", "team-b"]
        );
        assert_eq!(
            cluster.listed(),
            [
                "/api/v1/namespaces",
                "/api/v1/namespaces",
                "/apis/apps/v1/namespaces/openfaas-fn/deployments",
                "/apis/apps/v1/namespaces/team-a/deployments",
                "/apis/apps/v1/namespaces/team-b/deployments",
                "/apis/discovery.k8s.io/v1/namespaces/openfaas-fn/endpointslices",
                "/apis/discovery.k8s.io/v1/namespaces/team-a/endpointslices",
                "/apis/discovery.k8s.io/v1/namespaces/team-b/endpointslices",
            ],
            "the probe and the watch's listing of namespaces, then both watches of each"
        );
        within_deadline(provider.shutdown()).await;
    }

    #[tokio::test]
    async fn a_namespace_that_loses_its_label_is_no_longer_served() {
        let (client, api) = FakeApi::pair();
        let cluster = Cluster::start(api, 200, vec![namespace("team-b")]);
        let provider = within_deadline(KubernetesProvider::start(
            client,
            KubernetesConfig::default(),
        ))
        .await
        .unwrap();
        assert_eq!(
            provider.namespaces().await.unwrap(),
            [DEFAULT_NAMESPACE, "team-b"]
        );
        provider.routing.add_function("team-b", "echo");

        // A watch with a label selector reports an object that stops matching as deleted.
        cluster
            .events
            .send(json!({ "type": "DELETED", "object": namespace("team-b") }))
            .unwrap();
        within_deadline(async {
            while provider.namespaces().await.unwrap().len() > 1 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        assert_eq!(provider.namespaces().await.unwrap(), [DEFAULT_NAMESPACE]);
        let echo_b = FunctionRef::new("echo", Some("team-b")).unwrap();
        assert!(matches!(
            provider.resolve(&echo_b),
            Err(ProviderError::NotFound { .. })
        ));
        assert!(matches!(
            provider.list("team-b").await,
            Err(ProviderError::Invalid(msg)) if msg.contains("not served")
        ));
        within_deadline(provider.shutdown()).await;
    }

    #[tokio::test]
    async fn kube_system_is_never_served_by_its_label() {
        let (client, api) = FakeApi::pair();
        let _cluster = Cluster::start(api, 200, vec![namespace("kube-system")]);
        let provider = within_deadline(KubernetesProvider::start(
            client,
            KubernetesConfig::default(),
        ))
        .await
        .unwrap();
        assert_eq!(provider.namespaces().await.unwrap(), [DEFAULT_NAMESPACE]);
        within_deadline(provider.shutdown()).await;
    }

    #[tokio::test]
    async fn when_namespaces_may_not_be_listed_only_the_fixed_ones_are_served() {
        let (client, api) = FakeApi::pair();
        let mut cluster = Cluster::start(api, 403, vec![]);
        let provider = within_deadline(KubernetesProvider::start(client, team_a()))
            .await
            .unwrap();
        assert_eq!(
            provider.namespaces().await.unwrap(),
            [DEFAULT_NAMESPACE, "team-a"]
        );
        assert_eq!(
            cluster.listed().iter().filter(|p| *p == NAMESPACES).count(),
            1,
            "the probe only: no namespace watch"
        );
        within_deadline(provider.shutdown()).await;
    }

    #[tokio::test]
    async fn without_a_selector_no_namespace_is_listed() {
        let (client, api) = FakeApi::pair();
        let mut cluster = Cluster::start(api, 200, vec![namespace("team-b")]);
        let config = KubernetesConfig {
            namespace_selector: None,
            ..KubernetesConfig::default()
        };
        let provider = within_deadline(KubernetesProvider::start(client, config))
            .await
            .unwrap();
        assert_eq!(provider.namespaces().await.unwrap(), [DEFAULT_NAMESPACE]);
        assert!(!cluster.listed().iter().any(|p| p == NAMESPACES));
        within_deadline(provider.shutdown()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn start_fails_when_the_watches_cannot_list_in_time() {
        let (client, _api) = FakeApi::pair();
        let config = KubernetesConfig {
            namespace_selector: None,
            ..KubernetesConfig::default()
        };
        let result = KubernetesProvider::start(client, config).await;
        assert!(
            matches!(result, Err(crate::Error::NotSynced(_))),
            "{result:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn start_fails_when_the_api_server_does_not_answer_the_namespace_list() {
        let (client, _api) = FakeApi::pair();
        let result = KubernetesProvider::start(client, KubernetesConfig::default()).await;
        assert!(
            matches!(result, Err(crate::Error::Timeout(_))),
            "{result:?}"
        );
    }
}
