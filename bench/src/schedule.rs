//! `courier-bench schedule`: the scheduler's timer loop under many schedules.
//!
//! Reproduce (from the workspace root):
//!
//! ```text
//! cargo build --release --bin courier-bench && target/release/courier-bench schedule
//! ```
//!
//! It runs `courier_scheduler::run` in this process with N functions (default 10,000), each
//! scheduled every `--period` seconds (default 10) with the seconds spread evenly
//! (`S/10 * * * * *` for S in 0..10, so 1,000 fires fall due at every whole second), and a
//! fake invoker whose `enqueue` records the lateness of each fire (wall clock at hand-over
//! minus `X-Scheduled-Time`). After one warm-up period it measures for `--duration` (default
//! 30 s) and reports lateness p50/p99/max (target: p99 < 10 ms), CPU time (getrusage, user +
//! system) and resident memory, both per 1,000 schedules.
//!
//! With `--queue embedded|file:///path|nats://host:port` the fires go to a real queue through
//! `Fabric` (a task acks every stored call at once), and lateness is also reported when the
//! queue has stored each fire.
//!
//! The baseline, measured first in the same run: one bare `tokio::time::sleep_until` loop that
//! wakes at every whole second and records its own lateness, what a plain tokio sleep reaches
//! (the scheduler waits more precisely for the instant itself). The report gives the
//! scheduler's lateness as a ratio to it.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use clap::Args;
use courier_core::FunctionStatus;
use courier_invoke::{
    Answer, Call, Enqueued, Fabric, FunctionCaller, InvokeError, Invoker, ReadyCall,
};
use courier_queue::{Delivery, QueueConfig, WorkQueue};
use courier_scheduler::{SchedulerConfig, X_SCHEDULED_TIME};
use http::HeaderValue;
use nix::sys::resource::{UsageWho, getrusage};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// Options of `courier-bench schedule`.
#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    /// How many scheduled functions.
    #[arg(long, default_value_t = 10_000)]
    schedules: usize,
    /// Each schedule fires every this many seconds (a divisor of 60); their seconds are spread
    /// evenly over it.
    #[arg(long, default_value_t = 10)]
    period: u32,
    /// How long to measure (after one warm-up period).
    #[arg(long, default_value = "30s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// How long to measure the bare-timer baseline.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    baseline_duration: Duration,
    /// Skip the baseline.
    #[arg(long)]
    skip_baseline: bool,
    /// Hand fires to a real queue instead of the recording fake: `embedded` (a fresh embedded
    /// store in a temporary directory), `file:///path` or `nats://host:port` (JetStream). A
    /// task acks every stored call at once, like a worker whose functions take no time, so the
    /// overlap checks see the previous fires done. Lateness is then reported twice: when a
    /// fire is handed to the queue, and when the queue has stored it.
    #[arg(long)]
    queue: Option<String>,
    /// Also write the results as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// An invoker that stores nothing and records how late each fire was handed over. Its own
/// work per fire is kept small (the scheduled time is parsed after the run, the sample buffer
/// is allocated ahead) so that it measures the scheduler, not itself.
struct LatenessRecorder {
    /// (`X-Scheduled-Time`, wall clock at hand-over), in hand-over order.
    samples: Mutex<Vec<(HeaderValue, DateTime<Utc>)>>,
    /// The same when the real queue has stored the fire (`--queue`).
    stored: Mutex<Vec<(HeaderValue, DateTime<Utc>)>>,
    /// The real queue (`--queue`), behind the invoker every Courier process uses.
    queue: Option<Fabric>,
    /// `X-Scheduled-Time` of the fires made ready ahead (`--queue`), by call id.
    made_ready: Mutex<HashMap<String, HeaderValue>>,
    /// How many samples the buffer holds without growing.
    capacity: usize,
}

impl LatenessRecorder {
    fn new(capacity: usize, queue: Option<Fabric>) -> Self {
        Self {
            samples: Mutex::new(Vec::with_capacity(capacity)),
            stored: Mutex::new(Vec::with_capacity(if queue.is_some() {
                capacity
            } else {
                0
            })),
            queue,
            made_ready: Mutex::default(),
            capacity,
        }
    }

