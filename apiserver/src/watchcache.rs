//! One store watch per resource, fanned out to any number of HTTP watchers.
//!
//! Each [`Hub`] holds a single etcd watch on its resource's key prefix (with previous values,
//! so selectors can be applied to old and new object). It decodes every event once, keeps the
//! most recent events in a ring buffer and broadcasts them. A new HTTP watcher starting at
//! resourceVersion `rv` gets the buffered events after `rv`, then the live stream; a watcher
//! whose `rv` is older than the buffer falls back to a watch of its own on the store, which
//! reports compaction as etcd does (the handler turns that into 410 Gone).
//!
//! Lock order: the hub's `state` lock is taken alone; the broadcast send happens under it so a
//! subscriber that copies the buffer and subscribes under the same lock never misses or
//! duplicates an event.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use kvstore_proto::etcdserverpb::{watch_request, WatchProgressRequest, WatchRequest};
use kvstore_proto::mvccpb::event::EventType;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::sync::broadcast;

use crate::store::{prefix_end, Store, StoreError};

/// How many recent events a hub keeps for watchers that start slightly in the past.
const BUFFER: usize = 4096;
/// Broadcast queue length; a watcher that falls further behind is ended with 410 Gone.
const QUEUE: usize = 16384;

/// One change to one object, decoded once for every watcher.
#[derive(Debug)]
pub struct Change {
    pub key: String,
    /// The store revision of the change (the new resourceVersion, or the deletion's).
    pub revision: i64,
    /// The object after the change; None for a deletion.
    pub object: Option<Value>,
    /// The object before the change; None for a creation.
    pub previous: Option<Value>,
    /// The encoded `WatchEvent` line per event type (ADDED, MODIFIED, DELETED), made once by
    /// the first JSON watcher that sends it: a change's event type fixes its object, so
    /// every other plain-JSON watcher sends the same bytes.
    pub encoded: [std::sync::OnceLock<bytes::Bytes>; 3],
}

impl Change {
    pub fn new(key: String, revision: i64, object: Option<Value>, previous: Option<Value>) -> Self {
        Change {
            key,
            revision,
            object,
            previous,
            encoded: Default::default(),
        }
    }
}

/// What a hub broadcasts.
#[derive(Debug, Clone)]
pub enum HubMsg {
    Change(Arc<Change>),
    /// Everything up to this revision has been delivered (etcd progress notification).
    Progress(i64),
    /// The hub lost its place (compaction while reconnecting); watchers must relist.
    Reset,
}

#[derive(Debug)]
struct HubState {
    /// Recent changes in revision order.
    buffer: VecDeque<Arc<Change>>,
    /// The buffer holds every change with revision > `oldest`.
    oldest: i64,
    /// The newest revision the hub has seen (event or progress).
    latest: i64,
    /// The store watch is running.
    live: bool,
}

/// The fan-out point of one resource's changes.
#[derive(Debug)]
pub struct Hub {
    prefix: String,
    state: Mutex<HubState>,
    tx: broadcast::Sender<HubMsg>,
}

/// What a new watcher gets: changes after its revision from the buffer, then the live feed.
pub struct Subscription {
    pub replay: Vec<Arc<Change>>,
    pub live: broadcast::Receiver<HubMsg>,
}

/// Decodes a stored value and stamps its resourceVersion.
pub fn decode(value: &[u8], revision: i64) -> Option<Value> {
    let mut obj: Value = serde_json::from_slice(value).ok()?;
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert(
            "resourceVersion".into(),
            Value::String(revision.to_string()),
        );
    }
    Some(obj)
}

/// Converts one etcd watch event into a [`Change`].
pub fn change_from_event(ev: kvstore_proto::mvccpb::Event) -> Option<Change> {
    let kv = ev.kv?;
    let key = String::from_utf8_lossy(&kv.key).into_owned();
    let previous = ev
        .prev_kv
        .as_ref()
        .and_then(|p| decode(&p.value, p.mod_revision));
    if ev.r#type == EventType::Delete as i32 {
        Some(Change::new(key, kv.mod_revision, None, previous))
    } else {
        Some(Change::new(
            key,
            kv.mod_revision,
            decode(&kv.value, kv.mod_revision),
            previous,
        ))
    }
}

