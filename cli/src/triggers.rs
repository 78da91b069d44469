//! The triggers: the scheduler and the Kafka and AMQP connectors. In `courier up` they run
//! next to the gateway and reach functions in-process; alone (`courier scheduler`,
//! `courier connector kafka|amqp`) they read the function list from a gateway, call through
//! it, and queue calls and dead letters in the shared queue (`--queue`).
//!
//! Every trigger sees only `courier_invoke`'s Catalog and Invoker; this module picks their
//! implementations.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use courier_connector::config::ConnectorArgs;
use courier_connector_amqp::AmqpArgs;
use courier_connector_kafka::KafkaArgs;
use courier_core::{FunctionDeployment, Provider};
use courier_gateway::{Gateway, SpecCheck};
use courier_invoke::{
    Catalog, Fabric, FunctionCaller, FunctionSource, GatewayHttp, GatewaySource, Invoker,
    REFRESH_INTERVAL,
};
use courier_queue::{QueueConfig, WorkQueue};
use courier_scheduler::{DispatchMode, SchedulerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::ledger_args::LedgerArgs;
use crate::telemetry_args::Telemetry;
use crate::up::duration;

/// Scheduler options (`courier up` and `courier scheduler`).
#[derive(Debug, Clone, Args)]
pub(crate) struct SchedulerArgs {
    /// How scheduled fires reach functions: `queue` (stored in the work queue: retried,
    /// dead-lettered, stored once across scheduler replicas) or `sync` (called directly).
    #[arg(long, env = "COURIER_SCHEDULE_MODE", default_value = "queue")]
    schedule_mode: DispatchMode,
    /// The file remembering the last fire handled per schedule (missed-fire detection);
    /// default `<data-dir>/scheduler/state.json`.
    #[arg(long, env = "COURIER_SCHEDULE_STATE")]
    schedule_state: Option<PathBuf>,
    /// Sync mode: how long one scheduled call may run.
    #[arg(long, env = "COURIER_SCHEDULE_CALL_TIMEOUT", default_value = "60s", value_parser = duration)]
    schedule_call_timeout: Duration,
    /// Fires handed to the queue (or called) at once; more wait their turn.
    #[arg(long, env = "COURIER_SCHEDULE_MAX_CONCURRENT", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..))]
    schedule_max_concurrent: u64,
    /// A fire handed over later than this after its time counts as missed (the function's
    /// `com.courier.schedule.missed` policy decides); sooner, it fires late.
    #[arg(long, env = "COURIER_SCHEDULE_MISSED_AFTER", default_value = "5s", value_parser = duration)]
    schedule_missed_after: Duration,
}

impl SchedulerArgs {
    fn config(&self, data_dir: &Path) -> SchedulerConfig {
        SchedulerConfig {
            mode: self.schedule_mode,
            state_path: Some(
                self.schedule_state
                    .clone()
                    .unwrap_or_else(|| data_dir.join("scheduler").join("state.json")),
            ),
            call_timeout: self.schedule_call_timeout,
            max_concurrent_dispatches: usize::try_from(self.schedule_max_concurrent)
                .unwrap_or(usize::MAX),
            missed_after: self.schedule_missed_after,
            ..SchedulerConfig::default()
        }
    }
}

/// The triggers `courier up` runs beside the gateway.
#[derive(Debug, Args)]
pub(crate) struct UpTriggerArgs {
    /// Do not run the scheduler in this process.
    #[arg(long, env = "COURIER_NO_SCHEDULER")]
    no_scheduler: bool,
    #[command(flatten)]
    scheduler: SchedulerArgs,
    #[command(flatten)]
    connector: ConnectorArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    amqp: AmqpArgs,
}

/// The spec checks the gateway applies for the triggers: a `schedule` that parses, valid
/// scheduler policies.
pub(crate) fn spec_checks() -> Vec<SpecCheck> {
    vec![SpecCheck(Arc::new(|spec: &FunctionDeployment| {
        let empty = BTreeMap::new();
        courier_scheduler::validate(spec.annotations.as_ref().unwrap_or(&empty))
    }))]
}

/// `GET /system/schedules`, answered from the provider's function list.
pub(crate) fn schedules_route(provider: Arc<dyn Provider>) -> axum::Router {
    axum::Router::new()
        .route("/system/schedules", axum::routing::get(schedules))
        .with_state(provider)
}

async fn schedules(
    axum::extract::State(provider): axum::extract::State<Arc<dyn Provider>>,
) -> Result<axum::Json<Vec<courier_scheduler::ScheduleView>>, courier_gateway::ApiError> {
    let functions = provider
        .functions()
        .await
        .map_err(|e| courier_gateway::ApiError::Internal(e.to_string()))?;
    Ok(axum::Json(courier_scheduler::schedules(
        &functions,
        chrono::Utc::now(),
    )))
}

/// Running triggers.
pub(crate) struct Triggers {
    tasks: Vec<Task>,
    stop: CancellationToken,
}

impl Triggers {
    /// Stops them and waits for each to drain.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        for (name, task) in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(trigger = name, error = format!("{e:#}"), "Trigger failed.")
                }
                Err(e) => tracing::error!(trigger = name, error = %e, "Trigger panicked."),
            }
        }
    }
}

