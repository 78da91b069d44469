//! [`LocalProvider`]: the [`Provider`] seam over local processes.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use courier_core::autoscale::ProviderScaling;
use courier_core::function::MAX_REPLICAS;
use courier_core::system::{ProviderInfo, VersionInfo};
use courier_core::{
    DEFAULT_NAMESPACE, Endpoint, FunctionDeployment, FunctionRef, FunctionStatus, LogRequest,
    LogStream, Provider, ProviderError, Secret, SecretSummary,
};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::error::Result;
use crate::logbook::LogBook;
use crate::runtime::{FunctionRuntime, LaunchPlan, Shared};
use crate::sandbox::{Sandbox, SandboxMode};
use crate::store::{FunctionRecord, Store};

/// How the local provider runs functions.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Where functions, secrets and scratch directories live.
    pub data_dir: PathBuf,
    /// Whether to sandbox functions with bubblewrap.
    pub sandbox: SandboxMode,
    /// Fork mode: kill a request's process after this long unless the function sets
    /// `envVars.exec_timeout` (`0` there disables it).
    pub exec_timeout: Duration,
    /// How long an HTTP-mode replica may take to become ready before it is restarted.
    pub start_timeout: Duration,
    /// Namespaces offered besides the default one and those in use.
    pub namespaces: Vec<String>,
    /// The version reported in `/system/info`.
    pub version: VersionInfo,
}

impl LocalConfig {
    /// Defaults for a data directory.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            data_dir: data_dir.into(),
            sandbox: SandboxMode::Auto,
            exec_timeout: Duration::from_secs(60),
            start_timeout: Duration::from_secs(60),
            namespaces: Vec::new(),
            version: VersionInfo {
                commit_message: String::new(),
                sha: "unknown".into(),
                release: env!("CARGO_PKG_VERSION").into(),
            },
        }
    }
}

/// Runs functions as local processes.
#[derive(Debug)]
pub struct LocalProvider {
    shared: Arc<Shared>,
    functions: RwLock<HashMap<FunctionRef, Arc<FunctionRuntime>>>,
    /// Serialises deploy/update/delete/scale and secret changes.
    mutate: tokio::sync::Mutex<()>,
    /// Cancelled at shutdown: stops every runtime at once, retiring ones included.
    hard_stop: CancellationToken,
    /// Replaced versions still draining.
    retiring: TaskTracker,
    namespaces: Vec<String>,
    version: VersionInfo,
}

