//! The embedded backend: a work queue in one redb file inside Courier's own process
//! (`file:///path`), with the semantics of a JetStream work-queue stream read by a durable
//! pull consumer with explicit acks.
//!
//! - `store`: the tables and what a transaction does to them (leases and retry times are
//!   wall-clock deadlines, so they hold across a restart);
//! - `writer`: the one thread that owns the file, batching every operation into group
//!   commits; publishes are fsynced before they are acknowledged (`sync_publish`, the
//!   default), settles on an interval, changes to the dead letters always;
//! - `ledger`: the ledger's tables (one row per call, written in the publish's transaction;
//!   updates run in the writer's transaction, reads on the caller's thread);
//! - `watchers`: who waits for which ledger row, woken by the writer after each commit;
//! - this module: the async face ([`EmbeddedQueue`]) and fetch's waiting. A fetch that finds
//!   nothing waits for a commit that may have made something visible (a publish, a retry, a
//!   new lease), for the earliest stored visibility time (a lease's or a retry's end), or for
//!   its own deadline, whichever comes first, and then looks again. Nothing polls.
//!
//! Settling a delivery that is no longer current (its lease ran out and the message was
//! handed out again, or it was already settled) changes nothing and returns `Ok(())`: its
//! holder could not act on an error, and the current holder settles the message. Each
//! delivery carries the message's delivery count as a token; only the current count settles.
//! A message whose lease ran out but that was not handed out again yet can still be settled by
//! its holder.
//!
//! One process may open a file once: a second `open` of the same file (in this or another
//! process) fails with [`Error::Storage`] until the first queue is dropped or closed.

mod ledger;
mod store;
mod watchers;
mod writer;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::time::Instant;

use crate::{
    Begun, DeadLetter, Delivery, Error, LedgerBegin, LedgerQuery, LedgerRow, LedgerUpdate,
    LedgerWatch, Message, QueueConfig, Receipt, Result, Settle, SettledRecorded, Settlement,
    WorkQueue,
};
use ledger::Limits;
use store::{Leased, ceil_ms, now_ms};
use watchers::Watchers;
use writer::{Action, BeginFn, Command, Op, Outcome, UpdateFn, WriterConfig};

/// A work queue in a redb file.
///
/// Leases and retry times are wall-clock deadlines (so they hold across a restart); a clock
/// stepped forward ends leases early, one stepped back makes them last longer.
///
/// A fetch cancelled while the writer runs it may have leased messages that nobody receives;
/// they are handed out again when that lease ends, as with JetStream.
///
/// Dropping it finishes the operations already sent, commits durably and releases the file;
/// the drop waits for that (a few milliseconds). [`EmbeddedQueue::close`] does the same
/// without blocking an async thread. Deliveries still held afterwards can no longer be
/// settled; their messages are handed out again when their leases end, as after a crash.
pub struct EmbeddedQueue {
    shared: Arc<Shared>,
    max_payload_bytes: usize,
    writer: Option<JoinHandle<()>>,
}

/// What the queue and its deliveries share: the way to the writer thread, and read access
/// to the file for the questions that change nothing.
struct Shared {
    path: PathBuf,
    commands: mpsc::Sender<Command>,
    /// The writer's database, for read transactions taken on the caller's thread: a read
    /// (`is_outstanding`, `pending`) never waits behind the writer's batches and their fsyncs.
    /// `Weak`, so the file is still released when the writer stops (a read under way at that
    /// moment holds it for the few microseconds it takes).
    readers: Weak<redb::Database>,
    /// One per command sent and not yet answered.
    permits: Arc<Semaphore>,
    /// Notified after a commit that may have made a message visible sooner.
    visible: Arc<Notify>,
    /// The ledger's limits; `None`: the ledger is off.
    ledger: Option<Limits>,
    /// Woken by the writer after commits that changed ledger rows.
    watchers: Arc<Watchers>,
    /// Set by the writer while changes it has answered are not committed yet.
    uncommitted: Arc<AtomicBool>,
}

impl fmt::Debug for EmbeddedQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedQueue")
            .field("path", &self.shared.path)
            .field("max_payload_bytes", &self.max_payload_bytes)
            .finish_non_exhaustive()
    }
}

