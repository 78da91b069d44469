//! The queue's redb tables and what one write transaction does to them. Synchronous and free of
//! channels or threads: the writer (`super::writer`) calls these inside its batched
//! transactions.
//!
//! Tables (all times are wall-clock milliseconds since the Unix epoch, so they survive a
//! restart of the process):
//! - `payloads`: seq → (id, payload). Written once by publish, removed by ack/dead-letter.
//! - `states`: seq → (visible_at, deliveries). `visible_at` is when the message may next be
//!   handed out: its publish time, a retry's due time or the end of its current lease.
//!   `deliveries` counts hand-outs and doubles as the delivery token: a settle names the
//!   count it was handed out with, and only the current one takes effect.
//! - `schedule`: (visible_at, seq) → (). The index `fetch` scans; ordered by due time, then by
//!   publish order.
//! - `dedup`: id → stored_at, and `dedup_expiry`: (stored_at, id) → (), which lets expired
//!   ids be pruned oldest first, a few per publishing batch.
//! - `meta`: "next_seq" → the next sequence number, so numbers are never reused.
//! - `dead_letters`: id → (failed_at, record). The dead letters kept beside the queue, apart
//!   from the messages (a dead-lettered message is removed from the tables above); the record
//!   is stored exactly as given. Listing reads them all and sorts (newest first): a store of
//!   calls given up on stays small, and one table has no index to keep in step.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition, WriteTransaction,
};

use crate::{DeadLetter, Message, Published};

const PAYLOADS: TableDefinition<'_, u64, (&str, &[u8])> = TableDefinition::new("payloads");
const STATES: TableDefinition<'_, u64, (u64, u64)> = TableDefinition::new("states");
const SCHEDULE: TableDefinition<'_, (u64, u64), ()> = TableDefinition::new("schedule");
const DEDUP: TableDefinition<'_, &str, u64> = TableDefinition::new("dedup");
const DEDUP_EXPIRY: TableDefinition<'_, (u64, &str), ()> = TableDefinition::new("dedup_expiry");
const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const DEAD_LETTERS: TableDefinition<'_, &str, (u64, &[u8])> = TableDefinition::new("dead_letters");

const NEXT_SEQ: &str = "next_seq";

/// Expired dedup entries pruned per publishing batch, at least (more when the batch is large,
/// so pruning keeps up with any publish rate).
const DEDUP_PRUNE_PER_BATCH: usize = 256;

/// Now, in wall-clock milliseconds since the Unix epoch (truncated).
pub(super) fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// `duration` in whole milliseconds, rounded up, so a deadline computed from it is never early.
pub(super) fn ceil_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

/// Messages stored and not yet acked or dead-lettered, as of `txn`.
/// (Every table exists: the writer creates them before any reader can open the store.)
pub(super) fn pending(txn: &ReadTransaction) -> Result<u64, redb::Error> {
    Ok(txn.open_table(PAYLOADS)?.len()?)
}

/// Whether the message stored as `seq` is still there (not acked or dead-lettered), as of `txn`.
pub(super) fn contains(txn: &ReadTransaction, seq: u64) -> Result<bool, redb::Error> {
    Ok(txn.open_table(PAYLOADS)?.get(seq)?.is_some())
}

/// A message handed out by [`Tables::lease`].
#[derive(Debug)]
pub(super) struct Leased {
    pub(super) seq: u64,
    /// The delivery count, this hand-out included; also the settle token.
    pub(super) attempt: u64,
    pub(super) message: Message,
}

/// What a settle does to a current delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settlement {
    /// Ack or dead-letter: remove the message.
    Remove,
    /// Make it visible again at this wall-clock time (a retry's due time, or a renewed lease).
    VisibleAt(u64),
}

