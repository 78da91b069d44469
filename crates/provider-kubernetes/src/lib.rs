//! Courier's Kubernetes provider: the [`courier_core::Provider`] seam over the Kubernetes API
//! (kube 5 + k8s-openapi 0.29). Every function is a Deployment and a ClusterIP Service named
//! after it, shaped like faas-netes' (OpenFaaS contract §4), in one of the served namespaces.
//!
//! - Deploy and update server-side apply the complete Deployment and Service (field manager
//!   `courier`), so an update also removes what it no longer sets; scale goes through the
//!   Deployment's scale subresource; delete removes both with foreground propagation.
//! - Status and list read the Deployments; the deployed spec is kept in an annotation so
//!   `/system/function` echoes exactly what was sent (see [`ANNOTATION_SPEC`]).
//! - `resolve` answers from memory, with no IO: watches on function Deployments and on
//!   EndpointSlices keep a routing table of each function's ready pod addresses
//!   (`podIP:8080`), and calls take the pods in turn. The gateway must therefore run where
//!   pod IPs are reachable, i.e. in the cluster.
//! - Secrets are Opaque Secrets with one key named after the secret, labelled
//!   `app.kubernetes.io/managed-by=courier`; those faas-netes labelled `openfaas` are managed
//!   too. Functions see them in `/var/openfaas/secrets/<name>`; registry credentials
//!   (`kubernetes.io/dockerconfigjson`) become `imagePullSecrets` instead.
//! - Logs are the containers' logs through the API server (`instance` = pod name).
//!
//! Permissions, in each served namespace: `deployments` (get, list, watch, patch, delete),
//! `deployments/scale` (patch), `services` (patch, delete), `endpointslices` in
//! `discovery.k8s.io` (list, watch), `secrets` (get, list, create, update, delete), `pods`
//! (list) and `pods/log` (get).
//!
//! Linking: like every library on k8s-openapi, this crate picks no Kubernetes version. The
//! binary that links it must depend on `k8s-openapi` with exactly one `v1_*` feature (the
//! oldest API server to support; `v1_33` is the oldest 0.29 offers) and install the rustls
//! `ring` provider before [`KubernetesProvider::connect`].
//!
//! ```no_run
//! # async fn run() -> Result<(), courier_provider_kubernetes::Error> {
//! use courier_provider_kubernetes::{KubernetesConfig, KubernetesProvider};
//!
//! let config = KubernetesConfig {
//!     namespaces: vec!["team-a".into()], // served besides openfaas-fn
//!     ..KubernetesConfig::default()
//! };
//! let provider = KubernetesProvider::connect(config).await?;
//! // Hand `provider` to the gateway as an `Arc<dyn courier_core::Provider>`.
//! # provider.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Invariant: this crate knows the Provider seam and the Kubernetes API, nothing of HTTP
//! routing, authentication, the gateway or queues. Rendering (`render`) and routing
//! (`routing`) do no IO; only `provider`, `watch` and `logs` talk to the API server.

mod config;
mod error;
mod logs;
mod provider;
mod render;
mod routing;
mod watch;

#[cfg(test)]
mod fake_api;

pub use config::{KubernetesConfig, PodOptions};
pub use error::{Error, Result};
pub use provider::{FIELD_MANAGER, KubernetesProvider};
pub use render::{ANNOTATION_REVISION, ANNOTATION_SPEC, LABEL_MANAGED_BY, MANAGED_BY};
