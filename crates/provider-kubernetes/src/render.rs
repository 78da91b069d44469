//! A function as Kubernetes objects, and back: plain functions over data, no IO.
//!
//! The objects follow faas-netes (OpenFaaS contract §4) so tools that know OpenFaaS on
//! Kubernetes find what they expect: a Deployment and a ClusterIP Service named after the
//! function, both selected by `faas_function=<name>`, the watchdog on port 8080 named `http`,
//! readiness and liveness by `GET /_/health`, secrets projected read-only into
//! `/var/openfaas/secrets`, `fprocess` and the function's variables in the environment.
//!
//! Two departures, both deliberate:
//!
//! - The Deployment rendered here has no `spec.replicas`: it is what Courier server-side
//!   applies, and replicas belong to whoever scales the function (the provider at creation
//!   and through the scale API, or an autoscaler). See the crate docs.
//! - Every function container runs non-root and locked down (`runAsNonRoot`, `runAsUser`
//!   12000 by default, no privilege escalation, no capabilities, `RuntimeDefault` seccomp);
//!   faas-netes only sets `runAsUser` when asked.
//!
//! One addition: the Deployment carries the deployed [`FunctionDeployment`] as JSON in the
//! [`ANNOTATION_SPEC`] annotation, so a function's status echoes exactly what was sent
//! (`envVars`, `readOnlyRootFilesystem` and absent-versus-empty maps included), which the
//! certifier compares. Functions deployed by someone else (faas-netes, `kubectl`) lack it and
//! are read back from their pod template instead.

use std::collections::BTreeMap;
use std::time::Duration;

use courier_core::function::LABEL_FUNCTION;
use courier_core::{
    FunctionDeployment, FunctionRef, FunctionResources, FunctionStatus, ProviderError,
};
use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment,
};
use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    LocalObjectReference, PodSpec, PodTemplateSpec, Probe, ProjectedVolumeSource,
    ResourceRequirements, SeccompProfile, Secret, SecretProjection, SecurityContext, Service,
    ServicePort, ServiceSpec, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::config::PodOptions;

/// Deployment annotation holding the deployed [`FunctionDeployment`] as JSON.
pub const ANNOTATION_SPEC: &str = "courier.dev/function";
/// Pod template annotation changed by every deploy and update, so each one rolls the pods
/// (a re-pushed tag is pulled again), like faas-netes' `uid` label.
pub const ANNOTATION_REVISION: &str = "courier.dev/revision";
/// The standard "who manages this object" label.
pub const LABEL_MANAGED_BY: &str = "app.kubernetes.io/managed-by";
/// Courier's value of [`LABEL_MANAGED_BY`].
pub const MANAGED_BY: &str = "courier";
/// faas-netes' value of [`LABEL_MANAGED_BY`] on the secrets it creates; Courier lists and
/// manages those too, so functions move over from faas-netes with their secrets.
pub(crate) const MANAGED_BY_OPENFAAS: &str = "openfaas";
/// The watchdog's port in every function container.
pub(crate) const WATCHDOG_PORT: i32 = 8080;
/// Where function secrets appear, one file per key.
pub(crate) const SECRETS_MOUNT_PATH: &str = "/var/openfaas/secrets";
/// faas-netes adds `prometheus.io.scrape: "false"` unless the function sets it.
const ANNOTATION_PROMETHEUS_SCRAPE: &str = "prometheus.io.scrape";
/// The environment variable carrying the function's command.
const ENV_FPROCESS: &str = "fprocess";
/// Secret types that are registry credentials: used as `imagePullSecrets`, not mounted.
const PULL_SECRET_TYPES: [&str; 2] = ["kubernetes.io/dockerconfigjson", "kubernetes.io/dockercfg"];
/// Resource names of [`FunctionResources`], in field order.
const RESOURCE_NAMES: [&str; 5] = [
    "memory",
    "cpu",
    "nvidia.com/gpu",
    "amd.com/gpu",
    "intel.com/gpu",
];

/// The secrets a function names, split by how its pod uses them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SecretUse {
    /// Projected into [`SECRETS_MOUNT_PATH`].
    pub(crate) mounted: Vec<String>,
    /// Registry credentials, used as `imagePullSecrets`.
    pub(crate) pull: Vec<String>,
}

