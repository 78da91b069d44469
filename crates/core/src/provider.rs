//! The Provider seam: everything the gateway needs from whatever runs functions (local
//! processes, Kubernetes). The gateway, worker, connectors and scheduler know only this trait.

use std::fmt;

use async_trait::async_trait;
use futures_util::stream::BoxStream;

use crate::autoscale::ProviderScaling;
use crate::function::{FunctionDeployment, FunctionStatus};
use crate::logs::{LogMessage, LogRequest};
use crate::names::FunctionRef;
use crate::secret::{Secret, SecretSummary};
use crate::system::ProviderInfo;

/// Where to send an invocation: an HTTP authority (`127.0.0.1:34567`, `10.0.3.7:8080`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `host:port` of a ready replica.
    pub authority: http::uri::Authority,
}

/// A stream of log lines; ends when the provider has no more (or, when following, never).
pub type LogStream = BoxStream<'static, LogMessage>;

/// What went wrong in a provider call, classified by how the caller should answer.
#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// No such function or secret.
    #[error("{kind} {name} not found")]
    NotFound {
        /// "function" or "secret".
        kind: &'static str,
        /// `name.namespace`.
        name: String,
    },
    /// It exists already.
    #[error("{kind} {name} already exists")]
    AlreadyExists {
        /// "function" or "secret".
        kind: &'static str,
        /// `name.namespace`.
        name: String,
    },
    /// The request is invalid; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current state (e.g. removing a secret still in use).
    #[error("{0}")]
    Conflict(String),
    /// The function exists but has no ready replica yet.
    #[error("function {0} has no ready replica")]
    NotReady(String),
    /// What the provider depends on (the orchestrator's API) is unreachable or overloaded;
    /// trying again later may work (503).
    #[error("{context}: {source}")]
    Unavailable {
        /// What the provider was doing.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The provider itself failed (IO, the orchestrator); not the caller's fault.
    #[error("{context}: {source}")]
    Internal {
        /// What the provider was doing.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl ProviderError {
    /// Wraps an internal failure with what was being done.
    pub fn internal(
        context: impl fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Internal {
            context: context.to_string(),
            source: source.into(),
        }
    }

    /// A bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::AlreadyExists { .. } => "already_exists",
            Self::Invalid(_) => "invalid",
            Self::Conflict(_) => "conflict",
            Self::NotReady(_) => "not_ready",
            Self::Unavailable { .. } => "unavailable",
            Self::Internal { .. } => "internal",
        }
    }
}

/// Runs functions. Names and namespaces reaching a provider are already validated.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// What this provider is, for `/system/info`.
    fn info(&self) -> ProviderInfo;

    /// What this provider offers the autoscaler: its replica limit, and whether it can read
    /// CPU use (so `com.openfaas.scale.type: cpu` is refused at deploy when it cannot). The
    /// default: [`crate::function::MAX_REPLICAS`] and no CPU metrics.
    fn scaling(&self) -> ProviderScaling {
        ProviderScaling::default()
    }

    /// Whether this process may set replica counts for the autoscaler right now. A provider
    /// that several gateway processes share (Kubernetes) elects one of them, so they do not
    /// all scale the same functions; the others stand by and answer `false`. The default:
    /// `true` (one process owns what the provider runs).
    fn autoscaler_leader(&self) -> bool {
        true
    }

    /// Whether more replicas of a function would only compete for CPU that is not there: its
    /// replicas are busy on CPU and the machine has none idle (replicas that share one
    /// machine). The autoscaler then holds a scale-up. The default: `false` (each replica gets
    /// CPU of its own, as on a cluster).
    async fn cpu_starved(&self, namespace: &str, name: &str) -> bool {
        let _ = (namespace, name);
        false
    }

    /// The CPU use of a function's replicas, summed, in millicores (1000 = one core), for
    /// `com.openfaas.scale.type: cpu`. `Ok(None)` when there is no figure yet (no replica
    /// measured); providers whose [`ProviderScaling::cpu_metrics`] is `false` keep the
    /// default, which is always `Ok(None)`.
    async fn cpu_millicores(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Option<f64>, ProviderError> {
        let _ = (namespace, name);
        Ok(None)
    }

    /// Deploys a new function; `AlreadyExists` if the name is taken in that namespace.
    async fn deploy(&self, namespace: &str, spec: FunctionDeployment) -> Result<(), ProviderError>;

    /// Replaces a function's spec; `NotFound` if it does not exist.
    async fn update(&self, namespace: &str, spec: FunctionDeployment) -> Result<(), ProviderError>;

    /// Removes a function and stops its replicas.
    async fn delete(&self, namespace: &str, name: &str) -> Result<(), ProviderError>;

    /// All functions of a namespace.
    async fn list(&self, namespace: &str) -> Result<Vec<FunctionStatus>, ProviderError>;

    /// One function's status.
    async fn status(&self, namespace: &str, name: &str) -> Result<FunctionStatus, ProviderError>;

    /// Sets the desired replica count (0 allowed).
    async fn scale(&self, namespace: &str, name: &str, replicas: u64) -> Result<(), ProviderError>;

    /// A ready replica to invoke: `NotFound` when unknown, `NotReady` when none is ready.
    /// Called on every invocation: it must be cheap (no IO).
    fn resolve(&self, function: &FunctionRef) -> Result<Endpoint, ProviderError>;

    /// Namespaces functions may be deployed to; always includes the default one.
    async fn namespaces(&self) -> Result<Vec<String>, ProviderError>;

    /// Secrets of a namespace (names only).
    async fn list_secrets(&self, namespace: &str) -> Result<Vec<SecretSummary>, ProviderError>;

    /// Creates a secret; `AlreadyExists` if taken.
    async fn create_secret(&self, namespace: &str, secret: Secret) -> Result<(), ProviderError>;

    /// Replaces a secret's value; `NotFound` if unknown.
    async fn update_secret(&self, namespace: &str, secret: Secret) -> Result<(), ProviderError>;

    /// Removes a secret; `NotFound` if unknown.
    async fn delete_secret(&self, namespace: &str, name: &str) -> Result<(), ProviderError>;

    /// A function's log lines.
    async fn logs(&self, request: LogRequest) -> Result<LogStream, ProviderError>;
}

impl fmt::Debug for dyn Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Provider({})", self.info().provider)
    }
}
