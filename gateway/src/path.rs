//! Path clean-up before routing: repeated slashes collapse (`//system/functions` is
//! `/system/functions`; paths below `/function/NAME/` are left exactly as sent) without a
//! redirect, since Apache Airflow's hook builds such paths and
//! does not follow redirects for POST.

use axum::Router;
use axum::extract::Request;
use http::Uri;
use tower::ServiceExt as _;
use tower::util::MapRequest;

/// The router behind the path clean-up.
pub(crate) type NormalizedRouter = MapRequest<Router, fn(Request) -> Request>;

/// Wraps `router` so it sees cleaned paths.
pub(crate) fn normalize(router: Router) -> NormalizedRouter {
    router.map_request(clean as fn(Request) -> Request)
}

fn clean(mut request: Request) -> Request {
    let path = request.uri().path();
    // A function's own path is passed on exactly as sent.
    if path.contains("//")
        && !path.starts_with("/function/")
        && !path.starts_with("/async-function/")
        && let Some(uri) = collapse_slashes(request.uri())
    {
        *request.uri_mut() = uri;
    }
    request
}

fn collapse_slashes(uri: &Uri) -> Option<Uri> {
    let mut path = String::with_capacity(uri.path().len());
    for c in uri.path().chars() {
        if !(c == '/' && path.ends_with('/')) {
            path.push(c);
        }
    }
    let path_and_query = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = uri.clone().into_parts();
    parts.path_and_query = Some(path_and_query.parse().ok()?);
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_slashes_collapse_and_the_query_stays() {
        let uri: Uri = "//system//functions?namespace=a//b".parse().unwrap();
        assert_eq!(
            collapse_slashes(&uri).unwrap().to_string(),
            "/system/functions?namespace=a//b"
        );
    }
}
