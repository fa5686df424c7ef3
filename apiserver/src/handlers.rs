//! The REST handlers of resource requests: decode, authorize, run the verb against the
//! registry, encode the answer (object, list or Table), audit writes.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use serde_json::{json, Value};

use crate::admission;
use crate::authn::User;
use crate::authz::Attributes;
use crate::error::{ApiError, ApiResult};
use crate::meta::{self, meta_str};
use crate::patch::{self, PatchType};
use crate::registry::{DeleteOptions, ListOptions, ObjRef};
use crate::request::{parse_target, verb, Query, Target};
use crate::selector::LabelSelector;
use crate::server::App;
use crate::table;
use crate::watch;

/// A JSON response with a status code.
pub fn json_response(code: StatusCode, v: &Value) -> Response {
    let mut resp = (code, v.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// Everything a verb needs to know about its request.
struct Call<'a> {
    app: &'a App,
    target: &'a Target,
    query: &'a Query,
    headers: &'a HeaderMap,
    body: Bytes,
}

impl Call<'_> {
    fn obj_ref(&self) -> ObjRef<'_> {
        ObjRef {
            res: self.target.res,
            namespace: &self.target.namespace,
            name: self.target.name.as_deref().unwrap_or(""),
        }
    }

    fn wants_table(&self) -> bool {
        self.headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(table::wants_table)
    }

    fn render(&self, obj: Value) -> Value {
        if self.wants_table() {
            let include = self.query.get("includeObject").unwrap_or("Metadata");
            let rv = meta_str(&obj, "resourceVersion").to_string();
            table::table(
                self.target.res,
                &[obj],
                json!({"resourceVersion": rv}),
                include,
            )
        } else {
            obj
        }
    }

    /// The request body as a JSON object; anything else is 400 before the store is touched.
    fn body_object(&self) -> ApiResult<Value> {
        let ct = self
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !ct.is_empty() && !ct.contains("json") {
            return Err(ApiError::unsupported_media_type(ct));
        }
        let v: Value = serde_json::from_slice(&self.body).map_err(|e| {
            ApiError::bad_request(format!("the object provided is unrecognized: {e}"))
        })?;
        if !v.is_object() {
            return Err(ApiError::bad_request(
                "the object provided is not a JSON object",
            ));
        }
        Ok(v)
    }
}

/// The entry point for every `/api/...` and `/apis/...` resource request.
pub async fn resource(
    State(app): State<Arc<App>>,
    Extension(user): Extension<User>,
    req: Request,
) -> Response {
    let received = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let (parts, body) = req.into_parts();
    let uri = parts.uri.to_string();
    let target = match parse_target(parts.uri.path()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    let query = Query::parse(parts.uri.query());
    let verb = match verb(&parts.method, &target, &query) {
        Ok(v) => v,
        Err(e) => return e.into_response(),
    };
    let attrs = Attributes {
        verb: verb.to_string(),
        group: target.res.group.to_string(),
        resource: match &target.subresource {
            Some(s) => format!("{}/{s}", target.res.plural),
            None => target.res.plural.to_string(),
        },
        namespace: target.namespace.clone(),
        name: target.name.clone().unwrap_or_default(),
        path: None,
    };
    let write = !matches!(verb, "get" | "list" | "watch");
    let audit = |code: u16| {
        if write {
            if let Some(log) = &app.audit {
                log.record(&user, &attrs, &uri, &received, code);
            }
        }
    };
    if let Err(e) = app.authz.authorize(&user, &attrs).await {
        audit(e.code.as_u16());
        return e.into_response();
    }
    if verb == "watch" {
        return watch::serve(app.clone(), target, query, &parts.headers).await;
    }
    let _permit = match app.inflight.as_ref().map(|s| s.clone().try_acquire_owned()) {
        Some(Err(_)) => {
            let e = ApiError::too_many_requests();
            audit(e.code.as_u16());
            return e.into_response();
        }
        Some(Ok(p)) => Some(p),
        None => None,
    };
    let body = match axum::body::to_bytes(body, app.max_request_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let e = ApiError::too_large();
            audit(e.code.as_u16());
            return e.into_response();
        }
    };
    let call = Call {
        app: &app,
        target: &target,
        query: &query,
        headers: &parts.headers,
        body,
    };
    let result = match verb {
        "get" => get(&call).await.map(|v| (StatusCode::OK, call.render(v))),
        "list" => list(&call).await.map(|v| (StatusCode::OK, v)),
        "create" => create(&call).await,
        "update" => update(&call).await.map(|v| (StatusCode::OK, v)),
        "patch" => patch(&call, &parts.method)
            .await
            .map(|v| (StatusCode::OK, v)),
        "delete" => delete(&call).await,
        _ => delete_collection(&call).await.map(|v| (StatusCode::OK, v)),
    };
    match result {
        Ok((code, v)) => {
            audit(code.as_u16());
            json_response(code, &v)
        }
        Err(e) => {
            audit(e.code.as_u16());
            e.into_response()
        }
    }
}

