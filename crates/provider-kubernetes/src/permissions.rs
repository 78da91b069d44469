//! [`PERMISSIONS`]: every Kubernetes RBAC rule the provider needs, and nothing more. The
//! crate docs show them as a table; `deploy/` grants exactly these (its tests compare).

/// Where a [`Permission`] must be granted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PermissionScope {
    /// In each served namespace: a Role there, or a ClusterRole bound there by a RoleBinding.
    ServedNamespace,
    /// Cluster-wide (a ClusterRole and a ClusterRoleBinding). Only namespace discovery needs
    /// it; without a [namespace selector](crate::KubernetesConfig::namespace_selector) none is.
    Cluster,
}

/// One RBAC rule: `verbs` on `resource` of `api_group`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permission {
    /// Where.
    pub scope: PermissionScope,
    /// The API group; `""` is the core group.
    pub api_group: &'static str,
    /// The resource, or `resource/subresource`.
    pub resource: &'static str,
    /// The verbs, sorted.
    pub verbs: &'static [&'static str],
    /// The provider's calls that use them.
    pub used_by: &'static str,
}

/// Every permission the provider uses. A server-side apply that creates its object is
/// authorised as `create` as well as `patch`, so both are here for Deployments and Services.
pub const PERMISSIONS: &[Permission] = &[
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "apps",
        resource: "deployments",
        verbs: &["create", "delete", "get", "list", "patch", "watch"],
        used_by: "deploy and update (apply), delete, status, list, logs, the function watch",
    },
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "apps",
        resource: "deployments/scale",
        verbs: &["patch"],
        used_by: "deploy (initial replicas), scale",
    },
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "",
        resource: "services",
        verbs: &["create", "delete", "patch"],
        used_by: "deploy and update (apply), delete",
    },
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: &["list", "watch"],
        used_by: "the endpoint watch (routing)",
    },
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "",
        resource: "secrets",
        verbs: &["create", "delete", "get", "list", "update"],
        used_by: "/system/secrets; deploy and update read the secrets a function names",
    },
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "",
        resource: "pods",
        verbs: &["list"],
        used_by: "logs (the function's pods)",
    },
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "",
        resource: "pods/log",
        verbs: &["get"],
        used_by: "logs",
    },
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["create", "get", "update"],
        used_by: "the autoscaler's lease (one gateway scales at a time; default namespace only)",
    },
    Permission {
        scope: PermissionScope::ServedNamespace,
        api_group: "metrics.k8s.io",
        resource: "pods",
        verbs: &["list"],
        used_by: "CPU use of a function's pods (com.openfaas.scale.type: cpu)",
    },
    Permission {
        scope: PermissionScope::Cluster,
        api_group: "",
        resource: "namespaces",
        verbs: &["list", "watch"],
        used_by: "namespace discovery (the labelled namespaces)",
    },
];

#[cfg(test)]
mod tests;
