//! The ledger on JetStream: three key-value buckets beside the queue's stream, shared by every
//! gateway and worker on the server. A call's key is `x` and its id's bytes in hex, like the
//! dead letters' subjects.
//!
//! - `<queue stream>_ledger`: the call's row as its publish created it, never written again.
//!   History 1, file storage, `max_age` = twice the retention (the server drops a row that
//!   long after it was written: a call is shown until `retention` after its last change, read
//!   off the journal, as long as that comes within another `retention` of its creation) and
//!   `max_messages` = `max_records` with discard `Old`: a full bucket drops its oldest rows
//!   rather than refusing the newest.
//! - `<queue stream>_ledger_journal`: the call's **journal**: the lines its record gained since
//!   (each a [`LedgerChange::Append`]) and the state they leave it in, or, when an update found
//!   no row and rebuilt one ([`LedgerChange::Put`]), the whole row, which then stands for the
//!   call alone. `max_age` = the retention, and twice `max_records`, so that the rows bucket's
//!   cap is the one that drops calls (a journal dropped before its row would show a call as
//!   queued).
//! - `<queue stream>_ledger_results`: the kept results, `max_records` of them, `max_age` = the
//!   retention and an hour, read only while their call is shown (so a result never outlives
//!   its record, and a record changed after its result was written still has it).
//!
//! A read reads the row and the journal and joins them. Values:
//!
//! ```text
//! row:     1 | created_at_ms (u64) | updated_at_ms (u64) | function length (u32) | function |
//!          state length (u32) | state | record                    (integers big-endian)
//! journal: 2 | updated_at_ms (u64) | state length (u32) | state | lines
//!     or   a whole row, as above
//! ```
//!
//! `updated_at_ms` is the writer's clock: a read hides a call `retention` after its last
//! change (the later of the row's and the journal's times) at once, before the server gets
//! round to dropping it.
//!
//! A row that stays unchanged long enough to age (a call that waits or retries for over the
//! retention) is copied into the journal, whole, by the next update that reads it; and when a
//! publish's row cannot be created, the publish writes it as the call's journal instead
//! ([`Ledger::stand_in`]). A call whose row was dropped by the cap before it ran (a backlog of
//! over `max_records` newer calls) gets its record rebuilt only if its first attempt reads
//! (a message older than the retention does); otherwise it is not shown.
//!
//! The layout changed in December 2026 (one bucket before): stop every gateway and worker of
//! a JetStream before starting the new version, or their updates do not exclude each other.
//! A row written before reads the same (a row without a journal).
//!
//! Why two keys: an attempt's start is then written without reading anything. A publish that
//! wrote a row says so in a header of the queued message (`Courier-Ledger-State`, the state it
//! was created in), so the first delivery of such a message knows its call's state: unless
//! something wrote the journal already (a cancel), it creates the journal with its first line
//! ([`Ledger::begin_unread`]). One request per attempt start instead of a read and a write.
//!
//! Journal writes are compare-and-swap on the journal's revision (creating it expects none),
//! retried after a conflict, so a cancel and an attempt's start cannot both win. A journal this
//! process wrote last is remembered with its revision ([`Written`]), so the next change (the
//! attempt's end after its start) swaps on that revision without reading first; a write by
//! anyone else in between fails the swap and the update reads as usual. A publish creates the
//! row only when the key has none (`create`), so a duplicate publish never replaces the
//! original's record. Durability is JetStream's (the acknowledgement means the server stored
//! it); `ledger_update`'s `durable` asks for nothing more.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::Client;
use async_nats::jetstream::consumer::DeliverPolicy;
use async_nats::jetstream::context::Context;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use super::dead_letters::key;
use super::{REQUEST_TIMEOUT, Recorded, ensure_connected, read_stream, timed_out, within};
use crate::{
    Error, LedgerChange, LedgerQuery, LedgerRow, LedgerUpdate, LedgerWatch, QueueConfig, Result,
};

/// The first byte of a stored row: the layout described in the module docs.
const FORMAT_VERSION: u8 = 1;

/// The first byte of a stored journal of lines.
const JOURNAL_VERSION: u8 = 2;

/// Version, the two times and the function's length.
const FIXED_BYTES: usize = 1 + 8 + 8 + 4;

/// Version, the time and the state's length of a journal of lines.
const JOURNAL_FIXED_BYTES: usize = 1 + 8 + 4;

/// The journal bucket's `max_messages` over `max_records` (its module docs).
const JOURNAL_HEADROOM: u64 = 2;

/// How many times an update reads and tries again after another update of the same row came
/// between its read and its write.
const MAX_UPDATE_ATTEMPTS: u32 = 10;

/// The longest pause before trying an update again (pauses grow from a millisecond, jittered).
const MAX_UPDATE_BACKOFF: Duration = Duration::from_millis(100);

/// How much longer than rows kept results stay on the server (they are shown only while their
/// row is there).
const RESULT_GRACE: Duration = Duration::from_secs(3600);

/// The KV headers a write adds to the value on the wire (`Nats-Expected-Last-Subject-Sequence`
/// and the subject), for the size check against the server's `max_payload`.
const KV_HEADER_ALLOWANCE: usize = 512;

