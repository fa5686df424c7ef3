//! The generic registry: get, list, create, update, delete for any row of the resource table,
//! on top of the storage contract in `store.rs`.
//!
//! Updates go through [`Registry::guaranteed_update`] (kube-apiserver's `GuaranteedUpdate`):
//! read, transform, write guarded by the read's mod_revision, retry on a lost race — unless
//! the client pinned a resourceVersion, in which case a lost race is the client's 409.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult, Subject};
use crate::meta::{self, meta_str};
use crate::resources::{ResourceDef, RESOURCES};
use crate::selector::Selectors;
use crate::store::{prefix_end, Store, StoreError};
use crate::watchcache::{decode, Hub};

/// One object's address.
#[derive(Debug, Clone, Copy)]
pub struct ObjRef<'a> {
    pub res: &'static ResourceDef,
    pub namespace: &'a str,
    pub name: &'a str,
}

impl<'a> ObjRef<'a> {
    pub fn subject(&self) -> Subject<'a> {
        Subject {
            group: self.res.group,
            plural: self.res.plural,
            name: self.name,
        }
    }

    pub fn key(&self) -> String {
        self.res.key(self.namespace, self.name)
    }
}

/// A list request's paging and consistency options.
#[derive(Debug, Default, Clone)]
pub struct ListOptions {
    pub selectors: Selectors,
    pub limit: i64,
    pub continue_token: Option<String>,
    /// `resourceVersion` with `resourceVersionMatch=Exact`: read at this revision.
    pub exact_revision: i64,
}

/// One page of a list.
#[derive(Debug)]
pub struct ListResult {
    pub items: Vec<Value>,
    pub revision: i64,
    pub continue_token: Option<String>,
}

/// Options of a DELETE (`DeleteOptions` body and query).
#[derive(Debug, Default, Clone)]
pub struct DeleteOptions {
    pub grace_period: Option<i64>,
    pub precondition_uid: Option<String>,
    pub precondition_rv: Option<String>,
    pub propagation: Option<String>,
    pub dry_run: bool,
}

/// The registry shared by every request.
#[derive(Debug)]
pub struct Registry {
    pub store: Arc<Store>,
    /// One watch hub per resource, keyed by plural (unique across groups here).
    hubs: HashMap<&'static str, Arc<Hub>>,
}

fn encode_continue(revision: i64, next_key: &str) -> String {
    let token = json!({"v": "meta.k8s.io/v1", "rv": revision, "start": next_key});
    base64::engine::general_purpose::STANDARD.encode(token.to_string())
}