    /// The hand-over samples so far as (scheduled second, lateness in seconds), emptying the
    /// buffer.
    fn take(&self) -> Result<Vec<(i64, f64)>> {
        Self::drain(&self.samples, self.capacity)
    }

    /// The same for the stored samples (`--queue`).
    fn take_stored(&self) -> Result<Vec<(i64, f64)>> {
        Self::drain(&self.stored, self.capacity)
    }

    fn drain(
        buffer: &Mutex<Vec<(HeaderValue, DateTime<Utc>)>>,
        capacity: usize,
    ) -> Result<Vec<(i64, f64)>> {
        let fresh = Vec::with_capacity(capacity);
        let samples = std::mem::replace(
            &mut *buffer.lock().unwrap_or_else(|p| p.into_inner()),
            fresh,
        );
        samples
            .into_iter()
            .map(|(scheduled, handed)| {
                let scheduled = scheduled
                    .to_str()
                    .ok()
                    .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
                    .context("a fire with an unreadable X-Scheduled-Time")?;
                Ok((
                    scheduled.timestamp(),
                    (handed - scheduled.to_utc()).as_seconds_f64(),
                ))
            })
            .collect()
    }
}

/// The functions of the benchmark are never called (fires only go to the queue).
struct NoFunctions;

#[async_trait::async_trait]
impl FunctionCaller for NoFunctions {
    async fn call(&self, _request: http::Request<bytes::Bytes>) -> Result<Answer, String> {
        Err("the benchmark only queues".to_owned())
    }
}

