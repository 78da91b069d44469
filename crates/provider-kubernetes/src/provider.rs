//! [`KubernetesProvider`]: the [`Provider`] seam over the Kubernetes API.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use courier_core::autoscale::ProviderScaling;
use courier_core::function::LABEL_FUNCTION;
use courier_core::system::ProviderInfo;
use courier_core::{
    Endpoint, FunctionDeployment, FunctionRef, FunctionStatus, LogRequest, LogStream, Provider,
    ProviderError, Secret, SecretSummary,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod, Secret as KubeSecret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::cache::FunctionCache;
use crate::config::KubernetesConfig;
use crate::cpu;
use crate::error::{Error, Result, Target, within};
use crate::lease::{self, Leadership};
use crate::logs;
use crate::render::{self, FunctionObjects, SecretUse};
use crate::routing::RoutingTable;
use crate::served::ServedNamespaces;
use crate::watch::Watching;

/// The field manager of everything Courier applies: the whole Deployment and Service, except
/// `spec.replicas`.
pub const FIELD_MANAGER: &str = "courier";
/// The field manager of the replica count: through the scale subresource (at creation and for
/// the scale API), and once as an apply that takes `spec.replicas` over from an older
/// Courier's applies (see [`applies_replicas`]).
pub const SCALE_FIELD_MANAGER: &str = "courier-scale";

/// Runs functions as Kubernetes Deployments + Services.
pub struct KubernetesProvider {
    client: Client,
    config: KubernetesConfig,
    served: Arc<ServedNamespaces>,
    pub(crate) routing: Arc<RoutingTable>,
    /// The function Deployments the watches keep (answers `list`).
    pub(crate) cache: Arc<FunctionCache>,
    /// Whether this process holds the autoscaler's lease.
    leadership: Arc<Leadership>,
    watches: TaskTracker,
    stop: CancellationToken,
}

fn function_target<'a>(namespace: &'a str, name: &'a str) -> Target<'a> {
    Target {
        kind: "function",
        name,
        namespace,
    }
}

fn secret_target<'a>(namespace: &'a str, name: &'a str) -> Target<'a> {
    Target {
        kind: "secret",
        name,
        namespace,
    }
}

/// Whether Courier's applies (field manager [`FIELD_MANAGER`], operation `Apply`) own
/// `spec.replicas` of `deployment`: true of a Deployment an older Courier applied with
/// replicas. Applying without the field would then remove it, resetting the count to 1, so
/// [`SCALE_FIELD_MANAGER`] takes it over first.
pub(crate) fn applies_replicas(deployment: &Deployment) -> bool {
    deployment
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .any(|entry| {
            entry.manager.as_deref() == Some(FIELD_MANAGER)
                && entry.operation.as_deref() == Some("Apply")
                && entry.subresource.as_deref().unwrap_or_default().is_empty()
                && entry
                    .fields_v1
                    .as_ref()
                    .is_some_and(|fields| fields.0.pointer("/f:spec/f:replicas").is_some())
        })
}

fn not_found(kind: &'static str, namespace: &str, name: &str) -> ProviderError {
    ProviderError::NotFound {
        kind,
        name: format!("{name}.{namespace}"),
    }
}

/// Refuses to change a function whose Deployment is still being deleted (foreground deletion
/// waits for its pods): applying now would write to an object about to disappear.
fn being_removed(deployment: &Deployment, function: &FunctionRef) -> Result<(), ProviderError> {
    if deployment.metadata.deletion_timestamp.is_some() {
        return Err(ProviderError::Conflict(format!(
            "function {function} is being removed; try again once it is gone"
        )));
    }
    Ok(())
}

/// A replica count as Kubernetes takes it.
fn replica_count(replicas: u64) -> Result<i32, ProviderError> {
    i32::try_from(replicas).map_err(|_| {
        ProviderError::Invalid(format!(
            "replicas: {replicas} is more than Kubernetes allows ({})",
            i32::MAX
        ))
    })
}

impl KubernetesProvider {
    /// Connects with the ambient configuration (the pod's service account in a cluster, else
    /// `$KUBECONFIG` or `~/.kube/config`) and [`start`](Self::start)s.
    pub async fn connect(config: KubernetesConfig) -> Result<Arc<Self>> {
        let client = Client::try_default().await?;
        Self::start(client, config).await
    }

    /// Starts the watches and waits until each fixed namespace (the default one and
    /// [`KubernetesConfig::namespaces`]) has been listed, so the first invocations already
    /// find their functions. With a [namespace selector](KubernetesConfig::namespace_selector)
    /// it also lists the labelled namespaces, and waits (within the same
    /// [`sync_timeout`](KubernetesConfig::sync_timeout)) for them to be served; one that is
    /// not by then (no permission there?) is logged and served once it lists.
    pub async fn start(client: Client, config: KubernetesConfig) -> Result<Arc<Self>> {
        let provider = Self::without_watches(client, config);
        let sync_timeout = provider.config.sync_timeout;
        let deadline = tokio::time::Instant::now() + sync_timeout;
        let selector = match provider.discovery_selector().await {
            Ok(selector) => selector,
            Err(e) => {
                provider.shutdown().await;
                return Err(e);
            }
        };
        let watching = provider.watching();
        let fixed: Vec<_> = provider
            .served
            .fixed()
            .iter()
            .map(|ns| watching.spawn_namespace(ns, &provider.stop))
            .collect();
        let discovery = selector.map(|s| watching.spawn_discovery(s, &provider.stop));
        provider.spawn_lease();

        let fixed_listed = tokio::time::timeout_at(deadline, futures_util::future::join_all(fixed));
        let mut synced = fixed_listed.await.is_ok();
        if let (true, Some(discovery)) = (synced, discovery) {
            match tokio::time::timeout_at(deadline, discovery).await {
                Ok(Ok(pending)) => {
                    let all = futures_util::future::join_all(pending);
                    if tokio::time::timeout_at(deadline, all).await.is_err() {
                        tracing::warn!(
                            served = ?provider.served.list(),
                            "Some labelled namespaces could not be listed in time; each is \
                             served once it is (does the gateway have the provider's \
                             permissions there?)."
                        );
                    }
                }
                _ => synced = false,
            }
        }
        if !synced {
            provider.shutdown().await;
            return Err(Error::NotSynced(sync_timeout));
        }
        tracing::info!(namespaces = ?provider.served.list(), "Kubernetes provider started.");
        Ok(Arc::new(provider))
    }

    /// A provider whose routing table only knows what this process deploys and deletes.
    pub(crate) fn without_watches(client: Client, config: KubernetesConfig) -> Self {
        Self {
            served: Arc::new(ServedNamespaces::new(config.served_namespaces())),
            client,
            config,
            routing: Arc::default(),
            cache: Arc::default(),
            leadership: Arc::default(),
            watches: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    fn watching(&self) -> Watching {
        Watching {
            client: self.client.clone(),
            table: self.routing.clone(),
            cache: self.cache.clone(),
            served: self.served.clone(),
            tracker: self.watches.clone(),
        }
    }

    /// Starts competing for the autoscaler's lease, when configured.
    pub(crate) fn spawn_lease(&self) {
        let Some(config) = self.config.autoscaler_lease.clone() else {
            return;
        };
        self.watches.spawn(lease::hold(
            self.api(courier_core::DEFAULT_NAMESPACE),
            config,
            self.config.request_timeout,
            self.leadership.clone(),
            self.stop.clone(),
        ));
    }

    /// The namespace selector to follow, after checking that the namespaces may be listed:
    /// `None` when there is none, or when the API server forbids it (a namespace-scoped
    /// installation: only the fixed namespaces are served, with a warning).
    async fn discovery_selector(&self) -> Result<Option<String>> {
        let Some(selector) = self.config.namespace_selector.clone() else {
            return Ok(None);
        };
        let api = Api::<Namespace>::all(self.client.clone());
        let probe = ListParams::default().labels(&selector).limit(1);
        match self.call(api.list_metadata(&probe)).await {
            Ok(_) => Ok(Some(selector)),
            Err(e) if e.status_code() == Some(403) => {
                tracing::warn!(
                    selector,
                    error = %e,
                    "May not list namespaces: serving only the configured ones. Grant list \
                     and watch on namespaces cluster-wide to serve the labelled ones too."
                );
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Stops the watches and waits for them. Functions keep running: they are the cluster's.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.watches.close();
        self.watches.wait().await;
    }

    fn check_served(&self, namespace: &str) -> Result<(), ProviderError> {
        if self.served.contains(namespace) {
            return Ok(());
        }
        Err(ProviderError::Invalid(format!(
            "namespace {namespace} is not served by this provider (served: {})",
            self.served.list().join(", ")
        )))
    }

    fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    async fn call<T>(&self, call: impl Future<Output = kube::Result<T>>) -> Result<T> {
        within(self.config.request_timeout, call).await
    }

    /// The function Deployment `name`: `NotFound` when absent, `Invalid` when it is a
    /// Deployment that is not a function.
    async fn function(&self, namespace: &str, name: &str) -> Result<Deployment, ProviderError> {
        let found = self
            .call(self.api::<Deployment>(namespace).get_opt(name))
            .await
            .map_err(|e| {
                e.into_provider_for(
                    function_target(namespace, name),
                    format!("read function {name}.{namespace}"),
                )
            })?;
        match found {
            Some(deployment) if render::is_function(&deployment) => Ok(deployment),
            Some(_) => Err(ProviderError::Invalid(format!("Not a function: {name}"))),
            None => Err(not_found("function", namespace, name)),
        }
    }

    /// Every function Deployment of a namespace.
    async fn functions(&self, namespace: &str) -> Result<Vec<Deployment>, ProviderError> {
        let list = self
            .call(
                self.api::<Deployment>(namespace)
                    .list(&ListParams::default().labels(LABEL_FUNCTION)),
            )
            .await
            .map_err(|e| e.into_provider(format!("list functions in {namespace}")))?;
        Ok(list.items)
    }

    /// Checks that every secret `spec` names exists, and sorts them by use.
    async fn secret_use(
        &self,
        namespace: &str,
        spec: &FunctionDeployment,
    ) -> Result<SecretUse, ProviderError> {
        let api = self.api::<KubeSecret>(namespace);
        let mut secrets = SecretUse::default();
        for name in spec.secrets.iter().flatten() {
            let found = self.call(api.get_opt(name)).await.map_err(|e| {
                e.into_provider_for(
                    secret_target(namespace, name),
                    format!("read secret {name}.{namespace}"),
                )
            })?;
            let Some(secret) = found else {
                return Err(ProviderError::Invalid(format!(
                    "unable to fetch secrets: secret {name} not found in namespace {namespace}"
                )));
            };
            secrets.add(name, &secret);
        }
        Ok(secrets)
    }

    /// Server-side applies the function's Deployment (never its replicas), then its Service.
    /// `hand_over` is the replica count to hand to [`SCALE_FIELD_MANAGER`] first, when
    /// Courier's applies still own it (see [`applies_replicas`]).
    async fn apply(
        &self,
        function: &FunctionRef,
        spec: &FunctionDeployment,
        hand_over: Option<i32>,
    ) -> Result<(), ProviderError> {
        let secrets = self.secret_use(&function.namespace, spec).await?;
        let revision = Timestamp::now().to_string();
        let objects = FunctionObjects {
            function,
            spec,
            secrets: &secrets,
            revision: &revision,
            pods: &self.config.pods,
        };
        let deployment = objects.deployment()?;
        let service = objects.service();
        let (namespace, name) = (function.namespace.as_str(), function.name.as_str());
        let target = function_target(namespace, name);
        let deployments = self.api::<Deployment>(namespace);
        if let Some(replicas) = hand_over {
            let replicas_only = serde_json::json!({
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": { "name": name, "namespace": namespace },
                "spec": { "replicas": replicas },
            });
            let params = PatchParams::apply(SCALE_FIELD_MANAGER).force();
            self.call(deployments.patch(name, &params, &Patch::Apply(&replicas_only)))
                .await
                .map_err(|e| {
                    e.into_provider_for(target, format!("hand the replicas of {function} over"))
                })?;
        }
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let applied = self
            .call(deployments.patch(name, &params, &Patch::Apply(&deployment)))
            .await
            .map_err(|e| {
                e.into_provider_for(target, format!("apply the Deployment of {function}"))
            })?;
        self.cache.apply(namespace, applied);
        self.call(
            self.api::<Service>(namespace)
                .patch(name, &params, &Patch::Apply(&service)),
        )
        .await
        .map_err(|e| e.into_provider_for(target, format!("apply the Service of {function}")))?;
        Ok(())
    }

    /// Sets the replica count through the scale subresource, as [`SCALE_FIELD_MANAGER`].
    async fn set_replicas(
        &self,
        namespace: &str,
        name: &str,
        replicas: i32,
    ) -> Result<(), ProviderError> {
        let params = PatchParams {
            field_manager: Some(SCALE_FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({ "spec": { "replicas": replicas } });
        self.call(self.api::<Deployment>(namespace).patch_scale(
            name,
            &params,
            &Patch::Merge(&patch),
        ))
        .await
        .map_err(|e| {
            e.into_provider_for(
                function_target(namespace, name),
                format!("scale {name}.{namespace}"),
            )
        })?;
        self.cache.set_replicas(namespace, name, replicas);
        Ok(())
    }

    /// The managed secret `name`: `NotFound` when absent or not managed by `/system/secrets`.
    async fn managed_secret(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<KubeSecret, ProviderError> {
        self.call(self.api::<KubeSecret>(namespace).get_opt(name))
            .await
            .map_err(|e| {
                e.into_provider_for(
                    secret_target(namespace, name),
                    format!("read secret {name}.{namespace}"),
                )
            })?
            .filter(render::is_managed_secret)
            .ok_or_else(|| not_found("secret", namespace, name))
    }
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("namespaces", &self.served.list())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Drop for KubernetesProvider {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[async_trait]
impl Provider for KubernetesProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            provider: "courier-kubernetes".into(),
            orchestration: "kubernetes".into(),
            version: self.config.version.clone(),
            sandbox: None,
        }
    }

    /// No replica limit beyond [`MAX_REPLICAS`](courier_core::function::MAX_REPLICAS); CPU use
    /// from the metrics API (see [`cpu_millicores`](Self::cpu_millicores)).
    fn scaling(&self) -> ProviderScaling {
        ProviderScaling {
            max_replicas: courier_core::function::MAX_REPLICAS,
            cpu_metrics: true,
        }
    }

    /// With an [autoscaler lease](KubernetesConfig::autoscaler_lease): whether this process
    /// holds it now. Without one: always (a single gateway is assumed).
    fn autoscaler_leader(&self) -> bool {
        self.config.autoscaler_lease.is_none() || self.leadership.is_leader()
    }

    /// The summed `usage.cpu` of the function's PodMetrics (`metrics.k8s.io/v1beta1`), in
    /// millicores; `None` when the metrics API reports none of its pods.
    async fn cpu_millicores(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<f64>, ProviderError> {
        self.check_served(namespace)?;
        cpu::function_millicores(
            self.client.clone(),
            namespace,
            name,
            self.config.request_timeout,
        )
        .await
        .map_err(|e| e.into_provider(format!("read the CPU use of {name}.{namespace}")))
    }

    /// Applies the Deployment (without replicas: the API server creates it with 1) and the
    /// Service, then scales to [`render::initial_replicas`] through the scale subresource
    /// when that is not 1. See the crate docs for why replicas are never applied.
    async fn deploy(&self, namespace: &str, spec: FunctionDeployment) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        let function = FunctionRef {
            name: spec.service.clone(),
            namespace: namespace.to_owned(),
        };
        let replicas = replica_count(render::initial_replicas(&spec))?;
        let existing = self
            .call(self.api::<Deployment>(namespace).get_opt(&function.name))
            .await
            .map_err(|e| {
                e.into_provider_for(
                    function_target(namespace, &function.name),
                    format!("read function {function}"),
                )
            })?;
        if let Some(existing) = existing {
            being_removed(&existing, &function)?;
            return Err(ProviderError::AlreadyExists {
                kind: "function",
                name: function.to_string(),
            });
        }
        self.apply(&function, &spec, None).await?;
        self.routing.add_function(namespace, &function.name);
        if replicas != 1 {
            self.set_replicas(namespace, &function.name, replicas)
                .await?;
        }
        tracing::info!(function = %function, replicas, "Function deployed.");
        Ok(())
    }

    /// Applies the new Deployment and Service, leaving the replica count to whoever owns it
    /// (the scale API, an autoscaler): `com.openfaas.scale.min` only counts at creation.
    async fn update(&self, namespace: &str, spec: FunctionDeployment) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        let function = FunctionRef {
            name: spec.service.clone(),
            namespace: namespace.to_owned(),
        };
        let current = self.function(namespace, &function.name).await?;
        being_removed(&current, &function)?;
        let hand_over = applies_replicas(&current)
            .then(|| current.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1));
        self.apply(&function, &spec, hand_over).await?;
        self.routing.add_function(namespace, &function.name);
        tracing::info!(function = %function, "Function updated.");
        Ok(())
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        self.function(namespace, name).await?;
        let gone = |e: Error, what: &str| {
            if e.is_not_found() {
                Ok(())
            } else {
                Err(e.into_provider(format!("delete the {what} of {name}.{namespace}")))
            }
        };
        let deleted = self
            .call(
                self.api::<Deployment>(namespace)
                    .delete(name, &DeleteParams::foreground()),
            )
            .await;
        deleted.map(drop).or_else(|e| gone(e, "Deployment"))?;
        let deleted = self
            .call(
                self.api::<Service>(namespace)
                    .delete(name, &DeleteParams::default()),
            )
            .await;
        deleted.map(drop).or_else(|e| gone(e, "Service"))?;
        self.routing.remove_function(namespace, name);
        tracing::info!(function = %format_args!("{name}.{namespace}"), "Function removed.");
        Ok(())
    }

    /// From the watch cache once the namespace's function watch has listed it (no API call);
    /// before that, a list call.
    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, ProviderError> {
        self.check_served(namespace)?;
        if let Some(cached) = self.cache.list(namespace) {
            return Ok(cached.iter().map(|d| render::status(d)).collect());
        }
        let mut out: Vec<FunctionStatus> = self
            .functions(namespace)
            .await?
            .iter()
            .map(render::status)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn status(&self, namespace: &str, name: &str) -> Result<FunctionStatus, ProviderError> {
        self.check_served(namespace)?;
        Ok(render::status(&self.function(namespace, name).await?))
    }

    async fn scale(&self, namespace: &str, name: &str, replicas: u64) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        let count = replica_count(replicas)?;
        self.function(namespace, name).await?;
        self.set_replicas(namespace, name, count).await?;
        tracing::info!(function = %format_args!("{name}.{namespace}"), replicas, "Function scaled.");
        Ok(())
    }

    fn resolve(&self, function: &FunctionRef) -> Result<Endpoint, ProviderError> {
        // A namespace no longer served may still have routes a stopping watch wrote.
        if !self.served.contains(&function.namespace) {
            return Err(not_found("function", &function.namespace, &function.name));
        }
        self.routing.resolve(function)
    }

    /// The default namespace, the configured ones, and the labelled ones being served.
    async fn namespaces(&self) -> Result<Vec<String>, ProviderError> {
        Ok(self.served.list())
    }

    async fn list_secrets(&self, namespace: &str) -> Result<Vec<SecretSummary>, ProviderError> {
        self.check_served(namespace)?;
        let selector = render::managed_secrets_selector();
        let list = self
            .call(
                self.api::<KubeSecret>(namespace)
                    .list(&ListParams::default().labels(&selector)),
            )
            .await
            .map_err(|e| e.into_provider(format!("list secrets in {namespace}")))?;
        let mut names: Vec<String> = list
            .items
            .into_iter()
            .filter_map(|s| s.metadata.name)
            .collect();
        names.sort();
        Ok(names
            .into_iter()
            .map(|name| SecretSummary {
                name,
                namespace: namespace.to_owned(),
            })
            .collect())
    }

    async fn create_secret(&self, namespace: &str, secret: Secret) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        let value = secret
            .bytes()
            .map_err(|e| ProviderError::Invalid(e.to_string()))?;
        let object = render::secret(namespace, &secret.name, value);
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.call(self.api::<KubeSecret>(namespace).create(&params, &object))
            .await
            .map_err(|e| {
                e.into_provider_for(
                    secret_target(namespace, &secret.name),
                    format!("create secret {}.{namespace}", secret.name),
                )
            })?;
        tracing::info!(secret = %secret.name, namespace, "Secret created.");
        Ok(())
    }

    async fn update_secret(&self, namespace: &str, secret: Secret) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        let value = secret
            .bytes()
            .map_err(|e| ProviderError::Invalid(e.to_string()))?;
        let mut object = self.managed_secret(namespace, &secret.name).await?;
        object.data = Some(BTreeMap::from([(
            secret.name.clone(),
            k8s_openapi::ByteString(value),
        )]));
        object.string_data = None;
        let params = PostParams {
            field_manager: Some(FIELD_MANAGER.into()),
            ..PostParams::default()
        };
        self.call(
            self.api::<KubeSecret>(namespace)
                .replace(&secret.name, &params, &object),
        )
        .await
        .map_err(|e| {
            e.into_provider_for(
                secret_target(namespace, &secret.name),
                format!("update secret {}.{namespace}", secret.name),
            )
        })?;
        tracing::info!(secret = %secret.name, namespace, "Secret updated.");
        Ok(())
    }

    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        self.managed_secret(namespace, name).await?;
        let users: Vec<String> = self
            .functions(namespace)
            .await?
            .iter()
            .filter(|d| render::deployed_secrets(d).iter().any(|s| s == name))
            .filter_map(|d| d.metadata.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(ProviderError::Conflict(format!(
                "secret {name}.{namespace} is used by {}: remove or update them first",
                users.join(", ")
            )));
        }
        self.call(
            self.api::<KubeSecret>(namespace)
                .delete(name, &DeleteParams::default()),
        )
        .await
        .map_err(|e| {
            e.into_provider_for(
                secret_target(namespace, name),
                format!("delete secret {name}.{namespace}"),
            )
        })?;
        tracing::info!(secret = %name, namespace, "Secret removed.");
        Ok(())
    }

    async fn logs(&self, request: LogRequest) -> Result<LogStream, ProviderError> {
        self.check_served(&request.namespace)?;
        self.function(&request.namespace, &request.name).await?;
        let context = format!("read the logs of {}.{}", request.name, request.namespace);
        logs::open(
            self.api::<Pod>(&request.namespace),
            request,
            self.config.request_timeout,
        )
        .await
        .map_err(|e| e.into_provider(context))
    }
}

#[cfg(test)]
mod tests;