/// The queue's tables, open in one write transaction.
pub(super) struct Tables<'txn> {
    payloads: Table<'txn, u64, (&'static str, &'static [u8])>,
    states: Table<'txn, u64, (u64, u64)>,
    schedule: Table<'txn, (u64, u64), ()>,
    dedup: Table<'txn, &'static str, u64>,
    dedup_expiry: Table<'txn, (u64, &'static str), ()>,
    meta: Table<'txn, &'static str, u64>,
    dead_letters: Table<'txn, &'static str, (u64, &'static [u8])>,
}

impl<'txn> Tables<'txn> {
    /// Opens (creating on first use) every table in `txn`.
    pub(super) fn open(txn: &'txn WriteTransaction) -> Result<Self, redb::Error> {
        Ok(Self {
            payloads: txn.open_table(PAYLOADS)?,
            states: txn.open_table(STATES)?,
            schedule: txn.open_table(SCHEDULE)?,
            dedup: txn.open_table(DEDUP)?,
            dedup_expiry: txn.open_table(DEDUP_EXPIRY)?,
            meta: txn.open_table(META)?,
            dead_letters: txn.open_table(DEAD_LETTERS)?,
        })
    }

    /// The next sequence number to assign (1 in a new store).
    pub(super) fn next_seq(&self) -> Result<u64, redb::Error> {
        Ok(self.meta.get(NEXT_SEQ)?.map_or(1, |seq| seq.value()))
    }

    /// Records the next sequence number to assign.
    pub(super) fn set_next_seq(&mut self, seq: u64) -> Result<(), redb::Error> {
        self.meta.insert(NEXT_SEQ, seq)?;
        Ok(())
    }

    /// Stores `message` as `*next_seq` (and advances it), visible at `now`, unless its id was
    /// stored less than `dedup_window_ms` ago. Returns the sequence when it was stored.
    pub(super) fn publish(
        &mut self,
        next_seq: &mut u64,
        message: &Message,
        now: u64,
        dedup_window_ms: u64,
    ) -> Result<(Published, Option<u64>), redb::Error> {
        if dedup_window_ms > 0 {
            if let Some(stored_at) = self.dedup.get(message.id.as_str())?
                && now < stored_at.value().saturating_add(dedup_window_ms)
            {
                return Ok((Published::Duplicate, None));
            }
            self.dedup.insert(message.id.as_str(), now)?;
            self.dedup_expiry.insert((now, message.id.as_str()), ())?;
        }
        let seq = *next_seq;
        self.payloads
            .insert(seq, (message.id.as_str(), message.payload.as_ref()))?;
        self.states.insert(seq, (now, 0))?;
        self.schedule.insert((now, seq), ())?;
        *next_seq += 1;
        Ok((Published::Stored, Some(seq)))
    }

    /// Forgets up to `max(DEDUP_PRUNE_PER_BATCH, at_least)` ids stored `dedup_window_ms` or
    /// longer ago.
    pub(super) fn prune_dedup(
        &mut self,
        now: u64,
        dedup_window_ms: u64,
        at_least: usize,
    ) -> Result<(), redb::Error> {
        let limit = DEDUP_PRUNE_PER_BATCH.max(at_least);
        let cutoff = now.saturating_sub(dedup_window_ms);
        let mut expired = Vec::new();
        for entry in self.dedup_expiry.range::<(u64, &str)>(..)?.take(limit) {
            let (key, _) = entry?;
            let (stored_at, id) = key.value();
            if stored_at > cutoff {
                break;
            }
            expired.push((stored_at, id.to_owned()));
        }
        for (stored_at, id) in expired {
            self.dedup_expiry.remove((stored_at, id.as_str()))?;
            // The id may have been published again after it expired: keep that newer entry.
            let current = self.dedup.get(id.as_str())?.map(|at| at.value());
            if current == Some(stored_at) {
                self.dedup.remove(id.as_str())?;
            }
        }
        Ok(())
    }

