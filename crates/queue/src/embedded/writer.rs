//! The writer thread: after `open`, the only code that writes the redb file.
//!
//! Every write (publish, fetch, settle, ledger updates, and those on the dead letters) is a
//! [`Command`] on one channel. The thread takes the first waiting command, drains up to
//! [`MAX_BATCH`] more, runs them all in one write transaction (group commit), then answers
//! each command through its oneshot, after the commit when the batch must be durable.
//! Callers are bounded by a semaphore of [`MAX_QUEUED_COMMANDS`] permits, so a stalled disk
//! pushes back on publishers instead of queueing without limit.
//!
//! Durability: with `sync_publish` (the default), a batch that stored a message commits
//! durably ([`Durability::Immediate`], fsync) before anyone in it is answered, so an accepted
//! call survives a crash of the process and of the machine; concurrent publishes share one
//! fsync. Leases, settles and ledger progress need no commit before their answer: they run in
//! a transaction the writer keeps open for the batches that follow, are answered at once, and
//! are committed with [`Durability::None`] at most [`COMMIT_AFTER`] later (or with the next
//! batch that must be durable). A durable commit follows at most [`FLUSH_INTERVAL`] after the
//! first non-durable one (folded into the next batch, or as an empty commit when idle), and
//! losing one only means one more delivery: redb's non-durable commits live in the process
//! until a durable one, so a crash loses the same either way. A read on another thread (the
//! ledger's gets and lists, `pending`, `is_outstanding`) first asks for the open transaction
//! to be committed when it holds answered changes ([`Op::Sync`]), so whoever was answered and
//! then reads sees the change. Putting, removing or purging dead letters always commits
//! durably (when it changed something): the worker dead-letters a delivery only after its
//! letter is stored. Without `sync_publish`, publishes ride on the interval too and a crash
//! loses up to [`FLUSH_INTERVAL`] of them. Closing the queue ends with a durable commit.
//!
//! The ledger: a publish's row is written in the publish's own transaction, so it costs no
//! commit of its own and takes the publish's durability. A ledger update runs its closure
//! inside the batch's transaction (nothing else writes between its read and its write) and
//! commits durably when asked to (a cancel), otherwise on the interval like a settle. A fetch
//! may carry a begin update for the rows of the messages it leases, and a settle the update
//! that records how the attempt ended (`Op::SettleRecorded`): both run in the same transaction
//! as the lease or the settle, so a worker's call costs it no ledger command of its own. After
//! a commit that changed rows, their watchers are woken.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use redb::{Database, DatabaseError, Durability, WriteTransaction};
use tokio::sync::{Notify, OwnedSemaphorePermit, oneshot};

use super::ledger::{self, LedgerTables, Limits};
use super::store::{Leased, Settlement, Tables, ceil_ms, now_ms};
use super::watchers::Watchers;
use crate::{
    DeadLetter, Error, LedgerBegin, LedgerChange, LedgerRow, LedgerUpdate, Message, Published,
    Result,
};

/// Longest time a non-durable commit stays unsynced (JetStream's file store syncs every 2
/// minutes by default; a queue of calls wants less).
pub(super) const FLUSH_INTERVAL: Duration = Duration::from_secs(1);

/// Longest time a transaction whose commands were all answered stays open for the batches
/// that follow before it is committed. Leases, settles and ledger progress are answered when
/// they have run in the open transaction, not after its commit: a crash loses them either way
/// until the next durable commit ([`FLUSH_INTERVAL`]), and one commit for many batches
/// copies each B-tree page a call touches once instead of once per batch. Readers on other
/// threads see the changes when it commits, this long after at most.
pub(super) const COMMIT_AFTER: Duration = Duration::from_millis(2);

/// Memory redb may keep of the file's pages (its default is 1 GiB). A queue is read at its
/// head and written at its tail, and the ledger's rows are rewritten soon after they are
/// written: the pages read again are few. Measured on the completion benchmark (BENCHMARKS.md,
/// issue 11's ninth look): Courier's worker ran about 7 % more calls per second than with the
/// default, with less CPU per call (the bench's bare loop, on the same store, about 6 % fewer);
/// the process's peak memory there was about the same, so why is not established.
const CACHE_BYTES: usize = 64 * 1024 * 1024;

/// Most commands run in one transaction.
const MAX_BATCH: usize = 1024;

/// Most commands waiting for the writer before callers wait for room.
pub(super) const MAX_QUEUED_COMMANDS: usize = 8192;