impl EmbeddedQueue {
    /// Opens (or creates, with its parent directories) the store at `path`.
    pub async fn open(path: &Path, config: QueueConfig) -> Result<Self> {
        let path = path.to_owned();
        let visible = Arc::new(Notify::new());
        let watchers = Arc::new(Watchers::default());
        let ledger = Limits::of(&config.ledger);
        let writer_config = WriterConfig {
            ack_wait_ms: ceil_ms(config.ack_wait),
            dedup_window_ms: ceil_ms(config.dedup_window),
            sync_publish: config.sync_publish,
            ledger,
        };
        let uncommitted = Arc::new(AtomicBool::new(false));
        let (commands, writer, readers) = {
            let path = path.clone();
            let visible = Arc::clone(&visible);
            let watchers = Arc::clone(&watchers);
            let uncommitted = Arc::clone(&uncommitted);
            tokio::task::spawn_blocking(move || {
                writer::start(&path, writer_config, visible, watchers, uncommitted)
            })
            .await
            .map_err(|e| Error::storage("opening the embedded queue", e))??
        };
        tracing::debug!(
            path = %path.display(),
            sync_publish = config.sync_publish,
            "Embedded queue opened."
        );
        Ok(Self {
            shared: Arc::new(Shared {
                path,
                commands,
                readers,
                permits: Arc::new(Semaphore::new(writer::MAX_QUEUED_COMMANDS)),
                visible,
                ledger,
                watchers,
                uncommitted,
            }),
            max_payload_bytes: config.max_payload_bytes,
            writer: Some(writer),
        })
    }

    /// Finishes the operations already sent, commits durably and releases the file.
    pub async fn close(mut self) {
        if let Some(writer) = self.stop_writer()
            && tokio::task::spawn_blocking(move || join(writer))
                .await
                .is_err()
        {
            tracing::error!("Embedded queue close was interrupted.");
        }
    }

    /// Tells the writer to stop after the commands already sent; refuses new ones.
    fn stop_writer(&mut self) -> Option<JoinHandle<()>> {
        self.shared.permits.close();
        self.shared.watchers.close();
        // Fails only when the writer already stopped.
        let _ = self.shared.commands.send(Command::Close);
        self.writer.take()
    }

    /// Leases up to `max` messages (with `begin` applied to their ledger rows in the same
    /// transaction), waiting at most `wait` for the first one.
    async fn lease(
        &self,
        max: usize,
        wait: Duration,
        begin: Option<BeginFn>,
    ) -> Result<(Vec<Leased>, Vec<Outcome>)> {
        if max == 0 {
            return Ok((Vec::new(), Vec::new()));
        }
        let started = Instant::now();
        // A wait too long to represent is a wait of a year.
        let deadline = started
            .checked_add(wait)
            .unwrap_or_else(|| started + Duration::from_secs(365 * 24 * 3600));
        loop {
            // Registered before asking, so a commit between the answer and the wait still
            // wakes this fetch.
            let woken = self.shared.visible.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let (leased, next_visible_at, begun) = match self
                .shared
                .run(Op::Fetch {
                    max,
                    begin: begin.clone(),
                })
                .await?
            {
                Outcome::Fetched {
                    leased,
                    next_visible_at,
                    begun,
                } => (leased, next_visible_at, begun),
                other => return Err(self.shared.unexpected(&other)),
            };
            if !leased.is_empty() {
                return Ok((leased, begun));
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok((Vec::new(), Vec::new()));
            }
            let wake = next_visible_at.map_or(deadline, |at| {
                // At least a millisecond: the visibility check has millisecond resolution.
                let until_visible = Duration::from_millis(at.saturating_sub(now_ms()).max(1));
                now.checked_add(until_visible)
                    .map_or(deadline, |visible| deadline.min(visible))
            });
            tokio::select! {
                () = &mut woken => {}
                () = tokio::time::sleep_until(wake) => {}
            }
        }
    }

    fn deliveries(&self, leased: Vec<Leased>) -> Vec<Delivery> {
        leased
            .into_iter()
            .map(|leased| {
                let settle = EmbeddedSettle {
                    shared: Arc::clone(&self.shared),
                    seq: leased.seq,
                    attempt: leased.attempt,
                };
                Delivery::new(leased.message, leased.attempt, Box::new(settle))
            })
            .collect()
    }
}

impl Drop for EmbeddedQueue {
    fn drop(&mut self) {
        let Some(writer) = self.stop_writer() else {
            return;
        };
        // Waiting is what makes a reopen right after the drop find the file released.
        match tokio::runtime::Handle::try_current() {
            Ok(runtime)
                if runtime.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread =>
            {
                tokio::task::block_in_place(|| join(writer));
            }
            _ => join(writer),
        }
    }
}

