//! `/system/dead-letters`: queued calls given up on after their last attempt — listed newest
//! first, shown with their request, replayed into the queue, or removed.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use courier_core::queue::DeadLetterRecord;
use courier_queue::{Message, WorkQueue};
use http::{HeaderValue, StatusCode};

use crate::Gateway;
use crate::error::ApiError;

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
    let Some(request) = record.request else {
        return Err(ApiError::Conflict(format!(
            "dead letter {call_id} has no request to replay: {}",
            record.error
        )));
    };
    let payload = serde_json::to_vec(&request)
        .map_err(|e| ApiError::Internal(format!("encoding the replay: {e}")))?;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    // A fresh message id, so the dedup window does not swallow the replay; the call keeps
    // its X-Call-Id, so callbacks and a new dead letter carry the original id.
    let message = Message {
        id: format!("{call_id}/replay/{now_ms}"),
        payload: payload.into(),
    };
    queue.publish(message).await.map_err(queue_error)?;
    queue
        .remove_dead_letter(&call_id)
        .await
        .map_err(queue_error)?;
    tracing::info!(call_id = %call_id, "Dead letter replayed.");
    let mut response = StatusCode::ACCEPTED.into_response();
    if let Ok(v) = HeaderValue::from_str(&call_id) {
        response.headers_mut().insert("x-call-id", v);
    }
    Ok(response)
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
