//! Per-resource strategy hooks: defaulting, validation and the status created objects start
//! with (kube-apiserver's `RESTCreateStrategy`/`RESTUpdateStrategy`, in the small).
//!
//! Objects stay `serde_json::Value`s: the hooks touch the few fields they own and leave
//! everything else (fields this server does not know about) exactly as the client sent it.

use serde_json::{json, Value};

use crate::error::Cause;

/// The hooks of one resource.
#[derive(Debug, Clone, Copy)]
pub struct Strategy {
    /// Fills in defaults on create and update (before validation).
    pub defaults: fn(&mut Value),
    /// Returns the invalid fields of an object (after defaulting).
    pub validate: fn(&Value) -> Vec<Cause>,
    /// The status a new object starts with (None = keep what the client sent).
    pub initial_status: Option<fn() -> Value>,
    /// Object names must be DNS-1123 labels (no dots), not subdomains.
    pub label_names: bool,
}

fn no_defaults(_: &mut Value) {}
fn no_validation(_: &Value) -> Vec<Cause> {
    Vec::new()
}

pub const PLAIN: Strategy = Strategy {
    defaults: no_defaults,
    validate: no_validation,
    initial_status: None,
    label_names: false,
};

pub const NAMESPACE: Strategy = Strategy {
    defaults: namespace_defaults,
    validate: no_validation,
    initial_status: Some(|| json!({"phase": "Active"})),
    label_names: true,
};

pub const POD: Strategy = Strategy {
    defaults: pod_defaults,
    validate: pod_validate,
    initial_status: Some(|| json!({"phase": "Pending", "qosClass": "BestEffort"})),
    label_names: false,
};

pub const NODE: Strategy = Strategy {
    defaults: no_defaults,
    validate: no_validation,
    initial_status: None,
    label_names: false,
};

pub const SERVICE: Strategy = Strategy {
    defaults: service_defaults,
    validate: service_validate,
    initial_status: Some(|| json!({"loadBalancer": {}})),
    label_names: true,
};

pub const SECRET: Strategy = Strategy {
    defaults: |obj| set_default(obj, &["type"], json!("Opaque")),
    validate: no_validation,
    initial_status: None,
    label_names: false,
};

pub const DEPLOYMENT: Strategy = Strategy {
    defaults: deployment_defaults,
    validate: workload_validate,
    initial_status: Some(|| json!({})),
    label_names: false,
};

pub const REPLICASET: Strategy = Strategy {
    defaults: replicaset_defaults,
    validate: workload_validate,
    initial_status: Some(|| json!({"replicas": 0})),
    label_names: false,
};

pub const JOB: Strategy = Strategy {
    defaults: job_defaults,
    validate: job_validate,
    initial_status: Some(|| json!({})),
    label_names: false,
};

/// Sets `path` to `value` if it is absent (creating parent objects as needed).
pub fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, seg) in path.iter().enumerate() {
        if !cur.is_object() {
            return;
        }
        let last = i == path.len() - 1;
        let map = match cur.as_object_mut() {
            Some(m) => m,
            None => return,
        };
        if last {
            if map.get(*seg).is_none_or(|v| v.is_null()) {
                map.insert((*seg).to_string(), value);
            }
            return;
        }
        cur = map.entry((*seg).to_string()).or_insert_with(|| json!({}));
    }
}

fn namespace_defaults(obj: &mut Value) {
    set_default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
}

fn pod_spec_defaults(spec: &mut Value) {
    set_default(spec, &["restartPolicy"], json!("Always"));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["securityContext"], json!({}));
    for field in ["containers", "initContainers"] {
        if let Some(cs) = spec.get_mut(field).and_then(Value::as_array_mut) {
            for c in cs {
                let image = c.get("image").and_then(Value::as_str).unwrap_or("");
                let latest = !image.rsplit('/').next().unwrap_or("").contains(':')
                    || image.ends_with(":latest");
                let policy = if latest { "Always" } else { "IfNotPresent" };
                set_default(c, &["imagePullPolicy"], json!(policy));
                set_default(
                    c,
                    &["terminationMessagePath"],
                    json!("/dev/termination-log"),
                );
                set_default(c, &["terminationMessagePolicy"], json!("File"));
                set_default(c, &["resources"], json!({}));
                if let Some(ports) = c.get_mut("ports").and_then(Value::as_array_mut) {
                    for p in ports {
                        set_default(p, &["protocol"], json!("TCP"));
                    }
                }
            }
        }
    }
}

