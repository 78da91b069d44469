//! Where spans are posted: the OTLP/HTTP traces URL, from an endpoint as an operator gives it.

use http::Uri;
use http::uri::Scheme;

/// The path OTLP/HTTP takes traces on.
pub(crate) const TRACES_PATH: &str = "/v1/traces";

/// The traces URL for `endpoint`, read the way `OTEL_EXPORTER_OTLP_ENDPOINT` is: a base URL
/// (`http://collector:4318`, `http://gw/otel/`) gets `/v1/traces` appended to its path; a URL
/// whose path already ends in `/v1/traces` (as `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is written)
/// is kept as it is. Only plain `http://` is accepted: the exporter is built without TLS.
pub(crate) fn traces_url(endpoint: &str) -> Result<String, &'static str> {
    let endpoint = endpoint.trim();
    if endpoint.is_empty() {
        return Err("it is empty");
    }
    let uri: Uri = endpoint
        .parse()
        .map_err(|_| "it is not a URL (expected http://host:port)")?;
    match uri.scheme() {
        Some(scheme) if *scheme == Scheme::HTTP => {}
        Some(scheme) if *scheme == Scheme::HTTPS => {
            return Err(
                "https needs TLS, which Courier's OTLP exporter is built without; \
                        give the collector's plain http:// endpoint",
            );
        }
        _ => return Err("it is not an http:// URL"),
    }
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or("it names no host")?;
    if uri.query().is_some() {
        return Err("an OTLP endpoint takes no query string");
    }
    let base = uri.path().trim_end_matches('/');
    let path = if base.ends_with(TRACES_PATH) {
        base.to_owned()
    } else {
        format!("{base}{TRACES_PATH}")
    };
    Ok(format!("http://{authority}{path}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_base_endpoint_gets_the_traces_path() {
        for (given, expected) in [
            ("http://collector:4318", "http://collector:4318/v1/traces"),
            ("http://collector:4318/", "http://collector:4318/v1/traces"),
            (
                "  http://127.0.0.1:4318 ",
                "http://127.0.0.1:4318/v1/traces",
            ),
            ("http://gw/otel", "http://gw/otel/v1/traces"),
            ("http://gw/otel/", "http://gw/otel/v1/traces"),
            ("http://[::1]:4318", "http://[::1]:4318/v1/traces"),
        ] {
            assert_eq!(traces_url(given).as_deref(), Ok(expected), "{given:?}");
        }
    }

    #[test]
    fn an_endpoint_with_the_traces_path_is_kept() {
        for (given, expected) in [
            (
                "http://collector:4318/v1/traces",
                "http://collector:4318/v1/traces",
            ),
            (
                "http://collector:4318/v1/traces/",
                "http://collector:4318/v1/traces",
            ),
            ("http://gw/otel/v1/traces", "http://gw/otel/v1/traces"),
        ] {
            assert_eq!(traces_url(given).as_deref(), Ok(expected), "{given:?}");
        }
    }

    #[test]
    fn endpoints_the_exporter_cannot_use_are_refused() {
        for bad in [
            "",
            "   ",
            "collector:4318",
            "https://collector:4318",
            "grpc://collector:4317",
            "http://",
            "http://collector:4318/?token=x",
            "not a url",
        ] {
            assert!(traces_url(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