/// What the writer is asked to do.
#[derive(Debug)]
pub(super) enum Op {
    /// A publish, and the ledger row written with it when the message is stored.
    Publish {
        message: Message,
        row: Option<LedgerRow>,
    },
    /// Several publishes as one command (a burst of cron fires): one channel send and one
    /// answer instead of one per message, stored in the same transaction.
    PublishBatch(Vec<(Message, Option<LedgerRow>)>),
    /// A lease of up to `max` messages, and, when given, the begin update of each leased
    /// message's ledger row in the same transaction.
    Fetch {
        max: usize,
        begin: Option<BeginFn>,
    },
    Settle {
        seq: u64,
        attempt: u64,
        action: Action,
    },
    /// An update of call `id`'s ledger row, then a settle, in one transaction.
    SettleRecorded {
        seq: u64,
        attempt: u64,
        action: Action,
        id: String,
        update: UpdateFn,
    },
    PutDeadLetter(DeadLetter),
    DeadLetters,
    DeadLetter(String),
    RemoveDeadLetter(String),
    PurgeDeadLetters,
    /// Commit what was answered before it, so a read after it sees every answered change.
    Sync,
    /// An atomic read-modify-write of the ledger row of call `id`.
    LedgerUpdate {
        id: String,
        update: UpdateFn,
        /// Commit durably before answering.
        durable: bool,
    },
}

impl Op {
    /// Whether running it may read or write the ledger's tables.
    fn touches_ledger(&self) -> bool {
        match self {
            Self::Publish { row, .. } => row.is_some(),
            Self::PublishBatch(messages) => messages.iter().any(|(_, row)| row.is_some()),
            Self::LedgerUpdate { .. } | Self::SettleRecorded { .. } => true,
            Self::Fetch { begin, .. } => begin.is_some(),
            _ => false,
        }
    }
}

/// A [`LedgerUpdate`], which has no `Debug` of its own.
pub(super) struct UpdateFn(pub(super) LedgerUpdate);

impl fmt::Debug for UpdateFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LedgerUpdate")
    }
}

/// A [`LedgerBegin`], which has no `Debug` of its own.
#[derive(Clone)]
pub(super) struct BeginFn(pub(super) LedgerBegin);

impl fmt::Debug for BeginFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LedgerBegin")
    }
}

/// How a delivery is settled.
#[derive(Debug, Clone, Copy)]
pub(super) enum Action {
    /// Ack or dead-letter.
    Remove,
    /// Visible again after this delay.
    RetryAfter(Duration),
    /// Restart the lease.
    KeepAlive,
}

/// The writer's answer to an [`Op`] (the variant matching it).
#[derive(Debug)]
pub(super) enum Outcome {
    /// What was done, and the message's sequence when it was stored now.
    Published(Published, Option<u64>),
    /// [`Outcome::Published`] for each message of a [`Op::PublishBatch`], in its order.
    PublishedBatch(Vec<(Published, Option<u64>)>),
    Fetched {
        leased: Vec<Leased>,
        /// When nothing was leased: when the earliest stored message becomes visible.
        next_visible_at: Option<u64>,
        /// With a begin update: its outcome for each leased message, in their order (a
        /// ledger outcome: [`Outcome::LedgerUpdated`], [`Outcome::LedgerUpdatePanicked`] or
        /// [`Outcome::LedgerOff`]).
        begun: Vec<Outcome>,
    },
    /// Whether the settle named the message's current delivery (otherwise it changed nothing).
    Settled {
        current: bool,
    },
    /// [`Outcome::Settled`] after a ledger update, and the update's outcome.
    SettledRecorded {
        current: bool,
        ledger: Box<Outcome>,
    },
    DeadLetterPut,
    DeadLetters(Vec<DeadLetter>),
    DeadLetter(Option<DeadLetter>),
    /// Whether the letter was there.
    DeadLetterRemoved(bool),
    /// How many letters there were.
    DeadLettersPurged(u64),
    /// The row after the update (`None`: there is none).
    LedgerUpdated(Option<LedgerRow>),
    /// The update's closure panicked; nothing was written for it.
    LedgerUpdatePanicked,
    /// The ledger is off.
    LedgerOff,
    /// What was answered before is committed.
    Synced,
}

/// One message to the writer thread.
pub(super) enum Command {
    Run {
        op: Op,
        reply: oneshot::Sender<Result<Outcome>>,
        /// Held until the command is answered: the bound on queued commands.
        permit: OwnedSemaphorePermit,
    },
    /// Finish the commands sent before this one, commit durably and stop.
    Close,
}

/// The queue settings the writer applies, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub(super) struct WriterConfig {
    pub(super) ack_wait_ms: u64,
    pub(super) dedup_window_ms: u64,
    pub(super) sync_publish: bool,
    /// `None`: the ledger is off.
    pub(super) ledger: Option<Limits>,
}

