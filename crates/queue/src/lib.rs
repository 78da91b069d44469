//! The WorkQueue seam: a durable, at-least-once work queue with explicit settlement of every
//! delivery. The gateway publishes queued calls into it; the queue worker fetches deliveries
//! and settles each one: [`Delivery::ack`] (done), [`Delivery::retry_after`] (deliver again,
//! not before a delay), [`Delivery::keep_alive`] (extend the lease while a long call runs) or
//! [`Delivery::dead_letter`] (never deliver again).
//!
//! Two backends behave the same way under the same conformance suite (`tests/`):
//! - [`jetstream`]: NATS JetStream (`nats://host:port`), for production and scale-out;
//! - [`embedded`]: a redb file in Courier's own process (`file:///path`), the default for
//!   `courier up`.
//!
//! Guarantees every backend gives:
//! - `publish` returns only once the message is stored as durably as the backend promises;
//!   a second publish of the same id within the dedup window is reported as
//!   [`Published::Duplicate`] and stored once;
//! - a delivery that is not settled within its lease (`ack_wait`) is delivered again, also
//!   when the process holding it died;
//! - a delivery retried with a delay is not delivered before the delay has passed;
//! - `keep_alive` restarts the lease, so a long call is not delivered twice;
//! - nothing acknowledged by `publish` is lost across a restart of the process (or of the
//!   NATS server with a file store).
//!
//! Invariant: this crate knows nothing of HTTP, functions or callbacks; a message is an id and
//! opaque bytes.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

pub mod embedded;
pub mod jetstream;
mod ledger;

pub use ledger::{LedgerBegin, LedgerChange, LedgerConfig, LedgerQuery, LedgerRow, LedgerUpdate};

/// A queue failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The queue URL is not one of the supported forms.
    #[error("unsupported queue URL {0:?}: use nats://host:port or file:///path")]
    UnsupportedUrl(String),
    /// The message is larger than the queue accepts.
    #[error("message of {size} bytes exceeds the queue's limit of {limit} bytes")]
    TooLarge {
        /// The message's size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The queue cannot be reached or refused the operation; retrying later may work.
    #[error("queue unavailable: {context}: {source}")]
    Unavailable {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The invocation ledger is off (`--ledger-retention 0`).
    #[error("the invocation ledger is off (--ledger-retention 0)")]
    LedgerOff,
    /// The queue cannot be set up as asked (a seed URL that does not parse, more replicas than
    /// the backend or the servers offer); trying again will not help until the setup changes.
    #[error("{context}: {reason}")]
    Misconfigured {
        /// What was being done.
        context: String,
        /// What is wrong, and what to do about it.
        reason: String,
    },
    /// Local storage failed (the embedded backend).
    #[error("queue storage failed: {context}: {source}")]
    Storage {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Wraps a connection or server failure.
    pub fn unavailable(
        context: impl fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Unavailable {
            context: context.to_string(),
            source: source.into(),
        }
    }

    /// Wraps a local storage failure.
    pub fn storage(
        context: impl fmt::Display,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self::Storage {
            context: context.to_string(),
            source: source.into(),
        }
    }

    /// A set-up that cannot work as asked.
    pub fn misconfigured(context: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Self::Misconfigured {
            context: context.to_string(),
            reason: reason.to_string(),
        }
    }

    /// This failure again, for each of several operations it failed together (the cause kept
    /// as its text): same variant, same retryability.
    pub fn for_each(&self) -> Self {
        match self {
            Self::UnsupportedUrl(url) => Self::UnsupportedUrl(url.clone()),
            Self::TooLarge { size, limit } => Self::TooLarge {
                size: *size,
                limit: *limit,
            },
            Self::Unavailable { context, source } => Self::unavailable(context, source.to_string()),
            Self::Storage { context, source } => Self::storage(context, source.to_string()),
            Self::LedgerOff => Self::LedgerOff,
            Self::Misconfigured { context, reason } => Self::misconfigured(context, reason),
        }
    }

    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }

    /// A bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::UnsupportedUrl(_) => "unsupported_url",
            Self::TooLarge { .. } => "too_large",
            Self::Unavailable { .. } => "unavailable",
            Self::Storage { .. } => "storage",
            Self::LedgerOff => "ledger_off",
            Self::Misconfigured { .. } => "misconfigured",
        }
    }
}

/// The queue's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One queued message: an id (the call id, also the dedup key) and opaque bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct Message {
    /// Unique id; publishing the same id twice within the dedup window stores it once.
    pub id: String,
    /// The payload (for Courier, the OpenFaaS QueueRequest JSON).
    pub payload: Bytes,
}

