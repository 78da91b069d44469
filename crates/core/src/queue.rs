//! The OpenFaaS `QueueRequest`: how an asynchronous call is stored in the queue. Courier uses
//! OpenFaaS's exact JSON (capitalised Go field names, base64 `Body`, `CallbackUrl` as a
//! serialised Go `url.URL`), so a Courier gateway and an OpenFaaS queue worker (or the other
//! way round) can share a NATS subject.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A queued call, as OpenFaaS's `types.QueueRequest` marshals it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueRequest {
    /// Request headers, Go canonical names (`X-Call-Id`) to all their values.
    #[serde(rename = "Header", default)]
    pub header: BTreeMap<String, Vec<String>>,
    /// The request's Host.
    #[serde(rename = "Host", default)]
    pub host: String,
    /// The request body (base64 in JSON; omitted when empty).
    #[serde(
        rename = "Body",
        default,
        skip_serializing_if = "Vec::is_empty",
        serialize_with = "base64_encode",
        deserialize_with = "base64_decode"
    )]
    pub body: Vec<u8>,
    /// The request method.
    #[serde(rename = "Method", default)]
    pub method: String,
    /// The path after the function name (`/sub/path`; empty when none).
    #[serde(rename = "Path", default)]
    pub path: String,
    /// The raw query, without `?`.
    #[serde(rename = "QueryString", default)]
    pub query_string: String,
    /// `NAME` or `NAME.NAMESPACE`, as in the URL.
    #[serde(rename = "Function", default)]
    pub function: String,
    /// The queue (OpenFaaS Pro's `com.openfaas.queue`); empty for the default queue.
    #[serde(rename = "QueueName", default)]
    pub queue_name: String,
    /// Unused by OpenFaaS CE; kept for compatibility.
    #[serde(
        rename = "Annotations",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub annotations: Option<BTreeMap<String, String>>,
    /// The callback URL, when the caller sent `X-Callback-Url`.
    #[serde(
        rename = "CallbackUrl",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub callback_url: Option<GoUrl>,
}

impl QueueRequest {
    /// The request as OpenFaaS's JSON: byte for byte what `serde_json::to_vec` writes, with
    /// the body's base64 written straight into the output. (Through serde it is written a
    /// byte at a time, each checked for escaping, which base64 never needs: about a tenth of
    /// the gateway's instructions per accept with a 1 KiB body, BENCHMARKS.md, issue 11.)
    pub fn to_json(&self) -> Vec<u8> {
        fn field<T: Serialize + ?Sized>(out: &mut Vec<u8>, name: &str, value: &T) {
            out.extend_from_slice(name.as_bytes());
            serde_json::to_writer(&mut *out, value).expect("a queued call always serializes");
        }
        let body = base64_simd::STANDARD.encoded_length(self.body.len());
        let mut out = Vec::with_capacity(512 + body);
        field(&mut out, "{\"Header\":", &self.header);
        field(&mut out, ",\"Host\":", &self.host);
        if !self.body.is_empty() {
            out.extend_from_slice(b",\"Body\":\"");
            base64_simd::STANDARD.encode_append(&self.body, &mut out);
            out.push(b'"');
        }
        field(&mut out, ",\"Method\":", &self.method);
        field(&mut out, ",\"Path\":", &self.path);
        field(&mut out, ",\"QueryString\":", &self.query_string);
        field(&mut out, ",\"Function\":", &self.function);
        field(&mut out, ",\"QueueName\":", &self.queue_name);
        if let Some(annotations) = &self.annotations {
            field(&mut out, ",\"Annotations\":", annotations);
        }
        if let Some(callback_url) = &self.callback_url {
            field(&mut out, ",\"CallbackUrl\":", callback_url);
        }
        out.push(b'}');
        out
    }
}

// The body's base64 is the one part of a queued call that grows with its size: it is encoded
// on every accept and decoded on every attempt. base64-simd does either at a fraction of the
// instructions of a scalar codec (issue 11: the scalar decode was ~4 % of the worker's
// instructions per call with a 1 KiB body, BENCHMARKS.md).

fn base64_encode<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&base64_simd::STANDARD.encode_to_string(bytes))
}

/// Decodes the body's base64 (or `null`, an empty body) straight from the input when the
/// deserializer can lend it (a JSON string without escapes), without copying it first.
fn base64_decode<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Body;

    impl<'de> serde::de::Visitor<'de> for Body {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a base64 string or null")
        }

        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            base64_simd::STANDARD
                .decode_to_vec(text)
                .map_err(|_| E::custom(format!("invalid base64 body ({} bytes)", text.len())))
        }

        fn visit_none<E: serde::de::Error>(self) -> Result<Vec<u8>, E> {
            Ok(Vec::new())
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Vec<u8>, E> {
            Ok(Vec::new())
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Vec<u8>, D2::Error> {
            d.deserialize_str(self)
        }
    }

    d.deserialize_option(Body)
}

