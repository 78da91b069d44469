//! The route table and the management (`/system/*`) handlers.

mod calls;
mod dead_letters;
mod functions;
mod logs;
mod secrets;
mod system;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use http::{HeaderMap, StatusCode, header};

use crate::Gateway;
use crate::error::ApiError;
use crate::{auth, same_origin, ui};

/// Builds every route of the gateway.
pub(crate) fn router(
    gateway: Arc<Gateway>,
    registry: prometheus::Registry,
    extra: Router,
) -> Router {
    let limit = gateway.config.max_body_bytes;
    let system = Router::new()
        .route(
            "/system/functions",
            get(functions::list)
                .post(functions::deploy)
                .put(functions::update)
                .delete(functions::delete),
        )
        .route("/system/function/{name}", get(functions::status))
        .route("/system/scale-function/{name}", post(functions::scale))
        .route("/system/info", get(system::info))
        .route("/system/namespaces", get(system::namespaces))
        .route(
            "/system/secrets",
            get(secrets::list)
                .post(secrets::create)
                .put(secrets::update)
                .delete(secrets::delete),
        )
        .route("/system/logs", get(logs::logs))
        .route(
            "/system/dead-letters",
            get(dead_letters::list).delete(dead_letters::purge),
        )
        .route(
            "/system/dead-letters/{call_id}",
            get(dead_letters::show).delete(dead_letters::remove),
        )
        .route(
            "/system/dead-letters/{call_id}/replay",
            post(dead_letters::replay),
        )
        .route("/system/calls", get(calls::list))
        .route(
            "/system/calls/{call_id}",
            get(calls::show).delete(calls::cancel),
        )
        .route("/system/calls/{call_id}/result", get(calls::result))
        .with_state(gateway.clone())
        .merge(extra)
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            auth::require,
        ))
        .route_layer(axum::middleware::from_fn(same_origin::require))
        .layer(DefaultBodyLimit::max(limit));
    let ui = ui::router(gateway.clone(), registry.clone());
    let metrics = Router::new()
        .route("/metrics", get(system::metrics))
        .with_state((gateway.clone(), registry));
    // `/function/*` never reaches this router: `server::dispatch` hands it to the
    // invocation proxy first, with hyper's unboxed body.
    Router::new()
        .route("/healthz", get(system::healthz))
        .with_state(gateway)
        .merge(system)
        .merge(metrics)
        .merge(ui)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

async fn not_found() -> impl IntoResponse {
    (StatusCode::NOT_FOUND, "404 page not found\n")
}

async fn method_not_allowed() -> impl IntoResponse {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route\n",
    )
}

/// Whether a body is a form (Apache Airflow's hook) rather than JSON. A body that looks like a
/// JSON object is JSON whatever its Content-Type says (`curl -d` labels everything a form).
fn is_form(headers: &HeaderMap, body: &[u8]) -> bool {
    let looks_like_json = body
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    !looks_like_json
        && headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"))
}

/// The namespace of a management request: the query wins over the body; default when neither.
pub(crate) fn namespace_of(query: Option<&str>, body: &str) -> Result<String, ApiError> {
    let chosen = query.filter(|q| !q.is_empty()).unwrap_or(body);
    Ok(courier_core::names::resolve_namespace(Some(chosen))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_namespace_wins_over_body() {
        assert_eq!(namespace_of(Some("a"), "b").unwrap(), "a");
        assert_eq!(namespace_of(None, "b").unwrap(), "b");
        assert_eq!(namespace_of(Some(""), "").unwrap(), "openfaas-fn");
        assert!(namespace_of(Some("kube-system"), "").is_err());
        assert!(namespace_of(None, "Bad_NS").is_err());
    }
}
