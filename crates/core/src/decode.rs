//! Decoding request bodies the way OpenFaaS's Go servers do, so Go-built clients keep working:
//! object keys match struct fields case-insensitively (an exact match wins), unknown keys are
//! ignored, `null` means "not sent". Maps inside a struct (labels, envVars) keep their keys.
//! Deploy and update also accept a flat `application/x-www-form-urlencoded` body (Apache
//! Airflow's OpenFaaS hook sends nothing else).

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// The field names of a wire struct, with the schema of fields that are structs themselves.
#[derive(Debug)]
pub struct Schema {
    /// `(canonical field name, nested struct schema)`.
    pub fields: &'static [(&'static str, Option<&'static Schema>)],
}

/// A body that could not be decoded; the message says why and is shown to the caller.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON, or a field of the wrong type.
    #[error("failed to unmarshal request: {0}")]
    Json(#[from] serde_json::Error),
    /// The top-level value is not a JSON object.
    #[error("failed to unmarshal request: expected a JSON object")]
    NotAnObject,
    /// A form body that could not be parsed.
    #[error("failed to parse form body: {0}")]
    Form(#[from] serde_urlencoded::de::Error),
}

/// Types decoded with Go's rules implement this by naming their schema.
pub trait GoDecode: DeserializeOwned {
    /// The struct's fields.
    const SCHEMA: &'static Schema;
}

/// Decodes a JSON body into `T` following Go's `encoding/json` key matching.
pub fn decode_json<T: GoDecode>(body: &[u8]) -> Result<T, DecodeError> {
    let value: Value = serde_json::from_slice(body)?;
    let Value::Object(map) = value else {
        return Err(DecodeError::NotAnObject);
    };
    let canonical = canonicalize(map, T::SCHEMA);
    Ok(serde_json::from_value(Value::Object(canonical))?)
}

/// Decodes a form body into `T` (flat string fields only), matching keys like [`decode_json`].
pub fn decode_form<T: GoDecode>(body: &[u8]) -> Result<T, DecodeError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body)?;
    let map: Map<String, Value> = pairs
        .into_iter()
        .map(|(k, v)| (k, Value::String(v)))
        .collect();
    let canonical = canonicalize(map, T::SCHEMA);
    Ok(serde_json::from_value(Value::Object(canonical))?)
}

/// Renames keys to their canonical field names, drops nulls and unknown keys.
fn canonicalize(map: Map<String, Value>, schema: &Schema) -> Map<String, Value> {
    let mut out = Map::new();
    let mut exact = Vec::new();
    for (key, value) in map {
        if value.is_null() {
            continue;
        }
        let Some((field, nested)) = schema
            .fields
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&key))
        else {
            continue;
        };
        let value = match (nested, value) {
            (Some(nested), Value::Object(inner)) => Value::Object(canonicalize(inner, nested)),
            (_, value) => value,
        };
        if key == *field {
            exact.push((*field, value));
        } else {
            out.insert((*field).to_owned(), value);
        }
    }
    // Go prefers an exact key match over a case-insensitive one.
    for (field, value) in exact {
        out.insert(field.to_owned(), value);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default)]
    struct Inner {
        memory: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(default, rename_all = "camelCase")]
    struct Outer {
        service: String,
        env_vars: Option<std::collections::BTreeMap<String, String>>,
        limits: Option<Inner>,
    }

    static INNER: Schema = Schema {
        fields: &[("memory", None)],
    };
    impl GoDecode for Outer {
        const SCHEMA: &'static Schema = &Schema {
            fields: &[
                ("service", None),
                ("envVars", None),
                ("limits", Some(&INNER)),
            ],
        };
    }

    #[test]
    fn keys_match_in_any_letter_case_and_unknown_keys_are_ignored() {
        let o: Outer = decode_json(
            br#"{"SERVICE":"echo","ENVVARS":{"Key":"v"},"Limits":{"MEMORY":"5Mi"},"other":1}"#,
        )
        .unwrap();
        assert_eq!(o.service, "echo");
        assert_eq!(o.env_vars.unwrap()["Key"], "v");
        assert_eq!(o.limits.unwrap().memory.as_deref(), Some("5Mi"));
    }

    #[test]
    fn null_means_not_sent() {
        let o: Outer = decode_json(br#"{"service":null,"envVars":null,"limits":null}"#).unwrap();
        assert_eq!(o, Outer::default());
    }

    #[test]
    fn exact_key_wins_over_a_folded_one() {
        let o: Outer = decode_json(br#"{"Service":"a","service":"b"}"#).unwrap();
        assert_eq!(o.service, "b");
        let o: Outer = decode_json(br#"{"service":"b","Service":"a"}"#).unwrap();
        assert_eq!(o.service, "b");
    }

    #[test]
    fn malformed_json_says_why() {
        let e = decode_json::<Outer>(b"{not json").unwrap_err();
        assert!(e.to_string().starts_with("failed to unmarshal request"));
        assert!(matches!(
            decode_json::<Outer>(b"[1]"),
            Err(DecodeError::NotAnObject)
        ));
        assert!(decode_json::<Outer>(br#"{"service":3}"#).is_err());
    }

    #[test]
    fn form_bodies_decode_flat_fields() {
        let o: Outer = decode_form(b"service=echo&Image=x&unknown=1").unwrap();
        assert_eq!(o.service, "echo");
    }
}