fn decode_continue(token: &str) -> ApiResult<(i64, String)> {
    let bad = || ApiError::bad_request(format!("invalid continue token: {token:?}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(token)
        .map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let rev = v.get("rv").and_then(Value::as_i64).ok_or_else(bad)?;
    let start = v.get("start").and_then(Value::as_str).ok_or_else(bad)?;
    Ok((rev, start.to_string()))
}

/// Keys per store read for an unpaged list.
const LIST_CHUNK: i64 = 1000;

const CONTINUE_EXPIRED: &str = "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list.";

impl Registry {
    /// Connects the registry and starts one watch hub per resource.
    pub fn new(store: Arc<Store>) -> Self {
        let hubs = RESOURCES
            .iter()
            .map(|r| (r.plural, Hub::start(store.clone(), r.prefix())))
            .collect();
        Registry { store, hubs }
    }

    pub fn hub(&self, res: &ResourceDef) -> Option<&Arc<Hub>> {
        self.hubs.get(res.plural)
    }

    /// Reads one object.
    pub async fn get(&self, r: ObjRef<'_>) -> ApiResult<Value> {
        let (kv, _) = self
            .store
            .get(&r.key())
            .await
            .map_err(|e| ApiError::from_store(e, r.subject()))?;
        let kv = kv.ok_or_else(|| ApiError::not_found(r.subject()))?;
        decode(&kv.value, kv.mod_revision)
            .ok_or_else(|| ApiError::internal(format!("stored object {} is not JSON", r.key())))
    }

    /// Lists a resource in one namespace (or all), filtered, paged at one revision.
    pub async fn list(
        &self,
        res: &'static ResourceDef,
        namespace: &str,
        opts: &ListOptions,
    ) -> ApiResult<ListResult> {
        let prefix = res.namespace_prefix(namespace);
        let end = prefix_end(prefix.as_bytes());
        let (mut revision, mut start) = match &opts.continue_token {
            Some(t) => {
                let (rev, from) = decode_continue(t)?;
                (rev, format!("{prefix}{from}"))
            }
            None => (opts.exact_revision, prefix.clone()),
        };
        let continuing = opts.continue_token.is_some();
        let mut items = Vec::new();
        // Unpaged lists still read the store in chunks at one revision, so no single store
        // response grows with the collection.
        let page = if opts.limit > 0 {
            opts.limit
        } else {
            LIST_CHUNK
        };
        loop {
            let batch = self
                .store
                .range(start.as_bytes(), &end, page, revision)
                .await
                .map_err(|e| match e {
                    StoreError::Compacted(_) if continuing => ApiError::gone(CONTINUE_EXPIRED),
                    StoreError::Compacted(_) => ApiError::gone(format!(
                        "too old resource version: {} ({})",
                        opts.exact_revision, revision
                    )),
                    other => ApiError::from_store(
                        other,
                        Subject {
                            group: res.group,
                            plural: res.plural,
                            name: "",
                        },
                    ),
                })?;
            if revision == 0 {
                revision = batch.revision;
            }
            let last_key = batch.kvs.last().map(|kv| kv.key.clone());
            for kv in batch.kvs {
                let Some(obj) = decode(&kv.value, kv.mod_revision) else {
                    continue;
                };
                if opts.selectors.matches(&obj) {
                    items.push(obj);
                }
            }
            if !batch.more {
                return Ok(ListResult {
                    items,
                    revision,
                    continue_token: None,
                });
            }
            let Some(mut last) = last_key else {
                return Ok(ListResult {
                    items,
                    revision,
                    continue_token: None,
                });
            };
            last.push(0);
            let next = String::from_utf8_lossy(&last).into_owned();
            if opts.limit > 0 && items.len() as i64 >= opts.limit {
                let rel = next.strip_prefix(&prefix).unwrap_or(&next).to_string();
                return Ok(ListResult {
                    items,
                    revision,
                    continue_token: Some(encode_continue(revision, &rel)),
                });
            }
            start = next;
        }
    }

    /// Stores a new object (already prepared and admitted).
    pub async fn create(&self, r: ObjRef<'_>, mut obj: Value, dry_run: bool) -> ApiResult<Value> {
        if dry_run {
            let (existing, _) = self
                .store
                .get(&r.key())
                .await
                .map_err(|e| ApiError::from_store(e, r.subject()))?;
            if existing.is_some() {
                return Err(ApiError::already_exists(r.subject()));
            }
            return Ok(obj);
        }
        let rev = self
            .store
            .create(&r.key(), meta::encode(&obj))
            .await
            .map_err(|e| ApiError::from_store(e, r.subject()))?;
        meta::meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(obj)
    }

    /// Writes `obj` over the version read at `expected` (the stored mod_revision).
    async fn write(
        &self,
        r: ObjRef<'_>,
        mut obj: Value,
        expected: i64,
    ) -> Result<Value, StoreError> {
        // An object whose deletion was requested is removed once its finalizers are gone.
        let grace = obj
            .pointer("/metadata/deletionGracePeriodSeconds")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        if !meta_str(&obj, "deletionTimestamp").is_empty()
            && meta::finalizers(&obj).is_empty()
            && grace == 0
        {
            let rev = self.store.delete(&r.key(), expected).await?;
            meta::meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
            return Ok(obj);
        }
        let rev = self
            .store
            .update(&r.key(), meta::encode(&obj), expected)
            .await?;
        meta::meta_mut(&mut obj).insert("resourceVersion".into(), json!(rev.to_string()));
        Ok(obj)
    }

    /// Read-modify-write with optimistic concurrency. `pinned` is a resourceVersion the
    /// client required (409 if the object moved on); without one, lost races are retried.
    /// `f` gets the current object and returns the object to store, or an error to stop.
    pub async fn guaranteed_update<F>(
        &self,
        r: ObjRef<'_>,
        pinned: Option<i64>,
        dry_run: bool,
        mut f: F,
    ) -> ApiResult<Value>
    where
        F: FnMut(Value) -> ApiResult<Value>,
    {
        for _ in 0..32 {
            let current = self.get(r).await?;
            let rev = meta::resource_version(&current);
            if let Some(want) = pinned {
                if want != rev {
                    return Err(ApiError::modified(r.subject()));
                }
            }
            let updated = f(current.clone())?;
            if dry_run {
                return Ok(updated);
            }
            if updated == current {
                return Ok(current);
            }
            match self.write(r, updated, rev).await {
                Ok(obj) => return Ok(obj),
                Err(StoreError::Conflict { .. }) if pinned.is_none() => continue,
                Err(e) => return Err(ApiError::from_store(e, r.subject())),
            }
        }
        Err(ApiError::modified(r.subject()))
    }

    /// Deletes an object, or marks it for deletion when finalizers or a pod's grace period
    /// say it must wait. Returns the object as it was deleted or as it now is, and whether
    /// it is gone.
    pub async fn delete(&self, r: ObjRef<'_>, opts: &DeleteOptions) -> ApiResult<(Value, bool)> {
        for _ in 0..32 {
            let current = self.get(r).await?;
            let rev = meta::resource_version(&current);
            if let Some(uid) = &opts.precondition_uid {
                let have = meta_str(&current, "uid");
                if have != uid {
                    return Err(ApiError::conflict(
                        r.subject(),
                        &format!("Precondition failed: UID in precondition: {uid}, UID in object meta: {have}"),
                    ));
                }
            }
            if let Some(want) = &opts.precondition_rv {
                let have = rev.to_string();
                if *want != have {
                    return Err(ApiError::conflict(
                        r.subject(),
                        &format!("Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {have}"),
                    ));
                }
            }
            let mut marked = current.clone();
            let wait = self.mark_for_deletion(r.res, &mut marked, opts);
            if opts.dry_run {
                return Ok((marked, false));
            }
            let result = if wait {
                if marked == current {
                    return Ok((current, false));
                }
                self.store
                    .update(&r.key(), meta::encode(&marked), rev)
                    .await
            } else {
                self.store.delete(&r.key(), rev).await
            };
            match result {
                Ok(new_rev) => {
                    let rv = if wait { new_rev } else { rev };
                    meta::meta_mut(&mut marked)
                        .insert("resourceVersion".into(), json!(rv.to_string()));
                    if r.res.plural == "namespaces" && wait {
                        self.spawn_namespace_cleanup(r.name.to_string());
                    }
                    return Ok((marked, !wait));
                }
                Err(StoreError::Conflict { .. }) if opts.precondition_rv.is_none() => continue,
                Err(e) => return Err(ApiError::from_store(e, r.subject())),
            }
        }
        Err(ApiError::modified(r.subject()))
    }

    /// Sets deletionTimestamp and friends; returns whether the object must stay for now.
    fn mark_for_deletion(&self, res: &ResourceDef, obj: &mut Value, opts: &DeleteOptions) -> bool {
        let mut finalizers = meta::finalizers(obj);
        match opts.propagation.as_deref() {
            Some("Foreground") if !finalizers.iter().any(|f| f == "foregroundDeletion") => {
                finalizers.push("foregroundDeletion".into())
            }
            Some("Orphan") if !finalizers.iter().any(|f| f == "orphan") => {
                finalizers.push("orphan".into())
            }
            _ => {}
        }
        let grace = if res.plural == "pods" {
            pod_grace_period(obj, opts.grace_period)
        } else {
            0
        };
        let namespace = res.plural == "namespaces";
        if finalizers.is_empty() && grace == 0 && !namespace {
            return false;
        }
        let already = !meta_str(obj, "deletionTimestamp").is_empty();
        let m = meta::meta_mut(obj);
        if !finalizers.is_empty() {
            m.insert("finalizers".into(), json!(finalizers));
        }
        if !already || grace > 0 {
            m.insert("deletionTimestamp".into(), json!(meta::now_plus(grace)));
        }
        m.insert("deletionGracePeriodSeconds".into(), json!(grace));
        if namespace {
            obj["status"] = json!({"phase": "Terminating"});
        }
        true
    }

    /// Deletes everything in a terminating namespace, then the namespace itself (the job of
    /// kube-controller-manager's namespace controller, done here so namespaces can go away).
    fn spawn_namespace_cleanup(&self, namespace: String) {
        let store = self.store.clone();
        tokio::spawn(async move {
            for res in RESOURCES.iter().filter(|r| r.namespaced) {
                let prefix = res.namespace_prefix(&namespace);
                let end = prefix_end(prefix.as_bytes());
                if let Ok(page) = store.range(prefix.as_bytes(), &end, 0, 0).await {
                    for kv in page.kvs {
                        let key = String::from_utf8_lossy(&kv.key).into_owned();
                        let _ = store.delete(&key, kv.mod_revision).await;
                    }
                }
            }
            let key = format!("/registry/namespaces/{namespace}");
            if let Ok((Some(kv), _)) = store.get(&key).await {
                let _ = store.delete(&key, kv.mod_revision).await;
            }
        });
    }
}

/// How long a pod's deletion waits: 0 for a pod no kubelet runs (unscheduled or finished),
/// else the request's grace period or the pod's `terminationGracePeriodSeconds`.
fn pod_grace_period(pod: &Value, requested: Option<i64>) -> i64 {
    let node = pod
        .pointer("/spec/nodeName")
        .and_then(Value::as_str)
        .unwrap_or("");
    let phase = pod
        .pointer("/status/phase")
        .and_then(Value::as_str)
        .unwrap_or("");
    if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
        return 0;
    }
    requested
        .or_else(|| {
            pod.pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
        })
        .unwrap_or(30)
        .max(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip_and_reject_garbage() {
        let t = encode_continue(42, "default/web\u{0}");
        assert_eq!(
            decode_continue(&t).expect("decode"),
            (42, "default/web\u{0}".to_string())
        );
        assert!(decode_continue("not-base64!").is_err());
    }

    #[test]
    fn scheduled_pods_wait_for_their_grace_period() {
        let pod = json!({"spec": {"nodeName": "n1", "terminationGracePeriodSeconds": 10}, "status": {"phase": "Running"}});
        assert_eq!(pod_grace_period(&pod, None), 10);
        assert_eq!(pod_grace_period(&pod, Some(0)), 0);
        let pending = json!({"spec": {}, "status": {"phase": "Pending"}});
        assert_eq!(pod_grace_period(&pending, None), 0);
    }
}
