//! Object metadata the server owns: `uid`, `creationTimestamp`, `generation`,
//! `resourceVersion`, `deletionTimestamp`; and the split between an object's main resource
//! and its `status` subresource.

use serde_json::{json, Map, Value};

use crate::resources::ResourceDef;

/// RFC 3339 in UTC with second precision, as Kubernetes writes timestamps.
pub fn now() -> String {
    chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// RFC 3339 `secs` seconds from now.
pub fn now_plus(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The object's `metadata` map, created if missing.
pub fn meta_mut(obj: &mut Value) -> &mut Map<String, Value> {
    if !obj.get("metadata").is_some_and(Value::is_object) {
        obj["metadata"] = json!({});
    }
    match obj.get_mut("metadata").and_then(Value::as_object_mut) {
        Some(m) => m,
        None => unreachable!("metadata was just made an object"),
    }
}

pub fn meta_str<'a>(obj: &'a Value, field: &str) -> &'a str {
    obj.get("metadata")
        .and_then(|m| m.get(field))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Everything but `metadata` and `status`: what a `generation` bump is about.
fn spec_part(obj: &Value) -> Value {
    let mut o = obj.as_object().cloned().unwrap_or_default();
    o.remove("metadata");
    o.remove("status");
    o.remove("kind");
    o.remove("apiVersion");
    Value::Object(o)
}

/// Fills in what a new object gets from the server, before validation.
pub fn prepare_create(res: &ResourceDef, obj: &mut Value, namespace: &str) {
    obj["kind"] = json!(res.kind);
    obj["apiVersion"] = json!(res.api_version());
    let generate = meta_str(obj, "generateName").to_string();
    let meta = meta_mut(obj);
    if meta
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
        && !generate.is_empty()
    {
        let suffix: String = uuid::Uuid::new_v4().simple().to_string()[..5].to_string();
        meta.insert("name".into(), json!(format!("{generate}{suffix}")));
    }
    if res.namespaced {
        meta.insert("namespace".into(), json!(namespace));
    } else {
        meta.remove("namespace");
    }
    meta.insert("uid".into(), json!(uuid::Uuid::new_v4().to_string()));
    meta.insert("creationTimestamp".into(), json!(now()));
    meta.insert("generation".into(), json!(1));
    meta.remove("resourceVersion");
    meta.remove("deletionTimestamp");
    meta.remove("deletionGracePeriodSeconds");
    meta.remove("selfLink");
    if let Some(status) = res.strategy.initial_status {
        obj["status"] = status();
    }
    (res.strategy.defaults)(obj);
}

/// Merges an update into the stored object: server-owned metadata is kept, `status` comes
/// from the right side (old for the main resource, new for `/status`), and `generation`
/// moves when anything outside metadata and status changed.
pub fn prepare_update(res: &ResourceDef, old: &Value, new: &mut Value, status_update: bool) {
    new["kind"] = json!(res.kind);
    new["apiVersion"] = json!(res.api_version());
    if status_update {
        // A status write changes only status (kube-apiserver's status strategies).
        let status = new.get("status").cloned();
        let labels_meta = old.get("metadata").cloned();
        *new = old.clone();
        if let Some(s) = status {
            new["status"] = s;
        }
        if let Some(m) = labels_meta {
            new["metadata"] = m;
        }
        return;
    }
    if res.has_status() {
        match old.get("status") {
            Some(s) => new["status"] = s.clone(),
            None => {
                if let Some(o) = new.as_object_mut() {
                    o.remove("status");
                }
            }
        }
    }
    (res.strategy.defaults)(new);
    let old_meta = old.get("metadata").cloned().unwrap_or_else(|| json!({}));
    let mut generation = old_meta
        .get("generation")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if spec_part(old) != spec_part(new) {
        generation += 1;
    }
    let meta = meta_mut(new);
    for keep in [
        "uid",
        "creationTimestamp",
        "namespace",
        "name",
        "deletionTimestamp",
        "deletionGracePeriodSeconds",
    ] {
        match old_meta.get(keep) {
            Some(v) => meta.insert(keep.into(), v.clone()),
            None => meta.remove(keep),
        };
    }
    meta.insert("generation".into(), json!(generation));
    meta.remove("resourceVersion");
    meta.remove("selfLink");
}

/// The bytes stored for an object: JSON without `resourceVersion` (the store's
/// mod_revision is the one source of truth for it).
pub fn encode(obj: &Value) -> Vec<u8> {
    let mut o = obj.clone();
    if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("resourceVersion");
    }
    serde_json::to_vec(&o).unwrap_or_default()
}

/// The resourceVersion of an object as a number (0 when unset or not a number).
pub fn resource_version(obj: &Value) -> i64 {
    meta_str(obj, "resourceVersion").parse().unwrap_or(0)
}

pub fn finalizers(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resources::lookup;

    #[test]
    fn generation_moves_on_spec_changes_only() {
        let res = lookup("apps", "v1", "deployments").expect("deployments");
        let mut old = json!({"metadata": {"name": "d"}, "spec": {"replicas": 1}});
        prepare_create(res, &mut old, "default");
        assert_eq!(old["metadata"]["generation"], 1);
        let mut relabel = old.clone();
        relabel["metadata"]["labels"] = json!({"a": "b"});
        prepare_update(res, &old, &mut relabel, false);
        assert_eq!(relabel["metadata"]["generation"], 1);
        let mut scaled = old.clone();
        scaled["spec"]["replicas"] = json!(3);
        prepare_update(res, &old, &mut scaled, false);
        assert_eq!(scaled["metadata"]["generation"], 2);
        assert_eq!(scaled["metadata"]["uid"], old["metadata"]["uid"]);
    }

    #[test]
    fn status_updates_touch_only_status() {
        let res = lookup("", "v1", "pods").expect("pods");
        let old = json!({"metadata": {"name": "p", "uid": "u"}, "spec": {"nodeName": ""}, "status": {"phase": "Pending"}});
        let mut new = json!({"metadata": {"name": "p"}, "spec": {"nodeName": "n1"}, "status": {"phase": "Running"}});
        prepare_update(res, &old, &mut new, true);
        assert_eq!(new["status"]["phase"], "Running");
        assert_eq!(new["spec"]["nodeName"], "");
    }
}
