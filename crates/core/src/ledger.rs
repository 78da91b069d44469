//! The invocation ledger's record of one queued call, as `GET /system/calls/{id}` shows it,
//! and the rules by which it changes: the states a call goes through, one entry per attempt,
//! the callback's outcome, the kept result.
//!
//! Pure: no clock (callers pass the time), no storage (the queue keeps the bytes).

use std::fmt;
use std::str::FromStr;

use http::HeaderMap;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::queue::QueueRequest;

mod journal;

pub use journal::{Change, Next, unix_nanos};

/// The annotation or label that keeps every call's result for a function.
pub const KEEP_RESULT_ANNOTATION: &str = "com.courier.ledger.result";

/// Where a call stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallState {
    /// Stored, not started.
    Queued,
    /// An attempt is under way.
    Running,
    /// An attempt failed; the next one waits for its delay.
    Retrying,
    /// The function answered with a status below 400.
    Succeeded,
    /// The last attempt answered 400 or above and is not retried, and the call was not kept
    /// as a dead letter.
    Failed,
    /// Given up on and kept as a dead letter.
    DeadLettered,
    /// Cancelled before it started; never run.
    Cancelled,
}

impl CallState {
    /// Every state, in the order a call goes through them.
    pub const ALL: [Self; 7] = [
        Self::Queued,
        Self::Running,
        Self::Retrying,
        Self::Succeeded,
        Self::Failed,
        Self::DeadLettered,
        Self::Cancelled,
    ];

    /// The name in the API (`dead-lettered`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Retrying => "retrying",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::DeadLettered => "dead-lettered",
            Self::Cancelled => "cancelled",
        }
    }

    /// The state after an attempt that answered `status` (none when no answer came), given
    /// what follows.
    pub fn after_attempt(status: Option<u16>, then: Then) -> Self {
        match then {
            Then::RetryAfter(_) => Self::Retrying,
            Then::Done if status.is_some_and(|s| s < 400) => Self::Succeeded,
            Then::Done => Self::Failed,
            Then::DeadLetter => Self::DeadLettered,
        }
    }

    /// Whether the call will not change any more.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Succeeded | Self::Failed | Self::DeadLettered | Self::Cancelled
        )
    }
}

impl fmt::Display for CallState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CallState {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|s| s.as_str()).collect();
                format!("unknown state {s:?}: use one of {}", names.join(", "))
            })
    }
}

/// What put the call in the queue, with its coordinates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum CallSource {
    /// `POST /async-function/...`.
    Async,
    /// A Kafka message (a connector in async mode).
    Kafka {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The message's offset.
        offset: i64,
    },
    /// An AMQP message (a connector in async mode).
    Amqp {
        /// The queue it was consumed from.
        queue: String,
        /// The message's `message-id` property, when it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// A cron fire.
    Cron {
        /// The fire's scheduled time, RFC 3339.
        scheduled_at: String,
    },
    /// A dead letter replayed.
    Replay {
        /// The call id of the call replayed.
        call_id: String,
    },
}

impl CallSource {
    /// The `kind` name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Async => "async",
            Self::Kafka { .. } => "kafka",
            Self::Amqp { .. } => "amqp",
            Self::Cron { .. } => "cron",
            Self::Replay { .. } => "replay",
        }
    }
}

/// One attempt to run the call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttemptRecord {
    /// When the attempt started, RFC 3339.
    pub started_at: String,
    /// How long it took (absent while it runs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<f64>,
    /// The function's HTTP status (absent while it runs, or when no answer came).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// What went wrong, when something did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The wait before the next attempt, when one follows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_delay_seconds: Option<f64>,
}

/// The callback's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallbackRecord {
    /// Where the result is posted.
    pub url: String,
    /// The receiver's last answer (absent until posted, or when it never answered).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Posts made.
    pub attempts: u32,
    /// Whether the receiver took it (2xx).
    pub delivered: bool,
}

/// What is known of a kept result (its bytes are served at `/system/calls/{id}/result`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultSummary {
    /// The function's status.
    pub status: u16,
    /// The body's content type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The body's size as the function sent it.
    pub bytes: u64,
    /// Whether only the first `--ledger-max-result-bytes` were kept.
    pub truncated: bool,
}

