//! Header rules on the invocation path: hop-by-hop headers, and the CGI-style environment
//! names (`Http_X_Call_Id`) that fork-mode functions see.

use http::HeaderMap;
use http::header::{self, HeaderName};

/// The call id header: kept when the caller sent one, minted otherwise.
pub const X_CALL_ID: HeaderName = HeaderName::from_static("x-call-id");
/// Gateway receipt time in Unix nanoseconds.
pub const X_START_TIME: HeaderName = HeaderName::from_static("x-start-time");

/// Where the result of a queued call is posted.
pub const X_CALLBACK_URL: HeaderName = HeaderName::from_static("x-callback-url");
/// Duration of a function run in seconds.
pub const X_DURATION_SECONDS: HeaderName = HeaderName::from_static("x-duration-seconds");
/// Original Host of a forwarded request.
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
/// Client address of a forwarded request.
pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// Hop-by-hop headers (RFC 9110 §7.6.1 plus the legacy proxy ones) that a proxy must not forward.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers, including any named in `Connection`. One pass over the names
/// decides whether there is anything to remove (usually not: the invocation hot path pays a
/// scan of a few names, not nine hash lookups).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
}

/// The environment variable a header becomes for a fork-mode function: `Http_` plus the header
/// in Go's canonical form with `-` replaced by `_` (`x-call-id` → `Http_X_Call_Id`).
pub fn cgi_env_name(header: &str) -> String {
    let mut out = String::with_capacity(header.len() + 5);
    out.push_str("Http_");
    let mut upper = true;
    for c in header.chars() {
        if c == '-' {
            out.push('_');
            upper = true;
        } else if upper {
            out.push(c.to_ascii_uppercase());
            upper = false;
        } else {
            out.push(c.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-call-id", HeaderValue::from_static("abc"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left.len(), 2, "{left:?}");
        assert!(h.contains_key("x-call-id") && h.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn any_single_hop_by_hop_header_is_stripped_and_others_are_left_alone() {
        for hop in &HOP_BY_HOP {
            let mut h = HeaderMap::new();
            h.insert(hop.clone(), HeaderValue::from_static("x"));
            h.insert(header::HOST, HeaderValue::from_static("example"));
            strip_hop_by_hop(&mut h);
            assert!(!h.contains_key(hop), "{hop} was kept");
            assert!(h.contains_key(header::HOST), "host went with {hop}");
        }
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("example"));
        h.append("x-many", HeaderValue::from_static("1"));
        h.append("x-many", HeaderValue::from_static("2"));
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    #[test]
    fn cgi_names_use_go_canonical_case() {
        assert_eq!(cgi_env_name("x-call-id"), "Http_X_Call_Id");
        assert_eq!(cgi_env_name("CONTENT-TYPE"), "Http_Content_Type");
        assert_eq!(cgi_env_name("accept"), "Http_Accept");
    }
}
