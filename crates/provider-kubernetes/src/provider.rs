//! [`KubernetesProvider`]: the [`Provider`] seam over the Kubernetes API.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use courier_core::function::LABEL_FUNCTION;
use courier_core::system::ProviderInfo;
use courier_core::{
    Endpoint, FunctionDeployment, FunctionRef, FunctionStatus, LogRequest, LogStream, Provider,
    ProviderError, Secret, SecretSummary,
};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Pod, Secret as KubeSecret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::KubernetesConfig;
use crate::error::{Error, Result, within};
use crate::render::{self, FunctionObjects, SecretUse};
use crate::routing::RoutingTable;
use crate::{logs, watch};

/// The field manager of everything Courier applies.
pub const FIELD_MANAGER: &str = "courier";
/// The field manager of replica changes through the scale subresource.
const SCALE_FIELD_MANAGER: &str = "courier-scale";

/// Runs functions as Kubernetes Deployments + Services.
pub struct KubernetesProvider {
    client: Client,
    config: KubernetesConfig,
    /// [`KubernetesConfig::served_namespaces`], computed once.
    served: Vec<String>,
    routing: Arc<RoutingTable>,
    watches: TaskTracker,
    stop: CancellationToken,
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

    /// Starts the watches of every served namespace and waits until each has listed its
    /// namespace, so the first invocations already find their functions.
    pub async fn start(client: Client, config: KubernetesConfig) -> Result<Arc<Self>> {
        let provider = Self::without_watches(client, config);
        let synced = watch::spawn(
            &provider.client,
            &provider.served,
            &provider.routing,
            &provider.watches,
            &provider.stop,
        );
        let sync_timeout = provider.config.sync_timeout;
        let all_synced = futures_util::future::join_all(synced);
        if tokio::time::timeout(sync_timeout, all_synced)
            .await
            .is_err()
        {
            provider.shutdown().await;
            return Err(Error::NotSynced(sync_timeout));
        }
        tracing::info!(namespaces = ?provider.served, "Kubernetes provider started.");
        Ok(Arc::new(provider))
    }