/// The ledger's record of one queued call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CallRecord {
    /// The call id (the queue's message id).
    pub id: String,
    /// The function's name.
    pub function: String,
    /// Its namespace (empty when the call named none and no default applies).
    pub namespace: String,
    /// Where the call stands.
    pub state: CallState,
    /// What put it in the queue.
    pub source: CallSource,
    /// When it was accepted, RFC 3339.
    pub created_at: String,
    /// The W3C trace id the call carries (32 hex digits).
    pub trace_id: String,
    /// One entry per attempt, oldest first.
    #[serde(default)]
    pub attempts: Vec<AttemptRecord>,
    /// The callback, when the call has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub callback: Option<CallbackRecord>,
    /// The kept result, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ResultSummary>,
    /// When the record last changed, RFC 3339.
    pub updated_at: String,
}

/// Why an attempt cannot begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotRunnable {
    /// The call was cancelled: ack it without running.
    Cancelled,
    /// The call already ended (a redelivery after its final write): ack it without running.
    Final(CallState),
}

/// How an attempt ended, for [`CallRecord::finish_attempt`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Then {
    /// Another attempt follows after this delay.
    RetryAfter(std::time::Duration),
    /// No more attempts: succeeded below 400, failed otherwise.
    Done,
    /// No more attempts, kept as a dead letter.
    DeadLetter,
}

/// RFC 3339 with milliseconds, UTC (`2026-12-04T10:00:00.123Z`).
pub fn format_time(at: OffsetDateTime) -> String {
    let at = at.to_offset(time::UtcOffset::UTC);
    let at = at
        .replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap_or(at);
    at.format(&Rfc3339).unwrap_or_default()
}

/// Unix milliseconds of `at`.
pub fn unix_ms(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos() / 1_000_000).unwrap_or_default()
}

impl CallRecord {
    /// A call just stored: `invoked` is `name` or `name.namespace` as the caller gave it.
    pub fn queued(
        id: &str,
        invoked: &str,
        source: CallSource,
        created_at: OffsetDateTime,
        trace_id: String,
        callback_url: Option<String>,
    ) -> Self {
        let (function, namespace) = match invoked.split_once('.') {
            Some((name, namespace)) => (name.to_owned(), namespace.to_owned()),
            None => (invoked.to_owned(), crate::DEFAULT_NAMESPACE.to_owned()),
        };
        let created = format_time(created_at);
        Self {
            id: id.to_owned(),
            function,
            namespace,
            state: CallState::Queued,
            source,
            created_at: created.clone(),
            trace_id,
            attempts: Vec::new(),
            callback: callback_url.map(|url| CallbackRecord {
                url,
                status: None,
                attempts: 0,
                delivered: false,
            }),
            result: None,
            updated_at: created,
        }
    }

    /// The record of a stored call that has none (written by an OpenFaaS gateway, or whose
    /// record expired or was never written): rebuilt from the queued request. Its creation time
    /// is the request's `X-Start-Time` when it has one, `now` otherwise.
    pub fn from_queue_request(id: &str, request: &QueueRequest, now: OffsetDateTime) -> Self {
        let created_at = request
            .header
            .get("X-Start-Time")
            .and_then(|values| values.last())
            .and_then(|nanos| nanos.parse::<i128>().ok())
            .and_then(|nanos| OffsetDateTime::from_unix_timestamp_nanos(nanos).ok())
            .unwrap_or(now);
        let trace_id = request
            .header
            .get("Traceparent")
            .and_then(|values| values.first())
            .and_then(|value| crate::trace::TraceParent::parse(value))
            .map(|parent| parent.trace_id_hex())
            .unwrap_or_default();
        Self::queued(
            id,
            &request.function,
            CallSource::Async,
            created_at,
            trace_id,
            request.callback_url.as_ref().map(|url| url.to_url_string()),
        )
    }