/// How many journals a list reads at once for the calls it lists.
const LIST_READS_AT_ONCE: usize = 32;

/// Most journals [`Written`] remembers; when full it starts again empty.
const MAX_REMEMBERED_ROWS: usize = 4096;

/// What a call's journal holds.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Journal {
    /// Lines appended to the record of the call's row, and the state they leave it in.
    Lines {
        updated_at_ms: u64,
        state: String,
        lines: Bytes,
    },
    /// A whole row, which stands for the call instead of the row its publish wrote.
    Whole(Stored),
}

impl Journal {
    /// This journal with `line` appended and `state` as the state, written at `now`.
    fn appended(&self, state: &str, line: &[u8], now: u64) -> Self {
        match self {
            Self::Lines { lines, .. } => {
                let mut joined = BytesMut::with_capacity(lines.len() + line.len());
                joined.extend_from_slice(lines);
                joined.extend_from_slice(line);
                Self::Lines {
                    updated_at_ms: now,
                    state: state.to_owned(),
                    lines: joined.freeze(),
                }
            }
            Self::Whole(stored) => Self::Whole(Stored {
                updated_at_ms: now,
                row: stored.row.appended(state, line),
            }),
        }
    }

    fn encode(&self) -> Bytes {
        match self {
            Self::Lines {
                updated_at_ms,
                state,
                lines,
            } => {
                let mut value =
                    BytesMut::with_capacity(JOURNAL_FIXED_BYTES + state.len() + lines.len());
                value.put_u8(JOURNAL_VERSION);
                value.put_u64(*updated_at_ms);
                value.put_u32(u32::try_from(state.len()).unwrap_or(u32::MAX));
                value.put_slice(state.as_bytes());
                value.put_slice(lines);
                value.freeze()
            }
            Self::Whole(stored) => encode(&stored.row, stored.updated_at_ms),
        }
    }

    fn decode(value: &Bytes) -> Option<Self> {
        match *value.first()? {
            FORMAT_VERSION => decode(value).map(Self::Whole),
            JOURNAL_VERSION if value.len() >= JOURNAL_FIXED_BYTES => {
                let updated_at_ms = u64::from_be_bytes(value[1..9].try_into().ok()?);
                let (state, rest) = text(value, 9)?;
                Some(Self::Lines {
                    updated_at_ms,
                    state: state.to_owned(),
                    lines: value.slice(rest..),
                })
            }
            _ => None,
        }
    }
}

/// The call `row` and `journal` stand for together (the module docs): `None` when there is
/// neither, or only lines without the row they belong to.
fn joined(row: Option<Stored>, journal: Option<&Journal>) -> Option<Stored> {
    match journal {
        None => row,
        Some(Journal::Whole(stored)) => Some(stored.clone()),
        Some(Journal::Lines {
            updated_at_ms,
            state,
            lines,
        }) => row.map(|stored| Stored {
            updated_at_ms: stored.updated_at_ms.max(*updated_at_ms),
            row: stored.row.appended(state, lines),
        }),
    }
}

/// The row an update that did not read gets: the state alone ([`crate::LedgerUpdate`]).
fn unread(state: &str) -> LedgerRow {
    LedgerRow {
        created_at_ms: 0,
        function: String::new(),
        state: state.to_owned(),
        record: Bytes::new(),
    }
}

/// What a list keeps of a journal until it knows whether its call is listed.
enum Seen {
    /// Lines: their state and time, not the lines (read again for the calls listed).
    Lines { updated_at_ms: u64, state: String },
    /// A whole row.
    Whole(Stored),
}

/// What an update knows of the call's row besides its journal.
#[derive(Debug, Clone)]
enum RowKnown {
    /// Not read: the row was written with the call's message, at this time (Unix
    /// milliseconds), in this state (and the journal, when there is none, is not there yet).
    Unread {
        written_at_ms: u64,
        created_state: String,
    },
    /// Read: the row, if there is one.
    Read(Option<Stored>),
}

/// The journals this process wrote last, by journal key.
#[derive(Debug, Default)]
struct Written(Mutex<HashMap<String, Found>>);

impl Written {
    /// Takes what is remembered of `key` (an update that fails its swap must not try it again).
    fn take(&self, key: &str) -> Option<Found> {
        self.0.lock().ok()?.remove(key)
    }

    fn remember(&self, key: String, found: Found) {
        if let Ok(mut journals) = self.0.lock() {
            if journals.len() >= MAX_REMEMBERED_ROWS {
                journals.clear();
            }
            journals.insert(key, found);
        }
    }
}

/// What a publish's row write found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Created {
    /// Written now, as this revision.
    Now(u64),
    /// The call had a row already; it was left as it is.
    AlreadyThere,
}

/// What an update found before it wrote (read, remembered from this process's last write, or
/// assumed from the message).
#[derive(Debug)]
struct Found {
    /// The journal's revision (0: none).
    revision: u64,
    journal: Option<Journal>,
    row: RowKnown,
}

