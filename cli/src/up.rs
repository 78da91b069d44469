//! `courier up`: the gateway and the local process runtime in one process, state in one data
//! directory. Stops cleanly on Ctrl-C or SIGTERM: the server drains (bounded), then every
//! function process is stopped before the process exits.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use courier_core::Provider;
use courier_gateway::{AutoscaleConfig, BasicAuth, Gateway, GatewayConfig};
use courier_provider_local::SandboxMode;
use courier_queue::QueueConfig;
use courier_queue_worker::{
    Answer, FunctionCaller, MAX_RESPONSE_BYTES, Worker, WorkerConfig, WorkerMetrics,
};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::ledger_args::LedgerArgs;
use crate::queue_args::QueueReplicasArgs;
use crate::runtime::{LocalOptions, ProviderKind, Runtime};
use crate::telemetry_args::OtlpArgs;
use crate::triggers::UpTriggerArgs;

/// How long open connections (followed log streams, slow calls) may keep the server up after
/// a shutdown signal.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// This build's version: the crate release and the git commit it was built from.
fn version() -> courier_core::system::VersionInfo {
    courier_core::system::VersionInfo {
        commit_message: String::new(),
        sha: env!("COURIER_GIT_SHA").to_owned(),
        release: env!("CARGO_PKG_VERSION").to_owned(),
    }
}

/// Parses a Go duration (`100ms`, `1m30s`) or a number of seconds.
pub(crate) fn duration(s: &str) -> Result<Duration, String> {
    courier_core::duration::parse_go_duration(s).map_err(|e| e.to_string())
}

/// A Go duration longer than zero.
fn positive_duration(s: &str) -> Result<Duration, String> {
    match duration(s)? {
        d if d.is_zero() => Err("must be longer than zero".to_owned()),
        d => Ok(d),
    }
}

/// `courier up`: everything in one process.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    serve: ServeArgs,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    triggers: UpTriggerArgs,
}

/// How the in-process (or standalone) queue worker runs.
#[derive(Debug, Clone, Args)]
pub(crate) struct WorkerArgs {
    /// Queued calls invoked at once.
    #[arg(long, env = "COURIER_MAX_INFLIGHT", default_value_t = 50)]
    pub(crate) max_inflight: usize,
    /// Queued calls invoked at once for one function (so a slow function cannot take every slot).
    #[arg(long, env = "COURIER_MAX_INFLIGHT_PER_FUNCTION", default_value_t = 10)]
    pub(crate) max_inflight_per_function: usize,
}

impl WorkerArgs {
    /// The worker's settings for a gateway at `gateway`, keeping results as `ledger` says.
    pub(crate) fn config(
        &self,
        gateway: String,
        password: Option<String>,
        ack_wait: Duration,
        ledger: &LedgerArgs,
        spans: Option<courier_core::trace::Spans>,
    ) -> WorkerConfig {
        WorkerConfig {
            gateway,
            password,
            max_inflight: self.max_inflight,
            max_inflight_per_function: self.max_inflight_per_function,
            ack_wait,
            drain_timeout: DRAIN_DEADLINE,
            ledger_max_result_bytes: ledger.ledger_max_result_bytes,
            spans,
            ..WorkerConfig::default()
        }
    }
}

