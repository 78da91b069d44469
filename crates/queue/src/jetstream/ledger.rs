//! The ledger on JetStream: two key-value buckets beside the queue's stream, shared by every
//! gateway and worker on the server.
//!
//! - `<queue stream>_ledger`: one entry per call, the row. History 1, file storage,
//!   `max_age` = the retention (the server drops a row that long after its last write) and
//!   `max_messages` = `max_records` with discard `Old`: a full bucket drops its least recently
//!   written row rather than refusing the newest.
//! - `<queue stream>_ledger_results`: the kept results, the same limits but an hour more
//!   `max_age`, read only while their row is there (so a result never outlives its row, and
//!   a row changed after its result was written still has it).
//!
//! The key is `x` and the call id's bytes in hex, like the dead letters' subjects. The value:
//!
//! ```text
//! version (1 byte, 1) | created_at_ms (u64) | updated_at_ms (u64) | function length (u32) |
//! function | state length (u32) | state | record          (integers big-endian)
//! ```
//!
//! `updated_at_ms` is the writer's clock: a read hides a row past its retention at once, before
//! the server gets round to dropping it.
//!
//! Updates are compare-and-swap on the entry's revision, retried after a conflict. A row this
//! process wrote last is remembered with its revision ([`Written`]), so the next update of it
//! (the worker's attempt end after its attempt begin; in `courier up`, the attempt begin after
//! the gateway's create) swaps on that revision without reading first; a write by anyone else
//! in between fails the swap and the update reads as usual. A publish
//! creates the row only when the key has none (`create`), so a duplicate publish never
//! replaces the original's record. Durability is JetStream's (the acknowledgement means the
//! server stored it); `ledger_update`'s `durable` asks for nothing more.

