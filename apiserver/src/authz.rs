//! Authorization: `AlwaysAllow`, `AlwaysDeny` and `RBAC` over the Role, ClusterRole,
//! RoleBinding and ClusterRoleBinding objects stored in the API itself.
//!
//! The RBAC rules are read from the store and kept for up to a second (kube-apiserver reads
//! them from an informer, which lags the same way), so a burst of requests does not turn
//! into a burst of list calls.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::authn::User;
use crate::error::ApiError;
use crate::registry::{ListOptions, Registry};
use crate::resources::lookup;

/// What a request wants to do, in RBAC's terms.
#[derive(Debug, Clone)]
pub struct Attributes {
    pub verb: String,
    pub group: String,
    /// `pods` or `pods/status`.
    pub resource: String,
    pub namespace: String,
    pub name: String,
    /// Set for non-resource requests (`/healthz`, `/version`).
    pub path: Option<String>,
}

#[derive(Debug, Default, Clone)]
struct Rules {
    cluster_roles: Vec<Value>,
    cluster_bindings: Vec<Value>,
    roles: Vec<Value>,
    bindings: Vec<Value>,
}

/// The configured chain of authorizers.
#[derive(Debug)]
pub struct Authorizer {
    modes: Vec<String>,
    registry: Arc<Registry>,
    cache: tokio::sync::Mutex<Option<(Instant, Arc<Rules>)>>,
}

fn strs(v: &Value, field: &str) -> Vec<String> {
    v.get(field)
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn covers(list: &[String], want: &str) -> bool {
    list.iter().any(|x| x == "*" || x == want)
}

fn rule_allows(rule: &Value, a: &Attributes) -> bool {
    if !covers(&strs(rule, "verbs"), &a.verb) {
        return false;
    }
    if let Some(path) = &a.path {
        return strs(rule, "nonResourceURLs").iter().any(|u| {
            u == "*" || u == path || u.strip_suffix('*').is_some_and(|p| path.starts_with(p))
        });
    }
    let resources = strs(rule, "resources");
    let (base, sub) = a.resource.split_once('/').unwrap_or((&a.resource, ""));
    let resource_ok = resources.iter().any(|r| {
        r == "*"
            || *r == a.resource
            || (!sub.is_empty() && *r == format!("{base}/*"))
            || (!sub.is_empty() && *r == format!("*/{sub}"))
    });
    let names = strs(rule, "resourceNames");
    covers(&strs(rule, "apiGroups"), &a.group)
        && resource_ok
        && (names.is_empty() || names.contains(&a.name))
}

fn subject_matches(binding: &Value, user: &User, namespace: &str) -> bool {
    binding
        .get("subjects")
        .and_then(Value::as_array)
        .is_some_and(|subjects| {
            subjects.iter().any(|s| {
                let name = s.get("name").and_then(Value::as_str).unwrap_or("");
                match s.get("kind").and_then(Value::as_str) {
                    Some("User") => name == user.name,
                    Some("Group") => user.in_group(name),
                    Some("ServiceAccount") => {
                        let ns = s
                            .get("namespace")
                            .and_then(Value::as_str)
                            .unwrap_or(namespace);
                        user.name == format!("system:serviceaccount:{ns}:{name}")
                    }
                    _ => false,
                }
            })
        })
}

fn find_role<'a>(list: &'a [Value], name: &str, namespace: Option<&str>) -> Option<&'a Value> {
    list.iter().find(|r| {
        r.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
            && namespace.is_none_or(|ns| {
                r.pointer("/metadata/namespace").and_then(Value::as_str) == Some(ns)
            })
    })
}

impl Rules {
    fn allows(&self, user: &User, a: &Attributes) -> bool {
        let role_allows = |role: Option<&Value>| {
            role.and_then(|r| r.get("rules"))
                .and_then(Value::as_array)
                .is_some_and(|rules| rules.iter().any(|rule| rule_allows(rule, a)))
        };
        for b in &self.cluster_bindings {
            if subject_matches(b, user, "") {
                let name = b
                    .pointer("/roleRef/name")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if role_allows(find_role(&self.cluster_roles, name, None)) {
                    return true;
                }
            }
        }
        if a.namespace.is_empty() {
            return false;
        }
        for b in &self.bindings {
            let ns = b
                .pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or("");
            if ns != a.namespace || !subject_matches(b, user, ns) {
                continue;
            }
            let name = b
                .pointer("/roleRef/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let role = match b.pointer("/roleRef/kind").and_then(Value::as_str) {
                Some("ClusterRole") => find_role(&self.cluster_roles, name, None),
                _ => find_role(&self.roles, name, Some(ns)),
            };
            if role_allows(role) {
                return true;
            }
        }
        false
    }
}