/// The gateway and the local runtime (`courier gateway`, and the core of `courier up`).
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "COURIER_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Where functions, secrets and the admin password are kept.
    #[arg(long, env = "COURIER_DATA_DIR", default_value = "./courier-data")]
    data_dir: PathBuf,
    /// A faas-cli stack file to deploy (or update) at start-up.
    #[arg(short = 'f', long = "file")]
    file: Option<PathBuf>,
    /// Turn off authentication of /system/* (anyone who can reach the port can deploy code).
    #[arg(long, env = "COURIER_NO_AUTH")]
    no_auth: bool,
    /// The admin password; default: <data-dir>/secrets/basic-auth-password, generated on first start.
    #[arg(
        long = "basic-auth-password",
        env = "COURIER_BASIC_AUTH_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    password: Option<String>,
    /// How long a function may take to start answering before the caller gets 504.
    #[arg(long, env = "COURIER_UPSTREAM_TIMEOUT", default_value = "60s", value_parser = duration)]
    upstream_timeout: Duration,
    /// How long a call waits for a function with no ready replica (starting, or woken from
    /// zero) before the caller gets 503.
    #[arg(long, env = "COURIER_READY_TIMEOUT", default_value = "30s", value_parser = duration)]
    ready_timeout: Duration,
    /// Fork mode: default exec timeout (a function's envVars.exec_timeout overrides; 0 there disables).
    #[arg(long, env = "COURIER_EXEC_TIMEOUT", default_value = "60s", value_parser = duration)]
    exec_timeout: Duration,
    /// How long an HTTP-mode replica may take to become ready before it is restarted.
    #[arg(long, env = "COURIER_START_TIMEOUT", default_value = "60s", value_parser = duration)]
    start_timeout: Duration,
    /// Sandbox functions with bubblewrap: auto (when usable), on (required), off.
    #[arg(long, env = "COURIER_SANDBOX", default_value = "auto")]
    sandbox: SandboxMode,
    /// Largest /system/* request body, in bytes.
    #[arg(long, env = "COURIER_MAX_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_body_bytes: usize,
    /// Where queued (`/async-function`) calls are stored: `file:///path` (an embedded store;
    /// default `<data-dir>/queue/queue.redb`) or `nats://host:port` (NATS JetStream; several
    /// servers of one cluster comma-separated, `nats://a:4222,nats://b:4222`).
    #[arg(long, env = "COURIER_QUEUE")]
    queue: Option<String>,
    #[command(flatten)]
    pub(crate) queue_replicas: QueueReplicasArgs,
    /// How long a queued call may go unsettled before it is delivered again.
    #[arg(long, env = "COURIER_ACK_WAIT", default_value = "30s", value_parser = duration)]
    pub(crate) ack_wait: Duration,
    /// Largest /async-function request body, in bytes.
    #[arg(long, env = "COURIER_MAX_ASYNC_BODY_BYTES", default_value_t = 1024 * 1024)]
    max_async_body_bytes: usize,
    /// What runs functions: local processes, or Deployments in a Kubernetes cluster.
    #[arg(long, env = "COURIER_PROVIDER", value_enum, default_value = "local")]
    provider: ProviderKind,
    /// The default namespace of functions (only openfaas-fn for now; serve more with
    /// --namespaces).
    #[arg(long, env = "COURIER_FUNCTION_NAMESPACE", default_value = courier_core::DEFAULT_NAMESPACE)]
    function_namespace: String,
    /// Extra namespaces to offer besides openfaas-fn (comma-separated).
    #[arg(long, env = "COURIER_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    #[command(flatten)]
    pub(crate) ledger: LedgerArgs,
    #[command(flatten)]
    pub(crate) otlp: OtlpArgs,
    /// How often the autoscaler samples each function's load and decides its replicas.
    #[arg(long, env = "COURIER_AUTOSCALE_INTERVAL", default_value = "1s", value_parser = positive_duration)]
    autoscale_interval: Duration,
    /// How long the load must stay lower before the autoscaler removes replicas (its
    /// stabilization window; adding replicas is immediate).
    #[arg(long, env = "COURIER_AUTOSCALE_DOWN_DELAY", default_value = "1m", value_parser = duration)]
    autoscale_down_delay: Duration,
    /// Turn the autoscaler off: functions keep the replicas they are deployed or scaled to.
    #[arg(long, env = "COURIER_NO_AUTOSCALE")]
    no_autoscale: bool,
}

impl ServeArgs {
    /// The autoscaler's settings, or `None` when it is turned off. On both providers; on
    /// Kubernetes the gateways elect one that scales (the provider's autoscaler lease).
    fn autoscale(&self) -> Option<AutoscaleConfig> {
        (!self.no_autoscale).then_some(AutoscaleConfig {
            interval: self.autoscale_interval,
            down_delay: self.autoscale_down_delay,
        })
    }
}

/// The queue worker's way to functions inside `courier up`: the gateway's own proxy path.
struct InProcess(Arc<Gateway>);

#[async_trait::async_trait]
impl FunctionCaller for InProcess {
    async fn call(&self, request: http::Request<bytes::Bytes>) -> Result<Answer, String> {
        use http_body_util::BodyExt;
        let (parts, body) = self.0.call_function(request).await.into_parts();
        let body = http_body_util::Limited::new(body, MAX_RESPONSE_BYTES)
            .collect()
            .await
            .map_err(|e| format!("reading the function's answer: {e}"))?
            .to_bytes();
        Ok(Answer {
            status: parts.status.as_u16(),
            headers: parts.headers,
            body,
        })
    }
}

