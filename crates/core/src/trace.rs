//! W3C trace context (`traceparent`, `tracestate`): parsing what a caller sent, minting a
//! context for a call that came without one, and a new parent span id per hop.
//!
//! Pure: randomness comes from the caller (`TraceParent::new` takes the ids). Finished spans
//! leave through the [`SpanSink`] seam ([`Spans`] is a component's handle on one); what
//! exports them (OTLP) lives in `courier-telemetry`, never here.

use std::sync::Arc;

use http::{HeaderMap, HeaderName, HeaderValue};

/// `traceparent`.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// `tracestate`.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Most list members `tracestate` may have.
const MAX_TRACESTATE_MEMBERS: usize = 32;
/// Most bytes `tracestate` may have.
const MAX_TRACESTATE_BYTES: usize = 512;

/// A parsed `traceparent`: the trace, the caller's span, the flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    /// The trace id (never all zero).
    pub trace_id: [u8; 16],
    /// The parent span id (never all zero).
    pub parent_id: [u8; 8],
    /// Trace flags (bit 0: sampled).
    pub flags: u8,
}

impl TraceParent {
    /// A sampled context with these ids; an all-zero id is replaced by one with a 1 at the
    /// end (the caller's random source gave zeros: astronomically rare, never invalid).
    pub fn new(mut trace_id: [u8; 16], mut parent_id: [u8; 8]) -> Self {
        if trace_id == [0; 16] {
            trace_id[15] = 1;
        }
        if parent_id == [0; 8] {
            parent_id[7] = 1;
        }
        Self {
            trace_id,
            parent_id,
            flags: 1,
        }
    }

    /// Parses a `traceparent` value by the W3C rules: version `00` is exactly 55 lowercase
    /// hex characters and dashes; `ff` is invalid; a later version must start with the same
    /// 55 characters, followed by the end or a dash. All-zero ids are invalid.
    pub fn parse(value: &str) -> Option<Self> {
        let bytes = value.as_bytes();
        if bytes.len() < 55 {
            return None;
        }
        let version = hex_byte(&bytes[0..2])?;
        if version == 0xff || (version == 0 && bytes.len() != 55) {
            return None;
        }
        if bytes.len() > 55 && bytes[55] != b'-' {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let mut trace_id = [0u8; 16];
        for (i, byte) in trace_id.iter_mut().enumerate() {
            *byte = hex_byte(&bytes[3 + 2 * i..5 + 2 * i])?;
        }
        let mut parent_id = [0u8; 8];
        for (i, byte) in parent_id.iter_mut().enumerate() {
            *byte = hex_byte(&bytes[36 + 2 * i..38 + 2 * i])?;
        }
        let flags = hex_byte(&bytes[53..55])?;
        if trace_id == [0; 16] || parent_id == [0; 8] {
            return None;
        }
        Some(Self {
            trace_id,
            parent_id,
            flags,
        })
    }

    /// The same trace with `span_id` as the parent: what the next hop is sent.
    pub fn with_parent(&self, span_id: [u8; 8]) -> Self {
        Self {
            parent_id: Self::new(self.trace_id, span_id).parent_id,
            ..*self
        }
    }

    /// The trace id, 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        hex(&self.trace_id)
    }

    /// The parent id, 16 lowercase hex digits.
    pub fn parent_id_hex(&self) -> String {
        hex(&self.parent_id)
    }

    /// Whether the caller sampled the trace.
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The header value (always version `00`).
    pub fn header_value(&self) -> String {
        String::from_utf8(self.header_bytes().to_vec()).expect("hex digits and dashes")
    }

    /// [`TraceParent::header_value`] as bytes, built on the stack (it is set on every hop).
    fn header_bytes(&self) -> [u8; 55] {
        let mut out = *b"00-00000000000000000000000000000000-0000000000000000-00";
        write_hex(&self.trace_id, &mut out[3..35]);
        write_hex(&self.parent_id, &mut out[36..52]);
        write_hex(&[self.flags], &mut out[53..55]);
        out
    }

    /// [`TraceParent::header_value`] as a header's value.
    pub fn header(&self) -> HeaderValue {
        HeaderValue::from_bytes(&self.header_bytes()).expect("hex digits and dashes")
    }
}

/// A trace context: the parent and the vendor state that travels with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// `traceparent`.
    pub parent: TraceParent,
    /// `tracestate`, when the caller sent a valid one.
    pub state: Option<String>,
}