/// A callback URL that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid X-Callback-Url {url:?}: {reason}")]
pub struct CallbackUrlError {
    /// The refused text.
    pub url: String,
    /// Why.
    pub reason: &'static str,
}

/// Go's `url.URL` as `encoding/json` writes it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct GoUrl {
    /// `http` or `https`.
    #[serde(default)]
    pub scheme: String,
    /// Always empty for the URLs Courier accepts.
    #[serde(default)]
    pub opaque: String,
    /// User info; always `null` (credentials are kept in `Host`-less form only by Go).
    #[serde(default)]
    pub user: Option<serde_json::Value>,
    /// `host[:port]`.
    #[serde(default)]
    pub host: String,
    /// The path, e.g. `/cb`.
    #[serde(default)]
    pub path: String,
    /// Go's encoded path hint; empty.
    #[serde(default)]
    pub raw_path: String,
    /// Go 1.19+ field; false.
    #[serde(default)]
    pub omit_host: bool,
    /// A trailing `?` with no query.
    #[serde(default)]
    pub force_query: bool,
    /// The query without `?`.
    #[serde(default)]
    pub raw_query: String,
    /// The fragment without `#`.
    #[serde(default)]
    pub fragment: String,
    /// Go's encoded fragment hint; empty.
    #[serde(default)]
    pub raw_fragment: String,
}

impl GoUrl {
    /// Parses an absolute `http(s)://host[:port][/path][?query][#fragment]` URL. User info is
    /// refused (it would travel in clear text through the queue).
    pub fn parse(url: &str) -> Result<Self, CallbackUrlError> {
        let err = |reason| CallbackUrlError {
            url: url.to_owned(),
            reason,
        };
        let trimmed = url.trim();
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(err("it contains spaces or control characters"));
        }
        let (scheme, rest) = trimmed
            .split_once("://")
            .ok_or_else(|| err("it must be an absolute http:// or https:// URL"))?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(err("only http and https callbacks are supported"));
        }
        let (rest, fragment) = rest.split_once('#').unwrap_or((rest, ""));
        let (rest, raw_query, force_query) = match rest.split_once('?') {
            Some((r, q)) => (r, q, q.is_empty()),
            None => (rest, "", false),
        };
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(err("it has no host"));
        }
        if host.contains('@') {
            return Err(err("user info is not allowed"));
        }
        if host.parse::<http::uri::Authority>().is_err() {
            return Err(err("the host is not valid"));
        }
        Ok(Self {
            scheme,
            host: host.to_owned(),
            path: path.to_owned(),
            raw_query: raw_query.to_owned(),
            force_query,
            fragment: fragment.to_owned(),
            ..Self::default()
        })
    }

    /// The URL as text (what Go's `URL.String()` gives for these fields).
    pub fn to_url_string(&self) -> String {
        let mut out = format!("{}://{}{}", self.scheme, self.host, self.path);
        if !self.raw_query.is_empty() || self.force_query {
            out.push('?');
            out.push_str(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            out.push('#');
            out.push_str(&self.fragment);
        }
        out
    }
}

/// The headers a queued call keeps, under Go's canonical names: everything but hop-by-hop
/// headers, `Host` and `Content-Length` (values that are not visible ASCII are dropped).
pub fn stored_headers(headers: &http::HeaderMap) -> BTreeMap<String, Vec<String>> {
    let mut stored = BTreeMap::<String, Vec<String>>::new();
    for (name, value) in headers {
        if crate::headers::HOP_BY_HOP.contains(name)
            || name == http::header::HOST
            || name == http::header::CONTENT_LENGTH
        {
            continue;
        }
        if let Ok(v) = value.to_str() {
            stored
                .entry(canonical_header_name(name.as_str()))
                .or_default()
                .push(v.to_owned());
        }
    }
    stored
}