impl Hub {
    /// Creates the hub for `prefix` and starts its store watch.
    pub fn start(store: Arc<Store>, prefix: String) -> Arc<Hub> {
        let (tx, _) = broadcast::channel(QUEUE);
        let hub = Arc::new(Hub {
            prefix,
            state: Mutex::new(HubState {
                buffer: VecDeque::new(),
                oldest: i64::MAX,
                latest: 0,
                live: false,
            }),
            tx,
        });
        tokio::spawn(hub.clone().run(store));
        hub
    }

    /// Subscribes from `rv` if the buffer reaches back that far.
    pub fn subscribe(&self, rv: i64) -> Option<Subscription> {
        let st = self.state.lock();
        if !st.live || rv < st.oldest {
            return None;
        }
        let replay = st
            .buffer
            .iter()
            .filter(|c| c.revision > rv)
            .cloned()
            .collect();
        Some(Subscription {
            replay,
            live: self.tx.subscribe(),
        })
    }

    /// How many HTTP watchers are subscribed (for tests and metrics).
    pub fn watchers(&self) -> usize {
        self.tx.receiver_count()
    }

    /// The newest revision the hub has delivered.
    pub fn latest(&self) -> i64 {
        self.state.lock().latest
    }

    async fn run(self: Arc<Self>, store: Arc<Store>) {
        let start = prefix_end(self.prefix.as_bytes());
        let mut from = 0i64;
        loop {
            if from == 0 {
                match store.current_revision().await {
                    Ok(rev) => {
                        let mut st = self.state.lock();
                        st.buffer.clear();
                        st.oldest = rev;
                        st.latest = rev;
                        from = rev + 1;
                    }
                    Err(err) => {
                        tracing::debug!(prefix = %self.prefix, cause = %err, "watch hub waiting for the store");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            match self.follow(&store, &start, from).await {
                Ok(next) => from = next,
                Err(StoreError::Compacted(_)) => {
                    tracing::warn!(prefix = %self.prefix, "watch hub fell behind compaction; resetting");
                    self.state.lock().live = false;
                    let _ = self.tx.send(HubMsg::Reset);
                    from = 0;
                }
                Err(err) => {
                    tracing::debug!(prefix = %self.prefix, cause = %err, "watch hub reconnecting");
                    from = self.state.lock().latest + 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// Follows one store watch until it breaks; returns the revision to resume from.
    async fn follow(&self, store: &Store, end: &[u8], from: i64) -> Result<i64, StoreError> {
        let (req_tx, mut stream) = store.watch(self.prefix.as_bytes(), end, from).await?;
        self.state.lock().live = true;
        let mut ticker = tokio::time::interval(Duration::from_secs(1));
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                _ = ticker.tick() => {
                    // Ask for a progress notification so idle resources' bookmarks advance.
                    let _ = req_tx.try_send(WatchRequest {
                        request_union: Some(watch_request::RequestUnion::ProgressRequest(WatchProgressRequest {})),
                    });
                    continue;
                }
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return Ok(self.state.lock().latest + 1),
                Err(status) => {
                    return Err(StoreError::Unavailable(status.message().to_string()));
                }
            };
            if resp.compact_revision > 0 {
                return Err(StoreError::Compacted(resp.compact_revision));
            }
            if resp.canceled {
                return Ok(self.state.lock().latest + 1);
            }
            let header_rev = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
            let mut st = self.state.lock();
            if resp.events.is_empty() {
                // A progress notification: everything up to header_rev has been delivered.
                if header_rev > st.latest && !resp.created {
                    st.latest = header_rev;
                    let _ = self.tx.send(HubMsg::Progress(header_rev));
                }
                continue;
            }
            for ev in resp.events {
                let Some(change) = change_from_event(ev) else {
                    continue;
                };
                let change = Arc::new(change);
                st.latest = st.latest.max(change.revision);
                st.buffer.push_back(change.clone());
                while st.buffer.len() > BUFFER {
                    if let Some(old) = st.buffer.pop_front() {
                        st.oldest = st.oldest.max(old.revision);
                    }
                }
                let _ = self.tx.send(HubMsg::Change(change));
            }
        }
    }
}
