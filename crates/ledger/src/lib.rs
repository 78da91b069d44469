//! The invocation ledger: what happened to each queued call after its 202. [`Ledger`] reads
//! and changes [`CallRecord`]s through the queue's opaque rows ([`WorkQueue::ledger_update`]
//! and friends): the gateway writes a record with the publish and serves, waits on and
//! cancels it; the queue worker records each attempt, the callback and the kept result.
//!
//! A change after the record's creation is appended to the stored record as a journal line
//! ([`Change`]), decided on the row's state alone: the queue's writer applies two per call, and
//! it never parses a record to do so. Reading replays the journal.
//!
//! Invariant: knows the record (courier-core) and the queue's seam, never a backend: the
//! same code runs on the embedded store and on JetStream. Serves no HTTP.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use courier_core::ledger::{CallRecord, CallState, Change, KeptResult, Then, format_time};
use courier_core::queue::QueueRequest;
use courier_queue::{
    Delivery, LedgerBegin, LedgerChange, LedgerQuery, LedgerRow, LedgerUpdate, Message, Settlement,
    WorkQueue,
};
use futures_util::StreamExt as _;
use time::OffsetDateTime;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often a wait reads the record again even when no change was signalled (a watch can
/// miss changes while a JetStream connection is re-established).
const WAIT_REREAD: Duration = Duration::from_secs(1);

/// A ledger failure.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The queue failed (or the ledger is off: [`courier_queue::Error::LedgerOff`]).
    #[error(transparent)]
    Queue(#[from] courier_queue::Error),
    /// A stored record cannot be read.
    #[error("the ledger record of call {id} cannot be read: {reason}")]
    Corrupt {
        /// The call id.
        id: String,
        /// Why.
        reason: String,
    },
}

impl LedgerError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Queue(e) if e.is_retryable())
    }

    /// Whether the ledger is off.
    pub fn is_off(&self) -> bool {
        matches!(self, Self::Queue(courier_queue::Error::LedgerOff))
    }
}

/// The ledger's result type.
pub type Result<T, E = LedgerError> = std::result::Result<T, E>;

/// Whether an attempt may run.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// Yes: the record is now `running` with the new attempt.
    Run,
    /// The call was cancelled: settle it without running.
    Cancelled,
    /// The call already ended (a redelivery after its final write): settle it without
    /// running.
    AlreadyFinal(CallState),
}

/// What a cancel did.
#[derive(Debug, Clone, PartialEq)]
pub enum Cancel {
    /// Cancelled: it will never run.
    Cancelled(Box<CallRecord>),
    /// No record under that id.
    NotFound,
    /// Too late: the call is in this state.
    Refused(CallState),
}

/// How an attempt ended.
#[derive(Debug, Clone)]
pub struct Finish {
    /// How long it took.
    pub duration: Duration,
    /// The function's status (none when no answer came).
    pub status: Option<u16>,
    /// What went wrong, when something did.
    pub error: Option<String>,
    /// What follows.
    pub then: Then,
}

/// Which records a list returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallFilter {
    /// Only calls of this function (`name.namespace`).
    pub function: Option<String>,
    /// Only calls in this state.
    pub state: Option<CallState>,
    /// At most this many, newest first.
    pub limit: usize,
}

/// The ledger over one queue.
#[derive(Clone)]
pub struct Ledger {
    queue: Arc<dyn WorkQueue>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Ledger")
    }
}

/// The row a record is stored as.
pub fn row(record: &CallRecord) -> LedgerRow {
    row_with(record, record.created_at_ms(), record.qualified_function())
}

/// The row `record` is stored as, given its creation time and qualified function.
fn row_with(record: &CallRecord, created_at_ms: u64, function: String) -> LedgerRow {
    LedgerRow {
        created_at_ms,
        function,
        state: record.state.as_str().to_owned(),
        record: Bytes::from(record.to_bytes()),
    }
}

fn decode(id: &str, row: &LedgerRow) -> Result<CallRecord> {
    CallRecord::from_bytes(&row.record).map_err(|e| LedgerError::Corrupt {
        id: id.to_owned(),
        reason: e.to_string(),
    })
}

/// The change that stores `record` whole (and `result`, when one is kept): for a call without
/// a readable row, whose record is rebuilt.
fn put(record: &CallRecord, result: Option<Bytes>) -> LedgerChange {
    LedgerChange::Put {
        row: row(record),
        result,
    }
}

