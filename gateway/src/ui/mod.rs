//! The web dashboard at `/ui/`: server-rendered page shells (`pages`), their stylesheet and
//! script built into the binary (`assets`), the few figures `/system/*` does not serve
//! (`figures`) and the one HTML escape (`escape`). `/` redirects to `/ui/`.
//!
//! A person logs in with the form at `/ui/login` (`login`: the admin credentials of
//! `/system/*`, a session cookie, logout); basic authentication keeps working for scripts. A
//! page asked for without a login redirects to the form and shows nothing; `/ui/api/*` and
//! the script answer 401. Writes pass the same cross-site refusal as `/system/*`
//! (`crate::same_origin`) and, under a session, its CSRF token (`crate::auth`). The pages'
//! script reads and changes everything through the JSON API, so the dashboard never holds
//! logic of its own about functions, calls or dead letters. Pages carry a strict
//! Content-Security-Policy (scripts only from `/ui/assets/`), and nothing from a function
//! is ever written into a page as markup.
//!
//! Knows the gateway's routes and metrics; never a provider or queue backend.

mod assets;
mod escape;
mod figures;
mod login;
mod pages;
mod stack;

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Router};
use http::{HeaderValue, StatusCode, header};

use crate::Gateway;
use crate::auth::Authenticated;
use crate::error::ApiError;
use crate::{auth, same_origin};
use pages::Page;

/// Largest login or logout form accepted, in bytes.
const MAX_FORM_BYTES: usize = 16 * 1024;

/// What a page's script, styles, frames and requests may come from.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes and the redirect from `/`.
pub(crate) fn router(gateway: Arc<Gateway>, registry: prometheus::Registry) -> Router {
    // Pages: without a login, a redirect to the form.
    let pages = Router::new()
        .route("/ui/", get(functions_page))
        .route("/ui/{slug}", get(named_page))
        .route("/ui/function/{name}", get(function_page))
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            login::require_page,
        ));
    // Data and the script: without a login, 401.
    let data = Router::new()
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/api/stats", get(figures::stats))
        .route("/ui/api/queue", get(figures::queue))
        .route("/ui/api/connectors", get(figures::connectors))
        .route("/ui/api/stack", post(stack::parse))
        .with_state((gateway.clone(), registry, Arc::default()))
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            auth::require,
        ))
        .layer(DefaultBodyLimit::max(gateway.config.max_body_bytes));
    // What a person needs to log in: the form, its stylesheet, logout.
    let open = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/login", get(login::form).post(login::submit))
        .route("/ui/logout", post(login::logout))
        .route("/ui/assets/app.css", get(assets::stylesheet))
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES));
    let ui = pages
        .merge(data)
        .merge(open)
        .with_state(gateway)
        .route_layer(axum::middleware::from_fn(same_origin::require));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .merge(ui)
}

/// An HTML document with the headers every dashboard page carries.
fn html(status: StatusCode, document: String) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        document,
    )
        .into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CONTENT_SECURITY_POLICY),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// A rendered page for the person `who` logged in as.
fn page(page: &Page, who: Option<&Authenticated>) -> Response {
    html(StatusCode::OK, page.render(login::csrf_of(who)))
}

async fn functions_page(who: Option<Extension<Authenticated>>) -> Response {
    page(&Page::Functions, who.as_deref())
}

async fn named_page(
    Path(slug): Path<String>,
    who: Option<Extension<Authenticated>>,
) -> Result<Response, ApiError> {
    Page::from_slug(&slug)
        .map(|p| page(&p, who.as_deref()))
        .ok_or_else(|| ApiError::NotFound(format!("no dashboard page {slug:?}")))
}

async fn function_page(
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    who: Option<Extension<Authenticated>>,
) -> Result<Response, ApiError> {
    courier_core::names::validate_name("function", &name)?;
    let namespace = super::api::namespace_of(query.get("namespace").map(String::as_str), "")?;
    Ok(page(&Page::Function { name, namespace }, who.as_deref()))
}