fn pod_defaults(obj: &mut Value) {
    if let Some(spec) = obj.get_mut("spec") {
        pod_spec_defaults(spec);
    }
}

fn template_defaults(obj: &mut Value) {
    if let Some(spec) = obj.pointer_mut("/spec/template/spec") {
        pod_spec_defaults(spec);
    }
}

fn deployment_defaults(obj: &mut Value) {
    set_default(obj, &["spec", "replicas"], json!(1));
    set_default(
        obj,
        &["spec", "strategy"],
        json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
    );
    set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
    set_default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
    template_defaults(obj);
}

fn replicaset_defaults(obj: &mut Value) {
    set_default(obj, &["spec", "replicas"], json!(1));
    template_defaults(obj);
}

fn job_defaults(obj: &mut Value) {
    set_default(obj, &["spec", "completions"], json!(1));
    set_default(obj, &["spec", "parallelism"], json!(1));
    set_default(obj, &["spec", "backoffLimit"], json!(6));
    template_defaults(obj);
}

fn service_defaults(obj: &mut Value) {
    set_default(obj, &["spec", "type"], json!("ClusterIP"));
    set_default(obj, &["spec", "sessionAffinity"], json!("None"));
    if let Some(ports) = obj.pointer_mut("/spec/ports").and_then(Value::as_array_mut) {
        for p in ports {
            set_default(p, &["protocol"], json!("TCP"));
            let port = p.get("port").cloned().unwrap_or(Value::Null);
            set_default(p, &["targetPort"], port);
        }
    }
    let ip = obj
        .pointer("/spec/clusterIP")
        .and_then(Value::as_str)
        .unwrap_or("");
    if ip.is_empty() {
        // A pseudo-random address in 10.96.0.0/16; there is no allocator that guarantees
        // uniqueness (no proxy here routes service IPs).
        let n: u16 = rand_u16();
        let ip = format!("10.96.{}.{}", n >> 8, (n & 0xff).max(1));
        if let Some(spec) = obj.get_mut("spec").and_then(Value::as_object_mut) {
            spec.insert("clusterIP".into(), json!(ip));
            spec.insert("clusterIPs".into(), json!([ip]));
        }
    }
}

fn rand_u16() -> u16 {
    let id = uuid::Uuid::new_v4();
    let b = id.as_bytes();
    u16::from_be_bytes([b[0], b[1]])
}

/// Is `s` a DNS-1123 label (`[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters)?
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// Is `s` a DNS-1123 subdomain (dot-separated labels, at most 253 characters)?
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Label values: at most 63 characters of `[A-Za-z0-9-_.]`, alphanumeric at both ends.
pub fn is_label_value(s: &str) -> bool {
    s.is_empty()
        || (s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            && s.as_bytes()[0].is_ascii_alphanumeric()
            && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric())
}

/// Validation of metadata every object shares: name syntax and label values.
pub fn validate_meta(obj: &Value, label_names: bool) -> Vec<Cause> {
    let mut causes = Vec::new();
    let name = obj
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("");
    if name.is_empty() {
        causes.push(Cause::required("metadata.name"));
    } else if label_names && !is_dns_label(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character",
        ));
    } else if !is_dns_subdomain(name) {
        causes.push(Cause::invalid(
            "metadata.name",
            name,
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character",
        ));
    }
    if let Some(labels) = obj.pointer("/metadata/labels").and_then(Value::as_object) {
        for (k, v) in labels {
            let v = v.as_str().unwrap_or("");
            if !is_label_value(v) {
                causes.push(Cause::invalid(
                    format!("metadata.labels.{k}"),
                    v,
                    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character",
                ));
            }
        }
    }
    causes
}