/// The change that journals `change` on the row `over` (and stores `result`, when one is
/// kept), without reading its record: the row's state says whether the change applies
/// (`Keep` when it does not). `None` when the row's state cannot be read. It needs nothing
/// of the row but its state, so a backend may apply it to a row it has not read
/// ([`LedgerChange::Append`]).
fn journal(over: &LedgerRow, change: &Change, result: Option<Bytes>) -> Option<LedgerChange> {
    let state = over.state.parse::<CallState>().ok()?;
    let Some(next) = change.state_after(state) else {
        return Some(LedgerChange::Keep);
    };
    Some(LedgerChange::Append {
        state: next.as_str().to_owned(),
        line: Bytes::from(change.line()),
        result,
    })
}

/// The update that makes `change` to the record in `current` or, when there is no readable
/// row, to the record `rebuild` makes (`Keep` when it makes none).
fn change_or_rebuild(
    current: Option<&LedgerRow>,
    change: &Change,
    result: Option<Bytes>,
    rebuild: impl FnOnce() -> Option<CallRecord>,
) -> LedgerChange {
    if let Some(changed) = current.and_then(|over| journal(over, change, result.clone())) {
        return changed;
    }
    let Some(mut record) = rebuild() else {
        return LedgerChange::Keep;
    };
    if change.state_after(record.state).is_none() {
        return LedgerChange::Keep;
    }
    change.clone().apply(&mut record);
    put(&record, result)
}

impl Ledger {
    /// The ledger kept beside `queue`.
    pub fn new(queue: Arc<dyn WorkQueue>) -> Self {
        Self { queue }
    }

    /// The record of call `id` (`None`: unknown or expired).
    pub async fn get(&self, id: &str) -> Result<Option<CallRecord>> {
        match self.queue.ledger_get(id).await? {
            Some(row) => Ok(Some(decode(id, &row)?)),
            None => Ok(None),
        }
    }

    /// Records matching `filter`, newest first. A record that cannot be read is left out
    /// (and does not hide the others).
    pub async fn list(&self, filter: &CallFilter) -> Result<Vec<CallRecord>> {
        let rows = self
            .queue
            .ledger_list(&LedgerQuery {
                function: filter.function.clone(),
                state: filter.state.map(|s| s.as_str().to_owned()),
                limit: filter.limit,
            })
            .await?;
        Ok(rows
            .iter()
            .filter_map(|row| CallRecord::from_bytes(&row.record).ok())
            .collect())
    }

    /// The record of call `id` once it is final, or as it is when `until` comes or `stop` is
    /// cancelled (`None`: unknown or expired).
    pub async fn wait_final(
        &self,
        id: &str,
        until: Instant,
        stop: &CancellationToken,
    ) -> Result<Option<CallRecord>> {
        let mut changes = self.queue.ledger_watch(id).await?;
        loop {
            let Some(record) = self.get(id).await? else {
                return Ok(None);
            };
            if record.state.is_final() || Instant::now() >= until {
                return Ok(Some(record));
            }
            let reread = (Instant::now() + WAIT_REREAD).min(until);
            tokio::select! {
                changed = changes.next() => {
                    if changed.is_none() {
                        // The queue closed: wait out the re-read interval instead.
                        tokio::time::sleep_until(reread).await;
                    }
                }
                () = tokio::time::sleep_until(reread) => {}
                () = stop.cancelled() => return Ok(Some(record)),
            }
        }
    }

    /// Cancels call `id` if it has not started.
    pub async fn cancel(&self, id: &str) -> Result<Cancel> {
        let now = OffsetDateTime::now_utc();
        let marker = format_time(now);
        let change = Change::Cancel(courier_core::ledger::unix_nanos(now));
        let update: LedgerUpdate = Arc::new(move |current: Option<&LedgerRow>| {
            change_or_rebuild(current, &change, None, || None)
        });
        let Some(row) = self.queue.ledger_update(id, update, true).await? else {
            return Ok(Cancel::NotFound);
        };
        let record = decode(id, &row)?;
        if record.state == CallState::Cancelled && record.updated_at == marker {
            Ok(Cancel::Cancelled(Box::new(record)))
        } else {
            Ok(Cancel::Refused(record.state))
        }
    }