/// The ledger of one queue.
#[derive(Clone)]
pub(super) struct Ledger {
    client: Client,
    rows: kv::Store,
    journals: kv::Store,
    results: kv::Store,
    retention: Duration,
    written: Arc<Written>,
}

impl Ledger {
    /// Gets the buckets of `config`'s queue, creating them if missing and giving existing ones
    /// `config`'s limits; `None` when the ledger is off (nothing is created).
    pub(super) async fn open(
        client: Client,
        jetstream: &Context,
        config: &QueueConfig,
    ) -> Result<Option<Self>> {
        if !config.ledger.enabled() {
            return Ok(None);
        }
        let rows = ensure_bucket(
            jetstream,
            bucket_config(
                &rows_bucket(config),
                format!("Courier's invocation ledger of stream {}", config.stream),
                config.ledger.retention.saturating_mul(2),
                config.ledger.max_records,
                config.replicas,
            ),
        )
        .await?;
        let journals = ensure_bucket(
            jetstream,
            bucket_config(
                &journals_bucket(config),
                format!("Courier's ledger journals of stream {}", config.stream),
                config.ledger.retention,
                config.ledger.max_records.saturating_mul(JOURNAL_HEADROOM),
                config.replicas,
            ),
        )
        .await?;
        let results = ensure_bucket(
            jetstream,
            bucket_config(
                &results_bucket(config),
                format!("Courier's kept call results of stream {}", config.stream),
                config.ledger.retention.saturating_add(RESULT_GRACE),
                config.ledger.max_records,
                config.replicas,
            ),
        )
        .await?;
        Ok(Some(Self {
            client,
            rows,
            journals,
            results,
            retention: config.ledger.retention,
            written: Arc::default(),
        }))
    }

