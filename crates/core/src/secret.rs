//! Secrets as `/system/secrets` sends and lists them. Values are never listed or logged.

use std::fmt;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::decode::{GoDecode, Schema};

/// The body of `POST/PUT/DELETE /system/secrets`.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Secret {
    /// The secret's name (a DNS-1123 label); also its file name.
    pub name: String,
    /// The namespace; empty means the default one.
    pub namespace: String,
    /// The value as text.
    pub value: String,
    /// The value as base64-encoded bytes; wins over `value` when non-empty.
    pub raw_value: String,
}

impl GoDecode for Secret {
    const SCHEMA: &'static Schema = &Schema {
        fields: &[
            ("name", None),
            ("namespace", None),
            ("value", None),
            ("rawValue", None),
        ],
    };
}

/// `rawValue` was not valid base64.
#[derive(Debug, thiserror::Error)]
#[error("rawValue is not valid base64: {0}")]
pub struct RawValueError(#[from] base64::DecodeError);

impl Secret {
    /// The bytes to store: `rawValue` decoded when present, else `value`.
    pub fn bytes(&self) -> Result<Vec<u8>, RawValueError> {
        if self.raw_value.is_empty() {
            Ok(self.value.as_bytes().to_vec())
        } else {
            Ok(base64::engine::general_purpose::STANDARD.decode(&self.raw_value)?)
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Secret")
            .field("name", &self.name)
            .field("namespace", &self.namespace)
            .field("value", &"<redacted>")
            .finish()
    }
}

/// An element of `GET /system/secrets`: the name only, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecretSummary {
    /// The secret's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::decode_json;

    #[test]
    fn raw_value_wins_over_value() {
        let s: Secret = decode_json(br#"{"name":"a","value":"text","rawValue":"AAEC"}"#).unwrap();
        assert_eq!(s.bytes().unwrap(), vec![0, 1, 2]);
        let s: Secret = decode_json(br#"{"name":"a","value":"text"}"#).unwrap();
        assert_eq!(s.bytes().unwrap(), b"text");
    }

    #[test]
    fn debug_output_never_shows_the_value() {
        let s: Secret = decode_json(br#"{"name":"a","value":"hunter2"}"#).unwrap();
        assert!(!format!("{s:?}").contains("hunter2"));
    }
}
