//! faas-cli stack files (`stack.yml`): the `functions` map, turned into
//! [`FunctionDeployment`]s. `courier up -f`, `courier deploy -f` and the dashboard's deploy
//! form read them through [`parse`], so a stack file means the same everywhere.
//!
//! Courier's reading of the format: a function's command is `fprocess` (a Courier extension)
//! or `environment.fprocess`; scalars where OpenFaaS expects strings (`replicas: 2`,
//! `debug: true`) become strings; `image` defaults to `local/<name>:latest`; keys Courier does
//! not use (`lang`, `handler`, `provider`, ...) are ignored. Errors say where: the YAML's line
//! and column, or the line of the function they concern.
//!
//! Pure: the caller reads the file.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::{FunctionDeployment, FunctionResources};

/// Why a stack file is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StackError {
    /// Not YAML, or not the stack file's shape (a key of the wrong type, ...).
    #[error("invalid stack file: {message}")]
    Invalid {
        /// The YAML parser's explanation (it names the line and column, and quotes them).
        message: String,
        /// The line it points at (1-based), when known.
        line: Option<u64>,
        /// The column it points at (1-based), when known.
        column: Option<u64>,
    },
    /// The `functions` map is missing or empty.
    #[error("the stack file has no functions")]
    NoFunctions,
    /// A function names no command.
    #[error("function {name}{}: set environment.fprocess to its command", at(*line))]
    NoCommand {
        /// The function.
        name: String,
        /// The line of its key, when found.
        line: Option<u64>,
    },
}

impl StackError {
    /// The line (1-based) the error points at, when known.
    pub fn line(&self) -> Option<u64> {
        match self {
            Self::Invalid { line, .. } | Self::NoCommand { line, .. } => *line,
            Self::NoFunctions => None,
        }
    }

    /// The column (1-based) the error points at, when known.
    pub fn column(&self) -> Option<u64> {
        match self {
            Self::Invalid { column, .. } => *column,
            _ => None,
        }
    }
}

fn at(line: Option<u64>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// A YAML scalar written where OpenFaaS expects a string (`replicas: 2`, `debug: true`).
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Self::Text(s) => s,
            Self::Int(i) => i.to_string(),
            Self::Float(f) => f.to_string(),
            Self::Bool(b) => b.to_string(),
        }
    }
}

