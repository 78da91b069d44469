//! The `connector` orchestrator: the Kafka connector inside `courier up` against a bare
//! consume-and-POST loop on the same broker (tansu, or `--kafka-brokers`), same message
//! count, one run each.
//!
//! Each variant drains its own topic, pre-filled with M messages spread over P partitions:
//!
//! - **a bare → upstream**: one rdkafka consumer, one task per partition that POSTs each
//!   message body to the upstream (pooled reqwest client), in order, then stores its offset
//!   (the at-least-once pattern; auto-commit every second);
//! - **b bare → gateway**: the same loop POSTing to `courier up`'s `/function/bench` (what a
//!   connector-sdk style connector outside Courier pays);
//! - **c courier connector**: `courier up --kafka-brokers ... --kafka-topics ...` with the
//!   upstream deployed as the HTTP-mode function `bench` subscribed with `topic`, synchronous
//!   mode, partition ordering (in order per partition, partitions in parallel, like a and b).
//!
//! Rates are counted from the first finished message to the last (start-up and the consumer
//! group join are not measured): for a and b inside the loop, for c from
//! `connector_invocations_total{outcome="success"}` polled every 20 ms.
//!
//! Reproduce:
//!
//! ```text
//! cargo build --release --bin courier --bin courier-bench && target/release/courier-bench connector
//! ```

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};
use bytes::Bytes;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{Value, json};
use tokio::process::Command;
use tokio::sync::{Mutex, mpsc};
use tokio::time::Instant;

use crate::children::{ChildId, Children};
use crate::sync::{FUNCTION, control_client, free_addr, poll, print_log_tail, start_upstream, wait_ok};

/// The connector must reach this fraction of the bare loop's rate.
const TARGET_RATIO: f64 = 0.7;
/// Messages produced before waiting for their delivery reports.
const PRODUCE_CHUNK: usize = 5_000;
/// Messages buffered per partition in the bare loop.
const PARTITION_BUFFER: usize = 256;
/// Longest a variant may take to drain its topic.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, clap::Args)]
pub(crate) struct ConnectorBenchArgs {
    /// Messages per variant.
    #[arg(long, default_value_t = 20_000)]
    messages: usize,
    /// Partitions of each topic.
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Message body size in bytes.
    #[arg(long, default_value_t = 128)]
    body_size: usize,
    /// Use these Kafka brokers instead of starting tansu.
    #[arg(long)]
    kafka_brokers: Option<String>,
    /// The tansu binary (default: $COURIER_TANSU, ~/.cargo/bin/tansu, then PATH).
    #[arg(long)]
    tansu: Option<PathBuf>,
    /// The courier binary (default: next to courier-bench).
    #[arg(long)]
    courier: Option<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    out: Option<PathBuf>,
}

struct Env {
    exe: PathBuf,
    courier: PathBuf,
    brokers: String,
    upstream: SocketAddr,
    http: reqwest::Client,
    body: Bytes,
    messages: usize,
    partitions: i32,
    dir: tempfile::TempDir,
}

pub(crate) async fn run(args: ConnectorBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.messages > 1, "--messages must be at least 2");
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
    let http = control_client()?;
    let mut children = Children::default();
    let result = async {
        let brokers = match &args.kafka_brokers {
            Some(b) => b.clone(),
            None => start_tansu(&mut children, args.tansu.as_deref()).await?,
        };
        let upstream = start_upstream(&http, &mut children, &exe).await?;
        let env = Env {
            exe,
            courier,
            brokers,
            upstream,
            http,
            body: Bytes::from(vec![b'x'; args.body_size]),
            messages: args.messages,
            partitions: args.partitions,
            dir: tempfile::Builder::new()
                .prefix("courier-bench-connector-")
                .tempdir()?,
        };
        run_variants(&env, &args).await
    }
    .await;
    children.shutdown().await;
    result
}