    /// The kept result of call `id`.
    pub async fn result(&self, id: &str) -> Result<Option<KeptResult>> {
        match self.queue.ledger_result(id).await? {
            Some(bytes) => {
                KeptResult::decode(&bytes)
                    .map(Some)
                    .map_err(|reason| LedgerError::Corrupt {
                        id: id.to_owned(),
                        reason,
                    })
            }
            None => Ok(None),
        }
    }

    /// An attempt of the queued call `id` (the queue's message id) is about to start: records
    /// it, unless the call was cancelled or already ended. A call without a record (written
    /// by an OpenFaaS gateway, or expired) gets one rebuilt from `request`.
    pub async fn begin_attempt(&self, id: &str, request: &Arc<QueueRequest>) -> Result<Begin> {
        let now = OffsetDateTime::now_utc();
        // The record a call without one starts from is built only when there is none (rare):
        // the closure shares the worker's request instead.
        let (rebuild_id, request) = (id.to_owned(), Arc::clone(request));
        let update: LedgerUpdate = Arc::new(move |current: Option<&LedgerRow>| {
            begin_change(
                current,
                || Some(CallRecord::from_queue_request(&rebuild_id, &request, now)),
                now,
            )
        });
        let row = self.queue.ledger_update(id, update, false).await;
        begun(id, row)
    }

    /// The current attempt of call `id` ended; `kept` is its result when the call keeps one.
    pub async fn finish_attempt(
        &self,
        id: &str,
        request: &Arc<QueueRequest>,
        finish: Finish,
        kept: Option<KeptResult>,
    ) -> Result<()> {
        let update = finish_update(id, request, finish, kept);
        let row = self.queue.ledger_update(id, update, false).await;
        written(id, row).map(drop)
    }

    /// [`Ledger::finish_attempt`], then `delivery` is settled as `settlement`: one step on a
    /// backend that has one ([`Delivery::settle_recorded`]). The record is written first
    /// either way. Returns whether the record was written and the settle's answer.
    pub async fn finish_and_settle(
        &self,
        delivery: Delivery,
        settlement: Settlement,
        id: &str,
        (request, finish, kept): (&Arc<QueueRequest>, Finish, Option<KeptResult>),
    ) -> (Result<()>, courier_queue::Result<()>) {
        let update = finish_update(id, request, finish, kept);
        let done = delivery
            .settle_recorded(self.queue.as_ref(), settlement, id, update)
            .await;
        (written(id, done.row).map(drop), done.settled)
    }

    /// [`Ledger::record_callback`], then `delivery` is settled as `settlement`, like
    /// [`Ledger::finish_and_settle`].
    pub async fn callback_and_settle(
        &self,
        delivery: Delivery,
        settlement: Settlement,
        id: &str,
        posted: (u32, Option<u16>, bool),
    ) -> (Result<()>, courier_queue::Result<()>) {
        let (attempts, status, delivered) = posted;
        let update = callback_update(attempts, status, delivered);
        let done = delivery
            .settle_recorded(self.queue.as_ref(), settlement, id, update)
            .await;
        (done.row.map(drop).map_err(LedgerError::from), done.settled)
    }

    /// The callback of call `id` was posted `attempts` times; `status` was the receiver's
    /// last answer.
    pub async fn record_callback(
        &self,
        id: &str,
        attempts: u32,
        status: Option<u16>,
        delivered: bool,
    ) -> Result<()> {
        let update = callback_update(attempts, status, delivered);
        self.queue.ledger_update(id, update, false).await?;
        Ok(())
    }
}

/// The begin update of the attempts a fetch hands out ([`WorkQueue::fetch_begun`]), each
/// starting when the queue applies it; read each one's answer with [`begun`]. A call without a
/// record gets one rebuilt from its queued request, after `prepare` had it (the worker mints
/// the call's trace context there, as it does before each attempt).
pub fn begin_update(prepare: fn(&mut QueueRequest, &str)) -> LedgerBegin {
    Arc::new(move |message: &Message, current: Option<&LedgerRow>| {
        let now = OffsetDateTime::now_utc();
        begin_change(
            current,
            || {
                let mut request = serde_json::from_slice::<QueueRequest>(&message.payload).ok()?;
                prepare(&mut request, &message.id);
                Some(CallRecord::from_queue_request(&message.id, &request, now))
            },
            now,
        )
    })
}