/// Starts the triggers of `courier up`: they reach functions through `gateway` in-process
/// and queue calls in `queue`.
pub(crate) async fn start_in_process(
    args: UpTriggerArgs,
    gateway: Arc<Gateway>,
    caller: Arc<dyn FunctionCaller>,
    queue: Arc<dyn WorkQueue>,
    spans: Option<courier_core::trace::Spans>,
    data_dir: &Path,
    registry: &prometheus::Registry,
) -> Result<Triggers> {
    let stop = CancellationToken::new();
    let source: Arc<dyn FunctionSource> = Arc::new(gateway.provider().clone());
    let catalog = Catalog::start(source, REFRESH_INTERVAL, stop.clone())
        .await
        .context("reading the function list")?;
    // Deploys through this gateway reach the triggers at once, not at the next refresh.
    {
        let (changes, catalog, stop) = (gateway.function_changes(), catalog.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = changes.notified() => catalog.refresh_now(),
                }
            }
        });
    }
    let inputs = Inputs {
        catalog,
        invoker: Arc::new(Fabric::new(caller, Some(queue)).with_spans(spans)),
        registry: registry.clone(),
        stop: stop.clone(),
    };
    let mut tasks = Vec::new();
    if !args.no_scheduler {
        tasks.push(inputs.spawn_scheduler(args.scheduler.config(data_dir)));
        println!("  scheduler: on (functions with topic cron-function and a schedule annotation)");
    }
    if args.kafka.is_enabled() {
        println!("  kafka connector: {}", args.kafka.kafka_brokers.join(","));
        tasks.push(inputs.spawn_kafka(args.kafka, &args.connector));
    }
    if args.amqp.is_enabled() {
        println!(
            "  amqp connector: queues {}",
            args.amqp.amqp_queues.join(",")
        );
        tasks.push(inputs.spawn_amqp(args.amqp, &args.connector));
    }
    Ok(Triggers { tasks, stop })
}

/// What every trigger runs on.
#[derive(Clone)]
struct Inputs {
    catalog: Catalog,
    invoker: Arc<dyn Invoker>,
    registry: prometheus::Registry,
    stop: CancellationToken,
}

/// A running trigger: its name and its task.
type Task = (&'static str, JoinHandle<Result<()>>);

impl Inputs {
    /// Runs `trigger` on these inputs in a task of its own.
    fn spawn<E, Fut>(
        &self,
        name: &'static str,
        trigger: impl FnOnce(
            watch::Receiver<courier_invoke::FunctionList>,
            Arc<dyn Invoker>,
            prometheus::Registry,
            CancellationToken,
        ) -> Fut,
    ) -> Task
    where
        E: std::error::Error + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let running = trigger(
            self.catalog.watch(),
            self.invoker.clone(),
            self.registry.clone(),
            self.stop.clone(),
        );
        (
            name,
            tokio::spawn(async move { running.await.context(name) }),
        )
    }

    fn spawn_scheduler(&self, config: SchedulerConfig) -> Task {
        self.spawn("scheduler", |list, invoker, registry, stop| async move {
            courier_scheduler::run(config, list, invoker, &registry, stop).await
        })
    }

    fn spawn_kafka(&self, args: KafkaArgs, connector: &ConnectorArgs) -> Task {
        let config = connector.config();
        self.spawn(
            "kafka connector",
            |list, invoker, registry, stop| async move {
                courier_connector_kafka::run(args, config, list, invoker, &registry, stop).await
            },
        )
    }

    fn spawn_amqp(&self, args: AmqpArgs, connector: &ConnectorArgs) -> Task {
        let config = connector.config();
        self.spawn(
            "amqp connector",
            |list, invoker, registry, stop| async move {
                courier_connector_amqp::run(args, config, list, invoker, &registry, stop).await
            },
        )
    }
}

/// What every standalone trigger needs: the gateway, the queue, a password, an endpoint.
#[derive(Debug, Args)]
pub(crate) struct StandaloneArgs {
    /// The gateway functions are listed from and called through.
    #[arg(long, env = "COURIER_GATEWAY", default_value = "http://127.0.0.1:8080")]
    gateway: String,
    /// The queue shared with the gateways and queue workers (`nats://host:port`; several
    /// servers of one cluster comma-separated, `nats://a:4222,nats://b:4222`), where queued
    /// calls and dead letters go.
    #[arg(long, env = "COURIER_QUEUE")]
    queue: String,
    #[command(flatten)]
    queue_replicas: crate::queue_args::QueueReplicasArgs,
    /// Where the admin password is read from when COURIER_BASIC_AUTH_PASSWORD is not set, and
    /// (scheduler) where its state is kept.
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
    /// Where `/healthz` and `/metrics` are served; port 0 picks a free port (printed at start).
    #[arg(long, env = "COURIER_LISTEN", default_value = "127.0.0.1:8082")]
    listen: SocketAddr,
    #[command(flatten)]
    ledger: LedgerArgs,
    #[command(flatten)]
    otlp: crate::telemetry_args::OtlpArgs,
}