use std::collections::HashMap;
use std::hash::{BuildHasher as _, Hasher as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::Client;
use async_nats::jetstream::consumer::{Consumer, DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::context::Context;
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::stream::{self, DiscardPolicy, StorageType};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tracing::{debug, info, warn};

use super::dead_letters::key;
use super::{REQUEST_TIMEOUT, ensure_connected, timed_out, within};
use crate::{
    Error, LedgerChange, LedgerConfig, LedgerQuery, LedgerRow, LedgerUpdate, LedgerWatch,
    QueueConfig, Result,
};

/// The first byte of every stored row: the layout described in the module docs.
const FORMAT_VERSION: u8 = 1;

/// Version, the two times and the function's length.
const FIXED_BYTES: usize = 1 + 8 + 8 + 4;

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

/// Most rows [`Written`] remembers; when full it starts again empty.
const MAX_REMEMBERED_ROWS: usize = 4096;

/// The rows this process wrote last, by key, with the revision each was written as.
#[derive(Debug, Default)]
struct Written(Mutex<HashMap<String, (u64, Stored)>>);

impl Written {
    /// Takes what is remembered of `key` (an update that fails its swap must not try it again).
    fn take(&self, key: &str) -> Option<(u64, Stored)> {
        self.0.lock().ok()?.remove(key)
    }

    fn remember(&self, key: String, revision: u64, stored: Stored) {
        if let Ok(mut rows) = self.0.lock() {
            if rows.len() >= MAX_REMEMBERED_ROWS {
                rows.clear();
            }
            rows.insert(key, (revision, stored));
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

/// The ledger of one queue.
#[derive(Clone)]
pub(super) struct Ledger {
    client: Client,
    rows: kv::Store,
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
                config.ledger.retention,
                &config.ledger,
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
                &config.ledger,
                config.replicas,
            ),
        )
        .await?;
        Ok(Some(Self {
            client,
            rows,
            results,
            retention: config.ledger.retention,
            written: Arc::default(),
        }))
    }

    /// Writes `row` for call `id` unless it has one.
    pub(super) async fn create(&self, id: &str, row: &LedgerRow) -> Result<Created> {
        let doing = format!("create the ledger row of call {id:?}");
        ensure_connected(&self.client, &doing)?;
        let now = now_ms();
        let value = encode(row, now);
        self.check_size(value.len())?;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.rows.create(key(id), value)).await {
            Ok(Ok(revision)) => {
                let stored = Stored {
                    updated_at_ms: now,
                    row: row.clone(),
                };
                self.written.remember(key(id), revision, stored);
                Ok(Created::Now(revision))
            }
            Ok(Err(e)) if e.kind() == CreateErrorKind::AlreadyExists => Ok(Created::AlreadyThere),
            Ok(Err(e)) => Err(Error::unavailable(&doing, e)),
            Err(_) => Err(Error::unavailable(&doing, timed_out(REQUEST_TIMEOUT))),
        }
    }

    /// Removes the row of call `id` written as `revision` (unless it changed since): the row
    /// of a publish the server refused. Best effort: a row left behind shows a call that was
    /// never queued, until it expires.
    pub(super) async fn forget(&self, id: &str, revision: u64) {
        self.written.take(&key(id));
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

    /// Compare-and-swap: reads the row, applies `update`, writes if nobody wrote in between,
    /// otherwise starts again (at most [`MAX_UPDATE_ATTEMPTS`] times).
    pub(super) async fn update(
        &self,
        id: &str,
        update: &LedgerUpdate,
    ) -> Result<Option<LedgerRow>> {
        let doing = format!("update the ledger row of call {id:?}");
        let key = key(id);
        for attempt in 0..MAX_UPDATE_ATTEMPTS {
            if attempt > 0 {
                tokio::time::sleep(backoff(attempt)).await;
            }
            ensure_connected(&self.client, &doing)?;
            // First the row as this process wrote it, when it remembers it; read otherwise.
            let (current, revision) = match self.written.take(&key) {
                Some((revision, stored)) => (
                    (!self.expired(stored.updated_at_ms, now_ms())).then_some(stored.row),
                    revision,
                ),
                None => match within(&doing, self.rows.entry(key.clone())).await? {
                    // A deleted or expired row is no row, but its revision is the one to
                    // replace.
                    Some(entry) => (self.visible(&entry), entry.revision),
                    None => (None, 0),
                },
            };
            let (row, result) = match update(current.as_ref()) {
                LedgerChange::Keep => return Ok(current),
                LedgerChange::Put { row, result } => (row, result),
            };
            // The result first: once the row says the call ended, its result is there.
            if let Some(result) = result {
                self.put_result(id, &key, result).await?;
            }
            let now = now_ms();
            let value = encode(&row, now);
            self.check_size(value.len())?;
            match tokio::time::timeout(REQUEST_TIMEOUT, self.rows.update(&key, value, revision))
                .await
            {
                Ok(Ok(written)) => {
                    let stored = Stored {
                        updated_at_ms: now,
                        row: row.clone(),
                    };
                    self.written.remember(key, written, stored);
                    return Ok(Some(row));
                }
                Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    debug!(call_id = %id, attempt, "Ledger update conflicted; trying again.");
                }
                Ok(Err(e)) => return Err(Error::unavailable(&doing, e)),
                Err(_) => return Err(Error::unavailable(&doing, timed_out(REQUEST_TIMEOUT))),
            }
        }
        Err(Error::unavailable(
            &doing,
            format!(
                "other updates of the row kept coming between its read and its write \
                 ({MAX_UPDATE_ATTEMPTS} attempts)"
            ),
        ))
    }

    async fn put_result(&self, id: &str, key: &str, result: Bytes) -> Result<()> {
        let doing = format!("keep the result of call {id:?}");
        self.check_size(result.len())?;
        ensure_connected(&self.client, &doing)?;
        within(&doing, self.results.put(key, result)).await?;
        Ok(())
    }

    pub(super) async fn get(&self, id: &str) -> Result<Option<LedgerRow>> {
        let doing = format!("read the ledger row of call {id:?}");
        ensure_connected(&self.client, &doing)?;
        let entry = within(&doing, self.rows.entry(key(id))).await?;
        Ok(entry.and_then(|entry| self.visible(&entry)))
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

    /// Every row's current value through an ephemeral ordered consumer (last per subject),
    /// filtered, newest first, at most `query.limit`.
    pub(super) async fn list(&self, query: &LedgerQuery) -> Result<Vec<LedgerRow>> {
        let doing = "list ledger rows";
        if query.limit == 0 {
            return Ok(Vec::new());
        }
        ensure_connected(&self.client, doing)?;
        let consumer = within(
            doing,
            self.rows.stream.create_consumer(OrderedConfig {
                filter_subject: format!("{}>", self.rows.prefix),
                deliver_policy: DeliverPolicy::LastPerSubject,
                ..Default::default()
            }),
        )
        .await?;
        let name = consumer.cached_info().name.clone();
        let read = self.read_all(consumer, query).await;
        // As with the dead letters: the server would drop the consumer after a while idle.
        let stream = self.rows.stream.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, stream.delete_consumer(&name)).await;
        });
        let mut listed = read?;
        newest_first(&mut listed, query.limit);
        Ok(listed.into_iter().map(|(_, row)| row).collect())
    }

    /// The rows `consumer` delivers that match `query`, each with its key; keeps at most about
    /// twice `query.limit` of them at any time.
    async fn read_all(
        &self,
        consumer: Consumer<OrderedConfig>,
        query: &LedgerQuery,
    ) -> Result<Vec<(String, LedgerRow)>> {
        let doing = "list ledger rows";
        let mut listed = Vec::new();
        if consumer.cached_info().num_pending == 0 {
            return Ok(listed);
        }
        let now = now_ms();
        let mut messages = within(doing, consumer.messages()).await?;
        loop {
            let message = match tokio::time::timeout(REQUEST_TIMEOUT, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(e))) => return Err(Error::unavailable(doing, e)),
                Ok(None) => break,
                Err(_) => return Err(Error::unavailable(doing, timed_out(REQUEST_TIMEOUT))),
            };
            let pending = message
                .info()
                .map_err(|e| Error::unavailable(doing, e.to_string()))?
                .pending;
            let put = message
                .headers
                .as_ref()
                .and_then(|headers| headers.get("KV-Operation"))
                .is_none_or(|operation| operation.as_str() == "PUT");
            if put {
                let key = message
                    .subject
                    .strip_prefix(self.rows.prefix.as_str())
                    .unwrap_or(&message.subject);
                match decode(&message.payload) {
                    Some(stored) if self.matches(&stored, query, now) => {
                        listed.push((key.to_owned(), stored.row));
                        if listed.len() >= 2 * query.limit {
                            newest_first(&mut listed, query.limit);
                        }
                    }
                    Some(_) => {}
                    None => warn!(
                        subject = %message.subject,
                        "Ignoring a ledger row in an unknown format."
                    ),
                }
            }
            if pending == 0 {
                break;
            }
        }
        Ok(listed)
    }

    fn matches(&self, stored: &Stored, query: &LedgerQuery, now: u64) -> bool {
        !self.expired(stored.updated_at_ms, now)
            && query
                .function
                .as_deref()
                .is_none_or(|f| f == stored.row.function)
            && query.state.as_deref().is_none_or(|s| s == stored.row.state)
    }

    /// Yields for every write of the row of call `id` from now on (a watch of the key with
    /// deliver policy "new").
    pub(super) async fn watch(&self, id: &str) -> Result<LedgerWatch> {
        let doing = format!("watch the ledger row of call {id:?}");
        ensure_connected(&self.client, &doing)?;
        let changes = within(&doing, self.rows.watch(key(id))).await?;
        Ok(changes
            .map(|change| {
                if let Err(e) = change {
                    debug!(error = %e, "Ledger watch error; the row may have changed.");
                }
            })
            .boxed())
    }

    /// The row `entry` holds, unless it was deleted, is in an unknown format or expired.
    fn visible(&self, entry: &kv::Entry) -> Option<LedgerRow> {
        if entry.operation != Operation::Put {
            return None;
        }
        let Some(stored) = decode(&entry.value) else {
            warn!(key = %entry.key, "Ignoring a ledger row in an unknown format.");
            return None;
        };
        (!self.expired(stored.updated_at_ms, now_ms())).then_some(stored.row)
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
    ledger: &LedgerConfig,
    replicas: usize,
) -> stream::Config {
    stream::Config {
        name: format!("KV_{bucket}"),
        description: Some(description),
        subjects: vec![format!("$KV.{bucket}.>")],
        max_messages_per_subject: 1,
        max_messages: i64::try_from(ledger.max_records.max(1)).unwrap_or(i64::MAX),
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
fn newest_first(rows: &mut Vec<(String, LedgerRow)>, limit: usize) {
    rows.sort_by(|(a_key, a), (b_key, b)| {
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
#[derive(Debug, PartialEq, Eq)]
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
    fn the_buckets_keep_one_file_backed_value_per_call_and_drop_the_oldest_when_full() {
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
            &config.ledger,
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
        let mut rows: Vec<(String, LedgerRow)> = [("xa", 2), ("xc", 1), ("xb", 2), ("xd", 3)]
            .into_iter()
            .map(|(key, at)| (key.to_owned(), row(at, "f", "s", b"")))
            .collect();
        newest_first(&mut rows, 3);
        let keys: Vec<&str> = rows.iter().map(|(key, _)| key.as_str()).collect();
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