/// `courier up`.
pub(crate) async fn run(args: UpArgs) -> Result<()> {
    serve(args.serve, Some((args.worker, args.triggers))).await
}

/// `courier gateway`: the gateway and the local runtime, with no queue worker (run
/// `courier queue-worker` beside it).
pub(crate) async fn run_gateway(args: ServeArgs) -> Result<()> {
    serve(args, None).await
}

async fn serve(args: ServeArgs, in_process: Option<(WorkerArgs, UpTriggerArgs)>) -> Result<()> {
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating data directory {}", args.data_dir.display()))?;
    let data_dir = std::fs::canonicalize(&args.data_dir)?;
    for ns in &args.namespaces {
        courier_core::names::resolve_namespace(Some(ns)).context("--namespaces")?;
    }

    let password = if args.no_auth {
        tracing::warn!(
            "Authentication is disabled (--no-auth): anyone who can reach the gateway can deploy and run code."
        );
        None
    } else {
        let password = match args.password.as_deref().filter(|p| !p.is_empty()) {
            Some(p) => p.to_owned(),
            None => crate::password::load_or_generate(&data_dir)?.0,
        };
        Some(password)
    };
    let auth = password.clone().map(|p| BasicAuth::new("admin", p));

    let runtime = Runtime::start(
        args.provider,
        &args.function_namespace,
        &args.namespaces,
        LocalOptions {
            data_dir: data_dir.clone(),
            sandbox: args.sandbox,
            exec_timeout: args.exec_timeout,
            start_timeout: args.start_timeout,
        },
        version(),
        args.autoscale().is_some(),
    )
    .await?;
    let provider = runtime.provider();
    let component = if in_process.is_some() {
        "up"
    } else {
        "gateway"
    };
    let telemetry = match args.otlp.start(component) {
        Ok(t) => t,
        Err(e) => {
            runtime.shutdown().await;
            return Err(e);
        }
    };
    let queue_url = args.queue.clone().unwrap_or_else(|| {
        format!(
            "file://{}",
            data_dir.join("queue").join("queue.redb").display()
        )
    });
    let queue = match courier_queue::open(
        &queue_url,
        QueueConfig {
            ack_wait: args.ack_wait,
            // The QueueRequest carries the body base64-encoded, plus the headers.
            max_payload_bytes: args.max_async_body_bytes / 3 * 4 + 256 * 1024,
            ledger: args.ledger.config(),
            replicas: args.queue_replicas.replicas(),
            ..QueueConfig::default()
        },
    )
    .await
    {
        Ok(q) => q,
        Err(e) => {
            runtime.shutdown().await;
            return Err(e).with_context(|| format!("opening the queue {queue_url}"));
        }
    };
    let registry = prometheus::Registry::new();
    let gateway = Gateway::new(
        provider.clone(),
        Some(queue.clone()),
        GatewayConfig {
            upstream_timeout: args.upstream_timeout,
            ready_timeout: args.ready_timeout,
            max_body_bytes: args.max_body_bytes,
            max_async_body_bytes: args.max_async_body_bytes,
            auth: auth.clone(),
            version: version(),
            spec_checks: crate::triggers::spec_checks(),
            spans: telemetry.spans.clone(),
        },
        &registry,
    )?;
    let listener = match tokio::net::TcpListener::bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            runtime.shutdown().await;
            return Err(e).with_context(|| format!("cannot listen on {}", args.listen));
        }
    };
    let url = format!("http://{}", listener.local_addr()?);
    println!("Courier is listening on {url}");
    for line in runtime.describe() {
        println!("  {line}");
    }
    println!("  data directory: {}", data_dir.display());
    if auth.is_some() {
        let password_hint = if args.password.is_some() {
            "the password in COURIER_BASIC_AUTH_PASSWORD".to_owned()
        } else {
            format!(
                "the password in {}",
                crate::password::path(&data_dir).display()
            )
        };
        println!("  log in as user 'admin' with {password_hint}");
        println!(
            "  e.g. export COURIER_GATEWAY={url} COURIER_DATA_DIR={}",
            data_dir.display()
        );
    } else {
        println!("  authentication is disabled");
    }

    println!("  queued calls: {queue_url}");
    println!("  {}", args.ledger.describe());
    println!("  {}", args.otlp.describe());
    let stop_worker = CancellationToken::new();
    let (worker, triggers) = match in_process {
        Some((worker_args, trigger_args)) => {
            // In one process the worker and the triggers call the gateway's proxy path
            // directly (same readiness, scale-from-zero and metrics as over HTTP, one loopback
            // hop less).
            let caller: Arc<dyn FunctionCaller> = Arc::new(InProcess(gateway.clone()));
            let worker = Worker::with_caller(
                queue.clone(),
                worker_args.config(
                    url.clone(),
                    password.clone(),
                    args.ack_wait,
                    &args.ledger,
                    telemetry.spans.clone(),
                ),
                WorkerMetrics::register(&registry)?,
                Some(caller.clone()),
            )?;
            let worker = tokio::spawn(worker.run(stop_worker.clone()));
            let triggers = crate::triggers::start_in_process(
                trigger_args,
                gateway.clone(),
                caller,
                queue.clone(),
                telemetry.spans.clone(),
                &data_dir,
                &registry,
            )
            .await?;
            (Some(worker), Some(triggers))
        }
        None => {
            println!(
                "  no queue worker here: run `courier queue-worker --queue {queue_url} --gateway {url}`"
            );
            (None, None)
        }
    };
    let shutdown = CancellationToken::new();
    let server = {
        let gateway = gateway.clone();
        let shutdown = shutdown.clone();
        let extra = crate::triggers::schedules_route(provider.clone());
        tokio::spawn(async move { gateway.serve(listener, registry, extra, shutdown).await })
    };
    let stop_autoscaler = CancellationToken::new();
    let autoscaler = args.autoscale().map(|config| {
        let gateway = gateway.clone();
        let stop = stop_autoscaler.clone();
        tokio::spawn(async move { gateway.autoscale(config, stop).await })
    });
    match autoscaler {
        Some(_) => println!(
            "  autoscaler: every {:?}, scale-down after {:?}",
            args.autoscale_interval, args.autoscale_down_delay
        ),
        None => println!("  autoscaler: off"),
    }
    if let Some(file) = &args.file
        && let Err(e) = deploy_stack(provider.as_ref(), file).await
    {
        tracing::error!(error = format!("{e:#}"), "Stack file not deployed.");
    }
    wait_for_signal().await;
    println!("Shutting down: finishing queued calls in flight, then stopping functions.");
    // No replica changes while calls drain.
    stop_autoscaler.cancel();
    if let Some(autoscaler) = autoscaler {
        let _ = autoscaler.await;
    }
    // Triggers feed the queue and call through the gateway: they stop first, then the
    // worker, then the server.
    if let Some(triggers) = triggers {
        triggers.stop().await;
    }
    stop_worker.cancel();
    if let Some(worker) = worker {
        let _ = worker.await;
    }
    shutdown.cancel();
    match tokio::time::timeout(DRAIN_DEADLINE, server).await {
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "Server error."),
        Err(_) => tracing::warn!("Connections still open after the drain deadline; closing."),
        _ => {}
    }
    runtime.shutdown().await;
    telemetry.shutdown().await;
    println!("Stopped.");
    Ok(())
}

