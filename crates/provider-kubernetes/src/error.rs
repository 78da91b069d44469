//! The Kubernetes provider's own failures, and how they become [`ProviderError`]s at the seam.
//!
//! How an API server answer maps (the gateway then answers with the status in brackets):
//!
//! | Kubernetes | [`ProviderError`] |
//! |---|---|
//! | 404 NotFound, about the object the call named | `NotFound` (404) |
//! | 404 NotFound, about its namespace | `NotFound { kind: "namespace" }` (404) |
//! | 404 NotFound, any other (a pod gone while its log is read) | `NotFound`, as the API server names it (404) |
//! | 409 AlreadyExists | `AlreadyExists` (409) |
//! | 409 Conflict (a stale `resourceVersion`, an apply conflict) | `Conflict` (409) |
//! | 400 BadRequest, 422 Invalid | `Invalid` (400) |
//! | 429, 5xx, unreachable, no answer within the request timeout | `Unavailable` (503), context "the Kubernetes API is unavailable" |
//! | anything else (401, 403: the provider's own credentials) | `Internal` (500) |
//!
//! [`Error::is_unavailable`] tells these apart for logs, metrics and retries.

use std::time::Duration;

use courier_core::ProviderError;

/// A Kubernetes provider failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused the call or could not be reached (this includes finding no
    /// in-cluster or kubeconfig configuration). Not a `source`: kube's message already says
    /// its causes, and chaining them too would print each several times.
    #[error("Kubernetes API: {0}")]
    Kube(kube::Error),
    /// The API server did not answer within the request timeout.
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    /// At start-up, the watches did not list every served namespace in time.
    #[error("the function and endpoint watches did not sync within {0:?}")]
    NotSynced(Duration),
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Self::Kube(error)
    }
}

/// What a call was about, when the caller named one object: a 404 or 409 about it is reported
/// as this object.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target<'a> {
    /// "function" or "secret".
    pub(crate) kind: &'static str,
    /// Its name.
    pub(crate) name: &'a str,
    /// Its namespace.
    pub(crate) namespace: &'a str,
}

impl Target<'_> {
    fn qualified(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

impl Error {
    /// The HTTP status the API server answered with, when it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Kube(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        }
    }

    /// Whether the API server could not take the call at all: unreachable, too slow,
    /// overloaded (429) or failing (5xx). Worth retrying later; not the caller's fault.
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Kube(kube::Error::Api(status)) => status.code == 429 || status.code >= 500,
            Self::Kube(kube::Error::HyperError(_) | kube::Error::Service(_)) => true,
            Self::Kube(_) => false,
            Self::Timeout(_) | Self::NotSynced(_) => true,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) if self.is_unavailable() => "unavailable",
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "transport",
            Self::Timeout(_) => "timeout",
            Self::NotSynced(_) => "not_synced",
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.status_code() == Some(404)
    }

    /// The answer for the caller of a call about no single object (a list, a log stream).
    pub(crate) fn into_provider(self, context: impl std::fmt::Display) -> ProviderError {
        self.classify(None, context)
    }

    /// The answer for the caller of a call about `target`: a 404 or 409 about it says so.
    pub(crate) fn into_provider_for(
        self,
        target: Target<'_>,
        context: impl std::fmt::Display,
    ) -> ProviderError {
        self.classify(Some(target), context)
    }

    fn classify(
        self,
        target: Option<Target<'_>>,
        context: impl std::fmt::Display,
    ) -> ProviderError {
        let Self::Kube(kube::Error::Api(status)) = &self else {
            return self.internal(context);
        };
        let details = status.details.as_ref();
        match (status.code, target) {
            (404, _) if details.is_some_and(|d| d.kind == "namespaces") => {
                ProviderError::NotFound {
                    kind: "namespace",
                    name: details.map(|d| d.name.clone()).unwrap_or_default(),
                }
            }
            (404, Some(target)) => ProviderError::NotFound {
                kind: target.kind,
                name: target.qualified(),
            },
            (404, None) => ProviderError::NotFound {
                kind: details.map_or("object", |d| singular(&d.kind)),
                name: details.map(|d| d.name.clone()).unwrap_or_default(),
            },
            (409, Some(target)) if status.reason == "AlreadyExists" => {
                ProviderError::AlreadyExists {
                    kind: target.kind,
                    name: target.qualified(),
                }
            }
            (409, _) => ProviderError::Conflict(format!("{context}: {}", status.message)),
            (400 | 422, _) => ProviderError::Invalid(format!("{context}: {}", status.message)),
            _ => self.internal(context),
        }
    }

    fn internal(self, context: impl std::fmt::Display) -> ProviderError {
        if self.is_unavailable() {
            ProviderError::Unavailable {
                context: format!("the Kubernetes API is unavailable: {context}"),
                source: Box::new(self),
            }
        } else {
            ProviderError::internal(context, self)
        }
    }
}

/// The provider's word for a Kubernetes resource a 404 names.
fn singular(resource: &str) -> &'static str {
    match resource {
        "deployments" => "function",
        "secrets" => "secret",
        "services" => "service",
        "pods" => "pod",
        _ => "object",
    }
}

