//! The data of one call: what a trigger sends, what a function answers, where a queued call is.

use bytes::Bytes;
use courier_core::ledger::CallSource;
use courier_queue::LedgerRow;
use http::HeaderMap;

/// One call of a function, as a trigger makes it.
#[derive(Debug, Clone, Default)]
pub struct Call {
    /// `name` or `name.namespace`.
    pub function: String,
    /// The path after the function's name (`/` when none); may carry `?query`.
    pub path: String,
    /// Headers passed to the function unchanged (`X-Call-Id` is set from `call_id`).
    pub headers: HeaderMap,
    /// The request body.
    pub body: Bytes,
    /// The call id (`X-Call-Id`); for a queued call also its dedup key. `None`: a fresh uuid.
    pub call_id: Option<String>,
    /// What made the call (a cron fire, a Kafka or AMQP message), for the ledger record of a
    /// queued call. `None`: `async`.
    pub source: Option<CallSource>,
}

impl Call {
    /// The call id to use: the given one, or a fresh uuid (v7, time-ordered like the
    /// gateway's: see `gateway/src/enqueue.rs`).
    pub(crate) fn id_or_new(&self) -> String {
        self.call_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string())
    }

    /// The path (without query) and the query (without `?`).
    pub(crate) fn path_and_query(&self) -> (&str, &str) {
        match self.path.split_once('?') {
            Some((path, query)) => (path, query),
            None => (self.path.as_str(), ""),
        }
    }
}

/// A call made ready for [`Invoker::enqueue_ready`](crate::Invoker::enqueue_ready) ahead of
/// its time: encoded for the queue when the invoker can do that early (the scheduler makes a
/// burst of fires ready before their instant, so that handing them over costs little).
#[derive(Debug)]
pub struct ReadyCall(pub(crate) Ready);

#[derive(Debug)]
pub(crate) enum Ready {
    /// Nothing done ahead.
    Call(Call),
    /// The queue message and its ledger row, built ahead.
    Encoded {
        call_id: String,
        payload: Bytes,
        row: Option<LedgerRow>,
        /// The `courier.enqueue` span, begun (only with spans on); ended once stored.
        span: Option<Box<courier_core::trace::SpanRecord>>,
    },
}

impl ReadyCall {
    /// A call with nothing done ahead (what [`Invoker::ready`](crate::Invoker::ready) makes
    /// unless the invoker does better).
    pub fn new(call: Call) -> Self {
        Self(Ready::Call(call))
    }

    /// The call itself when nothing was done ahead (`None` once encoded).
    pub fn into_call(self) -> Option<Call> {
        match self.0 {
            Ready::Call(call) => Some(call),
            Ready::Encoded { .. } => None,
        }
    }

    /// The call id, when known ahead.
    pub fn call_id(&self) -> Option<&str> {
        match &self.0 {
            Ready::Call(call) => call.call_id.as_deref(),
            Ready::Encoded { call_id, .. } => Some(call_id),
        }
    }
}

/// What a function answered: status, headers and the whole body (bounded).
#[derive(Debug, Clone)]
pub struct Answer {
    /// The HTTP status (the gateway's own when the function could not be reached: 404, 502,
    /// 503, 504).
    pub status: u16,
    /// The response headers.
    pub headers: HeaderMap,
    /// The response body.
    pub body: Bytes,
}

/// Where a queued call sits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// The call id (also the dedup key).
    pub call_id: String,
    /// Whether a call with this id was stored within the dedup window already (nothing new
    /// was stored).
    pub duplicate: bool,
    /// The message's sequence in the queue; `None` when the queue cannot tell which message a
    /// duplicate duplicated.
    pub seq: Option<u64>,
}
