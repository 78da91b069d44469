//! The Kubernetes manifests, checked without a cluster.
//!
//! Each kustomize tree (`base`, `overlays/dev`, `overlays/production`) is rendered with
//! `kubectl kustomize` (a missing kubectl fails the tests: they are never skipped), every
//! object is parsed into its k8s-openapi type (an unknown kind, or a field the type does not
//! know, fails), and then the rules are checked: locked-down containers, least-privilege RBAC,
//! references that resolve, budgets that let a node drain and keep NATS's quorum, overlays that
//! only adjust the base. The examples and the Dockerfile are checked too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, Result, bail, ensure};
use courier_deploy::{
    Object, deploy_dir, kubernetes_dir, lost_fields, parse_yaml, quantity, read_objects,
    read_to_string, render_objects,
};
use courier_provider_kubernetes::{PERMISSIONS, PermissionScope};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{
    ConfigMap, Container, Namespace, PodSpec, PodTemplateSpec, Secret, Service, ServiceAccount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

const TREES: [&str; 3] = ["base", "overlays/dev", "overlays/production"];
const CONTROL_PLANE: &str = "courier";
const FUNCTIONS: &str = "openfaas-fn";
const COURIER_IMAGE: &str = "ghcr.io/courier-dev/courier:0.1.0";
const NATS_IMAGE: &str = "nats:2.10-alpine";
/// The Secrets the operator creates (deploy/README.md); no tree holds a Secret.
const EXTERNAL_SECRETS: [&str; 2] = ["courier-basic-auth", "courier-amqp"];

// ---------------------------------------------------------------------------------------------
// Rendering and typed parsing.

/// A rendered tree, every object in its k8s-openapi type.
#[derive(Default)]
struct Tree {
    name: String,
    objects: Vec<Object>,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    config_maps: Vec<ConfigMap>,
    secrets: Vec<Secret>,
    services: Vec<Service>,
    deployments: Vec<Deployment>,
    stateful_sets: Vec<StatefulSet>,
    budgets: Vec<PodDisruptionBudget>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    autoscalers: Vec<HorizontalPodAutoscaler>,
}

/// Parses `object` into `T`, and fails when the typed round trip loses a field (k8s-openapi
/// ignores fields it does not know: a misspelt field would otherwise pass unseen).
fn typed<T: DeserializeOwned + Serialize>(object: &Object) -> Result<T> {
    let value: T = serde_json::from_value(object.value.clone()).with_context(|| {
        format!(
            "{} does not parse as {}",
            object.id(),
            std::any::type_name::<T>()
        )
    })?;
    let back = serde_json::to_value(&value)?;
    let lost = lost_fields(&object.value, &back);
    ensure!(
        lost.is_empty(),
        "{}: fields that {} does not know (misspelt or misplaced?): {}",
        object.id(),
        std::any::type_name::<T>(),
        lost.join(", ")
    );
    Ok(value)
}

/// Each tree is rendered once per test run (kubectl takes about half a second a tree).
fn rendered(tree: &str) -> Result<Vec<Object>> {
    static RENDERED: Mutex<BTreeMap<String, Vec<Object>>> = Mutex::new(BTreeMap::new());
    if let Some(objects) = RENDERED.lock().expect("not poisoned").get(tree) {
        return Ok(objects.clone());
    }
    let objects = render_objects(&kubernetes_dir().join(tree))?;
    RENDERED
        .lock()
        .expect("not poisoned")
        .insert(tree.to_owned(), objects.clone());
    Ok(objects)
}

impl Tree {
    fn render(tree: &str) -> Result<Self> {
        Self::from_objects(tree, rendered(tree)?)
    }

    fn from_objects(name: &str, objects: Vec<Object>) -> Result<Self> {
        let mut tree = Tree {
            name: name.to_owned(),
            ..Tree::default()
        };
        for object in &objects {
            match object.kind.as_str() {
                "Namespace" => tree.namespaces.push(typed(object)?),
                "ServiceAccount" => tree.service_accounts.push(typed(object)?),
                "ConfigMap" => tree.config_maps.push(typed(object)?),
                "Secret" => tree.secrets.push(typed(object)?),
                "Service" => tree.services.push(typed(object)?),
                "Deployment" => tree.deployments.push(typed(object)?),
                "StatefulSet" => tree.stateful_sets.push(typed(object)?),
                "PodDisruptionBudget" => tree.budgets.push(typed(object)?),
                "Role" => tree.roles.push(typed(object)?),
                "RoleBinding" => tree.role_bindings.push(typed(object)?),
                "ClusterRole" => tree.cluster_roles.push(typed(object)?),
                "ClusterRoleBinding" => tree.cluster_role_bindings.push(typed(object)?),
                "HorizontalPodAutoscaler" => tree.autoscalers.push(typed(object)?),
                other => bail!(
                    "{name}: {} is of kind {other}, which these tests cannot parse: add its \
                     k8s-openapi type to Tree::from_objects, and checks for it",
                    object.id()
                ),
            }
        }
        tree.objects = objects;
        Ok(tree)
    }

    /// The Deployments and StatefulSets.
    fn workloads(&self) -> Result<Vec<Workload<'_>>> {
        let mut all = Vec::new();
        for d in &self.deployments {
            let spec = d.spec.as_ref().context("a Deployment without spec")?;
            all.push(Workload::new(
                "Deployment",
                &d.metadata,
                spec.replicas,
                &spec.template,
            )?);
        }
        for s in &self.stateful_sets {
            let spec = s.spec.as_ref().context("a StatefulSet without spec")?;
            all.push(Workload::new(
                "StatefulSet",
                &s.metadata,
                spec.replicas,
                &spec.template,
            )?);
        }
        Ok(all)
    }

    fn workload(&self, name: &str) -> Result<Workload<'_>> {
        self.workloads()?
            .into_iter()
            .find(|w| w.name == name)
            .with_context(|| format!("{}: no workload {name}", self.name))
    }

    fn nats(&self) -> Result<&StatefulSet> {
        find(&self.stateful_sets, CONTROL_PLANE, "nats")
            .with_context(|| format!("{}: no StatefulSet nats", self.name))
    }

    /// `Kind namespace/name` of every object, generated names without their hash suffix.
    fn ids(&self) -> BTreeSet<String> {
        self.objects
            .iter()
            .map(|o| {
                let name = without_hash_suffix(&o.kind, &o.name);
                match &o.namespace {
                    Some(ns) => format!("{} {ns}/{name}", o.kind),
                    None => format!("{} {name}", o.kind),
                }
            })
            .collect()
    }
}

/// A ConfigMap or Secret from a kustomize generator carries `-<hash>`; this is its name
/// without it (kustomize's hash alphabet: hex with 0, 1, 3, a, e replaced by g, h, k, m, t).
fn without_hash_suffix<'a>(kind: &str, name: &'a str) -> &'a str {
    if !matches!(kind, "ConfigMap" | "Secret") {
        return name;
    }
    match name.rsplit_once('-') {
        Some((stem, hash))
            if hash.len() == 10 && hash.chars().all(|c| "2456789bcdfghkmt".contains(c)) =>
        {
            stem
        }
        _ => name,
    }
}

fn find<'a, T>(items: &'a [T], namespace: &str, name: &str) -> Option<&'a T>
where
    T: k8s_openapi::Metadata<Ty = ObjectMeta>,
{
    items.iter().find(|i| {
        let m = i.metadata();
        m.name.as_deref() == Some(name) && m.namespace.as_deref() == Some(namespace)
    })
}

fn name(meta: &ObjectMeta) -> &str {
    meta.name.as_deref().unwrap_or("(unnamed)")
}

/// A Deployment or StatefulSet: what every check of pods needs.
struct Workload<'a> {
    id: String,
    name: &'a str,
    namespace: &'a str,
    replicas: i32,
    labels: &'a BTreeMap<String, String>,
    pod: &'a PodSpec,
}