/// Opens (or creates) the store at `path` and starts its writer thread. `visible` is notified
/// after every commit that may have made a message visible sooner than fetchers were told;
/// `watchers` are told which ledger rows every commit changed.
pub(super) fn start(
    path: &Path,
    config: WriterConfig,
    visible: Arc<Notify>,
    watchers: Arc<Watchers>,
    uncommitted: Arc<AtomicBool>,
) -> Result<(mpsc::Sender<Command>, JoinHandle<()>, Weak<Database>)> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).map_err(|e| {
            Error::storage(format_args!("creating directory {}", parent.display()), e)
        })?;
    }
    let db = Arc::new(Database::builder().set_cache_size(CACHE_BYTES).create(path).map_err(|e| match e {
        DatabaseError::DatabaseAlreadyOpen => Error::storage(
            format_args!(
                "opening {}: the file is already open (one queue, in one process, per file)",
                path.display()
            ),
            e,
        ),
        e => Error::storage(format_args!("opening {}", path.display()), e),
    })?);
    let next_seq = initialise(&db)
        .map_err(|e| Error::storage(format_args!("initialising {}", path.display()), e))?;
    let (commands, receiver) = mpsc::channel();
    let readers = Arc::downgrade(&db);
    let writer = Writer {
        db,
        config,
        next_seq,
        visible,
        watchers,
        unflushed_since: None,
        open: None,
        uncommitted,
    };
    let thread = thread::Builder::new()
        .name("courier-queue-writer".into())
        .spawn(move || writer.run(&receiver))
        .map_err(|e| Error::storage("starting the embedded queue's writer thread", e))?;
    Ok((commands, thread, readers))
}

/// Creates the tables in a new store; returns the next sequence number.
fn initialise(db: &Database) -> Result<u64, redb::Error> {
    let txn = db.begin_write()?;
    let next_seq = Tables::open(&txn)?.next_seq()?;
    ledger::initialise(&txn)?;
    txn.commit()?;
    Ok(next_seq)
}

struct Writer {
    /// The only strong reference: the file is released when the writer stops. Readers hold
    /// a `Weak` (see `super::Shared::read`).
    db: Arc<Database>,
    config: WriterConfig,
    next_seq: u64,
    visible: Arc<Notify>,
    watchers: Arc<Watchers>,
    /// When the first non-durable commit since the last durable one happened, if any.
    unflushed_since: Option<Instant>,
    /// The transaction kept open for more batches, whose commands were answered already.
    open: Option<Open>,
    /// Set while `open` holds answered changes: a read on another thread first asks for a
    /// commit ([`Op::Sync`]) so it sees them.
    uncommitted: Arc<AtomicBool>,
}

/// A write transaction kept open across batches (see [`COMMIT_AFTER`]).
struct Open {
    txn: WriteTransaction,
    /// When it began: it is committed [`COMMIT_AFTER`] later at the latest.
    began: Instant,
    /// The next sequence number once it commits.
    next_seq: u64,
    /// Whether it wrote anything (otherwise it is aborted, not committed).
    wrote: bool,
    /// The ledger rows it changed, whose watchers are told after the commit.
    ledger_changed: Vec<String>,
}

/// What one batch did inside a transaction, before any commit.
struct Applied {
    outcomes: Vec<Outcome>,
    wrote: bool,
    /// A message may have become visible, or a visibility time earlier than any known before
    /// was stored: waiting fetchers should look again.
    wake_fetchers: bool,
    /// The calls whose ledger rows were written or removed.
    ledger_changed: Vec<String>,
    /// Something in it must be on disk before anyone in the batch is answered: a stored
    /// publish with `sync_publish`, a dead letter changed, a durable ledger update.
    durable: bool,
}

/// One batch committed on its own (what the writer's tests look at).
#[cfg(test)]
struct Committed {
    outcomes: Vec<Outcome>,
    /// The calls whose ledger rows were written or removed.
    ledger_changed: Vec<String>,
    /// Committed with [`Durability::Immediate`].
    durable: bool,
}

impl Writer {
    fn run(mut self, commands: &Receiver<Command>) {
        let mut closing = false;
        while !closing {
            let Some(first) = self.next_command(commands) else {
                break;
            };
            let mut batch = Vec::new();
            let mut next = Some(first);
            while let Some(command) = next {
                match command {
                    // A fetch whose caller gave up would lease messages nobody receives.
                    Command::Run {
                        op: Op::Fetch { .. },
                        reply,
                        ..
                    } if reply.is_closed() => {}
                    Command::Run { op, reply, permit } => batch.push((op, reply, permit)),
                    Command::Close => {
                        closing = true;
                        break;
                    }
                }
                next = if batch.len() < MAX_BATCH {
                    commands.try_recv().ok()
                } else {
                    None
                };
            }
            if !batch.is_empty() {
                self.execute(batch);
            }
        }
        if self.unflushed_since.is_some() || self.open.is_some() {
            self.flush();
        }
        tracing::debug!("Embedded queue writer stopped.");
    }

