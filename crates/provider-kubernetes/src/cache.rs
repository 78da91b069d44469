//! [`FunctionCache`]: the function Deployments of each served namespace, kept by the function
//! watch (`watch::functions`), so `Provider::list` (every component's function catalog, the
//! autoscaler's round) is answered from memory instead of an API list each time.
//!
//! A namespace is in the cache once its watch has listed it; until then (and in a provider
//! without watches) lists go to the API server. The provider also writes what its own calls
//! return (an applied Deployment, a new replica count), so a list right after a deploy or a
//! scale through this process already shows it; the watch's events, arriving a moment later,
//! replace those entries. No IO here.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use k8s_openapi::api::apps::v1::Deployment;

/// The function Deployments of each listed namespace, by name.
#[derive(Debug, Default)]
pub(crate) struct FunctionCache {
    namespaces: RwLock<HashMap<String, BTreeMap<String, Arc<Deployment>>>>,
}

fn name_of(deployment: &Deployment) -> Option<&str> {
    deployment.metadata.name.as_deref()
}

/// The resource version as a number, when it is one (etcd's are).
fn version(deployment: &Deployment) -> Option<u64> {
    deployment
        .metadata
        .resource_version
        .as_deref()?
        .parse()
        .ok()
}

impl FunctionCache {
    /// Every function Deployment of `namespace`, sorted by name; `None` when the namespace
    /// has not been listed (ask the API server).
    pub(crate) fn list(&self, namespace: &str) -> Option<Vec<Arc<Deployment>>> {
        let namespaces = self.namespaces.read().expect("function cache lock");
        namespaces
            .get(namespace)
            .map(|functions| functions.values().cloned().collect())
    }

    /// All there is in `namespace` (a watch's listing).
    pub(crate) fn replace(&self, namespace: &str, deployments: Vec<Deployment>) {
        let functions = deployments
            .into_iter()
            .filter_map(|d| Some((name_of(&d)?.to_owned(), Arc::new(d))))
            .collect();
        let mut namespaces = self.namespaces.write().expect("function cache lock");
        namespaces.insert(namespace.to_owned(), functions);
    }

    /// A created or changed Deployment of a listed namespace, unless what is kept is newer
    /// (both resource versions numbers and the kept one higher: a watch event older than
    /// the provider's own write).
    pub(crate) fn apply(&self, namespace: &str, deployment: Deployment) {
        let Some(name) = name_of(&deployment).map(str::to_owned) else {
            return;
        };
        let mut namespaces = self.namespaces.write().expect("function cache lock");
        let Some(functions) = namespaces.get_mut(namespace) else {
            return;
        };
        if let Some(kept) = functions.get(&name)
            && let (Some(kept), Some(new)) = (version(kept), version(&deployment))
            && kept > new
        {
            return;
        }
        functions.insert(name, Arc::new(deployment));
    }

    /// A deleted Deployment.
    pub(crate) fn remove(&self, namespace: &str, name: &str) {
        let mut namespaces = self.namespaces.write().expect("function cache lock");
        if let Some(functions) = namespaces.get_mut(namespace) {
            functions.remove(name);
        }
    }

    /// Sets the replica count kept for `name` (after this provider scaled it).
    pub(crate) fn set_replicas(&self, namespace: &str, name: &str, replicas: i32) {
        let mut namespaces = self.namespaces.write().expect("function cache lock");
        let Some(kept) = namespaces.get_mut(namespace).and_then(|f| f.get_mut(name)) else {
            return;
        };
        let mut deployment = Deployment::clone(kept);
        deployment.spec.get_or_insert_default().replicas = Some(replicas);
        *kept = Arc::new(deployment);
    }

    /// Drops a namespace no longer served.
    pub(crate) fn forget_namespace(&self, namespace: &str) {
        let mut namespaces = self.namespaces.write().expect("function cache lock");
        namespaces.remove(namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(name: &str, version: &str, replicas: i32) -> Deployment {
        let mut d = Deployment::default();
        d.metadata.name = Some(name.into());
        d.metadata.resource_version = Some(version.into());
        d.spec.get_or_insert_default().replicas = Some(replicas);
        d
    }

    fn replicas(cache: &FunctionCache, name: &str) -> Option<i32> {
        cache
            .list("ns")?
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))?
            .spec
            .as_ref()?
            .replicas
    }

    #[test]
    fn a_namespace_not_listed_yet_is_unknown_and_ignores_changes() {
        let cache = FunctionCache::default();
        cache.apply("ns", deployment("echo", "5", 1));
        assert!(cache.list("ns").is_none());
        cache.replace("ns", vec![]);
        assert_eq!(cache.list("ns").unwrap().len(), 0);
    }

    #[test]
    fn lists_are_sorted_and_follow_changes() {
        let cache = FunctionCache::default();
        cache.replace(
            "ns",
            vec![deployment("zeta", "1", 1), deployment("alpha", "2", 1)],
        );
        cache.apply("ns", deployment("mid", "3", 1));
        cache.remove("ns", "zeta");
        let names: Vec<_> = cache
            .list("ns")
            .unwrap()
            .iter()
            .map(|d| d.metadata.name.clone().unwrap())
            .collect();
        assert_eq!(names, ["alpha", "mid"]);
        cache.forget_namespace("ns");
        assert!(cache.list("ns").is_none());
    }

    #[test]
    fn an_older_event_does_not_undo_a_newer_write() {
        let cache = FunctionCache::default();
        cache.replace("ns", vec![deployment("echo", "10", 1)]);
        cache.apply("ns", deployment("echo", "12", 3));
        cache.apply("ns", deployment("echo", "11", 2));
        assert_eq!(replicas(&cache, "echo"), Some(3));
        cache.set_replicas("ns", "echo", 5);
        assert_eq!(replicas(&cache, "echo"), Some(5));
    }
}