impl TraceContext {
    /// The context a request carries: exactly one valid `traceparent` (otherwise `None`, and
    /// the caller's `tracestate` is dropped with it), and its `tracestate` when valid.
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        fn text(value: &HeaderValue) -> Option<&str> {
            value.to_str().ok()
        }
        Self::from_values(
            headers.get_all(TRACEPARENT).iter().map(text),
            headers.get_all(TRACESTATE).iter().map(text),
        )
    }

    /// [`TraceContext::from_headers`] over the values of the `traceparent` and `tracestate`
    /// headers as text (`None`: a value that is not visible ASCII).
    pub fn from_values<'a>(
        parents: impl IntoIterator<Item = Option<&'a str>>,
        states: impl IntoIterator<Item = Option<&'a str>>,
    ) -> Option<Self> {
        let mut parents = parents.into_iter();
        let parent = parents.next()?;
        if parents.next().is_some() {
            return None;
        }
        let parent = TraceParent::parse(parent?)?;
        Some(Self {
            parent,
            state: tracestate(states),
        })
    }

    /// A fresh, sampled context.
    pub fn mint(trace_id: [u8; 16], span_id: [u8; 8]) -> Self {
        Self {
            parent: TraceParent::new(trace_id, span_id),
            state: None,
        }
    }

    /// The same trace, with `span_id` as the parent.
    pub fn with_parent(&self, span_id: [u8; 8]) -> Self {
        Self {
            parent: self.parent.with_parent(span_id),
            state: self.state.clone(),
        }
    }

    /// Sets `traceparent` (and `tracestate`, or removes a stale one) on `headers`.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(TRACEPARENT, self.parent.header());
        match self
            .state
            .as_deref()
            .and_then(|s| HeaderValue::from_str(s).ok())
        {
            Some(value) => {
                headers.insert(TRACESTATE, value);
            }
            None => {
                headers.remove(TRACESTATE);
            }
        }
    }
}

/// What a span is to its trace (OTLP's `SpanKind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// The gateway accepting a call.
    Server,
    /// An outgoing call: an attempt of the function, a callback.
    Client,
    /// A message put in the queue (a trigger's call).
    Producer,
    /// Work inside Courier (dead-lettering).
    Internal,
}

/// An attribute value of a span.
#[derive(Debug, Clone, PartialEq)]
pub enum SpanValue {
    /// Text.
    Text(String),
    /// A whole number.
    Int(i64),
}

/// One finished span, as Courier reports it to a [`SpanSink`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpanRecord {
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// The span it belongs under (the caller's, or Courier's accept span).
    pub parent_id: Option<[u8; 8]>,
    /// `courier.accept`, `courier.enqueue`, `courier.attempt`, `courier.callback`,
    /// `courier.dead_letter`.
    pub name: &'static str,
    /// What it is to the trace.
    pub kind: SpanKind,
    /// When it started.
    pub start: std::time::SystemTime,
    /// When it ended.
    pub end: std::time::SystemTime,
    /// Attributes (`faas.invoked_name`, `courier.call_id`, `http.response.status_code`, ...).
    pub attributes: Vec<(&'static str, SpanValue)>,
    /// What went wrong, when the span failed.
    pub error: Option<String>,
}

/// Where finished spans go (an OTLP exporter). `record` must not block: an exporter queues and
/// sends in the background, and drops spans rather than slow a call down.
pub trait SpanSink: Send + Sync + 'static {
    /// Takes one finished span.
    fn record(&self, span: SpanRecord);
}

/// The span id and parent of the span that takes a call in (the gateway's `courier.accept`,
/// a trigger's `courier.enqueue`): under the sender's span when `context` came with the call
/// (`sent`), with `fresh` as its id; otherwise the root of the trace, with the minted
/// context's own span id, so every later hop (whose parent is that id) hangs under it.
pub fn entry_span_ids(
    context: &TraceContext,
    sent: bool,
    fresh: [u8; 8],
) -> ([u8; 8], Option<[u8; 8]>) {
    if sent {
        (fresh, Some(context.parent.parent_id))
    } else {
        (context.parent.parent_id, None)
    }
}

/// A component's handle on where its spans go: cheap to clone. A component without one
/// (no `--otlp-endpoint`) builds no span at all.
#[derive(Clone)]
pub struct Spans(Arc<dyn SpanSink>);

impl Spans {
    /// Spans recorded into `sink`.
    pub fn new(sink: Arc<dyn SpanSink>) -> Self {
        Self(sink)
    }

    /// Hands one finished span to the sink (never blocks).
    pub fn record(&self, span: SpanRecord) {
        self.0.record(span);
    }
}

impl std::fmt::Debug for Spans {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Spans")
    }
}

/// Every `tracestate` value joined, when the whole is valid: at most 32 members and 512
/// bytes, each member `key=value` with a W3C key and a printable value.
fn tracestate<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> Option<String> {
    let mut joined = String::new();
    for value in values {
        let value = value?;
        if !joined.is_empty() {
            joined.push(',');
        }
        joined.push_str(value);
    }
    if joined.is_empty() || joined.len() > MAX_TRACESTATE_BYTES {
        return None;
    }
    let members: Vec<&str> = joined
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .collect();
    if members.is_empty() || members.len() > MAX_TRACESTATE_MEMBERS {
        return None;
    }
    for member in &members {
        let (key, value) = member.split_once('=')?;
        if !valid_key(key) || !valid_value(value) {
            return None;
        }
    }
    Some(members.join(","))
}

