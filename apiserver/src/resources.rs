//! The resource table: every resource the apiserver serves is one row here.
//!
//! The generic registry (`registry.rs`), discovery, Table output and the RBAC authorizer are
//! all driven by this table; adding a resource is a row plus, when it needs them, its
//! strategy hooks in `strategy.rs`.

use crate::strategy::{self, Strategy};

/// One served resource (kube-apiserver's `APIResource` plus its REST strategy).
#[derive(Debug)]
pub struct ResourceDef {
    /// API group; "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    /// The URL and storage name (`pods`).
    pub plural: &'static str,
    pub singular: &'static str,
    pub short_names: &'static [&'static str],
    pub namespaced: bool,
    /// Subresources beyond the object itself (`status`, `scale`, `binding`).
    pub subresources: &'static [&'static str],
    /// Listed in the `all` category (`kubectl get all`).
    pub in_all: bool,
    /// Defaulting, validation and status handling.
    pub strategy: Strategy,
}

impl ResourceDef {
    /// `v1` or `apps/v1`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_string()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    /// The storage prefix of every object of this resource: `/registry/pods/`.
    pub fn prefix(&self) -> String {
        format!("/registry/{}/", self.storage_name())
    }

    /// kube-apiserver stores a few resources under other names; the rest under the plural.
    fn storage_name(&self) -> &'static str {
        match self.plural {
            "services" => "services/specs",
            "endpoints" => "services/endpoints",
            "nodes" => "minions",
            other => other,
        }
    }

    /// The key of one object.
    pub fn key(&self, namespace: &str, name: &str) -> String {
        if self.namespaced {
            format!("{}{}/{}", self.prefix(), namespace, name)
        } else {
            format!("{}{}", self.prefix(), name)
        }
    }

    /// The prefix of one namespace's objects (or all, for "").
    pub fn namespace_prefix(&self, namespace: &str) -> String {
        if self.namespaced && !namespace.is_empty() {
            format!("{}{}/", self.prefix(), namespace)
        } else {
            self.prefix()
        }
    }
}

macro_rules! res {
    ($g:expr, $v:expr, $kind:expr, $plural:expr, $singular:expr, [$($short:expr),*], $ns:expr, [$($sub:expr),*], $all:expr, $strategy:expr) => {
        ResourceDef {
            group: $g,
            version: $v,
            kind: $kind,
            plural: $plural,
            singular: $singular,
            short_names: &[$($short),*],
            namespaced: $ns,
            subresources: &[$($sub),*],
            in_all: $all,
            strategy: $strategy,
        }
    };
}

/// Every served resource: group, version, kind, plural, singular, short names, namespaced,
/// subresources, in the `all` category, strategy.
#[rustfmt::skip]
pub static RESOURCES: &[ResourceDef] = &[
    res!("", "v1", "Namespace", "namespaces", "namespace", ["ns"], false, ["status"], false, strategy::NAMESPACE),
    res!("", "v1", "Pod", "pods", "pod", ["po"], true, ["status", "binding"], true, strategy::POD),
    res!("", "v1", "Node", "nodes", "node", ["no"], false, ["status"], false, strategy::NODE),
    res!("", "v1", "Service", "services", "service", ["svc"], true, ["status"], true, strategy::SERVICE),
    res!("", "v1", "Endpoints", "endpoints", "endpoints", ["ep"], true, [], false, strategy::PLAIN),
    res!("", "v1", "ConfigMap", "configmaps", "configmap", ["cm"], true, [], false, strategy::PLAIN),
    res!("", "v1", "Secret", "secrets", "secret", [], true, [], false, strategy::SECRET),
    res!("", "v1", "ServiceAccount", "serviceaccounts", "serviceaccount", ["sa"], true, [], false, strategy::PLAIN),
    res!("", "v1", "Event", "events", "event", ["ev"], true, [], false, strategy::PLAIN),
    res!("apps", "v1", "Deployment", "deployments", "deployment", ["deploy"], true, ["status", "scale"], true, strategy::DEPLOYMENT),
    res!("apps", "v1", "ReplicaSet", "replicasets", "replicaset", ["rs"], true, ["status", "scale"], true, strategy::REPLICASET),
    res!("coordination.k8s.io", "v1", "Lease", "leases", "lease", [], true, [], false, strategy::PLAIN),
    res!("rbac.authorization.k8s.io", "v1", "Role", "roles", "role", [], true, [], false, strategy::PLAIN),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRole", "clusterroles", "clusterrole", [], false, [], false, strategy::PLAIN),
    res!("rbac.authorization.k8s.io", "v1", "RoleBinding", "rolebindings", "rolebinding", [], true, [], false, strategy::PLAIN),
    res!("rbac.authorization.k8s.io", "v1", "ClusterRoleBinding", "clusterrolebindings", "clusterrolebinding", [], false, [], false, strategy::PLAIN),
    res!("batch", "v1", "Job", "jobs", "job", [], true, ["status"], true, strategy::JOB),
];

/// The resource served at `group/version/plural`.
pub fn lookup(group: &str, version: &str, plural: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
}

/// The resource of an object's `apiVersion` and `kind`.
pub fn by_kind(api_version: &str, kind: &str) -> Option<&'static ResourceDef> {
    RESOURCES
        .iter()
        .find(|r| r.api_version() == api_version && r.kind == kind)
}

/// The API groups served, in discovery order: (group, version).
pub fn groups() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in RESOURCES {
        if !r.group.is_empty() && !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_kube_apiserver_layout() {
        let pods = lookup("", "v1", "pods").expect("pods");
        assert_eq!(pods.key("default", "web"), "/registry/pods/default/web");
        let nodes = lookup("", "v1", "nodes").expect("nodes");
        assert_eq!(nodes.key("", "n1"), "/registry/minions/n1");
        let deploy = lookup("apps", "v1", "deployments").expect("deployments");
        assert_eq!(deploy.api_version(), "apps/v1");
    }

    #[test]
    fn every_row_is_unique() {
        for (i, a) in RESOURCES.iter().enumerate() {
            for b in &RESOURCES[i + 1..] {
                assert!(
                    !(a.group == b.group && a.plural == b.plural),
                    "{} listed twice",
                    a.plural
                );
            }
        }
    }
}
