//! The `autoscale` benchmark (issue 12): the step load of 8 concurrent callers on a function
//! whose calls take 200 ms, labelled `scale.type=capacity, target=2, max=5`, through one
//! `courier up`, with the autoscaler free to act ("on") and with the function pinned at one
//! replica (`scale.min = scale.max = 1`, which the autoscaler leaves alone), interleaved over
//! several rounds in the same run. Each run deploys a fresh function (at 1 replica) and removes
//! it after. Reported: completed calls/s of each side (median over rounds) and their ratio,
//! and time-to-scale-up (load start until the function's desired replicas reach 3, polled
//! every 50 ms) p50 and p99 over the rounds.
//!
//! Two functions, because the local provider's fork mode runs every call as its own process:
//!
//! - `fork`: the issue's literal function (`sleep 0.2` in fork mode). One replica already runs
//!   all 8 calls at once (up to `max_inflight`, 100), so replicas add no throughput for a
//!   function that only sleeps; the ratio says so.
//! - `serial`: an HTTP-mode function that serves one call at a time (Python's non-threaded
//!   `HTTPServer`, 200 ms per call): a replica's capacity is one call, as for a function pod
//!   bound by its CPU limit, so replicas are what adds throughput.
//!
//! ```text
//! cargo build --bin courier --bin courier-bench && target/debug/courier-bench autoscale
//! ```
//!
//! Flags: `--rounds 5 --duration 10s --callers 8 --function fork,serial --courier PATH`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::time::Instant;

use crate::children::{ChildId, Children};
use crate::report::median;
use crate::sync::{control_client, free_addr, poll, wait_ok};

/// The single-call-at-a-time HTTP function: GET (the readiness probe) at once, any other
/// method after 200 ms.
const SERIAL_FUNCTION: &str = r#"import os, time
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def reply(self):
        body = b"done\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        self.reply()

    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(0.2)
        self.reply()

    def log_message(self, *args):
        pass

class Server(HTTPServer):
    # Every caller's connection waits its turn (the default backlog, 5, refuses some).
    request_queue_size = 64

Server(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"#;

/// Which function the step load runs on.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum FunctionKind {
    /// Fork mode, `sleep 0.2` per call (the issue's function).
    Fork,
    /// HTTP mode, one call at a time per replica, 200 ms each.
    Serial,
}