    /// Writes `row` for call `id` unless it has one.
    pub(super) async fn create(&self, id: &str, row: &LedgerRow) -> Result<Created> {
        let doing = "create a ledger row";
        ensure_connected(&self.client, doing)?;
        let value = encode(row, now_ms());
        self.check_size(value.len())?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.rows.create(key(id), value)).await {
            Ok(Ok(revision)) => Ok(Created::Now(revision)),
            Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Created::AlreadyThere),
            Ok(Err(e)) => Err(Error::unavailable(
                format!("create the ledger row of call {id:?}"),
                e,
            )),
            Err(_) => Err(Error::unavailable(
                format!("create the ledger row of call {id:?}"),
                timed_out(REQUEST_TIMEOUT),
            )),
        }
    }

    /// Removes the row of call `id` written as `revision` (unless it changed since): the row
    /// of a publish the server refused. Best effort: a row left behind shows a call that was
    /// never queued, until it expires.
    pub(super) async fn forget(&self, id: &str, revision: u64) {
        let deleted = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.rows.delete_expect_revision(key(id), Some(revision)),
        )
        .await;
        match deleted {
            Ok(Ok(())) => debug!(call_id = %id, "Ledger row of a refused publish removed."),
            Ok(Err(e)) => {
                warn!(call_id = %id, error = %e, "Ledger row of a refused publish left behind.");
            }
            Err(_) => warn!(
                call_id = %id,
                "Ledger row of a refused publish left behind: no answer in time."
            ),
        }
    }

    /// Keeps `row` as the journal of call `id`, whose message is queued but whose row could
    /// not be created (`create_failed`): its message says it has a row, so its first attempt
    /// will not look for one. Best effort.
    pub(super) async fn stand_in(&self, id: &str, row: &LedgerRow, create_failed: &Error) {
        let journal = Journal::Whole(Stored {
            updated_at_ms: now_ms(),
            row: row.clone(),
        });
        let written = tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.journals.update(key(id), journal.encode(), 0),
        )
        .await;
        match written {
            Ok(Ok(_)) => warn!(
                call_id = %id,
                error = %create_failed,
                "Ledger row not created; the call's journal holds it instead."
            ),
            Ok(Err(e)) => warn!(
                call_id = %id,
                error = %create_failed,
                journal_error = %e,
                "Call queued without its ledger row."
            ),
            Err(_) => warn!(
                call_id = %id,
                error = %create_failed,
                "Call queued without its ledger row: the journal's write had no answer in time."
            ),
        }
    }

    /// The first attempt's start of a call whose publish wrote its row (`recorded`, from the
    /// message's `Courier-Ledger-State`): `update` is applied to the state the row was created
    /// in and its line creates the call's journal, without reading anything. It is
    /// [`Ledger::update`] instead when the journal exists already (a cancel came first), when
    /// the update does not append, and when the message is older than the retention (its row
    /// may be gone: the update then rebuilds the record).
    pub(super) async fn begin_unread(
        &self,
        id: &str,
        recorded: &Recorded,
        update: &LedgerUpdate,
    ) -> Result<Option<LedgerRow>> {
        let assumed = Found {
            revision: 0,
            journal: None,
            row: RowKnown::Unread {
                written_at_ms: recorded.published_at_ms,
                created_state: recorded.state.clone(),
            },
        };
        self.change(id, update, Some(assumed)).await
    }

    /// Compare-and-swap on the call's journal: reads the row and the journal (unless this
    /// process remembers the journal), applies `update`, writes the journal if nobody wrote
    /// it in between, otherwise starts again (at most [`MAX_UPDATE_ATTEMPTS`] times).
    pub(super) async fn update(
        &self,
        id: &str,
        update: &LedgerUpdate,
    ) -> Result<Option<LedgerRow>> {
        self.change(id, update, None).await
    }

    /// [`Ledger::update`], starting from `assumed` when given (nothing read, nothing
    /// remembered: a failed swap then reads at once, without a pause).
    async fn change(
        &self,
        id: &str,
        update: &LedgerUpdate,
        mut assumed: Option<Found>,
    ) -> Result<Option<LedgerRow>> {
        let key = key(id);
        let mut read = false;
        let mut conflicts = 0;
        for _ in 0..MAX_UPDATE_ATTEMPTS {
            if conflicts > 0 {
                tokio::time::sleep(backoff(conflicts)).await;
            }
            ensure_connected(&self.client, "update a ledger row")?;
            // First what the caller assumed, or the journal as this process wrote it when it
            // remembers it; read otherwise.
            let was_assumed = assumed.is_some();
            let known = match assumed.take() {
                Some(found) => Some(found),
                None if read => None,
                None => self.written.take(&key),
            };
            let found = match known {
                Some(found) => found,
                None => self.read(id, &key).await?,
            };
            let now = now_ms();
            // A row the server drops sooner or later (twice the retention after it was
            // written) is read and copied into the journal, which then stands alone.
            if matches!(found.row, RowKnown::Unread { written_at_ms, .. } if self.expired(written_at_ms, now))
            {
                read = true;
                continue;
            }
            let row_ageing = matches!(
                &found.row,
                RowKnown::Read(Some(row)) if self.expired(row.updated_at_ms, now)
            );
            let current = match &found.row {
                RowKnown::Read(row) => self.visible(row.clone(), found.journal.as_ref(), now),
                RowKnown::Unread { created_state, .. } => match &found.journal {
                    Some(Journal::Whole(stored)) => Some(stored.row.clone())
                        .filter(|_| !self.expired(stored.updated_at_ms, now)),
                    Some(Journal::Lines { state, .. }) => Some(unread(state)),
                    None => Some(unread(created_state)),
                },
            };
            // The row was not read, and the journal (if any) does not stand for it.
            let unread_lines = matches!(
                (&found.row, &found.journal),
                (RowKnown::Unread { .. }, None | Some(Journal::Lines { .. }))
            );
            let (journal, result, answer) = match update(current.as_ref()) {
                // The answer to anything but an append is the whole row: read it.
                LedgerChange::Keep | LedgerChange::Put { .. } if unread_lines => {
                    read = true;
                    continue;
                }
                LedgerChange::Keep => return Ok(current),
                LedgerChange::Put { row, result } => (
                    Journal::Whole(Stored {
                        updated_at_ms: now,
                        row: row.clone(),
                    }),
                    result,
                    row,
                ),
                LedgerChange::Append {
                    state,
                    line,
                    result,
                } => {
                    let Some(over) = current else {
                        // Nothing to append to: the update broke its contract.
                        return Ok(None);
                    };
                    let answer = if unread_lines {
                        unread(&state)
                    } else {
                        over.appended(&state, &line)
                    };
                    let journal = match &found.journal {
                        _ if row_ageing => Journal::Whole(Stored {
                            updated_at_ms: now,
                            row: answer.clone(),
                        }),
                        Some(journal) => journal.appended(&state, &line, now),
                        None => Journal::Lines {
                            updated_at_ms: now,
                            state: state.clone(),
                            lines: line.clone(),
                        },
                    };
                    (journal, result, answer)
                }
            };
            // The result first: once the row says the call ended, its result is there.
            if let Some(result) = result {
                self.put_result(id, &key, result).await?;
            }
            let value = journal.encode();
            self.check_size(value.len())?;
            match tokio::time::timeout(
                REQUEST_TIMEOUT,
                self.journals.update(&key, value, found.revision),
            )
            .await
            {
                Ok(Ok(revision)) => {
                    self.written.remember(
                        key,
                        Found {
                            revision,
                            journal: Some(journal),
                            row: found.row,
                        },
                    );
                    return Ok(Some(answer));
                }
                Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision && was_assumed => {
                    debug!(call_id = %id, "The call's journal was written first; reading it.");
                    read = true;
                }
                Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    conflicts += 1;
                    debug!(call_id = %id, conflicts, "Ledger update conflicted; trying again.");
                    read = true;
                }
                Ok(Err(e)) => {
                    return Err(Error::unavailable(
                        format!("update the ledger row of call {id:?}"),
                        e,
                    ));
                }
                Err(_) => {
                    return Err(Error::unavailable(
                        format!("update the ledger row of call {id:?}"),
                        timed_out(REQUEST_TIMEOUT),
                    ));
                }
            }
        }
        Err(Error::unavailable(
            format!("update the ledger row of call {id:?}"),
            format!(
                "other updates of the row kept coming between its read and its write \
                 ({MAX_UPDATE_ATTEMPTS} attempts)"
            ),
        ))
    }

    /// The call's row and journal as the server has them.
    async fn read(&self, id: &str, key: &str) -> Result<Found> {
        let (row, revision, journal) = self.read_entries(id, key).await?;
        Ok(Found {
            revision,
            journal,
            row: RowKnown::Read(row),
        })
    }

    /// The call's row, its journal's revision (0: none) and its journal.
    async fn read_entries(
        &self,
        id: &str,
        key: &str,
    ) -> Result<(Option<Stored>, u64, Option<Journal>)> {
        let doing = format!("read the ledger row of call {id:?}");
        let (row, journal) = tokio::join!(
            within(&doing, self.rows.entry(key.to_owned())),
            within(&doing, self.journals.entry(key.to_owned())),
        );
        let row = row?.and_then(|entry| stored(&entry, decode, "row"));
        let (revision, journal) = match journal? {
            // A deleted journal is none, but its revision is the one to replace.
            Some(entry) => (entry.revision, stored(&entry, Journal::decode, "journal")),
            None => (0, None),
        };
        Ok((row, revision, journal))
    }

    /// The call `row` and `journal` stand for, unless there is none or it expired by `now`.
    fn visible(
        &self,
        row: Option<Stored>,
        journal: Option<&Journal>,
        now: u64,
    ) -> Option<LedgerRow> {
        joined(row, journal)
            .filter(|stored| !self.expired(stored.updated_at_ms, now))
            .map(|stored| stored.row)
    }

    async fn put_result(&self, id: &str, key: &str, result: Bytes) -> Result<()> {
        let doing = format!("keep the result of call {id:?}");
        self.check_size(result.len())?;
        ensure_connected(&self.client, &doing)?;
        within(&doing, self.results.put(key, result)).await?;
        Ok(())
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<LedgerRow>> {
        ensure_connected(&self.client, "read a ledger row")?;
        let (row, _, journal) = self.read_entries(id, &key(id)).await?;
        Ok(self.visible(row, journal.as_ref(), now_ms()))
    }

    /// The kept result of call `id`, while its row is there.
    pub(super) async fn result(&self, id: &str) -> Result<Option<Bytes>> {
        let doing = format!("read the kept result of call {id:?}");
        ensure_connected(&self.client, &doing)?;
        let (row, result) = tokio::join!(self.get(id), within(&doing, self.results.get(key(id))));
        if row?.is_none() {
            return Ok(None);
        }
        result
    }

    /// Every call's row and journal through an ephemeral ordered consumer on each bucket,
    /// filtered, newest first, at most `query.limit`. The journals are read first, keeping of
    /// each only its state and time (a whole row for the rare journal that is one), so each
    /// row is judged as it arrives and about twice `query.limit` rows are held; the lines of
    /// the calls listed are read again after, and a call that no longer matches is left out.
    pub(super) async fn list(&self, query: &LedgerQuery) -> Result<Vec<LedgerRow>> {
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        ensure_connected(&self.client, "list ledger rows")?;
        let now = now_ms();
        let mut journals: HashMap<String, Seen> = HashMap::new();
        read_all(&self.journals, |key, value| match Journal::decode(value) {
            Some(Journal::Lines {
                updated_at_ms,
                state,
                ..
            }) => {
                journals.insert(
                    key.to_owned(),
                    Seen::Lines {
                        updated_at_ms,
                        state,
                    },
                );
            }
            Some(Journal::Whole(stored)) => {
                journals.insert(key.to_owned(), Seen::Whole(stored));
            }
            None => warn!(key = %key, "Ignoring a ledger journal in an unknown format."),
        })
        .await?;
        // Each listed row, and whether its journal's lines are still to be appended.
        let mut listed: Vec<(String, LedgerRow, bool)> = Vec::new();
        let keep = |listed: &mut Vec<_>, key: &str, stored: Stored, lines_to_read: bool| {
            if self.matches(&stored, query, now) {
                listed.push((key.to_owned(), stored.row, lines_to_read));
                if listed.len() >= 2 * query.limit {
                    newest_first(listed, query.limit);
                }
            }
        };
        read_all(&self.rows, |key, value| {
            let Some(row) = decode(value) else {
                warn!(key = %key, "Ignoring a ledger row in an unknown format.");
                return;
            };
            match journals.remove(key) {
                None => keep(&mut listed, key, row, false),
                Some(Seen::Whole(stored)) => keep(&mut listed, key, stored, false),
                // The row with the journal's state and time; its lines come later.
                Some(Seen::Lines {
                    updated_at_ms,
                    state,
                }) => {
                    let stored = Stored {
                        updated_at_ms: row.updated_at_ms.max(updated_at_ms),
                        row: LedgerRow { state, ..row.row },
                    };
                    keep(&mut listed, key, stored, true);
                }
            }
        })
        .await?;
        // Whole rows that stand for a call without the row its publish wrote.
        for (key, seen) in journals {
            if let Seen::Whole(stored) = seen {
                keep(&mut listed, &key, stored, false);
            }
        }
        newest_first(&mut listed, query.limit);
        // In order, at most LIST_READS_AT_ONCE reads out at a time.
        let rows: Vec<Result<Option<LedgerRow>>> = futures_util::stream::iter(listed)
            .map(|(key, row, lines_to_read)| self.with_lines(key, row, lines_to_read, query))
            .buffered(LIST_READS_AT_ONCE)
            .collect()
            .await;
        rows.into_iter()
            .filter_map(Result::transpose)
            .collect::<Result<Vec<_>>>()
    }

    /// A listed `row` with its journal's lines, read now when `lines_to_read`; `None` when
    /// the call no longer matches `query` (it changed since, or expired: its journal is gone).
    async fn with_lines(
        &self,
        key: String,
        row: LedgerRow,
        lines_to_read: bool,
        query: &LedgerQuery,
    ) -> Result<Option<LedgerRow>> {
        if !lines_to_read {
            return Ok(Some(row));
        }
        let entry = within("list ledger rows", self.journals.entry(key)).await?;
        let stored = match entry
            .as_ref()
            .and_then(|entry| stored(entry, Journal::decode, "journal"))
        {
            Some(Journal::Lines {
                updated_at_ms,
                state,
                lines,
            }) => Stored {
                updated_at_ms,
                row: row.appended(&state, &lines),
            },
            Some(Journal::Whole(stored)) => stored,
            None => return Ok(None),
        };
        Ok(self.matches(&stored, query, now_ms()).then_some(stored.row))
    }

    fn matches(&self, stored: &Stored, query: &LedgerQuery, now: u64) -> bool {
        !self.expired(stored.updated_at_ms, now)
            && query
                .function
                .as_deref()
                .is_none_or(|f| f == stored.row.function)
            && query.state.as_deref().is_none_or(|s| s == stored.row.state)
    }

    /// Yields for every write of the row or the journal of call `id` from now on (a watch of
    /// each key with deliver policy "new"; one watch of both needs a 2.10 server).
    pub(super) async fn watch(&self, id: &str) -> Result<LedgerWatch> {
        let doing = format!("watch the ledger row of call {id:?}");
        ensure_connected(&self.client, &doing)?;
        let key = key(id);
        let (row, journal) = tokio::join!(
            within(&doing, self.rows.watch(&key)),
            within(&doing, self.journals.watch(&key)),
        );
        Ok(futures_util::stream::select(row?, journal?)
            .map(|change| {
                if let Err(e) = change {
                    debug!(error = %e, "Ledger watch error; the row may have changed.");
                }
            })
            .boxed())
    }

    fn expired(&self, updated_at_ms: u64, now: u64) -> bool {
        u128::from(now.saturating_sub(updated_at_ms)) >= self.retention.as_millis()
    }

    /// Refuses a value the server would refuse (its `max_payload` counts the headers too).
    fn check_size(&self, size: usize) -> Result<()> {
        let limit = self
            .client
            .server_info()
            .max_payload
            .saturating_sub(KV_HEADER_ALLOWANCE);
        if size > limit {
            return Err(Error::TooLarge { size, limit });
        }
        Ok(())
    }
}