impl<'a> Workload<'a> {
    fn new(
        kind: &str,
        meta: &'a ObjectMeta,
        replicas: Option<i32>,
        template: &'a PodTemplateSpec,
    ) -> Result<Self> {
        let name = name(meta);
        let namespace = meta.namespace.as_deref().unwrap_or("(none)");
        let id = format!("{kind} {namespace}/{name}");
        let labels = template
            .metadata
            .as_ref()
            .and_then(|m| m.labels.as_ref())
            .with_context(|| format!("{id}: the pod template has no labels"))?;
        let pod = template
            .spec
            .as_ref()
            .with_context(|| format!("{id}: the pod template has no spec"))?;
        Ok(Self {
            id,
            name,
            namespace,
            replicas: replicas.unwrap_or(1),
            labels,
            pod,
        })
    }

    /// Every container, init containers included, with `true` for init containers.
    fn containers(&self) -> impl Iterator<Item = (&'a Container, bool)> {
        let init = self.pod.init_containers.iter().flatten().map(|c| (c, true));
        self.pod.containers.iter().map(|c| (c, false)).chain(init)
    }

    fn container(&self, name: &str) -> Result<&'a Container> {
        self.pod
            .containers
            .iter()
            .find(|c| c.name == name)
            .with_context(|| format!("{}: no container {name}", self.id))
    }

    fn selected_by(&self, namespace: Option<&str>, selector: &BTreeMap<String, String>) -> bool {
        namespace == Some(self.namespace)
            && !selector.is_empty()
            && selector.iter().all(|(k, v)| self.labels.get(k) == Some(v))
    }
}

/// The number a container port reference (`8080` or `http`) points at in `container`.
fn port_number(container: &Container, port: &IntOrString) -> Option<i32> {
    match port {
        IntOrString::Int(n) => Some(*n),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port),
    }
}

fn all_trees() -> Result<Vec<Tree>> {
    TREES.iter().map(|t| Tree::render(t)).collect()
}