/// Runs one Kubernetes API call, giving up after `timeout`.
pub(crate) async fn within<T>(
    timeout: Duration,
    call: impl Future<Output = kube::Result<T>>,
) -> Result<T> {
    tokio::time::timeout(timeout, call)
        .await
        .map_err(|_| Error::Timeout(timeout))?
        .map_err(Error::Kube)
}

/// The Kubernetes provider's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, reason: &str) -> Error {
        Error::Kube(kube::Error::Api(Box::new(
            kube::core::Status::failure("the message", reason).with_code(code),
        )))
    }

    fn about(code: u16, reason: &str, kind: &str, name: &str) -> Error {
        let mut status = kube::core::Status::failure("the message", reason).with_code(code);
        status.details = Some(
            serde_json::from_value(serde_json::json!({ "name": name, "kind": kind })).unwrap(),
        );
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    /// The error and its sources, joined the way `courier` prints an error (`{:#}`).
    fn chain(error: &dyn std::error::Error) -> String {
        let mut text = error.to_string();
        let mut source = error.source();
        while let Some(cause) = source {
            text.push_str(": ");
            text.push_str(&cause.to_string());
            source = cause.source();
        }
        text
    }

    #[test]
    fn a_kube_error_is_told_once() {
        // kube's own message already includes its causes; chaining them as sources printed
        // them again (a missing kubeconfig was reported four times in one line).
        let error = api_error(500, "InternalError");
        assert_eq!(chain(&error), error.to_string());
        assert!(
            error
                .to_string()
                .starts_with("Kubernetes API: ApiError: the message")
        );
    }

    const ECHO: Target<'static> = Target {
        kind: "function",
        name: "echo",
        namespace: "openfaas-fn",
    };

    #[test]
    fn refusals_of_the_request_are_the_callers_to_fix() {
        assert!(matches!(
            api_error(422, "Invalid").into_provider("deploy echo"),
            ProviderError::Invalid(msg) if msg == "deploy echo: the message"
        ));
        assert!(matches!(
            api_error(400, "BadRequest").into_provider("deploy echo"),
            ProviderError::Invalid(_)
        ));
        assert!(matches!(
            api_error(409, "Conflict").into_provider("update echo"),
            ProviderError::Conflict(_)
        ));
        assert!(matches!(
            api_error(409, "Conflict").into_provider_for(ECHO, "update echo"),
            ProviderError::Conflict(_)
        ));
    }

    #[test]
    fn not_found_and_already_exists_name_the_object_the_call_was_about() {
        assert!(matches!(
            about(404, "NotFound", "deployments", "echo").into_provider_for(ECHO, "scale echo"),
            ProviderError::NotFound { kind: "function", name } if name == "echo.openfaas-fn"
        ));
        assert!(matches!(
            api_error(409, "AlreadyExists").into_provider_for(ECHO, "create echo"),
            ProviderError::AlreadyExists { kind: "function", name } if name == "echo.openfaas-fn"
        ));
    }

    #[test]
    fn a_not_found_about_no_named_object_is_reported_as_the_api_server_names_it() {
        assert!(matches!(
            about(404, "NotFound", "pods", "echo-1").into_provider("read the logs of echo"),
            ProviderError::NotFound { kind: "pod", name } if name == "echo-1"
        ));
    }

    #[test]
    fn a_missing_namespace_is_reported_as_the_namespace() {
        assert!(matches!(
            about(404, "NotFound", "namespaces", "team-b").into_provider_for(ECHO, "apply echo"),
            ProviderError::NotFound { kind: "namespace", name } if name == "team-b"
        ));
    }

    #[test]
    fn an_unavailable_api_server_is_unavailable_and_says_so() {
        for error in [
            api_error(503, "ServiceUnavailable"),
            api_error(500, "InternalError"),
            api_error(429, "TooManyRequests"),
            Error::Timeout(Duration::from_secs(1)),
        ] {
            assert!(error.is_unavailable(), "{error}");
            assert!(matches!(
                error.into_provider("list"),
                ProviderError::Unavailable { context, .. }
                    if context == "the Kubernetes API is unavailable: list"
            ));
        }
        assert_eq!(api_error(503, "ServiceUnavailable").code(), "unavailable");
    }

    #[test]
    fn being_refused_by_rbac_is_the_providers_failure_not_the_callers() {
        let forbidden = api_error(403, "Forbidden");
        assert!(!forbidden.is_unavailable());
        assert_eq!(forbidden.code(), "api");
        assert!(matches!(
            forbidden.into_provider_for(ECHO, "apply echo"),
            ProviderError::Internal { context, .. } if context == "apply echo"
        ));
    }

    #[test]
    fn not_found_is_recognised_by_its_status_code() {
        assert!(api_error(404, "NotFound").is_not_found());
        assert!(!api_error(410, "Gone").is_not_found());
        assert_eq!(api_error(404, "NotFound").code(), "api");
    }
}