impl SecretUse {
    /// Sorts `name` into mounted or pull by the type of the existing `secret`.
    pub(crate) fn add(&mut self, name: &str, secret: &Secret) {
        let pull = secret
            .type_
            .as_deref()
            .is_some_and(|t| PULL_SECRET_TYPES.contains(&t));
        if pull {
            self.pull.push(name.to_owned());
        } else {
            self.mounted.push(name.to_owned());
        }
    }
}

/// Everything that decides a function's Deployment and Service.
#[derive(Debug)]
pub(crate) struct FunctionObjects<'a> {
    /// Which function.
    pub(crate) function: &'a FunctionRef,
    /// What was deployed.
    pub(crate) spec: &'a FunctionDeployment,
    /// The secrets `spec` names, as they exist in the namespace.
    pub(crate) secrets: &'a SecretUse,
    /// The value of [`ANNOTATION_REVISION`].
    pub(crate) revision: &'a str,
    /// The operator's pod settings.
    pub(crate) pods: &'a PodOptions,
}

impl FunctionObjects<'_> {
    /// The function's Deployment: the complete object Courier applies, which never holds
    /// `spec.replicas` (see [`initial_replicas`]).
    pub(crate) fn deployment(&self) -> Result<Deployment, ProviderError> {
        let name = &self.function.name;
        let selector = function_selector(name);

        let mut deployment_annotations = self.annotations();
        let stored = serde_json::to_string(self.spec)
            .map_err(|e| ProviderError::internal("encode the function spec", e))?;
        deployment_annotations.insert(ANNOTATION_SPEC.to_owned(), stored);

        let mut pod_labels = self.spec.labels.clone().unwrap_or_default();
        pod_labels.extend(selector.clone());
        let mut pod_annotations = self.annotations();
        pod_annotations.insert(ANNOTATION_REVISION.to_owned(), self.revision.to_owned());

        Ok(Deployment {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.function.namespace.clone()),
                labels: Some(object_labels(name)),
                annotations: Some(deployment_annotations),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: None,
                selector: LabelSelector {
                    match_labels: Some(selector),
                    ..LabelSelector::default()
                },
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_unavailable: Some(IntOrString::Int(0)),
                        max_surge: Some(IntOrString::Int(1)),
                    }),
                }),
                revision_history_limit: Some(10),
                template: PodTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(pod_labels),
                        annotations: Some(pod_annotations),
                        ..ObjectMeta::default()
                    }),
                    spec: Some(self.pod_spec()?),
                },
                ..DeploymentSpec::default()
            }),
            status: None,
        })
    }

    /// The function's Service: ClusterIP, port `http` 8080, selecting its pods.
    pub(crate) fn service(&self) -> Service {
        let name = &self.function.name;
        Service {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: Some(self.function.namespace.clone()),
                labels: Some(object_labels(name)),
                annotations: Some(self.annotations()),
                ..ObjectMeta::default()
            },
            spec: Some(ServiceSpec {
                type_: Some("ClusterIP".into()),
                selector: Some(function_selector(name)),
                ports: Some(vec![ServicePort {
                    name: Some("http".into()),
                    protocol: Some("TCP".into()),
                    port: WATCHDOG_PORT,
                    target_port: Some(IntOrString::Int(WATCHDOG_PORT)),
                    ..ServicePort::default()
                }]),
                ..ServiceSpec::default()
            }),
            status: None,
        }
    }

    /// The user's annotations plus `prometheus.io.scrape: "false"` unless they set it.
    fn annotations(&self) -> BTreeMap<String, String> {
        let mut annotations = self.spec.annotations.clone().unwrap_or_default();
        annotations
            .entry(ANNOTATION_PROMETHEUS_SCRAPE.to_owned())
            .or_insert_with(|| "false".to_owned());
        annotations
    }

    fn pod_spec(&self) -> Result<PodSpec, ProviderError> {
        let spec = self.spec;
        let name = &self.function.name;
        let pods = self.pods;

        let mut env = Vec::new();
        if !spec.env_process.is_empty() {
            env.push(env_var(ENV_FPROCESS, &spec.env_process));
        }
        for (key, value) in spec.env_vars.iter().flatten() {
            if key == ENV_FPROCESS && !spec.env_process.is_empty() {
                continue; // envProcess wins, as in faas-netes.
            }
            env.push(env_var(key, value));
        }

        let mut volumes = Vec::new();
        let mut mounts = Vec::new();
        if !self.secrets.mounted.is_empty() {
            let volume = format!("{name}-projected-secrets");
            volumes.push(Volume {
                name: volume.clone(),
                projected: Some(ProjectedVolumeSource {
                    sources: Some(
                        self.secrets
                            .mounted
                            .iter()
                            .map(|secret| VolumeProjection {
                                secret: Some(SecretProjection {
                                    name: secret.clone(),
                                    ..SecretProjection::default()
                                }),
                                ..VolumeProjection::default()
                            })
                            .collect(),
                    ),
                    ..ProjectedVolumeSource::default()
                }),
                ..Volume::default()
            });
            mounts.push(VolumeMount {
                name: volume,
                mount_path: SECRETS_MOUNT_PATH.into(),
                read_only: Some(true),
                ..VolumeMount::default()
            });
        }
        if spec.read_only_root_filesystem {
            volumes.push(Volume {
                name: "temp".into(),
                empty_dir: Some(EmptyDirVolumeSource::default()),
                ..Volume::default()
            });
            mounts.push(VolumeMount {
                name: "temp".into(),
                mount_path: "/tmp".into(),
                ..VolumeMount::default()
            });
        }

        let resources =
            (spec.limits.is_some() || spec.requests.is_some()).then(|| ResourceRequirements {
                limits: spec.limits.as_ref().and_then(quantities),
                requests: spec.requests.as_ref().and_then(quantities),
                ..ResourceRequirements::default()
            });

        Ok(PodSpec {
            containers: vec![Container {
                name: name.clone(),
                image: Some(spec.image.clone()),
                image_pull_policy: pods.image_pull_policy.clone(),
                ports: Some(vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: WATCHDOG_PORT,
                    protocol: Some("TCP".into()),
                    ..ContainerPort::default()
                }]),
                env: (!env.is_empty()).then_some(env),
                resources,
                readiness_probe: Some(health_probe(pods)),
                liveness_probe: Some(health_probe(pods)),
                security_context: Some(security_context(spec, pods)),
                volume_mounts: (!mounts.is_empty()).then_some(mounts),
                ..Container::default()
            }],
            node_selector: node_selector(spec.constraints.as_deref().unwrap_or_default())?,
            image_pull_secrets: (!self.secrets.pull.is_empty()).then(|| {
                self.secrets
                    .pull
                    .iter()
                    .map(|name| LocalObjectReference { name: name.clone() })
                    .collect()
            }),
            volumes: (!volumes.is_empty()).then_some(volumes),
            // A function needs no variables for every Service in its namespace.
            enable_service_links: Some(false),
            ..PodSpec::default()
        })
    }
}

