//! The local provider's own failures (start-up and storage), before they become
//! [`courier_core::ProviderError`]s at the seam.

use std::path::PathBuf;

/// A local provider failure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading or writing the data directory failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("write", "read", "create directory").
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A stored record could not be parsed.
    #[error("corrupt record {path}: {source}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// `--sandbox on` was asked for but bubblewrap cannot run here.
    #[error("sandbox required but unavailable: {0}")]
    SandboxUnavailable(String),
}

impl Error {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }
}

impl From<Error> for courier_core::ProviderError {
    fn from(e: Error) -> Self {
        courier_core::ProviderError::internal("local provider storage", e)
    }
}

/// The local provider's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
