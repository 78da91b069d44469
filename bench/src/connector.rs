//! The `connector` orchestrator: the connectors inside `courier up` against a bare
//! consume-and-POST loop on the same broker, same message count, one run each. Kafka runs on
//! tansu (or `--kafka-brokers`), AMQP on RabbitMQ (`--amqp-url`); `--source kafka|amqp|both`.
//!
//! Kafka: each variant drains its own topic, pre-filled with M messages over P partitions:
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
//! AMQP: each variant drains its own queue, pre-filled with M persistent messages:
//!
//! - **d bare → upstream**: one lapin consumer with prefetch Q (32), each delivery POSTed to
//!   the upstream in its own task, acked after the answer;
//! - **e courier connector**: `courier up --amqp-url ... --amqp-queues ... --amqp-prefetch Q`.
//!
//! Rates are counted from the first finished message to the last (start-up and the consumer
//! group join are not measured): for the bare loops inside the loop, for Courier from
//! `connector_invocations_total{connector,outcome="success"}` polled every 20 ms.
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
use crate::sync::{
    FUNCTION, control_client, free_addr, poll, print_log_tail, start_upstream, wait_ok,
};

/// The connector must reach this fraction of the bare loop's rate.
const TARGET_RATIO: f64 = 0.7;
/// Messages produced before waiting for their delivery reports.
const PRODUCE_CHUNK: usize = 5_000;
/// Messages buffered per partition in the bare loop.
const PARTITION_BUFFER: usize = 256;
/// Longest a variant may take to drain its topic.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Source {
    Kafka,
    Amqp,
    Both,
}