/// Whether the attempt begun on call `id` may run, from the row the begin update left
/// (`row`: the queue's answer to it). It reads the row's `state` only: the record is not
/// decoded on the worker's path (a JSON parse per call for nothing the worker reads).
pub fn begun(id: &str, row: courier_queue::Result<Option<LedgerRow>>) -> Result<Begin> {
    let row = written(id, row)?;
    let state = row
        .state
        .parse::<CallState>()
        .map_err(|e| LedgerError::Corrupt {
            id: id.to_owned(),
            reason: format!("the row's state: {e}"),
        })?;
    Ok(match state {
        CallState::Cancelled => Begin::Cancelled,
        state if state.is_final() => Begin::AlreadyFinal(state),
        // Running with the new attempt; or another delivery of the same call began at the
        // same moment, or the record could not be advanced: run anyway (at least once).
        _ => Begin::Run,
    })
}

/// An attempt begins at `now` on the record in `current` (or, without one, on the record
/// `rebuild` makes); nothing changes when it cannot begin (cancelled, final).
fn begin_change(
    current: Option<&LedgerRow>,
    rebuild: impl FnOnce() -> Option<CallRecord>,
    now: OffsetDateTime,
) -> LedgerChange {
    change_or_rebuild(current, &Change::begin(now), None, rebuild)
}

/// The update that ends the current attempt of call `id` as `finish` says, keeping `kept`.
fn finish_update(
    id: &str,
    request: &Arc<QueueRequest>,
    finish: Finish,
    kept: Option<KeptResult>,
) -> LedgerUpdate {
    let now = OffsetDateTime::now_utc();
    // The record a call without one starts from is built only when there is none (rare): the
    // closure shares the worker's request (building it for every call was about 1.5 % of the
    // worker's CPU per call, BENCHMARKS.md, issue 11's tenth look).
    let (rebuild_id, request) = (id.to_owned(), Arc::clone(request));
    let result = kept.as_ref().map(|kept| Bytes::from(kept.encode()));
    let change = Change::finish(
        now,
        finish.duration,
        finish.status,
        finish.error,
        finish.then,
        kept.as_ref().map(KeptResult::summary),
    );
    Arc::new(move |current: Option<&LedgerRow>| {
        change_or_rebuild(current, &change, result.clone(), || {
            Some(CallRecord::from_queue_request(&rebuild_id, &request, now))
        })
    })
}

/// The update that records a callback posted `attempts` times.
fn callback_update(attempts: u32, status: Option<u16>, delivered: bool) -> LedgerUpdate {
    let now = OffsetDateTime::now_utc();
    let change = Change::Callback(
        courier_core::ledger::unix_nanos(now),
        attempts,
        status,
        delivered,
    );
    Arc::new(move |current: Option<&LedgerRow>| change_or_rebuild(current, &change, None, || None))
}

