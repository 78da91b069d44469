//! Every way a gateway request fails, mapped to the contract's status codes in one place.

use axum::response::{IntoResponse, Response};
use courier_core::ProviderError;
use courier_core::decode::DecodeError;
use courier_core::names::NameError;
use http::{StatusCode, header};

/// A failed request; the message is the response body.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is malformed or invalid (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such function or secret (404, message in the body).
    #[error("{0}")]
    NotFound(String),
    /// No such function, answered with an empty body as OpenFaaS's status endpoint does (404).
    #[error("not found")]
    NotFoundEmpty,
    /// The method is not allowed on this route (405).
    #[error("{0}")]
    MethodNotAllowed(String),
    /// The body is too large (413).
    #[error("{0}")]
    PayloadTooLarge(String),
    /// A browser request from another site to a route that changes something (403).
    #[error("{0}")]
    Forbidden(String),
    /// It exists already (409).
    #[error("{0}")]
    Conflict(String),
    /// A query that cannot be parsed (422, as faas-provider's log handler answers).
    #[error("{0}")]
    Unprocessable(String),
    /// The function has no ready replica within the wait (503).
    #[error("{0}")]
    NotReady(String),
    /// The function could not be reached (502).
    #[error("{0}")]
    BadGateway(String),
    /// The function did not answer within the upstream timeout (504).
    #[error("{0}")]
    GatewayTimeout(String),
    /// What the provider depends on is unreachable; retry later (503).
    #[error("{0}")]
    Unavailable(String),
    /// The gateway or provider failed (500); details are logged, not returned.
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status code this error answers with.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::NotFound(_) | Self::NotFoundEmpty => StatusCode::NOT_FOUND,
            Self::Conflict(_) => StatusCode::CONFLICT,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unprocessable(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Self::NotReady(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::BadGateway(_) => StatusCode::BAD_GATEWAY,
            Self::GatewayTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(self, Self::NotFoundEmpty) {
            return status.into_response();
        }
        if let Self::Internal(msg) = &self {
            tracing::error!(error = %msg, "Request failed.");
        }
        let body = format!("{self}\n");
        (
            status,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            body,
        )
            .into_response()
    }
}

impl From<ProviderError> for ApiError {
    fn from(e: ProviderError) -> Self {
        match e {
            ProviderError::NotFound { .. } => Self::NotFound(e.to_string()),
            ProviderError::AlreadyExists { .. } => Self::Conflict(e.to_string()),
            ProviderError::Invalid(msg) => Self::BadRequest(msg),
            ProviderError::Conflict(msg) => Self::Conflict(msg),
            ProviderError::NotReady(_) => Self::NotReady(e.to_string()),
            ProviderError::Unavailable { .. } => Self::Unavailable(e.to_string()),
            ProviderError::Internal { .. } => Self::Internal(e.to_string()),
        }
    }
}

impl From<DecodeError> for ApiError {
    fn from(e: DecodeError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

impl From<NameError> for ApiError {
    fn from(e: NameError) -> Self {
        Self::BadRequest(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_errors_answer_with_the_contracts_statuses() {
        let unavailable = ProviderError::Unavailable {
            context: "list".into(),
            source: "etcd is down".into(),
        };
        let cases = [
            (
                ProviderError::NotFound {
                    kind: "function",
                    name: "a.b".into(),
                },
                StatusCode::NOT_FOUND,
            ),
            (
                ProviderError::AlreadyExists {
                    kind: "function",
                    name: "a.b".into(),
                },
                StatusCode::CONFLICT,
            ),
            (ProviderError::Conflict("x".into()), StatusCode::CONFLICT),
            (ProviderError::Invalid("x".into()), StatusCode::BAD_REQUEST),
            (unavailable, StatusCode::SERVICE_UNAVAILABLE),
            (
                ProviderError::internal("x", "y"),
                StatusCode::INTERNAL_SERVER_ERROR,
            ),
        ];
        for (error, status) in cases {
            assert_eq!(ApiError::from(error).status(), status);
        }
    }
}
