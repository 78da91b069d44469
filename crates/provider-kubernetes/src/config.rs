//! [`KubernetesConfig`]: what the provider needs to know about the cluster and the pods it
//! renders. Plain data: the binary fills it from its own flags.

use std::time::Duration;

use courier_core::DEFAULT_NAMESPACE;
use courier_core::system::VersionInfo;

use crate::lease::LeaseConfig;

/// The label selector of the namespaces served besides the configured ones, as OpenFaaS
/// marks function namespaces (the `deploy/` manifests label `openfaas-fn` so).
pub const DEFAULT_NAMESPACE_SELECTOR: &str = "openfaas=1";

/// The uid function containers run as unless the operator says otherwise: OpenFaaS's
/// (`set_nonroot_user`).
pub const DEFAULT_RUN_AS_USER: i64 = 12000;

/// How the Kubernetes provider talks to the cluster and shapes function pods.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// Namespaces functions may live in besides [`DEFAULT_NAMESPACE`], which is always served.
    /// The provider watches each one from the start (it needs the provider's permissions
    /// there, see the crate docs); start-up fails if one cannot be listed in time.
    pub namespaces: Vec<String>,
    /// The label selector of the namespaces also served when they are labelled so
    /// ([`DEFAULT_NAMESPACE_SELECTOR`], `openfaas=1`). The provider watches the cluster's
    /// namespaces (list and watch on `namespaces`, cluster-wide) and serves each matching one
    /// once its watches have listed it; one that loses the label or is deleted stops being
    /// served. `None` serves only [`DEFAULT_NAMESPACE`] and [`namespaces`](Self::namespaces)
    /// and needs no cluster-wide permission; so does a provider that is refused the namespace
    /// list at start-up (it logs a warning).
    pub namespace_selector: Option<String>,
    /// How function pods are rendered.
    pub pods: PodOptions,
    /// Longest wait for one Kubernetes API call (a log stream: for it to open).
    pub request_timeout: Duration,
    /// Longest wait at start-up for the watches to list every served namespace.
    pub sync_timeout: Duration,
    /// The version reported in `/system/info`.
    pub version: VersionInfo,
    /// The Lease the gateways sharing this cluster compete for, so only its holder's
    /// autoscaler scales ([`courier_core::Provider::autoscaler_leader`]); needs get, create
    /// and update on `leases` in the default namespace. `None`: no election, this process
    /// scales whenever its autoscaler runs (right for a single gateway only).
    pub autoscaler_lease: Option<LeaseConfig>,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            namespace_selector: Some(DEFAULT_NAMESPACE_SELECTOR.to_owned()),
            pods: PodOptions::default(),
            request_timeout: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(30),
            version: VersionInfo {
                commit_message: String::new(),
                sha: "unknown".into(),
                release: env!("CARGO_PKG_VERSION").into(),
            },
            autoscaler_lease: None,
        }
    }
}

impl KubernetesConfig {
    /// The namespaces served whatever the cluster's labels: the default one first, then the
    /// configured ones in the order given, without repeats. Labelled namespaces come on top
    /// (see [`namespace_selector`](Self::namespace_selector)).
    pub fn served_namespaces(&self) -> Vec<String> {
        let mut out = vec![DEFAULT_NAMESPACE.to_owned()];
        for ns in &self.namespaces {
            if !out.contains(ns) {
                out.push(ns.clone());
            }
        }
        out
    }
}

/// The pod settings that are the operator's choice rather than the function's.
///
/// Whatever they say, every function container runs non-root and locked down (`runAsNonRoot`,
/// no privilege escalation, every capability dropped, the `RuntimeDefault` seccomp profile):
/// function pods meet the `restricted` Pod Security level.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOptions {
    /// `imagePullPolicy` of function containers; `None` leaves Kubernetes' default (`Always`
    /// for `:latest`, else `IfNotPresent`).
    pub image_pull_policy: Option<String>,
    /// `runAsUser` of function containers: [`DEFAULT_RUN_AS_USER`] (12000, OpenFaaS's
    /// `set_nonroot_user`) unless set otherwise, so images built to run as root start too (as
    /// uid 12000; files they need must be readable by it). `None` keeps the image's own user,
    /// which must then be a non-zero numeric uid: with `runAsNonRoot` the kubelet refuses to
    /// start a container that would run as root or as a user name it cannot check.
    pub run_as_user: Option<i64>,
    /// Delay before the first readiness and liveness probe (`GET /_/health`).
    pub probe_initial_delay: Duration,
    /// Time between probes.
    pub probe_period: Duration,
    /// Longest wait for one probe's answer.
    pub probe_timeout: Duration,
}

impl Default for PodOptions {
    /// faas-netes' values: probes after 2 s, every 2 s, 1 s timeout; uid 12000.
    fn default() -> Self {
        Self {
            image_pull_policy: None,
            run_as_user: Some(DEFAULT_RUN_AS_USER),
            probe_initial_delay: Duration::from_secs(2),
            probe_period: Duration::from_secs(2),
            probe_timeout: Duration::from_secs(1),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_namespace_is_always_served_and_first() {
        let config = KubernetesConfig {
            namespaces: vec!["team-a".into(), DEFAULT_NAMESPACE.into(), "team-a".into()],
            ..KubernetesConfig::default()
        };
        assert_eq!(config.served_namespaces(), [DEFAULT_NAMESPACE, "team-a"]);
    }

    #[test]
    fn by_default_labelled_namespaces_are_served_and_pods_run_as_12000() {
        let config = KubernetesConfig::default();
        assert_eq!(config.namespace_selector.as_deref(), Some("openfaas=1"));
        assert_eq!(config.pods.run_as_user, Some(12000));
    }
}
