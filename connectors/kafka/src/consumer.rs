//! The consumer loop: receive from librdkafka, translate, hand each message to its partition's
//! worker, pause partitions whose worker is full, and drop the workers of revoked partitions.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use courier_connector::{Message as CoreMessage, Pipeline, Stop};
use courier_core::ledger::CallSource;
use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::topic_partition_list::{Offset, TopicPartitionList};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::args::Ordering;
use crate::headers::{Coordinates, call_headers};
use crate::metrics::KafkaMetrics;
use crate::partition::{self, Incoming, OffsetStore, PartitionWork};

/// How often paused partitions are looked at (backlog fed to the worker, resume decided).
const BACKLOG_INTERVAL: Duration = Duration::from_millis(5);

/// Longest the final commit on shutdown may take.
const FINAL_COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// Pause after a consumer error, so a broker outage does not spin.
const ERROR_PAUSE: Duration = Duration::from_millis(200);

/// The consumer's callbacks: rebalances, commits, statistics and librdkafka's logs.
pub(crate) struct KafkaContext {
    revoked: Mutex<Vec<(String, i32)>>,
    rebalanced: Notify,
    metrics: KafkaMetrics,
}

impl KafkaContext {
    pub(crate) fn new(metrics: KafkaMetrics) -> Self {
        Self {
            revoked: Mutex::new(Vec::new()),
            rebalanced: Notify::new(),
            metrics,
        }
    }

    fn take_revoked(&self) -> Vec<(String, i32)> {
        std::mem::take(&mut *self.revoked.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

impl ClientContext for KafkaContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(facility = fac, message = log_message, "librdkafka error.");
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(facility = fac, message = log_message, "librdkafka warning.");
            }
            _ => tracing::debug!(facility = fac, message = log_message, "librdkafka."),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        tracing::warn!(error = %error, reason, "Kafka client error; librdkafka retries.");
    }

    fn stats(&self, statistics: Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                if *partition < 0 || !p.desired || p.hi_offset < 0 || p.committed_offset < 0 {
                    continue;
                }
                let labels = [topic.as_str(), &partition.to_string()];
                self.metrics
                    .lag
                    .with_label_values(&labels)
                    .set((p.hi_offset - p.committed_offset).max(0));
            }
        }
    }
}

impl ConsumerContext for KafkaContext {
    fn pre_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                tracing::info!(partitions = %describe(tpl), "Kafka partitions assigned.");
            }
            Rebalance::Revoke(tpl) => {
                tracing::info!(partitions = %describe(tpl), "Kafka partitions revoked; their work in flight is dropped.");
                let mut revoked = self.revoked.lock().unwrap_or_else(|p| p.into_inner());
                revoked.extend(
                    tpl.elements()
                        .iter()
                        .map(|e| (e.topic().to_owned(), e.partition())),
                );
                self.rebalanced.notify_one();
            }
            Rebalance::Error(e) => tracing::warn!(error = %e, "Kafka rebalance failed."),
        }
    }

    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        match result {
            Ok(()) => {
                for e in offsets.elements() {
                    if let Offset::Offset(o) = e.offset() {
                        self.metrics
                            .commit_offset
                            .with_label_values(&[e.topic(), &e.partition().to_string()])
                            .set(o);
                        tracing::trace!(
                            topic = e.topic(),
                            partition = e.partition(),
                            offset = o,
                            "Offset committed."
                        );
                    }
                }
            }
            Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)) => {}
            Err(e) => {
                tracing::warn!(error = %e, "Committing offsets failed; retried on the next commit.")
            }
        }
    }
}

fn describe(tpl: &TopicPartitionList) -> String {
    tpl.elements()
        .iter()
        .map(|e| format!("{}/{}", e.topic(), e.partition()))
        .collect::<Vec<_>>()
        .join(",")
}

/// The consumer as the workers' offset store.
pub(crate) struct ConsumerOffsets(pub(crate) Arc<StreamConsumer<KafkaContext>>);