/// The replicas a new function starts with: `com.openfaas.scale.min` if above 0, else 1
/// (faas-netes). Set once, at creation, through the scale subresource; an update never
/// changes it.
pub(crate) fn initial_replicas(spec: &FunctionDeployment) -> u64 {
    spec.min_replicas().filter(|&min| min > 0).unwrap_or(1)
}

/// A function container's security context: non-root and locked down whatever the function
/// asks (the `restricted` Pod Security level), the root file system read-only as it asks.
fn security_context(spec: &FunctionDeployment, pods: &PodOptions) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: pods.run_as_user,
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        read_only_root_filesystem: Some(spec.read_only_root_filesystem),
        ..SecurityContext::default()
    }
}

/// A Secret as `/system/secrets` creates it: Opaque, one key named after the secret.
pub(crate) fn secret(namespace: &str, name: &str, value: Vec<u8>) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(
                LABEL_MANAGED_BY.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".into()),
        data: Some(BTreeMap::from([(
            name.to_owned(),
            k8s_openapi::ByteString(value),
        )])),
        ..Secret::default()
    }
}

/// The label selector of the secrets `/system/secrets` manages (Courier's and faas-netes').
pub(crate) fn managed_secrets_selector() -> String {
    format!("{LABEL_MANAGED_BY} in ({MANAGED_BY},{MANAGED_BY_OPENFAAS})")
}