    /// Waits for the next command, committing the open transaction when its time is up and
    /// durably when the flush interval ends while idle. `None` once every sender is gone.
    fn next_command(&mut self, commands: &Receiver<Command>) -> Option<Command> {
        loop {
            let commit_at = self.open.as_ref().map(|open| open.began + COMMIT_AFTER);
            let flush_at = self
                .unflushed_since
                .map(|unflushed_since| unflushed_since + FLUSH_INTERVAL);
            let Some(wake_at) = commit_at.into_iter().chain(flush_at).min() else {
                return commands.recv().ok();
            };
            match commands.recv_timeout(wake_at.saturating_duration_since(Instant::now())) {
                Ok(command) => return Some(command),
                Err(RecvTimeoutError::Timeout) => {
                    if flush_at.is_some_and(|at| at <= Instant::now()) {
                        self.flush();
                    } else {
                        // A failure was logged; the next batch begins a new transaction.
                        let _ = self.commit_open(false);
                    }
                }
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }

    /// A durable commit, of the open transaction or an empty one, which persists the
    /// non-durable commits before it.
    fn flush(&mut self) {
        if self.open.is_some() {
            if self.commit_open(true).is_err() {
                self.unflushed_since = Some(Instant::now());
            }
            return;
        }
        let result = (|| -> Result<(), redb::Error> {
            let mut txn = self.db.begin_write()?;
            txn.set_durability(Durability::Immediate)?;
            txn.commit()?;
            Ok(())
        })();
        match result {
            Ok(()) => self.unflushed_since = None,
            Err(error) => {
                tracing::error!(error = %error, "Embedded queue flush failed.");
                // Try again an interval from now rather than in a tight loop.
                self.unflushed_since = Some(Instant::now());
            }
        }
    }

    /// Commits the open transaction (aborts it when it wrote nothing), durably when asked
    /// to or when the flush interval has ended, then tells the watchers of the rows it changed;
    /// whether it was committed durably.
    fn commit_open(&mut self, durable: bool) -> Result<bool, redb::Error> {
        let Some(open) = self.open.take() else {
            return Ok(false);
        };
        let committed = if open.wrote {
            self.finish(open.txn, durable)
        } else {
            open.txn.abort().map(|()| false).map_err(redb::Error::from)
        };
        // Only now: a reader that sees the flag down must find the changes committed (it
        // reads without asking the writer). Cleared before the commit, a read racing it saw
        // neither the flag nor the changes (an ack answered, then `pending` still counting
        // the message).
        self.uncommitted.store(false, Ordering::Release);
        match committed {
            Ok(durable) => {
                self.next_seq = open.next_seq;
                self.watchers.changed(&open.ledger_changed);
                Ok(durable)
            }
            Err(error) => {
                // Commands answered before the commit lose what they did, as in a crash:
                // leases run out, settles and progress come again with the next delivery.
                tracing::error!(error = %error, "Embedded queue commit failed; leases and settles of the last milliseconds are lost and will be redelivered.");
                Err(error)
            }
        }
    }

    /// Commits `txn`, durably when `durable` or the flush interval has ended; whether it was.
    fn finish(&mut self, mut txn: WriteTransaction, durable: bool) -> Result<bool, redb::Error> {
        let durable = durable
            || self
                .unflushed_since
                .is_some_and(|since| since.elapsed() >= FLUSH_INTERVAL);
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        })?;
        txn.commit()?;
        if durable {
            self.unflushed_since = None;
        } else if self.unflushed_since.is_none() {
            self.unflushed_since = Some(Instant::now());
        }
        Ok(durable)
    }

    /// Runs `batch` in the open transaction (or a new one) and answers every command in it:
    /// after a commit when the batch must be durable or the transaction has been open for
    /// [`COMMIT_AFTER`], at once otherwise, keeping the transaction open for the next batches.
    fn execute(
        &mut self,
        batch: Vec<(Op, oneshot::Sender<Result<Outcome>>, OwnedSemaphorePermit)>,
    ) {
        let ops: Vec<&Op> = batch.iter().map(|(op, _, _)| op).collect();
        let sync = ops.iter().any(|op| matches!(op, Op::Sync));
        let outcomes = self.apply_open(&ops).and_then(|applied| {
            let open = self.open.as_ref().expect("apply_open leaves it open");
            let commit_now = applied.durable || sync || open.began.elapsed() >= COMMIT_AFTER;
            let wrote = open.wrote;
            if commit_now {
                self.commit_open(applied.durable)?;
            } else if wrote {
                // Before anyone is answered: whoever hears of a change and then reads sees it.
                self.uncommitted.store(true, Ordering::Release);
            }
            if applied.wake_fetchers {
                self.visible.notify_waiters();
            }
            Ok(applied.outcomes)
        });
        match outcomes {
            Ok(outcomes) => {
                for ((_, reply, _permit), outcome) in batch.into_iter().zip(outcomes) {
                    // The caller may have stopped waiting; the work is done either way.
                    let _ = reply.send(Ok(outcome));
                }
            }
            Err(error) => {
                tracing::error!(error = %error, commands = batch.len(), "Embedded queue write failed.");
                let error = Arc::new(error);
                for (_, reply, _permit) in batch {
                    let _ = reply.send(Err(Error::storage(
                        "writing the embedded queue",
                        Arc::clone(&error),
                    )));
                }
            }
        }
    }

