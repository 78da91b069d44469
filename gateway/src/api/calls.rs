//! `/system/calls`: the invocation ledger over HTTP. One call's record (`?wait=` long-polls
//! until it ends), the newest records of a function or state, a cancel before the call
//! starts, and the result kept for a call that asked for it.
//!
//! The decisions (which query is valid, which failure answers which status) are plain
//! functions below the handlers; the handlers only read and change the ledger.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use courier_core::FunctionRef;
use courier_core::duration::parse_go_duration;
use courier_core::ledger::{CallRecord, CallState, KEEP_RESULT_ANNOTATION, KeptResult};
use courier_ledger::{CallFilter, Cancel, Ledger, LedgerError};
use http::{HeaderName, HeaderValue, StatusCode};

use crate::Gateway;
use crate::error::ApiError;

/// The longest `?wait=` accepted.
const MAX_WAIT: Duration = Duration::from_secs(5 * 60);
/// Records a list returns when `limit` is not given.
const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
const MAX_LIMIT: usize = 1000;
/// Marks a kept result whose body was cut at `--ledger-max-result-bytes`.
const RESULT_TRUNCATED: HeaderName = HeaderName::from_static("x-courier-result-truncated");
/// The per-call header that keeps a result.
const KEEP_RESULT_HEADER: &str = "X-Courier-Keep-Result";

fn ledger(gateway: &Gateway) -> Result<&Ledger, ApiError> {
    gateway.ledger.as_ref().ok_or_else(|| {
        ApiError::NotFound(
            "asynchronous invocation is not enabled on this gateway (no --queue)".into(),
        )
    })
}

/// The status a ledger failure answers with: off is 404, a queue that may come back is 503,
/// anything else (storage, an unreadable record) is 500.
fn ledger_error(e: LedgerError) -> ApiError {
    if e.is_off() {
        ApiError::NotFound("the invocation ledger is off (--ledger-retention 0)".into())
    } else if e.is_retryable() {
        ApiError::Unavailable(format!("the queue is unavailable: {e}"))
    } else {
        ApiError::Internal(format!("the invocation ledger: {e}"))
    }
}

/// The call id in the path: one the ledger can address, else 400.
fn call_id(path: Result<Path<String>, PathRejection>) -> Result<String, ApiError> {
    let Path(id) = path.map_err(|e| ApiError::BadRequest(format!("the call id: {e}")))?;
    courier_core::ledger::check_call_id(&id).map_err(ApiError::BadRequest)?;
    Ok(id)
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!("no call {id} (unknown, or its record expired)"))
}

/// The query's pairs; a key given twice or one not in `known` is refused.
fn query_pairs(raw: Option<&str>, known: &[&str]) -> Result<Vec<(String, String)>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::BadRequest(format!("the query: {e}")))?;
    for (i, (key, _)) in pairs.iter().enumerate() {
        if !known.contains(&key.as_str()) {
            return Err(ApiError::BadRequest(format!(
                "unknown query parameter {key:?}: use {}",
                known.join(", ")
            )));
        }
        if pairs[..i].iter().any(|(k, _)| k == key) {
            return Err(ApiError::BadRequest(format!(
                "query parameter {key:?} is given twice"
            )));
        }
    }
    Ok(pairs)
}

/// `?wait=30s`: how long to wait for the call to end (a Go duration, at most 5m); zero or
/// absent: answer at once.
fn parse_wait(raw: Option<&str>) -> Result<Duration, ApiError> {
    let pairs = query_pairs(raw, &["wait"])?;
    let Some((_, text)) = pairs.into_iter().next() else {
        return Ok(Duration::ZERO);
    };
    let wait = parse_go_duration(&text).map_err(|e| ApiError::BadRequest(format!("wait: {e}")))?;
    if wait > MAX_WAIT {
        return Err(ApiError::BadRequest(format!(
            "wait: {text:?} is longer than the most allowed, 5m"
        )));
    }
    Ok(wait)
}

/// `?function=F&state=S&limit=N`: `F` is `name` (default namespace) or `name.namespace`,
/// `S` one of the API's state names, `N` 1 to 1000 (default 100).
fn parse_filter(raw: Option<&str>) -> Result<CallFilter, ApiError> {
    let mut filter = CallFilter {
        function: None,
        state: None,
        limit: DEFAULT_LIMIT,
    };
    for (key, value) in query_pairs(raw, &["function", "state", "limit"])? {
        match key.as_str() {
            "function" => {
                let function = FunctionRef::parse_invocation(&value)
                    .map_err(|e| ApiError::BadRequest(format!("function: {e}")))?;
                filter.function = Some(function.qualified());
            }
            "state" => {
                let state = CallState::from_str(&value)
                    .map_err(|e| ApiError::BadRequest(format!("state: {e}")))?;
                filter.state = Some(state);
            }
            _ => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::BadRequest(format!(
                            "limit: {value:?} is not a number from 1 to {MAX_LIMIT}"
                        ))
                    })?;
            }
        }
    }
    Ok(filter)
}