fn join(writer: JoinHandle<()>) {
    if writer.join().is_err() {
        tracing::error!("Embedded queue writer thread panicked.");
    }
}

impl Shared {
    /// Runs `read` in a read transaction on this thread. It sees every batch the writer has
    /// committed (durably or not), as an op sent to the writer after those would. A read of
    /// these small tables is a few page lookups in redb's cache, short enough for an async
    /// thread.
    fn read<T>(
        &self,
        what: &'static str,
        read: impl FnOnce(&redb::ReadTransaction) -> std::result::Result<T, redb::Error>,
    ) -> Result<T> {
        use redb::ReadableDatabase as _;
        let db = self.readers.upgrade().ok_or_else(|| self.closed())?;
        let txn = db
            .begin_read()
            .map_err(|e| Error::storage(what, redb::Error::from(e)))?;
        read(&txn).map_err(|e| Error::storage(what, e))
    }

    /// Waits until every change the writer has answered is committed, so a read transaction
    /// begun next sees it (the writer answers leases, settles and progress before their
    /// commit: `writer::COMMIT_AFTER`). Free when there is none.
    async fn committed(&self) -> Result<()> {
        if self.uncommitted.load(Ordering::Acquire) {
            self.run(Op::Sync).await?;
        }
        Ok(())
    }

    /// Sends `op` to the writer and waits for its outcome.
    async fn run(&self, op: Op) -> Result<Outcome> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|_| self.closed())?;
        let (reply, outcome) = oneshot::channel();
        self.commands
            .send(Command::Run { op, reply, permit })
            .map_err(|_| self.closed())?;
        outcome.await.map_err(|_| self.closed())?
    }

    /// The ledger's limits, or [`Error::LedgerOff`].
    fn ledger(&self) -> Result<Limits> {
        self.ledger.ok_or(Error::LedgerOff)
    }

    fn closed(&self) -> Error {
        Error::storage(
            format_args!("embedded queue {}", self.path.display()),
            "the queue is closed",
        )
    }

    fn unexpected_count(&self) -> Error {
        Error::storage(
            format_args!("embedded queue {}", self.path.display()),
            "the writer answered a batch with too few receipts",
        )
    }

    /// A ledger update's outcome as [`WorkQueue::ledger_update`] answers it.
    fn ledger_answer(&self, id: &str, outcome: Outcome) -> Result<Option<LedgerRow>> {
        match outcome {
            Outcome::LedgerUpdated(row) => Ok(row),
            Outcome::LedgerUpdatePanicked => Err(Error::storage(
                format_args!("updating the ledger row of call {id:?}"),
                "the update panicked",
            )),
            Outcome::LedgerOff => Err(Error::LedgerOff),
            other => Err(self.unexpected(&other)),
        }
    }

    fn unexpected(&self, outcome: &Outcome) -> Error {
        Error::storage(
            format_args!("embedded queue {}", self.path.display()),
            format!("the writer answered with the wrong outcome: {outcome:?}"),
        )
    }
}

#[async_trait]
impl WorkQueue for EmbeddedQueue {
    async fn publish_tracked(&self, message: Message) -> Result<Receipt> {
        self.publish_recorded(message, None).await
    }

    /// The row is written in the publish's transaction (no commit of its own), when the
    /// message is stored and its id has no row yet.
    async fn publish_recorded(&self, message: Message, row: Option<LedgerRow>) -> Result<Receipt> {
        if message.payload.len() > self.max_payload_bytes {
            return Err(Error::TooLarge {
                size: message.payload.len(),
                limit: self.max_payload_bytes,
            });
        }
        let row = row.filter(|_| self.shared.ledger.is_some());
        match self.shared.run(Op::Publish { message, row }).await? {
            Outcome::Published(published, seq) => Ok(Receipt { published, seq }),
            other => Err(self.shared.unexpected(&other)),
        }
    }