/// `autoscaling/v1` `Scale` of a deployment or replica set.
fn to_scale(obj: &Value) -> Value {
    let selector = obj
        .pointer("/spec/selector")
        .map(|s| LabelSelector::from_object(s).to_query())
        .unwrap_or_default();
    let m = obj.get("metadata").cloned().unwrap_or(json!({}));
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": m.get("name"), "namespace": m.get("namespace"), "uid": m.get("uid"),
            "resourceVersion": m.get("resourceVersion"), "creationTimestamp": m.get("creationTimestamp"),
        },
        "spec": {"replicas": obj.pointer("/spec/replicas").cloned().unwrap_or(json!(0))},
        "status": {
            "replicas": obj.pointer("/status/replicas").cloned().unwrap_or(json!(0)),
            "selector": selector,
        },
    })
}

async fn get(c: &Call<'_>) -> ApiResult<Value> {
    let obj = c.app.registry.get(c.obj_ref()).await?;
    Ok(match c.target.subresource.as_deref() {
        Some("scale") => to_scale(&obj),
        _ => obj,
    })
}

async fn list(c: &Call<'_>) -> ApiResult<Value> {
    let res = c.target.res;
    let mut opts = ListOptions {
        selectors: c.query.selectors(res.plural)?,
        limit: c.query.int("limit")?.unwrap_or(0).max(0),
        continue_token: c
            .query
            .get("continue")
            .filter(|t| !t.is_empty())
            .map(String::from),
        exact_revision: 0,
    };
    if c.query.get("resourceVersionMatch") == Some("Exact") {
        opts.exact_revision = c.query.int("resourceVersion")?.unwrap_or(0);
        if opts.exact_revision <= 0 {
            return Err(ApiError::bad_request(
                "resourceVersionMatch=Exact needs a resourceVersion greater than 0",
            ));
        }
    }
    let page = c.app.registry.list(res, &c.target.namespace, &opts).await?;
    let mut list_meta = json!({"resourceVersion": page.revision.to_string()});
    if let Some(t) = &page.continue_token {
        list_meta["continue"] = json!(t);
    }
    if c.wants_table() {
        let include = c.query.get("includeObject").unwrap_or("Metadata");
        return Ok(table::table(res, &page.items, list_meta, include));
    }
    Ok(json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": list_meta,
        "items": page.items,
    }))
}

/// Checks the body's kind, apiVersion, name and namespace against the URL.
fn check_identity(c: &Call<'_>, obj: &Value, want_kind: &str, want_api: &str) -> ApiResult<()> {
    let kind = obj.get("kind").and_then(Value::as_str).unwrap_or("");
    let api = obj.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    if (!kind.is_empty() && kind != want_kind) || (!api.is_empty() && api != want_api) {
        return Err(ApiError::bad_request(format!(
            "the API version in the data ({api}) does not match the expected API version ({want_api}) or kind ({kind} vs {want_kind})"
        )));
    }
    let ns = meta_str(obj, "namespace");
    if c.target.res.namespaced && !ns.is_empty() && ns != c.target.namespace {
        return Err(ApiError::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    if let Some(name) = &c.target.name {
        let body_name = meta_str(obj, "name");
        if !body_name.is_empty()
            && body_name != name
            && c.target.subresource.as_deref() != Some("binding")
        {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({body_name}) does not match the name on the URL ({name})"
            )));
        }
    }
    Ok(())
}