fn now_rfc3339() -> String {
    OffsetDateTime::now_utc()
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// Refuses replica counts beyond [`MAX_REPLICAS`].
fn check_replicas(replicas: u64) -> Result<(), ProviderError> {
    if replicas > MAX_REPLICAS {
        return Err(ProviderError::Invalid(format!(
            "replicas: {replicas} is more than the {MAX_REPLICAS} a function may have"
        )));
    }
    Ok(())
}

fn not_found(kind: &'static str, namespace: &str, name: &str) -> ProviderError {
    ProviderError::NotFound {
        kind,
        name: format!("{name}.{namespace}"),
    }
}

impl LocalProvider {
    /// Prepares the data directory, picks the sandbox and starts every stored function.
    pub async fn start(config: LocalConfig) -> Result<Arc<Self>> {
        let data_dir = config.data_dir.clone();
        let mode = config.sandbox;
        let (sandbox, store) = tokio::task::spawn_blocking(move || -> Result<_> {
            std::fs::create_dir_all(&data_dir)
                .map_err(|e| crate::Error::io("create directory", &data_dir, e))?;
            Ok((Sandbox::detect(mode, &data_dir)?, Store::new(data_dir)?))
        })
        .await
        .expect("start-up task")?;
        let shared = Arc::new(Shared {
            sandbox,
            store,
            logs: LogBook::default(),
            health: Client::builder(TokioExecutor::new()).build_http(),
            exec_timeout: config.exec_timeout,
            start_timeout: config.start_timeout,
            path: std::env::var("PATH")
                .unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".to_owned()),
        });
        let provider = Arc::new(Self {
            shared,
            functions: RwLock::new(HashMap::new()),
            mutate: tokio::sync::Mutex::new(()),
            hard_stop: CancellationToken::new(),
            retiring: TaskTracker::new(),
            namespaces: config.namespaces,
            version: config.version,
        });
        let store = provider.shared.store.clone();
        let records = tokio::task::spawn_blocking(move || store.load_functions())
            .await
            .expect("load task")?;
        for record in records {
            let function = FunctionRef {
                name: record.spec.service.clone(),
                namespace: record.namespace.clone(),
            };
            if let Err(e) = provider.start_function(&function, record).await {
                tracing::error!(function = %function, error = %e, "Stored function cannot start.");
            }
        }
        Ok(provider)
    }

    /// `bubblewrap` or `none`.
    pub fn sandbox_name(&self) -> &'static str {
        self.shared.sandbox.name()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        self.shared.store.root()
    }

    /// Stops every function and waits until their processes are gone.
    pub async fn shutdown(&self) {
        self.hard_stop.cancel();
        let all: Vec<_> = self
            .functions
            .write()
            .expect("functions lock")
            .drain()
            .map(|(_, rt)| rt)
            .collect();
        futures_util::future::join_all(all.iter().map(|rt| rt.stop())).await;
        self.retiring.close();
        self.retiring.wait().await;
    }

    fn get(&self, namespace: &str, name: &str) -> Option<Arc<FunctionRuntime>> {
        let key = FunctionRef {
            name: name.to_owned(),
            namespace: namespace.to_owned(),
        };
        self.functions
            .read()
            .expect("functions lock")
            .get(&key)
            .cloned()
    }

    async fn blocking<T: Send + 'static>(
        &self,
        op: impl FnOnce(&Store) -> Result<T> + Send + 'static,
    ) -> Result<T, ProviderError> {
        let store = self.shared.store.clone();
        tokio::task::spawn_blocking(move || op(&store))
            .await
            .map_err(|e| ProviderError::internal("storage task", e))?
            .map_err(Into::into)
    }

    /// Validates, materialises secrets and starts the replicas of `record`, replacing any
    /// running version. Nothing is started when validation fails.
    async fn start_function(
        &self,
        function: &FunctionRef,
        record: FunctionRecord,
    ) -> Result<(), ProviderError> {
        let plan = LaunchPlan::new(&self.shared, function, &record.spec)?;
        let secrets = record.spec.secrets.clone().unwrap_or_default();
        let f = function.clone();
        let scratch = plan.scratch_dir.clone();
        let secrets_dir = plan.secrets_dir.clone();
        let owner = self.shared.sandbox.secrets_owner();
        self.blocking(move |store| {
            store.materialize_secrets(&f, &secrets, &secrets_dir, owner)?;
            std::fs::create_dir_all(&scratch)
                .map_err(|e| crate::Error::io("create directory", &scratch, e))
        })
        .await?;
        let rt = FunctionRuntime::new(
            self.shared.clone(),
            function.clone(),
            record.spec,
            record.created_at,
            plan,
            &self.hard_stop,
        );
        rt.scale_to(record.replicas);
        let old = self
            .functions
            .write()
            .expect("functions lock")
            .insert(function.clone(), rt);
        if let Some(old) = old {
            // The new version takes the calls from now on; the old one finishes what it has.
            self.retiring.spawn(async move { old.retire().await });
        }
        Ok(())
    }

    fn status_of(rt: &FunctionRuntime) -> FunctionStatus {
        FunctionStatus::from_deployment(
            &rt.spec,
            &rt.function.namespace,
            rt.desired(),
            rt.available(),
            rt.created_at.clone(),
        )
    }
}

#[async_trait]
impl Provider for LocalProvider {
    fn info(&self) -> ProviderInfo {
        ProviderInfo {
            provider: "courier-local".into(),
            orchestration: "process".into(),
            version: self.version.clone(),
            sandbox: Some(self.shared.sandbox.name().into()),
        }
    }

    fn scaling(&self) -> ProviderScaling {
        // Processes have no metrics API to read CPU use from.
        ProviderScaling {
            max_replicas: MAX_REPLICAS,
            cpu_metrics: false,
        }
    }