/// `name` the way Go's `http.CanonicalHeaderKey` writes it (`x-call-id` → `X-Call-Id`).
pub fn canonical_header_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = true;
    for c in name.chars() {
        if upper {
            out.push(c.to_ascii_uppercase());
        } else {
            out.push(c.to_ascii_lowercase());
        }
        upper = c == '-';
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn example() -> QueueRequest {
        QueueRequest {
            header: [
                ("Content-Type".to_owned(), vec!["text/plain".to_owned()]),
                ("X-Call-Id".to_owned(), vec!["9b4c".to_owned()]),
            ]
            .into(),
            host: "127.0.0.1:8080".into(),
            body: b"hello".to_vec(),
            method: "POST".into(),
            path: "/sub/path".into(),
            query_string: "a=b".into(),
            function: "figlet.openfaas-fn".into(),
            callback_url: Some(GoUrl::parse("http://cb.example:8888/path?x=1").unwrap()),
            ..QueueRequest::default()
        }
    }

    #[test]
    fn queue_request_json_uses_openfaas_field_names() {
        let json = serde_json::to_value(example()).unwrap();
        assert_eq!(json["Body"], "aGVsbG8=");
        assert_eq!(json["Function"], "figlet.openfaas-fn");
        assert_eq!(json["QueryString"], "a=b");
        assert_eq!(json["Header"]["X-Call-Id"][0], "9b4c");
        assert_eq!(
            json["CallbackUrl"],
            serde_json::json!({"Scheme":"http","Opaque":"","User":null,"Host":"cb.example:8888",
                "Path":"/path","RawPath":"","OmitHost":false,"ForceQuery":false,"RawQuery":"x=1",
                "Fragment":"","RawFragment":""})
        );
    }

    #[test]
    fn queue_request_round_trips_and_reads_go_output() {
        let request = example();
        let bytes = serde_json::to_vec(&request).unwrap();
        assert_eq!(
            serde_json::from_slice::<QueueRequest>(&bytes).unwrap(),
            request
        );
        // As the Go gateway writes it: no Body when empty, extra fields ignored.
        let go = br#"{"Header":{"X-Call-Id":["1"]},"Host":"h","Method":"POST","Path":"",
            "QueryString":"","Function":"echo","QueueName":"","Annotations":null,
            "Labels":null,"Environment":null}"#;
        let parsed: QueueRequest = serde_json::from_slice(go).unwrap();
        assert!(parsed.body.is_empty());
        assert_eq!(parsed.function, "echo");
        assert!(parsed.callback_url.is_none());
    }

    #[test]
    fn to_json_writes_what_serde_writes() {
        let mut full = example();
        full.annotations = Some(BTreeMap::from([("a\"b".into(), "\u{7}ü".into())]));
        full.queue_name = "q".into();
        full.header.insert(
            "X-Odd".into(),
            vec!["tab\there".into(), "\"quoted\"".into()],
        );
        let long = QueueRequest {
            body: (0..=255u8).cycle().take(1025).collect(),
            ..example()
        };
        for request in [example(), full, long, QueueRequest::default()] {
            assert_eq!(
                String::from_utf8(request.to_json()).unwrap(),
                serde_json::to_string(&request).unwrap()
            );
        }
    }

    #[test]
    fn bodies_decode_from_null_escaped_or_long_base64_and_bad_base64_is_an_error() {
        let body = |json: &str| serde_json::from_str::<QueueRequest>(json).map(|r| r.body);
        assert_eq!(body(r#"{"Body":null}"#).unwrap(), b"");
        assert_eq!(body(r#"{"Body":""}"#).unwrap(), b"");
        // An escaped solidus cannot be lent from the input: decoded from serde's copy.
        assert_eq!(body(r#"{"Body":"Pz8\/"}"#).unwrap(), b"???");
        let long: Vec<u8> = (0..=255u8).cycle().take(4099).collect();
        let request = QueueRequest {
            body: long.clone(),
            ..QueueRequest::default()
        };
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(body(&json).unwrap(), long);
        for bad in [
            r#"{"Body":"aGVsbG8"}"#,
            r#"{"Body":"a*=="}"#,
            r#"{"Body":7}"#,
        ] {
            assert!(body(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn callback_urls_must_be_absolute_http() {
        for ok in [
            "http://cb:8888/x?y=1#f",
            "https://example.com",
            "http://127.0.0.1:9/",
        ] {
            let url = GoUrl::parse(ok).unwrap();
            assert_eq!(url.to_url_string(), ok);
        }
        for bad in [
            "",
            "cb:8888/x",
            "/relative",
            "ftp://x/",
            "http://",
            "http://a b/",
            "http://user:pw@host/",
            "http://ho\nst/",
        ] {
            assert!(GoUrl::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn header_names_take_go_canonical_form() {
        assert_eq!(canonical_header_name("x-call-id"), "X-Call-Id");
        assert_eq!(canonical_header_name("CONTENT-TYPE"), "Content-Type");
    }
}

/// A queued call given up on, as `/system/dead-letters` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterRecord {
    /// The call id.
    pub call_id: String,
    /// The function's name.
    pub function: String,
    /// Its namespace.
    pub namespace: String,
    /// Attempts made.
    pub attempts: u64,
    /// The last status the function (or gateway) answered; absent when it was unreachable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_status: Option<u16>,
    /// What went wrong last.
    pub error: String,
    /// When it was given up on, RFC 3339.
    pub failed_at: String,
    /// The queued request, for inspection and replay (absent in list answers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<QueueRequest>,
}
