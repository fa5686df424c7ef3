//! The admission chain run on every create and update after defaulting:
//! 1. namespace lifecycle: no objects in a namespace that does not exist or is terminating;
//! 2. validation: metadata and the resource's own rules, as 422 `Invalid` with causes.

use serde_json::Value;

use crate::error::{ApiError, ApiResult, Subject};
use crate::meta::meta_str;
use crate::registry::{ObjRef, Registry};
use crate::resources::{lookup, ResourceDef};
use crate::strategy::validate_meta;

/// Namespace lifecycle for a create in `namespace`.
pub async fn namespace_lifecycle(
    registry: &Registry,
    res: &ResourceDef,
    namespace: &str,
) -> ApiResult<()> {
    if !res.namespaced {
        return Ok(());
    }
    let Some(ns_res) = lookup("", "v1", "namespaces") else {
        return Err(ApiError::internal(
            "namespaces missing from the resource table",
        ));
    };
    let ns = registry
        .get(ObjRef {
            res: ns_res,
            namespace: "",
            name: namespace,
        })
        .await
        .map_err(|e| {
            if e.code == 404 {
                ApiError::not_found(Subject {
                    group: "",
                    plural: "namespaces",
                    name: namespace,
                })
            } else {
                e
            }
        })?;
    if ns.pointer("/status/phase").and_then(Value::as_str) == Some("Terminating") {
        return Err(ApiError::forbidden(format!(
            "{} \"{}\" is forbidden: unable to create new content in namespace {namespace} because it is being terminated",
            res.plural, meta_str(&ns, "name")
        )));
    }
    Ok(())
}

/// Validation of a defaulted object.
pub fn validate(res: &ResourceDef, obj: &Value) -> ApiResult<()> {
    let mut causes = validate_meta(obj, res.strategy.label_names);
    causes.extend((res.strategy.validate)(obj));
    if causes.is_empty() {
        return Ok(());
    }
    Err(ApiError::invalid(
        res.kind,
        Subject {
            group: res.group,
            plural: res.plural,
            name: meta_str(obj, "name"),
        },
        &causes,
    ))
}
