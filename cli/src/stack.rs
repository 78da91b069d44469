//! faas-cli stack files (`stack.yml`): the `functions` map, turned into FunctionDeployments.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result, bail};
use courier_core::{FunctionDeployment, FunctionResources};
use serde::Deserialize;

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

/// Parses stack YAML into deployments, in name order.
pub(crate) fn parse(yaml: &str) -> Result<Vec<FunctionDeployment>> {
    let stack: StackFile = serde_saphyr::from_str(yaml).context("invalid stack file")?;
    if stack.functions.is_empty() {
        bail!("the stack file has no functions");
    }
    stack
        .functions
        .into_iter()
        .map(|(name, f)| {
            let mut env = strings(f.environment).unwrap_or_default();
            let env_process = f
                .fprocess
                .or_else(|| env.remove("fprocess"))
                .with_context(|| {
                    format!("function {name}: set environment.fprocess to its command")
                })?;
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

/// Reads and parses a stack file.
pub(crate) fn load(path: &Path) -> Result<Vec<FunctionDeployment>> {
    let yaml = std::fs::read_to_string(path)
        .with_context(|| format!("reading stack file {}", path.display()))?;
    parse(&yaml).with_context(|| format!("in {}", path.display()))
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
    }

    #[test]
    fn a_function_without_a_command_is_refused() {
        let err = parse("functions:\n  a:\n    image: x\n").unwrap_err();
        assert!(format!("{err:#}").contains("fprocess"));
    }
}
