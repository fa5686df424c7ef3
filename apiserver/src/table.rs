//! Server-side printing: `meta.k8s.io/v1` `Table` responses, which is what `kubectl get`
//! asks for (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`) and prints as is.

use serde_json::{json, Value};

use crate::resources::ResourceDef;

/// Does the `Accept` header ask for a Table?
pub fn wants_table(accept: &str) -> bool {
    accept
        .split(',')
        .next()
        .is_some_and(|first| first.contains("as=Table") && first.contains("g=meta.k8s.io"))
}

/// Column name, type, priority (1 = only with `-o wide`).
type Column = (&'static str, &'static str, u8);

fn columns(res: &ResourceDef) -> Vec<Column> {
    let mut cols: Vec<Column> = vec![("Name", "string", 0)];
    cols.extend_from_slice(match res.plural {
        "pods" => &[
            ("Ready", "string", 0),
            ("Status", "string", 0),
            ("Restarts", "string", 0),
            ("Age", "string", 0),
            ("IP", "string", 1),
            ("Node", "string", 1),
        ],
        "deployments" => &[
            ("Ready", "string", 0),
            ("Up-to-date", "string", 0),
            ("Available", "string", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "replicasets" => &[
            ("Desired", "integer", 0),
            ("Current", "integer", 0),
            ("Ready", "integer", 0),
            ("Age", "string", 0),
            ("Containers", "string", 1),
            ("Images", "string", 1),
            ("Selector", "string", 1),
        ],
        "services" => &[
            ("Type", "string", 0),
            ("Cluster-IP", "string", 0),
            ("External-IP", "string", 0),
            ("Port(s)", "string", 0),
            ("Age", "string", 0),
            ("Selector", "string", 1),
        ],
        "nodes" => &[
            ("Status", "string", 0),
            ("Roles", "string", 0),
            ("Age", "string", 0),
            ("Version", "string", 0),
        ],
        "namespaces" => &[("Status", "string", 0), ("Age", "string", 0)],
        "configmaps" => &[("Data", "integer", 0), ("Age", "string", 0)],
        "secrets" => &[
            ("Type", "string", 0),
            ("Data", "integer", 0),
            ("Age", "string", 0),
        ],
        "jobs" => &[
            ("Completions", "string", 0),
            ("Duration", "string", 0),
            ("Age", "string", 0),
        ],
        "leases" => &[("Holder", "string", 0), ("Age", "string", 0)],
        _ => &[("Age", "string", 0)],
    });
    cols
}

/// kubectl's human durations: 45s, 5m12s, 3h, 12d.
pub fn human_age(timestamp: &str) -> String {
    let Ok(t) = chrono::DateTime::parse_from_rfc3339(timestamp) else {
        return "<unknown>".into();
    };
    let secs = (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
        .num_seconds()
        .max(0);
    match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    }
}

fn s<'a>(obj: &'a Value, ptr: &str) -> &'a str {
    obj.pointer(ptr).and_then(Value::as_str).unwrap_or("")
}

fn n(obj: &Value, ptr: &str) -> i64 {
    obj.pointer(ptr).and_then(Value::as_i64).unwrap_or(0)
}

fn none_if_empty(v: &str) -> String {
    if v.is_empty() {
        "<none>".into()
    } else {
        v.to_string()
    }
}

fn containers(obj: &Value, ptr: &str) -> (String, String) {
    let cs = obj
        .pointer(ptr)
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let names: Vec<&str> = cs.iter().map(|c| s(c, "/name")).collect();
    let images: Vec<&str> = cs.iter().map(|c| s(c, "/image")).collect();
    (names.join(","), images.join(","))
}

fn selector_text(obj: &Value) -> String {
    match obj.pointer("/spec/selector") {
        Some(sel) if sel.get("matchLabels").is_some() || sel.get("matchExpressions").is_some() => {
            crate::selector::LabelSelector::from_object(sel).to_query()
        }
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
            .collect::<Vec<_>>()
            .join(","),
        _ => "<none>".into(),
    }
}

