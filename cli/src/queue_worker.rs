//! `courier queue-worker`: the queue worker alone, consuming a queue shared with one or more
//! `courier gateway` processes (NATS JetStream) and invoking functions through a gateway.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;
use courier_queue::QueueConfig;
use courier_queue_worker::{Worker, WorkerMetrics};
use tokio_util::sync::CancellationToken;

use crate::ledger_args::LedgerArgs;
use crate::up::{WorkerArgs, duration};

#[derive(Debug, Args)]
pub(crate) struct QueueWorkerArgs {
    /// The queue to consume: `nats://host:port` (shared with the gateways; several servers of
    /// one cluster comma-separated, `nats://a:4222,nats://b:4222`) or `file:///path` (an
    /// embedded store no gateway process has open).
    #[arg(long, env = "COURIER_QUEUE")]
    queue: String,
    #[command(flatten)]
    queue_replicas: crate::queue_args::QueueReplicasArgs,
    /// The gateway functions are invoked through.
    #[arg(long, env = "COURIER_GATEWAY", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// Where the admin password is read from (`secrets/basic-auth-password`) when
    /// COURIER_BASIC_AUTH_PASSWORD is not set; needed to read retry annotations.
    #[arg(long, env = "COURIER_DATA_DIR", default_value = "./courier-data")]
    data_dir: PathBuf,
    /// The admin password (prefer the environment variable).
    #[arg(
        long = "basic-auth-password",
        env = "COURIER_BASIC_AUTH_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    password: Option<String>,
    /// How long a queued call may go unsettled before it is delivered again.
    #[arg(long, env = "COURIER_ACK_WAIT", default_value = "30s", value_parser = duration)]
    ack_wait: Duration,
    /// Where `/healthz` and `/metrics` (the queue_worker_* series) are served; port 0 picks a
    /// free port (printed at start).
    #[arg(long, env = "COURIER_LISTEN", default_value = "127.0.0.1:8081")]
    listen: std::net::SocketAddr,
    #[command(flatten)]
    worker: WorkerArgs,
    #[command(flatten)]
    ledger: LedgerArgs,
    #[command(flatten)]
    otlp: crate::telemetry_args::OtlpArgs,
}

pub(crate) async fn run(args: QueueWorkerArgs) -> Result<()> {
    let password = crate::password::given_or_read(args.password.clone(), &args.data_dir)?;
    let queue = courier_queue::open(
        &args.queue,
        QueueConfig {
            ack_wait: args.ack_wait,
            ledger: args.ledger.config(),
            replicas: args.queue_replicas.replicas(),
            ..QueueConfig::default()
        },
    )
    .await
    .with_context(|| format!("opening the queue {}", args.queue))?;
    let telemetry = args.otlp.start("queue-worker")?;
    let registry = prometheus::Registry::new();
    let worker = Worker::new(
        queue,
        args.worker.config(
            args.gateway.clone(),
            password,
            args.ack_wait,
            &args.ledger,
            telemetry.spans.clone(),
        ),
        WorkerMetrics::register(&registry)?,
    )?;
    let stop = CancellationToken::new();
    let stop_endpoint = CancellationToken::new();
    let endpoint =
        crate::component::serve(args.listen, registry.clone(), stop_endpoint.clone()).await?;
    println!(
        "Queue worker consuming {} and invoking through {}",
        args.queue, args.gateway
    );
    println!("  metrics: http://{endpoint}/metrics");
    println!("  {}", args.otlp.describe());
    let running = tokio::spawn(worker.run(stop.clone()));
    crate::up::wait_for_signal().await;
    println!("Shutting down: finishing calls in flight, handing back the rest.");
    stop.cancel();
    let _ = running.await;
    stop_endpoint.cancel();
    telemetry.shutdown().await;
    println!("Stopped.");
    Ok(())
}
