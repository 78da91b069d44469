//! The ledger's redb tables in the embedded store, and what a transaction does to them.
//! Synchronous, like `super::store`: the writer calls [`LedgerTables`] inside its batched write
//! transactions; reads ([`get`], [`list`], [`result`]) run in read transactions on the
//! caller's thread.
//!
//! Tables (times are wall-clock milliseconds since the Unix epoch):
//! - `ledger_rows`: id → (created_ms, updated_ms, function, state, record). `updated_ms` is
//!   when the row was last written: it expires `retention` after that.
//! - `ledger_created`: (created_ms, id) → function. Written once, when the row is created:
//!   an update writes the row alone (one tree write per change: the worker changes every
//!   call's row twice, and the store's one writer thread is the async path's limit).
//!   Lists walk it newest first, filter on the function there and on the state in the row.
//!   Expired rows are pruned from its start, a batch per ledger write (like the dedup ids):
//!   a row cannot have expired before its creation time did, so the walk stops at the first
//!   entry that has not. Beyond `max_records`, the oldest rows go.
//! - `ledger_results`: id → the kept result, removed with its row.
//!
//! A row past its retention is invisible at once (reads compare `updated_ms` with the clock)
//! and removed by a later write. Equal creation times list by id, descending.
//!
//! Stores written before `ledger_created` had `ledger_by_creation` and `ledger_by_change`
//! (two index entries rewritten per change): [`initialise`] drops them and indexes the rows
//! again.

use bytes::Bytes;
use redb::{
    ReadTransaction, ReadableTable, ReadableTableMetadata, Table, TableDefinition, TableHandle,
    WriteTransaction,
};

use super::store::ceil_ms;
use crate::{LedgerConfig, LedgerQuery, LedgerRow};

/// (created_ms, updated_ms, function, state, record)
type StoredRow<'a> = (u64, u64, &'a str, &'a str, &'a [u8]);

const ROWS: TableDefinition<'_, &str, StoredRow<'_>> = TableDefinition::new("ledger_rows");
const CREATED: TableDefinition<'_, (u64, &str), &str> = TableDefinition::new("ledger_created");
/// The indexes of stores written before `ledger_created`, by their old types.
const OLD_BY_CREATION: TableDefinition<'_, (u64, &str), (u64, &str, &str)> =
    TableDefinition::new("ledger_by_creation");
const OLD_BY_CHANGE: TableDefinition<'_, (u64, &str), ()> =
    TableDefinition::new("ledger_by_change");
const RESULTS: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("ledger_results");

/// Rows pruned per ledger write, at least (more when the batch wrote many, so pruning keeps up
/// with any write rate).
const PRUNE_PER_BATCH: usize = 256;

/// `row` as stored, changed at `now`.
fn stored(row: &LedgerRow, now: u64) -> StoredRow<'_> {
    (
        row.created_at_ms,
        now,
        row.function.as_str(),
        row.state.as_str(),
        row.record.as_ref(),
    )
}

/// A stored row copied out of the table (to put back what an insert replaced).
struct OwnedRow {
    created_ms: u64,
    updated_ms: u64,
    function: String,
    state: String,
    record: Vec<u8>,
}

impl OwnedRow {
    fn of((created_ms, updated_ms, function, state, record): StoredRow<'_>) -> Self {
        Self {
            created_ms,
            updated_ms,
            function: function.to_owned(),
            state: state.to_owned(),
            record: record.to_vec(),
        }
    }

    fn times(&self) -> (u64, u64) {
        (self.created_ms, self.updated_ms)
    }

    fn stored(&self) -> StoredRow<'_> {
        (
            self.created_ms,
            self.updated_ms,
            &self.function,
            &self.state,
            &self.record,
        )
    }
}

/// The ledger's limits, in the store's units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Limits {
    /// A row expires this long after its last change.
    pub(super) retention_ms: u64,
    /// Most rows kept (at least one).
    pub(super) max_records: u64,
}