/// Calls `each` with the key and value of every entry of `bucket` that holds a value (the
/// last put of each key).
async fn read_all(bucket: &kv::Store, mut each: impl FnMut(&str, &Bytes)) -> Result<()> {
    read_stream(
        &bucket.stream,
        format!("{}>", bucket.prefix),
        DeliverPolicy::LastPerSubject,
        "list ledger rows",
        |message| {
            let put = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("KV-Operation"))
                .is_none_or(|operation| operation.as_str() == "PUT");
            if put {
                let key = message
                    .subject
                    .strip_prefix(bucket.prefix.as_str())
                    .unwrap_or(&message.subject);
                each(key, &message.payload);
            }
        },
    )
    .await
}

/// What `entry` holds, read with `decode`, unless it was deleted or is in an unknown format
/// (logged as a ledger `what` that is ignored).
fn stored<T>(entry: &kv::Entry, decode: fn(&Bytes) -> Option<T>, what: &str) -> Option<T> {
    if entry.operation != Operation::Put {
        return None;
    }
    let value = decode(&entry.value);
    if value.is_none() {
        warn!(key = %entry.key, "Ignoring a ledger {what} in an unknown format.");
    }
    value
}

/// Gets the bucket's stream, creating it if missing; gives an existing one `wanted`'s limits.
async fn ensure_bucket(jetstream: &Context, wanted: stream::Config) -> Result<kv::Store> {
    let bucket = wanted.name.trim_start_matches("KV_").to_owned();
    let stream = super::cluster::get_or_create(jetstream, &wanted, "ledger bucket").await?;
    let current = &stream.cached_info().config;
    if current.max_age != wanted.max_age
        || current.max_messages != wanted.max_messages
        || current.discard != wanted.discard
        || current.max_messages_per_subject != wanted.max_messages_per_subject
    {
        let updated = stream::Config {
            max_age: wanted.max_age,
            max_messages: wanted.max_messages,
            discard: wanted.discard,
            max_messages_per_subject: wanted.max_messages_per_subject,
            duplicate_window: wanted.duplicate_window,
            ..current.clone()
        };
        within(
            &format!("update ledger bucket {bucket:?}"),
            jetstream.update_stream(updated),
        )
        .await?;
        info!(
            bucket = %bucket,
            max_age = ?wanted.max_age,
            max_messages = wanted.max_messages,
            "Ledger bucket limits updated."
        );
    }
    within(
        &format!("open ledger bucket {bucket:?}"),
        jetstream.get_key_value(bucket.clone()),
    )
    .await
}

