//! PATCH bodies: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and Kubernetes' strategic
//! merge patch, which is what `kubectl apply`, `label`, `scale` and `edit` send.
//!
//! The strategic merge here covers what those commands produce for the served resources:
//! lists of objects merged by their merge key (containers by `name`, ports by
//! `containerPort`/`port`, ...), primitive lists merged as sets where Kubernetes does
//! (`finalizers`), `null` deleting a key, and the `$patch`, `$retainKeys`,
//! `$setElementOrder/` and `$deleteFromPrimitiveList/` directives.

use serde_json::{Map, Value};

use crate::error::ApiError;

/// The PATCH flavours, by `Content-Type`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum PatchType {
    Json,
    Merge,
    Strategic,
}

impl PatchType {
    pub fn from_content_type(ct: &str) -> Result<Self, ApiError> {
        match ct.split(';').next().unwrap_or("").trim() {
            "application/json-patch+json" => Ok(PatchType::Json),
            "application/merge-patch+json" => Ok(PatchType::Merge),
            "application/strategic-merge-patch+json" => Ok(PatchType::Strategic),
            other => Err(ApiError::unsupported_media_type(other)),
        }
    }
}

/// Applies `patch` to `original`; a patch that does not apply is a 422 like Kubernetes'.
pub fn apply(kind: PatchType, original: &Value, patch: &[u8]) -> Result<Value, ApiError> {
    let patch: Value = serde_json::from_slice(patch)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    match kind {
        PatchType::Json => {
            let ops: json_patch::Patch = serde_json::from_value(patch)
                .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
            let mut doc = original.clone();
            json_patch::patch(&mut doc, &ops).map_err(|e| {
                ApiError::new(
                    axum::http::StatusCode::UNPROCESSABLE_ENTITY,
                    "Invalid",
                    format!("the server rejected our request due to an error in our request: {e}"),
                )
            })?;
            Ok(doc)
        }
        PatchType::Merge => {
            let mut doc = original.clone();
            json_patch::merge(&mut doc, &patch);
            Ok(doc)
        }
        PatchType::Strategic => {
            if !patch.is_object() {
                return Err(ApiError::bad_request(
                    "strategic merge patch must be a JSON object",
                ));
            }
            Ok(strategic_merge(original, &patch, ""))
        }
    }
}

/// The merge key of a list field, by field name (and parent, where names collide).
fn merge_key(parent: &str, field: &str) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "hostAliases"
        | "readinessGates" => match field {
            "hostAliases" => "ip",
            "readinessGates" => "conditionType",
            _ => "name",
        },
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "ports" if parent == "spec" => "port",
        "ports" => "containerPort",
        "conditions" => "type",
        "ownerReferences" => "uid",
        "taints" => "key",
        "addresses" => "type",
        _ => return None,
    })
}

/// Primitive lists Kubernetes merges as sets (`patchStrategy: merge` on a `[]string`).
fn merges_primitives(field: &str) -> bool {
    matches!(field, "finalizers")
}

fn strategic_merge(original: &Value, patch: &Value, parent: &str) -> Value {
    let Some(pmap) = patch.as_object() else {
        return patch.clone();
    };
    if pmap.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut p = pmap.clone();
        p.remove("$patch");
        return Value::Object(p);
    }
    if pmap.get("$patch").and_then(Value::as_str) == Some("delete") {
        return Value::Null;
    }
    let mut out: Map<String, Value> = original.as_object().cloned().unwrap_or_default();
    if let Some(keep) = pmap.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        out.retain(|k, _| keep.contains(&k.as_str()));
    }
    for (k, v) in pmap {
        if k == "$retainKeys" || k.starts_with("$setElementOrder/") || k == "$patch" {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(items)), Some(remove)) = (out.get_mut(field), v.as_array()) {
                items.retain(|x| !remove.contains(x));
            }
            continue;
        }
        if v.is_null() {
            out.remove(k);
            continue;
        }
        let merged = match (out.get(k), v) {
            (Some(orig @ Value::Object(_)), Value::Object(_)) => strategic_merge(orig, v, k),
            (Some(Value::Array(orig)), Value::Array(items)) => merge_list(parent, k, orig, items),
            _ => strip_directives(v),
        };
        out.insert(k.clone(), merged);
    }
    Value::Object(out)
}

/// Removes `$patch`-style directives from a value inserted wholesale.
fn strip_directives(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('$'))
                .map(|(k, v)| (k.clone(), strip_directives(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.get("$patch").is_none())
                .map(strip_directives)
                .collect(),
        ),
        other => other.clone(),
    }
}

fn merge_list(parent: &str, field: &str, orig: &[Value], patch: &[Value]) -> Value {
    if patch
        .iter()
        .any(|p| p.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        return strip_directives(&Value::Array(patch.to_vec()));
    }
    if merges_primitives(field) {
        let mut out = orig.to_vec();
        for p in patch {
            if !out.contains(p) {
                out.push(p.clone());
            }
        }
        return Value::Array(out);
    }
    let Some(key) = merge_key(parent, field) else {
        return strip_directives(&Value::Array(patch.to_vec()));
    };
    let mut out = orig.to_vec();
    for p in patch {
        let id = p.get(key);
        let pos = id.and_then(|id| out.iter().position(|o| o.get(key) == Some(id)));
        let delete = p.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                out.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => out[i] = strategic_merge(&out[i], p, field),
            (None, false) => out.push(strip_directives(p)),
        }
    }
    Value::Array(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_containers_by_name() {
        let orig = json!({"spec": {"containers": [{"name": "a", "image": "a:1"}, {"name": "b", "image": "b:1"}]}});
        let patch = json!({"spec": {"$setElementOrder/containers": [{"name": "a"}, {"name": "b"}],
            "containers": [{"name": "b", "image": "b:2"}]}});
        let out = apply(PatchType::Strategic, &orig, patch.to_string().as_bytes()).expect("patch");
        assert_eq!(out["spec"]["containers"][0]["image"], "a:1");
        assert_eq!(out["spec"]["containers"][1]["image"], "b:2");
        assert!(out["spec"].get("$setElementOrder/containers").is_none());
    }

    #[test]
    fn strategic_deletes_keys_and_elements() {
        let orig = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"containers": [{"name": "a"}, {"name": "b"}]}});
        let patch = json!({"metadata": {"labels": {"a": null}, "finalizers": ["y"]},
            "spec": {"containers": [{"name": "a", "$patch": "delete"}]}});
        let out = apply(PatchType::Strategic, &orig, patch.to_string().as_bytes()).expect("patch");
        assert_eq!(out["metadata"]["labels"], json!({"b": "2"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(out["spec"]["containers"], json!([{"name": "b"}]));
    }

    #[test]
    fn json_and_merge_patches() {
        let orig = json!({"spec": {"replicas": 1, "paused": true}});
        let out = apply(
            PatchType::Json,
            &orig,
            br#"[{"op":"replace","path":"/spec/replicas","value":3}]"#,
        )
        .expect("json patch");
        assert_eq!(out["spec"]["replicas"], 3);
        let out = apply(PatchType::Merge, &orig, br#"{"spec":{"paused":null}}"#).expect("merge");
        assert_eq!(out, json!({"spec": {"replicas": 1}}));
        let err = apply(
            PatchType::Json,
            &orig,
            br#"[{"op":"test","path":"/spec/replicas","value":9}]"#,
        )
        .expect_err("failed test op");
        assert_eq!(err.code.as_u16(), 422);
    }
}
