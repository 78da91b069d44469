//! The `courier` binary: `courier up` runs the whole fabric in one process; every other
//! command is an HTTP client of a running gateway (`--gateway`, `COURIER_GATEWAY`).
//!
//! Invariant: client commands only speak the gateway's HTTP API; only `up` links a provider.

mod client;
mod commands;
mod component;
mod ledger_args;
mod password;
mod queue_args;
mod queue_worker;
mod runtime;
mod stack;
mod telemetry_args;
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
    /// Follow queued calls in the invocation ledger: list, show, wait for, read the result
    /// of, or cancel them.
    Calls(commands::calls::CallsArgs),
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
            Command::Calls(args) => commands::calls::run(args).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("courier: {e:#}");
            // A wait that ended without success has its own status (1 unsuccessful, 2 timeout).
            e.downcast_ref::<commands::calls::WaitEnded>()
                .map_or(ExitCode::FAILURE, |ended| ExitCode::from(ended.exit_code()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::*;

    /// Every process that opens the queue, with what else it needs to parse.
    const QUEUE_PROCESSES: [&[&str]; 6] = [
        &["up"],
        &["gateway"],
        &["queue-worker", "--queue", "file:///tmp/queue.redb"],
        &["scheduler", "--queue", "nats://127.0.0.1:4222"],
        &["connector", "kafka", "--queue", "nats://127.0.0.1:4222"],
        &["connector", "amqp", "--queue", "nats://127.0.0.1:4222"],
    ];

    fn argv<'a>(process: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        std::iter::once("courier")
            .chain(process.iter().copied())
            .chain(extra.iter().copied())
            .collect()
    }

    /// The matches of the innermost subcommand (`connector kafka` → `kafka`'s).
    fn innermost(matches: &clap::ArgMatches) -> &clap::ArgMatches {
        match matches.subcommand() {
            Some((_, sub)) => innermost(sub),
            None => matches,
        }
    }

    #[test]
    fn every_process_that_opens_the_queue_takes_the_ledger_flags() {
        for process in QUEUE_PROCESSES {
            let matches = Cli::command()
                .try_get_matches_from(argv(
                    process,
                    &[
                        "--ledger-retention",
                        "2h",
                        "--ledger-max-records",
                        "10",
                        "--ledger-max-result-bytes",
                        "1024",
                    ],
                ))
                .unwrap_or_else(|e| panic!("{process:?}: {e}"));
            let args = innermost(&matches);
            assert_eq!(
                args.get_one::<Duration>("ledger_retention"),
                Some(&Duration::from_secs(7200)),
                "{process:?}"
            );
            assert_eq!(
                args.get_one::<u64>("ledger_max_records"),
                Some(&10),
                "{process:?}"
            );
            assert_eq!(
                args.get_one::<usize>("ledger_max_result_bytes"),
                Some(&1024),
                "{process:?}"
            );
        }
    }

    #[test]
    fn every_process_refuses_a_bad_ledger_value_naming_the_flag() {
        for process in QUEUE_PROCESSES {
            for bad in [
                ["--ledger-retention", "tomorrow"],
                ["--ledger-max-records", "0"],
                ["--ledger-max-result-bytes", "1MiB"],
            ] {
                let e = Cli::try_parse_from(argv(process, &bad))
                    .expect_err(&format!("{process:?} {bad:?} accepted"));
                assert!(e.to_string().contains(bad[0]), "{process:?}: {e}");
            }
        }
    }

    #[test]
    fn every_process_reads_the_ledger_environment_variables() {
        let root = Cli::command();
        for process in QUEUE_PROCESSES {
            let mut command = &root;
            for name in process.iter().take_while(|a| !a.starts_with('-')) {
                command = command
                    .find_subcommand(name)
                    .unwrap_or_else(|| panic!("no subcommand {name}"));
            }
            for (id, var) in [
                ("ledger_retention", "COURIER_LEDGER_RETENTION"),
                ("ledger_max_records", "COURIER_LEDGER_MAX_RECORDS"),
                ("ledger_max_result_bytes", "COURIER_LEDGER_MAX_RESULT_BYTES"),
            ] {
                let env = command
                    .get_arguments()
                    .find(|a| a.get_id() == id)
                    .and_then(|a| a.get_env());
                assert_eq!(env.and_then(|e| e.to_str()), Some(var), "{process:?} {id}");
            }
        }
    }

    #[test]
    fn every_process_that_opens_the_queue_takes_queue_replicas_and_its_variable() {
        let root = Cli::command();
        for process in QUEUE_PROCESSES {
            let matches = Cli::command()
                .try_get_matches_from(argv(process, &["--queue-replicas", "3"]))
                .unwrap_or_else(|e| panic!("{process:?}: {e}"));
            assert_eq!(
                innermost(&matches).get_one::<u8>("queue_replicas"),
                Some(&3),
                "{process:?}"
            );
            let defaults = Cli::command()
                .try_get_matches_from(argv(process, &[]))
                .unwrap_or_else(|e| panic!("{process:?}: {e}"));
            assert_eq!(
                innermost(&defaults).get_one::<u8>("queue_replicas"),
                Some(&1),
                "{process:?}"
            );
            let mut command = &root;
            for name in process.iter().take_while(|a| !a.starts_with('-')) {
                command = command
                    .find_subcommand(name)
                    .unwrap_or_else(|| panic!("no subcommand {name}"));
            }
            let env = command
                .get_arguments()
                .find(|a| a.get_id() == "queue_replicas")
                .and_then(|a| a.get_env());
            assert_eq!(
                env.and_then(|e| e.to_str()),
                Some("COURIER_QUEUE_REPLICAS"),
                "{process:?}"
            );
        }
    }

    #[test]
    fn up_and_gateway_take_the_autoscaler_flags_and_their_environment_variables() {
        for process in [&["up"][..], &["gateway"]] {
            let matches = Cli::command()
                .try_get_matches_from(argv(
                    process,
                    &[
                        "--autoscale-interval",
                        "250ms",
                        "--autoscale-down-delay",
                        "5s",
                        "--no-autoscale",
                    ],
                ))
                .unwrap_or_else(|e| panic!("{process:?}: {e}"));
            let args = innermost(&matches);
            assert_eq!(
                args.get_one::<Duration>("autoscale_interval"),
                Some(&Duration::from_millis(250))
            );
            assert_eq!(
                args.get_one::<Duration>("autoscale_down_delay"),
                Some(&Duration::from_secs(5))
            );
            assert_eq!(args.get_one::<bool>("no_autoscale"), Some(&true));

            let defaults = Cli::command()
                .try_get_matches_from(argv(process, &[]))
                .unwrap_or_else(|e| panic!("{process:?}: {e}"));
            let args = innermost(&defaults);
            assert_eq!(
                args.get_one::<Duration>("autoscale_interval"),
                Some(&Duration::from_secs(1))
            );
            assert_eq!(
                args.get_one::<Duration>("autoscale_down_delay"),
                Some(&Duration::from_secs(60))
            );

            let command = Cli::command();
            let command = command
                .find_subcommand(process[0])
                .unwrap_or_else(|| panic!("no subcommand {process:?}"));
            for (id, var) in [
                ("autoscale_interval", "COURIER_AUTOSCALE_INTERVAL"),
                ("autoscale_down_delay", "COURIER_AUTOSCALE_DOWN_DELAY"),
                ("no_autoscale", "COURIER_NO_AUTOSCALE"),
            ] {
                let env = command
                    .get_arguments()
                    .find(|a| a.get_id() == id)
                    .and_then(|a| a.get_env());
                assert_eq!(env.and_then(|e| e.to_str()), Some(var), "{process:?} {id}");
            }

            let e = Cli::try_parse_from(argv(process, &["--autoscale-interval", "0s"]))
                .expect_err("a zero interval is refused");
            assert!(e.to_string().contains("--autoscale-interval"), "{e}");
        }
    }

    #[test]
    fn the_client_commands_do_not_take_the_server_flags() {
        for command in [
            &["calls", "list"][..],
            &["invoke", "echo"],
            &["dlq", "list"],
        ] {
            assert!(
                Cli::try_parse_from(argv(command, &["--ledger-retention", "1h"])).is_err(),
                "{command:?}"
            );
        }
    }

    #[test]
    fn invoke_wait_needs_async_and_takes_the_timeout() {
        assert!(Cli::try_parse_from(["courier", "invoke", "echo", "--wait"]).is_err());
        assert!(
            Cli::try_parse_from([
                "courier",
                "invoke",
                "echo",
                "--async",
                "--wait",
                "--timeout",
                "5s"
            ])
            .is_ok()
        );
    }

    #[test]
    fn the_calls_command_is_registered_with_its_five_subcommands() {
        let root = Cli::command();
        let calls = root.find_subcommand("calls").expect("courier calls");
        let names: Vec<&str> = calls.get_subcommands().map(|c| c.get_name()).collect();
        assert_eq!(names, ["list", "show", "wait", "result", "cancel"]);
        Cli::command().debug_assert();
    }
}