/// The stream of a key-value bucket as async-nats would create it (same subjects, history 1,
/// rollups and direct gets allowed), but full means "drop the oldest", not "refuse".
fn bucket_config(
    bucket: &str,
    description: String,
    max_age: Duration,
    max_messages: u64,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_messages: i64::try_from(max_messages.max(1)).unwrap_or(i64::MAX),
        max_age,
        // Writes carry no message id; the window must only not exceed max_age.
        duplicate_window: Duration::from_secs(120).min(max_age),
        storage: StorageType::File,
        discard: DiscardPolicy::Old,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        num_replicas: replicas,
        ..Default::default()
    }
}

fn rows_bucket(config: &QueueConfig) -> String {
    format!("{}_ledger", config.stream)
}

fn journals_bucket(config: &QueueConfig) -> String {
    format!("{}_ledger_journal", config.stream)
}

fn results_bucket(config: &QueueConfig) -> String {
    format!("{}_ledger_results", config.stream)
}

/// The pause before update attempt `attempt` (1 = the first retry): up to 2^attempt ms,
/// jittered so that updates that conflicted do not meet again.
fn backoff(attempt: u32) -> Duration {
    let ceiling = Duration::from_millis(1 << attempt.min(16)).min(MAX_UPDATE_BACKOFF);
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(attempt);
    let fraction = (hasher.finish() % 1024) as u32;
    ceiling * fraction / 1024
}