    /// HTTP-mode replicas only: their servers live as long as the replica, so their process
    /// trees' CPU time is theirs. (A fork replica's calls are short-lived children.)
    async fn cpu_starved(&self, namespace: &str, name: &str) -> bool {
        let Some(rt) = self.get(namespace, name) else {
            return false;
        };
        let roots = rt.replica_pids();
        if roots.is_empty() {
            return false;
        }
        tokio::task::spawn_blocking(move || {
            let previous = rt.cpu_reading.lock().expect("cpu reading lock").take();
            let (seen, reading) = crate::cpu::watch_since(previous.as_ref(), &roots);
            *rt.cpu_reading.lock().expect("cpu reading lock") = reading;
            seen
        })
        .await
        .ok()
        .flatten()
        .is_some_and(crate::cpu::Use::starved)
    }

    async fn deploy(&self, namespace: &str, spec: FunctionDeployment) -> Result<(), ProviderError> {
        let _guard = self.mutate.lock().await;
        if self.get(namespace, &spec.service).is_some() {
            return Err(ProviderError::AlreadyExists {
                kind: "function",
                name: format!("{}.{namespace}", spec.service),
            });
        }
        let function = FunctionRef {
            name: spec.service.clone(),
            namespace: namespace.to_owned(),
        };
        LaunchPlan::new(&self.shared, &function, &spec)?;
        check_replicas(spec.initial_replicas())?;
        let record = FunctionRecord {
            replicas: spec.initial_replicas(),
            spec,
            namespace: namespace.to_owned(),
            created_at: now_rfc3339(),
        };
        let saved = record.clone();
        self.blocking(move |store| store.save_function(&saved))
            .await?;
        tracing::info!(function = %function, replicas = record.replicas, "Function deployed.");
        self.start_function(&function, record).await
    }

    async fn update(&self, namespace: &str, spec: FunctionDeployment) -> Result<(), ProviderError> {
        let _guard = self.mutate.lock().await;
        let Some(current) = self.get(namespace, &spec.service) else {
            return Err(not_found("function", namespace, &spec.service));
        };
        let function = current.function.clone();
        LaunchPlan::new(&self.shared, &function, &spec)?;
        check_replicas(spec.initial_replicas())?;
        let record = FunctionRecord {
            replicas: spec.min_replicas().unwrap_or(current.desired()),
            spec,
            namespace: namespace.to_owned(),
            created_at: current.created_at.clone(),
        };
        let saved = record.clone();
        self.blocking(move |store| store.save_function(&saved))
            .await?;
        tracing::info!(function = %function, "Function updated.");
        self.start_function(&function, record).await
    }

    async fn delete(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        let _guard = self.mutate.lock().await;
        let Some(rt) = self.get(namespace, name) else {
            return Err(not_found("function", namespace, name));
        };
        let function = rt.function.clone();
        // Forget it on disk first: if this call is abandoned half-way, the function must not
        // come back at the next start.
        let f = function.clone();
        self.blocking(move |store| store.remove_function(&f))
            .await?;
        self.functions
            .write()
            .expect("functions lock")
            .remove(&function);
        rt.stop().await;
        self.shared.logs.remove(&function);
        tracing::info!(function = %function, "Function removed.");
        Ok(())
    }

    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, ProviderError> {
        let mut out: Vec<FunctionStatus> = self
            .functions
            .read()
            .expect("functions lock")
            .values()
            .filter(|rt| rt.function.namespace == namespace)
            .map(|rt| Self::status_of(rt))
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(out)
    }

    async fn status(&self, namespace: &str, name: &str) -> Result<FunctionStatus, ProviderError> {
        self.get(namespace, name)
            .map(|rt| Self::status_of(&rt))
            .ok_or_else(|| not_found("function", namespace, name))
    }

    async fn scale(&self, namespace: &str, name: &str, replicas: u64) -> Result<(), ProviderError> {
        check_replicas(replicas)?;
        let _guard = self.mutate.lock().await;
        let rt = self
            .get(namespace, name)
            .ok_or_else(|| not_found("function", namespace, name))?;
        if rt.desired() == replicas {
            return Ok(());
        }
        let record = FunctionRecord {
            spec: rt.spec.clone(),
            namespace: namespace.to_owned(),
            created_at: rt.created_at.clone(),
            replicas,
        };
        self.blocking(move |store| store.save_function(&record))
            .await?;
        rt.scale_to(replicas);
        tracing::info!(function = %rt.function, replicas, "Function scaled.");
        Ok(())
    }

