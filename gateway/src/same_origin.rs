//! Cross-site request refusal for the routes that change something (`/system/*`, `/ui/*`).
//!
//! Once a person has logged in to the dashboard, their browser may attach the admin
//! credentials (a cached basic auth login; the session cookie, unless the browser honours its
//! `SameSite=Strict`) to a request another site's page makes it send. A browser says
//! where a request comes from (`Sec-Fetch-Site`, else `Origin`); a write that a browser marks
//! as coming from another site is refused with 403 before authentication is even checked.
//! Requests that carry neither header (the CLI, curl, other OpenFaaS clients) are not
//! browsers acting for another site and pass unchanged, as do reads (`GET`, `HEAD`,
//! `OPTIONS`), which change nothing.
//!
//! This runs before authentication; `crate::auth` adds the session's CSRF token check for
//! cookie-authenticated writes. Knows only request headers; nothing of functions, queues or
//! authentication.

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, Method, header};

use crate::error::ApiError;

/// The Fetch Metadata header naming the relation of the request's initiator to its target.
const SEC_FETCH_SITE: &str = "sec-fetch-site";

/// Why a request is refused, or `None` when it may go on.
pub(crate) fn refusal(method: &Method, headers: &HeaderMap) -> Option<String> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    if let Some(site) = headers.get(SEC_FETCH_SITE) {
        let site = site.to_str().unwrap_or("");
        return match site {
            "same-origin" | "none" => None,
            _ => Some(format!(
                "{method} from another site ({SEC_FETCH_SITE}: {site}) is refused"
            )),
        };
    }
    let origin = headers.get(header::ORIGIN)?;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let authority = origin
        .to_str()
        .ok()
        .and_then(|o| o.split_once("://"))
        .map(|(_, authority)| authority);
    match (authority, host) {
        (Some(authority), Some(host)) if authority.eq_ignore_ascii_case(host) => None,
        _ => Some(format!(
            "{method} from origin {:?} is refused: it is not this gateway",
            origin.to_str().unwrap_or("?")
        )),
    }
}

/// Middleware refusing cross-site writes with 403.
pub(crate) async fn require(request: Request, next: Next) -> Response {
    match refusal(request.method(), request.headers()) {
        Some(reason) => ApiError::Forbidden(reason).into_response(),
        None => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, v) in pairs {
            map.insert(*k, HeaderValue::from_static(v));
        }
        map
    }

    #[test]
    fn reads_always_pass() {
        let h = headers(&[("sec-fetch-site", "cross-site"), ("origin", "http://evil")]);
        assert!(refusal(&Method::GET, &h).is_none());
    }

    #[test]
    fn a_write_without_browser_headers_passes() {
        assert!(refusal(&Method::POST, &headers(&[("host", "127.0.0.1:8080")])).is_none());
    }

    #[test]
    fn a_write_from_another_site_is_refused() {
        let h = headers(&[("sec-fetch-site", "cross-site")]);
        assert!(refusal(&Method::POST, &h).is_some());
        let h = headers(&[("sec-fetch-site", "same-site")]);
        assert!(refusal(&Method::DELETE, &h).is_some());
        let h = headers(&[
            ("origin", "http://evil.example"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(refusal(&Method::POST, &h).is_some());
        let h = headers(&[("origin", "null"), ("host", "127.0.0.1:8080")]);
        assert!(refusal(&Method::POST, &h).is_some());
    }

    #[test]
    fn a_write_from_the_dashboard_passes() {
        let h = headers(&[("sec-fetch-site", "same-origin")]);
        assert!(refusal(&Method::POST, &h).is_none());
        let h = headers(&[
            ("origin", "http://127.0.0.1:8080"),
            ("host", "127.0.0.1:8080"),
        ]);
        assert!(refusal(&Method::PUT, &h).is_none());
    }
}
