//! Request decoding: which resource a URL names, the verb, and the query options.

use std::collections::HashMap;

use axum::http::Method;

use crate::error::{ApiError, ApiResult};
use crate::resources::{lookup, ResourceDef};
use crate::selector::{FieldSelector, LabelSelector, Selectors};

/// The resource a URL addresses.
#[derive(Debug, Clone)]
pub struct Target {
    pub res: &'static ResourceDef,
    /// "" for cluster-scoped resources and all-namespace lists.
    pub namespace: String,
    pub name: Option<String>,
    pub subresource: Option<String>,
}

fn not_found(path: &str) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "NotFound",
        format!("the server could not find the requested resource (path {path})"),
    )
}

/// Parses `/api/v1/...` and `/apis/{group}/{version}/...` resource paths.
pub fn parse_target(path: &str) -> ApiResult<Target> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Err(not_found(path)),
    };
    let find = |plural: &str| lookup(group, version, plural).ok_or_else(|| not_found(path));
    let target = |res, ns: &str, name: Option<&&str>, sub: Option<&&str>| Target {
        res,
        namespace: ns.to_string(),
        name: name.map(|n| n.to_string()),
        subresource: sub.map(|s| s.to_string()),
    };
    let t = match rest {
        ["namespaces", ns, plural, tail @ ..]
            if lookup(group, version, plural).is_some_and(|r| r.namespaced) =>
        {
            if tail.len() > 2 {
                return Err(not_found(path));
            }
            target(find(plural)?, ns, tail.first(), tail.get(1))
        }
        [plural, tail @ ..] if tail.len() <= 2 => {
            let res = find(plural)?;
            if res.namespaced && !tail.is_empty() {
                // A namespaced object needs /namespaces/{ns}/ in its path.
                return Err(not_found(path));
            }
            target(res, "", tail.first(), tail.get(1))
        }
        _ => return Err(not_found(path)),
    };
    if let Some(sub) = &t.subresource {
        if !t.res.subresources.contains(&sub.as_str()) {
            return Err(not_found(path));
        }
    }
    Ok(t)
}

/// The Kubernetes verb of a request.
pub fn verb(method: &Method, t: &Target, query: &Query) -> ApiResult<&'static str> {
    let named = t.name.is_some();
    Ok(match *method {
        Method::GET if !named && query.flag("watch") => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST if named && t.subresource.as_deref() == Some("binding") => "create",
        Method::POST if !named => "create",
        Method::PUT if named => "update",
        Method::PATCH if named => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => {
            return Err(ApiError::method_not_allowed(format!(
                "the server does not allow this method on the requested resource ({method})"
            )))
        }
    })
}

/// Decoded query parameters.
#[derive(Debug, Default)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    pub fn parse(query: Option<&str>) -> Self {
        let map = query
            .map(|q| {
                url_decode_pairs(q)
                    .into_iter()
                    .collect::<HashMap<String, String>>()
            })
            .unwrap_or_default();
        Query(map)
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.get(k).map(String::as_str)
    }

    /// A boolean parameter; Go's `strconv.ParseBool` also takes `True` and `1`, which the
    /// Python client sends (`watch=True`).
    pub fn flag(&self, k: &str) -> bool {
        self.get(k)
            .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1" || v == "t" || v == "T")
    }

    pub fn int(&self, k: &str) -> ApiResult<Option<i64>> {
        match self.get(k) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse()
                .map(Some)
                .map_err(|_| ApiError::bad_request(format!("invalid {k} {v:?}: not an integer"))),
        }
    }

    /// `dryRun=All` (the only value Kubernetes accepts).
    pub fn dry_run(&self) -> ApiResult<bool> {
        match self.get("dryRun") {
            None | Some("") => Ok(false),
            Some("All") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!(
                "Invalid dry run value: {v:?}; supported values: \"All\""
            ))),
        }
    }

    pub fn selectors(&self, plural: &str) -> ApiResult<Selectors> {
        Ok(Selectors {
            labels: LabelSelector::parse(self.get("labelSelector").unwrap_or(""))?,
            fields: FieldSelector::parse(self.get("fieldSelector").unwrap_or(""), plural)?,
        })
    }
}

/// `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a byte).
fn url_decode_pairs(q: &str) -> Vec<(String, String)> {
    fn dec(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
                    match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                        Some(b) => {
                            out.push(b);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (dec(k), dec(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_resources() {
        let t = parse_target("/api/v1/namespaces/default/pods/web/status").expect("pod status");
        assert_eq!((t.res.plural, t.namespace.as_str()), ("pods", "default"));
        assert_eq!(t.name.as_deref(), Some("web"));
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_target("/api/v1/namespaces/kube-system").expect("namespace");
        assert_eq!(
            (t.res.plural, t.name.as_deref()),
            ("namespaces", Some("kube-system"))
        );
        let t = parse_target("/api/v1/namespaces/x/status").expect("namespace status");
        assert_eq!(t.subresource.as_deref(), Some("status"));
        let t = parse_target("/apis/apps/v1/deployments").expect("all deployments");
        assert_eq!(t.namespace, "");
        assert!(parse_target("/api/v1/widgets").is_err());
        assert!(parse_target("/api/v1/pods/x").is_err());
        assert!(parse_target("/api/v1/namespaces/d/pods/x/exec").is_err());
    }

    #[test]
    fn query_decoding() {
        let q = Query::parse(Some(
            "labelSelector=app%3Dweb%2Ctier+in+(a)&watch=true&limit=5",
        ));
        assert_eq!(q.get("labelSelector"), Some("app=web,tier in (a)"));
        assert!(q.flag("watch"));
        assert!(Query::parse(Some("watch=True")).flag("watch"));
        assert!(!Query::parse(Some("watch=false")).flag("watch"));
        assert_eq!(q.int("limit").expect("int"), Some(5));
        assert!(Query::parse(Some("dryRun=Some")).dry_run().is_err());
    }
}