fn cells(res: &ResourceDef, obj: &Value) -> Vec<Value> {
    let name = s(obj, "/metadata/name");
    let age = human_age(s(obj, "/metadata/creationTimestamp"));
    let mut row = vec![json!(name)];
    match res.plural {
        "pods" => {
            let total = obj
                .pointer("/spec/containers")
                .and_then(Value::as_array)
                .map_or(0, Vec::len);
            let statuses = obj
                .pointer("/status/containerStatuses")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            let ready = statuses
                .iter()
                .filter(|c| c.get("ready") == Some(&json!(true)))
                .count();
            let restarts: i64 = statuses.iter().map(|c| n(c, "/restartCount")).sum();
            let mut status = s(obj, "/status/phase").to_string();
            if !s(obj, "/metadata/deletionTimestamp").is_empty() {
                status = "Terminating".into();
            }
            row.extend([
                json!(format!("{ready}/{total}")),
                json!(status),
                json!(restarts.to_string()),
                json!(age),
                json!(none_if_empty(s(obj, "/status/podIP"))),
                json!(none_if_empty(s(obj, "/spec/nodeName"))),
            ]);
        }
        "deployments" => {
            let (names, images) = containers(obj, "/spec/template/spec/containers");
            row.extend([
                json!(format!(
                    "{}/{}",
                    n(obj, "/status/readyReplicas"),
                    n(obj, "/spec/replicas")
                )),
                json!(n(obj, "/status/updatedReplicas")),
                json!(n(obj, "/status/availableReplicas")),
                json!(age),
                json!(names),
                json!(images),
                json!(selector_text(obj)),
            ]);
        }
        "replicasets" => {
            let (names, images) = containers(obj, "/spec/template/spec/containers");
            row.extend([
                json!(n(obj, "/spec/replicas")),
                json!(n(obj, "/status/replicas")),
                json!(n(obj, "/status/readyReplicas")),
                json!(age),
                json!(names),
                json!(images),
                json!(selector_text(obj)),
            ]);
        }
        "services" => {
            let ports: Vec<String> = obj
                .pointer("/spec/ports")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|p| format!("{}/{}", n(p, "/port"), s(p, "/protocol")))
                .collect();
            row.extend([
                json!(s(obj, "/spec/type")),
                json!(none_if_empty(s(obj, "/spec/clusterIP"))),
                json!("<none>"),
                json!(if ports.is_empty() {
                    "<none>".to_string()
                } else {
                    ports.join(",")
                }),
                json!(age),
                json!(selector_text(obj)),
            ]);
        }
        "nodes" => {
            let ready = obj
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .and_then(|cs| cs.iter().find(|c| s(c, "/type") == "Ready"))
                .map(|c| {
                    if s(c, "/status") == "True" {
                        "Ready"
                    } else {
                        "NotReady"
                    }
                })
                .unwrap_or("Unknown");
            row.extend([
                json!(ready),
                json!("<none>"),
                json!(age),
                json!(s(obj, "/status/nodeInfo/kubeletVersion")),
            ]);
        }
        "namespaces" => row.extend([json!(s(obj, "/status/phase")), json!(age)]),
        "configmaps" => {
            let count = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len())
                + obj
                    .get("binaryData")
                    .and_then(Value::as_object)
                    .map_or(0, |m| m.len());
            row.extend([json!(count), json!(age)]);
        }
        "secrets" => {
            let count = obj
                .get("data")
                .and_then(Value::as_object)
                .map_or(0, |m| m.len());
            row.extend([json!(s(obj, "/type")), json!(count), json!(age)]);
        }
        "jobs" => row.extend([
            json!(format!(
                "{}/{}",
                n(obj, "/status/succeeded"),
                n(obj, "/spec/completions")
            )),
            json!("<none>"),
            json!(age),
        ]),
        "leases" => row.extend([
            json!(none_if_empty(s(obj, "/spec/holderIdentity"))),
            json!(age),
        ]),
        _ => row.push(json!(age)),
    }
    row
}

/// The object embedded in a row: full object or `PartialObjectMetadata` (`includeObject`).
fn row_object(obj: &Value, include: &str) -> Value {
    match include {
        "None" => Value::Null,
        "Object" => obj.clone(),
        _ => json!({
            "kind": "PartialObjectMetadata",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": obj.get("metadata").cloned().unwrap_or(json!({})),
        }),
    }
}

/// A Table of `items`; `list_meta` carries resourceVersion and continue.
pub fn table(res: &ResourceDef, items: &[Value], list_meta: Value, include: &str) -> Value {
    let defs: Vec<Value> = columns(res)
        .into_iter()
        .map(|(name, ty, priority)| {
            let format = if name == "Name" { "name" } else { "" };
            json!({"name": name, "type": ty, "format": format, "description": name, "priority": priority})
        })
        .collect();
    let rows: Vec<Value> = items
        .iter()
        .map(|o| json!({"cells": cells(res, o), "object": row_object(o, include)}))
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": defs,
        "rows": rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;

    #[test]
    fn pod_rows_match_kubectl_columns() {
        let pods = lookup("", "v1", "pods").expect("pods");
        let pod = json!({"metadata": {"name": "p", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"containers": [{"name": "c"}], "nodeName": "n1"}, "status": {"phase": "Running"}});
        let t = table(pods, &[pod], json!({"resourceVersion": "5"}), "Metadata");
        assert_eq!(t["columnDefinitions"][0]["name"], "Name");
        assert_eq!(t["rows"][0]["cells"][1], "0/1");
        assert_eq!(t["rows"][0]["cells"][2], "Running");
        assert_eq!(t["rows"][0]["cells"][6], "n1");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
    }

    #[test]
    fn table_accept_header() {
        assert!(wants_table(
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"
        ));
        assert!(!wants_table("application/json"));
    }
}