/// Acks every call stored in `queue` as soon as it is fetched (a worker whose functions take
/// no time), until `stop`. The acks of one fetch go out together, as the queue worker's do
/// (one task per call), not one after the other.
async fn ack_everything(queue: Arc<dyn WorkQueue>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let fetched = tokio::select! {
            fetched = queue.fetch(1024, Duration::from_millis(200)) => fetched,
            () = stop.cancelled() => return,
        };
        match fetched {
            Ok(deliveries) => {
                let acks = deliveries.into_iter().map(Delivery::ack);
                for acked in futures_util::future::join_all(acks).await {
                    if let Err(e) = acked {
                        eprintln!("ack failed: {e}");
                    }
                }
            }
            Err(e) => {
                eprintln!("fetch failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// Per scheduled second: the lateness of its first hand-over (the timer's wake-up) and of its
/// last (the end of the burst of fires due that second).
fn bursts(samples: &[(i64, f64)]) -> (Vec<f64>, Vec<f64>) {
    let mut per_second: BTreeMap<i64, (f64, f64)> = BTreeMap::new();
    for &(second, late) in samples {
        let e = per_second.entry(second).or_insert((late, late));
        e.0 = e.0.min(late);
        e.1 = e.1.max(late);
    }
    per_second.values().copied().unzip()
}

#[async_trait::async_trait]
impl Invoker for LatenessRecorder {
    async fn call(&self, _call: Call, _timeout: Duration) -> Result<Answer, InvokeError> {
        Err(InvokeError::Invalid("the benchmark only queues".to_owned()))
    }

    async fn enqueue(&self, mut call: Call) -> Result<Enqueued, InvokeError> {
        if self.queue.is_some() {
            // Only a retry comes here with a real queue (the scheduler makes fires ready first).
            let ready = self.ready(call)?;
            return self.enqueue_ready(ready).await;
        }
        let handed = Utc::now();
        let scheduled = call
            .headers
            .remove(X_SCHEDULED_TIME)
            .ok_or_else(|| InvokeError::Invalid("no X-Scheduled-Time".to_owned()))?;
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((scheduled, handed));
        Ok(Enqueued {
            call_id: call.call_id.unwrap_or_default(),
            duplicate: false,
            seq: None,
        })
    }

    /// With a real queue, the scheduler's fires are encoded ahead: remember each one's
    /// scheduled time by call id, for the hand-over.
    fn ready(&self, call: Call) -> Result<ReadyCall, InvokeError> {
        let Some(queue) = &self.queue else {
            return Ok(ReadyCall::new(call));
        };
        let scheduled = call
            .headers
            .get(X_SCHEDULED_TIME)
            .cloned()
            .ok_or_else(|| InvokeError::Invalid("no X-Scheduled-Time".to_owned()))?;
        let id = call
            .call_id
            .clone()
            .ok_or_else(|| InvokeError::Invalid("no call id".to_owned()))?;
        self.made_ready
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, scheduled);
        queue.ready(call)
    }

    async fn enqueue_ready(&self, ready: ReadyCall) -> Result<Enqueued, InvokeError> {
        let handed = Utc::now();
        let Some(queue) = &self.queue else {
            let call = ready
                .into_call()
                .ok_or_else(|| InvokeError::Invalid("encoded without a queue".to_owned()))?;
            return self.enqueue(call).await;
        };
        let scheduled = ready
            .call_id()
            .and_then(|id| {
                self.made_ready
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(id)
            })
            .ok_or_else(|| InvokeError::Invalid("a fire not made ready here".to_owned()))?;
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((scheduled.clone(), handed));
        let enqueued = queue.enqueue_ready(ready).await?;
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((scheduled, Utc::now()));
        Ok(enqueued)
    }

    /// The scheduler's hand-over of a burst (queue mode): every fire of the batch is handed
    /// over at the moment of the call; stored when the queue answers the batch.
    async fn enqueue_ready_batch(
        &self,
        ready: Vec<ReadyCall>,
    ) -> Vec<Result<Enqueued, InvokeError>> {
        let handed = Utc::now();
        let Some(queue) = &self.queue else {
            let mut answers = Vec::with_capacity(ready.len());
            for ready in ready {
                answers.push(self.enqueue_ready(ready).await);
            }
            return answers;
        };
        let scheduled: Vec<Option<HeaderValue>> = {
            let mut made_ready = self.made_ready.lock().unwrap_or_else(|p| p.into_inner());
            ready
                .iter()
                .map(|ready| ready.call_id().and_then(|id| made_ready.remove(id)))
                .collect()
        };
        self.samples
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(scheduled.iter().flatten().map(|s| (s.clone(), handed)));
        let answers = queue.enqueue_ready_batch(ready).await;
        let stored = Utc::now();
        self.stored
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(
                scheduled
                    .into_iter()
                    .zip(&answers)
                    .filter(|(_, answer)| answer.is_ok())
                    .filter_map(|(scheduled, _)| scheduled.map(|s| (s, stored))),
            );
        answers
    }

    async fn is_outstanding(&self, enqueued: &Enqueued) -> Result<bool, InvokeError> {
        match &self.queue {
            Some(queue) => queue.is_outstanding(enqueued).await,
            None => Ok(false),
        }
    }

    async fn dead_letter(
        &self,
        _call: &Call,
        _attempts: u64,
        _last_status: Option<u16>,
        _error: &str,
    ) -> Result<(), InvokeError> {
        Ok(())
    }
}

/// Lateness percentiles, in milliseconds.
#[derive(Debug, Clone, Copy)]
struct Lateness {
    samples: usize,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
}

impl Lateness {
    fn of(mut samples: Vec<f64>) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_by(f64::total_cmp);
        let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize] * 1e3;
        Some(Self {
            samples: samples.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
            max_ms: at(1.0),
        })
    }
}

/// CPU seconds (user + system) this process has used.
fn cpu_seconds() -> Result<f64> {
    let usage = getrusage(UsageWho::RUSAGE_SELF).context("getrusage")?;
    let secs = |t: nix::sys::time::TimeVal| t.tv_sec() as f64 + t.tv_usec() as f64 / 1e6;
    Ok(secs(usage.user_time()) + secs(usage.system_time()))
}

/// Resident memory now, in bytes (from /proc/self/statm).
fn rss_bytes() -> Result<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").context("read /proc/self/statm")?;
    let pages: f64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .context("parse /proc/self/statm")?;
    Ok(pages * 4096.0)
}

