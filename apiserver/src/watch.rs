//! `?watch=true`: a stream of `WatchEvent`s, one JSON object per line.
//!
//! A watch starts either from the current state (no resourceVersion, or "0": every matching
//! object is sent as ADDED first) or from a resourceVersion (events after it). Changes come
//! from the resource's watch hub (`watchcache.rs`), or from a store watch of its own when the
//! hub's buffer does not reach back far enough; a compacted start is a 410 `Expired` ERROR
//! event, as kube-apiserver sends it.
//!
//! Selectors apply to the old and the new object, so an object that stops matching is sent
//! as DELETED and one that starts matching as ADDED.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use tokio::sync::{broadcast, mpsc};

use crate::error::ApiError;
use crate::registry::ListOptions;
use crate::request::{Query, Target};
use crate::resources::ResourceDef;
use crate::selector::Selectors;
use crate::server::App;
use crate::store::{prefix_end, StoreError};
use crate::table;
use crate::watchcache::{change_from_event, Change, HubMsg};

/// How one watch encodes its objects.
struct Encoder {
    res: &'static ResourceDef,
    table: Option<String>,
}

impl Encoder {
    fn event(&self, kind: &str, obj: Value) -> Bytes {
        let obj = match &self.table {
            Some(include) if kind != "ERROR" && kind != "BOOKMARK" => {
                let rv = obj
                    .pointer("/metadata/resourceVersion")
                    .cloned()
                    .unwrap_or(json!(""));
                table::table(self.res, &[obj], json!({"resourceVersion": rv}), include)
            }
            _ => obj,
        };
        let mut line = json!({"type": kind, "object": obj}).to_string();
        line.push('\n');
        Bytes::from(line)
    }

    fn bookmark(&self, rv: i64) -> Bytes {
        self.event(
            "BOOKMARK",
            json!({"kind": self.res.kind, "apiVersion": self.res.api_version(),
                "metadata": {"resourceVersion": rv.to_string()}}),
        )
    }

    fn gone(&self, message: String) -> Bytes {
        self.event("ERROR", ApiError::gone(message).status())
    }
}

/// Where the watch's changes come from.
enum Source {
    Hub(broadcast::Receiver<HubMsg>),
    Store {
        /// Keeps the watch's request stream open; dropping it ends the store watch.
        _requests: mpsc::Sender<kvstore_proto::etcdserverpb::WatchRequest>,
        stream: Box<tonic::Streaming<kvstore_proto::etcdserverpb::WatchResponse>>,
        pending: std::collections::VecDeque<HubMsg>,
    },
}

enum Next {
    Msg(HubMsg),
    /// The watcher fell behind or the start was compacted: 410 with this message.
    Gone(String),
    Closed,
}

impl Source {
    async fn next(&mut self) -> Next {
        match self {
            Source::Hub(rx) => match rx.recv().await {
                Ok(m) => Next::Msg(m),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Next::Gone(format!("watch fell behind by {n} events; relist"))
                }
                Err(broadcast::error::RecvError::Closed) => Next::Closed,
            },
            Source::Store {
                stream, pending, ..
            } => loop {
                if let Some(m) = pending.pop_front() {
                    return Next::Msg(m);
                }
                match stream.message().await {
                    Ok(Some(resp)) => {
                        if resp.compact_revision > 0 {
                            return Next::Gone(format!(
                                "too old resource version (compacted to {})",
                                resp.compact_revision
                            ));
                        }
                        if resp.canceled {
                            return Next::Closed;
                        }
                        if resp.events.is_empty() && !resp.created {
                            if let Some(h) = resp.header {
                                pending.push_back(HubMsg::Progress(h.revision));
                            }
                        }
                        for ev in resp.events {
                            if let Some(c) = change_from_event(ev) {
                                pending.push_back(HubMsg::Change(Arc::new(c)));
                            }
                        }
                    }
                    _ => return Next::Closed,
                }
            },
        }
    }
}

