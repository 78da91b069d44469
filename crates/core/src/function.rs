//! FunctionDeployment (what is deployed) and FunctionStatus (what is reported back), with the
//! exact OpenFaaS key names. Maps are ordered so responses are stable.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::decode::{GoDecode, Schema};

/// Label giving the minimum (and initial) replica count.
pub const LABEL_SCALE_MIN: &str = "com.openfaas.scale.min";
/// Label giving the maximum replica count.
pub const LABEL_SCALE_MAX: &str = "com.openfaas.scale.max";
/// Most replicas one function may ask for (a local machine's sanity bound, not a licence cap).
pub const MAX_REPLICAS: u64 = 100;
/// Label every function carries: `faas_function=<name>`.
pub const LABEL_FUNCTION: &str = "faas_function";

/// CPU and memory (and accelerators) as Kubernetes quantity strings, kept exactly as sent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FunctionResources {
    /// Memory, e.g. `128M`, `5Mi`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPU, e.g. `100m`, `0.5`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu: Option<String>,
    /// NVIDIA GPUs.
    #[serde(rename = "nvidia.com/gpu", skip_serializing_if = "Option::is_none")]
    pub nvidia_gpu: Option<String>,
    /// AMD GPUs.
    #[serde(rename = "amd.com/gpu", skip_serializing_if = "Option::is_none")]
    pub amd_gpu: Option<String>,
    /// Intel GPUs.
    #[serde(rename = "intel.com/gpu", skip_serializing_if = "Option::is_none")]
    pub intel_gpu: Option<String>,
}

static RESOURCES_SCHEMA: Schema = Schema {
    fields: &[
        ("memory", None),
        ("cpu", None),
        ("nvidia.com/gpu", None),
        ("amd.com/gpu", None),
        ("intel.com/gpu", None),
    ],
};

/// The body of `POST/PUT /system/functions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FunctionDeployment {
    /// The function's name.
    pub service: String,
    /// The image; the local provider keeps and reports it but runs `env_process`.
    pub image: String,
    /// The namespace; empty means the default one.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// The command (OpenFaaS's `fprocess`).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub env_process: String,
    /// Environment variables for the function process.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Placement constraints (provider specific).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<String>>,
    /// Names of secrets to mount at `/var/openfaas/secrets/<name>`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// Labels (scaling labels among them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    /// Annotations (`topic`, `schedule`, retry settings, ...).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
    /// Resource limits, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<FunctionResources>,
    /// Resource requests, as sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<FunctionResources>,
    /// Whether the function asked for a read-only root filesystem.
    pub read_only_root_filesystem: bool,
}

impl GoDecode for FunctionDeployment {
    const SCHEMA: &'static Schema = &Schema {
        fields: &[
            ("service", None),
            ("image", None),
            ("namespace", None),
            ("envProcess", None),
            ("envVars", None),
            ("constraints", None),
            ("secrets", None),
            ("labels", None),
            ("annotations", None),
            ("limits", Some(&RESOURCES_SCHEMA)),
            ("requests", Some(&RESOURCES_SCHEMA)),
            ("readOnlyRootFilesystem", None),
        ],
    };
}

impl FunctionDeployment {
    /// The minimum replica count from `com.openfaas.scale.min`, if set and valid.
    pub fn min_replicas(&self) -> Option<u64> {
        self.labels
            .as_ref()?
            .get(LABEL_SCALE_MIN)?
            .trim()
            .parse()
            .ok()
    }

    /// The replica count a fresh deployment starts with: `com.openfaas.scale.min`, else 1.
    pub fn initial_replicas(&self) -> u64 {
        self.min_replicas().unwrap_or(1)
    }

    /// The value of an environment variable the function was deployed with.
    pub fn env_var(&self, key: &str) -> Option<&str> {
        self.env_vars.as_ref()?.get(key).map(String::as_str)
    }

    /// A test fixture: a fork-mode function running `command`.
    pub fn test(name: &str, command: &str) -> Self {
        Self {
            service: name.to_owned(),
            image: format!("local/{name}:latest"),
            env_process: command.to_owned(),
            ..Self::default()
        }
    }
}

/// An element of `GET /system/functions` and the body of `GET /system/function/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FunctionStatus {
    /// The function's name.
    pub name: String,
    /// The image, as deployed.
    pub image: String,
    /// The namespace.
    pub namespace: String,
    /// The command, as deployed.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub env_process: String,
    /// Environment variables, only when they were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub env_vars: Option<BTreeMap<String, String>>,
    /// Constraints, only when they were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub constraints: Option<Vec<String>>,
    /// Secrets, only when they were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<Vec<String>>,
    /// Labels, always an object; includes `faas_function=<name>`.
    pub labels: BTreeMap<String, String>,
    /// Annotations, always an object.
    pub annotations: BTreeMap<String, String>,
    /// Limits, only when they were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limits: Option<FunctionResources>,
    /// Requests, only when they were sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<FunctionResources>,
    /// As requested at deploy time.
    pub read_only_root_filesystem: bool,
    /// Completed invocations counted by the gateway (filled in on the list endpoint).
    #[serde(serialize_with = "go_float")]
    pub invocation_count: f64,
    /// Desired replicas.
    pub replicas: u64,
    /// Replicas ready to serve.
    pub available_replicas: u64,
    /// Creation time, RFC 3339.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub created_at: String,
}

