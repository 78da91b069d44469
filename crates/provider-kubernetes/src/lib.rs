//! Courier's Kubernetes provider: the [`courier_core::Provider`] seam over the Kubernetes API
//! (kube 5 + k8s-openapi 0.29). Every function is a Deployment and a ClusterIP Service named
//! after it, shaped like faas-netes' (OpenFaaS contract §4), in one of the served namespaces.
//!
//! - Deploy and update server-side apply the complete Deployment and Service (field manager
//!   [`FIELD_MANAGER`]), so an update also removes what it no longer sets; scale goes through
//!   the Deployment's scale subresource; delete removes both with foreground propagation.
//! - Function pods: readiness and liveness probes on `GET /_/health`, `fprocess` from
//!   `envProcess` and the function's variables in the environment, its limits and requests,
//!   its labels and annotations on the pod template with `faas_function=<name>`, a
//!   read-only root file system (with a writable `emptyDir` at `/tmp`) when it asks. Every
//!   container runs non-root and locked down: `runAsNonRoot`, `runAsUser` 12000 by default
//!   ([`PodOptions::run_as_user`]), no privilege escalation, every capability dropped, the
//!   `RuntimeDefault` seccomp profile (the `restricted` Pod Security level).
//! - Status reads the Deployment; list answers from the watch cache (the function watch keeps
//!   every function Deployment of each served namespace, so the function catalogs of every
//!   component and the autoscaler's rounds make no API call); the deployed spec is kept in an
//!   annotation so `/system/function` echoes exactly what was sent (see [`ANNOTATION_SPEC`]).
//! - For the gateway's autoscaler: scaling goes through the scale subresource like any scale;
//!   with [`KubernetesConfig::autoscaler_lease`] the gateways sharing the cluster elect the
//!   one that scales through a `coordination.k8s.io` Lease ([`LeaseConfig`]; the others stand
//!   by), and `com.openfaas.scale.type: cpu` reads the function pods' CPU use from the
//!   metrics API (`metrics.k8s.io/v1beta1` PodMetrics, millicores, as OpenFaaS Pro). Functions
//!   labelled `com.openfaas.scale.autoscaler: external` or with `min == max` are never scaled
//!   by it (the gateway's rule), so an HPA or KEDA object owning the Deployment is not fought.
//! - `resolve` answers from memory, with no IO: watches on function Deployments and on
//!   EndpointSlices keep a routing table of each function's ready pod addresses
//!   (`podIP:8080`), and calls take the pods in turn. The gateway must therefore run where
//!   pod IPs are reachable, i.e. in the cluster.
//! - Secrets are Opaque Secrets with one key named after the secret, labelled
//!   `app.kubernetes.io/managed-by=courier`; those faas-netes labelled `openfaas` are managed
//!   too. Functions see them in `/var/openfaas/secrets/<name>`; registry credentials
//!   (`kubernetes.io/dockerconfigjson`) become `imagePullSecrets` instead.
//! - Logs are the containers' logs through the API server (`instance` = pod name).
//! - Kubernetes' answers map to the contract's statuses: NotFound 404, AlreadyExists and
//!   Conflict 409, Invalid 400; an API server that is down, overloaded or not answering is
//!   `Unavailable` (503: retry later). The table is in the `error` module.
//!
//! # Replicas belong to whoever scales
//!
//! `spec.replicas` is never part of what Courier applies. Server-side apply gives each field
//! to the managers that applied it, and *removes* a field its only manager stops applying: had
//! deploy applied `replicas`, an update (which must not fight an HPA or KEDA over it) could
//! not simply leave it out, since that would reset the count to 1. So:
//!
//! - **deploy** applies the Deployment without replicas (the API server creates it with 1),
//!   then, when `com.openfaas.scale.min` asks for more, sets them through the scale
//!   subresource as [`SCALE_FIELD_MANAGER`] (an update, which owns nothing an apply could
//!   remove);
//! - **update** applies without replicas and leaves the count to whoever set it last (the
//!   scale API, an autoscaler): `com.openfaas.scale.min` only counts at creation (faas-netes
//!   resets replicas to it on every update);
//! - **scale** (and the gateway's scale from zero) patches the scale subresource, the way an
//!   HPA does.
//!
//! A Deployment whose replicas an older Courier applied is still owned by [`FIELD_MANAGER`]'s
//! apply; update then first applies only `spec.replicas` (its current value) as
//! [`SCALE_FIELD_MANAGER`], so the field has another owner and survives the apply without it.
//!
//! # Served namespaces
//!
//! The default namespace and [`KubernetesConfig::namespaces`] are served from the start
//! (start-up waits until each is listed). With [`KubernetesConfig::namespace_selector`]
//! (`openfaas=1` by default, as OpenFaaS marks function namespaces) the provider also watches
//! the cluster's namespaces and serves each labelled one once its watches have listed it; one
//! that loses the label or is deleted stops being served. `/system/namespaces` lists what is
//! served right now, the default namespace first; every other call refuses any other namespace
//! with 400. `kube-system` is never served through its label. When the namespace list is
//! forbidden at start-up, the provider serves the fixed namespaces only, with a warning.
//!
//! # Permissions
//!
//! Exactly [`PERMISSIONS`]; `deploy/kubernetes/base/rbac.yaml` grants these and its tests
//! compare. Creating through server-side apply is authorised as `create` too.
//!
//! | where | API group | resource | verbs | used by |
//! |---|---|---|---|---|
//! | each served namespace | `apps` | `deployments` | create, delete, get, list, patch, watch | deploy and update (apply), delete, status, list, logs, the function watch |
//! | each served namespace | `apps` | `deployments/scale` | patch | deploy (initial replicas), scale |
//! | each served namespace | `core` | `services` | create, delete, patch | deploy and update (apply), delete |
//! | each served namespace | `discovery.k8s.io` | `endpointslices` | list, watch | the endpoint watch (routing) |
//! | each served namespace | `core` | `secrets` | create, delete, get, list, update | /system/secrets; deploy and update read the secrets a function names |
//! | each served namespace | `core` | `pods` | list | logs (the function's pods) |
//! | each served namespace | `core` | `pods/log` | get | logs |
//! | each served namespace | `coordination.k8s.io` | `leases` | create, get, update | the autoscaler's lease (one gateway scales at a time; default namespace only) |
//! | each served namespace | `metrics.k8s.io` | `pods` | list | CPU use of a function's pods (com.openfaas.scale.type: cpu) |
//! | cluster | `core` | `namespaces` | list, watch | namespace discovery (the labelled namespaces) |
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
//!     namespaces: vec!["team-a".into()], // served besides openfaas-fn and labelled ones
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
//! routing, authentication, the gateway or queues. Rendering (`render`), routing (`routing`),
//! the function cache (`cache`) and the served set (`served`) do no IO; only `provider`,
//! `watch`, `lease`, `cpu` and `logs` talk to the API server.

mod cache;
mod config;
mod cpu;
mod error;
mod lease;
mod logs;
mod permissions;
mod provider;
mod render;
mod routing;
mod served;
mod watch;

#[cfg(test)]
mod fake_api;
#[cfg(test)]
mod gateway_autoscaler;

pub use config::{DEFAULT_NAMESPACE_SELECTOR, DEFAULT_RUN_AS_USER, KubernetesConfig, PodOptions};
pub use error::{Error, Result};
pub use lease::{DEFAULT_LEASE_NAME, LeaseConfig};
pub use permissions::{PERMISSIONS, Permission, PermissionScope};
pub use provider::{FIELD_MANAGER, KubernetesProvider, SCALE_FIELD_MANAGER};
pub use render::{ANNOTATION_REVISION, ANNOTATION_SPEC, LABEL_MANAGED_BY, MANAGED_BY};
