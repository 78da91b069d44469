//! `/system/info`: what the gateway and its provider are.

use serde::{Deserialize, Serialize};

/// A release and its commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionInfo {
    /// Commit message; omitted when empty.
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub commit_message: String,
    /// Commit id.
    pub sha: String,
    /// Release, e.g. `0.1.0`.
    pub release: String,
}

/// The provider part of `/system/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderInfo {
    /// Provider name, e.g. `courier-local`.
    pub provider: String,
    /// How functions are orchestrated, e.g. `process` or `kubernetes`.
    pub orchestration: String,
    /// The provider's version.
    pub version: VersionInfo,
    /// Courier extension: whether functions run sandboxed (local provider).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub sandbox: Option<String>,
}

/// The body of `GET /system/info`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayInfo {
    /// The provider.
    pub provider: ProviderInfo,
    /// The gateway's version.
    pub version: VersionInfo,
    /// The machine architecture, e.g. `x86_64`.
    pub arch: String,
}
