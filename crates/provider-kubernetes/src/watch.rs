//! The watches that keep the [`RoutingTable`] current: per served namespace, one on function
//! Deployments (metadata only: which functions exist) and one on EndpointSlices (which pods
//! are ready). kube's watcher re-lists after a disconnect or an expired resource version, with
//! its default backoff; each full listing replaces what the table knew of that namespace.

use std::sync::Arc;

use courier_core::function::LABEL_FUNCTION;
use futures_util::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::core::PartialObjectMeta;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::routing::{LABEL_SERVICE_NAME, ReadySlice, RoutingTable};

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

/// Starts both watches for every namespace; each returned receiver fires once that watch has
/// listed its namespace for the first time.
pub(crate) fn spawn(
    client: &Client,
    namespaces: &[String],
    table: &Arc<RoutingTable>,
    tracker: &TaskTracker,
    stop: &CancellationToken,
) -> Vec<oneshot::Receiver<()>> {
    let mut synced = Vec::new();
    for namespace in namespaces {
        let (tx, rx) = oneshot::channel();
        synced.push(rx);
        tracker.spawn(functions(
            Api::namespaced(client.clone(), namespace),
            namespace.clone(),
            table.clone(),
            tx,
            stop.clone(),
        ));
        let (tx, rx) = oneshot::channel();
        synced.push(rx);
        tracker.spawn(slices(
            Api::namespaced(client.clone(), namespace),
            namespace.clone(),
            table.clone(),
            tx,
            stop.clone(),
        ));
    }
    synced
}

/// Follows the function Deployments of one namespace (their metadata only).
pub(crate) async fn functions(
    api: Api<PartialObjectMeta<Deployment>>,
    namespace: String,
    table: Arc<RoutingTable>,
    synced: oneshot::Sender<()>,
    stop: CancellationToken,
) {
    let events = watcher(api, watcher::Config::default().labels(LABEL_FUNCTION)).default_backoff();
    follow(
        events,
        |meta| meta.metadata.name.clone().unwrap_or_default(),
        |change| match change {
            Change::Apply(name) => table.add_function(&namespace, &name),
            Change::Remove(name) => table.remove_function(&namespace, &name),
            Change::Replace(names) => table.replace_functions(&namespace, names),
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
    use crate::fake_api::{FakeApi, TEST_DEADLINE, answer_with, list};
    use crate::{KubernetesConfig, KubernetesProvider};

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
    async fn the_function_watch_reads_metadata_only() {
        let (client, mut api) = FakeApi::pair();
        let table = Arc::new(RoutingTable::default());
        let (synced_tx, synced) = oneshot::channel();
        let stop = CancellationToken::new();
        tokio::spawn(functions(
            Api::namespaced(client, DEFAULT_NAMESPACE),
            DEFAULT_NAMESPACE.into(),
            table.clone(),
            synced_tx,
            stop.clone(),
        ));
        within_deadline(async {
            let (request, send) = api.receive().await;
            request.assert_is(
                &Method::GET,
                &format!("{DEPLOYMENTS}?labelSelector=faas_function"),
            );
            let meta = json!({
                "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                "metadata": { "name": "echo", "namespace": DEFAULT_NAMESPACE },
            });
            send.send_response(answer_with(
                200,
                &list("PartialObjectMetadataList", "meta.k8s.io/v1", vec![meta]),
            ));
            synced.await.unwrap();
        })
        .await;
        assert!(matches!(
            table.resolve(&echo()),
            Err(ProviderError::NotReady(_))
        ));
        stop.cancel();
    }

    #[tokio::test]
    async fn start_returns_once_every_watch_has_listed() {
        let (client, mut api) = FakeApi::pair();
        let config = KubernetesConfig {
            namespaces: vec!["team-a".into()],
            ..KubernetesConfig::default()
        };
        let server = async {
            let mut listed = Vec::new();
            let mut open_watches = Vec::new();
            while listed.len() < 4 {
                let (request, send) = api.receive().await;
                if request.uri.contains("watch=true") {
                    open_watches.push(send); // Left open, as a quiet watch is.
                    continue;
                }
                let (path, _) = request.uri.split_once('?').unwrap();
                listed.push(path.to_owned());
                let kind = if path.ends_with("endpointslices") {
                    "EndpointSliceList"
                } else {
                    "PartialObjectMetadataList"
                };
                send.send_response(answer_with(200, &list(kind, "v1", vec![])));
            }
            listed.sort();
            assert_eq!(
                listed,
                [
                    "/apis/apps/v1/namespaces/openfaas-fn/deployments",
                    "/apis/apps/v1/namespaces/team-a/deployments",
                    "/apis/discovery.k8s.io/v1/namespaces/openfaas-fn/endpointslices",
                    "/apis/discovery.k8s.io/v1/namespaces/team-a/endpointslices",
                ]
            );
            open_watches
        };
        let (provider, _watches) = within_deadline(async {
            tokio::join!(KubernetesProvider::start(client, config), server)
        })
        .await;
        let provider = provider.unwrap();
        within_deadline(provider.shutdown()).await;
    }

    #[tokio::test(start_paused = true)]
    async fn start_fails_when_the_watches_cannot_list_in_time() {
        let (client, _api) = FakeApi::pair();
        let result = KubernetesProvider::start(client, KubernetesConfig::default()).await;
        assert!(
            matches!(result, Err(crate::Error::NotSynced(_))),
            "{result:?}"
        );
    }
}