async fn run_variants(env: &Env, args: &ConnectorBenchArgs) -> anyhow::Result<()> {
    let suffix = std::process::id();
    let direct_topic = format!("bench-direct-{suffix}");
    let gateway_topic = format!("bench-gateway-{suffix}");
    let courier_topic = format!("bench-courier-{suffix}");
    for topic in [&direct_topic, &gateway_topic, &courier_topic] {
        create_topic(&env.brokers, topic, env.partitions).await?;
    }

    println!(
        "connector bench: {} messages of {} bytes, {} partitions, brokers {}",
        env.messages,
        env.body.len(),
        env.partitions,
        env.brokers
    );
    prefill(env, &direct_topic).await?;
    let direct_url = format!("http://{}/", env.upstream);
    let a = bare_loop(env, &direct_topic, &direct_url).await?;
    println!("a bare -> upstream   {:>9.0} msg/s ({:.2} s)", a.rate(), a.seconds);

    // Courier with the function deployed and subscribed, without the connector yet.
    let data_dir = env.dir.path().join("courier-data");
    let mut courier = start_courier(env, &data_dir, None, "courier-1").await?;
    deploy(env, &mut courier, &courier_topic).await?;
    prefill(env, &gateway_topic).await?;
    let gateway_url = format!("{}/function/{FUNCTION}", courier.base);
    let b = bare_loop(env, &gateway_topic, &gateway_url).await;
    courier.children.shutdown().await;
    let b = b?;
    println!("b bare -> gateway    {:>9.0} msg/s ({:.2} s)", b.rate(), b.seconds);

    // The connector consumes a pre-filled topic from its first poll.
    prefill(env, &courier_topic).await?;
    let mut courier = start_courier(env, &data_dir, Some(&courier_topic), "courier-2").await?;
    let c = measure_connector(env, &mut courier).await;
    if c.is_err() {
        print_log_tail(&courier.log);
    }
    courier.children.shutdown().await;
    let c = c?;
    println!("c courier connector  {:>9.0} msg/s ({:.2} s)", c.rate(), c.seconds);

    let vs_direct = c.rate() / a.rate();
    let vs_gateway = c.rate() / b.rate();
    println!();
    println!("| variant | messages/s | seconds |");
    println!("|---|---:|---:|");
    for (name, r) in [
        ("a bare loop -> upstream", &a),
        ("b bare loop -> gateway", &b),
        ("c courier kafka connector", &c),
    ] {
        println!("| {name} | {:.0} | {:.2} |", r.rate(), r.seconds);
    }
    println!();
    println!("| comparison | value | target |");
    println!("|---|---:|---|");
    println!(
        "| **connector / bare loop to upstream** | **{vs_direct:.2}x** | >= {TARGET_RATIO:.2}x: {} |",
        if vs_direct >= TARGET_RATIO { "met" } else { "not met" }
    );
    println!("| connector / bare loop through the gateway | {vs_gateway:.2}x | |");
    if let Some(out) = &args.out {
        let report = json!({
            "config": {
                "messages": env.messages,
                "partitions": env.partitions,
                "body_size": env.body.len(),
                "brokers": env.brokers,
            },
            "bare_to_upstream": a.json(),
            "bare_to_gateway": b.json(),
            "courier_connector": c.json(),
            "ratio_vs_upstream": vs_direct,
            "ratio_vs_gateway": vs_gateway,
            "target": TARGET_RATIO,
        });
        std::fs::write(out, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(())
}

/// A drained topic: messages counted and how long they took.
struct Drained {
    messages: usize,
    seconds: f64,
}

impl Drained {
    fn rate(&self) -> f64 {
        self.messages as f64 / self.seconds.max(f64::EPSILON)
    }

    fn json(&self) -> Value {
        json!({ "messages": self.messages, "seconds": self.seconds, "rate": self.rate() })
    }
}

async fn start_tansu(children: &mut Children, binary: Option<&Path>) -> anyhow::Result<String> {
    let binary = match binary {
        Some(b) => b.to_owned(),
        None => find_tansu().ok_or_else(|| {
            anyhow!(
                "no tansu found: `cargo install tansu --locked --features dynostore`, \
                 set COURIER_TANSU, pass --tansu, or pass --kafka-brokers"
            )
        })?,
    };
    let addr = free_addr()?;
    let url = format!("tcp://{addr}");
    let id = children.spawn(
        "tansu",
        Command::new(&binary)
            .arg("broker")
            .args(["--storage-engine", "memory://tansu/"])
            .args(["--listener-url", &url, "--advertised-listener-url", &url])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null()),
    )?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        children.ensure_running(id)?;
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok(addr.to_string());
        }
        if Instant::now() >= deadline {
            bail!("tansu did not accept connections within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn find_tansu() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("COURIER_TANSU") {
        return Some(PathBuf::from(path));
    }
    let home_bin = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .map(|c| c.join("bin"));
    let path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    home_bin
        .into_iter()
        .chain(path)
        .map(|d| d.join("tansu"))
        .find(|p| p.is_file())
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    let new = NewTopic::new(topic, partitions, TopicReplication::Fixed(1));
    for result in admin
        .create_topics([&new], &AdminOptions::new())
        .await
        .context("creating a topic")?
    {
        result.map_err(|(t, e)| anyhow!("creating topic {t}: {e}"))?;
    }
    Ok(())
}

/// Produces the variant's M messages, round-robin over the partitions.
async fn prefill(env: &Env, topic: &str) -> anyhow::Result<()> {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("linger.ms", "5")
        .set("queue.buffering.max.messages", "100000")
        // One record per batch: tansu 0.6 returns nothing to a fetch that starts inside a
        // batch, which the connector's pause/resume flow control (and any restart) can do.
        .set("batch.num.messages", "1")
        .set("message.timeout.ms", "30000")
        .create()?;
    let started = Instant::now();
    let mut sent = 0;
    while sent < env.messages {
        let chunk = (env.messages - sent).min(PRODUCE_CHUNK);
        let mut pending = Vec::with_capacity(chunk);
        for i in sent..sent + chunk {
            let record = FutureRecord::<(), _>::to(topic)
                .partition(i as i32 % env.partitions)
                .payload(env.body.as_ref());
            // Enqueued now (a plain `send` only enqueues when awaited), so batches form.
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))?;
            pending.push(delivery);
        }
        for delivery in pending {
            delivery
                .await
                .map_err(|_| anyhow!("producing to {topic}: delivery report lost"))?
                .map_err(|(e, _)| anyhow!("producing to {topic}: {e}"))?;
        }
        sent += chunk;
    }
    eprintln!(
        "  pre-filled {topic} with {} messages in {:.1} s",
        env.messages,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The baseline: consume every message of `topic`, POST its body to `url` in order per
/// partition (partitions in parallel), store its offset.
async fn bare_loop(env: &Env, topic: &str, url: &str) -> anyhow::Result<Drained> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &env.brokers)
        .set("group.id", format!("bench-bare-{topic}"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "true")
        .set("enable.auto.offset.store", "false")
        .set("auto.commit.interval.ms", "1000")
        .create()?;
    consumer.subscribe(&[topic])?;
    let consumer = Arc::new(consumer);
    let client = reqwest::Client::builder().no_proxy().build()?;
    let done = Arc::new(AtomicUsize::new(0));
    let first_done: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (finished_tx, mut finished_rx) = mpsc::channel::<Instant>(1);
    let mut partitions: HashMap<i32, mpsc::Sender<(i64, Bytes)>> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let total = env.messages;
    let drain = async {
        loop {
            tokio::select! {
                finished = finished_rx.recv() => return finished.ok_or_else(|| anyhow!("bare loop workers ended")),
                received = consumer.recv() => {
                    let m = received.context("consuming")?;
                    let partition = m.partition();
                    let item = (m.offset(), Bytes::copy_from_slice(m.payload().unwrap_or_default()));
                    drop(m);
                    let tx = partitions.entry(partition).or_insert_with(|| {
                        let (tx, mut rx) = mpsc::channel::<(i64, Bytes)>(PARTITION_BUFFER);
                        let (consumer, client, url, topic) = (consumer.clone(), client.clone(), url.to_owned(), topic.to_owned());
                        let (done, first_done, finished_tx) = (done.clone(), first_done.clone(), finished_tx.clone());
                        tasks.spawn(async move {
                            while let Some((offset, body)) = rx.recv().await {
                                let ok = client
                                    .post(&url)
                                    .body(body)
                                    .send()
                                    .await
                                    .is_ok_and(|r| r.status().is_success());
                                if !ok {
                                    eprintln!("  bare loop: POST {url} failed");
                                }
                                let _ = consumer.store_offset(&topic, partition, offset);
                                let now = Instant::now();
                                first_done.lock().await.get_or_insert(now);
                                if done.fetch_add(1, Ordering::SeqCst) + 1 == total {
                                    let _ = finished_tx.send(now).await;
                                }
                            }
                        });
                        tx
                    });
                    tx.send(item).await.map_err(|_| anyhow!("partition worker ended"))?;
                }
            }
        }
    };
    let last = tokio::time::timeout(DRAIN_TIMEOUT, drain)
        .await
        .map_err(|_| anyhow!("the bare loop did not drain {topic} within {DRAIN_TIMEOUT:?}"))??;
    tasks.abort_all();
    let first = first_done
        .lock()
        .await
        .ok_or_else(|| anyhow!("no message finished"))?;
    Ok(Drained {
        messages: total - 1,
        seconds: (last - first).as_secs_f64(),
    })
}