impl OffsetStore for ConsumerOffsets {
    fn store(&self, topic: &str, partition: i32, position: i64) -> Result<(), String> {
        // librdkafka's offset_store stores `offset + 1`: hand it the last finished offset.
        self.0
            .store_offset(topic, partition, position - 1)
            .map_err(|e| e.to_string())
    }
}

/// A partition's worker as the loop sees it.
struct Worker {
    tx: mpsc::Sender<Incoming>,
    /// Messages received once the worker's buffer was full, oldest first (only what
    /// librdkafka had already handed over when the partition was paused).
    backlog: VecDeque<Incoming>,
    /// Paused when the buffer filled up; resumed once it is down to a quarter, so the refetch
    /// that follows a resume overlaps with the work still buffered.
    paused: bool,
    stop: Stop,
}

/// What the loop needs.
pub(crate) struct Loop {
    pub(crate) consumer: Arc<StreamConsumer<KafkaContext>>,
    pub(crate) pipeline: Pipeline,
    pub(crate) ordering: Ordering,
    pub(crate) max_in_flight: usize,
    /// Messages buffered per partition between the consumer and its worker.
    pub(crate) buffer: usize,
    pub(crate) stop: Stop,
    pub(crate) shutdown: CancellationToken,
}

impl Loop {
    /// Consumes until shutdown, then lets the workers drain and commits what finished.
    pub(crate) async fn run(self) {
        let mut workers: HashMap<(String, i32), Worker> = HashMap::new();
        let mut tasks = JoinSet::new();
        let mut backlog_tick = tokio::time::interval(BACKLOG_INTERVAL);
        backlog_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let context = self.consumer.context().clone();
        loop {
            let has_backlog = workers.values().any(|w| w.paused || !w.backlog.is_empty());
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => break,
                () = context.rebalanced.notified() => {}
                received = self.consumer.recv() => match received {
                    Ok(m) => {
                        let incoming = translate(&m);
                        let key = (m.topic().to_owned(), m.partition());
                        drop(m);
                        self.revoke(&mut workers, &context);
                        self.route(&mut workers, &mut tasks, key, incoming);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "Kafka consumer error.");
                        tokio::time::sleep(ERROR_PAUSE).await;
                    }
                },
                _ = backlog_tick.tick(), if has_backlog => self.feed_backlogs(&mut workers),
                // Reap workers that ended on their own (their stop was triggered).
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
            self.revoke(&mut workers, &context);
        }
        tracing::info!("Kafka connector stopping: finishing messages in flight.");
        // Closing the channels lets each worker finish what it started (until the drain
        // deadline abandons the rest); backlogs are dropped, uncommitted, for redelivery.
        workers.clear();
        while tasks.join_next().await.is_some() {}
        let consumer = self.consumer.clone();
        let commit = tokio::task::spawn_blocking(move || {
            let result = consumer.commit_consumer_state(CommitMode::Sync);
            // Leaving the group blocks too; do it here rather than on an async thread.
            drop(consumer);
            result
        });
        match tokio::time::timeout(FINAL_COMMIT_TIMEOUT, commit).await {
            Ok(Ok(Ok(()) | Err(KafkaError::ConsumerCommit(RDKafkaErrorCode::NoOffset)))) => {
                tracing::info!("Kafka offsets committed.");
            }
            Ok(Ok(Err(e))) => {
                tracing::warn!(error = %e, "Final offset commit failed; finished messages since the last commit will be delivered again.")
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "Final offset commit did not run."),
            Err(_) => tracing::warn!("Final offset commit timed out."),
        }
    }

    /// Drops the workers of revoked partitions; their work in flight is abandoned.
    fn revoke(&self, workers: &mut HashMap<(String, i32), Worker>, context: &KafkaContext) {
        for key in context.take_revoked() {
            if let Some(worker) = workers.remove(&key) {
                worker.stop.abandon_now();
            }
        }
    }

    fn route(
        &self,
        workers: &mut HashMap<(String, i32), Worker>,
        tasks: &mut JoinSet<()>,
        key: (String, i32),
        incoming: Incoming,
    ) {
        if workers.get(&key).is_some_and(|w| w.tx.is_closed()) {
            workers.remove(&key);
        }
        let worker = workers.entry(key.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(self.buffer.max(1));
            let stop = self.stop.child();
            let work = PartitionWork {
                topic: key.0.clone(),
                partition: key.1,
                ordering: self.ordering,
                max_in_flight: self.max_in_flight,
            };
            tasks.spawn(partition::run(
                work,
                rx,
                self.pipeline.clone(),
                Arc::new(ConsumerOffsets(self.consumer.clone())),
                stop.clone(),
            ));
            Worker {
                tx,
                backlog: VecDeque::new(),
                paused: false,
                stop,
            }
        });
        if !worker.backlog.is_empty() {
            worker.backlog.push_back(incoming);
            return;
        }
        match worker.tx.try_send(incoming) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(incoming)) => {
                worker.backlog.push_back(incoming);
                self.set_paused(&key, worker, true);
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                // The worker stopped (its stop fired); the message is not committed and
                // will be delivered again.
                workers.remove(&key);
            }
        }
    }

    fn feed_backlogs(&self, workers: &mut HashMap<(String, i32), Worker>) {
        for (key, worker) in workers.iter_mut() {
            while let Some(incoming) = worker.backlog.pop_front() {
                match worker.tx.try_send(incoming) {
                    Ok(()) => {}
                    Err(mpsc::error::TrySendError::Full(incoming)) => {
                        worker.backlog.push_front(incoming);
                        break;
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        worker.backlog.clear();
                        break;
                    }
                }
            }
            let buffered = worker.tx.max_capacity() - worker.tx.capacity();
            if worker.paused
                && worker.backlog.is_empty()
                && buffered <= worker.tx.max_capacity() / 4
            {
                self.set_paused(key, worker, false);
            }
        }
    }

    fn set_paused(&self, key: &(String, i32), worker: &mut Worker, paused: bool) {
        let mut tpl = TopicPartitionList::new();
        if let Err(e) = tpl.add_partition_offset(&key.0, key.1, Offset::Invalid) {
            tracing::warn!(error = %e, "Could not name the partition to pause.");
            return;
        }
        let result = if paused {
            self.consumer.pause(&tpl)
        } else {
            self.consumer.resume(&tpl)
        };
        match result {
            Ok(()) => {
                worker.paused = paused;
                tracing::debug!(topic = %key.0, partition = key.1, paused, "Partition flow control.");
            }
            Err(e) => {
                tracing::warn!(topic = %key.0, partition = key.1, error = %e, "Could not pause or resume the partition.")
            }
        }
    }
}

/// A Kafka message as the pipeline sees it.
pub(crate) fn translate(m: &BorrowedMessage<'_>) -> Incoming {
    let kafka_headers: Vec<(&str, Option<&[u8]>)> = m
        .headers()
        .map(|h| h.iter().map(|h| (h.key, h.value)).collect())
        .unwrap_or_default();
    let headers = call_headers(
        Coordinates {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
        },
        kafka_headers,
    );
    Incoming {
        offset: m.offset(),
        message: CoreMessage {
            topic: m.topic().to_owned(),
            body: m.payload().map(Bytes::copy_from_slice).unwrap_or_default(),
            headers,
            key: m.key().map(Bytes::copy_from_slice),
            source_id: Some(format!(
                "kafka/{}/{}/{}",
                m.topic(),
                m.partition(),
                m.offset()
            )),
            origin: Some(CallSource::Kafka {
                topic: m.topic().to_owned(),
                partition: m.partition(),
                offset: m.offset(),
            }),
        },
    }
}
