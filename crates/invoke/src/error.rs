//! What can go wrong reaching a function.

use std::time::Duration;

/// A call that got no answer, or a queue operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    /// Neither the gateway nor the function answered.
    #[error("no answer: {0}")]
    Unreachable(String),
    /// No answer within the time allowed.
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    /// The call cannot be made as given (bad function name, header or path).
    #[error("invalid call: {0}")]
    Invalid(String),
    /// Queueing was asked for but this process has no queue.
    #[error("no queue configured (give --queue)")]
    NoQueue,
    /// The queue failed.
    #[error(transparent)]
    Queue(#[from] courier_queue::Error),
}

impl InvokeError {
    /// Whether trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Unreachable(_) | Self::Timeout(_) => true,
            Self::Invalid(_) | Self::NoQueue => false,
            Self::Queue(e) => e.is_retryable(),
        }
    }

    /// A bounded label for metrics and logs.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unreachable(_) => "unreachable",
            Self::Timeout(_) => "timeout",
            Self::Invalid(_) => "invalid",
            Self::NoQueue => "no_queue",
            Self::Queue(e) => e.code(),
        }
    }
}