impl fmt::Debug for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("id", &self.id)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// What `publish` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// Stored now.
    Stored,
    /// A message with this id was stored within the dedup window; nothing new was stored.
    Duplicate,
}

/// What `publish_tracked` did, and where the message sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Stored now, or a duplicate of a message stored earlier.
    pub published: Published,
    /// The message's sequence in the queue, to ask [`WorkQueue::is_outstanding`] about later;
    /// `None` when the backend cannot tell which message a duplicate duplicated (embedded).
    pub seq: Option<u64>,
}

/// How a backend is set up; the same for every backend.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The invocation ledger kept beside the queue.
    pub ledger: LedgerConfig,
    /// How long a delivery may stay unsettled before it is delivered again.
    pub ack_wait: Duration,
    /// How long a message id is remembered for deduplication.
    pub dedup_window: Duration,
    /// Largest payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Embedded backend: fsync before `publish` returns (batched across concurrent
    /// publishes; the default). Off, publishes are synced on a 1 s interval: faster, but a
    /// crash of the *process* loses up to that second of accepted calls, because redb has no
    /// level that writes without fsync yet survives a process crash (JetStream's file store
    /// does, which is why on by default the embedded store is stricter than JetStream, not
    /// weaker). `courier up` never turns it off.
    pub sync_publish: bool,
    /// JetStream: the stream's name.
    pub stream: String,
    /// JetStream: the subject messages are published on (OpenFaaS: `faas-request`).
    pub subject: String,
    /// JetStream: the durable consumer's name.
    pub consumer: String,
    /// JetStream: how many servers of the cluster keep a copy of the request stream, the
    /// dead-letter stream and the ledger buckets (1: no replication; 3 survives the loss of
    /// one server). Existing streams with fewer copies are raised to this many, never lowered.
    /// The embedded backend keeps one copy and refuses more.
    pub replicas: usize,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            ledger: LedgerConfig::default(),
            ack_wait: Duration::from_secs(30),
            dedup_window: Duration::from_secs(120),
            max_payload_bytes: 1024 * 1024,
            sync_publish: true,
            stream: "OF_faas-request".into(),
            subject: "faas-request".into(),
            consumer: "courier-queue-worker".into(),
            replicas: 1,
        }
    }
}

/// How a backend settles one delivery; implemented by each backend.
#[async_trait]
pub trait Settle: Send + Sync + 'static {
    /// Done: never deliver again.
    async fn ack(&self) -> Result<()>;
    /// Deliver again, not before `delay`.
    async fn retry_after(&self, delay: Duration) -> Result<()>;
    /// Restart the lease.
    async fn keep_alive(&self) -> Result<()>;
    /// Never deliver again (the caller keeps it as a dead letter).
    async fn dead_letter(&self) -> Result<()>;
    /// Applies `update` to the ledger row of call `id` and settles as `settlement` in one
    /// step, the row first (the embedded store: one command, one transaction). `None`: the
    /// backend has no such step, and [`Delivery::settle_recorded`] writes, then settles.
    async fn settle_recorded(
        &self,
        _settlement: Settlement,
        _id: &str,
        _update: &LedgerUpdate,
    ) -> Option<SettledRecorded> {
        None
    }
}

/// How [`Delivery::settle_recorded`] settles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// [`Delivery::ack`].
    Ack,
    /// [`Delivery::retry_after`].
    RetryAfter(Duration),
    /// [`Delivery::dead_letter`].
    DeadLetter,
}

/// What [`Delivery::settle_recorded`] did: the ledger write's answer (the row after it) and
/// the settle's.
#[derive(Debug)]
pub struct SettledRecorded {
    /// The row after the update, as [`WorkQueue::ledger_update`] answers.
    pub row: Result<Option<LedgerRow>>,
    /// The settle's answer.
    pub settled: Result<()>,
}

/// A delivery handed out by [`WorkQueue::fetch_begun`], with its row after the begin update.
#[derive(Debug)]
pub struct Begun {
    /// The delivery.
    pub delivery: Delivery,
    /// The row after the begin update, as [`WorkQueue::ledger_update`] answers
    /// ([`Error::LedgerOff`] with the ledger off).
    pub row: Result<Option<LedgerRow>>,
}

/// One delivery of a message to a consumer.
pub struct Delivery {
    /// The message.
    pub message: Message,
    /// How many times this message has been delivered, this time included (1 = first).
    pub attempt: u64,
    settle: Box<dyn Settle>,
}