    /// Applies `ops` in the open transaction, beginning one when there is none, and leaves it
    /// open. On failure the transaction is dropped (aborted).
    fn apply_open(&mut self, ops: &[&Op]) -> Result<Applied, redb::Error> {
        let mut open = match self.open.take() {
            Some(open) => open,
            None => Open {
                txn: self.db.begin_write()?,
                began: Instant::now(),
                next_seq: self.next_seq,
                wrote: false,
                ledger_changed: Vec::new(),
            },
        };
        let applied = self.apply(&open.txn, ops, &mut open.next_seq)?;
        open.wrote |= applied.wrote;
        open.ledger_changed
            .extend_from_slice(&applied.ledger_changed);
        self.open = Some(open);
        Ok(applied)
    }

    /// Applies `ops` in a transaction of their own and commits it, durably when `sync_publish`
    /// asks for it, a dead letter was changed, a durable ledger update wrote or the flush
    /// interval has ended (the writer's tests look at one batch this way).
    #[cfg(test)]
    fn commit(&mut self, ops: &[&Op]) -> Result<Committed, redb::Error> {
        let applied = self.apply_open(ops)?;
        let durable = self.commit_open(applied.durable)?;
        Ok(Committed {
            outcomes: applied.outcomes,
            ledger_changed: applied.ledger_changed,
            durable,
        })
    }