impl Limits {
    /// The limits of `config`, or `None` when the ledger is off.
    pub(super) fn of(config: &LedgerConfig) -> Option<Self> {
        config.enabled().then(|| Self {
            retention_ms: ceil_ms(config.retention),
            max_records: config.max_records.max(1),
        })
    }

    /// Whether a row last changed at `updated_ms` has expired at `now`.
    fn expired(self, updated_ms: u64, now: u64) -> bool {
        now.saturating_sub(updated_ms) >= self.retention_ms
    }

    /// The row stored as `stored`, unless it expired at `now`.
    fn visible(self, stored: StoredRow<'_>, now: u64) -> Option<LedgerRow> {
        let (created_at_ms, updated_ms, function, state, record) = stored;
        (!self.expired(updated_ms, now)).then(|| LedgerRow {
            created_at_ms,
            function: function.to_owned(),
            state: state.to_owned(),
            record: Bytes::copy_from_slice(record),
        })
    }
}

/// Creates the ledger's tables if they are missing (readers expect every table to exist), and
/// replaces the indexes of a store written before `ledger_created`.
pub(super) fn initialise(txn: &WriteTransaction) -> Result<(), redb::Error> {
    let rows = txn.open_table(ROWS)?;
    let mut created = txn.open_table(CREATED)?;
    txn.open_table(RESULTS)?;
    let old = txn
        .list_tables()?
        .any(|table| table.name() == OLD_BY_CREATION.name());
    if old {
        for entry in rows.iter()? {
            let (id, stored) = entry?;
            let (created_ms, _, function, ..) = stored.value();
            created.insert((created_ms, id.value()), function)?;
        }
        drop((rows, created));
        txn.delete_table(OLD_BY_CREATION)?;
        txn.delete_table(OLD_BY_CHANGE)?;
    }
    Ok(())
}

/// The row of call `id` as of `txn`, unless it expired at `now`.
pub(super) fn get(
    txn: &ReadTransaction,
    id: &str,
    limits: Limits,
    now: u64,
) -> Result<Option<LedgerRow>, redb::Error> {
    let rows = txn.open_table(ROWS)?;
    let row = rows
        .get(id)?
        .and_then(|stored| limits.visible(stored.value(), now));
    Ok(row)
}

/// The rows matching `query` as of `txn`, newest first, leaving out those expired at `now`.
pub(super) fn list(
    txn: &ReadTransaction,
    query: &LedgerQuery,
    limits: Limits,
    now: u64,
) -> Result<Vec<LedgerRow>, redb::Error> {
    let mut listed = Vec::new();
    if query.limit == 0 {
        return Ok(listed);
    }
    let index = txn.open_table(CREATED)?;
    let rows = txn.open_table(ROWS)?;
    for entry in index.iter()?.rev() {
        let (key, function) = entry?;
        if query
            .function
            .as_deref()
            .is_some_and(|f| f != function.value())
        {
            continue;
        }
        let (_, id) = key.value();
        if let Some(row) = rows
            .get(id)?
            .and_then(|stored| limits.visible(stored.value(), now))
            .filter(|row| query.state.as_deref().is_none_or(|s| s == row.state))
        {
            listed.push(row);
            if listed.len() >= query.limit {
                break;
            }
        }
    }
    Ok(listed)
}

/// The kept result of call `id` as of `txn`, while its row is visible at `now`.
pub(super) fn result(
    txn: &ReadTransaction,
    id: &str,
    limits: Limits,
    now: u64,
) -> Result<Option<Bytes>, redb::Error> {
    if get(txn, id, limits, now)?.is_none() {
        return Ok(None);
    }
    let results = txn.open_table(RESULTS)?;
    let result = results
        .get(id)?
        .map(|stored| Bytes::copy_from_slice(stored.value()));
    Ok(result)
}

/// A row as an update found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Current {
    /// The creation and change times of the row stored, expired or not.
    times: Option<(u64, u64)>,
    /// The row, unless there is none or it expired.
    pub(super) row: Option<LedgerRow>,
}