    /// An attempt begins at `now`: the call is `running`. An earlier attempt that never ended
    /// (its worker died, its lease ran out) is marked abandoned.
    pub fn begin_attempt(&mut self, now: OffsetDateTime) -> Result<(), NotRunnable> {
        match self.state {
            CallState::Cancelled => return Err(NotRunnable::Cancelled),
            state if state.is_final() => return Err(NotRunnable::Final(state)),
            _ => {}
        }
        if let Some(last) = self.attempts.last_mut()
            && last.duration_seconds.is_none()
        {
            last.error = Some("abandoned: the attempt's lease ran out before it ended".into());
            last.duration_seconds = started_at(&last.started_at)
                .map(|started| (now - started).as_seconds_f64().max(0.0));
        }
        self.attempts.push(AttemptRecord {
            started_at: format_time(now),
            duration_seconds: None,
            status: None,
            error: None,
            next_delay_seconds: None,
        });
        self.state = CallState::Running;
        self.updated_at = format_time(now);
        Ok(())
    }

    /// The current attempt ended at `now` after `duration`, with the function's `status`
    /// (none when no answer came) and `error`; `then` says what follows.
    pub fn finish_attempt(
        &mut self,
        now: OffsetDateTime,
        duration: std::time::Duration,
        status: Option<u16>,
        error: Option<String>,
        then: Then,
    ) {
        if self.attempts.is_empty() {
            self.attempts.push(AttemptRecord {
                started_at: format_time(now - duration),
                duration_seconds: None,
                status: None,
                error: None,
                next_delay_seconds: None,
            });
        }
        let attempt = self.attempts.last_mut().expect("an attempt");
        attempt.duration_seconds = Some(duration.as_secs_f64());
        attempt.status = status;
        attempt.error = error;
        if let Then::RetryAfter(delay) = then {
            attempt.next_delay_seconds = Some(delay.as_secs_f64());
        }
        self.state = CallState::after_attempt(status, then);
        self.updated_at = format_time(now);
    }

    /// Cancels a call that has not started; refused (with the state) once it has.
    pub fn cancel(&mut self, now: OffsetDateTime) -> Result<(), CallState> {
        if self.state != CallState::Queued {
            return Err(self.state);
        }
        self.state = CallState::Cancelled;
        self.updated_at = format_time(now);
        Ok(())
    }

    /// The callback was posted `attempts` times; the receiver's last answer was `status`.
    pub fn record_callback(
        &mut self,
        now: OffsetDateTime,
        attempts: u32,
        status: Option<u16>,
        delivered: bool,
    ) {
        if let Some(callback) = &mut self.callback {
            callback.attempts = attempts;
            callback.status = status;
            callback.delivered = delivered;
            self.updated_at = format_time(now);
        }
    }

    /// `name.namespace`, the function the ledger lists the call under.
    pub fn qualified_function(&self) -> String {
        if self.namespace.is_empty() {
            self.function.clone()
        } else {
            format!("{}.{}", self.function, self.namespace)
        }
    }

    /// The creation time in Unix milliseconds (0 when unreadable).
    pub fn created_at_ms(&self) -> u64 {
        started_at(&self.created_at)
            .map(unix_ms)
            .unwrap_or_default()
    }

    /// The record as stored (changes are appended to these bytes: [`Change::append_to`]).
    pub fn to_bytes(&self) -> Vec<u8> {
        // Sized for a record with an attempt or two, so it is written without regrowing.
        let mut bytes = Vec::with_capacity(512);
        serde_json::to_writer(&mut bytes, self).expect("a call record always serializes");
        bytes
    }

    /// A stored record: as [`CallRecord::to_bytes`] wrote it, with the changes appended since
    /// ([`Change::append_to`]) replayed.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        journal::read(bytes)
    }
}

fn started_at(text: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

/// A call id the ledger can address: 1 to 256 bytes, no control characters.
pub fn check_call_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("the call id is empty".into());
    }
    if id.len() > 256 {
        return Err(format!(
            "the call id is {} bytes; at most 256 are allowed",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("the call id contains control characters".into());
    }
    Ok(())
}

/// A function's answer kept in the ledger: status, headers, and the body up to a limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptResult {
    /// The function's status.
    pub status: u16,
    /// Its headers (hop-by-hop, `Content-Length` and `Set-Cookie` left out).
    pub headers: Vec<(String, String)>,
    /// The body, at most the limit.
    pub body: Vec<u8>,
    /// The body's size as sent.
    pub original_bytes: u64,
}

