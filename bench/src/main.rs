//! `courier-bench`: benchmarks that run Courier next to its baselines, in one
//! process tree and one run, and report ratios rather than absolute numbers.
//!
//! # Synchronous path
//!
//! Reproduce (from the workspace root):
//!
//! ```text
//! cargo build --release --bin courier --bin courier-bench && target/release/courier-bench sync
//! ```
//!
//! `sync` starts three variants of the same request path and drives each with
//! the same closed-loop load generator (N keep-alive HTTP/1.1 connections,
//! 128-byte POSTs), interleaved over several rounds (a, b, c, a, b, c, ...):
//!
//! - **a `direct`**: straight to the upstream: a fast hyper server (`courier-bench
//!   upstream`) and, in a second set of rounds, nginx answering `200 ok` (`courier-bench
//!   nginx`; `--upstream hyper|nginx` picks one);
//! - **b `proxy`**: through the leanest pooled hyper reverse proxy
//!   (`courier-bench proxy`, a copy of `shared/bench/bare-proxy`), the practical limit for
//!   any proxy;
//! - **c `courier`**: through `courier up` to the same upstream deployed as an
//!   HTTP-mode function.
//!
//! It prints one line per run, then a markdown table of medians over rounds
//! and the ratios the target is stated in (Courier ≥ 0.8× the proxy's
//! throughput, < 0.5 ms added p50 versus direct). Useful flags:
//! `--connections 32 --duration 10s --rounds 3 --out sync.json`,
//! `--skip-courier` (a and b only), `--courier PATH`.
//!
//! # Asynchronous path
//!
//! ```text
//! cargo build --release --bin courier --bin courier-bench && target/release/courier-bench async
//! ```
//!
//! `async` measures, per queue backend (`--backend embedded|jetstream|both`),
//! accepted calls/s at `/async-function/bench` against a minimal
//! store-then-202 handler on the same backend, and completed calls/s through
//! the queue worker against a bare fetch-POST-ack loop on the same backend
//! (see `async_path.rs`). Flags: `--connections 32 --duration 10s --rounds 3
//! --body-size 1024 --calls 20000 --out async.json`.
//!
//! `cluster` runs the asynchronous path on a three-node JetStream cluster with
//! `--queue-replicas 3`, two gateways + two queue workers against one of each (see
//! `cluster.rs`).

mod async_path;
mod autoscale;
mod children;
mod cluster;
mod connector;
mod load;
mod nginx;
mod proxy;
mod report;
mod schedule;
mod server;
mod sync;
mod upstream;

use std::net::SocketAddr;

use clap::{Parser, Subcommand};

/// The courier binary's allocator (see its `main.rs` and BENCHMARKS.md, "Allocator").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "courier-bench",
    version,
    about = "Benchmarks of Courier against baselines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// A fast HTTP/1.1 upstream on 127.0.0.1: 200 and a small fixed body to any request.
    Upstream {
        /// Port to listen on (OpenFaaS-style runtimes pass it in PORT).
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
    },
    /// nginx in the foreground on 127.0.0.1:PORT answering `200 ok` to anything (the issue's
    /// upstream); its config and logs go to --dir.
    Nginx {
        /// Port to listen on (OpenFaaS-style runtimes pass it in PORT).
        #[arg(long, env = "PORT", default_value_t = 8080)]
        port: u16,
        /// Where the config, pid file and error log are written.
        #[arg(long)]
        dir: std::path::PathBuf,
    },
    /// The baseline: the leanest pooled hyper reverse proxy (a copy of shared/bench/bare-proxy).
    Proxy {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Upstream address (host:port) to forward to.
        #[arg(long)]
        upstream: SocketAddr,
    },
    /// Benchmark the synchronous path: direct vs minimal proxy vs Courier.
    Sync(sync::SyncArgs),
    /// Benchmark the asynchronous path: accepts and completions against
    /// baselines on the same queue backend (embedded and/or JetStream).
    Async(async_path::AsyncArgs),
    /// Benchmark the asynchronous path on a 3-node JetStream cluster (--queue-replicas 3):
    /// two gateways + two queue workers against one of each.
    Cluster(cluster::ClusterArgs),
    /// Benchmark the Kafka connector: messages/s from a pre-filled topic through
    /// `courier up` against a bare consume-and-POST loop on the same broker.
    Connector(connector::ConnectorBenchArgs),
    /// Benchmark the scheduler's timer loop: lateness, CPU and memory with many schedules,
    /// against one bare timer.
    Schedule(schedule::ScheduleArgs),
    /// Benchmark the autoscaler (issue 12's step load): throughput with it on vs the function
    /// pinned at one replica, and time to scale up.
    Autoscale(autoscale::AutoscaleArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Upstream { port } => multi_thread(None)?.block_on(upstream::run(port)),
        Command::Nginx { port, dir } => nginx::exec(port, &dir),
        Command::Proxy { listen, upstream } => {
            multi_thread(None)?.block_on(proxy::run(listen, upstream))
        }
        Command::Sync(args) => {
            // The load generator gets its own runtime so that orchestration
            // (child processes, polling) never shares its worker threads.
            let load = multi_thread(args.load_threads)?;
            let control = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = control.block_on(sync::run(args, load.handle().clone()));
            load.shutdown_background();
            result
        }
        Command::Schedule(args) => multi_thread(None)?.block_on(schedule::run(args)),
        Command::Autoscale(args) => multi_thread(None)?.block_on(autoscale::run(args)),
        Command::Connector(args) => multi_thread(None)?.block_on(connector::run(args)),
        Command::Cluster(args) => {
            let load = multi_thread(args.load_threads)?;
            let control = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = control.block_on(cluster::run(args, load.handle().clone()));
            load.shutdown_background();
            result
        }
        Command::Async(args) => {
            let load = multi_thread(args.load_threads)?;
            let control = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let result = control.block_on(async_path::run(args, load.handle().clone()));
            load.shutdown_background();
            result
        }
    }
}

fn multi_thread(workers: Option<usize>) -> std::io::Result<tokio::runtime::Runtime> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(workers) = workers {
        builder.worker_threads(workers);
    }
    builder.enable_all().build()
}