    /// Hands out up to `max` messages visible at `now`, in schedule order, each leased until
    /// `now + ack_wait_ms` with its delivery count incremented.
    pub(super) fn lease(
        &mut self,
        max: usize,
        now: u64,
        ack_wait_ms: u64,
    ) -> Result<Vec<Leased>, redb::Error> {
        let mut due = Vec::new();
        for entry in self.schedule.range(..=(now, u64::MAX))?.take(max) {
            let (key, _) = entry?;
            due.push(key.value());
        }
        let lease_end = now.saturating_add(ack_wait_ms);
        let mut leased = Vec::with_capacity(due.len());
        for (visible_at, seq) in due {
            self.schedule.remove((visible_at, seq))?;
            let deliveries = self.states.get(seq)?.map(|state| state.value().1);
            let message = self.payloads.get(seq)?.map(|stored| {
                let (id, payload) = stored.value();
                Message {
                    id: id.to_owned(),
                    payload: Bytes::copy_from_slice(payload),
                }
            });
            let (Some(deliveries), Some(message)) = (deliveries, message) else {
                tracing::error!(
                    seq,
                    "Embedded queue schedule names a missing message; dropped."
                );
                continue;
            };
            let attempt = deliveries + 1;
            self.states.insert(seq, (lease_end, attempt))?;
            self.schedule.insert((lease_end, seq), ())?;
            leased.push(Leased {
                seq,
                attempt,
                message,
            });
        }
        Ok(leased)
    }

    /// Applies `settlement` to message `seq` if `attempt` is its current delivery; returns
    /// whether it was current (a stale or repeated settle changes nothing).
    pub(super) fn settle(
        &mut self,
        seq: u64,
        attempt: u64,
        settlement: Settlement,
    ) -> Result<bool, redb::Error> {
        let Some((visible_at, deliveries)) = self.states.get(seq)?.map(|state| state.value())
        else {
            return Ok(false);
        };
        if deliveries != attempt {
            return Ok(false);
        }
        self.schedule.remove((visible_at, seq))?;
        match settlement {
            Settlement::Remove => {
                self.states.remove(seq)?;
                self.payloads.remove(seq)?;
            }
            Settlement::VisibleAt(at) => {
                self.states.insert(seq, (at, deliveries))?;
                self.schedule.insert((at, seq), ())?;
            }
        }
        Ok(true)
    }

    /// When the earliest scheduled message becomes visible, if any is stored.
    pub(super) fn next_visible_at(&self) -> Result<Option<u64>, redb::Error> {
        Ok(self.schedule.first()?.map(|(key, _)| key.value().0))
    }

    /// Messages stored (the store tests' view inside a write transaction).
    #[cfg(test)]
    pub(super) fn pending(&self) -> Result<u64, redb::Error> {
        Ok(self.payloads.len()?)
    }

    /// Keeps `letter`, replacing a letter with the same id.
    pub(super) fn put_dead_letter(&mut self, letter: &DeadLetter) -> Result<(), redb::Error> {
        self.dead_letters.insert(
            letter.id.as_str(),
            (letter.failed_at_ms, letter.record.as_ref()),
        )?;
        Ok(())
    }

    /// Every dead letter, newest first (by `failed_at_ms`; equal times by id, ascending).
    pub(super) fn dead_letters(&self) -> Result<Vec<DeadLetter>, redb::Error> {
        let mut letters = Vec::new();
        for entry in self.dead_letters.iter()? {
            let (id, stored) = entry?;
            let (failed_at_ms, record) = stored.value();
            letters.push(DeadLetter {
                id: id.value().to_owned(),
                failed_at_ms,
                record: Bytes::copy_from_slice(record),
            });
        }
        // Stable, and the table iterates by id: equal times stay in id order.
        letters.sort_by_key(|letter| std::cmp::Reverse(letter.failed_at_ms));
        Ok(letters)
    }

    /// The dead letter `id`, if kept.
    pub(super) fn dead_letter(&self, id: &str) -> Result<Option<DeadLetter>, redb::Error> {
        Ok(self.dead_letters.get(id)?.map(|stored| {
            let (failed_at_ms, record) = stored.value();
            DeadLetter {
                id: id.to_owned(),
                failed_at_ms,
                record: Bytes::copy_from_slice(record),
            }
        }))
    }