impl FunctionKind {
    fn name(self) -> &'static str {
        match self {
            Self::Fork => "fork",
            Self::Serial => "serial",
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct AutoscaleArgs {
    /// Concurrent callers, each calling again as soon as answered.
    #[arg(long, default_value_t = 8)]
    callers: usize,
    /// Length of each run (from the first call).
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Rounds; each runs every function autoscaled, then pinned.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// The functions to load, one after the other.
    #[arg(long, value_delimiter = ',', default_value = "fork,serial")]
    function: Vec<FunctionKind>,
    /// The courier binary [default: `courier` next to this executable].
    #[arg(long)]
    courier: Option<PathBuf>,
}

/// One run's figures.
struct Outcome {
    calls_per_second: f64,
    failures: u64,
    /// Load start until desired replicas ≥ 3; `None` if never within the run.
    scaled_after: Option<Duration>,
    peak_replicas: u64,
}

pub(crate) async fn run(args: AutoscaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    let exe = std::env::current_exe().context("locating courier-bench itself")?;
    let courier = args
        .courier
        .clone()
        .unwrap_or_else(|| exe.with_file_name("courier"));
    anyhow::ensure!(
        courier.is_file(),
        "courier binary not found at {}: build it (cargo build --bin courier) or pass --courier",
        courier.display()
    );
    let scratch = tempfile::Builder::new()
        .prefix("courier-bench-autoscale-")
        .tempdir()?;
    let mut children = Children::default();
    let result = tokio::select! {
        result = bench(&args, &courier, scratch.path(), &mut children) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    children.shutdown().await;
    result
}

async fn bench(
    args: &AutoscaleArgs,
    courier: &Path,
    dir: &Path,
    children: &mut Children,
) -> anyhow::Result<()> {
    let http = control_client()?;
    let addr = free_addr()?;
    let data_dir = dir.join("data");
    std::fs::create_dir_all(&data_dir)?;
    let script = dir.join("serial_fn.py");
    std::fs::write(&script, SERIAL_FUNCTION)?;
    let log = std::fs::File::create(dir.join("courier.log"))?;
    let id = children.spawn(
        "courier",
        Command::new(courier)
            .args(["up", "--listen", &addr.to_string(), "--data-dir"])
            .arg(&data_dir)
            .args(["--no-auth", "--sandbox", "off"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    let base = format!("http://{addr}");
    wait_ok(&http, children, id, &format!("{base}/healthz")).await?;
    println!(
        "step load: {} callers for {:?} per run, {} rounds, autoscaler every 1s (default)",
        args.callers, args.duration, args.rounds
    );

    let mut summary = Vec::new();
    for &kind in &args.function {
        let (mut on, mut pinned) = (Vec::new(), Vec::new());
        for round in 1..=args.rounds {
            for autoscaled in [true, false] {
                let name = format!(
                    "{}-{}-{round}",
                    kind.name(),
                    if autoscaled { "on" } else { "pinned" }
                );
                let spec = function_spec(&name, kind, autoscaled, &script);
                deploy(&http, children, id, &base, &spec).await?;
                let outcome = step_load(&base, &name, args).await?;
                remove(&http, &base, &name).await?;
                println!(
                    "{:<6} round {round}/{}  {:<6}  {:>7.1} calls/s  {} failed  peak {} replicas  \
                     >=3 replicas after {}",
                    kind.name(),
                    args.rounds,
                    if autoscaled { "on" } else { "pinned" },
                    outcome.calls_per_second,
                    outcome.failures,
                    outcome.peak_replicas,
                    outcome
                        .scaled_after
                        .map_or_else(|| "never".to_owned(), |d| format!("{d:.2?}")),
                );
                if autoscaled { &mut on } else { &mut pinned }.push(outcome);
            }
        }
        summary.push((kind, on, pinned));
    }

    println!();
    println!(
        "| function | autoscaler on (calls/s) | pinned at 1 (calls/s) | on / pinned | time to ≥3 replicas p50 | p99 | failed calls |"
    );
    println!("|---|---|---|---|---|---|---|");
    for (kind, on, pinned) in summary {
        let on_rps = median(on.iter().map(|o| o.calls_per_second)).unwrap_or_default();
        let pinned_rps = median(pinned.iter().map(|o| o.calls_per_second)).unwrap_or_default();
        let mut scaled: Vec<Duration> = on.iter().filter_map(|o| o.scaled_after).collect();
        scaled.sort();
        let never = on.len() - scaled.len();
        let failures: u64 = on.iter().chain(&pinned).map(|o| o.failures).sum();
        let show = |d: Option<Duration>| d.map_or_else(|| "-".to_owned(), |d| format!("{d:.2?}"));
        println!(
            "| {} | {on_rps:.1} | {pinned_rps:.1} | **{:.2}×** | {} | {}{} | {failures} |",
            kind.name(),
            on_rps / pinned_rps.max(f64::MIN_POSITIVE),
            show(percentile(&scaled, 0.50)),
            show(percentile(&scaled, 0.99)),
            if never > 0 {
                format!(" ({never} runs never reached 3)")
            } else {
                String::new()
            },
        );
    }
    Ok(())
}

/// Nearest-rank percentile of sorted `values`.
fn percentile(values: &[Duration], p: f64) -> Option<Duration> {
    if values.is_empty() {
        return None;
    }
    let rank = ((p * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

fn function_spec(name: &str, kind: FunctionKind, autoscaled: bool, script: &Path) -> Value {
    let labels = if autoscaled {
        json!({
            "com.openfaas.scale.type": "capacity",
            "com.openfaas.scale.target": "2",
            "com.openfaas.scale.max": "5",
        })
    } else {
        json!({ "com.openfaas.scale.min": "1", "com.openfaas.scale.max": "1" })
    };
    match kind {
        FunctionKind::Fork => json!({
            "service": name,
            "image": "bench:latest",
            "envProcess": "sh -c 'cat >/dev/null; sleep 0.2; echo done'",
            "labels": labels,
        }),
        FunctionKind::Serial => json!({
            "service": name,
            "image": "bench:latest",
            "envProcess": format!("python3 {}", script.display()),
            "envVars": { "mode": "http" },
            "labels": labels,
        }),
    }
}

/// Deploys `spec` and waits until it answers a call.
async fn deploy(
    http: &reqwest::Client,
    children: &mut Children,
    id: ChildId,
    base: &str,
    spec: &Value,
) -> anyhow::Result<()> {
    let response = http
        .post(format!("{base}/system/functions"))
        .json(spec)
        .send()
        .await
        .context("deploying the bench function")?;
    if !response.status().is_success() {
        let status = response.status();
        bail!(
            "deploying the bench function: {status}: {}",
            response.text().await.unwrap_or_default()
        );
    }
    let url = format!(
        "{base}/function/{}",
        spec["service"].as_str().unwrap_or_default()
    );
    poll("a 2xx from the bench function", children, id, || {
        let request = http.post(&url).body("x");
        async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
    })
    .await
}

async fn remove(http: &reqwest::Client, base: &str, name: &str) -> anyhow::Result<()> {
    let response = http
        .delete(format!("{base}/system/functions"))
        .json(&json!({ "functionName": name }))
        .send()
        .await?;
    anyhow::ensure!(
        response.status().is_success(),
        "removing {name}: {}",
        response.status()
    );
    Ok(())
}

/// The function's desired replicas, as `/system/function` reports them.
async fn replicas(http: &reqwest::Client, base: &str, name: &str) -> Option<u64> {
    let response = http
        .get(format!("{base}/system/function/{name}"))
        .send()
        .await
        .ok()?;
    let info: Value = response.json().await.ok()?;
    info["replicas"].as_u64()
}

/// Runs the step load on `name` for the run's duration while watching its replicas.
async fn step_load(base: &str, name: &str, args: &AutoscaleArgs) -> anyhow::Result<Outcome> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(args.callers)
        .build()?;
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let url = format!("{base}/function/{name}");
    let started = Instant::now();
    let callers: Vec<_> = (0..args.callers)
        .map(|_| {
            let (client, url, stop) = (client.clone(), url.clone(), stop.clone());
            let (ok, failed) = (ok.clone(), failed.clone());
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let answered = client.post(&url).body("x").send().await;
                    let good = answered.is_ok_and(|r| r.status().is_success());
                    // Only calls finished within the run count.
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    if good { &ok } else { &failed }.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();

    let control = control_client()?;
    let mut scaled_after = None;
    let mut peak = 0;
    while started.elapsed() < args.duration {
        if let Some(n) = replicas(&control, base, name).await {
            peak = peak.max(n);
            if n >= 3 && scaled_after.is_none() {
                scaled_after = Some(started.elapsed());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed();
    for caller in callers {
        caller.await?;
    }
    Ok(Outcome {
        calls_per_second: ok.load(Ordering::Relaxed) as f64 / elapsed.as_secs_f64(),
        failures: failed.load(Ordering::Relaxed),
        scaled_after,
        peak_replicas: peak,
    })
}