/// A running `courier up`.
struct Courier {
    children: Children,
    id: ChildId,
    base: String,
    log: PathBuf,
}

/// Starts `courier up` on `data_dir`, with the Kafka connector on `topic` when given.
async fn start_courier(
    env: &Env,
    data_dir: &Path,
    topic: Option<&str>,
    log_name: &str,
) -> anyhow::Result<Courier> {
    let addr = free_addr()?;
    std::fs::create_dir_all(data_dir)?;
    let log_path = env.dir.path().join(format!("{log_name}.log"));
    let log = std::fs::File::create(&log_path)?;
    let mut command = Command::new(&env.courier);
    command
        .args(["up", "--listen", &addr.to_string(), "--data-dir"])
        .arg(data_dir)
        .args(["--no-auth", "--sandbox", "off", "--no-scheduler"])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    if let Some(topic) = topic {
        command
            .args(["--kafka-brokers", &env.brokers, "--kafka-topics", topic])
            .args(["--kafka-group", &format!("bench-courier-{topic}")]);
    }
    let mut children = Children::default();
    let id = children.spawn("courier", &mut command)?;
    let mut courier = Courier {
        children,
        id,
        base: format!("http://{addr}"),
        log: log_path,
    };
    if let Err(e) = wait_ok(
        &env.http,
        &mut courier.children,
        id,
        &format!("{}/healthz", courier.base),
    )
    .await
    {
        print_log_tail(&courier.log);
        courier.children.shutdown().await;
        return Err(e);
    }
    Ok(courier)
}

