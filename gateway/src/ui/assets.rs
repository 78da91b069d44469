//! The dashboard's stylesheet and script, built into the binary: no build step, no Node
//! toolchain, nothing read from disk at run time. The stylesheet is served without a login
//! (the login form uses it; it holds no data), the script only with one.

use axum::extract::Path;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use crate::error::ApiError;

/// The one script every page loads.
const APP_JS: &str = include_str!("assets/app.js");
/// The one stylesheet.
const APP_CSS: &str = include_str!("assets/app.css");

/// `GET /ui/assets/app.css`.
pub(crate) async fn stylesheet() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// `GET /ui/assets/{file}`.
pub(crate) async fn serve(Path(file): Path<String>) -> Result<Response, ApiError> {
    match file.as_str() {
        "app.js" => Ok(asset(APP_JS, "text/javascript; charset=utf-8")),
        "app.css" => Ok(asset(APP_CSS, "text/css; charset=utf-8")),
        _ => Err(ApiError::NotFound(format!("no dashboard asset {file:?}"))),
    }
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = ([(header::CONTENT_TYPE, content_type)], body).into_response();
    response.headers_mut().insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}
