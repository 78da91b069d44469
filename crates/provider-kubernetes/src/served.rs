//! [`ServedNamespaces`]: the namespaces the provider serves right now. No IO here.
//!
//! Two kinds: the *fixed* ones (the default namespace and the configured ones), served from
//! start to end, and the *discovered* ones (labelled for Courier), served from the moment
//! their watches have listed them until they lose the label or are deleted (see `watch`).
//! `/system/namespaces` lists both; every other call refuses a namespace that is neither.

use std::collections::BTreeSet;
use std::sync::RwLock;

use tokio_util::sync::CancellationToken;

/// The namespaces served right now.
#[derive(Debug)]
pub(crate) struct ServedNamespaces {
    /// Always served, in order: the default namespace first.
    fixed: Vec<String>,
    /// Labelled namespaces whose watches have listed them.
    discovered: RwLock<BTreeSet<String>>,
}

impl ServedNamespaces {
    /// Serves `fixed` (the default namespace first) and nothing else yet.
    pub(crate) fn new(fixed: Vec<String>) -> Self {
        Self {
            fixed,
            discovered: RwLock::default(),
        }
    }

    /// The namespaces served whatever the cluster's labels.
    pub(crate) fn fixed(&self) -> &[String] {
        &self.fixed
    }

    /// Whether `namespace` is one of [`fixed`](Self::fixed).
    pub(crate) fn is_fixed(&self, namespace: &str) -> bool {
        self.fixed.iter().any(|ns| ns == namespace)
    }

    /// Whether `namespace` is served right now.
    pub(crate) fn contains(&self, namespace: &str) -> bool {
        self.is_fixed(namespace)
            || self
                .discovered
                .read()
                .expect("served namespaces lock")
                .contains(namespace)
    }

    /// Every namespace served right now: the fixed ones in order, then the discovered ones
    /// sorted.
    pub(crate) fn list(&self) -> Vec<String> {
        let discovered = self.discovered.read().expect("served namespaces lock");
        let extra = discovered.iter().filter(|ns| !self.is_fixed(ns)).cloned();
        self.fixed.iter().cloned().chain(extra).collect()
    }

    /// Serves the discovered `namespace`, unless `withdrawn` has fired; true if it is now
    /// served. The check and the insertion happen under the lock, so a namespace withdrawn
    /// meanwhile (which fires the token before [`withdraw`](Self::withdraw)) is never left
    /// served.
    pub(crate) fn serve_unless(&self, namespace: &str, withdrawn: &CancellationToken) -> bool {
        let mut discovered = self.discovered.write().expect("served namespaces lock");
        if withdrawn.is_cancelled() {
            return false;
        }
        discovered.insert(namespace.to_owned());
        true
    }

    /// Stops serving the discovered `namespace`; the fixed ones stay.
    pub(crate) fn withdraw(&self, namespace: &str) {
        self.discovered
            .write()
            .expect("served namespaces lock")
            .remove(namespace);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn served() -> ServedNamespaces {
        ServedNamespaces::new(vec!["openfaas-fn".into(), "team-a".into()])
    }

    #[test]
    fn fixed_namespaces_come_first_then_discovered_ones_sorted() {
        let served = served();
        let token = CancellationToken::new();
        for ns in ["team-c", "team-b", "team-a"] {
            assert!(served.serve_unless(ns, &token));
        }
        assert_eq!(served.list(), ["openfaas-fn", "team-a", "team-b", "team-c"]);
        assert!(served.contains("team-b"));
    }

    #[test]
    fn a_withdrawn_namespace_is_no_longer_served_and_a_fixed_one_stays() {
        let served = served();
        let token = CancellationToken::new();
        served.serve_unless("team-b", &token);
        served.withdraw("team-b");
        served.withdraw("team-a");
        assert!(!served.contains("team-b"));
        assert!(served.contains("team-a"));
        assert_eq!(served.list(), ["openfaas-fn", "team-a"]);
    }

    #[test]
    fn a_namespace_withdrawn_before_its_watches_listed_is_not_served() {
        let served = served();
        let token = CancellationToken::new();
        token.cancel();
        assert!(!served.serve_unless("team-b", &token));
        assert!(!served.contains("team-b"));
    }
}
