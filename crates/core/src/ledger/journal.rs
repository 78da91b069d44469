//! A stored record as its creation plus a journal of changes, so a change is written without
//! reading the record: the stored bytes are the record's JSON as it was created, then one line
//! per change (`\n` and the change as JSON). Reading replays the changes with the record's own
//! rules ([`CallRecord::begin_attempt`] and friends), so a change means the same whether it is
//! applied at once or replayed.
//!
//! Why: the queue's writer applies two changes per call (the attempt's start, its end). Parsing
//! and writing the whole record's JSON for each was the ledger's largest cost per call
//! (BENCHMARKS.md, issue 11); appending a line costs a copy of the stored bytes.
//!
//! A record stored before the journal (JSON alone) reads the same: it is a record with no
//! changes. Callers decide whether a change applies from the row's state, which the queue keeps
//! beside the record ([`Change::state_after`]).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{CallRecord, CallState, ResultSummary, Then};

/// One change to a stored record. Times are Unix nanoseconds; durations nanoseconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Change {
    /// An attempt began ([`CallRecord::begin_attempt`]).
    #[serde(rename = "b")]
    Begin(u64),
    /// The current attempt ended ([`CallRecord::finish_attempt`]): when, its duration, the
    /// function's status, the error, what follows, the kept result's summary.
    #[serde(rename = "f")]
    Finish(
        u64,
        u64,
        Option<u16>,
        Option<String>,
        Next,
        Option<ResultSummary>,
    ),
    /// The call was cancelled ([`CallRecord::cancel`]).
    #[serde(rename = "c")]
    Cancel(u64),
    /// The callback was posted ([`CallRecord::record_callback`]): when, posts made, the
    /// receiver's last status, whether it took it.
    #[serde(rename = "k")]
    Callback(u64, u32, Option<u16>, bool),
}

/// [`Then`] as a journal stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Next {
    /// [`Then::RetryAfter`], in nanoseconds.
    #[serde(rename = "r")]
    RetryAfter(u64),
    /// [`Then::Done`].
    #[serde(rename = "d")]
    Done,
    /// [`Then::DeadLetter`].
    #[serde(rename = "x")]
    DeadLetter,
}

impl From<Then> for Next {
    fn from(then: Then) -> Self {
        match then {
            Then::RetryAfter(delay) => Self::RetryAfter(nanos(delay)),
            Then::Done => Self::Done,
            Then::DeadLetter => Self::DeadLetter,
        }
    }
}

impl From<Next> for Then {
    fn from(next: Next) -> Self {
        match next {
            Next::RetryAfter(delay) => Self::RetryAfter(Duration::from_nanos(delay)),
            Next::Done => Self::Done,
            Next::DeadLetter => Self::DeadLetter,
        }
    }
}

/// `at` in Unix nanoseconds (0 before the epoch, saturated far after it).
pub fn unix_nanos(at: OffsetDateTime) -> u64 {
    u64::try_from(at.unix_timestamp_nanos().max(0)).unwrap_or(u64::MAX)
}

fn nanos(duration: Duration) -> u64 {
    u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)
}

fn time(unix_nanos: u64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(unix_nanos))
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

impl Change {
    /// An attempt begins at `now`.
    pub fn begin(now: OffsetDateTime) -> Self {
        Self::Begin(unix_nanos(now))
    }

    /// The current attempt ended at `now`, as [`CallRecord::finish_attempt`] takes it, keeping
    /// a result summarised as `result`.
    pub fn finish(
        now: OffsetDateTime,
        duration: Duration,
        status: Option<u16>,
        error: Option<String>,
        then: Then,
        result: Option<ResultSummary>,
    ) -> Self {
        Self::Finish(
            unix_nanos(now),
            nanos(duration),
            status,
            error,
            then.into(),
            result,
        )
    }

    /// The state a record in `state` is in after this change; `None` when the change does
    /// not apply to it (an attempt cannot begin on a final call, only a queued call can be
    /// cancelled), so nothing should be written.
    pub fn state_after(&self, state: CallState) -> Option<CallState> {
        match self {
            Self::Begin(_) => (!state.is_final()).then_some(CallState::Running),
            Self::Finish(_, _, status, _, next, _) => {
                Some(CallState::after_attempt(*status, (*next).into()))
            }
            Self::Cancel(_) => (state == CallState::Queued).then_some(CallState::Cancelled),
            Self::Callback(..) => Some(state),
        }
    }

    /// Applies the change to `record`, as if made when it was journalled. A change that does
    /// not apply (see [`Change::state_after`]) leaves it as it is.
    pub fn apply(self, record: &mut CallRecord) {
        match self {
            Self::Begin(at) => {
                // Refused on a cancelled or final call: nothing to change.
                let _ = record.begin_attempt(time(at));
            }
            Self::Finish(at, duration, status, error, next, result) => {
                record.finish_attempt(
                    time(at),
                    Duration::from_nanos(duration),
                    status,
                    error,
                    next.into(),
                );
                if result.is_some() {
                    record.result = result;
                }
            }
            Self::Cancel(at) => {
                // Refused once the call has started: nothing to change.
                let _ = record.cancel(time(at));
            }
            Self::Callback(at, attempts, status, delivered) => {
                record.record_callback(time(at), attempts, status, delivered);
            }
        }
    }

