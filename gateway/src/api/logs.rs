//! `GET /system/logs`: a function's log lines as ndjson, optionally followed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::response::Response;
use courier_core::LogRequest;
use futures_util::StreamExt;
use http::header;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::namespace_of;
use crate::Gateway;
use crate::error::ApiError;

/// Go's `strconv.ParseBool`.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// Parses the query into a [`LogRequest`]; bad values are 422 as in faas-provider.
fn log_request(q: &HashMap<String, String>) -> Result<LogRequest, ApiError> {
    let name = q.get("name").map(String::as_str).unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::BadRequest(
            "query parameter name is required".into(),
        ));
    }
    courier_core::names::validate_name("function", name)?;
    let namespace = namespace_of(q.get("namespace").map(String::as_str), "")?;
    let tail = match q.get("tail").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => {
            let n: i64 = v
                .parse()
                .map_err(|_| ApiError::Unprocessable(format!("tail: {v:?} is not an integer")))?;
            usize::try_from(n).ok().filter(|n| *n > 0)
        }
    };
    let follow = match q.get("follow").filter(|v| !v.is_empty()) {
        None => false,
        Some(v) => parse_bool(v)
            .ok_or_else(|| ApiError::Unprocessable(format!("follow: {v:?} is not a boolean")))?,
    };
    let since_unix_nanos = match q.get("since").filter(|v| !v.is_empty()) {
        None => None,
        Some(v) => Some(
            OffsetDateTime::parse(v, &Rfc3339)
                .map_err(|_| ApiError::Unprocessable(format!("since: {v:?} is not RFC 3339")))?
                .unix_timestamp_nanos(),
        ),
    };
    Ok(LogRequest {
        name: name.to_owned(),
        namespace,
        instance: q.get("instance").filter(|v| !v.is_empty()).cloned(),
        tail,
        follow,
        since_unix_nanos,
    })
}

pub(super) async fn logs(
    State(gateway): State<Arc<Gateway>>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let request = log_request(&q)?;
    let stream = gateway.provider.logs(request).await?;
    let body = stream.map(|message| {
        let mut line = serde_json::to_vec(&message).unwrap_or_default();
        line.push(b'\n');
        Ok::<_, Infallible>(Bytes::from(line))
    });
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/x-ndjson")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .expect("static headers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).into(), (*v).into()))
            .collect()
    }

    #[test]
    fn log_query_parses_like_faas_provider() {
        let r = log_request(&q(&[("name", "f"), ("tail", "0"), ("follow", "1")])).unwrap();
        assert_eq!((r.tail, r.follow), (None, true));
        let r = log_request(&q(&[
            ("name", "f"),
            ("tail", "5"),
            ("since", "2026-01-01T00:00:00Z"),
        ]))
        .unwrap();
        assert_eq!(r.tail, Some(5));
        assert!(r.since_unix_nanos.is_some());
        assert!(matches!(
            log_request(&q(&[("name", "f"), ("tail", "x")])),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(
            log_request(&q(&[("name", "f"), ("follow", "yes")])),
            Err(ApiError::Unprocessable(_))
        ));
        assert!(matches!(log_request(&q(&[])), Err(ApiError::BadRequest(_))));
    }
}