/// Runs `check` on every tree and fails with every problem found, not only the first.
fn each_tree(check: impl Fn(&Tree, &mut Vec<String>) -> Result<()>) -> Result<()> {
    let mut problems = Vec::new();
    for tree in all_trees()? {
        let mut found = Vec::new();
        check(&tree, &mut found)?;
        problems.extend(found.into_iter().map(|p| format!("{}: {p}", tree.name)));
    }
    ensure!(problems.is_empty(), "\n  {}", problems.join("\n  "));
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// What each tree holds.

#[test]
fn every_tree_renders_and_every_object_parses_into_its_kubernetes_type() -> Result<()> {
    for tree in all_trees()? {
        ensure!(!tree.objects.is_empty(), "{}: renders nothing", tree.name);
        let mut seen = BTreeSet::new();
        for o in &tree.objects {
            ensure!(seen.insert(o.id()), "{}: {} twice", tree.name, o.id());
        }
    }
    Ok(())
}

#[test]
fn the_base_holds_the_whole_stack() -> Result<()> {
    let base = Tree::render("base")?;
    let expected = [
        "Namespace courier",
        "Namespace openfaas-fn",
        "Deployment courier/gateway",
        "Deployment courier/queue-worker",
        "Deployment courier/scheduler",
        "Deployment courier/connector-kafka",
        "Deployment courier/connector-amqp",
        "StatefulSet courier/nats",
        "Service courier/gateway",
        "Service courier/nats",
        "Service courier/nats-headless",
        "PodDisruptionBudget courier/gateway",
        "PodDisruptionBudget courier/queue-worker",
        "PodDisruptionBudget courier/nats",
        "ConfigMap courier/courier-connectors",
        "ConfigMap courier/nats-config",
        "ServiceAccount courier/courier-gateway",
        "ServiceAccount courier/courier-queue-worker",
        "ServiceAccount courier/courier-scheduler",
        "ServiceAccount courier/courier-connector-kafka",
        "ServiceAccount courier/courier-connector-amqp",
        "ServiceAccount courier/nats",
        "ClusterRole courier-provider",
        "RoleBinding openfaas-fn/courier-provider",
        "ClusterRole courier-namespace-reader",
        "ClusterRoleBinding courier-namespace-reader",
    ];
    let ids = base.ids();
    let expected: BTreeSet<String> = expected.iter().map(|s| (*s).to_owned()).collect();
    let missing: Vec<_> = expected.difference(&ids).collect();
    let unexpected: Vec<_> = ids.difference(&expected).collect();
    ensure!(
        missing.is_empty() && unexpected.is_empty(),
        "base: missing {missing:?}; not in the list of the stack's objects {unexpected:?}"
    );
    Ok(())
}

#[test]
fn overlays_keep_every_object_of_the_base() -> Result<()> {
    let base = Tree::render("base")?.ids();
    for overlay in ["overlays/dev", "overlays/production"] {
        let ids = Tree::render(overlay)?.ids();
        let dropped: Vec<_> = base.difference(&ids).collect();
        ensure!(dropped.is_empty(), "{overlay} drops {dropped:?}");
        let added: Vec<_> = ids.difference(&base).collect();
        ensure!(
            added.is_empty(),
            "{overlay} adds {added:?}: overlays only adjust the base"
        );
    }
    Ok(())
}

#[test]
fn objects_live_in_the_control_plane_namespace_except_the_providers_binding() -> Result<()> {
    each_tree(|tree, problems| {
        let courier = tree
            .namespaces
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some(CONTROL_PLANE));
        if !courier {
            problems.push("no Namespace courier".into());
        }
        let functions = tree
            .namespaces
            .iter()
            .find(|n| n.metadata.name.as_deref() == Some(FUNCTIONS));
        let label = functions
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get("openfaas"));
        if label.map(String::as_str) != Some("1") {
            problems.push(format!(
                "Namespace {FUNCTIONS} must exist with the label openfaas: \"1\" (the provider \
                 lists function namespaces by it), has {label:?}"
            ));
        }
        // Function pods meet the restricted level (the provider renders them so).
        let enforced = functions
            .and_then(|n| n.metadata.labels.as_ref())
            .and_then(|l| l.get("pod-security.kubernetes.io/enforce"));
        if enforced.map(String::as_str) != Some("restricted") {
            problems.push(format!(
                "Namespace {FUNCTIONS} should enforce the restricted Pod Security level, \
                 enforces {enforced:?}"
            ));
        }
        for o in &tree.objects {
            let cluster_scoped = matches!(
                o.kind.as_str(),
                "Namespace" | "ClusterRole" | "ClusterRoleBinding"
            );
            let in_functions = matches!(o.kind.as_str(), "Role" | "RoleBinding");
            if o.kind == "Role" {
                problems.push(format!(
                    "{}: the provider's rules are a ClusterRole",
                    o.id()
                ));
            }
            let wanted = match (cluster_scoped, in_functions) {
                (true, _) => None,
                (false, true) => Some(FUNCTIONS),
                (false, false) => Some(CONTROL_PLANE),
            };
            if o.namespace.as_deref() != wanted {
                problems.push(format!("{} should be in namespace {wanted:?}", o.id()));
            }
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Containers.

#[test]
fn every_container_has_requests_a_readiness_probe_and_a_locked_down_security_context() -> Result<()>
{
    each_tree(|tree, problems| {
        for w in tree.workloads()? {
            let pod_sc = w.pod.security_context.clone().unwrap_or_default();
            for (c, init) in w.containers() {
                let at = format!("{} container {}", w.id, c.name);
                let sc = c.security_context.clone().unwrap_or_default();
                // Effective values: the container's setting wins over the pod's.
                if sc.run_as_non_root.or(pod_sc.run_as_non_root) != Some(true) {
                    problems.push(format!("{at}: runAsNonRoot is not true"));
                }
                match sc.run_as_user.or(pod_sc.run_as_user) {
                    Some(uid) if uid > 0 => {}
                    other => problems.push(format!(
                        "{at}: runAsUser must name a non-root uid (images may default to \
                         root), is {other:?}"
                    )),
                }
                let seccomp = sc
                    .seccomp_profile
                    .or(pod_sc.seccomp_profile.clone())
                    .map(|p| p.type_);
                if seccomp.as_deref() != Some("RuntimeDefault") {
                    problems.push(format!("{at}: seccompProfile.type is {seccomp:?}"));
                }
                if sc.read_only_root_filesystem != Some(true) {
                    problems.push(format!("{at}: readOnlyRootFilesystem is not true"));
                }
                if sc.allow_privilege_escalation != Some(false) {
                    problems.push(format!("{at}: allowPrivilegeEscalation is not false"));
                }
                if sc.privileged == Some(true) {
                    problems.push(format!("{at}: privileged"));
                }
                let caps = sc.capabilities.unwrap_or_default();
                if !caps.drop.iter().flatten().any(|d| d == "ALL") {
                    problems.push(format!("{at}: capabilities.drop lacks ALL"));
                }
                if caps.add.is_some_and(|a| !a.is_empty()) {
                    problems.push(format!("{at}: adds capabilities"));
                }

                let resources = c.resources.clone().unwrap_or_default();
                let requests = resources.requests.unwrap_or_default();
                for resource in ["cpu", "memory"] {
                    match requests.get(resource).and_then(|q| quantity(&q.0)) {
                        Some(n) if n > 0.0 => {}
                        _ => problems.push(format!("{at}: no {resource} request")),
                    }
                }
                let limit = resources.limits.unwrap_or_default();
                if let (Some(limit), Some(request)) = (
                    limit.get("memory").and_then(|q| quantity(&q.0)),
                    requests.get("memory").and_then(|q| quantity(&q.0)),
                ) && limit < request
                {
                    problems.push(format!("{at}: memory limit below its request"));
                }

                // An init container may only have a probe when it is a sidecar
                // (restartPolicy: Always); the API server rejects one anywhere else.
                let sidecar = c.restart_policy.as_deref() == Some("Always");
                if !init || sidecar {
                    match &c.readiness_probe {
                        None => problems.push(format!("{at}: no readinessProbe")),
                        Some(probe) => {
                            if let Some(get) = &probe.http_get
                                && port_number(c, &get.port).is_none()
                            {
                                problems.push(format!(
                                    "{at}: the readinessProbe's port {:?} is not a port of the \
                                     container",
                                    get.port
                                ));
                            }
                        }
                    }
                }
            }
        }
        Ok(())
    })
}

#[test]
fn writable_paths_are_volumes_and_images_are_pinned() -> Result<()> {
    each_tree(|tree, problems| {
        for w in tree.workloads()? {
            let volumes = w.pod.volumes.clone().unwrap_or_default();
            for (c, _) in w.containers() {
                let at = format!("{} container {}", w.id, c.name);
                let image = c.image.as_deref().unwrap_or_default();
                let mounts = c.volume_mounts.clone().unwrap_or_default();
                let mounted = |path: &str| mounts.iter().find(|m| m.mount_path == path);
                if image == COURIER_IMAGE {
                    let tmp =
                        mounted("/tmp").and_then(|m| volumes.iter().find(|v| v.name == m.name));
                    if tmp.is_none_or(|v| v.empty_dir.is_none()) {
                        problems.push(format!("{at}: /tmp is not an emptyDir"));
                    }
                } else if image == NATS_IMAGE {
                    let templates = tree
                        .nats()?
                        .spec
                        .as_ref()
                        .and_then(|s| s.volume_claim_templates.clone())
                        .unwrap_or_default();
                    let data = mounted("/data").map(|m| m.name.clone());
                    let claimed = templates
                        .iter()
                        .any(|t| t.metadata.name.as_ref() == data.as_ref());
                    if !claimed {
                        problems.push(format!(
                            "{at}: /data is not a volume claimed by volumeClaimTemplates"
                        ));
                    }
                } else {
                    problems.push(format!(
                        "{at}: image {image:?} is neither {COURIER_IMAGE} nor {NATS_IMAGE}"
                    ));
                }
            }
        }
        Ok(())
    })
}

/// `(deployment, arguments)`: what each component runs, after `courier`. deploy/README.md
/// lists the same lines for whoever writes the commands.
const COMMANDS: [(&str, &str); 5] = [
    (
        "gateway",
        "gateway --provider kubernetes --function-namespace openfaas-fn \
         --queue nats://nats:4222 --listen 0.0.0.0:8080 --data-dir /tmp/courier",
    ),
    (
        "queue-worker",
        "queue-worker --queue nats://nats:4222 --gateway http://gateway:8080 \
         --listen 0.0.0.0:8081",
    ),
    (
        "scheduler",
        "scheduler --gateway http://gateway:8080 --queue nats://nats:4222 --listen 0.0.0.0:8082",
    ),
    (
        "connector-kafka",
        "connector kafka --kafka-brokers $(KAFKA_BROKERS) --kafka-topics $(KAFKA_TOPICS) \
         --gateway http://gateway:8080 --queue nats://nats:4222 --listen 0.0.0.0:8083",
    ),
    (
        "connector-amqp",
        "connector amqp --amqp-url $(AMQP_URL) --amqp-queues $(AMQP_QUEUES) \
         --gateway http://gateway:8080 --queue nats://nats:4222 --listen 0.0.0.0:8083",
    ),
];

/// What every component that opens the queue runs with in `tree`, beyond [`COMMANDS`]: in
/// production, as many queue replicas as NATS servers.
fn queue_flags(tree: &str) -> &'static [&'static str] {
    if tree == "overlays/production" {
        &["--queue-replicas", "3"]
    } else {
        &[]
    }
}

#[test]
fn each_component_runs_its_command_and_is_probed_where_it_listens() -> Result<()> {
    each_tree(|tree, problems| {
        for (deployment, args) in COMMANDS {
            let mut args: Vec<&str> = args.split_whitespace().collect();
            args.extend(queue_flags(&tree.name));
            let w = tree.workload(deployment)?;
            let c = w.container(deployment)?;
            let at = format!("{} container {}", w.id, c.name);
            if c.command.as_deref() != Some(&["courier".to_owned()][..]) {
                problems.push(format!("{at}: command is {:?}, not [courier]", c.command));
            }
            let actual = c.args.clone().unwrap_or_default();
            if actual != args {
                problems.push(format!("{at}: args are {actual:?}, expected {args:?}"));
            }
            // The probe asks /healthz on the port given to --listen.
            let listen = actual
                .iter()
                .position(|a| a == "--listen")
                .and_then(|i| actual.get(i + 1))
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, port)| port.parse::<i32>().ok());
            let probe = c.readiness_probe.as_ref().and_then(|p| p.http_get.as_ref());
            let probed = probe.and_then(|g| port_number(c, &g.port));
            let path = probe.and_then(|g| g.path.as_deref());
            if listen.is_none() || probed != listen || path != Some("/healthz") {
                problems.push(format!(
                    "{at}: listens on {listen:?} but the readiness probe asks {path:?} on {probed:?}"
                ));
            }
        }
        Ok(())
    })
}

/// Name → (Secret or ConfigMap, name, key) of the environment variables taken from them.
fn env_refs(c: &Container) -> BTreeMap<String, (&'static str, String, String)> {
    let mut refs = BTreeMap::new();
    for e in c.env.iter().flatten() {
        let from = e.value_from.as_ref();
        if let Some(s) = from.and_then(|f| f.secret_key_ref.as_ref()) {
            refs.insert(e.name.clone(), ("Secret", s.name.clone(), s.key.clone()));
        } else if let Some(m) = from.and_then(|f| f.config_map_key_ref.as_ref()) {
            refs.insert(e.name.clone(), ("ConfigMap", m.name.clone(), m.key.clone()));
        }
    }
    refs
}

