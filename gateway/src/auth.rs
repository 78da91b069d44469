//! Authentication of `/system/*` and the dashboard (`/ui/*`).
//!
//! HTTP basic authentication as OpenFaaS does it: user and password compared in constant
//! time, 401 with `WWW-Authenticate: Basic realm="Restricted"` otherwise. Besides it, the
//! session cookie the dashboard's login form hands out (`crate::session`) is accepted, so the
//! dashboard's script can call `/system/*`; a write authenticated by the cookie alone must
//! also carry the session's CSRF token in `X-Courier-Csrf` (403 otherwise), on top of the
//! cross-site refusal of `crate::same_origin` that runs before this. A request that carries a
//! session cookie which is no longer valid gets 401 with a `Cookie` challenge instead of
//! `Basic`, so a browser shows no password prompt and the dashboard sends the person to its
//! login form.
//!
//! Knows the credentials and the session store; never logs a password or a token.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http::{HeaderValue, StatusCode, header};

use crate::Gateway;

/// The credentials `/system/*` requires.
#[derive(Clone)]
pub struct BasicAuth {
    user: String,
    password: String,
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl BasicAuth {
    /// Credentials for `user` with `password`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            password: password.into(),
        }
    }

    /// Whether an `Authorization` header carries these credentials.
    pub fn accepts(&self, authorization: Option<&HeaderValue>) -> bool {
        let Some(encoded) = authorization.and_then(|v| v.to_str().ok()).and_then(|v| {
            v.strip_prefix("Basic ")
                .or_else(|| v.strip_prefix("basic "))
        }) else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
            return false;
        };
        let (user, password) = match decoded.iter().position(|b| *b == b':') {
            Some(i) => (&decoded[..i], &decoded[i + 1..]),
            None => (&decoded[..], &[][..]),
        };
        self.matches(user, password)
    }

    /// Whether `user` and `password` (as typed into the dashboard's login form) are these
    /// credentials.
    pub(crate) fn matches(&self, user: &[u8], password: &[u8]) -> bool {
        // Both comparisons always run, so timing does not tell which part was wrong.
        let user_ok = constant_time_eq(user, self.user.as_bytes());
        let password_ok = constant_time_eq(password, self.password.as_bytes());
        user_ok & password_ok
    }
}

/// Compares two byte strings in time that depends only on their lengths.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    diff == 0
}

/// Who a request was let in as; the dashboard's pages read it (request extension).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Authenticated {
    /// Authentication is off (`auth: None`).
    Open,
    /// The `Authorization: Basic` header carried the credentials.
    Basic,
    /// The session cookie of a dashboard login; the session's CSRF token.
    Session {
        /// What the session's writes must carry in `X-Courier-Csrf`.
        csrf: String,
    },
}

/// Why a request is not let in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// No valid credentials (401). `had_cookie`: the request carried a session cookie that is
    /// no longer valid.
    Unauthenticated {
        /// Whether a (stale) session cookie came with the request.
        had_cookie: bool,
    },
    /// A write authenticated only by the session cookie, without its CSRF token (403).
    MissingCsrf,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        match self {
            Self::Unauthenticated { had_cookie: false } => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Basic realm=\"Restricted\"")],
                "invalid credentials\n",
            )
                .into_response(),
            // Not `Basic`: a browser would answer the dashboard's own requests with a prompt.
            Self::Unauthenticated { had_cookie: true } => (
                StatusCode::UNAUTHORIZED,
                [(
                    header::WWW_AUTHENTICATE,
                    "Cookie realm=\"Restricted\", form-action=\"/ui/login\", \
                     cookie-name=\"courier_session\"",
                )],
                "the dashboard session ended: log in again at /ui/login\n",
            )
                .into_response(),
            Self::MissingCsrf => (
                StatusCode::FORBIDDEN,
                "a write with the dashboard's session must carry its X-Courier-Csrf token\n",
            )
                .into_response(),
        }
    }
}

/// How a request authenticates: basic auth first, then the session cookie (whose writes need
/// the session's CSRF token).
pub(crate) fn authenticate(
    gateway: &Gateway,
    method: &http::Method,
    headers: &http::HeaderMap,
    now: Instant,
) -> Result<Authenticated, Refusal> {
    let Some(auth) = &gateway.config.auth else {
        return Ok(Authenticated::Open);
    };
    if auth.accepts(headers.get(header::AUTHORIZATION)) {
        return Ok(Authenticated::Basic);
    }
    let Some(token) = crate::session::cookie(headers) else {
        return Err(Refusal::Unauthenticated { had_cookie: false });
    };
    let Some(csrf) = gateway.sessions.check(token, now) else {
        return Err(Refusal::Unauthenticated { had_cookie: true });
    };
    let reads_only = matches!(
        *method,
        http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
    );
    if !reads_only {
        let sent = headers
            .get(crate::session::CSRF_HEADER)
            .map(HeaderValue::as_bytes)
            .unwrap_or_default();
        if !constant_time_eq(sent, csrf.as_bytes()) {
            return Err(Refusal::MissingCsrf);
        }
    }
    Ok(Authenticated::Session { csrf })
}

/// Middleware guarding `/system/*` and the dashboard's data (`/ui/api/*`): 401 (or 403, see
/// [`Refusal`]) unless [`authenticate`] lets the request in.
pub(crate) async fn require(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    match authenticate(
        &gateway,
        request.method(),
        request.headers(),
        Instant::now(),
    ) {
        Ok(who) => {
            request.extensions_mut().insert(who);
            next.run(request).await
        }
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(user: &str, password: &str) -> HeaderValue {
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    #[test]
    fn only_the_exact_credentials_pass() {
        let auth = BasicAuth::new("admin", "s3cret");
        assert!(auth.accepts(Some(&header("admin", "s3cret"))));
        assert!(!auth.accepts(Some(&header("admin", "s3cre"))));
        assert!(!auth.accepts(Some(&header("admin", "s3cret!"))));
        assert!(!auth.accepts(Some(&header("root", "s3cret"))));
        assert!(!auth.accepts(Some(&HeaderValue::from_static("Bearer abc"))));
        assert!(!auth.accepts(Some(&HeaderValue::from_static("Basic !!!"))));
        assert!(!auth.accepts(None));
    }

    #[test]
    fn constant_time_eq_compares_content_and_length() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abc\0"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn debug_hides_the_password() {
        assert!(!format!("{:?}", BasicAuth::new("admin", "hunter2")).contains("hunter2"));
    }
}
