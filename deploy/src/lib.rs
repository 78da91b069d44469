//! What runs Courier itself on a Kubernetes cluster, and the means to check it without one.
//!
//! This crate owns `deploy/`: the kustomize trees under `kubernetes/` (`base/` with the whole
//! stack, `overlays/dev` and `overlays/production` that adjust it, and `examples/`, which no
//! tree includes), the image's `Dockerfile`, and the tests in `tests/` that render each tree
//! with `kubectl kustomize` and check every object.
//!
//! The code here is what those tests share, and knows no Kubernetes type: find a tree, render
//! it, split the YAML into [`Object`]s, list what a typed round trip of a document lost
//! ([`lost_fields`]: a misspelt field is silently dropped by k8s-openapi's types), and read
//! resource quantities. The tests parse every object into its k8s-openapi type: only binaries
//! and tests choose the Kubernetes version of those types.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A result whose error is this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a tree could not be rendered or read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `kubectl` could not be started: the checks need it, and are never skipped without it.
    #[error(
        "cannot run `kubectl` ({source}); the manifest checks render the kustomize trees with \
         `kubectl kustomize` and need kubectl (1.27 or later, with kustomize built in) on PATH"
    )]
    KubectlMissing {
        /// Why it could not be started.
        #[source]
        source: std::io::Error,
    },
    /// `kubectl kustomize` ran and failed.
    #[error("`kubectl kustomize {}` failed ({status}): {stderr}", dir.display())]
    Kustomize {
        /// The tree.
        dir: PathBuf,
        /// How kubectl exited.
        status: std::process::ExitStatus,
        /// What it said.
        stderr: String,
    },
    /// A file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Text that is not YAML (or not UTF-8).
    #[error("{what} is not valid YAML: {message}")]
    Yaml {
        /// Where the text came from.
        what: String,
        /// The parser's complaint.
        message: String,
    },
    /// A YAML document without `apiVersion`, `kind` or `metadata.name`.
    #[error("{what}: document {index} is not a Kubernetes object: {reason}")]
    NotAnObject {
        /// Where the text came from.
        what: String,
        /// The document's position, from 0.
        index: usize,
        /// What is missing.
        reason: String,
    },
}

/// `deploy/` itself.
pub fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// `deploy/kubernetes/`: `base/`, `overlays/`, `examples/`.
pub fn kubernetes_dir() -> PathBuf {
    deploy_dir().join("kubernetes")
}

/// The YAML that `kubectl kustomize dir` prints: every object of the tree, `---`-separated.
pub fn render(dir: &Path) -> Result<String> {
    let output = Command::new("kubectl")
        .arg("kustomize")
        .arg(dir)
        .output()
        .map_err(|source| Error::KubectlMissing { source })?;
    if !output.status.success() {
        return Err(Error::Kustomize {
            dir: dir.to_owned(),
            status: output.status,
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_owned(),
        });
    }
    String::from_utf8(output.stdout).map_err(|e| Error::Yaml {
        what: format!("the output of `kubectl kustomize {}`", dir.display()),
        message: e.to_string(),
    })
}

/// Renders a kustomize tree and splits it into objects.
pub fn render_objects(dir: &Path) -> Result<Vec<Object>> {
    let yaml = render(dir)?;
    split(&format!("kustomize tree {}", dir.display()), &yaml)
}

/// Reads a plain YAML file of one or more objects (an example, not a kustomize tree).
pub fn read_objects(path: &Path) -> Result<Vec<Object>> {
    let yaml = read_to_string(path)?;
    split(&path.display().to_string(), &yaml)
}

/// Reads a text file.
pub fn read_to_string(path: &Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

/// Parses one YAML document into JSON's data model (the form k8s-openapi deserialises from).
pub fn parse_yaml(what: &str, yaml: &str) -> Result<Value> {
    serde_saphyr::from_str(yaml).map_err(|e| Error::Yaml {
        what: what.to_owned(),
        message: e.to_string(),
    })
}

/// One Kubernetes object as rendered: its identity, and the whole document.
#[derive(Debug, Clone, PartialEq)]
pub struct Object {
    /// `apiVersion`, e.g. `apps/v1`.
    pub api_version: String,
    /// `kind`, e.g. `Deployment`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`; `None` for cluster-scoped objects (and objects that leave it to
    /// `kubectl`, which these manifests never do).
    pub namespace: Option<String>,
    /// The document.
    pub value: Value,
}

impl Object {
    /// `Kind namespace/name` (or `Kind name`), for messages.
    pub fn id(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{} {ns}/{}", self.kind, self.name),
            None => format!("{} {}", self.kind, self.name),
        }
    }

    fn from_document(what: &str, index: usize, value: Value) -> Result<Self> {
        let not_an_object = |reason: &str| Error::NotAnObject {
            what: what.to_owned(),
            index,
            reason: reason.to_owned(),
        };
        let text = |pointer: &str| value.pointer(pointer).and_then(Value::as_str);
        let api_version = text("/apiVersion").ok_or_else(|| not_an_object("no apiVersion"))?;
        let kind = text("/kind").ok_or_else(|| not_an_object("no kind"))?;
        let name = text("/metadata/name").ok_or_else(|| not_an_object("no metadata.name"))?;
        Ok(Self {
            api_version: api_version.to_owned(),
            kind: kind.to_owned(),
            name: name.to_owned(),
            namespace: text("/metadata/namespace").map(str::to_owned),
            value,
        })
    }
}