    /// `stored` (a record's stored bytes) with this change appended.
    pub fn append_to(&self, stored: &[u8]) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(stored.len() + 96);
        bytes.extend_from_slice(stored);
        self.write_line(&mut bytes);
        bytes
    }

    /// The bytes [`Change::append_to`] appends: `\n` and the change as JSON.
    pub fn line(&self) -> Vec<u8> {
        let mut bytes = Vec::with_capacity(96);
        self.write_line(&mut bytes);
        bytes
    }

    fn write_line(&self, bytes: &mut Vec<u8>) {
        bytes.push(b'\n');
        serde_json::to_writer(bytes, self).expect("a journal change always serializes");
    }
}

/// The record stored as `bytes`: its JSON, then its journal replayed. (Compact JSON has no
/// raw newline, not even inside a string, so each line is one document.)
pub(super) fn read(bytes: &[u8]) -> Result<CallRecord, serde_json::Error> {
    let mut lines = bytes.split(|&b| b == b'\n');
    let mut record: CallRecord = serde_json::from_slice(lines.next().unwrap_or_default())?;
    for line in lines {
        let change: Change = serde_json::from_slice(line)?;
        change.apply(&mut record);
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + seconds).unwrap()
            + Duration::from_micros(123_456)
    }

    fn created() -> CallRecord {
        crate::ledger::tests::record()
    }

    /// Every change, once applied at once and once journalled: the records must be equal.
    #[test]
    fn a_journalled_record_reads_as_the_record_changed_in_place() {
        let summary = ResultSummary {
            status: 200,
            content_type: Some("text/plain".into()),
            bytes: 5,
            truncated: false,
        };
        let changes = [
            Change::begin(at(1)),
            Change::finish(
                at(2),
                Duration::from_nanos(1_234_567_891),
                Some(503),
                Some("function answered 503: \"busy\"\nretry".into()),
                Then::RetryAfter(Duration::from_millis(1_500)),
                None,
            ),
            Change::begin(at(4)),
            // Never finished: abandoned when the next begins.
            Change::begin(at(9)),
            Change::finish(
                at(10),
                Duration::from_millis(250),
                Some(200),
                None,
                Then::Done,
                Some(summary),
            ),
            Change::Callback(unix_nanos(at(11)), 2, Some(204), true),
            // Refused: the call has ended.
            Change::begin(at(12)),
            Change::Cancel(unix_nanos(at(12))),
        ];
        let mut in_place = created();
        let mut stored = created().to_bytes();
        for change in changes {
            stored = change.append_to(&stored);
            change.apply(&mut in_place);
        }
        let read = CallRecord::from_bytes(&stored).unwrap();
        assert_eq!(read, in_place);
        assert_eq!(read.state, CallState::Succeeded);
        assert_eq!(read.attempts.len(), 3);
        assert_eq!(read.attempts[0].next_delay_seconds, Some(1.5));
        assert_eq!(read.attempts[0].duration_seconds, Some(1.234_567_891));
        assert!(
            read.attempts[1]
                .error
                .as_deref()
                .unwrap()
                .contains("abandoned")
        );
        assert_eq!(read.callback.as_ref().unwrap().status, Some(204));
        assert_eq!(read.result.as_ref().unwrap().bytes, 5);
        assert_eq!(read.updated_at, "2027-01-15T08:00:11.123Z");
    }

    #[test]
    fn a_record_stored_before_the_journal_reads_as_before() {
        let mut record = created();
        record.begin_attempt(at(1)).unwrap();
        assert_eq!(CallRecord::from_bytes(&record.to_bytes()).unwrap(), record);
    }

    #[test]
    fn a_cancel_applies_to_a_queued_call_only_and_the_state_says_so() {
        let cancel = Change::Cancel(unix_nanos(at(1)));
        assert_eq!(
            cancel.state_after(CallState::Queued),
            Some(CallState::Cancelled)
        );
        assert_eq!(cancel.state_after(CallState::Running), None);
        let begin = Change::begin(at(1));
        assert_eq!(
            begin.state_after(CallState::Retrying),
            Some(CallState::Running)
        );
        assert_eq!(begin.state_after(CallState::Cancelled), None);
        assert_eq!(begin.state_after(CallState::Succeeded), None);

        let stored = cancel.append_to(&created().to_bytes());
        let read = CallRecord::from_bytes(&stored).unwrap();
        assert_eq!(read.state, CallState::Cancelled);
        assert_eq!(read.updated_at, "2027-01-15T08:00:01.123Z");
    }

    #[test]
    fn a_damaged_journal_is_an_error_not_a_different_record() {
        let stored = created().to_bytes();
        for tail in [&b"\n{\"b\":"[..], b"\n{\"z\":1}", b"\nnot json"] {
            let mut bytes = stored.clone();
            bytes.extend_from_slice(tail);
            assert!(
                CallRecord::from_bytes(&bytes).is_err(),
                "{}",
                String::from_utf8_lossy(tail)
            );
        }
        assert!(CallRecord::from_bytes(b"").is_err());
    }
}
