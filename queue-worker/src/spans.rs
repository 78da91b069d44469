//! The spans the worker reports for a call (with `--otlp-endpoint`): `courier.attempt` per
//! attempt, `courier.callback` for the callback's posts, `courier.dead_letter` when the call
//! is given up. Each hangs under the call's stored span (the gateway's `courier.accept`, or
//! the caller's), and an attempt's or callback's span id is the parent id its HTTP request
//! carried, so the function's and the receiver's own spans hang under it.
//!
//! Pure: the caller measures the times and draws the ids.

use std::time::SystemTime;

use courier_core::trace::{SpanKind, SpanRecord, SpanValue, TraceContext};

/// What every span of one call carries.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CallSpan<'a> {
    /// The call's stored context (the parent of every span here).
    pub(crate) call: &'a TraceContext,
    /// The call id.
    pub(crate) call_id: &'a str,
    /// `NAME` or `NAME.NAMESPACE` as queued.
    pub(crate) function: &'a str,
}

impl CallSpan<'_> {
    fn span(
        &self,
        name: &'static str,
        kind: SpanKind,
        hop: &TraceContext,
        (start, end): (SystemTime, SystemTime),
        mut attributes: Vec<(&'static str, SpanValue)>,
        error: Option<String>,
    ) -> SpanRecord {
        attributes.insert(0, ("faas.invoked_name", text(self.function)));
        attributes.insert(1, ("courier.call_id", text(self.call_id)));
        SpanRecord {
            trace_id: self.call.parent.trace_id,
            span_id: hop.parent.parent_id,
            parent_id: Some(self.call.parent.parent_id),
            name,
            kind,
            start,
            end,
            attributes,
            error,
        }
    }

    /// Attempt `attempt`, sent with `hop`, which answered `status` (none: no answer, `error`
    /// says why). An answer of 400 or more is an error too.
    pub(crate) fn attempt(
        &self,
        hop: &TraceContext,
        times: (SystemTime, SystemTime),
        attempt: u64,
        status: Option<u16>,
        error: Option<&str>,
    ) -> SpanRecord {
        let mut attributes = vec![("courier.attempt", int(attempt))];
        if let Some(status) = status {
            attributes.push(("http.response.status_code", int(u64::from(status))));
        }
        let error = match (error, status) {
            (Some(error), _) => Some(error.to_owned()),
            (None, Some(status)) if status >= 400 => {
                Some(format!("the function answered {status}"))
            }
            (None, _) => None,
        };
        self.span(
            "courier.attempt",
            SpanKind::Client,
            hop,
            times,
            attributes,
            error,
        )
    }

    /// The callback to `url`, posted with `hop` `posts` times; `status` was the receiver's
    /// last answer.
    pub(crate) fn callback(
        &self,
        hop: &TraceContext,
        times: (SystemTime, SystemTime),
        url: &str,
        posts: u32,
        status: Option<u16>,
        delivered: bool,
    ) -> SpanRecord {
        let mut attributes = vec![
            ("url.full", text(url)),
            ("courier.callback.posts", int(u64::from(posts))),
        ];
        if let Some(status) = status {
            attributes.push(("http.response.status_code", int(u64::from(status))));
        }
        let error = (!delivered).then(|| match status {
            Some(status) => format!("the callback receiver answered {status}"),
            None => "the callback receiver never answered".to_owned(),
        });
        self.span(
            "courier.callback",
            SpanKind::Client,
            hop,
            times,
            attributes,
            error,
        )
    }

    /// The call was given up after `attempts` attempts and kept as a dead letter.
    pub(crate) fn dead_letter(
        &self,
        hop: &TraceContext,
        at: SystemTime,
        attempts: u64,
        reason: &str,
    ) -> SpanRecord {
        self.span(
            "courier.dead_letter",
            SpanKind::Internal,
            hop,
            (at, at),
            vec![("courier.attempts", int(attempts))],
            Some(reason.to_owned()),
        )
    }
}

fn text(value: &str) -> SpanValue {
    SpanValue::Text(value.to_owned())
}

fn int(value: u64) -> SpanValue {
    SpanValue::Int(i64::try_from(value).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::trace::TraceParent;

    fn call() -> TraceContext {
        TraceContext::mint([7; 16], [1; 8])
    }

    fn hop() -> TraceContext {
        call().with_parent([2; 8])
    }

    fn spans(call: &TraceContext) -> CallSpan<'_> {
        CallSpan {
            call,
            call_id: "id-1",
            function: "echo",
        }
    }

    #[test]
    fn an_attempt_hangs_under_the_call_with_the_hop_as_its_id() {
        let call = call();
        let now = SystemTime::now();
        let span = spans(&call).attempt(&hop(), (now, now), 2, Some(200), None);
        assert_eq!(span.trace_id, [7; 16]);
        assert_eq!(span.span_id, [2; 8]);
        assert_eq!(span.parent_id, Some([1; 8]));
        assert_eq!(span.name, "courier.attempt");
        assert_eq!(span.kind, SpanKind::Client);
        assert_eq!(span.error, None);
        assert!(
            span.attributes
                .contains(&("courier.attempt", SpanValue::Int(2)))
        );
        assert!(
            span.attributes
                .contains(&("http.response.status_code", SpanValue::Int(200)))
        );
        assert!(
            span.attributes
                .contains(&("faas.invoked_name", SpanValue::Text("echo".into())))
        );
    }

    #[test]
    fn a_failed_attempt_is_an_error_whether_it_answered_or_not() {
        let call = call();
        let now = SystemTime::now();
        let answered = spans(&call).attempt(&hop(), (now, now), 1, Some(500), None);
        assert_eq!(answered.error.as_deref(), Some("the function answered 500"));
        let silent = spans(&call).attempt(&hop(), (now, now), 1, None, Some("timed out"));
        assert_eq!(silent.error.as_deref(), Some("timed out"));
        assert!(
            !silent
                .attributes
                .iter()
                .any(|(k, _)| *k == "http.response.status_code")
        );
    }

    #[test]
    fn an_undelivered_callback_and_a_dead_letter_are_errors() {
        let call = call();
        let now = SystemTime::now();
        let delivered = spans(&call).callback(&hop(), (now, now), "http://cb/", 1, Some(204), true);
        assert_eq!(delivered.error, None);
        let refused = spans(&call).callback(&hop(), (now, now), "http://cb/", 5, Some(503), false);
        assert_eq!(
            refused.error.as_deref(),
            Some("the callback receiver answered 503")
        );
        let letter = spans(&call).dead_letter(&hop(), now, 3, "the function answered 500");
        assert_eq!(letter.kind, SpanKind::Internal);
        assert_eq!(
            letter.parent_id,
            Some(TraceParent::new([7; 16], [1; 8]).parent_id)
        );
    }
}