#[derive(Debug, clap::Args)]
pub(crate) struct ConnectorBenchArgs {
    /// Which connector to measure.
    #[arg(long, value_enum, default_value = "both")]
    source: Source,
    /// The RabbitMQ broker (AMQP).
    #[arg(
        long,
        env = "COURIER_TEST_AMQP_URL",
        default_value = "amqp://guest:guest@127.0.0.1:5672/%2f"
    )]
    amqp_url: String,
    /// AMQP prefetch of both the bare loop and the connector.
    #[arg(long, default_value_t = 32)]
    amqp_prefetch: u16,
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
        let brokers = match (&args.kafka_brokers, args.source) {
            (_, Source::Amqp) => String::new(),
            (Some(b), _) => b.clone(),
            (None, _) => start_tansu(&mut children, args.tansu.as_deref()).await?,
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
    let kafka = matches!(args.source, Source::Kafka | Source::Both);
    let amqp = matches!(args.source, Source::Amqp | Source::Both);
    let suffix = std::process::id();
    let direct_topic = format!("bench-direct-{suffix}");
    let gateway_topic = format!("bench-gateway-{suffix}");
    let courier_topic = format!("bench-courier-{suffix}");
    let direct_queue = format!("bench-direct-{suffix}");
    let courier_queue = format!("bench-courier-{suffix}");
    let direct_url = format!("http://{}/", env.upstream);
    println!(
        "connector bench: {} messages of {} bytes; Kafka {} partitions on {}; AMQP prefetch {}",
        env.messages,
        env.body.len(),
        env.partitions,
        if kafka { env.brokers.as_str() } else { "-" },
        args.amqp_prefetch,
    );

    let mut rows: Vec<(&str, Drained)> = Vec::new();
    if kafka {
        for topic in [&direct_topic, &gateway_topic, &courier_topic] {
            create_topic(&env.brokers, topic, env.partitions).await?;
        }
        prefill(env, &direct_topic).await?;
        let a = bare_loop(env, &direct_topic, &direct_url).await?;
        println!(
            "a kafka bare -> upstream    {:>9.0} msg/s ({:.2} s)",
            a.rate(),
            a.seconds
        );
        rows.push(("a kafka: bare loop -> upstream", a));
    }
    let amqp_channel = if amqp {
        let (connection, channel) = amqp_connect(&args.amqp_url).await?;
        prefill_queue(env, &channel, &direct_queue).await?;
        let d = bare_amqp_loop(
            env,
            &channel,
            &direct_queue,
            &direct_url,
            args.amqp_prefetch,
        )
        .await?;
        println!(
            "d amqp bare -> upstream     {:>9.0} msg/s ({:.2} s)",
            d.rate(),
            d.seconds
        );
        rows.push(("d amqp: bare loop -> upstream", d));
        Some((connection, channel))
    } else {
        None
    };

    // Courier with the function deployed and subscribed, without connectors yet.
    let data_dir = env.dir.path().join("courier-data");
    let mut courier = start_courier(env, &data_dir, &[], "courier-1").await?;
    deploy(
        env,
        &mut courier,
        &format!("{courier_topic},{courier_queue}"),
    )
    .await?;
    if kafka {
        prefill(env, &gateway_topic).await?;
        let gateway_url = format!("{}/function/{FUNCTION}", courier.base);
        let b = bare_loop(env, &gateway_topic, &gateway_url).await;
        courier.children.shutdown().await;
        let b = b?;
        println!(
            "b kafka bare -> gateway     {:>9.0} msg/s ({:.2} s)",
            b.rate(),
            b.seconds
        );
        rows.push(("b kafka: bare loop -> gateway", b));
    } else {
        courier.children.shutdown().await;
    }

    if kafka {
        // The connector consumes a pre-filled topic from its first poll.
        prefill(env, &courier_topic).await?;
        let group = format!("bench-courier-{courier_topic}");
        let flags = [
            "--kafka-brokers",
            env.brokers.as_str(),
            "--kafka-topics",
            courier_topic.as_str(),
            "--kafka-group",
            group.as_str(),
        ];
        let c = measure_connector(env, &data_dir, &flags, "kafka", "courier-kafka").await?;
        println!(
            "c kafka courier connector   {:>9.0} msg/s ({:.2} s)",
            c.rate(),
            c.seconds
        );
        rows.push(("c kafka: courier connector", c));
    }
    if let Some((_, channel)) = &amqp_channel {
        prefill_queue(env, channel, &courier_queue).await?;
        let prefetch = args.amqp_prefetch.to_string();
        let flags = [
            "--amqp-url",
            args.amqp_url.as_str(),
            "--amqp-queues",
            courier_queue.as_str(),
            "--amqp-prefetch",
            prefetch.as_str(),
        ];
        let e = measure_connector(env, &data_dir, &flags, "amqp", "courier-amqp").await?;
        println!(
            "e amqp courier connector    {:>9.0} msg/s ({:.2} s)",
            e.rate(),
            e.seconds
        );
        rows.push(("e amqp: courier connector", e));
        for q in [&direct_queue, &courier_queue] {
            let _ = channel
                .queue_delete(
                    q.as_str().into(),
                    lapin::options::QueueDeleteOptions::default(),
                )
                .await;
        }
    }

    println!();
    println!("| variant | messages/s | seconds |");
    println!("|---|---:|---:|");
    for (name, r) in &rows {
        println!("| {name} | {:.0} | {:.2} |", r.rate(), r.seconds);
    }
    let rate = |prefix: &str| {
        rows.iter()
            .find(|(n, _)| n.starts_with(prefix))
            .map(|(_, r)| r.rate())
    };
    let mut ratios = serde_json::Map::new();
    println!();
    println!("| comparison | value | target |");
    println!("|---|---:|---|");
    for (name, num, den, target) in [
        ("kafka connector / bare loop to upstream", "c ", "a ", true),
        (
            "kafka connector / bare loop through the gateway",
            "c ",
            "b ",
            false,
        ),
        ("amqp connector / bare loop to upstream", "e ", "d ", true),
    ] {
        let (Some(n), Some(d)) = (rate(num), rate(den)) else {
            continue;
        };
        let ratio = n / d;
        let verdict = if !target {
            String::new()
        } else if ratio >= TARGET_RATIO {
            format!(">= {TARGET_RATIO:.2}x: met")
        } else {
            format!(">= {TARGET_RATIO:.2}x: not met")
        };
        println!("| {name} | {ratio:.2}x | {verdict} |");
        ratios.insert(name.to_owned(), json!(ratio));
    }
    if let Some(out) = &args.out {
        let report = json!({
            "config": {
                "messages": env.messages,
                "partitions": env.partitions,
                "body_size": env.body.len(),
                "amqp_prefetch": args.amqp_prefetch,
            },
            "variants": rows.iter().map(|(n, r)| (n.to_string(), r.json())).collect::<serde_json::Map<_, _>>(),
            "ratios": ratios,
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

/// Starts `courier up` on `data_dir` with extra `flags` (a connector's).
async fn start_courier(
    env: &Env,
    data_dir: &Path,
    flags: &[&str],
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
    command.args(flags);
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

/// Starts `courier up` with a connector's `flags` and polls its success counter until it
/// reaches M; the rate counts from the counter's first move.
async fn measure_connector(
    env: &Env,
    data_dir: &Path,
    flags: &[&str],
    connector: &str,
    log_name: &str,
) -> anyhow::Result<Drained> {
    let mut courier = start_courier(env, data_dir, flags, log_name).await?;
    let result = poll_successes(env, &mut courier, connector).await;
    if result.is_err() {
        print_log_tail(&courier.log);
    }
    courier.children.shutdown().await;
    result
}

async fn poll_successes(
    env: &Env,
    courier: &mut Courier,
    connector: &str,
) -> anyhow::Result<Drained> {
    let url = format!("{}/metrics", courier.base);
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    let mut first: Option<(Instant, usize)> = None;
    loop {
        courier.children.ensure_running(courier.id)?;
        let text = env.http.get(&url).send().await?.text().await?;
        let now = Instant::now();
        let done = successes(&text, connector);
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
                "the {connector} connector finished {done} of {} messages within {DRAIN_TIMEOUT:?}",
                env.messages
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `connector_invocations_total{connector="<connector>",outcome="success"}` summed.
fn successes(metrics: &str, connector: &str) -> usize {
    let label = format!(r#"connector="{connector}""#);
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("connector_invocations_total{")
                && l.contains(&label)
                && l.contains(r#"outcome="success""#)
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as usize
}

async fn amqp_connect(url: &str) -> anyhow::Result<(lapin::Connection, lapin::Channel)> {
    let connection = tokio::time::timeout(
        Duration::from_secs(10),
        lapin::Connection::connect(url, lapin::ConnectionProperties::default()),
    )
    .await
    .map_err(|_| anyhow!("RabbitMQ did not answer within 10 s"))?
    .context("connecting to RabbitMQ (start it, or pass --amqp-url, or --source kafka)")?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(lapin::options::ConfirmSelectOptions::default())
        .await?;
    Ok((connection, channel))
}

/// Declares `queue` durable and publishes the variant's M persistent messages, confirmed.
async fn prefill_queue(env: &Env, channel: &lapin::Channel, queue: &str) -> anyhow::Result<()> {
    channel
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions::durable(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let started = Instant::now();
    let mut pending = Vec::with_capacity(PRODUCE_CHUNK);
    for i in 0..env.messages {
        let confirm = channel
            .basic_publish(
                "".into(),
                queue.into(),
                lapin::options::BasicPublishOptions::default(),
                &env.body,
                lapin::BasicProperties::default()
                    .with_delivery_mode(2)
                    .with_message_id(format!("m-{i}").into()),
            )
            .await?;
        pending.push(confirm);
        if pending.len() == PRODUCE_CHUNK || i + 1 == env.messages {
            for confirm in pending.drain(..) {
                confirm.await?;
            }
        }
    }
    eprintln!(
        "  pre-filled queue {queue} with {} messages in {:.1} s",
        env.messages,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The AMQP baseline: consume with `prefetch`, POST each body to `url` in its own task, ack
/// after the answer.
async fn bare_amqp_loop(
    env: &Env,
    channel: &lapin::Channel,
    queue: &str,
    url: &str,
    prefetch: u16,
) -> anyhow::Result<Drained> {
    use futures_util::StreamExt as _;
    channel
        .basic_qos(prefetch, lapin::options::BasicQosOptions::default())
        .await?;
    let mut consumer = channel
        .basic_consume(
            queue.into(),
            "".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let done = Arc::new(AtomicUsize::new(0));
    let first_done: Arc<Mutex<Option<Instant>>> = Arc::default();
    let (finished_tx, mut finished_rx) = mpsc::channel::<Instant>(1);
    let total = env.messages;
    let mut tasks = tokio::task::JoinSet::new();
    let drain = async {
        loop {
            tokio::select! {
                finished = finished_rx.recv() => return finished.ok_or_else(|| anyhow!("bare loop ended")),
                delivery = consumer.next() => {
                    let delivery = delivery.ok_or_else(|| anyhow!("consumer cancelled"))??;
                    let (client, url) = (client.clone(), url.to_owned());
                    let (done, first_done, finished_tx) = (done.clone(), first_done.clone(), finished_tx.clone());
                    tasks.spawn(async move {
                        let ok = client
                            .post(&url)
                            .body(delivery.data.clone())
                            .send()
                            .await
                            .is_ok_and(|r| r.status().is_success());
                        if !ok {
                            eprintln!("  bare loop: POST {url} failed");
                        }
                        let _ = delivery.acker.ack(lapin::options::BasicAckOptions::default()).await;
                        let now = Instant::now();
                        first_done.lock().await.get_or_insert(now);
                        if done.fetch_add(1, Ordering::SeqCst) + 1 == total {
                            let _ = finished_tx.send(now).await;
                        }
                    });
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
    };
    let last = tokio::time::timeout(DRAIN_TIMEOUT, drain)
        .await
        .map_err(|_| anyhow!("the bare loop did not drain {queue} within {DRAIN_TIMEOUT:?}"))??;
    let _ = channel
        .basic_cancel(
            consumer.tag(),
            lapin::options::BasicCancelOptions::default(),
        )
        .await;
    let first = first_done
        .lock()
        .await
        .ok_or_else(|| anyhow!("no message finished"))?;
    Ok(Drained {
        messages: total - 1,
        seconds: (last - first).as_secs_f64(),
    })
}