    /// One writer command for the whole batch: stored in one transaction (one fsync), answered
    /// at once. A message over the size limit fails alone; a failed commit fails them all.
    async fn publish_batch(
        &self,
        messages: Vec<(Message, Option<LedgerRow>)>,
    ) -> Vec<Result<Receipt>> {
        let mut answers: Vec<Option<Result<Receipt>>> = Vec::with_capacity(messages.len());
        let mut storable = Vec::with_capacity(messages.len());
        for (message, row) in messages {
            if message.payload.len() > self.max_payload_bytes {
                answers.push(Some(Err(Error::TooLarge {
                    size: message.payload.len(),
                    limit: self.max_payload_bytes,
                })));
            } else {
                answers.push(None);
                storable.push((message, row.filter(|_| self.shared.ledger.is_some())));
            }
        }
        let outcome = if storable.is_empty() {
            Ok(Outcome::PublishedBatch(Vec::new()))
        } else {
            self.shared.run(Op::PublishBatch(storable)).await
        };
        let mut receipts = match outcome {
            Ok(Outcome::PublishedBatch(receipts)) => Ok(receipts
                .into_iter()
                .map(|(published, seq)| Receipt { published, seq })),
            Ok(other) => Err(self.shared.unexpected(&other)),
            Err(e) => Err(e),
        };
        answers
            .into_iter()
            .map(|answer| match answer {
                Some(answer) => answer,
                None => match &mut receipts {
                    Ok(receipts) => receipts
                        .next()
                        .ok_or_else(|| self.shared.unexpected_count()),
                    Err(e) => Err(e.for_each()),
                },
            })
            .collect()
    }

    async fn fetch(&self, max: usize, wait: Duration) -> Result<Vec<Delivery>> {
        let (leased, _) = self.lease(max, wait, None).await?;
        Ok(self.deliveries(leased))
    }

    /// The begin updates run in the fetch's own transaction: no command of their own.
    async fn fetch_begun(
        &self,
        max: usize,
        wait: Duration,
        begin: LedgerBegin,
    ) -> Result<Vec<Begun>> {
        if self.shared.ledger().is_err() {
            let (leased, _) = self.lease(max, wait, None).await?;
            return Ok(self
                .deliveries(leased)
                .into_iter()
                .map(|delivery| Begun {
                    delivery,
                    row: Err(Error::LedgerOff),
                })
                .collect());
        }
        let (leased, begun) = self.lease(max, wait, Some(BeginFn(begin))).await?;
        if begun.len() != leased.len() {
            return Err(self.shared.unexpected_count());
        }
        let rows: Vec<_> = leased
            .iter()
            .zip(begun)
            .map(|(lease, outcome)| self.shared.ledger_answer(&lease.message.id, outcome))
            .collect();
        Ok(self
            .deliveries(leased)
            .into_iter()
            .zip(rows)
            .map(|(delivery, row)| Begun { delivery, row })
            .collect())
    }

    async fn pending(&self) -> Result<u64> {
        self.shared.committed().await?;
        self.shared
            .read("counting the embedded queue's messages", store::pending)
    }

    async fn is_outstanding(&self, seq: u64) -> Result<bool> {
        self.shared.committed().await?;
        self.shared
            .read("looking up a message in the embedded queue", |txn| {
                store::contains(txn, seq)
            })
    }

    async fn put_dead_letter(&self, letter: DeadLetter) -> Result<()> {
        match self.shared.run(Op::PutDeadLetter(letter)).await? {
            Outcome::DeadLetterPut => Ok(()),
            other => Err(self.shared.unexpected(&other)),
        }
    }

    async fn dead_letters(&self) -> Result<Vec<DeadLetter>> {
        match self.shared.run(Op::DeadLetters).await? {
            Outcome::DeadLetters(letters) => Ok(letters),
            other => Err(self.shared.unexpected(&other)),
        }
    }

    async fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>> {
        match self.shared.run(Op::DeadLetter(id.to_owned())).await? {
            Outcome::DeadLetter(letter) => Ok(letter),
            other => Err(self.shared.unexpected(&other)),
        }
    }

    async fn remove_dead_letter(&self, id: &str) -> Result<bool> {
        match self.shared.run(Op::RemoveDeadLetter(id.to_owned())).await? {
            Outcome::DeadLetterRemoved(removed) => Ok(removed),
            other => Err(self.shared.unexpected(&other)),
        }
    }

    async fn purge_dead_letters(&self) -> Result<u64> {
        match self.shared.run(Op::PurgeDeadLetters).await? {
            Outcome::DeadLettersPurged(purged) => Ok(purged),
            other => Err(self.shared.unexpected(&other)),
        }
    }