/// What a cancel answers: the cancelled record, 404, or 409 naming the state.
fn cancel_answer(id: &str, cancel: Cancel) -> Result<CallRecord, ApiError> {
    match cancel {
        Cancel::Cancelled(record) => Ok(*record),
        Cancel::NotFound => Err(not_found(id)),
        Cancel::Refused(state) => Err(ApiError::Conflict(format!("call {id} is {state}"))),
    }
}

/// A kept result as the function answered it: its status, its headers as kept, the body,
/// and `X-Courier-Result-Truncated: true` when the body was cut.
fn result_response(id: &str, kept: KeptResult) -> Result<Response, ApiError> {
    let status = StatusCode::from_u16(kept.status)
        .ok()
        .filter(|s| !s.is_informational())
        .ok_or_else(|| {
            ApiError::Internal(format!(
                "the kept result of call {id} has status {}, which cannot be served",
                kept.status
            ))
        })?;
    let truncated = kept.truncated();
    let mut response = (status, kept.body).into_response();
    let headers = response.headers_mut();
    // The body's own type, not the default the byte body got.
    headers.remove(http::header::CONTENT_TYPE);
    for (name, value) in &kept.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(value),
        ) {
            headers.append(name, value);
        }
    }
    if truncated {
        headers.insert(RESULT_TRUNCATED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// `GET /system/calls/{id}[?wait=30s]`.
pub(super) async fn show(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
) -> Result<Json<CallRecord>, ApiError> {
    let id = call_id(path)?;
    let wait = parse_wait(query.as_deref())?;
    let ledger = ledger(&gateway)?;
    let record = if wait.is_zero() {
        ledger.get(&id).await
    } else {
        let until = tokio::time::Instant::now() + wait;
        ledger.wait_final(&id, until, &gateway.stopping).await
    };
    record
        .map_err(ledger_error)?
        .map(Json)
        .ok_or_else(|| not_found(&id))
}

/// `GET /system/calls?function=&state=&limit=`: newest first.
pub(super) async fn list(
    State(gateway): State<Arc<Gateway>>,
    RawQuery(query): RawQuery,
) -> Result<Json<Vec<CallRecord>>, ApiError> {
    let filter = parse_filter(query.as_deref())?;
    let records = ledger(&gateway)?
        .list(&filter)
        .await
        .map_err(ledger_error)?;
    Ok(Json(records))
}

/// `DELETE /system/calls/{id}`: cancels a call that has not started.
pub(super) async fn cancel(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Json<CallRecord>, ApiError> {
    let id = call_id(path)?;
    let cancel = ledger(&gateway)?.cancel(&id).await.map_err(ledger_error)?;
    let record = cancel_answer(&id, cancel)?;
    tracing::info!(call_id = %id, function = %record.qualified_function(), "Call cancelled.");
    Ok(Json(record))
}

/// `GET /system/calls/{id}/result`: the kept result, once the call has ended.
pub(super) async fn result(
    State(gateway): State<Arc<Gateway>>,
    path: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let id = call_id(path)?;
    let ledger = ledger(&gateway)?;
    let record = ledger
        .get(&id)
        .await
        .map_err(ledger_error)?
        .ok_or_else(|| not_found(&id))?;
    if !record.state.is_final() {
        return Err(ApiError::Conflict(format!(
            "call {id} is {}: its result is kept once it ends",
            record.state
        )));
    }
    let kept = ledger
        .result(&id)
        .await
        .map_err(ledger_error)?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "call {id} kept no result: to keep results, label or annotate the function \
             {KEEP_RESULT_ANNOTATION}: \"true\", or send the call with \
             {KEEP_RESULT_HEADER}: true"
            ))
        })?;
    result_response(&id, kept)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status_of<T: std::fmt::Debug>(result: Result<T, ApiError>) -> StatusCode {
        result.expect_err("refused").status()
    }

    #[test]
    fn wait_is_a_go_duration_of_at_most_five_minutes() {
        assert_eq!(parse_wait(None).unwrap(), Duration::ZERO);
        assert_eq!(parse_wait(Some("")).unwrap(), Duration::ZERO);
        assert_eq!(
            parse_wait(Some("wait=30s")).unwrap(),
            Duration::from_secs(30)
        );
        assert_eq!(
            parse_wait(Some("wait=1m30s")).unwrap(),
            Duration::from_secs(90)
        );
        assert_eq!(parse_wait(Some("wait=5m")).unwrap(), MAX_WAIT);
        assert_eq!(parse_wait(Some("wait=0s")).unwrap(), Duration::ZERO);
        for bad in [
            "wait=5m1s",
            "wait=1h",
            "wait=soon",
            "wait=",
            "wait=-1s",
            "wait=10s&wait=20s",
            "timeout=10s",
        ] {
            assert_eq!(
                status_of(parse_wait(Some(bad))),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn a_list_filters_by_qualified_function_and_state_with_a_bounded_limit() {
        let all = parse_filter(None).unwrap();
        assert_eq!(
            all,
            CallFilter {
                function: None,
                state: None,
                limit: 100
            }
        );
        let some = parse_filter(Some("function=web&state=dead-lettered&limit=7")).unwrap();
        assert_eq!(some.function.as_deref(), Some("web.openfaas-fn"));
        assert_eq!(some.state, Some(CallState::DeadLettered));
        assert_eq!(some.limit, 7);
        let named = parse_filter(Some("function=web.staging&limit=1000")).unwrap();
        assert_eq!(named.function.as_deref(), Some("web.staging"));
        assert_eq!(named.limit, 1000);
        for state in CallState::ALL {
            let query = format!("state={}", state.as_str());
            assert_eq!(parse_filter(Some(&query)).unwrap().state, Some(state));
        }
    }

    #[test]
    fn a_list_refuses_anything_else() {
        for bad in [
            "state=done",
            "state=Queued",
            "limit=0",
            "limit=1001",
            "limit=-1",
            "limit=ten",
            "limit=",
            "function=",
            "function=Bad_Name",
            "function=web.kube-system",
            "function=a.b.c",
            "namespace=openfaas-fn",
            "state=queued&state=running",
        ] {
            assert_eq!(
                status_of(parse_filter(Some(bad))),
                StatusCode::BAD_REQUEST,
                "{bad}"
            );
        }
    }

    #[test]
    fn hostile_ids_are_refused_before_the_ledger_is_asked() {
        let ok = |id: &str| call_id(Ok(Path(id.to_owned())));
        assert_eq!(ok("3f2a-call").unwrap(), "3f2a-call");
        assert_eq!(ok("../..").unwrap(), "../..", "a plain key, never a path");
        for bad in ["", "a\0b", "tab\there", &"x".repeat(10 * 1024)] {
            assert_eq!(status_of(ok(bad)), StatusCode::BAD_REQUEST, "{bad:?}");
        }
    }

    #[test]
    fn ledger_failures_answer_404_when_off_503_when_retryable_and_500_otherwise() {
        let off = ledger_error(LedgerError::Queue(courier_queue::Error::LedgerOff));
        assert_eq!(off.status(), StatusCode::NOT_FOUND);
        assert!(off.to_string().contains("--ledger-retention 0"), "{off}");
        let down = courier_queue::Error::unavailable("get", "connection refused");
        assert_eq!(
            ledger_error(LedgerError::Queue(down)).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        let storage = courier_queue::Error::storage("get", "disk on fire");
        assert_eq!(
            ledger_error(LedgerError::Queue(storage)).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
        let corrupt = LedgerError::Corrupt {
            id: "x".into(),
            reason: "not JSON".into(),
        };
        assert_eq!(
            ledger_error(corrupt).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }

    fn queued() -> CallRecord {
        CallRecord::queued(
            "c1",
            "web",
            courier_core::ledger::CallSource::Async,
            time::OffsetDateTime::UNIX_EPOCH,
            "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            None,
        )
    }

    #[test]
    fn a_cancel_is_the_record_404_or_409_naming_the_state() {
        let mut record = queued();
        record.state = CallState::Cancelled;
        assert_eq!(
            cancel_answer("c1", Cancel::Cancelled(Box::new(record.clone()))).unwrap(),
            record
        );
        assert_eq!(
            status_of(cancel_answer("c1", Cancel::NotFound)),
            StatusCode::NOT_FOUND
        );
        for state in [
            CallState::Running,
            CallState::Retrying,
            CallState::Succeeded,
            CallState::Failed,
            CallState::DeadLettered,
            CallState::Cancelled,
        ] {
            let refused = cancel_answer("c1", Cancel::Refused(state)).unwrap_err();
            assert_eq!(refused.status(), StatusCode::CONFLICT);
            assert_eq!(refused.to_string(), format!("call c1 is {state}"));
        }
    }

    #[test]
    fn a_kept_result_is_served_with_the_functions_status_type_and_headers() {
        let mut headers = http::HeaderMap::new();
        headers.insert("content-type", "application/json".parse().unwrap());
        headers.insert("x-answer", "42".parse().unwrap());
        let kept = KeptResult::capture(201, &headers, br#"{"ok":true}"#, 1024);
        let response = result_response("c1", kept).unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert_eq!(response.headers()["x-answer"], "42");
        assert!(!response.headers().contains_key(RESULT_TRUNCATED));

        let cut = KeptResult::capture(500, &http::HeaderMap::new(), b"0123456789", 4);
        let response = result_response("c1", cut).unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()[RESULT_TRUNCATED], "true");
        assert!(!response.headers().contains_key("content-type"));

        let odd = KeptResult {
            status: 101,
            headers: Vec::new(),
            body: Vec::new(),
            original_bytes: 0,
        };
        assert_eq!(
            status_of(result_response("c1", odd)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