    /// A provider whose routing table only knows what this process deploys and deletes.
    pub(crate) fn without_watches(client: Client, config: KubernetesConfig) -> Self {
        Self {
            served: config.served_namespaces(),
            client,
            config,
            routing: Arc::default(),
            watches: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    /// Stops the watches and waits for them. Functions keep running: they are the cluster's.
    pub async fn shutdown(&self) {
        self.stop.cancel();
        self.watches.close();
        self.watches.wait().await;
    }

    fn check_served(&self, namespace: &str) -> Result<(), ProviderError> {
        if self.served.iter().any(|ns| ns == namespace) {
            return Ok(());
        }
        Err(ProviderError::Invalid(format!(
            "namespace {namespace} is not served by this provider (served: {})",
            self.served.join(", ")
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
            .map_err(|e| e.into_provider(format!("read function {name}.{namespace}")))?;
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
            let found = self
                .call(api.get_opt(name))
                .await
                .map_err(|e| e.into_provider(format!("read secret {name}.{namespace}")))?;
            let Some(secret) = found else {
                return Err(ProviderError::Invalid(format!(
                    "unable to fetch secrets: secret {name} not found in namespace {namespace}"
                )));
            };
            secrets.add(name, &secret);
        }
        Ok(secrets)
    }

    /// Server-side applies the function's Deployment, then its Service.
    async fn apply(
        &self,
        function: &FunctionRef,
        spec: &FunctionDeployment,
        replicas: i32,
    ) -> Result<(), ProviderError> {
        let secrets = self.secret_use(&function.namespace, spec).await?;
        let revision = Timestamp::now().to_string();
        let objects = FunctionObjects {
            function,
            spec,
            replicas,
            secrets: &secrets,
            revision: &revision,
            pods: &self.config.pods,
        };
        let deployment = objects.deployment()?;
        let service = objects.service();
        let params = PatchParams::apply(FIELD_MANAGER).force();
        let name = &function.name;
        self.call(self.api::<Deployment>(&function.namespace).patch(
            name,
            &params,
            &Patch::Apply(&deployment),
        ))
        .await
        .map_err(|e| e.into_provider(format!("apply the Deployment of {function}")))?;
        self.call(self.api::<Service>(&function.namespace).patch(
            name,
            &params,
            &Patch::Apply(&service),
        ))
        .await
        .map_err(|e| e.into_provider(format!("apply the Service of {function}")))?;
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
            .map_err(|e| e.into_provider(format!("read secret {name}.{namespace}")))?
            .filter(render::is_managed_secret)
            .ok_or_else(|| not_found("secret", namespace, name))
    }
}

impl std::fmt::Debug for KubernetesProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubernetesProvider")
            .field("namespaces", &self.served)
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

    async fn deploy(&self, namespace: &str, spec: FunctionDeployment) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        let function = FunctionRef {
            name: spec.service.clone(),
            namespace: namespace.to_owned(),
        };
        let replicas = replica_count(spec.initial_replicas())?;
        let existing = self
            .call(self.api::<Deployment>(namespace).get_opt(&function.name))
            .await
            .map_err(|e| e.into_provider(format!("read function {function}")))?;
        if let Some(existing) = existing {
            being_removed(&existing, &function)?;
            return Err(ProviderError::AlreadyExists {
                kind: "function",
                name: function.to_string(),
            });
        }
        self.apply(&function, &spec, replicas).await?;
        self.routing.add_function(namespace, &function.name);
        tracing::info!(function = %function, replicas, "Function deployed.");
        Ok(())
    }

    async fn update(&self, namespace: &str, spec: FunctionDeployment) -> Result<(), ProviderError> {
        self.check_served(namespace)?;
        let function = FunctionRef {
            name: spec.service.clone(),
            namespace: namespace.to_owned(),
        };
        let current = self.function(namespace, &function.name).await?;
        being_removed(&current, &function)?;
        let replicas = match spec.min_replicas() {
            Some(min) => replica_count(min)?,
            None => current.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
        };
        self.apply(&function, &spec, replicas).await?;
        self.routing.add_function(namespace, &function.name);
        tracing::info!(function = %function, replicas, "Function updated.");
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

    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, ProviderError> {
        self.check_served(namespace)?;
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
        let params = PatchParams {
            field_manager: Some(SCALE_FIELD_MANAGER.into()),
            ..PatchParams::default()
        };
        let patch = serde_json::json!({ "spec": { "replicas": count } });
        self.call(self.api::<Deployment>(namespace).patch_scale(
            name,
            &params,
            &Patch::Merge(&patch),
        ))
        .await
        .map_err(|e| match e.is_not_found() {
            true => not_found("function", namespace, name),
            false => e.into_provider(format!("scale {name}.{namespace}")),
        })?;
        tracing::info!(function = %format_args!("{name}.{namespace}"), replicas, "Function scaled.");
        Ok(())
    }

    fn resolve(&self, function: &FunctionRef) -> Result<Endpoint, ProviderError> {
        self.routing.resolve(function)
    }

    async fn namespaces(&self) -> Result<Vec<String>, ProviderError> {
        Ok(self.served.clone())
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
            .map_err(|e| match e.status_code() {
                Some(409) => ProviderError::AlreadyExists {
                    kind: "secret",
                    name: format!("{}.{namespace}", secret.name),
                },
                _ => e.into_provider(format!("create secret {}.{namespace}", secret.name)),
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
        .map_err(|e| match e.is_not_found() {
            true => not_found("secret", namespace, &secret.name),
            false => e.into_provider(format!("update secret {}.{namespace}", secret.name)),
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
        .map_err(|e| match e.is_not_found() {
            true => not_found("secret", namespace, name),
            false => e.into_provider(format!("delete secret {name}.{namespace}")),
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
