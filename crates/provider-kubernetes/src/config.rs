//! [`KubernetesConfig`]: what the provider needs to know about the cluster and the pods it
//! renders. Plain data: the binary fills it from its own flags.

use std::time::Duration;

use courier_core::DEFAULT_NAMESPACE;
use courier_core::system::VersionInfo;

/// How the Kubernetes provider talks to the cluster and shapes function pods.
#[derive(Debug, Clone)]
pub struct KubernetesConfig {
    /// Namespaces functions may live in besides [`DEFAULT_NAMESPACE`], which is always served.
    /// The provider watches each one (it needs a Role there, see the crate docs) and refuses
    /// the others.
    pub namespaces: Vec<String>,
    /// How function pods are rendered.
    pub pods: PodOptions,
    /// Longest wait for one Kubernetes API call (a log stream: for it to open).
    pub request_timeout: Duration,
    /// Longest wait at start-up for the watches to list every served namespace.
    pub sync_timeout: Duration,
    /// The version reported in `/system/info`.
    pub version: VersionInfo,
}

impl Default for KubernetesConfig {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            pods: PodOptions::default(),
            request_timeout: Duration::from_secs(10),
            sync_timeout: Duration::from_secs(30),
            version: VersionInfo {
                commit_message: String::new(),
                sha: "unknown".into(),
                release: env!("CARGO_PKG_VERSION").into(),
            },
        }
    }
}

impl KubernetesConfig {
    /// Every served namespace: the default one first, then the others in the order given,
    /// without repeats.
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodOptions {
    /// `imagePullPolicy` of function containers; `None` leaves Kubernetes' default (`Always`
    /// for `:latest`, else `IfNotPresent`).
    pub image_pull_policy: Option<String>,
    /// `runAsUser` of function containers; `None` keeps the image's user. OpenFaaS's
    /// `set_nonroot_user` uses 12000.
    pub run_as_user: Option<i64>,
    /// Delay before the first readiness and liveness probe (`GET /_/health`).
    pub probe_initial_delay: Duration,
    /// Time between probes.
    pub probe_period: Duration,
    /// Longest wait for one probe's answer.
    pub probe_timeout: Duration,
}

impl Default for PodOptions {
    /// faas-netes' values: probes after 2 s, every 2 s, 1 s timeout.
    fn default() -> Self {
        Self {
            image_pull_policy: None,
            run_as_user: None,
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
}