    /// Applies `ops` in `txn`, numbering stored messages from `*next_seq` (advanced), without
    /// committing.
    fn apply(
        &self,
        txn: &WriteTransaction,
        ops: &[&Op],
        next_seq: &mut u64,
    ) -> Result<Applied, redb::Error> {
        let now = now_ms();
        let WriterConfig {
            ack_wait_ms,
            dedup_window_ms,
            sync_publish,
            ledger: ledger_limits,
        } = self.config;
        let mut outcomes = Vec::with_capacity(ops.len());
        let mut stored = 0_usize;
        let mut wrote = false;
        // A change to the dead letters: always committed durably.
        let mut letters_changed = false;
        let mut wake_fetchers = false;
        let mut ledger_changed = Vec::new();
        // A ledger update that asked to be durable wrote.
        let mut ledger_durable = false;
        {
            let mut tables = Tables::open(txn)?;
            // Opened only for a batch that needs them: a publish without a row pays nothing.
            let mut ledger = match ledger_limits {
                Some(limits) if ops.iter().any(|op| op.touches_ledger()) => {
                    Some(LedgerTables::open(txn, limits)?)
                }
                _ => None,
            };
            let mut fetched = false;
            for op in ops {
                outcomes.push(match op {
                    Op::Publish { message, row } => {
                        let (published, seq) =
                            tables.publish(next_seq, message, now, dedup_window_ms)?;
                        stored += usize::from(seq.is_some());
                        if seq.is_some() {
                            record(&mut ledger, message, row.as_ref(), now, &mut ledger_changed)?;
                        }
                        Outcome::Published(published, seq)
                    }
                    Op::PublishBatch(messages) => {
                        let mut receipts = Vec::with_capacity(messages.len());
                        for (message, row) in messages {
                            let receipt =
                                tables.publish(next_seq, message, now, dedup_window_ms)?;
                            if receipt.1.is_some() {
                                stored += 1;
                                record(
                                    &mut ledger,
                                    message,
                                    row.as_ref(),
                                    now,
                                    &mut ledger_changed,
                                )?;
                            }
                            receipts.push(receipt);
                        }
                        Outcome::PublishedBatch(receipts)
                    }
                    Op::LedgerUpdate {
                        id,
                        update,
                        durable,
                    } => {
                        let outcome =
                            update_row(&mut ledger, id, now, &mut ledger_changed, |row| {
                                (update.0)(row)
                            })?;
                        ledger_durable |= *durable && ledger_changed.last() == Some(id);
                        outcome
                    }
                    Op::Fetch { max, begin } => {
                        let leased = tables.lease(*max, now, ack_wait_ms)?;
                        fetched = true;
                        // A new lease's end may be the earliest visibility time.
                        wrote |= !leased.is_empty();
                        wake_fetchers |= !leased.is_empty();
                        let mut begun = Vec::new();
                        if let Some(begin) = begin {
                            begun.reserve(leased.len());
                            for lease in &leased {
                                let message = &lease.message;
                                begun.push(update_row(
                                    &mut ledger,
                                    &message.id,
                                    now,
                                    &mut ledger_changed,
                                    |row| (begin.0)(message, row),
                                )?);
                            }
                        }
                        Outcome::Fetched {
                            leased,
                            next_visible_at: None,
                            begun,
                        }
                    }
                    Op::Settle {
                        seq,
                        attempt,
                        action,
                    } => {
                        let current =
                            settle(&mut tables, (*seq, *attempt, *action), now, ack_wait_ms)?;
                        wrote |= current;
                        wake_fetchers |= current && matches!(action, Action::RetryAfter(_));
                        Outcome::Settled { current }
                    }
                    Op::SettleRecorded {
                        seq,
                        attempt,
                        action,
                        id,
                        update,
                    } => {
                        let ledger_outcome =
                            update_row(&mut ledger, id, now, &mut ledger_changed, |row| {
                                (update.0)(row)
                            })?;
                        let current =
                            settle(&mut tables, (*seq, *attempt, *action), now, ack_wait_ms)?;
                        wrote |= current;
                        wake_fetchers |= current && matches!(action, Action::RetryAfter(_));
                        Outcome::SettledRecorded {
                            current,
                            ledger: Box::new(ledger_outcome),
                        }
                    }
                    Op::Sync => Outcome::Synced,
                    Op::PutDeadLetter(letter) => {
                        tables.put_dead_letter(letter)?;
                        letters_changed = true;
                        Outcome::DeadLetterPut
                    }
                    Op::DeadLetters => Outcome::DeadLetters(tables.dead_letters()?),
                    Op::DeadLetter(id) => Outcome::DeadLetter(tables.dead_letter(id)?),
                    Op::RemoveDeadLetter(id) => {
                        let removed = tables.remove_dead_letter(id)?;
                        letters_changed |= removed;
                        Outcome::DeadLetterRemoved(removed)
                    }
                    Op::PurgeDeadLetters => {
                        let purged = tables.purge_dead_letters()?;
                        letters_changed |= purged > 0;
                        Outcome::DeadLettersPurged(purged)
                    }
                });
            }
            if stored > 0 {
                tables.set_next_seq(*next_seq)?;
                tables.prune_dedup(now, dedup_window_ms, 2 * stored)?;
                wrote = true;
                wake_fetchers = true;
            }
            if let Some(ledger) = &mut ledger
                && !ledger_changed.is_empty()
            {
                ledger.prune(now, 2 * ledger_changed.len(), &mut ledger_changed)?;
                wrote = true;
            }
            if fetched {
                let next = tables.next_visible_at()?;
                for outcome in &mut outcomes {
                    if let Outcome::Fetched {
                        leased,
                        next_visible_at,
                        ..
                    } = outcome
                        && leased.is_empty()
                    {
                        *next_visible_at = next;
                    }
                }
            }
        }
        wrote |= letters_changed;
        Ok(Applied {
            outcomes,
            wrote,
            wake_fetchers,
            ledger_changed,
            durable: wrote && ((sync_publish && stored > 0) || letters_changed || ledger_durable),
        })
    }
}

/// Applies `update` to the ledger row of call `id` (the ledger's outcome for it), adding `id`
/// to `changed` when it wrote. The closure is the caller's code on the thread every queue
/// operation needs: a panic fails its own update, not the queue.
fn update_row(
    ledger: &mut Option<LedgerTables<'_>>,
    id: &str,
    now: u64,
    changed: &mut Vec<String>,
    update: impl FnOnce(Option<&LedgerRow>) -> LedgerChange,
) -> Result<Outcome, redb::Error> {
    let Some(ledger) = ledger else {
        return Ok(Outcome::LedgerOff);
    };
    let current = ledger.get(id, now)?;
    Ok(
        match catch_unwind(AssertUnwindSafe(|| update(current.row.as_ref()))) {
            Err(_) => Outcome::LedgerUpdatePanicked,
            Ok(LedgerChange::Keep) => Outcome::LedgerUpdated(current.row),
            Ok(LedgerChange::Put { row, result }) => {
                ledger.put(id, &current, &row, result.as_deref(), now)?;
                changed.push(id.to_owned());
                Outcome::LedgerUpdated(Some(row))
            }
            Ok(LedgerChange::Append {
                state,
                line,
                result,
            }) => match &current.row {
                Some(over) => {
                    let row = over.appended(&state, &line);
                    ledger.put(id, &current, &row, result.as_deref(), now)?;
                    changed.push(id.to_owned());
                    Outcome::LedgerUpdated(Some(row))
                }
                // Nothing to append to: the update broke its contract; write nothing.
                None => Outcome::LedgerUpdated(None),
            },
        },
    )
}