impl fmt::Debug for Delivery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Delivery")
            .field("message", &self.message)
            .field("attempt", &self.attempt)
            .finish()
    }
}

impl Delivery {
    /// A delivery settled through `settle` (for backends).
    pub fn new(message: Message, attempt: u64, settle: Box<dyn Settle>) -> Self {
        Self {
            message,
            attempt,
            settle,
        }
    }

    /// Done: the message is removed.
    pub async fn ack(self) -> Result<()> {
        self.settle.ack().await
    }

    /// Deliver again, not before `delay` (a retry that survives a crash of this process).
    pub async fn retry_after(self, delay: Duration) -> Result<()> {
        self.settle.retry_after(delay).await
    }

    /// Restart the lease while the work goes on.
    pub async fn keep_alive(&self) -> Result<()> {
        self.settle.keep_alive().await
    }

    /// Never deliver again.
    pub async fn dead_letter(self) -> Result<()> {
        self.settle.dead_letter().await
    }

    /// Applies `update` to the ledger row of call `id` (not durably, like an attempt's
    /// progress), then settles as `settlement`: in one step where the backend has one,
    /// otherwise one after the other. Either way the row is written before the delivery is
    /// settled, so a crash in between leaves a delivery that comes back, never a settled call
    /// whose row tells an earlier step. The ledger write failing does not stop the settle.
    pub async fn settle_recorded(
        self,
        queue: &dyn WorkQueue,
        settlement: Settlement,
        id: &str,
        update: LedgerUpdate,
    ) -> SettledRecorded {
        if let Some(done) = self.settle.settle_recorded(settlement, id, &update).await {
            return done;
        }
        let row = queue.ledger_update(id, update, false).await;
        let settled = match settlement {
            Settlement::Ack => self.settle.ack().await,
            Settlement::RetryAfter(delay) => self.settle.retry_after(delay).await,
            Settlement::DeadLetter => self.settle.dead_letter().await,
        };
        SettledRecorded { row, settled }
    }
}

/// A call given up on, kept beside the queue for inspection and replay.
#[derive(Clone, PartialEq, Eq)]
pub struct DeadLetter {
    /// The call id; a second letter with the same id replaces the first.
    pub id: String,
    /// When the call was given up on, Unix milliseconds (listing is newest first).
    pub failed_at_ms: u64,
    /// The record (for Courier, the dead-letter JSON with the original request); opaque here.
    pub record: Bytes,
}

impl fmt::Debug for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetter")
            .field("id", &self.id)
            .field("failed_at_ms", &self.failed_at_ms)
            .field("record_bytes", &self.record.len())
            .finish()
    }
}