/// Splits `---`-separated YAML into objects; empty documents are skipped. `what` names the
/// source in errors.
pub fn split(what: &str, yaml: &str) -> Result<Vec<Object>> {
    let documents: Vec<Value> = serde_saphyr::from_multiple(yaml).map_err(|e| Error::Yaml {
        what: what.to_owned(),
        message: e.to_string(),
    })?;
    documents
        .into_iter()
        .filter(|d| !d.is_null())
        .enumerate()
        .map(|(index, d)| Object::from_document(what, index, d))
        .collect()
}

/// The fields of `original` that `round_trip` does not hold with the same value, as paths
/// (`spec.template.spec.containers[0].readinesProbe`). Fields only in `round_trip` (defaults a
/// type writes back) are not counted. Parse a document into its typed form, serialise it
/// again, and whatever this lists was unknown to the type: a misspelt or misplaced field.
pub fn lost_fields(original: &Value, round_trip: &Value) -> Vec<String> {
    let mut lost = Vec::new();
    walk(original, Some(round_trip), &mut String::new(), &mut lost);
    lost
}

fn walk(original: &Value, other: Option<&Value>, path: &mut String, lost: &mut Vec<String>) {
    let here = |path: &str| {
        if path.is_empty() {
            "(the document)".to_owned()
        } else {
            path.to_owned()
        }
    };
    match (original, other) {
        (_, None) => lost.push(here(path)),
        (Value::Object(fields), Some(Value::Object(others))) => {
            for (key, value) in fields {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
                walk(value, others.get(key), path, lost);
                path.truncate(len);
            }
        }
        (Value::Array(items), Some(Value::Array(others))) => {
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, others.get(i), path, lost);
                path.truncate(len);
            }
        }
        (Value::Number(a), Some(Value::Number(b))) if a.as_f64() == b.as_f64() => {}
        (a, Some(b)) if a == b => {}
        (a, Some(b)) => lost.push(format!("{} (was {a}, became {b})", here(path))),
    }
}

/// A resource quantity (`100m`, `64Mi`, `1Gi`, `2`, `1.5`) as a number of units (cores,
/// bytes); `None` for forms these manifests do not use (exponents).
pub fn quantity(text: &str) -> Option<f64> {
    const SUFFIXES: [(&str, f64); 11] = [
        ("Ki", 1024.0),
        ("Mi", 1024.0 * 1024.0),
        ("Gi", 1024.0 * 1024.0 * 1024.0),
        ("Ti", 1024.0 * 1024.0 * 1024.0 * 1024.0),
        ("n", 1e-9),
        ("u", 1e-6),
        ("m", 1e-3),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
    ];
    let (digits, factor) = SUFFIXES
        .iter()
        .find_map(|(suffix, factor)| text.strip_suffix(suffix).map(|d| (d, *factor)))
        .unwrap_or((text, 1.0));
    if digits.is_empty() || !digits.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return None;
    }
    digits.parse::<f64>().ok().map(|n| n * factor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn split_skips_empty_documents_and_reads_identity() {
        let yaml = "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: courier\n---\n---\n\
                    apiVersion: v1\nkind: Service\nmetadata:\n  name: gateway\n  namespace: courier\n";
        let objects = split("test", yaml).unwrap();
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].id(), "Namespace courier");
        assert_eq!(objects[1].id(), "Service courier/gateway");
        assert_eq!(objects[1].api_version, "v1");
    }

    #[test]
    fn a_document_without_a_kind_is_not_an_object() {
        let err = split("test", "apiVersion: v1\nmetadata:\n  name: x\n").unwrap_err();
        assert!(err.to_string().contains("no kind"), "{err}");
    }

    #[test]
    fn lost_fields_names_what_the_round_trip_dropped_or_changed() {
        let original = json!({
            "spec": {"replicas": 2, "readinesProbe": {"httpGet": {}}, "ports": [{"port": 80}]}
        });
        let round_trip = json!({
            "spec": {"replicas": 2.0, "ports": [{"port": 81}], "extra": true}
        });
        let mut lost = lost_fields(&original, &round_trip);
        lost.sort();
        assert_eq!(
            lost,
            vec![
                "spec.ports[0].port (was 80, became 81)".to_owned(),
                "spec.readinesProbe".to_owned(),
            ]
        );
        assert!(lost_fields(&original, &original).is_empty());
    }

    #[test]
    fn quantities_read_as_cores_and_bytes() {
        assert_eq!(quantity("100m"), Some(0.1));
        assert_eq!(quantity("2"), Some(2.0));
        assert_eq!(quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
        assert_eq!(quantity("1G"), Some(1e9));
        assert_eq!(quantity("Mi"), None);
        assert_eq!(quantity("1e3"), None);
    }
}