/// The event type an HTTP watcher sees for one change, given its selectors (None: the
/// change is not for this watcher).
fn classify(change: &Change, sel: &Selectors) -> Option<&'static str> {
    let new_match = change.object.as_ref().is_some_and(|o| sel.matches(o));
    let old_match = change.previous.as_ref().is_some_and(|o| sel.matches(o));
    match (change.object.is_some(), new_match, old_match) {
        (true, true, true) => Some("MODIFIED"),
        (true, true, false) => Some("ADDED"),
        (true, false, true) | (false, _, true) => Some("DELETED"),
        _ => None,
    }
}

/// The object a change's event carries: the new object (also when it left the selector), or
/// for a deletion the last state stamped with the deletion's revision.
fn event_object(change: &Change) -> Value {
    match &change.object {
        Some(o) => o.clone(),
        None => {
            let mut o = change.previous.clone().unwrap_or(Value::Null);
            if let Some(m) = o.get_mut("metadata").and_then(Value::as_object_mut) {
                m.insert("resourceVersion".into(), json!(change.revision.to_string()));
            }
            o
        }
    }
}

/// Serves one watch request as a streaming response.
pub async fn serve(app: Arc<App>, target: Target, query: Query, headers: &HeaderMap) -> Response {
    match start(app, target, query, headers).await {
        Ok(body) => {
            let mut resp = Response::new(body);
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            resp.headers_mut().insert(
                header::CACHE_CONTROL,
                HeaderValue::from_static("no-cache, private"),
            );
            *resp.status_mut() = StatusCode::OK;
            resp
        }
        Err(e) => e.into_response(),
    }
}

