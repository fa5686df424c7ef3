//! Discovery and version documents (`/version`, `/api`, `/api/v1`, `/apis`,
//! `/apis/{group}/{version}`) and the OpenAPI v2 document kubectl downloads.
//!
//! kubectl validates manifests against `/openapi/v2`, fetched as protobuf (gnostic's
//! `openapi.v2.Document`). A resource with no schema in that document is not validated
//! client-side, and `kubectl apply` then takes merge keys from its compiled-in types, so a
//! valid document without definitions is enough for create/apply to work without
//! `--validate=false` (the server validates). `kubectl explain` needs real schemas, which
//! this document does not carry.

use serde_json::{json, Value};

use crate::resources::{groups, ResourceDef, RESOURCES};

/// The version this server reports (`kubectl version`).
pub fn version() -> Value {
    json!({
        "major": "1",
        "minor": "28",
        "gitVersion": "v1.28.0-kvstore",
        "gitCommit": "0000000000000000000000000000000000000000",
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "rust",
        "compiler": "rustc",
        "platform": "linux/amd64"
    })
}

/// `/api`: the core group's versions.
pub fn core_versions() -> Value {
    json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]
    })
}

fn group_doc(group: &str, version: &str) -> Value {
    let gv = format!("{group}/{version}");
    json!({
        "name": group,
        "versions": [{"groupVersion": gv, "version": version}],
        "preferredVersion": {"groupVersion": gv, "version": version}
    })
}

/// `/apis`: every named group.
pub fn group_list() -> Value {
    let groups: Vec<Value> = groups().into_iter().map(|(g, v)| group_doc(g, v)).collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

/// `/apis/{group}`: one group.
pub fn group(group: &str) -> Option<Value> {
    groups()
        .into_iter()
        .find(|(g, _)| *g == group)
        .map(|(g, v)| {
            let mut d = group_doc(g, v);
            d["kind"] = json!("APIGroup");
            d["apiVersion"] = json!("v1");
            d
        })
}

const VERBS: &[&str] = &[
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
];

fn resource_entries(r: &ResourceDef) -> Vec<Value> {
    let mut main = json!({
        "name": r.plural,
        "singularName": r.singular,
        "namespaced": r.namespaced,
        "kind": r.kind,
        "verbs": VERBS,
        "storageVersionHash": "",
    });
    if !r.short_names.is_empty() {
        main["shortNames"] = json!(r.short_names);
    }
    if r.in_all {
        main["categories"] = json!(["all"]);
    }
    let mut out = vec![main];
    for sub in r.subresources {
        let (kind, group, version, verbs): (&str, Option<&str>, Option<&str>, &[&str]) = match *sub
        {
            "scale" => (
                "Scale",
                Some("autoscaling"),
                Some("v1"),
                &["get", "patch", "update"],
            ),
            "binding" => ("Binding", None, None, &["create"]),
            _ => (r.kind, None, None, &["get", "patch", "update"]),
        };
        let mut e = json!({
            "name": format!("{}/{}", r.plural, sub),
            "singularName": "",
            "namespaced": r.namespaced,
            "kind": kind,
            "verbs": verbs,
        });
        if let (Some(g), Some(v)) = (group, version) {
            e["group"] = json!(g);
            e["version"] = json!(v);
        }
        out.push(e);
    }
    out
}

/// `/api/v1` or `/apis/{group}/{version}`: the resources of one group version.
pub fn resource_list(group: &str, version: &str) -> Option<Value> {
    let resources: Vec<Value> = RESOURCES
        .iter()
        .filter(|r| r.group == group && r.version == version)
        .flat_map(resource_entries)
        .collect();
    if resources.is_empty() {
        return None;
    }
    let gv = if group.is_empty() {
        version.to_string()
    } else {
        format!("{group}/{version}")
    };
    Some(json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": gv,
        "resources": resources
    }))
}

/// A hand-written subset of gnostic's `openapi.v2` protobuf messages: enough to encode a
/// valid `Document` (field numbers from gnostic's `OpenAPIv2.proto`).
mod gnostic {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Document {
        #[prost(string, tag = "1")]
        pub swagger: String,
        #[prost(message, optional, tag = "2")]
        pub info: Option<Info>,
        #[prost(message, optional, tag = "8")]
        pub paths: Option<Paths>,
        #[prost(message, optional, tag = "9")]
        pub definitions: Option<Definitions>,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Info {
        #[prost(string, tag = "1")]
        pub title: String,
        #[prost(string, tag = "2")]
        pub version: String,
    }

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Paths {}

    #[derive(Clone, PartialEq, prost::Message)]
    pub struct Definitions {}
}

/// `/openapi/v2` as gnostic protobuf (`application/com.github.proto-openapi.spec.v2@v1.0+protobuf`).
pub fn openapi_v2_protobuf() -> Vec<u8> {
    use prost::Message;
    gnostic::Document {
        swagger: "2.0".into(),
        info: Some(gnostic::Info {
            title: "Kubernetes".into(),
            version: "v1.28.0-kvstore".into(),
        }),
        paths: Some(gnostic::Paths {}),
        definitions: Some(gnostic::Definitions {}),
    }
    .encode_to_vec()
}

/// `/openapi/v2` as JSON.
pub fn openapi_v2_json() -> Value {
    json!({
        "swagger": "2.0",
        "info": {"title": "Kubernetes", "version": "v1.28.0-kvstore"},
        "paths": {},
        "definitions": {}
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_list_has_subresources() {
        let list = resource_list("", "v1").expect("core");
        let names: Vec<&str> = list["resources"]
            .as_array()
            .expect("array")
            .iter()
            .filter_map(|r| r["name"].as_str())
            .collect();
        assert!(names.contains(&"pods"));
        assert!(names.contains(&"pods/status"));
        assert!(names.contains(&"pods/binding"));
        let apps = resource_list("apps", "v1").expect("apps");
        assert!(apps.to_string().contains("deployments/scale"));
        assert!(resource_list("nope", "v1").is_none());
    }

    #[test]
    fn openapi_document_starts_with_swagger_field() {
        let pb = openapi_v2_protobuf();
        // Field 1, wire type 2 (length-delimited), length 3, "2.0".
        assert_eq!(&pb[..5], &[0x0a, 3, b'2', b'.', b'0']);
    }
}