#[test]
fn passwords_and_broker_settings_come_from_secrets_and_the_connectors_config_map() -> Result<()> {
    let password = || {
        (
            "Secret",
            "courier-basic-auth".to_owned(),
            "basic-auth-password".to_owned(),
        )
    };
    let config = |key: &str| ("ConfigMap", "courier-connectors".to_owned(), key.to_owned());
    let expected = [
        ("gateway", vec![("COURIER_BASIC_AUTH_PASSWORD", password())]),
        (
            "queue-worker",
            vec![("COURIER_BASIC_AUTH_PASSWORD", password())],
        ),
        (
            "scheduler",
            vec![("COURIER_BASIC_AUTH_PASSWORD", password())],
        ),
        (
            "connector-kafka",
            vec![
                ("KAFKA_BROKERS", config("kafka-brokers")),
                ("KAFKA_TOPICS", config("kafka-topics")),
                ("COURIER_BASIC_AUTH_PASSWORD", password()),
            ],
        ),
        (
            "connector-amqp",
            vec![
                // The URL holds credentials: a Secret, never the ConfigMap.
                (
                    "AMQP_URL",
                    ("Secret", "courier-amqp".to_owned(), "amqp-url".to_owned()),
                ),
                ("AMQP_QUEUES", config("amqp-queues")),
                ("COURIER_BASIC_AUTH_PASSWORD", password()),
            ],
        ),
    ];
    each_tree(|tree, problems| {
        for (deployment, vars) in &expected {
            let w = tree.workload(deployment)?;
            let c = w.container(deployment)?;
            let refs = env_refs(c);
            for (var, source) in vars {
                if refs.get(*var) != Some(source) {
                    problems.push(format!(
                        "{}: {var} should come from {source:?}, comes from {:?}",
                        w.id,
                        refs.get(*var)
                    ));
                }
            }
        }
        Ok(())
    })
}

#[test]
fn every_reference_resolves() -> Result<()> {
    each_tree(|tree, problems| {
        // Credentials are never committed: the operator creates the Secrets.
        for s in &tree.secrets {
            problems.push(format!("holds Secret {}", name(&s.metadata)));
        }
        let config_maps: BTreeMap<&str, &ConfigMap> = tree
            .config_maps
            .iter()
            .map(|m| (name(&m.metadata), m))
            .collect();
        for w in tree.workloads()? {
            // The service account.
            let account = w.pod.service_account_name.as_deref().unwrap_or("default");
            if find(&tree.service_accounts, w.namespace, account).is_none() {
                problems.push(format!(
                    "{}: ServiceAccount {account} is not in the tree",
                    w.id
                ));
            }
            // ConfigMap volumes.
            for v in w.pod.volumes.iter().flatten() {
                if let Some(m) = &v.config_map
                    && !config_maps.contains_key(m.name.as_str())
                {
                    problems.push(format!(
                        "{}: volume {} names ConfigMap {}",
                        w.id, v.name, m.name
                    ));
                }
            }
            for (c, _) in w.containers() {
                let at = format!("{} container {}", w.id, c.name);
                // Volume mounts name volumes of the pod (or claim templates).
                let templates: Vec<String> = tree
                    .stateful_sets
                    .iter()
                    .filter(|s| name(&s.metadata) == w.name)
                    .flat_map(|s| {
                        s.spec
                            .iter()
                            .flat_map(|s| s.volume_claim_templates.iter().flatten())
                    })
                    .filter_map(|t| t.metadata.name.clone())
                    .collect();
                for m in c.volume_mounts.iter().flatten() {
                    let known = w.pod.volumes.iter().flatten().any(|v| v.name == m.name)
                        || templates.contains(&m.name);
                    if !known {
                        problems.push(format!("{at}: mounts unknown volume {}", m.name));
                    }
                }
                // Environment from ConfigMaps (with the key) and Secrets (only the operator's).
                for (var, (kind, source, key)) in env_refs(c) {
                    match kind {
                        "ConfigMap" => {
                            let has_key = config_maps
                                .get(source.as_str())
                                .and_then(|m| m.data.as_ref())
                                .is_some_and(|d| d.contains_key(&key));
                            if !has_key {
                                problems.push(format!("{at}: {var} reads missing {source}/{key}"));
                            }
                        }
                        _ => {
                            if !EXTERNAL_SECRETS.contains(&source.as_str()) {
                                problems.push(format!(
                                    "{at}: {var} reads Secret {source}, not one the README has \
                                     the operator create ({EXTERNAL_SECRETS:?})"
                                ));
                            }
                        }
                    }
                }
                // $(VAR) in args: kubelet leaves an undefined one as literal text.
                let defined: BTreeSet<&str> =
                    c.env.iter().flatten().map(|e| e.name.as_str()).collect();
                for arg in c.args.iter().flatten().chain(c.command.iter().flatten()) {
                    for var in arg.split("$(").skip(1).filter_map(|s| s.split_once(')')) {
                        if !defined.contains(var.0) {
                            problems.push(format!("{at}: $({}) is not in its env", var.0));
                        }
                    }
                }
            }
        }
        // Services select exactly one workload and target ports it has.
        let workloads = tree.workloads()?;
        for s in &tree.services {
            let at = format!("Service {}", name(&s.metadata));
            let spec = s.spec.clone().unwrap_or_default();
            let selector = spec.selector.clone().unwrap_or_default();
            let selected: Vec<_> = workloads
                .iter()
                .filter(|w| w.selected_by(s.metadata.namespace.as_deref(), &selector))
                .collect();
            let [w] = selected.as_slice() else {
                problems.push(format!(
                    "{at}: selects {} workloads, not one",
                    selected.len()
                ));
                continue;
            };
            for p in spec.ports.iter().flatten() {
                let target = p.target_port.clone().unwrap_or(IntOrString::Int(p.port));
                if !w
                    .pod
                    .containers
                    .iter()
                    .any(|c| port_number(c, &target).is_some())
                {
                    problems.push(format!(
                        "{at}: port {} targets {target:?}, not a port of {}",
                        p.port, w.id
                    ));
                }
            }
        }
        // A StatefulSet's serviceName is a headless Service of the tree.
        for set in &tree.stateful_sets {
            let spec = set.spec.as_ref().context("StatefulSet without spec")?;
            let service = spec.service_name.as_deref().unwrap_or_default();
            let headless = find(&tree.services, CONTROL_PLANE, service)
                .and_then(|s| s.spec.as_ref())
                .and_then(|s| s.cluster_ip.as_deref())
                == Some("None");
            if !headless {
                problems.push(format!(
                    "StatefulSet {}: serviceName {service:?} is not a headless Service",
                    name(&set.metadata)
                ));
            }
        }
        Ok(())
    })
}