async fn start(
    app: Arc<App>,
    target: Target,
    query: Query,
    headers: &HeaderMap,
) -> Result<Body, ApiError> {
    let res = target.res;
    let mut selectors = query.selectors(res.plural)?;
    if let Some(name) = &target.name {
        // GET .../pods/x?watch=true (deprecated form): pin the name.
        selectors.fields =
            crate::selector::FieldSelector::parse(&format!("metadata.name={name}"), res.plural)?;
    }
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let enc = Encoder {
        res,
        table: table::wants_table(accept)
            .then(|| query.get("includeObject").unwrap_or("Metadata").to_string()),
    };
    let bookmarks = query.flag("allowWatchBookmarks");
    let timeout = query
        .int("timeoutSeconds")?
        .filter(|t| *t > 0)
        .unwrap_or(1800) as u64;
    let rv = query.get("resourceVersion").unwrap_or("");
    let prefix = res.namespace_prefix(&target.namespace);
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(256);

    // The starting point: a fresh list (sent as ADDED) or the given revision.
    let mut initial = Vec::new();
    let start_rev = if rv.is_empty() || rv == "0" {
        let opts = ListOptions {
            selectors: selectors.clone(),
            ..Default::default()
        };
        let page = app.registry.list(res, &target.namespace, &opts).await?;
        for item in page.items {
            initial.push(enc.event("ADDED", item));
        }
        page.revision
    } else {
        rv.parse::<i64>()
            .map_err(|_| ApiError::bad_request(format!("invalid resourceVersion {rv:?}")))?
    };

    let hub = app.registry.hub(res).cloned();
    let (replay, source) = match hub.as_ref().and_then(|h| h.subscribe(start_rev)) {
        Some(sub) => (sub.replay, Source::Hub(sub.live)),
        None => {
            let end = prefix_end(prefix.as_bytes());
            match app
                .registry
                .store
                .watch(prefix.as_bytes(), &end, start_rev + 1)
                .await
            {
                Ok((req_tx, stream)) => (
                    Vec::new(),
                    Source::Store {
                        _requests: req_tx,
                        stream: Box::new(stream),
                        pending: Default::default(),
                    },
                ),
                Err(StoreError::Compacted(_)) => {
                    initial.push(enc.gone(format!("too old resource version: {start_rev}")));
                    (Vec::new(), Source::Hub(broadcast::channel(1).1))
                }
                Err(e) => {
                    return Err(ApiError::from_store(
                        e,
                        crate::error::Subject {
                            group: res.group,
                            plural: res.plural,
                            name: "",
                        },
                    ))
                }
            }
        }
    };
    let interval = Duration::from_secs(app.bookmark_interval.max(1));
    tokio::spawn(async move {
        let send = |b: Bytes| {
            let tx = tx.clone();
            async move { tx.send(Ok(b)).await.is_ok() }
        };
        for b in initial {
            if !send(b).await {
                return;
            }
        }
        let mut seen = start_rev;
        let mut source = source;
        let deliver = |change: &Change, seen: &mut i64| -> Option<Bytes> {
            if change.revision <= *seen || !change.key.starts_with(&prefix) {
                *seen = (*seen).max(change.revision);
                return None;
            }
            *seen = change.revision;
            let kind = classify(change, &selectors)?;
            if enc.table.is_some() {
                return Some(enc.event(kind, event_object(change)));
            }
            let slot = match kind {
                "ADDED" => 0,
                "MODIFIED" => 1,
                _ => 2,
            };
            Some(
                change.encoded[slot]
                    .get_or_init(|| enc.event(kind, event_object(change)))
                    .clone(),
            )
        };
        for change in replay {
            if let Some(b) = deliver(&change, &mut seen) {
                if !send(b).await {
                    return;
                }
            }
        }
        let deadline = tokio::time::sleep(Duration::from_secs(timeout));
        tokio::pin!(deadline);
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
        loop {
            let out = tokio::select! {
                _ = &mut deadline => return,
                _ = tx.closed() => return,
                _ = ticker.tick(), if bookmarks => Some(enc.bookmark(seen)),
                next = source.next() => match next {
                    Next::Msg(HubMsg::Change(c)) => deliver(&c, &mut seen),
                    Next::Msg(HubMsg::Progress(rev)) => {
                        seen = seen.max(rev);
                        None
                    }
                    Next::Msg(HubMsg::Reset) => {
                        let _ = send(enc.gone("the watch cache was reset; relist".into())).await;
                        return;
                    }
                    Next::Gone(msg) => {
                        let _ = send(enc.gone(msg)).await;
                        return;
                    }
                    Next::Closed => return,
                },
            };
            if let Some(b) = out {
                if !send(b).await {
                    return;
                }
            }
        }
    });
    Ok(Body::from_stream(
        tokio_stream::wrappers::ReceiverStream::new(rx),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selector::LabelSelector;

    fn change(old: Option<Value>, new: Option<Value>) -> Change {
        Change::new("/registry/pods/default/p".into(), 7, new, old)
    }

    #[test]
    fn leaving_the_selector_is_a_deletion() {
        let sel = Selectors {
            labels: LabelSelector::parse("app=web").expect("selector"),
            ..Default::default()
        };
        let web = json!({"metadata": {"name": "p", "labels": {"app": "web"}}});
        let db = json!({"metadata": {"name": "p", "labels": {"app": "db"}}});
        assert_eq!(
            classify(&change(None, Some(web.clone())), &sel),
            Some("ADDED")
        );
        assert_eq!(
            classify(&change(Some(web.clone()), Some(web.clone())), &sel),
            Some("MODIFIED")
        );
        assert_eq!(
            classify(&change(Some(web.clone()), Some(db.clone())), &sel),
            Some("DELETED")
        );
        assert_eq!(
            classify(&change(Some(db.clone()), Some(web.clone())), &sel),
            Some("ADDED")
        );
        assert!(classify(&change(Some(db.clone()), Some(db)), &sel).is_none());
        let deletion = change(Some(web), None);
        assert_eq!(classify(&deletion, &sel), Some("DELETED"));
        assert_eq!(event_object(&deletion)["metadata"]["resourceVersion"], "7");
    }
}