/// Sorts `rows` newest first (equal times by key, descending: by id, as the embedded store
/// lists them) and keeps the first `limit`.
fn newest_first<T>(rows: &mut Vec<(String, LedgerRow, T)>, limit: usize) {
    rows.sort_by(|(a_key, a, _), (b_key, b, _)| {
        b.created_at_ms
            .cmp(&a.created_at_ms)
            .then_with(|| b_key.cmp(a_key))
    });
    rows.truncate(limit);
}

/// Now, in wall-clock milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}

/// A decoded row with the time it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stored {
    updated_at_ms: u64,
    row: LedgerRow,
}

fn encode(row: &LedgerRow, updated_at_ms: u64) -> Bytes {
    let mut value = BytesMut::with_capacity(
        FIXED_BYTES + row.function.len() + 4 + row.state.len() + row.record.len(),
    );
    value.put_u8(FORMAT_VERSION);
    value.put_u64(row.created_at_ms);
    value.put_u64(updated_at_ms);
    value.put_u32(u32::try_from(row.function.len()).unwrap_or(u32::MAX));
    value.put_slice(row.function.as_bytes());
    value.put_u32(u32::try_from(row.state.len()).unwrap_or(u32::MAX));
    value.put_slice(row.state.as_bytes());
    value.put_slice(&row.record);
    value.freeze()
}

fn decode(value: &Bytes) -> Option<Stored> {
    if value.len() < FIXED_BYTES || value[0] != FORMAT_VERSION {
        return None;
    }
    let created_at_ms = u64::from_be_bytes(value[1..9].try_into().ok()?);
    let updated_at_ms = u64::from_be_bytes(value[9..17].try_into().ok()?);
    let (function, rest) = text(value, 17)?;
    let (state, rest) = text(value, rest)?;
    Some(Stored {
        updated_at_ms,
        row: LedgerRow {
            created_at_ms,
            function: function.to_owned(),
            state: state.to_owned(),
            record: value.slice(rest..),
        },
    })
}