fn strings(map: Option<BTreeMap<String, Scalar>>) -> Option<BTreeMap<String, String>> {
    map.map(|m| m.into_iter().map(|(k, v)| (k, v.into_string())).collect())
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Resources {
    memory: Option<Scalar>,
    cpu: Option<Scalar>,
}

impl Resources {
    fn into_wire(self) -> FunctionResources {
        FunctionResources {
            memory: self.memory.map(Scalar::into_string),
            cpu: self.cpu.map(Scalar::into_string),
            ..FunctionResources::default()
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct StackFunction {
    image: Option<String>,
    namespace: Option<String>,
    /// Courier extension: the command, instead of `environment.fprocess`.
    fprocess: Option<String>,
    environment: Option<BTreeMap<String, Scalar>>,
    labels: Option<BTreeMap<String, Scalar>>,
    annotations: Option<BTreeMap<String, Scalar>>,
    secrets: Option<Vec<String>>,
    constraints: Option<Vec<String>>,
    limits: Option<Resources>,
    requests: Option<Resources>,
    readonly_root_filesystem: bool,
}

#[derive(Debug, Deserialize)]
struct StackFile {
    #[serde(default)]
    functions: BTreeMap<String, StackFunction>,
}

/// The line (1-based) of the first key `name:` indented under `functions:`, when there is one.
fn line_of_function(yaml: &str, name: &str) -> Option<u64> {
    let mut in_functions = false;
    for (i, line) in yaml.lines().enumerate() {
        let indented = line.starts_with([' ', '\t']);
        let trimmed = line.trim();
        if !indented && !trimmed.is_empty() && !trimmed.starts_with('#') {
            in_functions = trimmed.starts_with("functions:");
            continue;
        }
        if in_functions
            && let Some(rest) = trimmed
                .strip_prefix(name)
                .or_else(|| trimmed.strip_prefix(&format!("\"{name}\"")))
                .or_else(|| trimmed.strip_prefix(&format!("'{name}'")))
            && rest.trim_start().starts_with(':')
        {
            return u64::try_from(i + 1).ok();
        }
    }
    None
}

/// Parses stack YAML into deployments, in name order. A function's namespace is left empty
/// when the file names none (the caller picks the default).
pub fn parse(yaml: &str) -> Result<Vec<FunctionDeployment>, StackError> {
    let stack: StackFile = serde_saphyr::from_str(yaml).map_err(|e| {
        let location = e.location();
        StackError::Invalid {
            message: e.to_string(),
            line: location.map(|l| l.line()).filter(|l| *l > 0),
            column: location.map(|l| l.column()).filter(|c| *c > 0),
        }
    })?;
    if stack.functions.is_empty() {
        return Err(StackError::NoFunctions);
    }
    stack
        .functions
        .into_iter()
        .map(|(name, f)| {
            let mut env = strings(f.environment).unwrap_or_default();
            let Some(env_process) = f.fprocess.or_else(|| env.remove("fprocess")) else {
                let line = line_of_function(yaml, &name);
                return Err(StackError::NoCommand { name, line });
            };
            Ok(FunctionDeployment {
                image: f.image.unwrap_or_else(|| format!("local/{name}:latest")),
                namespace: f.namespace.unwrap_or_default(),
                env_process,
                env_vars: (!env.is_empty()).then_some(env),
                labels: strings(f.labels),
                annotations: strings(f.annotations),
                secrets: f.secrets,
                constraints: f.constraints,
                limits: f.limits.map(Resources::into_wire),
                requests: f.requests.map(Resources::into_wire),
                read_only_root_filesystem: f.readonly_root_filesystem,
                service: name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faas_cli_stack_becomes_deployments() {
        let yaml = r#"
version: 1.0
provider:
  name: openfaas
  gateway: http://127.0.0.1:8080
functions:
  echo:
    lang: dockerfile
    image: ghcr.io/example/echo:latest
    environment:
      fprocess: cat
      write_debug: true
      retries: 3
    labels:
      com.openfaas.scale.min: 2
    annotations:
      topic: orders
    secrets: [token]
    limits:
      memory: 128Mi
      cpu: 100m
    readonly_root_filesystem: true
"#;
        let deployments = parse(yaml).unwrap();
        assert_eq!(deployments.len(), 1);
        let d = &deployments[0];
        assert_eq!(d.service, "echo");
        assert_eq!(d.env_process, "cat");
        assert_eq!(d.env_var("write_debug"), Some("true"));
        assert_eq!(d.env_var("retries"), Some("3"));
        assert_eq!(d.env_var("fprocess"), None);
        assert_eq!(d.initial_replicas(), 2);
        assert_eq!(d.limits.as_ref().unwrap().memory.as_deref(), Some("128Mi"));
        assert!(d.read_only_root_filesystem);
        assert_eq!(d.secrets.as_deref(), Some(&["token".to_owned()][..]));
        assert_eq!(d.image, "ghcr.io/example/echo:latest");
        assert_eq!(d.namespace, "");
    }

    #[test]
    fn the_courier_fprocess_key_and_the_default_image() {
        let d = &parse("functions:\n  up:\n    fprocess: tr a-z A-Z\n").unwrap()[0];
        assert_eq!(d.env_process, "tr a-z A-Z");
        assert_eq!(d.image, "local/up:latest");
        assert!(d.env_vars.is_none());
    }

    #[test]
    fn a_function_without_a_command_is_refused_with_its_line() {
        let err = parse("version: 1.0\nfunctions:\n  a:\n    fprocess: cat\n  b:\n    image: x\n")
            .unwrap_err();
        assert_eq!(
            err,
            StackError::NoCommand {
                name: "b".into(),
                line: Some(5)
            }
        );
        assert!(err.to_string().contains("fprocess"), "{err}");
        assert!(err.to_string().contains("line 5"), "{err}");
    }

    #[test]
    fn a_syntax_error_says_where() {
        let err = parse("functions:\n  a:\n    fprocess: cat\n   labels: [\n").unwrap_err();
        assert!(matches!(err, StackError::Invalid { .. }), "{err:?}");
        assert!(err.line().is_some_and(|l| l >= 3), "{err:?}");
        let err = parse("functions:\n  a:\n    secrets: 7\n    fprocess: cat\n").unwrap_err();
        assert_eq!(err.line(), Some(3), "{err:?}");
    }

    #[test]
    fn a_stack_without_functions_is_refused() {
        assert_eq!(parse("version: 1.0\n"), Err(StackError::NoFunctions));
        assert_eq!(parse("functions: {}\n"), Err(StackError::NoFunctions));
    }
}