    fn resolve(&self, function: &FunctionRef) -> Result<Endpoint, ProviderError> {
        let functions = self.functions.read().expect("functions lock");
        let rt = functions
            .get(function)
            .ok_or_else(|| not_found("function", &function.namespace, &function.name))?;
        let authority = rt
            .resolve()
            .ok_or_else(|| ProviderError::NotReady(function.to_string()))?;
        Ok(Endpoint { authority })
    }

    async fn namespaces(&self) -> Result<Vec<String>, ProviderError> {
        let in_use = self.blocking(|store| store.namespaces_in_use()).await?;
        let mut all: BTreeSet<String> = in_use.into_iter().collect();
        all.extend(self.namespaces.iter().cloned());
        all.remove(DEFAULT_NAMESPACE);
        let mut out = vec![DEFAULT_NAMESPACE.to_owned()];
        out.extend(all);
        Ok(out)
    }

    async fn list_secrets(&self, namespace: &str) -> Result<Vec<SecretSummary>, ProviderError> {
        let ns = namespace.to_owned();
        let names = self.blocking(move |store| store.list_secrets(&ns)).await?;
        Ok(names
            .into_iter()
            .map(|name| SecretSummary {
                name,
                namespace: namespace.to_owned(),
            })
            .collect())
    }

    async fn create_secret(&self, namespace: &str, secret: Secret) -> Result<(), ProviderError> {
        let _guard = self.mutate.lock().await;
        let value = secret
            .bytes()
            .map_err(|e| ProviderError::Invalid(e.to_string()))?;
        let (ns, name) = (namespace.to_owned(), secret.name.clone());
        let created = self
            .blocking(move |store| {
                if store.secret_exists(&ns, &name) {
                    return Ok(false);
                }
                store.write_secret(&ns, &name, &value).map(|()| true)
            })
            .await?;
        if !created {
            return Err(ProviderError::AlreadyExists {
                kind: "secret",
                name: format!("{}.{namespace}", secret.name),
            });
        }
        tracing::info!(secret = %secret.name, namespace, "Secret created.");
        Ok(())
    }

    async fn update_secret(&self, namespace: &str, secret: Secret) -> Result<(), ProviderError> {
        let _guard = self.mutate.lock().await;
        let value = secret
            .bytes()
            .map_err(|e| ProviderError::Invalid(e.to_string()))?;
        let (ns, name) = (namespace.to_owned(), secret.name.clone());
        let updated = self
            .blocking(move |store| {
                if !store.secret_exists(&ns, &name) {
                    return Ok(false);
                }
                store.write_secret(&ns, &name, &value).map(|()| true)
            })
            .await?;
        if !updated {
            return Err(not_found("secret", namespace, &secret.name));
        }
        tracing::info!(secret = %secret.name, namespace, "Secret updated.");
        Ok(())
    }

    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), ProviderError> {
        let _guard = self.mutate.lock().await;
        let users: Vec<String> = self
            .functions
            .read()
            .expect("functions lock")
            .values()
            .filter(|rt| rt.function.namespace == namespace)
            .filter(|rt| rt.spec.secrets.iter().flatten().any(|s| s == name))
            .map(|rt| rt.function.name.clone())
            .collect();
        if !users.is_empty() {
            return Err(ProviderError::Conflict(format!(
                "secret {name}.{namespace} is used by {}: remove or update them first",
                users.join(", ")
            )));
        }
        let (ns, n) = (namespace.to_owned(), name.to_owned());
        let removed = self
            .blocking(move |store| {
                if !store.secret_exists(&ns, &n) {
                    return Ok(false);
                }
                store.remove_secret(&ns, &n).map(|()| true)
            })
            .await?;
        if !removed {
            return Err(not_found("secret", namespace, name));
        }
        tracing::info!(secret = %name, namespace, "Secret removed.");
        Ok(())
    }

    async fn logs(&self, request: LogRequest) -> Result<LogStream, ProviderError> {
        let rt = self
            .get(&request.namespace, &request.name)
            .ok_or_else(|| not_found("function", &request.namespace, &request.name))?;
        Ok(rt.log.read(&request))
    }
}
