//! The trace context of a queued call: the one the gateway stored with it (`Traceparent`,
//! `Tracestate` in the queued request's headers), or one minted for a call stored without
//! (an OpenFaaS gateway wrote it), and a fresh parent span id for every hop the worker makes
//! (each attempt, each callback post).
//!
//! Pure but for [`next_hop`], which draws the span id from the OS.

use courier_core::queue::QueueRequest;
use courier_core::trace::{TRACEPARENT, TRACESTATE, TraceContext};

/// The Go-canonical names the gateway stores the context under.
const STORED_TRACEPARENT: &str = "Traceparent";
const STORED_TRACESTATE: &str = "Tracestate";

/// Whether `name` (any case) is one of the trace context headers, which the worker sets per
/// hop instead of forwarding the stored ones.
pub(crate) fn is_trace_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(TRACEPARENT.as_str())
        || name.eq_ignore_ascii_case(TRACESTATE.as_str())
}

/// The context `request` was stored with, when it carries exactly one valid `traceparent`.
/// Read from the stored values as they are, as a header map of them would read them (a value
/// no header could carry is left out): no map is built per call.
pub(crate) fn stored(request: &QueueRequest) -> Option<TraceContext> {
    let (parent, state) = (TRACEPARENT, TRACESTATE);
    TraceContext::from_values(
        stored_values(request, parent.as_str()),
        stored_values(request, state.as_str()),
    )
}

/// The values `request` stores under `name` (any case), as text (`None`: not visible ASCII).
fn stored_values<'a>(
    request: &'a QueueRequest,
    name: &'a str,
) -> impl Iterator<Item = Option<&'a str>> + 'a {
    request
        .header
        .iter()
        .filter(move |(stored, _)| stored.eq_ignore_ascii_case(name))
        .flat_map(|(_, values)| values)
        .filter(|value| header_safe(value))
        .map(|value| value.is_ascii().then_some(value.as_str()))
}

/// Whether `value` could be a header's value (what `HeaderValue::from_str` accepts: no
/// control character but tab).
fn header_safe(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b >= 0x20 && b != 0x7f))
}

/// The context of call `id` stored as `request`. A request without a valid one gets one
/// minted and written into it (so the ledger record, a dead letter and its replay carry the
/// same trace). The minted trace id comes from the call id (its bytes when it is a UUID, a
/// 128-bit FNV-1a hash otherwise), so every attempt of the call, each a delivery of the same
/// unchanged message, joins one trace.
pub(crate) fn ensure(request: &mut QueueRequest, id: &str) -> TraceContext {
    if let Some(context) = stored(request) {
        return context;
    }
    let trace_id = uuid_bytes(id).unwrap_or_else(|| fnv1a_128(id.as_bytes()));
    let span_id: [u8; 8] = fnv1a_128(trace_id.as_slice())[..8]
        .try_into()
        .expect("8 bytes");
    let context = TraceContext::mint(trace_id, span_id);
    request.header.retain(|name, _| !is_trace_header(name));
    request.header.insert(
        STORED_TRACEPARENT.to_owned(),
        vec![context.parent.header_value()],
    );
    if let Some(state) = &context.state {
        request
            .header
            .insert(STORED_TRACESTATE.to_owned(), vec![state.clone()]);
    }
    context
}

/// The context for the next hop: the same trace and state, a fresh random parent span id.
pub(crate) fn next_hop(context: &TraceContext) -> TraceContext {
    let mut span = [0u8; 8];
    if getrandom::fill(&mut span).is_err() {
        // No randomness: a span id from the clock is unique enough for a parent id.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        span = (nanos as u64).to_be_bytes();
    }
    context.with_parent(span)
}

/// The 16 bytes of a UUID written as 32 hex digits, dashes allowed.
fn uuid_bytes(id: &str) -> Option<[u8; 16]> {
    if id.len() != 32 && id.len() != 36 {
        return None;
    }
    let digits: Vec<u8> = id.bytes().filter(|b| *b != b'-').collect();
    if digits.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, pair) in digits.chunks(2).enumerate() {
        let text = std::str::from_utf8(pair).ok()?;
        out[i] = u8::from_str_radix(text, 16).ok()?;
    }
    Some(out)
}

/// 128-bit FNV-1a: stable across builds and processes (unlike `DefaultHasher`), so every
/// worker on one queue mints the same id for the same call.
fn fnv1a_128(bytes: &[u8]) -> [u8; 16] {
    const OFFSET: u128 = 0x6c62_272e_07bb_0142_62b8_2175_6295_c58d;
    const PRIME: u128 = 0x0000_0000_0100_0000_0000_0000_0000_013b;
    let mut hash = OFFSET;
    for byte in bytes {
        hash ^= u128::from(*byte);
        hash = hash.wrapping_mul(PRIME);
    }
    hash.to_be_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn request_with(headers: &[(&str, &str)]) -> QueueRequest {
        let mut request = QueueRequest::default();
        for (name, value) in headers {
            request
                .header
                .entry((*name).to_owned())
                .or_default()
                .push((*value).to_owned());
        }
        request
    }

    #[test]
    fn the_stored_context_is_read_in_any_case_with_its_state() {
        let request = request_with(&[("Traceparent", SENT), ("tracestate", "rojo=1")]);
        let context = stored(&request).unwrap();
        assert_eq!(context.parent.header_value(), SENT);
        assert_eq!(context.state.as_deref(), Some("rojo=1"));
    }

    #[test]
    fn a_stored_context_is_kept_as_it_is() {
        let mut request = request_with(&[("Traceparent", SENT)]);
        let before = request.clone();
        let context = ensure(&mut request, "call-1");
        assert_eq!(context.parent.header_value(), SENT);
        assert_eq!(request, before);
    }

    #[test]
    fn a_call_without_a_valid_context_gets_one_minted_from_its_id_and_stored() {
        let mut request = request_with(&[("traceparent", "00-bad-01"), ("Tracestate", "a=b")]);
        let first = ensure(&mut request, "call-1");
        assert_eq!(
            request.header["Traceparent"],
            vec![first.parent.header_value()]
        );
        assert!(!request.header.contains_key("traceparent"));
        assert!(!request.header.contains_key("Tracestate"));
        assert_eq!(stored(&request), Some(first.clone()));

        let mut again = request_with(&[]);
        assert_eq!(
            ensure(&mut again, "call-1").parent.trace_id,
            first.parent.trace_id,
            "every attempt of one call joins the same trace"
        );
        let mut other = request_with(&[]);
        assert_ne!(
            ensure(&mut other, "call-2").parent.trace_id,
            first.parent.trace_id
        );
    }

    #[test]
    fn a_uuid_call_id_is_the_minted_trace_id() {
        let mut request = request_with(&[]);
        let context = ensure(&mut request, "4bf92f35-77b3-4da6-a3ce-929d0e0e4736");
        assert_eq!(
            context.parent.trace_id_hex(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
    }

    #[test]
    fn each_hop_keeps_the_trace_and_state_and_gets_a_new_parent() {
        let request = request_with(&[("Traceparent", SENT), ("Tracestate", "rojo=1")]);
        let stored = stored(&request).unwrap();
        let one = next_hop(&stored);
        let two = next_hop(&stored);
        assert_eq!(one.parent.trace_id, stored.parent.trace_id);
        assert_eq!(one.parent.flags, stored.parent.flags);
        assert_eq!(one.state, stored.state);
        assert_ne!(one.parent.parent_id, stored.parent.parent_id);
        assert_ne!(one.parent.parent_id, two.parent.parent_id);
    }
}