/// The row an update left (`row`: the queue's answer to the update); an error when there is
/// none.
fn written(id: &str, row: courier_queue::Result<Option<LedgerRow>>) -> Result<LedgerRow> {
    row?.ok_or_else(|| LedgerError::Corrupt {
        id: id.to_owned(),
        reason: "the queue kept no record after writing one".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(state: &str) -> courier_queue::Result<Option<LedgerRow>> {
        Ok(Some(LedgerRow {
            created_at_ms: 1,
            function: "echo.openfaas-fn".into(),
            state: state.into(),
            // Not JSON: `begun` must not need the record.
            record: Bytes::from_static(b"not read"),
        }))
    }

    /// The row a backend writes for `change` made over `over`.
    fn applied(over: Option<&LedgerRow>, change: LedgerChange) -> Option<LedgerRow> {
        match change {
            LedgerChange::Keep => None,
            LedgerChange::Put { row, .. } => Some(row),
            LedgerChange::Append { state, line, .. } => {
                Some(over.expect("an append needs a row").appended(&state, &line))
            }
        }
    }

    #[test]
    fn begun_reads_the_state_of_the_row_not_its_record() {
        assert_eq!(begun("c1", answered("running")).unwrap(), Begin::Run);
        assert_eq!(begun("c1", answered("retrying")).unwrap(), Begin::Run);
        assert_eq!(
            begun("c1", answered("cancelled")).unwrap(),
            Begin::Cancelled
        );
        assert_eq!(
            begun("c1", answered("succeeded")).unwrap(),
            Begin::AlreadyFinal(CallState::Succeeded)
        );
        assert_eq!(
            begun("c1", answered("dead-lettered")).unwrap(),
            Begin::AlreadyFinal(CallState::DeadLettered)
        );
    }

    #[test]
    fn an_update_keeps_the_creation_time_and_function_of_the_row_it_changes() {
        let created = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let record = CallRecord::queued(
            "c1",
            "echo.team",
            courier_core::ledger::CallSource::Async,
            created,
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            None,
        );
        let stored = row(&record);
        assert_eq!(stored.created_at_ms, 1_800_000_000_000);
        assert_eq!(stored.function, "echo.team");
        // The row says otherwise than the record would: the update must take the row's.
        let over = LedgerRow {
            created_at_ms: 7,
            function: "from-the-row".into(),
            ..stored
        };
        let finish = Finish {
            duration: Duration::from_millis(5),
            status: Some(200),
            error: None,
            then: Then::Done,
        };
        let update = finish_update("c1", &Arc::default(), finish, None);
        let Some(written) = applied(Some(&over), update(Some(&over))) else {
            panic!("the finish wrote nothing");
        };
        assert_eq!(written.created_at_ms, 7);
        assert_eq!(written.function, "from-the-row");
        assert_eq!(written.state, "succeeded");
        let record = CallRecord::from_bytes(&written.record).unwrap();
        assert_eq!(record.state, CallState::Succeeded);
        assert_eq!(record.attempts.len(), 1);

        // Without a row, the record is rebuilt and the row worked out from it.
        let finish = Finish {
            duration: Duration::from_millis(5),
            status: Some(500),
            error: Some("function answered 500".into()),
            then: Then::Done,
        };
        let request = Arc::new(QueueRequest {
            function: "echo.team".into(),
            ..QueueRequest::default()
        });
        let update = finish_update("c2", &request, finish, None);
        let LedgerChange::Put { row: written, .. } = update(None) else {
            panic!("the finish wrote nothing");
        };
        assert_eq!(written.function, "echo.team");
        assert_eq!(written.state, "failed");
    }

    #[test]
    fn updates_append_to_the_record_without_reading_it_and_follow_the_rows_state() {
        let finish = Finish {
            duration: Duration::from_millis(5),
            status: Some(200),
            error: None,
            then: Then::Done,
        };
        // Not JSON: the update must not need the record.
        let over = answered("running").unwrap().unwrap();
        let update = finish_update("c1", &Arc::default(), finish, None);
        let LedgerChange::Append { state, line, .. } = update(Some(&over)) else {
            panic!("the finish appended nothing");
        };
        assert_eq!(state, "succeeded");
        assert!(line.starts_with(b"\n{\"f\":"), "{line:?}");
        // Nothing but the state is needed: a row as a backend passes it unread.
        let unread = LedgerRow {
            created_at_ms: 0,
            function: String::new(),
            state: "running".into(),
            record: Bytes::new(),
        };
        assert!(
            matches!(update(Some(&unread)), LedgerChange::Append { state, .. } if state == "succeeded")
        );

        // A begin on a final row writes nothing; a cancel applies to a queued row only.
        let now = OffsetDateTime::now_utc();
        let final_row = answered("succeeded").unwrap().unwrap();
        assert!(matches!(
            begin_change(Some(&final_row), || None, now),
            LedgerChange::Keep
        ));
        let cancel = Change::Cancel(courier_core::ledger::unix_nanos(now));
        assert!(matches!(
            change_or_rebuild(Some(&over), &cancel, None, || None),
            LedgerChange::Keep
        ));
        let queued = answered("queued").unwrap().unwrap();
        let LedgerChange::Append { state, .. } =
            change_or_rebuild(Some(&queued), &cancel, None, || None)
        else {
            panic!("the cancel wrote nothing");
        };
        assert_eq!(state, "cancelled");
    }

    #[test]
    fn begun_says_what_is_wrong_with_a_row_it_cannot_read() {
        let err = begun("c1", answered("sleeping")).unwrap_err();
        assert!(
            matches!(&err, LedgerError::Corrupt { id, reason } if id == "c1" && reason.contains("state")),
            "{err}"
        );
        let err = begun("c2", Ok(None)).unwrap_err();
        assert!(matches!(err, LedgerError::Corrupt { .. }), "{err}");
    }
}