/// Whether `/system/secrets` manages this secret.
pub(crate) fn is_managed_secret(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .and_then(|labels| labels.get(LABEL_MANAGED_BY))
        .is_some_and(|v| v == MANAGED_BY || v == MANAGED_BY_OPENFAAS)
}

/// Whether a Deployment is a function (carries `faas_function`).
pub(crate) fn is_function(deployment: &Deployment) -> bool {
    deployment
        .metadata
        .labels
        .as_ref()
        .is_some_and(|labels| labels.contains_key(LABEL_FUNCTION))
}

/// A function Deployment as `/system/function/{name}` reports it.
pub(crate) fn status(deployment: &Deployment) -> FunctionStatus {
    let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
    let replicas = deployment
        .spec
        .as_ref()
        .and_then(|s| s.replicas)
        .unwrap_or(1);
    let available = deployment
        .status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0);
    let created_at = deployment
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.to_string())
        .unwrap_or_default();
    let spec = stored_spec(deployment).unwrap_or_else(|| spec_from_pod_template(deployment));
    FunctionStatus::from_deployment(
        &spec,
        &namespace,
        u64::try_from(replicas).unwrap_or(0),
        u64::try_from(available).unwrap_or(0),
        created_at,
    )
}

/// The secrets a function Deployment was deployed with.
pub(crate) fn deployed_secrets(deployment: &Deployment) -> Vec<String> {
    stored_spec(deployment)
        .unwrap_or_else(|| spec_from_pod_template(deployment))
        .secrets
        .unwrap_or_default()
}

/// The [`FunctionDeployment`] in [`ANNOTATION_SPEC`], when present and readable.
fn stored_spec(deployment: &Deployment) -> Option<FunctionDeployment> {
    let json = deployment
        .metadata
        .annotations
        .as_ref()?
        .get(ANNOTATION_SPEC)?;
    match serde_json::from_str(json) {
        Ok(spec) => Some(spec),
        Err(e) => {
            tracing::warn!(
                deployment = deployment.metadata.name.as_deref().unwrap_or_default(),
                error = %e,
                "Stored function spec is unreadable; reading the pod template instead."
            );
            None
        }
    }
}

/// What a Deployment without [`ANNOTATION_SPEC`] runs, read back the way faas-netes does.
fn spec_from_pod_template(deployment: &Deployment) -> FunctionDeployment {
    let name = deployment.metadata.name.clone().unwrap_or_default();
    let template = deployment.spec.as_ref().map(|s| &s.template);
    let meta = template.and_then(|t| t.metadata.as_ref());
    let pod = template.and_then(|t| t.spec.as_ref());
    let container = pod.and_then(|p| {
        p.containers
            .iter()
            .find(|c| c.name == name)
            .or_else(|| p.containers.first())
    });

    let mut env_process = String::new();
    let mut env_vars = BTreeMap::new();
    for var in container.and_then(|c| c.env.as_ref()).into_iter().flatten() {
        let value = var.value.clone().unwrap_or_default();
        if var.name == ENV_FPROCESS {
            env_process = value;
        } else {
            env_vars.insert(var.name.clone(), value);
        }
    }

    let mut labels = meta.and_then(|m| m.labels.clone()).unwrap_or_default();
    labels.remove(LABEL_FUNCTION); // FunctionStatus adds it back.
    let mut annotations = meta.and_then(|m| m.annotations.clone()).unwrap_or_default();
    annotations.retain(|key, _| !key.starts_with("courier.dev/"));

    let mut secrets: Vec<String> = pod
        .and_then(|p| p.volumes.as_ref())
        .into_iter()
        .flatten()
        .filter_map(|v| v.projected.as_ref()?.sources.as_ref())
        .flatten()
        .filter_map(|source| Some(source.secret.as_ref()?.name.clone()))
        .chain(
            pod.and_then(|p| p.image_pull_secrets.as_ref())
                .into_iter()
                .flatten()
                .map(|r| r.name.clone()),
        )
        .collect();
    secrets.sort();
    secrets.dedup();

    let resources = container.and_then(|c| c.resources.as_ref());
    let constraints: Vec<String> = pod
        .and_then(|p| p.node_selector.as_ref())
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();

    FunctionDeployment {
        service: name,
        image: container.and_then(|c| c.image.clone()).unwrap_or_default(),
        namespace: deployment.metadata.namespace.clone().unwrap_or_default(),
        env_process,
        env_vars: (!env_vars.is_empty()).then_some(env_vars),
        constraints: (!constraints.is_empty()).then_some(constraints),
        secrets: (!secrets.is_empty()).then_some(secrets),
        labels: Some(labels),
        annotations: Some(annotations),
        limits: resources
            .and_then(|r| r.limits.as_ref())
            .and_then(function_resources),
        requests: resources
            .and_then(|r| r.requests.as_ref())
            .and_then(function_resources),
        read_only_root_filesystem: container
            .and_then(|c| c.security_context.as_ref())
            .and_then(|s| s.read_only_root_filesystem)
            .unwrap_or(false),
    }
}

