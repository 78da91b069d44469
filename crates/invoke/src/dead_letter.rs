//! Keeping a call given up on: the one way the queue worker and the triggers build and store
//! a dead letter.

use std::time::{SystemTime, UNIX_EPOCH};

use courier_core::names::FunctionRef;
use courier_core::queue::{DeadLetterRecord, QueueRequest};
use courier_queue::{DeadLetter, WorkQueue};

use crate::InvokeError;

/// The record of a call of `function` (`name` or `name.namespace`, as invoked) given up on
/// now, after `attempts`.
pub fn dead_letter_record(
    call_id: &str,
    function: &str,
    attempts: u64,
    last_status: Option<u16>,
    error: String,
    request: Option<QueueRequest>,
) -> DeadLetterRecord {
    let (function, namespace) = match FunctionRef::parse_invocation(function) {
        Ok(f) => (f.name, f.namespace),
        Err(_) => (function.to_owned(), String::new()),
    };
    DeadLetterRecord {
        call_id: call_id.to_owned(),
        function,
        namespace,
        attempts,
        last_status,
        error,
        failed_at: time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        request,
    }
}

/// Stores `record` in `queue`'s dead letters (served at `/system/dead-letters`), replacing a
/// letter with the same call id.
pub async fn keep_dead_letter(
    queue: &dyn WorkQueue,
    record: &DeadLetterRecord,
) -> Result<(), InvokeError> {
    let encoded = serde_json::to_vec(record)
        .map_err(|e| InvokeError::Invalid(format!("encoding the dead letter: {e}")))?;
    let failed_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default();
    queue
        .put_dead_letter(DeadLetter {
            id: record.call_id.clone(),
            failed_at_ms,
            record: encoded.into(),
        })
        .await?;
    Ok(())
}