#[derive(Serialize, Deserialize)]
struct KeptMeta {
    status: u16,
    headers: Vec<(String, String)>,
    original_bytes: u64,
}

impl KeptResult {
    /// Keeps `status`, the end-to-end `headers` that are text, and the first `max` bytes of
    /// `body`.
    pub fn capture(status: u16, headers: &HeaderMap, body: &[u8], max: usize) -> Self {
        let mut kept = Vec::new();
        for (name, value) in headers {
            if crate::headers::HOP_BY_HOP.contains(name)
                || name == http::header::CONTENT_LENGTH
                || name == http::header::SET_COOKIE
            {
                continue;
            }
            if let Ok(value) = value.to_str() {
                kept.push((name.as_str().to_owned(), value.to_owned()));
            }
        }
        Self {
            status,
            headers: kept,
            body: body[..body.len().min(max)].to_vec(),
            original_bytes: body.len() as u64,
        }
    }

    /// Whether only part of the body was kept.
    pub fn truncated(&self) -> bool {
        (self.body.len() as u64) < self.original_bytes
    }

    /// The body's content type, when the function sent one.
    pub fn content_type(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
            .map(|(_, value)| value.as_str())
    }

    /// The record's summary of it.
    pub fn summary(&self) -> ResultSummary {
        ResultSummary {
            status: self.status,
            content_type: self.content_type().map(str::to_owned),
            bytes: self.original_bytes,
            truncated: self.truncated(),
        }
    }

    /// As stored: a version byte, the metadata's length (u32, big endian), the metadata as
    /// JSON, the body.
    pub fn encode(&self) -> Vec<u8> {
        let meta = serde_json::to_vec(&KeptMeta {
            status: self.status,
            headers: self.headers.clone(),
            original_bytes: self.original_bytes,
        })
        .expect("result metadata always serializes");
        let mut out = Vec::with_capacity(5 + meta.len() + self.body.len());
        out.push(1);
        out.extend_from_slice(&u32::try_from(meta.len()).unwrap_or(u32::MAX).to_be_bytes());
        out.extend_from_slice(&meta);
        out.extend_from_slice(&self.body);
        out
    }