/// Deploys or updates every function of a stack file through the provider.
async fn deploy_stack(provider: &dyn Provider, file: &std::path::Path) -> Result<()> {
    for mut spec in crate::stack::load(file)? {
        let namespace = courier_core::names::resolve_namespace(Some(&spec.namespace))?;
        spec.namespace = namespace.clone();
        let name = spec.service.clone();
        let result = match provider.update(&namespace, spec.clone()).await {
            Err(courier_core::ProviderError::NotFound { .. }) => {
                provider.deploy(&namespace, spec).await
            }
            other => other,
        };
        match result {
            Ok(()) => println!("  deployed {name}.{namespace}"),
            Err(e) => eprintln!("  could not deploy {name}.{namespace}: {e}"),
        }
    }
    Ok(())
}

pub(crate) async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            let _ = ctrl_c.await;
            return;
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Serve {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn the_autoscaler_runs_on_both_providers_unless_turned_off() {
        for provider in ["local", "kubernetes"] {
            let on = Serve::try_parse_from(["courier", "--provider", provider]).unwrap();
            assert!(on.serve.autoscale().is_some(), "{provider}");
            let off = Serve::try_parse_from(["courier", "--provider", provider, "--no-autoscale"])
                .unwrap();
            assert!(off.serve.autoscale().is_none(), "{provider}");
        }
    }
}