async fn create(c: &Call<'_>) -> ApiResult<(StatusCode, Value)> {
    if c.target.subresource.as_deref() == Some("binding") {
        return bind(c).await.map(|v| (StatusCode::CREATED, v));
    }
    let res = c.target.res;
    let mut obj = c.body_object()?;
    check_identity(c, &obj, res.kind, &res.api_version())?;
    let dry_run = c.query.dry_run()?;
    meta::prepare_create(res, &mut obj, &c.target.namespace);
    admission::namespace_lifecycle(&c.app.registry, res, &c.target.namespace).await?;
    admission::validate(res, &obj)?;
    let name = meta_str(&obj, "name").to_string();
    let r = ObjRef {
        res,
        namespace: &c.target.namespace,
        name: &name,
    };
    let created = c.app.registry.create(r, obj, dry_run).await?;
    Ok((StatusCode::CREATED, created))
}

/// `POST pods/{name}/binding`: assigns a pod to a node, once.
async fn bind(c: &Call<'_>) -> ApiResult<Value> {
    let binding = c.body_object()?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .filter(|n| !n.is_empty())
        .ok_or_else(|| {
            ApiError::invalid(
                "Binding",
                c.obj_ref().subject(),
                &[crate::error::Cause::required("target.name")],
            )
        })?
        .to_string();
    let r = c.obj_ref();
    c.app
        .registry
        .guaranteed_update(r, None, c.query.dry_run()?, |mut pod| {
            let current = pod
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !current.is_empty() {
                return Err(ApiError::conflict(
                    r.subject(),
                    &format!("pod {} is already assigned to node \"{current}\"", r.name),
                ));
            }
            if !meta_str(&pod, "deletionTimestamp").is_empty() {
                return Err(ApiError::conflict(
                    r.subject(),
                    "pod is being deleted, cannot be assigned to a host",
                ));
            }
            pod["spec"]["nodeName"] = json!(node);
            let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null,
                "lastTransitionTime": meta::now()});
            let conds = pod
                .pointer_mut("/status/conditions")
                .and_then(Value::as_array_mut);
            match conds {
                Some(list) => {
                    list.retain(|c| c.get("type") != Some(&json!("PodScheduled")));
                    list.push(cond);
                }
                None => pod["status"]["conditions"] = json!([cond]),
            }
            Ok(pod)
        })
        .await?;
    Ok(
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
    )
}

/// Applies a new object (or a scale) on top of `current` for the target's subresource.
fn apply_update(c: &Call<'_>, current: Value, mut new: Value) -> ApiResult<Value> {
    let res = c.target.res;
    match c.target.subresource.as_deref() {
        Some("scale") => {
            let replicas = new
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "Scale",
                        c.obj_ref().subject(),
                        &[crate::error::Cause::required("spec.replicas")],
                    )
                })?;
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "Scale",
                    c.obj_ref().subject(),
                    &[crate::error::Cause::invalid(
                        "spec.replicas",
                        &replicas.to_string(),
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let mut obj = current.clone();
            obj["spec"]["replicas"] = json!(replicas);
            meta::prepare_update(res, &current, &mut obj, false);
            Ok(obj)
        }
        Some("status") => {
            meta::prepare_update(res, &current, &mut new, true);
            Ok(new)
        }
        _ => {
            meta::prepare_update(res, &current, &mut new, false);
            admission::validate(res, &new)?;
            Ok(new)
        }
    }
}