/// The length-prefixed text at `at` in `value`, and where what follows it starts.
fn text(value: &[u8], at: usize) -> Option<(&str, usize)> {
    let len_end = at.checked_add(4)?;
    let len = usize::try_from(u32::from_be_bytes(value.get(at..len_end)?.try_into().ok()?)).ok()?;
    let end = len_end.checked_add(len)?;
    Some((std::str::from_utf8(value.get(len_end..end)?).ok()?, end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LedgerConfig;

    fn row(created_at_ms: u64, function: &str, state: &str, record: &'static [u8]) -> LedgerRow {
        LedgerRow {
            created_at_ms,
            function: function.into(),
            state: state.into(),
            record: Bytes::from_static(record),
        }
    }

    #[test]
    fn a_row_reads_back_as_written() {
        for row in [
            row(
                1_700_000_000_123,
                "echo.fns",
                "queued",
                b"{\"id\":\"a\"}\x00\xff",
            ),
            row(0, "", "", b""),
            row(u64::MAX, "f\u{e9}.ns", "running", b"x"),
        ] {
            let stored = decode(&encode(&row, 42)).expect("decodes");
            assert_eq!(
                stored,
                Stored {
                    updated_at_ms: 42,
                    row
                }
            );
        }
        assert_eq!(
            decode(&Bytes::from_static(b"\x02whatever-whatever-whatever")),
            None
        );
        assert_eq!(decode(&Bytes::from_static(b"\x01short")), None);
        let mut truncated = encode(&row(1, "echo.fns", "queued", b""), 1).to_vec();
        truncated.truncate(truncated.len() - 2);
        assert_eq!(decode(&Bytes::from(truncated)), None);
    }

    #[test]
    fn a_journal_reads_back_as_written_and_joins_its_row() {
        let created = Stored {
            updated_at_ms: 10,
            row: row(5, "echo.fns", "queued", b"{\"id\":\"a\"}"),
        };
        let lines = Journal::Lines {
            updated_at_ms: 20,
            state: "running".into(),
            lines: Bytes::from_static(b"\n{\"b\":1}"),
        };
        let whole = Journal::Whole(Stored {
            updated_at_ms: 30,
            row: row(6, "other.fns", "failed", b"{}"),
        });
        for journal in [&lines, &whole] {
            assert_eq!(Journal::decode(&journal.encode()).as_ref(), Some(journal));
        }
        assert_eq!(Journal::decode(&Bytes::from_static(b"\x03abc")), None);
        assert_eq!(Journal::decode(&Bytes::from_static(b"\x02short")), None);

        // Lines join the row they belong to: its creation time and function, their state.
        let joined_lines = joined(Some(created.clone()), Some(&lines)).expect("a row");
        assert_eq!(joined_lines.updated_at_ms, 20);
        assert_eq!(joined_lines.row.created_at_ms, 5);
        assert_eq!(joined_lines.row.function, "echo.fns");
        assert_eq!(joined_lines.row.state, "running");
        assert_eq!(&joined_lines.row.record[..], b"{\"id\":\"a\"}\n{\"b\":1}");
        // Without the row, lines stand for nothing; a whole row stands alone.
        assert_eq!(joined(None, Some(&lines)), None);
        assert_eq!(
            joined(None, Some(&whole)).expect("a row").row.function,
            "other.fns"
        );
        assert_eq!(
            joined(Some(created.clone()), Some(&whole))
                .expect("a row")
                .row
                .state,
            "failed"
        );
        assert_eq!(joined(Some(created.clone()), None), Some(created));

        // Appending to either keeps its kind.
        let more = lines.appended("succeeded", b"\n{\"f\":2}", 40);
        assert!(
            matches!(&more, Journal::Lines { lines, updated_at_ms: 40, state }
            if state == "succeeded" && &lines[..] == b"\n{\"b\":1}\n{\"f\":2}")
        );
        let more = whole.appended("succeeded", b"\nx", 40);
        assert!(matches!(&more, Journal::Whole(stored)
            if &stored.row.record[..] == b"{}\nx" && stored.row.created_at_ms == 6));
    }

    #[test]
    fn the_buckets_keep_a_row_and_a_journal_per_call_and_drop_the_oldest_when_full() {
        let config = QueueConfig {
            ledger: LedgerConfig {
                retention: Duration::from_secs(60),
                max_records: 500,
                ..LedgerConfig::default()
            },
            ..QueueConfig::default()
        };
        let rows = bucket_config(
            &rows_bucket(&config),
            String::new(),
            config.ledger.retention,
            config.ledger.max_records,
            3,
        );
        assert_eq!(rows.name, "KV_OF_faas-request_ledger");
        assert_eq!(rows.subjects, ["$KV.OF_faas-request_ledger.>"]);
        assert_eq!(rows.max_messages_per_subject, 1);
        assert_eq!(rows.max_messages, 500);
        assert_eq!(rows.max_age, Duration::from_secs(60));
        assert_eq!(rows.duplicate_window, Duration::from_secs(60));
        assert_eq!(rows.discard, DiscardPolicy::Old);
        assert_eq!(rows.storage, StorageType::File);
        assert!(rows.allow_direct && rows.allow_rollup);
        assert_eq!(rows.num_replicas, 3);
        assert_eq!(results_bucket(&config), "OF_faas-request_ledger_results");
    }

    #[test]
    fn lists_are_newest_first_then_by_key_descending_and_limited() {
        let mut rows: Vec<(String, LedgerRow, ())> = [("xa", 2), ("xc", 1), ("xb", 2), ("xd", 3)]
            .into_iter()
            .map(|(key, at)| (key.to_owned(), row(at, "f", "s", b""), ()))
            .collect();
        newest_first(&mut rows, 3);
        let keys: Vec<&str> = rows.iter().map(|(key, _, _)| key.as_str()).collect();
        assert_eq!(keys, ["xd", "xb", "xa"]);
    }

    #[test]
    fn update_pauses_grow_and_stay_bounded() {
        for attempt in 1..MAX_UPDATE_ATTEMPTS + 5 {
            let pause = backoff(attempt);
            assert!(pause <= Duration::from_millis(1 << attempt.min(16)));
            assert!(pause <= MAX_UPDATE_BACKOFF);
        }
    }
}