    /// Runs `update` on the writer thread, inside its transaction; `durable` commits with an
    /// fsync before answering, otherwise the change rides on the flush interval.
    async fn ledger_update(
        &self,
        id: &str,
        update: LedgerUpdate,
        durable: bool,
    ) -> Result<Option<LedgerRow>> {
        self.shared.ledger()?;
        let op = Op::LedgerUpdate {
            id: id.to_owned(),
            update: UpdateFn(update),
            durable,
        };
        let outcome = self.shared.run(op).await?;
        self.shared.ledger_answer(id, outcome)
    }

    async fn ledger_get(&self, id: &str) -> Result<Option<LedgerRow>> {
        let limits = self.shared.ledger()?;
        self.shared.committed().await?;
        self.shared.read("reading a ledger row", |txn| {
            ledger::get(txn, id, limits, now_ms())
        })
    }

    /// A list may walk the whole index (a filter that matches little), so it runs on a
    /// blocking thread rather than on the caller's.
    async fn ledger_list(&self, query: &LedgerQuery) -> Result<Vec<LedgerRow>> {
        let limits = self.shared.ledger()?;
        self.shared.committed().await?;
        let shared = Arc::clone(&self.shared);
        let query = query.clone();
        tokio::task::spawn_blocking(move || {
            shared.read("listing ledger rows", |txn| {
                ledger::list(txn, &query, limits, now_ms())
            })
        })
        .await
        .map_err(|e| Error::storage("listing ledger rows", e))?
    }

    async fn ledger_result(&self, id: &str) -> Result<Option<bytes::Bytes>> {
        let limits = self.shared.ledger()?;
        self.shared.committed().await?;
        self.shared.read("reading a kept result", |txn| {
            ledger::result(txn, id, limits, now_ms())
        })
    }

    async fn ledger_watch(&self, id: &str) -> Result<LedgerWatch> {
        self.shared.ledger()?;
        self.shared
            .watchers
            .subscribe(id)
            .ok_or_else(|| self.shared.closed())
    }
}

/// Settles one delivery: names the message and the delivery count it was handed out with.
struct EmbeddedSettle {
    shared: Arc<Shared>,
    seq: u64,
    attempt: u64,
}

impl EmbeddedSettle {
    async fn settle(&self, action: Action) -> Result<()> {
        let op = Op::Settle {
            seq: self.seq,
            attempt: self.attempt,
            action,
        };
        match self.shared.run(op).await? {
            Outcome::Settled { current: true } => Ok(()),
            Outcome::Settled { current: false } => {
                tracing::debug!(
                    seq = self.seq,
                    attempt = self.attempt,
                    action = ?action,
                    "Stale settle ignored: the delivery was settled or handed out again."
                );
                Ok(())
            }
            other => Err(self.shared.unexpected(&other)),
        }
    }
}

#[async_trait]
impl Settle for EmbeddedSettle {
    async fn settle_recorded(
        &self,
        settlement: Settlement,
        id: &str,
        update: &LedgerUpdate,
    ) -> Option<SettledRecorded> {
        let action = match settlement {
            Settlement::Ack | Settlement::DeadLetter => Action::Remove,
            Settlement::RetryAfter(delay) => Action::RetryAfter(delay),
        };
        let op = Op::SettleRecorded {
            seq: self.seq,
            attempt: self.attempt,
            action,
            id: id.to_owned(),
            update: UpdateFn(Arc::clone(update)),
        };
        Some(match self.shared.run(op).await {
            Ok(Outcome::SettledRecorded { current, ledger }) => {
                if !current {
                    tracing::debug!(
                        seq = self.seq,
                        attempt = self.attempt,
                        action = ?action,
                        "Stale settle ignored: the delivery was settled or handed out again."
                    );
                }
                SettledRecorded {
                    row: self.shared.ledger_answer(id, *ledger),
                    settled: Ok(()),
                }
            }
            Ok(other) => SettledRecorded {
                row: Err(self.shared.unexpected(&other)),
                settled: Err(self.shared.unexpected(&other)),
            },
            Err(e) => SettledRecorded {
                row: Err(e.for_each()),
                settled: Err(e),
            },
        })
    }

    async fn ack(&self) -> Result<()> {
        self.settle(Action::Remove).await
    }

    async fn retry_after(&self, delay: Duration) -> Result<()> {
        self.settle(Action::RetryAfter(delay)).await
    }

    async fn keep_alive(&self) -> Result<()> {
        self.settle(Action::KeepAlive).await
    }

    async fn dead_letter(&self) -> Result<()> {
        self.settle(Action::Remove).await
    }
}
