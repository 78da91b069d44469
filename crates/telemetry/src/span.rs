//! A [`SpanRecord`] as the OpenTelemetry SDK's [`SpanData`]: a pure translation, so the ids,
//! times and parent Courier chose are exported exactly (an SDK tracer would mint its own).

use std::borrow::Cow;

use courier_core::trace::{SpanKind, SpanRecord, SpanValue};
use opentelemetry::trace::{self, SpanContext, SpanId, Status, TraceFlags, TraceId, TraceState};
use opentelemetry::{InstrumentationScope, Key, KeyValue};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanLinks};

/// The span as the exporter takes it. Every recorded span is sampled: the caller records only
/// sampled traces. A parent is another process's span (the caller's, or the gateway's accept
/// span seen from a worker), so it is marked remote.
pub(crate) fn span_data(record: SpanRecord, scope: &InstrumentationScope) -> SpanData {
    let SpanRecord {
        trace_id,
        span_id,
        parent_id,
        name,
        kind,
        start,
        end,
        attributes,
        error,
    } = record;
    SpanData {
        span_context: SpanContext::new(
            TraceId::from_bytes(trace_id),
            SpanId::from_bytes(span_id),
            TraceFlags::SAMPLED,
            false,
            TraceState::NONE,
        ),
        parent_span_id: parent_id.map_or(SpanId::INVALID, SpanId::from_bytes),
        parent_span_is_remote: parent_id.is_some(),
        span_kind: span_kind(kind),
        name: Cow::Borrowed(name),
        start_time: start,
        end_time: end.max(start),
        attributes: attributes
            .into_iter()
            .map(|(key, value)| KeyValue::new(Key::from_static_str(key), attribute(value)))
            .collect(),
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status: match error {
            Some(description) => Status::error(description),
            None => Status::Unset,
        },
        instrumentation_scope: scope.clone(),
    }
}

fn span_kind(kind: SpanKind) -> trace::SpanKind {
    match kind {
        SpanKind::Server => trace::SpanKind::Server,
        SpanKind::Client => trace::SpanKind::Client,
        SpanKind::Producer => trace::SpanKind::Producer,
        SpanKind::Internal => trace::SpanKind::Internal,
    }
}

fn attribute(value: SpanValue) -> opentelemetry::Value {
    match value {
        SpanValue::Text(text) => text.into(),
        SpanValue::Int(n) => n.into(),
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    fn record() -> SpanRecord {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SpanRecord {
            trace_id: [0x4b; 16],
            span_id: [0x01; 8],
            parent_id: Some([0x02; 8]),
            name: "courier.attempt",
            kind: SpanKind::Client,
            start,
            end: start + Duration::from_millis(250),
            attributes: vec![
                ("faas.invoked_name", SpanValue::Text("echo".into())),
                ("http.response.status_code", SpanValue::Int(500)),
            ],
            error: Some("function answered 500".into()),
        }
    }

    #[test]
    fn a_record_keeps_its_ids_times_and_remote_parent() {
        let scope = InstrumentationScope::builder("courier").build();
        let source = record();
        let span = span_data(source.clone(), &scope);
        assert_eq!(
            span.span_context.trace_id(),
            TraceId::from_bytes([0x4b; 16])
        );
        assert_eq!(span.span_context.span_id(), SpanId::from_bytes([0x01; 8]));
        assert!(span.span_context.is_sampled());
        assert_eq!(span.parent_span_id, SpanId::from_bytes([0x02; 8]));
        assert!(span.parent_span_is_remote);
        assert_eq!(span.span_kind, trace::SpanKind::Client);
        assert_eq!(span.name, "courier.attempt");
        assert_eq!((span.start_time, span.end_time), (source.start, source.end));
        assert_eq!(span.instrumentation_scope, scope);
    }

    #[test]
    fn attributes_keep_their_types_and_an_error_is_an_error_status() {
        let span = span_data(record(), &InstrumentationScope::builder("courier").build());
        assert_eq!(
            span.attributes,
            [
                KeyValue::new("faas.invoked_name", "echo"),
                KeyValue::new("http.response.status_code", 500_i64),
            ]
        );
        assert_eq!(span.status, Status::error("function answered 500"));
    }

    #[test]
    fn a_root_span_has_no_parent_and_an_unset_status() {
        let root = SpanRecord {
            parent_id: None,
            error: None,
            kind: SpanKind::Server,
            name: "courier.accept",
            ..record()
        };
        let span = span_data(root, &InstrumentationScope::builder("courier").build());
        assert_eq!(span.parent_span_id, SpanId::INVALID);
        assert!(!span.parent_span_is_remote);
        assert_eq!(span.span_kind, trace::SpanKind::Server);
        assert_eq!(span.status, Status::Unset);
    }

    #[test]
    fn an_end_before_the_start_is_clamped_to_the_start() {
        let mut backwards = record();
        backwards.end = backwards.start - Duration::from_secs(1);
        let span = span_data(
            backwards.clone(),
            &InstrumentationScope::builder("c").build(),
        );
        assert_eq!(span.end_time, backwards.start);
    }
}