/// A durable work queue, with the store of dead letters that belongs to it.
#[async_trait]
pub trait WorkQueue: Send + Sync + 'static {
    /// Stores `message`; returns once it is stored (or known to be a duplicate).
    async fn publish(&self, message: Message) -> Result<Published> {
        Ok(self.publish_tracked(message).await?.published)
    }
    /// Like [`WorkQueue::publish`], and tells the message's sequence.
    async fn publish_tracked(&self, message: Message) -> Result<Receipt>;
    /// [`WorkQueue::publish_tracked`], and when the message is stored (not a duplicate) its
    /// ledger row is written with it: in the same transaction (embedded), or sent right after
    /// the message, while its acknowledgement is awaited, and removed again if the server
    /// refuses the message (JetStream). A publish creates a row only where the call has none:
    /// a duplicate never replaces the original's (JetStream creates a duplicate's row when the
    /// original's is missing). With the ledger off, the row is ignored.
    async fn publish_recorded(&self, message: Message, row: Option<LedgerRow>) -> Result<Receipt>;
    /// [`WorkQueue::publish_recorded`] for each of `messages`, answered in their order. A
    /// backend stores them in one step where it can (the embedded store: one command, one
    /// transaction; JetStream: sent back to back, acknowledgements awaited together). A burst
    /// of cron fires on one second is handed over this way.
    async fn publish_batch(
        &self,
        messages: Vec<(Message, Option<LedgerRow>)>,
    ) -> Vec<Result<Receipt>>;
    /// Whether the message stored as `seq` is still in the queue: waiting, leased or waiting
    /// for a retry (false once acknowledged or dead-lettered).
    async fn is_outstanding(&self, seq: u64) -> Result<bool>;

    /// Up to `max` deliveries; waits at most `wait` for the first one, returns empty if none.
    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>>;

    /// [`WorkQueue::fetch`], and applies `begin` to each delivered message's ledger row (not
    /// durably) before answering: in the fetch's own transaction where the backend can (the
    /// embedded store), otherwise as one concurrent [`WorkQueue::ledger_update`] per delivery.
    async fn fetch_begun(
        &self,
        max: usize,
        wait: Duration,
        begin: LedgerBegin,
    ) -> Result<Vec<Begun>> {
        let deliveries = self.fetch(max, wait).await?;
        let rows = futures_util::future::join_all(deliveries.iter().map(|delivery| {
            let update = ledger::begin_for(&begin, &delivery.message);
            self.ledger_update(&delivery.message.id, update, false)
        }))
        .await;
        Ok(deliveries
            .into_iter()
            .zip(rows)
            .map(|(delivery, row)| Begun { delivery, row })
            .collect())
    }

    /// Messages stored and not yet acknowledged or dead-lettered (for metrics).
    async fn pending(&self) -> Result<u64>;

    /// Keeps `letter` durably, replacing a letter with the same id. The worker stores the
    /// letter before it dead-letters the delivery, so a crash in between gives a redelivery
    /// (and the same letter again), never a lost call.
    async fn put_dead_letter(&self, letter: DeadLetter) -> Result<()>;

    /// Every dead letter, newest first.
    async fn dead_letters(&self) -> Result<Vec<DeadLetter>>;

    /// One dead letter.
    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>>;

    /// Removes one dead letter; whether it was there.
    async fn remove_dead_letter(&self, id: &str) -> Result<bool>;

    /// Removes every dead letter; how many there were.
    async fn purge_dead_letters(&self) -> Result<u64>;

    /// Applies `update` to the ledger row of call `id` atomically (no other update of that
    /// row comes between its read and its write) and returns the row as it is after it.
    /// `durable`: committed before answering (a cancel); otherwise it may ride on the next
    /// durable commit (an attempt's progress: losing it on a crash means the record shows the
    /// previous step, never a wrong one).
    async fn ledger_update(
        &self,
        id: &str,
        update: LedgerUpdate,
        durable: bool,
    ) -> Result<Option<LedgerRow>>;

    /// The ledger row of call `id` (`None` when there is none, or it expired).
    async fn ledger_get(&self, id: &str) -> Result<Option<LedgerRow>>;

    /// Rows matching `query`, newest (by creation) first.
    async fn ledger_list(&self, query: &LedgerQuery) -> Result<Vec<LedgerRow>>;

    /// The kept result of call `id`, when one was written.
    async fn ledger_result(&self, id: &str) -> Result<Option<Bytes>>;

    /// Yields (at least) whenever the row of call `id` may have changed, from the moment this
    /// returns: read the row after subscribing, then wait on the stream and read again.
    async fn ledger_watch(&self, id: &str) -> Result<LedgerWatch>;
}

/// The changes of one ledger row: an item whenever it may have changed (spurious items are
/// allowed, missed changes are not); ends when the queue closes.
pub type LedgerWatch = futures_util::stream::BoxStream<'static, ()>;

impl fmt::Debug for dyn WorkQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkQueue")
    }
}

/// Opens the queue named by `url`: `nats://host:port` (JetStream; several servers of one
/// cluster as seeds: `nats://a:4222,nats://b:4222`) or `file:///path` (embedded store in
/// that file, which keeps one copy: `config.replicas` above 1 is refused).
pub async fn open(url: &str, config: QueueConfig) -> Result<Arc<dyn WorkQueue>> {
    if url.starts_with("nats://") || url.starts_with("tls://") {
        Ok(Arc::new(
            jetstream::JetStreamQueue::connect(url, config).await?,
        ))
    } else if let Some(path) = url.strip_prefix("file://") {
        if path.is_empty() {
            return Err(Error::UnsupportedUrl(url.to_owned()));
        }
        if config.replicas > 1 {
            return Err(Error::misconfigured(
                format_args!("open the embedded queue {path}"),
                format_args!(
                    "it is one file on one machine and keeps one copy, not {}: use \
                     --queue-replicas 1, or a JetStream cluster (--queue nats://...)",
                    config.replicas
                ),
            ));
        }
        Ok(Arc::new(
            embedded::EmbeddedQueue::open(path.as_ref(), config).await?,
        ))
    } else {
        Err(Error::UnsupportedUrl(url.to_owned()))
    }
}