/// The ledger's tables, open in one write transaction.
pub(super) struct LedgerTables<'txn> {
    limits: Limits,
    rows: Table<'txn, &'static str, StoredRow<'static>>,
    created: Table<'txn, (u64, &'static str), &'static str>,
    results: Table<'txn, &'static str, &'static [u8]>,
}

impl<'txn> LedgerTables<'txn> {
    /// Opens (creating on first use) the ledger's tables in `txn`, applying `limits`.
    pub(super) fn open(txn: &'txn WriteTransaction, limits: Limits) -> Result<Self, redb::Error> {
        Ok(Self {
            limits,
            rows: txn.open_table(ROWS)?,
            created: txn.open_table(CREATED)?,
            results: txn.open_table(RESULTS)?,
        })
    }

    /// The row of call `id` as a reader would see it at `now`, and the creation and change
    /// times of the row stored, expired or not (for [`LedgerTables::put`]: one lookup for
    /// the read and the write of an update).
    pub(super) fn get(&self, id: &str, now: u64) -> Result<Current, redb::Error> {
        let limits = self.limits;
        Ok(match self.rows.get(id)? {
            Some(stored) => {
                let value = stored.value();
                Current {
                    times: Some((value.0, value.1)),
                    row: limits.visible(value, now),
                }
            }
            None => Current {
                times: None,
                row: None,
            },
        })
    }

    /// Writes `row` for call `id` unless it has one (a row that expired does not count);
    /// whether it was written.
    pub(super) fn create(
        &mut self,
        id: &str,
        row: &LedgerRow,
        now: u64,
    ) -> Result<bool, redb::Error> {
        // Written first and put back in the rare case there was a visible row (the publish's
        // dedup already refused a repeated id within its window): one tree descent per
        // accept instead of a lookup and then an insert.
        let replaced = self
            .rows
            .insert(id, stored(row, now))?
            .map(|old| OwnedRow::of(old.value()));
        let previous = replaced.as_ref().map(OwnedRow::times);
        if let Some(old) = replaced
            && !self.limits.expired(old.updated_ms, now)
        {
            self.rows.insert(id, old.stored())?;
            return Ok(false);
        }
        self.index(id, previous, row, None, now)?;
        Ok(true)
    }

    /// Writes `row` for call `id`, changed at `now`, and `result` when given (otherwise a result
    /// kept earlier stays, unless the row it belonged to had expired).
    pub(super) fn put(
        &mut self,
        id: &str,
        current: &Current,
        row: &LedgerRow,
        result: Option<&[u8]>,
        now: u64,
    ) -> Result<(), redb::Error> {
        self.rows.insert(id, stored(row, now))?;
        self.index(id, current.times, row, result, now)
    }

    /// What goes with writing `row` over the row stored before (`previous`, its times): the
    /// creation index, the result kept (`result`) or dropped with an expired row.
    fn index(
        &mut self,
        id: &str,
        previous: Option<(u64, u64)>,
        row: &LedgerRow,
        result: Option<&[u8]>,
        now: u64,
    ) -> Result<(), redb::Error> {
        // An update keeps the creation time: the index entry stays as it is.
        let indexed = previous.is_some_and(|(created_ms, _)| created_ms == row.created_at_ms);
        if let Some((created_ms, updated_ms)) = previous {
            if !indexed {
                self.created.remove((created_ms, id))?;
            }
            if result.is_none() && self.limits.expired(updated_ms, now) {
                self.results.remove(id)?;
            }
        }
        if !indexed {
            self.created
                .insert((row.created_at_ms, id), row.function.as_str())?;
        }
        if let Some(result) = result {
            self.results.insert(id, result)?;
        }
        Ok(())
    }

