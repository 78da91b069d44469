//! The function runtime a gateway process runs over, chosen with `--provider`: local
//! processes (the default) or Kubernetes. Everything after start-up sees only the
//! `Provider` seam; this module is the one place that knows both implementations.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use courier_core::Provider;
use courier_provider_kubernetes::{KubernetesConfig, KubernetesProvider, LeaseConfig};
use courier_provider_local::{LocalConfig, LocalProvider, SandboxMode};

/// Which provider runs functions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum ProviderKind {
    /// Functions are local processes (sandboxed with bubblewrap when available).
    Local,
    /// Functions are Deployments and Services in a Kubernetes cluster (in-cluster config, or
    /// KUBECONFIG).
    Kubernetes,
}

/// What the local provider needs from the command line.
#[derive(Debug, Clone)]
pub(crate) struct LocalOptions {
    pub(crate) data_dir: PathBuf,
    pub(crate) sandbox: SandboxMode,
    pub(crate) exec_timeout: Duration,
    pub(crate) start_timeout: Duration,
}

/// This process's name in the autoscaler's lease: the pod's name (`$HOSTNAME` in a pod) and
/// the process id, unique among the gateways sharing a cluster.
fn lease_identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "courier".into());
    format!("{host}-{}", std::process::id())
}

/// A started provider.
pub(crate) enum Runtime {
    Local(Arc<LocalProvider>),
    Kubernetes(Arc<KubernetesProvider>),
}

impl Runtime {
    /// Starts the chosen provider, serving `namespaces` besides `function_namespace`. With
    /// `autoscaler`, a Kubernetes provider competes for the autoscaler's lease, so only one
    /// of the gateways sharing the cluster scales functions.
    pub(crate) async fn start(
        kind: ProviderKind,
        function_namespace: &str,
        namespaces: &[String],
        local: LocalOptions,
        version: courier_core::system::VersionInfo,
        autoscaler: bool,
    ) -> Result<Self> {
        if function_namespace != courier_core::DEFAULT_NAMESPACE {
            bail!(
                "--function-namespace {function_namespace:?}: the default function namespace is \
                 {:?}; serve others with --namespaces",
                courier_core::DEFAULT_NAMESPACE
            );
        }
        match kind {
            ProviderKind::Local => {
                let provider = LocalProvider::start(LocalConfig {
                    data_dir: local.data_dir,
                    sandbox: local.sandbox,
                    exec_timeout: local.exec_timeout,
                    start_timeout: local.start_timeout,
                    namespaces: namespaces.to_vec(),
                    version,
                })
                .await
                .context("starting the local runtime")?;
                Ok(Self::Local(provider))
            }
            ProviderKind::Kubernetes => {
                println!("Connecting to the Kubernetes API (in-cluster config or KUBECONFIG)...");
                let provider = KubernetesProvider::connect(KubernetesConfig {
                    namespaces: namespaces.to_vec(),
                    version,
                    autoscaler_lease: autoscaler.then(|| LeaseConfig::new(lease_identity())),
                    ..KubernetesConfig::default()
                })
                .await
                .context("starting the Kubernetes provider")?;
                Ok(Self::Kubernetes(provider))
            }
        }
    }

    /// The provider as the gateway sees it.
    pub(crate) fn provider(&self) -> Arc<dyn Provider> {
        match self {
            Self::Local(p) => p.clone(),
            Self::Kubernetes(p) => p.clone(),
        }
    }

    /// Lines for the start-up banner.
    pub(crate) fn describe(&self) -> Vec<String> {
        match self {
            Self::Local(p) => {
                let mut lines = vec![format!(
                    "functions run as local processes (sandbox: {})",
                    p.sandbox_name()
                )];
                if p.sandbox_name() == "none" {
                    lines.push(
                        "WARNING: functions are NOT sandboxed (install bubblewrap to isolate them)"
                            .into(),
                    );
                }
                lines
            }
            Self::Kubernetes(_) => {
                vec!["functions run as Kubernetes Deployments (provider: kubernetes)".into()]
            }
        }
    }

    /// Stops what the provider runs or watches.
    pub(crate) async fn shutdown(&self) {
        match self {
            Self::Local(p) => p.shutdown().await,
            Self::Kubernetes(p) => p.shutdown().await,
        }
    }
}