fn valid_key(key: &str) -> bool {
    let simple = |k: &str, max: usize| {
        !k.is_empty()
            && k.len() <= max
            && k.bytes()
                .next()
                .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && k.bytes().all(|b| {
                b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || matches!(b, b'_' | b'-' | b'*' | b'/')
            })
    };
    match key.split_once('@') {
        None => simple(key, 256),
        Some((tenant, system)) => simple(tenant, 241) && simple(system, 14),
    }
}

fn valid_value(value: &str) -> bool {
    !value.is_empty()
        && value.len() <= 256
        && value
            .bytes()
            .all(|b| (0x20..=0x7e).contains(&b) && b != b',' && b != b'=')
        && !value.ends_with(' ')
}

fn hex_byte(pair: &[u8]) -> Option<u8> {
    let digit = |b: u8| match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    };
    Some(digit(pair[0])? << 4 | digit(pair[1])?)
}

fn hex(bytes: &[u8]) -> String {
    let mut out = vec![0; bytes.len() * 2];
    write_hex(bytes, &mut out);
    String::from_utf8(out).expect("hex digits")
}

/// Writes `bytes` as lowercase hex into `out` (twice as long).
fn write_hex(bytes: &[u8], out: &mut [u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (b, pair) in bytes.iter().zip(out.chunks_exact_mut(2)) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_round_trips() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(parent.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(parent.parent_id_hex(), "00f067aa0ba902b7");
        assert!(parent.sampled());
        assert_eq!(parent.header_value(), VALID);
        assert_eq!(parent.header(), VALID);
        let unsampled = TraceParent {
            flags: 0xf0,
            ..parent
        };
        assert!(unsampled.header_value().ends_with("-f0"));
    }

    #[test]
    fn invalid_traceparents_are_refused() {
        for bad in [
            "",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x",
        ] {
            assert_eq!(TraceParent::parse(bad), None, "{bad:?}");
        }
        // A later version may carry more after a dash.
        assert!(
            TraceParent::parse("cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what")
                .is_some()
        );
    }

    #[test]
    fn a_new_parent_keeps_the_trace_and_flags() {
        let parent = TraceParent::parse(VALID).unwrap();
        let next = parent.with_parent([7; 8]);
        assert_eq!(next.trace_id, parent.trace_id);
        assert_eq!(next.flags, parent.flags);
        assert_eq!(next.parent_id_hex(), "0707070707070707");
        assert_eq!(
            parent.with_parent([0; 8]).parent_id,
            [0, 0, 0, 0, 0, 0, 0, 1]
        );
    }

    #[test]
    fn a_context_needs_exactly_one_valid_traceparent_and_keeps_a_valid_tracestate() {
        let mut headers = HeaderMap::new();
        assert_eq!(TraceContext::from_headers(&headers), None);
        headers.insert(TRACEPARENT, VALID.parse().unwrap());
        headers.append(TRACESTATE, "rojo=00f067aa0ba902b7".parse().unwrap());
        headers.append(TRACESTATE, "congo=t61rcWkgMzE".parse().unwrap());
        let context = TraceContext::from_headers(&headers).unwrap();
        assert_eq!(
            context.state.as_deref(),
            Some("rojo=00f067aa0ba902b7,congo=t61rcWkgMzE")
        );

        headers.insert(TRACESTATE, "not a member".parse().unwrap());
        assert_eq!(TraceContext::from_headers(&headers).unwrap().state, None);
        let many: Vec<String> = (0..33).map(|i| format!("k{i}=v")).collect();
        headers.insert(TRACESTATE, many.join(",").parse().unwrap());
        assert_eq!(TraceContext::from_headers(&headers).unwrap().state, None);

        headers.append(TRACEPARENT, VALID.parse().unwrap());
        assert_eq!(
            TraceContext::from_headers(&headers),
            None,
            "two traceparents"
        );
    }

    #[test]
    fn applying_a_context_sets_both_headers_and_drops_a_stale_state() {
        let mut headers = HeaderMap::new();
        headers.insert(TRACESTATE, "old=1".parse().unwrap());
        let minted = TraceContext::mint([1; 16], [2; 8]);
        minted.apply(&mut headers);
        assert_eq!(
            headers[TRACEPARENT],
            "00-01010101010101010101010101010101-0202020202020202-01"
        );
        assert!(!headers.contains_key(TRACESTATE));
        let with_state = TraceContext {
            state: Some("a=b".into()),
            ..minted
        };
        with_state.apply(&mut headers);
        assert_eq!(headers[TRACESTATE], "a=b");
    }
}
