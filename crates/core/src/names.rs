//! Function, secret and namespace names, and the `name.namespace` invocation form.

use std::fmt;

/// The namespace functions land in when a request names none (OpenFaaS's chart default).
pub const DEFAULT_NAMESPACE: &str = "openfaas-fn";

/// A namespace that is never served (faas-netes refuses it too).
pub const FORBIDDEN_NAMESPACE: &str = "kube-system";

/// Longest DNS-1123 label.
const MAX_LABEL_LEN: usize = 63;

/// Why a name was refused; the message is shown to the caller as is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{kind} name is empty")]
    Empty {
        /// What was being named ("function", "secret", "namespace").
        kind: &'static str,
    },
    /// The name is not a DNS-1123 label.
    #[error(
        "{kind} name {name:?} is invalid: it must be a valid DNS entry (lower-case letters, digits and '-', starting and ending with a letter or digit, at most 63 characters)"
    )]
    Invalid {
        /// What was being named.
        kind: &'static str,
        /// The refused name.
        name: String,
    },
    /// The namespace is reserved.
    #[error("namespace {0:?} is not allowed")]
    Forbidden(String),
}

/// Checks a DNS-1123 label: `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 characters.
pub fn is_dns_label(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_LABEL_LEN
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
        && bytes[0] != b'-'
        && bytes[bytes.len() - 1] != b'-'
}

/// Validates a name of the given kind ("function", "secret").
pub fn validate_name(kind: &'static str, name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty { kind });
    }
    if !is_dns_label(name) {
        return Err(NameError::Invalid {
            kind,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Resolves an optional namespace to the one to use, validating it.
pub fn resolve_namespace(namespace: Option<&str>) -> Result<String, NameError> {
    match namespace.map(str::trim) {
        None | Some("") => Ok(DEFAULT_NAMESPACE.to_owned()),
        Some(FORBIDDEN_NAMESPACE) => Err(NameError::Forbidden(FORBIDDEN_NAMESPACE.to_owned())),
        Some(ns) => {
            validate_name("namespace", ns)?;
            Ok(ns.to_owned())
        }
    }
}

/// A function's identity: name and namespace.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FunctionRef {
    /// The function's name (a DNS-1123 label).
    pub name: String,
    /// The namespace it lives in.
    pub namespace: String,
}

impl FunctionRef {
    /// Builds a reference, validating both parts.
    pub fn new(name: &str, namespace: Option<&str>) -> Result<Self, NameError> {
        validate_name("function", name)?;
        Ok(Self {
            name: name.to_owned(),
            namespace: resolve_namespace(namespace)?,
        })
    }

    /// Parses the invocation form `NAME` or `NAME.NAMESPACE` (namespace after the last dot).
    pub fn parse_invocation(segment: &str) -> Result<Self, NameError> {
        match segment.rsplit_once('.') {
            Some((name, namespace)) => Self::new(name, Some(namespace)),
            None => Self::new(segment, None),
        }
    }

    /// The `name.namespace` form used as the `function_name` metric label.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.name, self.namespace)
    }
}

impl fmt::Display for FunctionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.name, self.namespace)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_labels_follow_rfc_1123() {
        for ok in ["a", "echo", "env-test-verbs", "f1", "0abc", &"a".repeat(63)] {
            assert!(is_dns_label(ok), "{ok} should be valid");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Echo",
            "a_b",
            "a.b",
            "a/b",
            "..",
            &"a".repeat(64),
            "é",
        ] {
            assert!(!is_dns_label(bad), "{bad} should be invalid");
        }
    }

    #[test]
    fn invocation_without_dot_uses_default_namespace() {
        let f = FunctionRef::parse_invocation("echo").unwrap();
        assert_eq!(f.name, "echo");
        assert_eq!(f.namespace, DEFAULT_NAMESPACE);
    }

    #[test]
    fn invocation_namespace_is_after_the_last_dot() {
        let f = FunctionRef::parse_invocation("echo.team-a").unwrap();
        assert_eq!((f.name.as_str(), f.namespace.as_str()), ("echo", "team-a"));
        assert!(FunctionRef::parse_invocation("a.b.c").is_err());
    }

    #[test]
    fn empty_name_with_namespace_is_refused() {
        assert_eq!(
            FunctionRef::parse_invocation(".openfaas-fn"),
            Err(NameError::Empty { kind: "function" })
        );
    }

    #[test]
    fn kube_system_is_forbidden() {
        assert!(matches!(
            resolve_namespace(Some("kube-system")),
            Err(NameError::Forbidden(_))
        ));
        assert_eq!(resolve_namespace(Some("")).unwrap(), DEFAULT_NAMESPACE);
    }

    #[test]
    fn qualified_name_is_name_dot_namespace() {
        let f = FunctionRef::new("echo", None).unwrap();
        assert_eq!(f.qualified(), "echo.openfaas-fn");
    }
}