impl Authorizer {
    pub fn new(modes: &[String], registry: Arc<Registry>) -> Result<Self, String> {
        for m in modes {
            if !matches!(m.as_str(), "AlwaysAllow" | "AlwaysDeny" | "RBAC") {
                return Err(format!(
                    "unknown --authorization-mode {m:?} (want AlwaysAllow, AlwaysDeny or RBAC)"
                ));
            }
        }
        Ok(Authorizer {
            modes: modes.to_vec(),
            registry,
            cache: tokio::sync::Mutex::new(None),
        })
    }

    async fn rules(&self) -> Result<Arc<Rules>, ApiError> {
        let mut cache = self.cache.lock().await;
        if let Some((at, rules)) = cache.as_ref() {
            if at.elapsed() < Duration::from_secs(1) {
                return Ok(rules.clone());
            }
        }
        let g = "rbac.authorization.k8s.io";
        let mut lists = Vec::new();
        for plural in [
            "clusterroles",
            "clusterrolebindings",
            "roles",
            "rolebindings",
        ] {
            let res = lookup(g, "v1", plural).ok_or_else(|| ApiError::internal("rbac table"))?;
            lists.push(
                self.registry
                    .list(res, "", &ListOptions::default())
                    .await?
                    .items,
            );
        }
        let mut it = lists.into_iter();
        let rules = Arc::new(Rules {
            cluster_roles: it.next().unwrap_or_default(),
            cluster_bindings: it.next().unwrap_or_default(),
            roles: it.next().unwrap_or_default(),
            bindings: it.next().unwrap_or_default(),
        });
        *cache = Some((Instant::now(), rules.clone()));
        Ok(rules)
    }

    /// Allows the request or returns 403 Forbidden in Kubernetes' words.
    pub async fn authorize(&self, user: &User, a: &Attributes) -> Result<(), ApiError> {
        for mode in &self.modes {
            match mode.as_str() {
                "AlwaysAllow" => return Ok(()),
                "AlwaysDeny" => break,
                "RBAC"
                    if user.in_group("system:masters") || self.rules().await?.allows(user, a) =>
                {
                    return Ok(())
                }
                _ => {}
            }
        }
        Err(forbidden(user, a))
    }
}

fn forbidden(user: &User, a: &Attributes) -> ApiError {
    if let Some(path) = &a.path {
        return ApiError::forbidden(format!(
            "forbidden: User \"{}\" cannot {} path \"{path}\"",
            user.name, a.verb
        ));
    }
    let what = if a.name.is_empty() {
        a.resource.clone()
    } else {
        format!("{} \"{}\"", a.resource, a.name)
    };
    let scope = if a.namespace.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace \"{}\"", a.namespace)
    };
    ApiError::forbidden(format!(
        "{what} is forbidden: User \"{}\" cannot {} resource \"{}\" in API group \"{}\" {scope}",
        user.name, a.verb, a.resource, a.group
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn attrs(verb: &str, resource: &str, ns: &str) -> Attributes {
        Attributes {
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            namespace: ns.into(),
            name: String::new(),
            path: None,
        }
    }

    #[test]
    fn role_binding_grants_only_its_namespace_and_verbs() {
        let rules = Rules {
            roles: vec![json!({"metadata": {"name": "reader", "namespace": "dev"},
                "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]})],
            bindings: vec![json!({"metadata": {"name": "b", "namespace": "dev"},
                "subjects": [{"kind": "User", "name": "alice"}],
                "roleRef": {"kind": "Role", "name": "reader"}})],
            ..Default::default()
        };
        let alice = User::new("alice", &[]);
        assert!(rules.allows(&alice, &attrs("list", "pods", "dev")));
        assert!(!rules.allows(&alice, &attrs("create", "pods", "dev")));
        assert!(!rules.allows(&alice, &attrs("list", "pods", "prod")));
        assert!(!rules.allows(&alice, &attrs("list", "pods/status", "dev")));
        assert!(!rules.allows(&User::new("bob", &[]), &attrs("list", "pods", "dev")));
    }

    #[test]
    fn forbidden_message_matches_kubernetes() {
        let e = forbidden(&User::new("alice", &[]), &attrs("list", "pods", "dev"));
        assert_eq!(
            e.message,
            "pods is forbidden: User \"alice\" cannot list resource \"pods\" in API group \"\" in the namespace \"dev\""
        );
    }
}