impl FunctionStatus {
    /// The status of `spec` with the given replica counts; echoes exactly what was deployed.
    pub fn from_deployment(
        spec: &FunctionDeployment,
        namespace: &str,
        replicas: u64,
        available_replicas: u64,
        created_at: String,
    ) -> Self {
        let mut labels = spec.labels.clone().unwrap_or_default();
        labels.insert(LABEL_FUNCTION.to_owned(), spec.service.clone());
        Self {
            name: spec.service.clone(),
            image: spec.image.clone(),
            namespace: namespace.to_owned(),
            env_process: spec.env_process.clone(),
            env_vars: spec.env_vars.clone(),
            constraints: spec.constraints.clone(),
            secrets: spec.secrets.clone(),
            labels,
            annotations: spec.annotations.clone().unwrap_or_default(),
            limits: spec.limits.clone(),
            requests: spec.requests.clone(),
            read_only_root_filesystem: spec.read_only_root_filesystem,
            invocation_count: 0.0,
            replicas,
            available_replicas,
            created_at,
        }
    }
}

/// Writes a float the way Go's encoder does: whole numbers without a fraction (`3`, not `3.0`).
fn go_float<S: serde::Serializer>(value: &f64, serializer: S) -> Result<S::Ok, S::Error> {
    if value.fract() == 0.0 && value.abs() < 9.0e15 {
        serializer.serialize_i64(*value as i64)
    } else {
        serializer.serialize_f64(*value)
    }
}

/// The body of `POST /system/scale-function/{name}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ScaleServiceRequest {
    /// The function's name (the path names it too).
    pub service_name: String,
    /// The wanted replica count; 0 is allowed.
    pub replicas: u64,
    /// The namespace (the query parameter wins).
    pub namespace: String,
}

impl GoDecode for ScaleServiceRequest {
    const SCHEMA: &'static Schema = &Schema {
        fields: &[
            ("serviceName", None),
            ("replicas", None),
            ("namespace", None),
        ],
    };
}

/// The body of `DELETE /system/functions`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DeleteFunctionRequest {
    /// The function to remove.
    pub function_name: String,
    /// The namespace (the query parameter wins).
    pub namespace: String,
}

impl GoDecode for DeleteFunctionRequest {
    const SCHEMA: &'static Schema = &Schema {
        fields: &[("functionName", None), ("namespace", None)],
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{decode_form, decode_json};

    #[test]
    fn status_echoes_the_deployment_and_omits_what_was_not_sent() {
        let spec = decode_json::<FunctionDeployment>(
            br#"{"service":"memory-limit","image":"functions/alpine:latest","envProcess":"env",
                 "labels":null,"annotations":null,"limits":{"memory":"5Mi","cpu":"100m"}}"#,
        )
        .unwrap();
        let status = FunctionStatus::from_deployment(&spec, "openfaas-fn", 1, 1, "t".into());
        let json = serde_json::to_value(&status).unwrap();
        assert_eq!(
            json["labels"],
            serde_json::json!({"faas_function": "memory-limit"})
        );
        assert_eq!(json["annotations"], serde_json::json!({}));
        assert_eq!(
            json["limits"],
            serde_json::json!({"memory": "5Mi", "cpu": "100m"})
        );
        for absent in ["envVars", "requests", "secrets", "constraints"] {
            assert!(json.get(absent).is_none(), "{absent} must be absent");
        }
        assert_eq!(json["readOnlyRootFilesystem"], false);
        assert_eq!(json["envProcess"], "env");
    }

    #[test]
    fn empty_env_vars_stay_present_when_sent() {
        let spec =
            decode_json::<FunctionDeployment>(br#"{"service":"a","image":"i","envVars":{}}"#)
                .unwrap();
        let status = FunctionStatus::from_deployment(&spec, "ns", 1, 0, String::new());
        assert_eq!(
            serde_json::to_value(&status).unwrap()["envVars"],
            serde_json::json!({})
        );
    }

    #[test]
    fn scale_min_label_sets_initial_replicas() {
        let mut spec = FunctionDeployment::test("a", "cat");
        assert_eq!(spec.initial_replicas(), 1);
        spec.labels = Some([(LABEL_SCALE_MIN.to_owned(), "2".to_owned())].into());
        assert_eq!(spec.initial_replicas(), 2);
    }

    #[test]
    fn airflow_form_body_decodes() {
        let spec: FunctionDeployment =
            decode_form(b"service=hello&image=img%3A1&envProcess=cat&namespace=").unwrap();
        assert_eq!(spec.service, "hello");
        assert_eq!(spec.image, "img:1");
        assert_eq!(spec.env_process, "cat");
    }
}