    /// Removes the dead letter `id`; whether it was kept.
    pub(super) fn remove_dead_letter(&mut self, id: &str) -> Result<bool, redb::Error> {
        Ok(self.dead_letters.remove(id)?.is_some())
    }

    /// Removes every dead letter; how many there were.
    pub(super) fn purge_dead_letters(&mut self) -> Result<u64, redb::Error> {
        let count = self.dead_letters.len()?;
        if count > 0 {
            self.dead_letters.retain(|_, _| false)?;
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use redb::Database;
    use redb::backends::InMemoryBackend;

    use super::*;

    const WINDOW_MS: u64 = 1_000;
    const ACK_WAIT_MS: u64 = 500;

    fn database() -> Database {
        Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .expect("in-memory database")
    }

    fn message(id: &str) -> Message {
        Message {
            id: id.to_owned(),
            payload: Bytes::from(format!("payload of {id}")),
        }
    }

    fn leased_ids(leased: &[Leased]) -> Vec<(&str, u64)> {
        leased
            .iter()
            .map(|l| (l.message.id.as_str(), l.attempt))
            .collect()
    }

    #[test]
    fn lease_hands_out_visible_messages_oldest_first_until_their_lease_ends() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let mut tables = Tables::open(&txn).unwrap();
        let mut seq = 1;
        tables
            .publish(&mut seq, &message("a"), 100, WINDOW_MS)
            .unwrap();
        tables
            .publish(&mut seq, &message("b"), 100, WINDOW_MS)
            .unwrap();
        tables
            .publish(&mut seq, &message("c"), 200, WINDOW_MS)
            .unwrap();

        assert!(tables.lease(10, 99, ACK_WAIT_MS).unwrap().is_empty());
        let first = tables.lease(10, 150, ACK_WAIT_MS).unwrap();
        assert_eq!(leased_ids(&first), [("a", 1), ("b", 1)]);
        assert_eq!(tables.next_visible_at().unwrap(), Some(200));
        assert_eq!(
            leased_ids(&tables.lease(10, 200, ACK_WAIT_MS).unwrap()),
            [("c", 1)]
        );
        // Leased at 150 for 500 ms: back at 650, not at 649.
        assert!(tables.lease(10, 649, ACK_WAIT_MS).unwrap().is_empty());
        let again = tables.lease(1, 650, ACK_WAIT_MS).unwrap();
        assert_eq!(leased_ids(&again), [("a", 2)]);
        assert_eq!(again[0].message, message("a"));
        assert_eq!(tables.pending().unwrap(), 3);
    }

    #[test]
    fn only_the_current_delivery_settles_a_message() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let mut tables = Tables::open(&txn).unwrap();
        let mut seq = 1;
        tables
            .publish(&mut seq, &message("a"), 0, WINDOW_MS)
            .unwrap();
        let first = tables.lease(1, 0, ACK_WAIT_MS).unwrap();
        let second = tables.lease(1, ACK_WAIT_MS, ACK_WAIT_MS).unwrap();
        assert_eq!((first[0].attempt, second[0].attempt), (1, 2));

        assert!(!tables.settle(1, 1, Settlement::Remove).unwrap());
        assert!(!tables.settle(1, 1, Settlement::VisibleAt(0)).unwrap());
        assert_eq!(tables.pending().unwrap(), 1);
        assert_eq!(tables.next_visible_at().unwrap(), Some(2 * ACK_WAIT_MS));

        assert!(tables.settle(1, 2, Settlement::VisibleAt(10_000)).unwrap());
        assert_eq!(tables.next_visible_at().unwrap(), Some(10_000));
        assert!(tables.settle(1, 2, Settlement::Remove).unwrap());
        assert!(!tables.settle(1, 2, Settlement::Remove).unwrap());
        assert_eq!(tables.pending().unwrap(), 0);
        assert_eq!(tables.next_visible_at().unwrap(), None);
    }

