//! `/system/dead-letters`: queued calls given up on after their last attempt — listed newest
//! first, shown with their request, replayed into the queue (a new call with its own ledger
//! record, source `replay`), or removed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use courier_core::headers::X_CALL_ID;
use courier_core::ledger::{CallRecord, CallSource};
use courier_core::queue::{DeadLetterRecord, GoUrl, QueueRequest};
use courier_core::trace::TraceParent;
use courier_queue::{Message, WorkQueue};
use http::{HeaderValue, StatusCode, header};
use time::OffsetDateTime;

use crate::Gateway;
use crate::error::ApiError;

/// `traceparent` as a stored request names it (Go's canonical form).
const TRACEPARENT_STORED: &str = "Traceparent";
/// `tracestate` as a stored request names it.
const TRACESTATE_STORED: &str = "Tracestate";

fn queue(gateway: &Gateway) -> Result<&Arc<dyn WorkQueue>, ApiError> {
    gateway.queue.as_ref().ok_or_else(|| {
        ApiError::NotFound("asynchronous invocation is not enabled on this gateway".into())
    })
}

fn queue_error(e: courier_queue::Error) -> ApiError {
    if e.is_retryable() {
        ApiError::NotReady(format!("the queue is unavailable: {e}"))
    } else {
        ApiError::Internal(format!("dead letters: {e}"))
    }
}

fn decode(id: &str, record: &[u8]) -> Result<DeadLetterRecord, ApiError> {
    serde_json::from_slice(record)
        .map_err(|e| ApiError::Internal(format!("dead letter {id} is unreadable: {e}")))
}

pub(super) async fn list(
    State(gateway): State<Arc<Gateway>>,
) -> Result<Json<Vec<DeadLetterRecord>>, ApiError> {
    let letters = queue(&gateway)?.dead_letters().await.map_err(queue_error)?;
    let mut out = Vec::with_capacity(letters.len());
    for letter in letters {
        let mut record = decode(&letter.id, &letter.record)?;
        record.request = None;
        out.push(record);
    }
    Ok(Json(out))
}

pub(super) async fn show(
    State(gateway): State<Arc<Gateway>>,
    Path(call_id): Path<String>,
) -> Result<Json<DeadLetterRecord>, ApiError> {
    let letter = queue(&gateway)?
        .dead_letter(&call_id)
        .await
        .map_err(queue_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {call_id}")))?;
    Ok(Json(decode(&letter.id, &letter.record)?))
}

/// Replays a dead letter: its request is queued again under a fresh message id (so the dedup
/// window does not swallow it) with a record of its own naming the original call; the request
/// keeps its `X-Call-Id`, so callbacks and a new dead letter carry the original id. The answer
/// keeps `X-Call-Id: <original>` and tells the replay's id (`Location`, and the JSON body).
pub(super) async fn replay(
    State(gateway): State<Arc<Gateway>>,
    Path(call_id): Path<String>,
) -> Result<Response, ApiError> {
    let queue = queue(&gateway)?;
    let letter = queue
        .dead_letter(&call_id)
        .await
        .map_err(queue_error)?
        .ok_or_else(|| ApiError::NotFound(format!("no dead letter {call_id}")))?;
    let record = decode(&letter.id, &letter.record)?;
    let Some(mut request) = record.request else {
        return Err(ApiError::Conflict(format!(
            "dead letter {call_id} has no request to replay: {}",
            record.error
        )));
    };
    let trace_id = replay_trace_id(&mut request);
    let replay_id = uuid::Uuid::now_v7().to_string();
    let replayed = CallRecord::queued(
        &replay_id,
        &request.function,
        CallSource::Replay {
            call_id: call_id.clone(),
        },
        OffsetDateTime::now_utc(),
        trace_id,
        request.callback_url.as_ref().map(GoUrl::to_url_string),
    );
    let payload = request.to_json();
    let message = Message {
        id: replay_id.clone(),
        payload: payload.into(),
    };
    queue
        .publish_recorded(message, Some(courier_ledger::row(&replayed)))
        .await
        .map_err(queue_error)?;
    queue
        .remove_dead_letter(&call_id)
        .await
        .map_err(queue_error)?;
    tracing::info!(call_id = %call_id, replay_id = %replay_id, "Dead letter replayed.");
    let body = serde_json::json!({ "callId": call_id, "replayId": replay_id });
    let mut response = (StatusCode::ACCEPTED, Json(body)).into_response();
    if let Ok(v) = HeaderValue::from_str(&call_id) {
        response.headers_mut().insert(X_CALL_ID, v);
    }
    if let Ok(v) = HeaderValue::from_str(&format!("/system/calls/{replay_id}")) {
        response.headers_mut().insert(header::LOCATION, v);
    }
    Ok(response)
}

/// The trace id the replay carries: the stored request's own `Traceparent` when it has a
/// valid one; otherwise (a request stored without one, or with a broken one) a fresh context
/// is put into the request, so the worker and the record agree.
fn replay_trace_id(request: &mut QueueRequest) -> String {
    let stored = request
        .header
        .get(TRACEPARENT_STORED)
        .and_then(|values| values.first())
        .and_then(|value| TraceParent::parse(value));
    if let Some(parent) = stored {
        return parent.trace_id_hex();
    }
    let fresh = crate::enqueue::mint_trace();
    request.header.insert(
        TRACEPARENT_STORED.to_owned(),
        vec![fresh.parent.header_value()],
    );
    request.header.remove(TRACESTATE_STORED);
    fresh.parent.trace_id_hex()
}

pub(super) async fn remove(
    State(gateway): State<Arc<Gateway>>,
    Path(call_id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if queue(&gateway)?
        .remove_dead_letter(&call_id)
        .await
        .map_err(queue_error)?
    {
        Ok(StatusCode::ACCEPTED)
    } else {
        Err(ApiError::NotFound(format!("no dead letter {call_id}")))
    }
}

pub(super) async fn purge(
    State(gateway): State<Arc<Gateway>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let removed = queue(&gateway)?
        .purge_dead_letters()
        .await
        .map_err(queue_error)?;
    Ok(Json(serde_json::json!({ "removed": removed })))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STORED: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn request(headers: &[(&str, &str)]) -> QueueRequest {
        QueueRequest {
            header: headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), vec![(*v).to_owned()]))
                .collect(),
            function: "web".into(),
            ..QueueRequest::default()
        }
    }

    #[test]
    fn a_replay_keeps_the_stored_trace() {
        let mut stored = request(&[(TRACEPARENT_STORED, STORED), (TRACESTATE_STORED, "a=b")]);
        let before = stored.clone();
        assert_eq!(
            replay_trace_id(&mut stored),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(stored, before, "the request is replayed as stored");
    }

    #[test]
    fn a_replay_of_a_request_without_a_valid_trace_gets_a_fresh_one() {
        for headers in [
            vec![],
            vec![(TRACEPARENT_STORED, "garbage"), (TRACESTATE_STORED, "a=b")],
        ] {
            let mut stored = request(&headers);
            let trace_id = replay_trace_id(&mut stored);
            let parent = TraceParent::parse(&stored.header[TRACEPARENT_STORED][0])
                .expect("a valid traceparent");
            assert_eq!(parent.trace_id_hex(), trace_id);
            assert!(!stored.header.contains_key(TRACESTATE_STORED));
        }
    }
}