    /// A stored result.
    pub fn decode(bytes: &[u8]) -> Result<Self, String> {
        let (&version, rest) = bytes.split_first().ok_or("an empty kept result")?;
        if version != 1 {
            return Err(format!("kept result of unknown version {version}"));
        }
        if rest.len() < 4 {
            return Err("a kept result cut short".into());
        }
        let (len, rest) = rest.split_at(4);
        let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if rest.len() < len {
            return Err("a kept result cut short".into());
        }
        let (meta, body) = rest.split_at(len);
        let meta: KeptMeta = serde_json::from_slice(meta).map_err(|e| e.to_string())?;
        Ok(Self {
            status: meta.status,
            headers: meta.headers,
            body: body.to_vec(),
            original_bytes: meta.original_bytes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
    }

    /// A queued call with a callback (the journal's tests start from it too).
    pub(super) fn record() -> CallRecord {
        CallRecord::queued(
            "call-1",
            "echo",
            CallSource::Async,
            at(0),
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            Some("http://127.0.0.1:9000/done".into()),
        )
    }

    #[test]
    fn the_record_has_the_api_shape_in_camel_case() {
        let mut r = record();
        r.begin_attempt(at(1)).unwrap();
        r.finish_attempt(
            at(2),
            Duration::from_millis(500),
            Some(500),
            Some("boom".into()),
            Then::RetryAfter(Duration::from_secs(2)),
        );
        r.record_callback(at(3), 1, Some(200), true);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["id"], "call-1");
        assert_eq!(json["function"], "echo");
        assert_eq!(json["namespace"], "openfaas-fn");
        assert_eq!(json["state"], "retrying");
        assert_eq!(json["source"], serde_json::json!({"kind": "async"}));
        assert_eq!(json["createdAt"], "2027-01-15T08:00:00Z");
        assert_eq!(json["traceId"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            json["attempts"][0],
            serde_json::json!({"startedAt": "2027-01-15T08:00:01Z", "durationSeconds": 0.5,
                "status": 500, "error": "boom", "nextDelaySeconds": 2.0})
        );
        assert_eq!(
            json["callback"],
            serde_json::json!({"url": "http://127.0.0.1:9000/done", "status": 200,
                "attempts": 1, "delivered": true})
        );
        assert_eq!(CallRecord::from_bytes(&r.to_bytes()).unwrap(), r);
    }

    #[test]
    fn sources_carry_their_coordinates() {
        let cases = [
            (
                CallSource::Kafka {
                    topic: "orders".into(),
                    partition: 2,
                    offset: 41,
                },
                serde_json::json!({"kind": "kafka", "topic": "orders", "partition": 2, "offset": 41}),
            ),
            (
                CallSource::Amqp {
                    queue: "jobs".into(),
                    message_id: Some("m-1".into()),
                },
                serde_json::json!({"kind": "amqp", "queue": "jobs", "messageId": "m-1"}),
            ),
            (
                CallSource::Cron {
                    scheduled_at: "2026-12-04T10:00:00Z".into(),
                },
                serde_json::json!({"kind": "cron", "scheduledAt": "2026-12-04T10:00:00Z"}),
            ),
            (
                CallSource::Replay {
                    call_id: "orig".into(),
                },
                serde_json::json!({"kind": "replay", "callId": "orig"}),
            ),
        ];
        for (source, json) in cases {
            assert_eq!(serde_json::to_value(&source).unwrap(), json);
            assert_eq!(
                serde_json::from_value::<CallSource>(json).unwrap(),
                source.clone()
            );
            assert_eq!(
                source.kind(),
                serde_json::to_value(&source).unwrap()["kind"]
            );
        }
    }

    #[test]
    fn a_call_that_fails_twice_then_succeeds_ends_succeeded_with_three_attempts() {
        let mut r = record();
        for (i, status) in [(0, 500), (1, 503)] {
            r.begin_attempt(at(10 * i)).unwrap();
            assert_eq!(r.state, CallState::Running);
            r.finish_attempt(
                at(10 * i + 1),
                Duration::from_secs(1),
                Some(status),
                None,
                Then::RetryAfter(Duration::from_millis(100)),
            );
            assert_eq!(r.state, CallState::Retrying);
        }
        r.begin_attempt(at(30)).unwrap();
        r.finish_attempt(at(31), Duration::from_secs(1), Some(200), None, Then::Done);
        assert_eq!(r.state, CallState::Succeeded);
        assert_eq!(r.attempts.len(), 3);
        assert_eq!(r.attempts[0].next_delay_seconds, Some(0.1));
        assert_eq!(r.attempts[2].next_delay_seconds, None);
        assert_eq!(
            r.begin_attempt(at(40)),
            Err(NotRunnable::Final(CallState::Succeeded))
        );
    }

    #[test]
    fn a_final_error_status_is_failed_and_a_dead_letter_is_dead_lettered() {
        let mut failed = record();
        failed.begin_attempt(at(0)).unwrap();
        failed.finish_attempt(at(1), Duration::ZERO, Some(404), None, Then::Done);
        assert_eq!(failed.state, CallState::Failed);
        let mut no_answer = record();
        no_answer.begin_attempt(at(0)).unwrap();
        no_answer.finish_attempt(
            at(1),
            Duration::ZERO,
            None,
            Some("refused".into()),
            Then::Done,
        );
        assert_eq!(no_answer.state, CallState::Failed);
        let mut dead = record();
        dead.begin_attempt(at(0)).unwrap();
        dead.finish_attempt(at(1), Duration::ZERO, Some(500), None, Then::DeadLetter);
        assert_eq!(dead.state, CallState::DeadLettered);
    }

    #[test]
    fn only_a_queued_call_can_be_cancelled_and_a_cancelled_one_never_runs() {
        let mut r = record();
        r.cancel(at(1)).unwrap();
        assert_eq!(r.state, CallState::Cancelled);
        assert_eq!(r.cancel(at(2)), Err(CallState::Cancelled));
        assert_eq!(r.begin_attempt(at(3)), Err(NotRunnable::Cancelled));
        let mut running = record();
        running.begin_attempt(at(1)).unwrap();
        assert_eq!(running.cancel(at(2)), Err(CallState::Running));
        let mut retrying = record();
        retrying.begin_attempt(at(1)).unwrap();
        retrying.finish_attempt(
            at(2),
            Duration::ZERO,
            Some(500),
            None,
            Then::RetryAfter(Duration::from_secs(1)),
        );
        assert_eq!(retrying.cancel(at(3)), Err(CallState::Retrying));
    }

    #[test]
    fn an_attempt_that_never_ended_is_marked_abandoned_when_the_next_begins() {
        let mut r = record();
        r.begin_attempt(at(0)).unwrap();
        r.begin_attempt(at(30)).unwrap();
        assert_eq!(r.attempts.len(), 2);
        assert!(
            r.attempts[0]
                .error
                .as_deref()
                .unwrap()
                .contains("abandoned")
        );
        assert_eq!(r.attempts[0].duration_seconds, Some(30.0));
        assert_eq!(r.state, CallState::Running);
    }

    #[test]
    fn a_record_rebuilt_from_an_openfaas_request_is_async_with_its_start_time_and_trace() {
        let mut request = QueueRequest {
            function: "echo.team".into(),
            ..QueueRequest::default()
        };
        request
            .header
            .insert("X-Start-Time".into(), vec!["1800000005000000000".into()]);
        request.header.insert(
            "Traceparent".into(),
            vec!["00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()],
        );
        let r = CallRecord::from_queue_request("id-9", &request, at(100));
        assert_eq!(
            (r.function.as_str(), r.namespace.as_str()),
            ("echo", "team")
        );
        assert_eq!(r.source, CallSource::Async);
        assert_eq!(r.created_at, "2027-01-15T08:00:05Z");
        assert_eq!(r.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(r.created_at_ms(), 1_800_000_005_000);
        let bare = CallRecord::from_queue_request("id-9", &QueueRequest::default(), at(100));
        assert_eq!(bare.created_at, format_time(at(100)));
    }

    #[test]
    fn states_parse_from_their_api_names_only() {
        for state in CallState::ALL {
            assert_eq!(state.as_str().parse::<CallState>(), Ok(state));
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::json!(state.as_str())
            );
        }
        assert!(
            "DeadLettered"
                .parse::<CallState>()
                .unwrap_err()
                .contains("dead-lettered")
        );
    }

    #[test]
    fn call_ids_are_checked_for_length_and_control_characters() {
        assert!(check_call_id("6aafc09f-e3b2-5e1a-8c46-65323537a1fc").is_ok());
        assert!(check_call_id("").is_err());
        assert!(check_call_id(&"x".repeat(256)).is_ok());
        assert!(check_call_id(&"x".repeat(257)).is_err());
        assert!(check_call_id("a\u{0}b").is_err());
        assert!(check_call_id("a\nb").is_err());
    }

    #[test]
    fn a_kept_result_round_trips_and_is_truncated_at_the_limit() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", "application/octet-stream".parse().unwrap());
        headers.insert("content-length", "256".parse().unwrap());
        headers.insert("set-cookie", "s=1".parse().unwrap());
        headers.insert("connection", "close".parse().unwrap());
        headers.insert("x-custom", "yes".parse().unwrap());
        let body: Vec<u8> = (0..=255).collect();
        let whole = KeptResult::capture(201, &headers, &body, 1024);
        assert!(!whole.truncated());
        assert_eq!(whole.body, body);
        assert_eq!(whole.content_type(), Some("application/octet-stream"));
        let names: Vec<&str> = whole.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type", "x-custom"]);
        assert_eq!(KeptResult::decode(&whole.encode()).unwrap(), whole);

        let cut = KeptResult::capture(200, &HeaderMap::new(), &body, 100);
        assert_eq!(cut.body, body[..100]);
        assert!(cut.truncated());
        assert_eq!(
            cut.summary(),
            ResultSummary {
                status: 200,
                content_type: None,
                bytes: 256,
                truncated: true
            }
        );
        assert!(KeptResult::decode(&[]).is_err());
        assert!(KeptResult::decode(&[1, 0, 0, 0, 9, b'{']).is_err());
        assert!(KeptResult::decode(&[2]).is_err());
    }
}