    #[test]
    fn expired_dedup_entries_are_pruned_and_a_republished_id_is_kept() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let mut tables = Tables::open(&txn).unwrap();
        let mut seq = 1;
        assert_eq!(
            tables
                .publish(&mut seq, &message("a"), 0, WINDOW_MS)
                .unwrap(),
            (Published::Stored, Some(1))
        );
        tables
            .publish(&mut seq, &message("b"), 10, WINDOW_MS)
            .unwrap();
        assert_eq!(
            tables
                .publish(&mut seq, &message("a"), WINDOW_MS - 1, WINDOW_MS)
                .unwrap(),
            (Published::Duplicate, None),
            "a duplicate takes no sequence"
        );
        // "a" expires at 1000 and is published again; "b" expires at 1010.
        assert_eq!(
            tables
                .publish(&mut seq, &message("a"), WINDOW_MS, WINDOW_MS)
                .unwrap(),
            (Published::Stored, Some(3))
        );

        tables.prune_dedup(WINDOW_MS + 10, WINDOW_MS, 0).unwrap();

        assert_eq!(tables.dedup.len().unwrap(), 1, "b forgotten, a kept");
        assert_eq!(tables.dedup_expiry.len().unwrap(), 1);
        assert_eq!(
            tables
                .publish(&mut seq, &message("a"), WINDOW_MS + 10, WINDOW_MS)
                .unwrap()
                .0,
            Published::Duplicate
        );
        assert_eq!(
            tables
                .publish(&mut seq, &message("b"), WINDOW_MS + 10, WINDOW_MS)
                .unwrap()
                .0,
            Published::Stored
        );
    }

    fn letter(id: &str, failed_at_ms: u64) -> DeadLetter {
        DeadLetter {
            id: id.to_owned(),
            failed_at_ms,
            record: Bytes::from(format!("record of {id} at {failed_at_ms}")),
        }
    }

    #[test]
    fn dead_letters_list_newest_first_then_by_id_and_replace_by_id() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let mut tables = Tables::open(&txn).unwrap();
        for (id, at) in [("b", 20), ("c", 30), ("a", 20), ("d", 10), ("e", 5)] {
            tables.put_dead_letter(&letter(id, at)).unwrap();
        }
        // Replacing moves it to its new place in the listing.
        tables.put_dead_letter(&letter("e", 40)).unwrap();

        let listed: Vec<(String, u64)> = tables
            .dead_letters()
            .unwrap()
            .into_iter()
            .map(|l| (l.id, l.failed_at_ms))
            .collect();
        let expected = [("e", 40), ("c", 30), ("a", 20), ("b", 20), ("d", 10)];
        assert_eq!(
            listed,
            expected.map(|(id, at)| (id.to_owned(), at)),
            "newest first, equal times by id"
        );
        assert_eq!(tables.dead_letter("e").unwrap(), Some(letter("e", 40)));
        assert_eq!(tables.dead_letter("z").unwrap(), None);

        assert!(tables.remove_dead_letter("c").unwrap());
        assert!(!tables.remove_dead_letter("c").unwrap());
        assert_eq!(tables.purge_dead_letters().unwrap(), 4);
        assert_eq!(tables.purge_dead_letters().unwrap(), 0);
        assert!(tables.dead_letters().unwrap().is_empty());
        // The queue's own tables are untouched by any of it.
        assert_eq!(tables.pending().unwrap(), 0);
    }

    #[test]
    fn durations_round_up_to_whole_milliseconds() {
        assert_eq!(ceil_ms(Duration::ZERO), 0);
        assert_eq!(ceil_ms(Duration::from_micros(1)), 1);
        assert_eq!(ceil_ms(Duration::from_millis(1500)), 1500);
        assert_eq!(ceil_ms(Duration::MAX), u64::MAX);
    }
}