/// `faas_function=<name>`: the Deployment's selector and the Service's.
fn function_selector(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(LABEL_FUNCTION.to_owned(), name.to_owned())])
}

/// Labels of the Deployment and Service themselves.
fn object_labels(name: &str) -> BTreeMap<String, String> {
    let mut labels = function_selector(name);
    labels.insert(LABEL_MANAGED_BY.to_owned(), MANAGED_BY.to_owned());
    labels
}

fn env_var(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

fn health_probe(pods: &PodOptions) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some("/_/health".into()),
            port: IntOrString::Int(WATCHDOG_PORT),
            scheme: Some("HTTP".into()),
            ..HTTPGetAction::default()
        }),
        initial_delay_seconds: Some(seconds(pods.probe_initial_delay, 0)),
        period_seconds: Some(seconds(pods.probe_period, 1)),
        timeout_seconds: Some(seconds(pods.probe_timeout, 1)),
        success_threshold: Some(1),
        failure_threshold: Some(3),
        ..Probe::default()
    }
}

/// Whole seconds, rounded up, at least `min`.
fn seconds(d: Duration, min: i32) -> i32 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    i32::try_from(secs).unwrap_or(i32::MAX).max(min)
}

/// Resources as the quantities Kubernetes takes; `None` when none is set. The strings are
/// passed on exactly as sent; the API server refuses malformed ones.
fn quantities(resources: &FunctionResources) -> Option<BTreeMap<String, Quantity>> {
    let values = [
        &resources.memory,
        &resources.cpu,
        &resources.nvidia_gpu,
        &resources.amd_gpu,
        &resources.intel_gpu,
    ];
    let map: BTreeMap<String, Quantity> = RESOURCE_NAMES
        .iter()
        .zip(values)
        .filter_map(|(name, value)| {
            let value = value.as_deref()?.trim();
            (!value.is_empty()).then(|| ((*name).to_owned(), Quantity(value.to_owned())))
        })
        .collect();
    (!map.is_empty()).then_some(map)
}

/// The reverse of [`quantities`].
fn function_resources(map: &BTreeMap<String, Quantity>) -> Option<FunctionResources> {
    let get = |name: &str| map.get(name).map(|q| q.0.clone());
    let resources = FunctionResources {
        memory: get("memory"),
        cpu: get("cpu"),
        nvidia_gpu: get("nvidia.com/gpu"),
        amd_gpu: get("amd.com/gpu"),
        intel_gpu: get("intel.com/gpu"),
    };
    (resources != FunctionResources::default()).then_some(resources)
}

/// Constraints as a node selector: each is `key=value` (or swarm-style `key == value`).
fn node_selector(
    constraints: &[String],
) -> Result<Option<BTreeMap<String, String>>, ProviderError> {
    let mut selector = BTreeMap::new();
    for constraint in constraints {
        let parsed = constraint
            .split_once("==")
            .or_else(|| constraint.split_once('='))
            .map(|(k, v)| (k.trim(), v.trim()))
            .filter(|(k, _)| !k.is_empty());
        let Some((key, value)) = parsed else {
            return Err(ProviderError::Invalid(format!(
                "constraints: {constraint:?} is not of the form key=value"
            )));
        };
        selector.insert(key.to_owned(), value.to_owned());
    }
    Ok((!selector.is_empty()).then_some(selector))
}

#[cfg(test)]
mod tests;
