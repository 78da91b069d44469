//! Kafka message → HTTP headers of the calls, as OpenFaaS Pro's kafka-connector does:
//! `X-Kafka-Key`, `X-Kafka-Partition`, `X-Kafka-Offset`, and one `X-Kafka-<Name>` per Kafka
//! header. Values that are not printable text travel base64-encoded, flagged by
//! `X-Kafka-Key-Enc: b64` (the key) or `X-Kafka-<Name>-Enc: b64` (a header). A Kafka header
//! named `content-type` also becomes the call's `Content-Type`, and W3C `traceparent` and
//! `tracestate` headers also pass on as themselves. Pure.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use courier_core::trace::{TRACEPARENT, TRACESTATE};
use http::{HeaderMap, HeaderName, HeaderValue, header};

/// The `X-Connector` value of this connector.
pub const CONNECTOR: &str = "courier-connector-kafka";

/// `X-Kafka-Key`.
pub static X_KAFKA_KEY: HeaderName = HeaderName::from_static("x-kafka-key");
/// `X-Kafka-Key-Enc`.
pub static X_KAFKA_KEY_ENC: HeaderName = HeaderName::from_static("x-kafka-key-enc");
/// `X-Kafka-Partition`.
pub static X_KAFKA_PARTITION: HeaderName = HeaderName::from_static("x-kafka-partition");
/// `X-Kafka-Offset`.
pub static X_KAFKA_OFFSET: HeaderName = HeaderName::from_static("x-kafka-offset");

/// Kafka header names that would collide with the headers above; such headers are skipped.
const RESERVED: [&str; 4] = ["key", "key-enc", "partition", "offset"];

/// What the headers are made from.
#[derive(Debug, Clone, Copy)]
pub struct Coordinates<'a> {
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key, if any.
    pub key: Option<&'a [u8]>,
}

/// The headers of the calls made for one message; `kafka_headers` are the message's own
/// (name, value) pairs, in order (a name may repeat).
pub fn call_headers<'a>(
    at: Coordinates<'_>,
    kafka_headers: impl IntoIterator<Item = (&'a str, Option<&'a [u8]>)>,
) -> HeaderMap {
    let mut headers = HeaderMap::new();
    if let Some(key) = at.key {
        match text_value(key) {
            Some(v) => {
                headers.insert(X_KAFKA_KEY.clone(), v);
            }
            None => {
                headers.insert(X_KAFKA_KEY.clone(), base64_value(key));
                headers.insert(X_KAFKA_KEY_ENC.clone(), HeaderValue::from_static("b64"));
            }
        }
    }
    headers.insert(X_KAFKA_PARTITION.clone(), HeaderValue::from(at.partition));
    headers.insert(X_KAFKA_OFFSET.clone(), HeaderValue::from(at.offset));
    for (name, value) in kafka_headers {
        let lower = name.to_ascii_lowercase();
        if RESERVED.contains(&lower.as_str()) {
            tracing::debug!(header = %name, "Kafka header skipped: its name is reserved.");
            continue;
        }
        let (Ok(http_name), Ok(enc_name)) = (
            HeaderName::from_bytes(format!("x-kafka-{lower}").as_bytes()),
            HeaderName::from_bytes(format!("x-kafka-{lower}-enc").as_bytes()),
        ) else {
            tracing::debug!(header = %name, "Kafka header skipped: not a valid HTTP header name.");
            continue;
        };
        let bytes = value.unwrap_or_default();
        match text_value(bytes) {
            Some(v) => {
                if lower == "content-type" && !headers.contains_key(header::CONTENT_TYPE) {
                    headers.insert(header::CONTENT_TYPE, v.clone());
                }
                // W3C trace context passes on as itself too (checked where the call is
                // queued or made; a malformed one is replaced there).
                for trace_header in [TRACEPARENT, TRACESTATE] {
                    if lower == trace_header.as_str() && !headers.contains_key(&trace_header) {
                        headers.insert(trace_header, v.clone());
                    }
                }
                headers.append(http_name, v);
            }
            None => {
                headers.append(http_name, base64_value(bytes));
                headers.insert(enc_name, HeaderValue::from_static("b64"));
            }
        }
    }
    headers
}

/// `bytes` as a header value when it is printable UTF-8 text (tabs allowed), else `None`.
fn text_value(bytes: &[u8]) -> Option<HeaderValue> {
    let text = std::str::from_utf8(bytes).ok()?;
    if text.chars().any(|c| c.is_control() && c != '\t') {
        return None;
    }
    HeaderValue::from_str(text).ok()
}

fn base64_value(bytes: &[u8]) -> HeaderValue {
    // Base64 is always a valid header value.
    HeaderValue::from_str(&BASE64.encode(bytes)).unwrap_or_else(|_| HeaderValue::from_static(""))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(key: Option<&[u8]>) -> Coordinates<'_> {
        Coordinates {
            partition: 3,
            offset: 42,
            key,
        }
    }

    #[test]
    fn coordinates_and_a_text_key_become_headers() {
        let h = call_headers(at(Some(b"order-7")), []);
        assert_eq!(h["x-kafka-key"], "order-7");
        assert_eq!(h["x-kafka-partition"], "3");
        assert_eq!(h["x-kafka-offset"], "42");
        assert!(!h.contains_key("x-kafka-key-enc"));
    }

    #[test]
    fn a_trace_context_passes_on_as_itself_and_as_an_x_kafka_header() {
        let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let h = call_headers(
            at(None),
            [
                ("traceparent", Some(parent.as_bytes())),
                ("TraceState", Some(&b"rojo=1"[..])),
            ],
        );
        assert_eq!(h["traceparent"], parent);
        assert_eq!(h["tracestate"], "rojo=1");
        assert_eq!(h["x-kafka-traceparent"], parent);
    }

    #[test]
    fn no_key_means_no_key_header() {
        let h = call_headers(at(None), []);
        assert!(!h.contains_key("x-kafka-key"));
    }

    #[test]
    fn a_binary_key_travels_as_base64() {
        let h = call_headers(at(Some(&[0, 159, 146, 150])), []);
        assert_eq!(h["x-kafka-key"], "AJ+Slg==");
        assert_eq!(h["x-kafka-key-enc"], "b64");
    }

    #[test]
    fn each_kafka_header_becomes_an_x_kafka_header() {
        let h = call_headers(
            at(None),
            [
                ("Trace-Id", Some(&b"abc"[..])),
                ("multi", Some(&b"1"[..])),
                ("multi", Some(&b"2"[..])),
                ("empty", None),
                ("bin", Some(&b"\x01\x02"[..])),
                ("bad name", Some(&b"x"[..])),
                ("Offset", Some(&b"999"[..])),
                ("content-type", Some(&b"application/json"[..])),
            ],
        );
        assert_eq!(h["x-kafka-trace-id"], "abc");
        let multi: Vec<_> = h.get_all("x-kafka-multi").iter().collect();
        assert_eq!(multi, ["1", "2"]);
        assert_eq!(h["x-kafka-empty"], "");
        assert_eq!(h["x-kafka-bin"], "AQI=");
        assert_eq!(h["x-kafka-bin-enc"], "b64");
        assert!(!h.keys().any(|k| k.as_str().contains("bad")));
        assert_eq!(
            h["x-kafka-offset"], "42",
            "a Kafka header cannot fake the offset"
        );
        assert_eq!(h["content-type"], "application/json");
        assert_eq!(h["x-kafka-content-type"], "application/json");
    }
}