    /// Removes up to `max(PRUNE_PER_BATCH, at_least)` rows expired at `now`, then as many of the
    /// oldest rows beyond `max_records`, each with its result. Adds the ids removed to
    /// `removed`.
    pub(super) fn prune(
        &mut self,
        now: u64,
        at_least: usize,
        removed: &mut Vec<String>,
    ) -> Result<(), redb::Error> {
        let limits = self.limits;
        let batch = PRUNE_PER_BATCH.max(at_least);
        // Rows whose creation time has expired, oldest first: the candidates (a row changed
        // since may still be visible).
        let mut doomed = Vec::new();
        let mut walked = 0;
        for entry in self.created.iter()?.take(batch) {
            let (key, _) = entry?;
            let (created_ms, id) = key.value();
            if !limits.expired(created_ms, now) {
                break;
            }
            walked += 1;
            let expired = self
                .rows
                .get(id)?
                .is_none_or(|stored| limits.expired(stored.value().1, now));
            if expired {
                doomed.push(id.to_owned());
            }
        }
        let over = self
            .rows
            .len()?
            .saturating_sub(doomed.len() as u64)
            .saturating_sub(limits.max_records);
        let over = usize::try_from(over).unwrap_or(usize::MAX).min(batch);
        if over > 0 {
            // The oldest rows that are not already doomed.
            let mut taken = 0;
            for (i, entry) in self.created.iter()?.enumerate() {
                if taken == over {
                    break;
                }
                let (key, _) = entry?;
                let id = key.value().1;
                // Only the entries walked above can be doomed already.
                if i < walked && doomed.iter().any(|d| d == id) {
                    continue;
                }
                doomed.push(id.to_owned());
                taken += 1;
            }
        }
        for id in doomed {
            self.remove(&id)?;
            removed.push(id);
        }
        Ok(())
    }

    /// Removes the row of call `id`, its index entry and its result.
    fn remove(&mut self, id: &str) -> Result<(), redb::Error> {
        let removed = self.rows.remove(id)?.map(|stored| stored.value().0);
        if let Some(created_ms) = removed {
            self.created.remove((created_ms, id))?;
        }
        self.results.remove(id)?;
        Ok(())
    }

    /// [`LedgerTables::put`] after reading the row (the tests' shorthand).
    #[cfg(test)]
    fn put_fresh(
        &mut self,
        id: &str,
        row: &LedgerRow,
        result: Option<&[u8]>,
        now: u64,
    ) -> Result<(), redb::Error> {
        let current = self.get(id, now)?;
        self.put(id, &current, row, result, now)
    }

    /// Rows stored, expired or not (the tests' view).
    #[cfg(test)]
    fn stored(&self) -> Result<(u64, u64, u64), redb::Error> {
        Ok((self.rows.len()?, self.created.len()?, self.results.len()?))
    }
}

#[cfg(test)]
mod tests {
    use redb::backends::InMemoryBackend;
    use redb::{Database, ReadableDatabase as _};

    use super::*;

    const LIMITS: Limits = Limits {
        retention_ms: 1_000,
        max_records: 3,
    };

    fn database() -> Database {
        Database::builder()
            .create_with_backend(InMemoryBackend::new())
            .expect("in-memory database")
    }

    fn row(created_at_ms: u64, state: &str) -> LedgerRow {
        LedgerRow {
            created_at_ms,
            function: "echo.fns".into(),
            state: state.into(),
            record: Bytes::from(format!("record {created_at_ms} {state}")),
        }
    }

    fn everything() -> LedgerQuery {
        LedgerQuery {
            function: None,
            state: None,
            limit: 100,
        }
    }

    #[test]
    fn a_row_expires_its_retention_after_its_last_change_and_is_pruned_with_its_result() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let mut tables = LedgerTables::open(&txn, LIMITS).unwrap();
        tables
            .put_fresh("a", &row(0, "queued"), Some(b"result a"), 0)
            .unwrap();
        tables.put_fresh("b", &row(0, "queued"), None, 0).unwrap();
        // Changed at 600: lives until 1600.
        tables
            .put_fresh("b", &row(0, "running"), None, 600)
            .unwrap();

