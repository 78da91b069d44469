//! The ledger's storage seam: one opaque row per call id, kept beside the queue (in the
//! embedded store's file, in a JetStream key-value bucket), written with the publish that
//! stores the call and changed by atomic read-modify-write updates.
//!
//! The queue never reads a row's record: it keeps bytes and the few tags it lists and
//! expires by (creation time, function, state).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};

use crate::Message;

/// The ledger's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LedgerConfig {
    /// How long a row is kept after its last change (`--ledger-retention`, default 24 h);
    /// zero turns the ledger off.
    pub retention: Duration,
    /// Most rows kept; the oldest go first (`--ledger-max-records`, default 100,000).
    pub max_records: u64,
    /// Largest kept result (`--ledger-max-result-bytes`, default 256 KiB).
    pub max_result_bytes: usize,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            retention: Duration::from_secs(24 * 3600),
            max_records: 100_000,
            max_result_bytes: 256 * 1024,
        }
    }
}

impl LedgerConfig {
    /// Whether records are kept at all.
    pub fn enabled(&self) -> bool {
        !self.retention.is_zero()
    }
}

/// One call's row.
#[derive(Clone, PartialEq, Eq)]
pub struct LedgerRow {
    /// When the call was accepted, Unix milliseconds (lists are newest first).
    pub created_at_ms: u64,
    /// `name.namespace` (lists filter on it).
    pub function: String,
    /// The call's state (lists filter on it).
    pub state: String,
    /// The record; opaque here.
    pub record: Bytes,
}

impl fmt::Debug for LedgerRow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerRow")
            .field("created_at_ms", &self.created_at_ms)
            .field("function", &self.function)
            .field("state", &self.state)
            .field("record_bytes", &self.record.len())
            .finish()
    }
}

impl LedgerRow {
    /// This row with `line` appended to its record and `state` as its state (what
    /// [`LedgerChange::Append`] makes of it).
    pub fn appended(&self, state: &str, line: &[u8]) -> Self {
        let mut record = BytesMut::with_capacity(self.record.len() + line.len());
        record.extend_from_slice(&self.record);
        record.extend_from_slice(line);
        Self {
            created_at_ms: self.created_at_ms,
            function: self.function.clone(),
            state: state.to_owned(),
            record: record.freeze(),
        }
    }
}

/// What an update does to a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerChange {
    /// Leave it as it is.
    Keep,
    /// Write this row (and, when given, the call's kept result).
    Put {
        /// The new row.
        row: LedgerRow,
        /// The kept result, written with the row.
        result: Option<Bytes>,
    },
    /// Append `line` to the current row's record and set its state; its creation time and
    /// function stay (a journalled change: the ledger's journal lines). Only for a row that
    /// exists: an update given no row must `Put` one. A backend may apply it to a row it has
    /// not read (JetStream keeps the lines under a key of their own), so an update that
    /// appends must decide on the row's `state` alone.
    Append {
        /// The row's state after the change.
        state: String,
        /// The bytes appended to the record.
        line: Bytes,
        /// The kept result, written with the row.
        result: Option<Bytes>,
    },
}

/// An atomic read-modify-write of one row: called with the current row (`None` when there
/// is none), it says what to write. It may be called more than once (a backend that uses
/// compare-and-swap calls it again after a conflict), so it must not have side effects.
///
/// A backend that did not read the row (JetStream, writing a change it knows the row's state
/// for) calls it with the row's `state` and an empty record, creation time 0 and no function,
/// and answers such an update with that row when it appended: an update that returns
/// [`LedgerChange::Append`] must not depend on the rest. Every other answer is the whole row.
pub type LedgerUpdate = Arc<dyn Fn(Option<&LedgerRow>) -> LedgerChange + Send + Sync>;

/// The update a consumer makes to a message's row as the message is handed out to it (an
/// attempt begins), applied by [`crate::WorkQueue::fetch_begun`]: called with the message and
/// its current row. Like a [`LedgerUpdate`] it may be called more than once and must not have
/// side effects.
pub type LedgerBegin = Arc<dyn Fn(&Message, Option<&LedgerRow>) -> LedgerChange + Send + Sync>;

/// `begin` for `message`, as the [`LedgerUpdate`] of its row (how a backend that writes the
/// begins of a fetch one row at a time applies them).
pub(crate) fn begin_for(begin: &LedgerBegin, message: &Message) -> LedgerUpdate {
    let (begin, message) = (Arc::clone(begin), message.clone());
    Arc::new(move |row| begin(&message, row))
}

/// Which rows a list returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerQuery {
    /// Only this function (`name.namespace`).
    pub function: Option<String>,
    /// Only this state.
    pub state: Option<String>,
    /// At most this many, newest first.
    pub limit: usize,
}