/// `courier scheduler`.
#[derive(Debug, Args)]
pub(crate) struct SchedulerCommand {
    #[command(flatten)]
    standalone: StandaloneArgs,
    #[command(flatten)]
    scheduler: SchedulerArgs,
}

/// `courier connector`.
#[derive(Debug, Args)]
pub(crate) struct ConnectorCommand {
    #[command(subcommand)]
    source: ConnectorSource,
}

#[derive(Debug, Subcommand)]
enum ConnectorSource {
    /// Consume Kafka topics.
    Kafka {
        #[command(flatten)]
        standalone: StandaloneArgs,
        #[command(flatten)]
        connector: ConnectorArgs,
        #[command(flatten)]
        kafka: KafkaArgs,
    },
    /// Consume AMQP (RabbitMQ) queues.
    Amqp {
        #[command(flatten)]
        standalone: StandaloneArgs,
        #[command(flatten)]
        connector: ConnectorArgs,
        #[command(flatten)]
        amqp: AmqpArgs,
    },
}

/// The inputs of a standalone trigger, from its flags: the function list and calls through
/// a gateway, queued calls and dead letters in the shared queue, its own `/metrics`.
async fn standalone(
    args: &StandaloneArgs,
    what: &str,
    component: &'static str,
) -> Result<(Inputs, Telemetry)> {
    let password = crate::password::given_or_read(args.password.clone(), &args.data_dir)?;
    let client = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let queue = courier_queue::open(
        &args.queue,
        QueueConfig {
            ledger: args.ledger.config(),
            replicas: args.queue_replicas.replicas(),
            ..QueueConfig::default()
        },
    )
    .await
    .with_context(|| format!("opening the queue {}", args.queue))?;
    let stop = CancellationToken::new();
    let source = GatewaySource::new(client.clone(), &args.gateway, password.clone());
    println!("{what}: reading functions from {}", args.gateway);
    let catalog = Catalog::start(Arc::new(source), REFRESH_INTERVAL, stop.clone())
        .await
        .with_context(|| format!("listing functions at {}", args.gateway))?;
    let caller: Arc<dyn FunctionCaller> = Arc::new(GatewayHttp::new(client, &args.gateway));
    let telemetry = args.otlp.start(component)?;
    let invoker: Arc<dyn Invoker> =
        Arc::new(Fabric::new(caller, Some(queue)).with_spans(telemetry.spans.clone()));
    let registry = prometheus::Registry::new();
    let endpoint = crate::component::serve(args.listen, registry.clone(), stop.clone()).await?;
    println!("  queue: {}", args.queue);
    println!("  metrics: http://{endpoint}/metrics");
    println!("  {}", args.otlp.describe());
    Ok((
        Inputs {
            catalog,
            invoker,
            registry,
            stop,
        },
        telemetry,
    ))
}

/// Runs one trigger until SIGTERM or Ctrl-C, then drains it; its spans are sent last.
async fn run_until_signal(parts: Inputs, task: Task, telemetry: Telemetry) -> Result<()> {
    let ran = run_trigger(parts, task).await;
    telemetry.shutdown().await;
    ran
}

async fn run_trigger(parts: Inputs, task: Task) -> Result<()> {
    let (name, mut handle) = task;
    tokio::select! {
        () = crate::up::wait_for_signal() => {
            println!("Shutting down: finishing calls in flight.");
            parts.stop.cancel();
            handle.await.context(name)??;
        }
        finished = &mut handle => {
            parts.stop.cancel();
            finished.context(name)??;
        }
    }
    println!("Stopped.");
    Ok(())
}

/// `courier scheduler`.
pub(crate) async fn run_scheduler(args: SchedulerCommand) -> Result<()> {
    let (parts, telemetry) = standalone(&args.standalone, "Scheduler", "scheduler").await?;
    let task = parts.spawn_scheduler(args.scheduler.config(&args.standalone.data_dir));
    run_until_signal(parts, task, telemetry).await
}

/// `courier connector kafka|amqp`.
pub(crate) async fn run_connector(args: ConnectorCommand) -> Result<()> {
    match args.source {
        ConnectorSource::Kafka {
            standalone: s,
            connector,
            kafka,
        } => {
            let (parts, telemetry) = standalone(&s, "Kafka connector", "connector-kafka").await?;
            let task = parts.spawn_kafka(kafka, &connector);
            run_until_signal(parts, task, telemetry).await
        }
        ConnectorSource::Amqp {
            standalone: s,
            connector,
            amqp,
        } => {
            let (parts, telemetry) = standalone(&s, "AMQP connector", "connector-amqp").await?;
            let task = parts.spawn_amqp(amqp, &connector);
            run_until_signal(parts, task, telemetry).await
        }
    }
}
