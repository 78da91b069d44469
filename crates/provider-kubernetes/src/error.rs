//! The Kubernetes provider's own failures, and how they become [`ProviderError`]s at the seam.

use std::time::Duration;

use courier_core::ProviderError;

/// A Kubernetes provider failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The Kubernetes API refused the call or could not be reached (this includes finding no
    /// in-cluster or kubeconfig configuration).
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The API server did not answer within the request timeout.
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    /// At start-up, the watches did not list every served namespace in time.
    #[error("the function and endpoint watches did not sync within {0:?}")]
    NotSynced(Duration),
}

impl Error {
    /// The HTTP status the API server answered with, when it answered.
    pub fn status_code(&self) -> Option<u16> {
        match self {
            Self::Kube(kube::Error::Api(status)) => Some(status.code),
            _ => None,
        }
    }

    /// A bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(_)) => "api",
            Self::Kube(_) => "transport",
            Self::Timeout(_) => "timeout",
            Self::NotSynced(_) => "not_synced",
        }
    }

    pub(crate) fn is_not_found(&self) -> bool {
        self.status_code() == Some(404)
    }

    /// The answer for the caller: the API server's refusals of the request itself (invalid,
    /// conflicting) are the caller's to fix, everything else is the provider's failure.
    pub(crate) fn into_provider(self, context: impl std::fmt::Display) -> ProviderError {
        match &self {
            Self::Kube(kube::Error::Api(status)) => match status.code {
                400 | 422 => ProviderError::Invalid(format!("{context}: {}", status.message)),
                409 => ProviderError::Conflict(format!("{context}: {}", status.message)),
                _ => ProviderError::internal(context, self),
            },
            _ => ProviderError::internal(context, self),
        }
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

    #[test]
    fn refusals_of_the_request_are_the_callers_to_fix() {
        assert!(matches!(
            api_error(422, "Invalid").into_provider("deploy echo"),
            ProviderError::Invalid(msg) if msg == "deploy echo: the message"
        ));
        assert!(matches!(
            api_error(409, "Conflict").into_provider("update echo"),
            ProviderError::Conflict(_)
        ));
        assert!(matches!(
            api_error(403, "Forbidden").into_provider("list"),
            ProviderError::Internal { .. }
        ));
        assert!(matches!(
            Error::Timeout(Duration::from_secs(1)).into_provider("list"),
            ProviderError::Internal { .. }
        ));
    }

    #[test]
    fn not_found_is_recognised_by_its_status_code() {
        assert!(api_error(404, "NotFound").is_not_found());
        assert!(!api_error(410, "Gone").is_not_found());
        assert_eq!(api_error(404, "NotFound").code(), "api");
    }
}