        assert_eq!(tables.get("a", 999).unwrap().row, Some(row(0, "queued")));
        assert_eq!(
            tables.get("a", 1_000).unwrap().row,
            None,
            "invisible at once"
        );
        assert_eq!(tables.get("b", 1_000).unwrap().row, Some(row(0, "running")));
        assert_eq!(tables.stored().unwrap(), (2, 2, 1), "not pruned yet");

        let mut removed = Vec::new();
        tables.prune(1_000, 0, &mut removed).unwrap();
        assert_eq!(
            removed,
            ["a"],
            "b was created as long ago, but changed since"
        );
        assert_eq!(
            tables.stored().unwrap(),
            (1, 1, 0),
            "the result went with it"
        );
        tables.prune(1_600, 0, &mut removed).unwrap();
        assert_eq!(removed, ["a", "b"]);
        assert_eq!(tables.stored().unwrap(), (0, 0, 0));
    }

    #[test]
    fn an_update_writes_the_row_alone() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let mut tables = LedgerTables::open(&txn, LIMITS).unwrap();
        tables.put_fresh("a", &row(5, "queued"), None, 5).unwrap();
        tables.put_fresh("a", &row(5, "running"), None, 6).unwrap();
        tables
            .put_fresh("a", &row(5, "succeeded"), None, 7)
            .unwrap();
        assert_eq!(tables.stored().unwrap(), (1, 1, 0));
        let index: Vec<_> = tables
            .created
            .iter()
            .unwrap()
            .map(|entry| {
                let (key, function) = entry.unwrap();
                (
                    key.value().0,
                    key.value().1.to_owned(),
                    function.value().to_owned(),
                )
            })
            .collect();
        assert_eq!(index, [(5, "a".to_owned(), "echo.fns".to_owned())]);
    }

    #[test]
    fn beyond_the_cap_the_oldest_rows_are_pruned() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let mut tables = LedgerTables::open(&txn, LIMITS).unwrap();
        for (i, id) in ["a", "b", "c", "d", "e"].into_iter().enumerate() {
            let at = i as u64;
            tables
                .put_fresh(id, &row(at, "queued"), Some(b"r"), at)
                .unwrap();
        }
        // A change does not make a row younger.
        tables.put_fresh("a", &row(0, "running"), None, 10).unwrap();

        let mut removed = Vec::new();
        tables.prune(10, 0, &mut removed).unwrap();
        assert_eq!(removed, ["a", "b"]);
        assert_eq!(tables.stored().unwrap(), (3, 3, 3));
    }

    #[test]
    fn expired_rows_and_the_cap_together_never_remove_a_row_twice() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let limits = Limits {
            retention_ms: 1_000,
            max_records: 1,
        };
        let mut tables = LedgerTables::open(&txn, limits).unwrap();
        for (id, at) in [("a", 0), ("b", 0), ("c", 900), ("d", 950)] {
            tables.put_fresh(id, &row(at, "queued"), None, at).unwrap();
        }
        // "b" changed since its creation: not expired at 1000, but over the cap.
        tables
            .put_fresh("b", &row(0, "running"), None, 500)
            .unwrap();
        let mut removed = Vec::new();
        tables.prune(1_000, 0, &mut removed).unwrap();
        assert_eq!(removed, ["a", "b", "c"]);
        assert_eq!(tables.stored().unwrap(), (1, 1, 0));
        assert!(tables.get("d", 1_000).unwrap().row.is_some());
    }

    #[test]
    fn a_store_with_the_old_indexes_is_indexed_again() {
        let db = database();
        {
            let txn = db.begin_write().unwrap();
            {
                let mut rows = txn.open_table(ROWS).unwrap();
                rows.insert("a", (7, 8, "echo.fns", "queued", b"record a".as_slice()))
                    .unwrap();
                let mut old = txn.open_table(OLD_BY_CREATION).unwrap();
                old.insert((7, "a"), (8, "echo.fns", "queued")).unwrap();
                let mut old = txn.open_table(OLD_BY_CHANGE).unwrap();
                old.insert((8, "a"), ()).unwrap();
            }
            txn.commit().unwrap();
        }
        let txn = db.begin_write().unwrap();
        initialise(&txn).unwrap();
        txn.commit().unwrap();

        let txn = db.begin_read().unwrap();
        let names: Vec<String> = txn
            .list_tables()
            .unwrap()
            .map(|table| table.name().to_owned())
            .collect();
        assert!(
            !names
                .iter()
                .any(|n| n == "ledger_by_creation" || n == "ledger_by_change")
        );
        let rows = list(&txn, &everything(), LIMITS, 10).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].record, Bytes::from_static(b"record a"));
    }

    #[test]
    fn create_keeps_a_visible_row_and_replaces_an_expired_one_without_its_result() {
        let db = database();
        let txn = db.begin_write().unwrap();
        let mut tables = LedgerTables::open(&txn, LIMITS).unwrap();
        tables
            .put_fresh("a", &row(1, "succeeded"), Some(b"old result"), 0)
            .unwrap();

        assert!(!tables.create("a", &row(5, "queued"), 999).unwrap());
        assert_eq!(tables.get("a", 999).unwrap().row, Some(row(1, "succeeded")));
        assert_eq!(
            tables.stored().unwrap(),
            (1, 1, 1),
            "the row put back as it was, its index entry and result kept"
        );
        assert!(tables.create("a", &row(5, "queued"), 1_000).unwrap());
        assert_eq!(tables.get("a", 1_000).unwrap().row, Some(row(5, "queued")));
        assert_eq!(tables.stored().unwrap(), (1, 1, 0));
    }

    #[test]
    fn lists_are_newest_first_filtered_and_limited_and_skip_expired_rows() {
        let db = database();
        {
            let txn = db.begin_write().unwrap();
            let mut tables = LedgerTables::open(&txn, LIMITS).unwrap();
            let rows = [
                ("a", 30, "echo.fns", "queued", 500),
                ("b", 10, "echo.fns", "running", 500),
                ("c", 20, "other.fns", "queued", 500),
                ("d", 20, "echo.fns", "queued", 500),
                ("e", 40, "echo.fns", "queued", 0),
            ];
            for (id, created_at_ms, function, state, at) in rows {
                let row = LedgerRow {
                    function: function.into(),
                    ..row(created_at_ms, state)
                };
                tables.put_fresh(id, &row, None, at).unwrap();
            }
            drop(tables);
            txn.commit().unwrap();
        }
        let txn = db.begin_read().unwrap();
        // At 1000 "e" (changed at 0) has expired.
        let created = |query: &LedgerQuery| -> Vec<u64> {
            list(&txn, query, LIMITS, 1_000)
                .unwrap()
                .iter()
                .map(|row| row.created_at_ms)
                .collect()
        };
        assert_eq!(created(&everything()), [30, 20, 20, 10]);
        let rows = list(&txn, &everything(), LIMITS, 1_000).unwrap();
        assert_eq!(
            (rows[1].function.as_str(), rows[2].function.as_str()),
            ("echo.fns", "other.fns"),
            "equal times by id, descending"
        );
        let echo = LedgerQuery {
            function: Some("echo.fns".into()),
            ..everything()
        };
        assert_eq!(created(&echo), [30, 20, 10]);
        let queued_echo = LedgerQuery {
            state: Some("queued".into()),
            ..echo.clone()
        };
        assert_eq!(created(&queued_echo), [30, 20]);
        let two = LedgerQuery {
            limit: 2,
            ..everything()
        };
        assert_eq!(created(&two), [30, 20]);
        let none = LedgerQuery {
            limit: 0,
            ..everything()
        };
        assert!(created(&none).is_empty());
        assert_eq!(get(&txn, "e", LIMITS, 1_000).unwrap(), None);
        assert_eq!(result(&txn, "a", LIMITS, 1_000).unwrap(), None);
    }
}
