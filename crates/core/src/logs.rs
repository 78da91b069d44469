//! `/system/logs`: the query and the ndjson line format.

use serde::{Deserialize, Serialize};

/// One log line as `/system/logs` streams it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogMessage {
    /// The function's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// The replica that wrote the line.
    pub instance: String,
    /// When the line was written, RFC 3339 with nanoseconds.
    pub timestamp: String,
    /// The text, without its line ending.
    pub text: String,
}

/// What a caller asked `/system/logs` for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRequest {
    /// The function's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
    /// Only this replica, when set.
    pub instance: Option<String>,
    /// At most the last `tail` lines; `None` for all kept lines.
    pub tail: Option<usize>,
    /// Keep streaming new lines.
    pub follow: bool,
    /// Only lines at or after this instant (Unix nanoseconds).
    pub since_unix_nanos: Option<i128>,
}
