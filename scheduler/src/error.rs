//! The scheduler's one error type.

use std::path::PathBuf;

/// What can stop the scheduler. Problems with one schedule or one fire never do: they are
/// logged and counted (`scheduler_skips_total{reason="error"}`).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The state file exists but could not be read.
    #[error("reading scheduler state {}: {source}", path.display())]
    StateRead {
        /// The state file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The state file (or its directory) could not be written.
    #[error("writing scheduler state {}: {source}", path.display())]
    StateWrite {
        /// The state file.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The state file is not the JSON the scheduler writes.
    #[error("scheduler state {} is not valid: {source}", path.display())]
    StateCorrupt {
        /// The state file.
        path: PathBuf,
        /// The decoding error.
        #[source]
        source: serde_json::Error,
    },
    /// The metrics could not be registered (e.g. a second scheduler on the same registry).
    #[error("registering scheduler metrics: {0}")]
    Metrics(#[from] prometheus::Error),
}

/// The scheduler's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