/// The next whole second of wall-clock time after now.
fn next_whole_second() -> DateTime<Utc> {
    let now = Utc::now();
    DateTime::from_timestamp(now.timestamp() + 1, 0).unwrap_or(now)
}

/// The baseline: one bare timer, woken at every whole second.
async fn baseline(duration: Duration) -> Option<Lateness> {
    let mut samples = Vec::new();
    let end = tokio::time::Instant::now() + duration;
    while tokio::time::Instant::now() < end {
        let due = next_whole_second();
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        tokio::time::sleep_until(tokio::time::Instant::now() + wait).await;
        samples.push((Utc::now() - due).as_seconds_f64());
    }
    Lateness::of(samples)
}

fn functions(count: usize, period: u32) -> Vec<FunctionStatus> {
    (0..count)
        .map(|i| {
            let second = i as u32 % period;
            FunctionStatus {
                name: format!("f{i}"),
                namespace: "bench".to_owned(),
                annotations: BTreeMap::from([
                    ("topic".to_owned(), "cron-function".to_owned()),
                    (
                        "schedule".to_owned(),
                        format!("{second}/{period} * * * * *"),
                    ),
                ]),
                ..FunctionStatus::default()
            }
        })
        .collect()
}

pub(crate) async fn run(args: ScheduleArgs) -> Result<()> {
    anyhow::ensure!(
        args.period > 0 && 60 % args.period == 0,
        "--period must divide 60"
    );
    let base = if args.skip_baseline {
        None
    } else {
        println!(
            "baseline: one bare sleep_until timer, {:?}",
            args.baseline_duration
        );
        baseline(args.baseline_duration).await
    };

    let list = Arc::new(functions(args.schedules, args.period));
    let (_catalog, rx) = tokio::sync::watch::channel(list);
    // Room for every fire of the warm-up or the measurement, with a margin.
    let fires_per_second = args.schedules.div_ceil(args.period as usize);
    let seconds = args.duration.as_secs().max(u64::from(args.period)) as usize + 10;
    let shutdown = CancellationToken::new();
    // Kept until the end: the embedded store's directory.
    let mut _store_dir = None;
    let queue = match args.queue.as_deref() {
        None => None,
        Some(spec) => {
            let url = if spec == "embedded" {
                let dir = tempfile::tempdir().context("a directory for the embedded queue")?;
                let url = format!("file://{}", dir.path().join("queue.redb").display());
                _store_dir = Some(dir);
                url
            } else {
                spec.to_owned()
            };
            let queue = courier_queue::open(&url, QueueConfig::default())
                .await
                .with_context(|| format!("open the queue {url}"))?;
            tokio::spawn(ack_everything(queue.clone(), shutdown.clone()));
            println!("queue: {url} (every stored call acked at once)");
            Some(Fabric::new(Arc::new(NoFunctions), Some(queue)))
        }
    };
    let recorder = Arc::new(LatenessRecorder::new(fires_per_second * seconds, queue));
    let registry = prometheus::Registry::new();
    let rss_before = rss_bytes()?;
    let scheduler = {
        let invoker: Arc<dyn Invoker> = recorder.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            courier_scheduler::run(SchedulerConfig::default(), rx, invoker, &registry, shutdown)
                .await
        })
    };
    let warm_up = Duration::from_secs(u64::from(args.period) + 1);
    println!(
        "scheduler: {} schedules every {} s, warm-up {:?}, measuring {:?}",
        args.schedules, args.period, warm_up, args.duration
    );
    tokio::time::sleep(warm_up).await;
    recorder.take()?;
    recorder.take_stored()?;
    let rss_after = rss_bytes()?;
    let cpu_start = cpu_seconds()?;
    tokio::time::sleep(args.duration).await;
    let cpu_used = cpu_seconds()? - cpu_start;
    let samples = recorder.take()?;
    let stored = recorder.take_stored()?;
    let stored = Lateness::of(stored.into_iter().map(|(_, late)| late).collect());
    let (wake, burst_end) = bursts(&samples);
    let wake = Lateness::of(wake).context("no fires were recorded")?;
    let burst_end = Lateness::of(burst_end).context("no fires were recorded")?;
    let lateness = Lateness::of(samples.into_iter().map(|(_, late)| late).collect())
        .context("no fires were recorded")?;
    shutdown.cancel();
    scheduler.await?.context("scheduler")?;

    let thousands = args.schedules as f64 / 1000.0;
    let cpu_share = cpu_used / args.duration.as_secs_f64();
    let fires_per_sec = lateness.samples as f64 / args.duration.as_secs_f64();
    let rss_per_thousand_mib = (rss_after - rss_before) / thousands / (1024.0 * 1024.0);
    let cpu_per_thousand_pct = cpu_share * 100.0 / thousands;

    println!();
    println!("| measure | scheduler | baseline (one bare timer) | ratio |");
    println!("|---|---|---|---|");
    let ratio = |a: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.1}x", a / b),
        _ => "-".to_owned(),
    };
    let show = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.3} ms"));
    println!(
        "| lateness p50 | {:.3} ms | {} | {} |",
        lateness.p50_ms,
        show(base.map(|b| b.p50_ms)),
        ratio(lateness.p50_ms, base.map(|b| b.p50_ms))
    );
    println!(
        "| lateness p99 | {:.3} ms | {} | {} |",
        lateness.p99_ms,
        show(base.map(|b| b.p99_ms)),
        ratio(lateness.p99_ms, base.map(|b| b.p99_ms))
    );
    println!(
        "| lateness max | {:.3} ms | {} | |",
        lateness.max_ms,
        show(base.map(|b| b.max_ms))
    );
    println!(
        "| first fire of each second (wake-up), p50 / p99 | {:.3} / {:.3} ms | | |",
        wake.p50_ms, wake.p99_ms
    );
    println!(
        "| last fire of each second (burst end), p50 / p99 | {:.3} / {:.3} ms | | |",
        burst_end.p50_ms, burst_end.p99_ms
    );
    if let Some(stored) = stored {
        println!(
            "| stored by the queue, p50 / p99 / max | {:.3} / {:.3} / {:.3} ms | | |",
            stored.p50_ms, stored.p99_ms, stored.max_ms
        );
    }
    println!("| fires/s | {fires_per_sec:.0} | 1 | |");
    let with_queue = if args.queue.is_some() {
        " (queue included)"
    } else {
        ""
    };
    println!("| CPU per 1,000 schedules{with_queue} | {cpu_per_thousand_pct:.2} % of a core | | |");
    println!("| RSS per 1,000 schedules{with_queue} | {rss_per_thousand_mib:.2} MiB | | |");
    println!();
    let verdict = if lateness.p99_ms < 10.0 {
        "met"
    } else {
        "MISSED"
    };
    println!("target p99 < 10 ms: {verdict}");

    if let Some(path) = &args.out {
        let report = json!({
            "config": {
                "schedules": args.schedules,
                "period_seconds": args.period,
                "duration_seconds": args.duration.as_secs_f64(),
            },
            "scheduler": {
                "samples": lateness.samples,
                "lateness_p50_ms": lateness.p50_ms,
                "lateness_p99_ms": lateness.p99_ms,
                "lateness_max_ms": lateness.max_ms,
                "wake_p50_ms": wake.p50_ms,
                "wake_p99_ms": wake.p99_ms,
                "burst_end_p50_ms": burst_end.p50_ms,
                "burst_end_p99_ms": burst_end.p99_ms,
                "fires_per_second": fires_per_sec,
                "cpu_seconds": cpu_used,
                "cpu_percent_per_1000_schedules": cpu_per_thousand_pct,
                "rss_mib_per_1000_schedules": rss_per_thousand_mib,
                "queue": args.queue,
                "stored_p50_ms": stored.map(|s| s.p50_ms),
                "stored_p99_ms": stored.map(|s| s.p99_ms),
                "stored_max_ms": stored.map(|s| s.max_ms),
            },
            "baseline": base.map(|b| json!({
                "samples": b.samples,
                "lateness_p50_ms": b.p50_ms,
                "lateness_p99_ms": b.p99_ms,
                "lateness_max_ms": b.max_ms,
            })),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