#[test]
fn only_the_gateway_mounts_an_api_token() -> Result<()> {
    each_tree(|tree, problems| {
        for w in tree.workloads()? {
            let account = w.pod.service_account_name.as_deref().unwrap_or("default");
            let from_account = find(&tree.service_accounts, w.namespace, account)
                .and_then(|a| a.automount_service_account_token);
            // The pod's setting wins over the account's; Kubernetes mounts by default.
            let mounted = w
                .pod
                .automount_service_account_token
                .or(from_account)
                .unwrap_or(true);
            let wanted = w.name == "gateway";
            if mounted != wanted {
                problems.push(format!(
                    "{}: API token mounted: {mounted}, want {wanted}",
                    w.id
                ));
            }
            if w.name != "gateway" && from_account != Some(false) {
                problems.push(format!(
                    "{}: ServiceAccount {account} should say automountServiceAccountToken: false",
                    w.id
                ));
            }
            if account == "default" || (w.name == "gateway") != (account == "courier-gateway") {
                problems.push(format!("{}: runs as ServiceAccount {account}", w.id));
            }
        }
        let accounts: Vec<_> = tree
            .workloads()?
            .iter()
            .filter_map(|w| w.pod.service_account_name.clone())
            .collect();
        let unique: BTreeSet<_> = accounts.iter().collect();
        if unique.len() != accounts.len() {
            problems.push(format!("components share ServiceAccounts: {accounts:?}"));
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// RBAC.

/// `(apiGroup, resource)` → verbs, one entry per pair a rule grants.
fn grants(rules: &[PolicyRule]) -> BTreeMap<(String, String), BTreeSet<String>> {
    let mut all: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for r in rules {
        for group in r.api_groups.iter().flatten() {
            for resource in r.resources.iter().flatten() {
                all.entry((group.clone(), resource.clone()))
                    .or_default()
                    .extend(r.verbs.iter().cloned());
            }
        }
    }
    all
}

fn rule_problems(at: &str, rules: &[PolicyRule]) -> Vec<String> {
    let mut problems = Vec::new();
    for r in rules {
        let fields = [
            ("verbs", Some(&r.verbs)),
            ("resources", r.resources.as_ref()),
            ("apiGroups", r.api_groups.as_ref()),
            ("resourceNames", r.resource_names.as_ref()),
        ];
        for (field, values) in fields {
            if values.into_iter().flatten().any(|v| v.contains('*')) {
                problems.push(format!("{at}: a wildcard in {field}: {r:?}"));
            }
        }
        if r.non_resource_urls.is_some() {
            problems.push(format!("{at}: grants nonResourceURLs"));
        }
        if r.resources.as_ref().is_none_or(Vec::is_empty) || r.api_groups.is_none() {
            problems.push(format!(
                "{at}: a rule without apiGroups and resources: {r:?}"
            ));
        }
    }
    problems
}

/// `(apiGroup, resource)` → verbs: what the provider uses at `scope`, from its
/// [`PERMISSIONS`] (the one list; its own tests check it against every code path).
fn provider_needs(scope: PermissionScope) -> BTreeMap<(String, String), BTreeSet<String>> {
    PERMISSIONS
        .iter()
        .filter(|p| p.scope == scope)
        .map(|p| {
            let verbs = p.verbs.iter().map(|v| (*v).to_owned()).collect();
            ((p.api_group.to_owned(), p.resource.to_owned()), verbs)
        })
        .collect()
}

#[test]
fn rbac_grants_the_provider_exactly_what_it_uses() -> Result<()> {
    let in_namespace = provider_needs(PermissionScope::ServedNamespace);
    let cluster_wide = provider_needs(PermissionScope::Cluster);
    ensure!(!in_namespace.is_empty() && !cluster_wide.is_empty());
    const PROVIDER: &str = "courier-provider";
    const NAMESPACE_READER: &str = "courier-namespace-reader";

    each_tree(|tree, problems| {
        let gateway_account = ("ServiceAccount", "courier-gateway", CONTROL_PLANE);
        if !tree.roles.is_empty() {
            problems.push(format!(
                "{} Roles, want none (the provider's rules are ClusterRole {PROVIDER}, bound \
                 per namespace)",
                tree.roles.len()
            ));
        }
        // The two ClusterRoles: the provider's rules, and reading namespaces.
        let names: BTreeSet<&str> = tree
            .cluster_roles
            .iter()
            .map(|r| name(&r.metadata))
            .collect();
        if names != BTreeSet::from([PROVIDER, NAMESPACE_READER]) {
            problems.push(format!(
                "ClusterRoles {names:?}, want {PROVIDER} and {NAMESPACE_READER}"
            ));
        }
        for role in &tree.cluster_roles {
            let at = format!("ClusterRole {}", name(&role.metadata));
            let rules = role.rules.clone().unwrap_or_default();
            problems.extend(rule_problems(&at, &rules));
            let want = match name(&role.metadata) {
                PROVIDER => &in_namespace,
                _ => &cluster_wide,
            };
            if grants(&rules) != *want {
                problems.push(format!(
                    "{at} grants {:?}, want exactly what the provider uses: {want:?}",
                    grants(&rules)
                ));
            }
            if role.aggregation_rule.is_some() {
                problems.push(format!("{at} aggregates other roles"));
            }
        }
        // Bindings: the provider's rules in openfaas-fn only, namespaces cluster-wide; both
        // to the gateway's account only.
        let mut bindings = Vec::new();
        for b in &tree.role_bindings {
            bindings.push((
                format!("RoleBinding {}", name(&b.metadata)),
                &b.role_ref,
                &b.subjects,
                b.metadata.namespace.as_deref(),
            ));
        }
        for b in &tree.cluster_role_bindings {
            bindings.push((
                format!("ClusterRoleBinding {}", name(&b.metadata)),
                &b.role_ref,
                &b.subjects,
                None,
            ));
        }
        for (at, role_ref, subjects, namespace) in bindings {
            let target_ok = role_ref.kind == "ClusterRole"
                && match namespace {
                    Some(ns) => ns == FUNCTIONS && role_ref.name == PROVIDER,
                    // Bound cluster-wide, the provider's rules would reach every namespace.
                    None => role_ref.name == NAMESPACE_READER,
                };
            if !target_ok {
                problems.push(format!(
                    "{at} (namespace {namespace:?}) binds {} {}",
                    role_ref.kind, role_ref.name
                ));
            }
            let subjects: Vec<_> = subjects
                .iter()
                .flatten()
                .map(|s| {
                    (
                        s.kind.as_str(),
                        s.name.as_str(),
                        s.namespace.as_deref().unwrap_or_default(),
                    )
                })
                .collect();
            if subjects != [gateway_account] {
                problems.push(format!(
                    "{at} binds {subjects:?}, want only {gateway_account:?}"
                ));
            }
        }
        if tree.role_bindings.len() != 1 || tree.cluster_role_bindings.len() != 1 {
            problems.push("want exactly one RoleBinding and one ClusterRoleBinding".into());
        }
        Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// Replicas, budgets and NATS.

#[test]
fn the_queue_keeps_as_many_replicas_as_there_are_nats_servers() -> Result<()> {
    each_tree(|tree, problems| {
        let servers = tree.workload("nats")?.replicas;
        for (deployment, _) in COMMANDS {
            let w = tree.workload(deployment)?;
            let args = w.container(deployment)?.args.clone().unwrap_or_default();
            // Absent: the default, one replica.
            let replicas = match args.iter().position(|a| a == "--queue-replicas") {
                Some(i) => args.get(i + 1).and_then(|n| n.parse::<i32>().ok()),
                None => Some(1),
            };
            if replicas != Some(servers) {
                problems.push(format!(
                    "{}: --queue-replicas {replicas:?} with {servers} NATS servers",
                    w.id
                ));
            }
        }
        Ok(())
    })
}

#[test]
fn replicas_suit_each_overlay() -> Result<()> {
    let expected = [
        (
            "base",
            [
                ("gateway", 2),
                ("queue-worker", 2),
                ("scheduler", 1),
                ("connector-kafka", 1),
                ("connector-amqp", 1),
                ("nats", 1),
            ],
        ),
        (
            "overlays/dev",
            [
                ("gateway", 1),
                ("queue-worker", 1),
                ("scheduler", 1),
                ("connector-kafka", 0),
                ("connector-amqp", 0),
                ("nats", 1),
            ],
        ),
        (
            "overlays/production",
            [
                ("gateway", 3),
                ("queue-worker", 3),
                ("scheduler", 1),
                ("connector-kafka", 2),
                ("connector-amqp", 2),
                ("nats", 3),
            ],
        ),
    ];
    for (tree, replicas) in expected {
        let tree = Tree::render(tree)?;
        for (workload, want) in replicas {
            let got = tree.workload(workload)?.replicas;
            ensure!(
                got == want,
                "{}: {workload} has {got} replicas, want {want}",
                tree.name
            );
        }
    }
    Ok(())
}

#[test]
fn budgets_let_a_node_drain_and_keep_the_nats_quorum() -> Result<()> {
    each_tree(|tree, problems| {
        let workloads = tree.workloads()?;
        let mut covered = BTreeSet::new();
        for b in &tree.budgets {
            let at = format!("PodDisruptionBudget {}", name(&b.metadata));
            let spec = b.spec.clone().unwrap_or_default();
            let selector = spec
                .selector
                .and_then(|s| s.match_labels)
                .unwrap_or_default();
            let selected: Vec<_> = workloads
                .iter()
                .filter(|w| w.selected_by(b.metadata.namespace.as_deref(), &selector))
                .collect();
            let [w] = selected.as_slice() else {
                problems.push(format!(
                    "{at}: selects {} workloads, not one",
                    selected.len()
                ));
                continue;
            };
            covered.insert(w.name.to_owned());
            let int = |v: Option<IntOrString>| match v {
                None => Ok(None),
                Some(IntOrString::Int(n)) => Ok(Some(n)),
                Some(IntOrString::String(p)) => {
                    Err(format!("{at}: a percentage ({p}); use a count"))
                }
            };
            let (max_unavailable, min_available) =
                match (int(spec.max_unavailable), int(spec.min_available)) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => {
                        problems.push(e);
                        continue;
                    }
                };
            // Evictions allowed while every pod is healthy.
            let allowed = match (max_unavailable, min_available) {
                (Some(max), None) => max.min(w.replicas),
                (None, Some(min)) => w.replicas - min,
                _ => {
                    problems.push(format!(
                        "{at}: set exactly one of maxUnavailable, minAvailable"
                    ));
                    continue;
                }
            };
            if w.replicas > 0 && allowed < 1 {
                problems.push(format!(
                    "{at}: blocks every drain of {} ({} replicas)",
                    w.id, w.replicas
                ));
            }
            if w.replicas > 1 && w.replicas - allowed < 1 {
                problems.push(format!("{at}: lets every replica of {} go at once", w.id));
            }
            if w.name == "nats" && w.replicas >= 3 && w.replicas - allowed < w.replicas / 2 + 1 {
                problems.push(format!("{at}: a drain may break the JetStream quorum"));
            }
        }
        for wanted in ["gateway", "queue-worker", "nats"] {
            if !covered.contains(wanted) {
                problems.push(format!("no PodDisruptionBudget for {wanted}"));
            }
        }
        Ok(())
    })
}

/// A NATS size (`8GB`, `768MB`, `1G`) in bytes, as nats-server reads it.
fn nats_size(text: &str) -> Option<f64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" => 1e3,
        "kb" | "ki" | "kib" => 1024.0,
        "m" => 1e6,
        "mb" | "mi" | "mib" => 1024.0 * 1024.0,
        "g" => 1e9,
        "gb" | "gi" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" => 1e12,
        "tb" | "ti" | "tib" => 1024.0_f64.powi(4),
        _ => return None,
    };
    digits.parse::<f64>().ok().map(|n| n * factor)
}

#[test]
fn nats_runs_jetstream_on_its_volume_and_clusters_in_production() -> Result<()> {
    for tree in all_trees()? {
        let at = tree.name.clone();
        let set = tree.nats()?;
        let spec = set.spec.as_ref().context("nats: no spec")?;
        let w = tree.workload("nats")?;
        let c = w.container("nats")?;
        ensure!(
            c.image.as_deref() == Some(NATS_IMAGE),
            "{at}: nats image {:?}",
            c.image
        );

        let args = c.args.clone().unwrap_or_default().join(" ");
        for wanted in ["-js", "-sd /data", "--config /etc/nats/nats.conf"] {
            ensure!(
                args.contains(wanted),
                "{at}: nats args {args:?} lack {wanted:?}"
            );
        }
        let probe = c
            .readiness_probe
            .as_ref()
            .and_then(|p| p.http_get.as_ref())
            .context("nats: no HTTP readiness probe")?;
        ensure!(
            probe.path.as_deref() == Some("/healthz?js-enabled-only=true")
                && port_number(c, &probe.port) == Some(8222),
            "{at}: nats readiness probe {probe:?}"
        );
        let env_pod_name = c.env.iter().flatten().any(|e| {
            e.name == "POD_NAME"
                && e.value_from
                    .as_ref()
                    .and_then(|f| f.field_ref.as_ref())
                    .is_some_and(|f| f.field_path == "metadata.name")
        });
        ensure!(
            env_pod_name,
            "{at}: nats needs POD_NAME from metadata.name (server_name)"
        );

        // The config file: the ConfigMap mounted at /etc/nats.
        let mount = c
            .volume_mounts
            .iter()
            .flatten()
            .find(|m| m.mount_path == "/etc/nats")
            .context("nats: nothing mounted at /etc/nats")?;
        let volume = w
            .pod
            .volumes
            .iter()
            .flatten()
            .find(|v| v.name == mount.name)
            .and_then(|v| v.config_map.as_ref())
            .context("nats: /etc/nats is not a ConfigMap")?;
        let conf = find(&tree.config_maps, CONTROL_PLANE, &volume.name)
            .and_then(|m| m.data.as_ref())
            .and_then(|d| d.get("nats.conf"))
            .with_context(|| format!("{at}: ConfigMap {} has no nats.conf", volume.name))?;
        ensure!(
            conf.contains("server_name: $POD_NAME"),
            "{at}: nats.conf lacks server_name"
        );
        ensure!(
            !conf.contains("store_dir"),
            "{at}: nats.conf sets store_dir; -sd /data does (nats-server refuses both)"
        );

        // JetStream stops taking writes before the volume is full.
        let storage = spec
            .volume_claim_templates
            .iter()
            .flatten()
            .find(|t| t.metadata.name.as_deref() == Some("data"))
            .and_then(|t| t.spec.as_ref())
            .and_then(|s| s.resources.as_ref())
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get("storage"))
            .and_then(|q| quantity(&q.0))
            .context("nats: no data volume claim with a storage request")?;
        let max_file_store = conf
            .lines()
            .find_map(|l| l.trim().strip_prefix("max_file_store:"))
            .and_then(nats_size)
            .with_context(|| format!("{at}: nats.conf sets no max_file_store"))?;
        ensure!(
            max_file_store < storage,
            "{at}: max_file_store ({max_file_store}) is not below the volume ({storage})"
        );

        // Routes name every member of the StatefulSet, and only in a cluster.
        let replicas = w.replicas;
        let routes: BTreeSet<String> = conf
            .split_whitespace()
            .filter(|t| t.starts_with("nats://"))
            .map(str::to_owned)
            .collect();
        let expected: BTreeSet<String> = (0..replicas)
            .map(|i| format!("nats://nats-{i}.nats-headless:6222"))
            .collect();
        if replicas > 1 {
            ensure!(
                conf.contains("cluster {"),
                "{at}: {replicas} NATS servers but no cluster block"
            );
            ensure!(
                routes == expected,
                "{at}: routes {routes:?}, want {expected:?}"
            );
            ensure!(
                spec.pod_management_policy.as_deref() == Some("Parallel"),
                "{at}: cluster members must start together (podManagementPolicy: Parallel)"
            );
        } else {
            ensure!(
                !conf.contains("cluster {") && routes.is_empty(),
                "{at}: one NATS server with cluster routes"
            );
        }
        let headless = find(&tree.services, CONTROL_PLANE, "nats-headless")
            .and_then(|s| s.spec.as_ref())
            .context("no Service nats-headless")?;
        ensure!(
            headless.publish_not_ready_addresses == Some(true),
            "{at}: nats-headless must publish not-ready addresses so members find each other"
        );
        let client = find(&tree.services, CONTROL_PLANE, "nats")
            .and_then(|s| s.spec.as_ref())
            .and_then(|s| s.ports.as_ref())
            .context("no Service nats")?;
        ensure!(
            client.iter().any(|p| p.port == 4222),
            "{at}: Service nats does not serve 4222"
        );
    }
    let production = Tree::render("overlays/production")?;
    let affinity = production
        .workload("nats")?
        .pod
        .affinity
        .as_ref()
        .and_then(|a| a.pod_anti_affinity.as_ref())
        .and_then(|a| {
            a.required_during_scheduling_ignored_during_execution
                .as_ref()
        });
    ensure!(
        affinity.is_some_and(|terms| terms
            .iter()
            .any(|t| t.topology_key == "kubernetes.io/hostname")),
        "production: NATS servers must be on different nodes"
    );
    Ok(())
}

#[test]
fn dev_asks_for_less_than_production() -> Result<()> {
    let dev = Tree::render("overlays/dev")?;
    let production = Tree::render("overlays/production")?;
    for w in dev.workloads()? {
        let other = production.workload(w.name)?;
        for (c, _) in w.containers() {
            let requests = |c: &Container| {
                c.resources
                    .clone()
                    .and_then(|r| r.requests)
                    .unwrap_or_default()
            };
            let mine = requests(c);
            let theirs = requests(other.container(&c.name)?);
            for resource in ["cpu", "memory"] {
                let get = |m: &BTreeMap<
                    String,
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity,
                >| { m.get(resource).and_then(|q| quantity(&q.0)) };
                ensure!(
                    get(&mine) <= get(&theirs),
                    "{} {}: dev requests more {resource} than production",
                    w.id,
                    c.name
                );
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Examples, Dockerfile, README.

#[test]
fn the_autoscaling_examples_parse_and_target_the_echo_function() -> Result<()> {
    let examples = kubernetes_dir().join("examples");
    let mut files: Vec<String> = std::fs::read_dir(&examples)?
        .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_>>()?;
    files.sort();
    ensure!(
        files
            == [
                "hpa-prometheus-adapter.yaml",
                "keda-scaledobject.yaml",
                "prometheus-podmonitor.yaml",
                "stack.yml"
            ],
        "examples/ holds {files:?}: give a new example a check here"
    );
    let query =
        r#"sum(rate(gateway_function_invocation_total{function_name="echo.openfaas-fn"}[1m]))"#;

    // The function: created with com.openfaas.scale.min replicas.
    let stack = parse_yaml("stack.yml", &read_to_string(&examples.join("stack.yml"))?)?;
    let echo = stack
        .pointer("/functions/echo")
        .context("stack.yml: no function echo")?;
    ensure!(
        echo.pointer("/image").and_then(Value::as_str).is_some(),
        "stack.yml: echo has no image"
    );
    ensure!(
        echo.pointer("/environment/fprocess").is_some(),
        "stack.yml: echo has no fprocess"
    );
    let scale_min: i64 = echo
        .pointer("/labels/com.openfaas.scale.min")
        .and_then(Value::as_str)
        .context("stack.yml: echo has no com.openfaas.scale.min label (a string)")?
        .parse()?;

    // KEDA: no k8s-openapi type, so its fields are checked as JSON.
    let keda = read_objects(&examples.join("keda-scaledobject.yaml"))?;
    let [scaled] = keda.as_slice() else {
        bail!("keda-scaledobject.yaml: want one object")
    };
    ensure!(
        scaled.api_version == "keda.sh/v1alpha1" && scaled.kind == "ScaledObject",
        "{}",
        scaled.id()
    );
    ensure!(
        scaled.namespace.as_deref() == Some(FUNCTIONS),
        "{}: not in {FUNCTIONS}",
        scaled.id()
    );
    let v = &scaled.value;
    let text = |p: &str| v.pointer(p).and_then(Value::as_str);
    let number = |p: &str| v.pointer(p).and_then(Value::as_i64);
    ensure!(
        text("/spec/scaleTargetRef/kind") == Some("Deployment")
            && text("/spec/scaleTargetRef/apiVersion") == Some("apps/v1")
            && text("/spec/scaleTargetRef/name") == Some("echo"),
        "ScaledObject: scaleTargetRef is not Deployment echo"
    );
    let (min, max) = (
        number("/spec/minReplicaCount"),
        number("/spec/maxReplicaCount"),
    );
    ensure!(
        min == Some(scale_min),
        "ScaledObject: minReplicaCount {min:?} differs from scale.min {scale_min}"
    );
    ensure!(
        max.is_some_and(|m| Some(m) >= min),
        "ScaledObject: maxReplicaCount {max:?}"
    );
    let triggers = v
        .pointer("/spec/triggers")
        .and_then(Value::as_array)
        .context("ScaledObject: no triggers")?;
    let [trigger] = triggers.as_slice() else {
        bail!("ScaledObject: want one trigger")
    };
    ensure!(
        trigger.pointer("/type").and_then(Value::as_str) == Some("prometheus"),
        "ScaledObject: not the prometheus scaler"
    );
    let meta = |k: &str| {
        trigger
            .pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
    };
    ensure!(
        meta("query") == Some(query),
        "ScaledObject: query {:?}",
        meta("query")
    );
    ensure!(
        meta("serverAddress").is_some_and(|a| a.starts_with("http")),
        "ScaledObject: no serverAddress"
    );
    // KEDA wants trigger metadata as strings.
    ensure!(
        meta("threshold")
            .and_then(|t| t.parse::<f64>().ok())
            .is_some_and(|t| t > 0.0),
        "ScaledObject: threshold must be a positive number in a string"
    );

    // HPA v2 + prometheus-adapter: typed objects.
    let objects = read_objects(&examples.join("hpa-prometheus-adapter.yaml"))?;
    let tree = Tree::from_objects("hpa-prometheus-adapter.yaml", objects)?;
    let [hpa] = tree.autoscalers.as_slice() else {
        bail!("want one HorizontalPodAutoscaler")
    };
    ensure!(
        hpa.metadata.namespace.as_deref() == Some(FUNCTIONS),
        "HPA: not in {FUNCTIONS}"
    );
    let spec = hpa.spec.as_ref().context("HPA: no spec")?;
    ensure!(
        spec.scale_target_ref.kind == "Deployment" && spec.scale_target_ref.name == "echo",
        "HPA: scaleTargetRef {:?}",
        spec.scale_target_ref
    );
    ensure!(
        spec.min_replicas.map(i64::from) == Some(scale_min),
        "HPA: minReplicas differs from scale.min"
    );
    let [metric] = spec.metrics.as_deref().unwrap_or_default() else {
        bail!("HPA: want one metric")
    };
    let external = metric
        .external
        .as_ref()
        .context("HPA: not an External metric")?;
    ensure!(
        metric.type_ == "External",
        "HPA: metric type {}",
        metric.type_
    );
    let selector = external
        .metric
        .selector
        .as_ref()
        .and_then(|s| s.match_labels.as_ref());
    ensure!(
        selector
            .and_then(|s| s.get("function_name"))
            .map(String::as_str)
            == Some("echo.openfaas-fn"),
        "HPA: the metric does not select function_name=echo.openfaas-fn"
    );
    ensure!(
        external.target.type_ == "AverageValue" && external.target.average_value.is_some(),
        "HPA: target {:?}",
        external.target
    );

    // The adapter rule serves the metric the HPA asks for, from the gateway's counter.
    let [adapter] = tree.config_maps.as_slice() else {
        bail!("want the adapter's ConfigMap")
    };
    let config = adapter
        .data
        .as_ref()
        .and_then(|d| d.get("config.yaml"))
        .context("adapter ConfigMap: no config.yaml")?;
    let config = parse_yaml("the adapter's config.yaml", config)?;
    let rules = config
        .pointer("/externalRules")
        .and_then(Value::as_array)
        .context("adapter: no externalRules")?;
    let rule = rules
        .iter()
        .find(|r| {
            r.pointer("/name/as").and_then(Value::as_str) == Some(external.metric.name.as_str())
        })
        .with_context(|| format!("adapter: no rule names {}", external.metric.name))?;
    let rule_text = |p: &str| rule.pointer(p).and_then(Value::as_str).unwrap_or_default();
    ensure!(
        rule_text("/seriesQuery").contains("gateway_function_invocation_total"),
        "adapter: seriesQuery"
    );
    ensure!(
        rule_text("/metricsQuery").contains("rate(<<.Series>>{<<.LabelMatchers>>}[1m])"),
        "adapter: metricsQuery"
    );
    ensure!(
        rule.pointer("/resources/namespaced") == Some(&Value::Bool(false)),
        "adapter: the rule must not be namespaced (the gateway runs in courier)"
    );

    // The PodMonitor (Prometheus Operator; no k8s-openapi type) scrapes the gateway pods.
    let monitors = read_objects(&examples.join("prometheus-podmonitor.yaml"))?;
    let [monitor] = monitors.as_slice() else {
        bail!("prometheus-podmonitor.yaml: want one object")
    };
    ensure!(
        monitor.api_version == "monitoring.coreos.com/v1" && monitor.kind == "PodMonitor",
        "{}",
        monitor.id()
    );
    let selector: BTreeMap<String, String> = serde_json::from_value(
        monitor
            .value
            .pointer("/spec/selector/matchLabels")
            .cloned()
            .unwrap_or_default(),
    )
    .context("PodMonitor: selector.matchLabels")?;
    let base = Tree::render("base")?;
    let gateway = base.workload("gateway")?;
    ensure!(
        gateway.selected_by(monitor.namespace.as_deref(), &selector),
        "PodMonitor: does not select the gateway pods"
    );
    let endpoints = monitor
        .value
        .pointer("/spec/podMetricsEndpoints")
        .and_then(Value::as_array);
    let [endpoint] = endpoints.map(Vec::as_slice).unwrap_or_default() else {
        bail!("PodMonitor: want one podMetricsEndpoint")
    };
    let port = endpoint
        .pointer("/port")
        .and_then(Value::as_str)
        .unwrap_or_default();
    ensure!(
        port_number(
            gateway.container("gateway")?,
            &IntOrString::String(port.to_owned())
        ) == Some(8080)
            && endpoint.pointer("/path").and_then(Value::as_str) == Some("/metrics"),
        "PodMonitor: scrapes {endpoint}, want the gateway's /metrics on 8080"
    );
    Ok(())
}

#[test]
fn no_tree_includes_the_examples() -> Result<()> {
    for tree in all_trees()? {
        let kinds: BTreeSet<&str> = tree.objects.iter().map(|o| o.kind.as_str()).collect();
        ensure!(
            !kinds.contains("HorizontalPodAutoscaler") && !kinds.contains("ScaledObject"),
            "{}: renders an autoscaler; the examples are not part of the stack",
            tree.name
        );
    }
    Ok(())
}

#[test]
fn the_dockerfile_builds_in_a_builder_stage_and_runs_as_non_root() -> Result<()> {
    let dockerfile = read_to_string(&deploy_dir().join("Dockerfile"))?;
    // Instructions, with continuation lines joined and comments dropped.
    let joined = dockerfile
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\n", " ");
    let instructions: Vec<(String, String)> = joined
        .lines()
        .filter_map(|l| l.trim().split_once(char::is_whitespace))
        .map(|(i, rest)| (i.to_ascii_uppercase(), rest.trim().to_owned()))
        .collect();
    let stages: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, (i, _))| i == "FROM")
        .map(|(n, _)| n)
        .collect();
    ensure!(
        stages.len() >= 2,
        "Dockerfile: want a builder stage and a runtime stage"
    );
    let first = &instructions[stages[0]].1;
    ensure!(
        first.starts_with("rust:1.95-bookworm")
            && first.to_ascii_lowercase().ends_with(" as builder"),
        "Dockerfile: the first stage is {first:?}, want `rust:1.95-bookworm AS builder`"
    );
    let builder = &instructions[stages[0]..stages[stages.len() - 1]];
    ensure!(
        builder
            .iter()
            .any(|(i, rest)| i == "RUN"
                && rest.contains("cargo build --release --locked --bin courier")),
        "Dockerfile: the builder does not run `cargo build --release --locked --bin courier`"
    );
    let last = &instructions[*stages.last().expect("two stages")..];
    let runtime = &last[0].1;
    ensure!(
        !runtime.starts_with("rust:"),
        "Dockerfile: the final stage runs on the build image"
    );
    ensure!(
        last.iter()
            .any(|(i, rest)| i == "COPY" && rest.contains("--from=builder")),
        "Dockerfile: the final stage does not copy the binary from the builder"
    );
    if runtime.starts_with("debian:") {
        ensure!(
            last.iter().any(|(i, rest)| i == "RUN"
                && rest.contains("libssl3")
                && rest.contains("ca-certificates")),
            "Dockerfile: a Debian runtime needs libssl3 and ca-certificates"
        );
    }
    let user = last
        .iter()
        .rev()
        .find(|(i, _)| i == "USER")
        .map(|(_, u)| u.clone())
        .context("Dockerfile: the final stage sets no USER")?;
    let uid: u32 = user
        .split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .with_context(|| {
            format!("Dockerfile: USER {user} is not numeric (runAsNonRoot needs a uid)")
        })?;
    ensure!(uid != 0, "Dockerfile: USER is root");
    // The manifests run the image as the same uid.
    let base = Tree::render("base")?;
    let gateway = base.workload("gateway")?;
    let pod_uid = gateway
        .pod
        .security_context
        .as_ref()
        .and_then(|s| s.run_as_user);
    ensure!(
        pod_uid == Some(i64::from(uid)),
        "the gateway runs as uid {pod_uid:?}, the image as {uid}"
    );
    Ok(())
}

#[test]
fn the_readme_names_paths_that_exist() -> Result<()> {
    let readme = read_to_string(&deploy_dir().join("README.md"))?;
    let repo = deploy_dir()
        .parent()
        .context("deploy/ has a parent")?
        .to_owned();
    let mut checked = 0;
    for word in readme.split(|c: char| c.is_whitespace() || "`()[]\"'".contains(c)) {
        let path = word.trim_end_matches([',', '.', ':', ';']);
        if path.starts_with("deploy/") {
            ensure!(
                Path::new(&repo).join(path).exists(),
                "deploy/README.md names {path}, which does not exist"
            );
            checked += 1;
        }
    }
    ensure!(checked > 0, "deploy/README.md names no deploy/ path");
    for (_, args) in COMMANDS {
        let line = format!(
            "courier {}",
            args.split_whitespace().collect::<Vec<_>>().join(" ")
        );
        ensure!(
            readme.lines().any(|l| l.trim() == line),
            "deploy/README.md does not list the command `{line}`"
        );
    }
    for needle in [
        "kubectl apply -k deploy/kubernetes/overlays/dev",
        "courier-basic-auth",
        "basic-auth-password",
        "courier invoke",
        "--async",
        "courier dlq list",
        "COURIER_GATEWAY",
        "COURIER_BASIC_AUTH_PASSWORD",
        "docker build -f deploy/Dockerfile",
    ] {
        ensure!(
            readme.contains(needle),
            "deploy/README.md does not mention {needle:?}"
        );
    }
    Ok(())
}