/// Settles the delivery `(seq, attempt)` as `action`; whether it was the current one.
fn settle(
    tables: &mut Tables<'_>,
    (seq, attempt, action): (u64, u64, Action),
    now: u64,
    ack_wait_ms: u64,
) -> Result<bool, redb::Error> {
    let settlement = match action {
        Action::Remove => Settlement::Remove,
        Action::RetryAfter(delay) => Settlement::VisibleAt(now.saturating_add(ceil_ms(delay))),
        Action::KeepAlive => Settlement::VisibleAt(now.saturating_add(ack_wait_ms)),
    };
    tables.settle(seq, attempt, settlement)
}

/// Writes `row` (when given, and the ledger is on) for the message just stored, unless its id
/// has a row already: a publish creates a row, it never replaces one.
fn record(
    ledger: &mut Option<LedgerTables<'_>>,
    message: &Message,
    row: Option<&LedgerRow>,
    now: u64,
    changed: &mut Vec<String>,
) -> Result<(), redb::Error> {
    if let (Some(ledger), Some(row)) = (ledger, row)
        && ledger.create(&message.id, row, now)?
    {
        changed.push(message.id.clone());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use redb::ReadableDatabase as _;
    use redb::backends::InMemoryBackend;

    use super::*;

    const LIMITS: Limits = Limits {
        retention_ms: 60_000,
        max_records: 100,
    };

    fn writer(sync_publish: bool) -> Writer {
        let db = Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .expect("in-memory database");
        let next_seq = initialise(&db).expect("initialise");
        Writer {
            db: Arc::new(db),
            config: WriterConfig {
                ack_wait_ms: 30_000,
                dedup_window_ms: 60_000,
                sync_publish,
                ledger: Some(LIMITS),
            },
            next_seq,
            visible: Arc::new(Notify::new()),
            watchers: Arc::new(Watchers::default()),
            unflushed_since: None,
            open: None,
            uncommitted: Arc::new(AtomicBool::new(false)),
        }
    }

    fn recorded_publish(id: &str) -> Op {
        Op::Publish {
            message: Message {
                id: id.to_owned(),
                payload: Bytes::from_static(b"payload"),
            },
            row: Some(row(id, "queued")),
        }
    }

    fn row(id: &str, state: &str) -> LedgerRow {
        LedgerRow {
            created_at_ms: 1,
            function: "echo.fns".into(),
            state: state.into(),
            record: Bytes::from(format!("{id} {state}")),
        }
    }

    fn update(id: &str, state: &str, durable: bool) -> Op {
        let written = row(id, state);
        Op::LedgerUpdate {
            id: id.to_owned(),
            update: UpdateFn(Arc::new(move |_| LedgerChange::Put {
                row: written.clone(),
                result: None,
            })),
            durable,
        }
    }

    fn stored_row(writer: &Writer, id: &str) -> Option<LedgerRow> {
        let txn = writer.db.begin_read().expect("read");
        ledger::get(&txn, id, LIMITS, now_ms()).expect("get")
    }

    #[test]
    fn a_recorded_publish_is_one_transaction_with_one_durable_commit() {
        let mut writer = writer(true);
        let committed = writer.commit(&[&recorded_publish("call-1")]).unwrap();
        assert!(committed.durable, "fsynced once, with its row");
        assert!(matches!(
            committed.outcomes[..],
            [Outcome::Published(Published::Stored, Some(_))]
        ));
        assert_eq!(committed.ledger_changed, ["call-1"]);
        assert_eq!(stored_row(&writer, "call-1"), Some(row("call-1", "queued")));

        // Concurrent publishes with their rows still share one commit.
        let ops = [recorded_publish("call-2"), recorded_publish("call-3")];
        let committed = writer.commit(&ops.iter().collect::<Vec<_>>()).unwrap();
        assert!(committed.durable);
        assert_eq!(committed.ledger_changed, ["call-2", "call-3"]);
    }

    #[test]
    fn a_duplicate_publish_writes_no_row() {
        let mut writer = writer(true);
        writer.commit(&[&recorded_publish("call-1")]).unwrap();
        let again = Op::Publish {
            message: Message {
                id: "call-1".into(),
                payload: Bytes::from_static(b"payload"),
            },
            row: Some(row("call-1", "running")),
        };
        let committed = writer.commit(&[&again]).unwrap();
        assert!(matches!(
            committed.outcomes[..],
            [Outcome::Published(Published::Duplicate, None)]
        ));
        assert!(committed.ledger_changed.is_empty());
        assert!(!committed.durable, "nothing was written");
        assert_eq!(stored_row(&writer, "call-1"), Some(row("call-1", "queued")));
    }

    #[test]
    fn a_ledger_update_commits_durably_only_when_asked_to() {
        let mut writer = writer(false);
        let committed = writer.commit(&[&recorded_publish("call-1")]).unwrap();
        assert!(!committed.durable, "sync_publish off: on the interval");

        let committed = writer
            .commit(&[&update("call-1", "running", false)])
            .unwrap();
        assert!(!committed.durable, "progress rides on the interval");
        let committed = writer
            .commit(&[&update("call-1", "cancelled", true)])
            .unwrap();
        assert!(
            committed.durable,
            "a cancel is fsynced before it is answered"
        );
        assert_eq!(
            stored_row(&writer, "call-1"),
            Some(row("call-1", "cancelled"))
        );
    }

    /// Runs `ops` as one batch the way the writer thread does; their outcomes.
    fn execute(writer: &mut Writer, ops: Vec<Op>) -> Vec<Outcome> {
        let permits = Arc::new(tokio::sync::Semaphore::new(ops.len()));
        let mut answers = Vec::new();
        let batch = ops
            .into_iter()
            .map(|op| {
                let (reply, answer) = oneshot::channel();
                answers.push(answer);
                let permit = Arc::clone(&permits).try_acquire_owned().expect("permit");
                (op, reply, permit)
            })
            .collect();
        writer.execute(batch);
        answers
            .into_iter()
            .map(|mut answer| answer.try_recv().expect("answered").expect("no error"))
            .collect()
    }

    #[test]
    fn progress_is_answered_before_its_commit_and_a_sync_commits_it() {
        let mut writer = writer(true);
        writer.commit(&[&recorded_publish("call-1")]).unwrap();
        assert!(!writer.uncommitted.load(Ordering::Acquire));

        // A progress update is answered at once, its transaction left open.
        let outcomes = execute(&mut writer, vec![update("call-1", "running", false)]);
        assert!(matches!(outcomes[..], [Outcome::LedgerUpdated(Some(_))]));
        assert!(writer.open.is_some(), "kept open for the next batches");
        assert!(writer.uncommitted.load(Ordering::Acquire));
        assert_eq!(
            stored_row(&writer, "call-1"),
            Some(row("call-1", "queued")),
            "not committed yet: other threads still read the old row"
        );

        // A sync (what a read on another thread sends first) commits it.
        let outcomes = execute(&mut writer, vec![Op::Sync]);
        assert!(matches!(outcomes[..], [Outcome::Synced]));
        assert!(writer.open.is_none());
        assert!(!writer.uncommitted.load(Ordering::Acquire));
        assert_eq!(
            stored_row(&writer, "call-1"),
            Some(row("call-1", "running"))
        );

        // A batch that must be durable commits what was open before it, then answers.
        execute(&mut writer, vec![update("call-1", "retrying", false)]);
        assert!(writer.open.is_some());
        execute(&mut writer, vec![recorded_publish("call-2")]);
        assert!(writer.open.is_none());
        assert!(writer.unflushed_since.is_none(), "committed durably");
        assert_eq!(
            stored_row(&writer, "call-1"),
            Some(row("call-1", "retrying"))
        );
    }

    #[test]
    fn an_open_transaction_is_committed_once_its_time_is_up() {
        let mut writer = writer(true);
        writer.commit(&[&recorded_publish("call-1")]).unwrap();
        execute(&mut writer, vec![update("call-1", "running", false)]);
        assert!(writer.open.is_some());
        std::thread::sleep(COMMIT_AFTER);
        // The next batch finds it due: committed with that batch, before the answer.
        execute(&mut writer, vec![update("call-1", "retrying", false)]);
        assert!(writer.open.is_none());
        assert_eq!(
            stored_row(&writer, "call-1"),
            Some(row("call-1", "retrying"))
        );
    }

    #[test]
    fn a_panicking_update_fails_alone() {
        let mut writer = writer(true);
        let panicking = Op::LedgerUpdate {
            id: "call-1".into(),
            update: UpdateFn(Arc::new(|_| panic!("a bug in the caller's update"))),
            durable: false,
        };
        let ops = [
            recorded_publish("call-1"),
            panicking,
            update("call-1", "running", false),
        ];
        let committed = writer.commit(&ops.iter().collect::<Vec<_>>()).unwrap();
        assert!(matches!(
            committed.outcomes[..],
            [
                Outcome::Published(Published::Stored, Some(_)),
                Outcome::LedgerUpdatePanicked,
                Outcome::LedgerUpdated(Some(_)),
            ]
        ));
        assert_eq!(
            stored_row(&writer, "call-1"),
            Some(row("call-1", "running"))
        );
    }
}
