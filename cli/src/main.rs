//! The `courier` binary: `courier up` runs the whole fabric in one process; every other
//! command is an HTTP client of a running gateway (`--gateway`, `COURIER_GATEWAY`).
//!
//! Invariant: client commands only speak the gateway's HTTP API; only `up` links a provider.

mod client;
mod commands;
mod component;
mod password;
mod queue_worker;
mod runtime;
mod stack;
mod triggers;
mod up;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// mimalloc instead of glibc's malloc: the gateway's proxy, the worker and the scheduler all
/// allocate per request; see BENCHMARKS.md ("Allocator") for the measurements behind it.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Courier: an OpenFaaS-compatible, event-driven function invocation fabric.
#[derive(Debug, Parser)]
#[command(name = "courier", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway, the local process runtime and the queue worker in one process.
    Up(up::UpArgs),
    /// Run the gateway (over local processes or Kubernetes) without a queue worker.
    Gateway(up::ServeArgs),
    /// Run only the queue worker, against a queue and a gateway.
    QueueWorker(queue_worker::QueueWorkerArgs),
    /// Run only the scheduler, against a gateway and a queue.
    Scheduler(triggers::SchedulerCommand),
    /// Run only a connector (Kafka or AMQP), against a gateway and a queue.
    Connector(triggers::ConnectorCommand),
    /// Show scheduled functions and their next fire times.
    Schedules(commands::schedules::SchedulesArgs),
    /// Deploy (or update) the functions of a faas-cli stack file, then wait until they are ready.
    Deploy(commands::deploy::DeployArgs),
    /// List deployed functions.
    #[command(alias = "ls")]
    List(commands::list::ListArgs),
    /// Show one function in detail.
    Describe(commands::describe::DescribeArgs),
    /// Invoke a function synchronously with the body read from stdin.
    Invoke(commands::invoke::InvokeArgs),
    /// Print a function's logs.
    Logs(commands::logs::LogsArgs),
    /// Remove a function.
    #[command(alias = "rm")]
    Remove(commands::remove::RemoveArgs),
    /// Manage secrets.
    Secret(commands::secret::SecretArgs),
    /// Inspect, replay or purge the dead letters of queued calls.
    Dlq(commands::dlq::DlqArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One rustls crypto provider for the whole process (kube, async-nats and lapin would each
    // pick one; two compiled in panic at run time unless one is installed first).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let filter = tracing_subscriber::EnvFilter::try_from_env("COURIER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("courier: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Up(args) => up::run(args).await,
            Command::Gateway(args) => up::run_gateway(args).await,
            Command::QueueWorker(args) => queue_worker::run(args).await,
            Command::Scheduler(args) => triggers::run_scheduler(args).await,
            Command::Connector(args) => triggers::run_connector(args).await,
            Command::Schedules(args) => commands::schedules::run(args).await,
            Command::Deploy(args) => commands::deploy::run(args).await,
            Command::List(args) => commands::list::run(args).await,
            Command::Describe(args) => commands::describe::run(args).await,
            Command::Invoke(args) => commands::invoke::run(args).await,
            Command::Logs(args) => commands::logs::run(args).await,
            Command::Remove(args) => commands::remove::run(args).await,
            Command::Secret(args) => commands::secret::run(args).await,
            Command::Dlq(args) => commands::dlq::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("courier: {e:#}");
            ExitCode::FAILURE
        }
    }
}