fn pod_spec_validate(spec: Option<&Value>, path: &str) -> Vec<Cause> {
    let mut causes = Vec::new();
    let containers = spec
        .and_then(|s| s.get("containers"))
        .and_then(Value::as_array);
    let Some(containers) = containers.filter(|c| !c.is_empty()) else {
        causes.push(Cause::required(format!("{path}.containers")));
        return causes;
    };
    let mut seen = Vec::new();
    for (i, c) in containers.iter().enumerate() {
        let name = c.get("name").and_then(Value::as_str).unwrap_or("");
        if name.is_empty() {
            causes.push(Cause::required(format!("{path}.containers[{i}].name")));
        } else if !is_dns_label(name) {
            causes.push(Cause::invalid(
                format!("{path}.containers[{i}].name"),
                name,
                "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-'",
            ));
        } else if seen.contains(&name) {
            causes.push(Cause {
                reason: "FieldValueDuplicate",
                field: format!("{path}.containers[{i}].name"),
                message: format!("Duplicate value: \"{name}\""),
            });
        }
        seen.push(name);
        if c.get("image")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            causes.push(Cause::required(format!("{path}.containers[{i}].image")));
        }
    }
    causes
}

fn pod_validate(obj: &Value) -> Vec<Cause> {
    pod_spec_validate(obj.get("spec"), "spec")
}

fn workload_validate(obj: &Value) -> Vec<Cause> {
    let mut causes = pod_spec_validate(obj.pointer("/spec/template/spec"), "spec.template.spec");
    let selector = obj.pointer("/spec/selector");
    match selector
        .and_then(|s| s.get("matchLabels"))
        .and_then(Value::as_object)
    {
        None if selector.and_then(|s| s.get("matchExpressions")).is_none() => {
            causes.push(Cause::required("spec.selector"))
        }
        None => {}
        Some(want) => {
            let labels = obj.pointer("/spec/template/metadata/labels");
            let ok = want
                .iter()
                .all(|(k, v)| labels.and_then(|l| l.get(k)) == Some(v));
            if !ok {
                causes.push(Cause::invalid(
                    "spec.template.metadata.labels",
                    &labels.map(|l| l.to_string()).unwrap_or_default(),
                    "`selector` does not match template `labels`",
                ));
            }
        }
    }
    if let Some(r) = obj.pointer("/spec/replicas").and_then(Value::as_i64) {
        if r < 0 {
            causes.push(Cause::invalid(
                "spec.replicas",
                &r.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    causes
}

fn job_validate(obj: &Value) -> Vec<Cause> {
    let mut causes = pod_spec_validate(obj.pointer("/spec/template/spec"), "spec.template.spec");
    let policy = obj
        .pointer("/spec/template/spec/restartPolicy")
        .and_then(Value::as_str)
        .unwrap_or("");
    if policy != "Never" && policy != "OnFailure" {
        causes.push(Cause {
            reason: "FieldValueNotSupported",
            field: "spec.template.spec.restartPolicy".into(),
            message: format!(
                "Unsupported value: \"{policy}\": supported values: \"OnFailure\", \"Never\""
            ),
        });
    }
    causes
}

fn service_validate(obj: &Value) -> Vec<Cause> {
    let mut causes = Vec::new();
    if let Some(ports) = obj.pointer("/spec/ports").and_then(Value::as_array) {
        for (i, p) in ports.iter().enumerate() {
            let port = p.get("port").and_then(Value::as_i64).unwrap_or(0);
            if !(1..=65535).contains(&port) {
                causes.push(Cause::invalid(
                    format!("spec.ports[{i}].port"),
                    &port.to_string(),
                    "must be between 1 and 65535, inclusive",
                ));
            }
        }
    }
    causes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_without_image_is_invalid() {
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}});
        pod_defaults(&mut pod);
        let causes = pod_validate(&pod);
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.containers[0].image");
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["containers"][0]["imagePullPolicy"], "Always");
    }

    #[test]
    fn deployment_selector_must_match_template() {
        let d = json!({"spec": {"selector": {"matchLabels": {"app": "a"}},
            "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": [{"name": "c", "image": "i"}]}}}});
        let causes = workload_validate(&d);
        assert_eq!(causes[0].field, "spec.template.metadata.labels");
    }

    #[test]
    fn names_follow_rfc1123() {
        assert!(is_dns_subdomain("web-1.example"));
        assert!(!is_dns_subdomain("Web"));
        assert!(!is_dns_label("a.b"));
        let causes = validate_meta(&json!({"metadata": {"name": "Bad_Name"}}), false);
        assert_eq!(causes[0].field, "metadata.name");
    }
}
