//! The web dashboard at `/ui/`: server-rendered page shells (`pages`), their stylesheet and
//! script built into the binary (`assets`), the few figures `/system/*` does not serve
//! (`figures`) and the one HTML escape (`escape`). `/` redirects to `/ui/`.
//!
//! Every `/ui/*` route sits behind the same authentication as `/system/*` (a browser's basic
//! auth prompt) and the same cross-site write refusal (`crate::same_origin`); the pages'
//! script reads and changes everything through the existing JSON API, so the dashboard
//! never holds logic of its own about functions, calls or dead letters. Pages carry a strict
//! Content-Security-Policy (scripts only from `/ui/assets/`), and nothing from a function
//! is ever written into a page as markup.
//!
//! Knows the gateway's routes and metrics; never a provider or queue backend.

mod assets;
mod escape;
mod figures;
mod pages;

use std::collections::HashMap;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use http::{HeaderValue, header};

use crate::Gateway;
use crate::error::ApiError;
use crate::{auth, same_origin};
use pages::Page;

/// What a page's script, styles, frames and requests may come from.
const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; \
     style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; \
     form-action 'self'; frame-ancestors 'none'";

/// The dashboard's routes and the redirect from `/`.
pub(crate) fn router(gateway: Arc<Gateway>) -> Router {
    let ui = Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/") }))
        .route("/ui/", get(|| async { page(&Page::Functions) }))
        .route("/ui/{slug}", get(named_page))
        .route("/ui/function/{name}", get(function_page))
        .route("/ui/assets/{file}", get(assets::serve))
        .route("/ui/api/stats", get(figures::stats))
        .route("/ui/api/queue", get(figures::queue))
        .with_state(gateway.clone())
        .route_layer(axum::middleware::from_fn_with_state(gateway, auth::require))
        .route_layer(axum::middleware::from_fn(same_origin::require));
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/") }))
        .merge(ui)
}

/// A rendered page with the headers every page carries.
fn page(page: &Page) -> Response {
    let mut response = (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        page.render(),
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

async fn named_page(Path(slug): Path<String>) -> Result<Response, ApiError> {
    Page::from_slug(&slug)
        .map(|p| page(&p))
        .ok_or_else(|| ApiError::NotFound(format!("no dashboard page {slug:?}")))
}

async fn function_page(
    Path(name): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    courier_core::names::validate_name("function", &name)?;
    let namespace = super::api::namespace_of(query.get("namespace").map(String::as_str), "")?;
    Ok(page(&Page::Function { name, namespace }))
}
