//! The dashboard's login: the form at `/ui/login` (checked against the same credentials as
//! basic authentication of `/system/*`), the session cookie it sets, logout, and the guard that
//! sends a browser without a login from a page to the form.
//!
//! A wrong user or password answers 401 with the form and a message, and sets nothing. The
//! password and the session token are never logged. Knows the credentials, the session store
//! and page paths; nothing of functions or the queue.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{Query, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use serde::Deserialize;

use crate::Gateway;
use crate::auth::{self, Authenticated, Refusal};
use crate::error::ApiError;
use crate::session;

/// Longest `next` path a login carries over.
const MAX_NEXT_BYTES: usize = 2048;

/// Where a login goes next: `next` when it is a dashboard path on this gateway, else `/ui/`.
/// Anything else (another host, `//evil`, a backslash, a control character) would make the
/// form an open redirect.
pub(crate) fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(next)
            if (next == "/ui" || next.starts_with("/ui/"))
                && next.len() <= MAX_NEXT_BYTES
                && !next.contains("//")
                && !next.contains('\\')
                && !next.chars().any(char::is_control) =>
        {
            next
        }
        _ => "/ui/",
    }
}

/// `/ui/login?next=` for the request's own path.
fn login_location(uri: &http::Uri) -> String {
    let here = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/ui/");
    let next: String = url_encode(safe_next(Some(here)));
    format!("/ui/login?next={next}")
}

fn url_encode(text: &str) -> String {
    serde_urlencoded::to_string([("", text)])
        .map(|s| s.trim_start_matches('=').to_owned())
        .unwrap_or_default()
}

/// Middleware of the dashboard's pages: an unauthenticated `GET` is sent to the login form
/// (303, no body); other refusals are answered as `auth::require` answers them.
pub(crate) async fn require_page(
    State(gateway): State<Arc<Gateway>>,
    mut request: Request,
    next: Next,
) -> Response {
    match auth::authenticate(
        &gateway,
        request.method(),
        request.headers(),
        Instant::now(),
    ) {
        Ok(who) => {
            request.extensions_mut().insert(who);
            next.run(request).await
        }
        Err(Refusal::Unauthenticated { had_cookie })
            if matches!(*request.method(), Method::GET | Method::HEAD) =>
        {
            let mut response = Redirect::to(&login_location(request.uri())).into_response();
            no_store(response.headers_mut());
            if had_cookie {
                let secure = session::came_over_tls(request.headers());
                set_cookie(response.headers_mut(), &session::clear_cookie(secure));
            }
            response
        }
        Err(refusal) => refusal.into_response(),
    }
}

fn no_store(headers: &mut HeaderMap) {
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

fn set_cookie(headers: &mut HeaderMap, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.append(header::SET_COOKIE, value);
    }
}

/// The query of `GET /ui/login`.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// `GET /ui/login`: the form; straight on to `next` when already logged in (or when the
/// gateway has no login at all).
pub(crate) async fn form(
    State(gateway): State<Arc<Gateway>>,
    Query(query): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let next = safe_next(query.next.as_deref());
    if auth::authenticate(&gateway, &Method::GET, &headers, Instant::now()).is_ok() {
        return Redirect::to(next).into_response();
    }
    super::html(StatusCode::OK, super::pages::login(next, None))
}

/// The fields of the login form.
#[derive(Deserialize)]
struct LoginForm {
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /ui/login`: checks the credentials; on success a new session, its cookie and a 303
/// to `next`; otherwise 401 with the form again.
pub(crate) async fn submit(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form: LoginForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::BadRequest(format!("the login form: {e}")))?;
    let next = safe_next(form.next.as_deref()).to_owned();
    let Some(auth) = &gateway.config.auth else {
        return Ok(Redirect::to(&next).into_response());
    };
    if !auth.matches(form.user.as_bytes(), form.password.as_bytes()) {
        tracing::warn!("Dashboard login refused: wrong user or password.");
        let mut response = super::html(
            StatusCode::UNAUTHORIZED,
            super::pages::login(&next, Some("Wrong user or password.")),
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static(
                "Cookie realm=\"Restricted\", form-action=\"/ui/login\", \
                 cookie-name=\"courier_session\"",
            ),
        );
        return Ok(response);
    }
    let new = gateway
        .sessions
        .create(Instant::now())
        .map_err(|e| ApiError::Internal(e.to_string()))?;
    tracing::info!("Dashboard login.");
    let mut response = Redirect::to(&next).into_response();
    no_store(response.headers_mut());
    let secure = session::came_over_tls(&headers);
    set_cookie(
        response.headers_mut(),
        &session::set_cookie(&new.token, secure),
    );
    Ok(response)
}

/// The fields of the logout form.
#[derive(Deserialize)]
struct LogoutForm {
    #[serde(default)]
    csrf: String,
}

/// `POST /ui/logout`: ends the session (the form carries its CSRF token), forgets the cookie
/// and goes to the login form.
pub(crate) async fn logout(
    State(gateway): State<Arc<Gateway>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let form: LogoutForm = serde_urlencoded::from_bytes(&body)
        .map_err(|e| ApiError::BadRequest(format!("the logout form: {e}")))?;
    if let Some(token) = session::cookie(&headers)
        && let Some(csrf) = gateway.sessions.check(token, Instant::now())
    {
        if !auth::constant_time_eq(form.csrf.as_bytes(), csrf.as_bytes()) {
            return Err(ApiError::Forbidden(
                "the logout form did not carry this session's token".into(),
            ));
        }
        gateway.sessions.end(token);
        tracing::info!("Dashboard logout.");
    }
    let mut response = Redirect::to("/ui/login").into_response();
    no_store(response.headers_mut());
    set_cookie(
        response.headers_mut(),
        &session::clear_cookie(session::came_over_tls(&headers)),
    );
    Ok(response)
}

/// The CSRF token a page carries for its script and logout form, when the person logged in
/// with the form.
pub(crate) fn csrf_of(who: Option<&Authenticated>) -> Option<&str> {
    match who {
        Some(Authenticated::Session { csrf }) => Some(csrf),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_is_a_dashboard_path_or_the_functions_page() {
        assert_eq!(
            safe_next(Some("/ui/calls?state=failed")),
            "/ui/calls?state=failed"
        );
        assert_eq!(safe_next(Some("/ui")), "/ui");
        for bad in [
            "https://evil.example/ui/",
            "//evil.example/ui/",
            "/ui//evil.example",
            "/ui/\\evil",
            "/system/functions",
            "/uix",
            "/ui/\nSet-Cookie: x",
            "",
        ] {
            assert_eq!(safe_next(Some(bad)), "/ui/", "{bad:?}");
        }
        assert_eq!(safe_next(None), "/ui/");
        assert_eq!(
            safe_next(Some(&format!("/ui/{}", "a".repeat(3000)))),
            "/ui/"
        );
    }

    #[test]
    fn the_login_redirect_carries_the_page_asked_for() {
        let uri: http::Uri = "/ui/calls?call=a&state=b".parse().unwrap();
        assert_eq!(
            login_location(&uri),
            "/ui/login?next=%2Fui%2Fcalls%3Fcall%3Da%26state%3Db"
        );
    }
}