fn render_sub(c: &Call<'_>, obj: Value) -> Value {
    if c.target.subresource.as_deref() == Some("scale") {
        to_scale(&obj)
    } else {
        c.render(obj)
    }
}

async fn update(c: &Call<'_>) -> ApiResult<Value> {
    let new = c.body_object()?;
    let (kind, api) = match c.target.subresource.as_deref() {
        Some("scale") => ("Scale", "autoscaling/v1".to_string()),
        _ => (c.target.res.kind, c.target.res.api_version()),
    };
    check_identity(c, &new, kind, &api)?;
    let pinned = match meta::resource_version(&new) {
        0 => None,
        rv => Some(rv),
    };
    let obj = c
        .app
        .registry
        .guaranteed_update(c.obj_ref(), pinned, c.query.dry_run()?, |current| {
            apply_update(c, current, new.clone())
        })
        .await?;
    Ok(render_sub(c, obj))
}

async fn patch(c: &Call<'_>, _method: &Method) -> ApiResult<Value> {
    let ct = c
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let kind = PatchType::from_content_type(ct)?;
    let r = c.obj_ref();
    let obj = c
        .app
        .registry
        .guaranteed_update(r, None, c.query.dry_run()?, |current| {
            let base = if c.target.subresource.as_deref() == Some("scale") {
                to_scale(&current)
            } else {
                current.clone()
            };
            let patched = patch::apply(kind, &base, &c.body)?;
            // A resourceVersion in the patch is a precondition (kubectl apply sends one).
            let want = meta_str(&patched, "resourceVersion");
            if !want.is_empty() && want != meta_str(&base, "resourceVersion") {
                return Err(ApiError::modified(r.subject()));
            }
            apply_update(c, current, patched)
        })
        .await?;
    Ok(render_sub(c, obj))
}

fn delete_options(c: &Call<'_>) -> ApiResult<DeleteOptions> {
    let body: Value = if c.body.is_empty() {
        json!({})
    } else {
        c.body_object()?
    };
    let s = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(String::from);
    let dry_body = body
        .get("dryRun")
        .and_then(Value::as_array)
        .is_some_and(|a| a.iter().any(|x| x == "All"));
    Ok(DeleteOptions {
        grace_period: match c.query.int("gracePeriodSeconds")? {
            Some(g) => Some(g),
            None => body.get("gracePeriodSeconds").and_then(Value::as_i64),
        },
        precondition_uid: s(&body, "/preconditions/uid"),
        precondition_rv: s(&body, "/preconditions/resourceVersion"),
        propagation: c
            .query
            .get("propagationPolicy")
            .map(String::from)
            .or_else(|| s(&body, "/propagationPolicy")),
        dry_run: c.query.dry_run()? || dry_body,
    })
}

async fn delete(c: &Call<'_>) -> ApiResult<(StatusCode, Value)> {
    let opts = delete_options(c)?;
    let (obj, deleted) = c.app.registry.delete(c.obj_ref(), &opts).await?;
    let code = if deleted || opts.dry_run {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, obj))
}

async fn delete_collection(c: &Call<'_>) -> ApiResult<Value> {
    let opts = delete_options(c)?;
    let res = c.target.res;
    let list_opts = ListOptions {
        selectors: c.query.selectors(res.plural)?,
        ..Default::default()
    };
    let page = c
        .app
        .registry
        .list(res, &c.target.namespace, &list_opts)
        .await?;
    let mut deleted = Vec::new();
    for item in page.items {
        let ns = meta_str(&item, "namespace").to_string();
        let name = meta_str(&item, "name").to_string();
        let r = ObjRef {
            res,
            namespace: &ns,
            name: &name,
        };
        match c.app.registry.delete(r, &opts).await {
            Ok((obj, _)) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(json!({
        "kind": format!("{}List", res.kind),
        "apiVersion": res.api_version(),
        "metadata": {"resourceVersion": page.revision.to_string()},
        "items": deleted,
    }))
}