/// Deploys the upstream as the HTTP-mode function `bench`, subscribed to `topic`.
async fn deploy(env: &Env, courier: &mut Courier, topic: &str) -> anyhow::Result<()> {
    let spec = json!({
        "service": FUNCTION,
        "image": "bench:latest",
        "envProcess": format!("{} upstream", env.exe.display()),
        "envVars": { "mode": "http" },
        "annotations": { "topic": topic },
    });
    let response = env
        .http
        .post(format!("{}/system/functions", courier.base))
        .json(&spec)
        .send()
        .await
        .context("deploying the bench function")?;
    if !response.status().is_success() {
        bail!(
            "deploying the bench function: {}: {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
    }
    let url = format!("{}/function/{FUNCTION}", courier.base);
    let body = env.body.clone();
    poll(
        "a 2xx from the bench function",
        &mut courier.children,
        courier.id,
        || {
            let request = env.http.post(&url).body(body.clone());
            async move { request.send().await.is_ok_and(|r| r.status().is_success()) }
        },
    )
    .await
}

/// Polls Courier's success counter until it reaches M; rate from its first move.
async fn measure_connector(env: &Env, courier: &mut Courier) -> anyhow::Result<Drained> {
    let url = format!("{}/metrics", courier.base);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut first: Option<(Instant, usize)> = None;
    loop {
        courier.children.ensure_running(courier.id)?;
        let text = env.http.get(&url).send().await?.text().await?;
        let now = Instant::now();
        let done = successes(&text);
        if done > 0 && first.is_none() {
            first = Some((now, done));
        }
        if done >= env.messages {
            let (start, at_start) = first.unwrap_or((now, done));
            return Ok(Drained {
                messages: env.messages - at_start,
                seconds: (now - start).as_secs_f64(),
            });
        }
        if now >= deadline {
            bail!(
                "the connector finished {done} of {} messages within {DRAIN_TIMEOUT:?}",
                env.messages
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `connector_invocations_total{connector="kafka",outcome="success"}` summed.
fn successes(metrics: &str) -> usize {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("connector_invocations_total{")
                && l.contains(r#"connector="kafka""#)
                && l.contains(r#"outcome="success""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}
