//! The watch hub: registration of streams and watchers, live dispatch of each commit to the
//! synced watchers, and progress notifications.
//!
//! # Revisions and the switch to synced
//! `HubState::rev` is the last revision dispatched to synced watchers. The store bumps its own
//! revision just before it calls the observer, so `rev` may trail the store's revision by one
//! commit for an instant; everything the hub reports (progress, created headers) uses `rev`,
//! so it never claims a revision whose events it has not yet queued.
//!
//! A watcher becomes synced only under the hub lock, when its next revision is `rev + 1`:
//! everything before was delivered from history, everything after comes from the commits the
//! observer dispatches after that moment (also under the hub lock). Hence no gap and no
//! duplicate across the switch.
//!
//! # Lock order
//! The store's writer lock, then `WatchHub::state`, then a [`StreamQueue`]'s lock. The hub
//! never calls into the store's write path, and a stream's task never holds its queue's lock
//! while taking the hub's.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;
// Keys here are the hub's own sequential IDs, never a client's bytes: a fast hash is safe.
use rustc_hash::{FxHashMap as HashMap, FxHashSet as HashSet};

use super::event::{EventBatch, SharedEvent};
use super::group::WatcherGroup;
use super::queue::{Delivery, QueueLimits, StreamQueue, Wakeup};
use super::watcher::{StreamId, WatchSpec, Watcher, WatcherKey, WatcherState};
use crate::mvcc::{Committed, KvStore};

/// The hub's bounds and pacing.
#[derive(Clone, Copy, Debug)]
pub struct HubConfig {
    /// Bounds of each stream's queue.
    pub queue: QueueLimits,
    /// Most events read from history per catch-up batch.
    pub batch_events: usize,
    /// Most bytes of events read from history per catch-up batch.
    pub batch_bytes: usize,
    /// Most watchers caught up together by one history read (etcd's `maxWatchersPerSync`).
    pub watchers_per_sync: usize,
    /// How often the catch-up thread looks for work when nothing woke it.
    pub sync_interval: Duration,
}

impl Default for HubConfig {
    fn default() -> Self {
        Self {
            queue: QueueLimits {
                messages: 128,
                bytes: 2 << 20,
            },
            batch_events: 1000,
            batch_bytes: 512 << 10,
            watchers_per_sync: 512,
            sync_interval: Duration::from_millis(100),
        }
    }
}

/// One registered stream.
#[derive(Debug)]
pub(crate) struct StreamEntry {
    /// Where its deliveries go.
    pub queue: Arc<StreamQueue>,
    /// Its watchers.
    pub watchers: HashSet<WatcherKey>,
}

/// Everything the hub knows; guarded by `WatchHub::state`.
#[derive(Debug, Default)]
pub(crate) struct HubState {
    /// The last revision dispatched to synced watchers.
    pub rev: i64,
    /// Every watcher, by key.
    pub watchers: HashMap<WatcherKey, Watcher>,
    /// The synced watchers, by key and range.
    pub synced: WatcherGroup,
    /// The unsynced and victim watchers, waiting for the catch-up thread.
    pub unsynced: HashSet<WatcherKey>,
    /// Every registered stream.
    pub streams: HashMap<StreamId, StreamEntry>,
    /// Streams that asked for progress while not all their watchers were synced (etcd 3.5's
    /// deferred progress request): answered once they all are.
    pub progress_pending: HashSet<StreamId>,
}

impl HubState {
    /// Moves a watcher out of the synced group to be caught up from `from_rev`.
    pub fn set_aside(&mut self, key: WatcherKey, from_rev: i64, state: WatcherState) {
        if let Some(w) = self.watchers.get_mut(&key) {
            if w.state == WatcherState::Synced {
                self.synced.remove(key, &w.range);
            }
            w.state = state;
            w.next_rev = from_rev;
            self.unsynced.insert(key);
        }
    }

    /// Moves a caught-up watcher into the synced group.
    pub fn promote(&mut self, key: WatcherKey) {
        if let Some(w) = self.watchers.get_mut(&key) {
            if w.state != WatcherState::Synced {
                w.state = WatcherState::Synced;
                self.unsynced.remove(&key);
                self.synced.add(key, &w.range);
            }
        }
    }

    /// Removes a watcher from every structure; returns false if it was not registered.
    pub fn remove(&mut self, key: WatcherKey) -> bool {
        let Some(w) = self.watchers.remove(&key) else {
            return false;
        };
        if w.state == WatcherState::Synced {
            self.synced.remove(key, &w.range);
        } else {
            self.unsynced.remove(&key);
        }
        if let Some(stream) = self.streams.get_mut(&w.stream) {
            stream.watchers.remove(&key);
        }
        true
    }

    /// Answers the stream's deferred progress request if every watcher of it is synced;
    /// returns true if answered (or no longer pending).
    pub fn try_progress_all(&mut self, stream: StreamId) -> bool {
        let Some(entry) = self.streams.get(&stream) else {
            return true;
        };
        let all_synced = entry.watchers.iter().all(|k| {
            self.watchers
                .get(k)
                .is_some_and(|w| w.state == WatcherState::Synced)
        });
        all_synced
            && entry
                .queue
                .try_push(Delivery::Progress {
                    watcher: None,
                    rev: self.rev,
                })
                .is_ok()
    }

    /// Retries every deferred progress request.
    pub fn flush_progress(&mut self) {
        if self.progress_pending.is_empty() {
            return;
        }
        let pending: Vec<StreamId> = self.progress_pending.iter().copied().collect();
        for stream in pending {
            if self.try_progress_all(stream) {
                self.progress_pending.remove(&stream);
            }
        }
    }
}

/// Fans out committed changes to watchers; see the [module docs](super).
pub struct WatchHub {
    /// The store watched; catch-up reads its history.
    pub(crate) store: Arc<KvStore>,
    /// Bounds and pacing.
    pub(crate) config: HubConfig,
    /// Watchers, groups and streams. Taken inside the store's writer lock (by the observer).
    pub(crate) state: Mutex<HubState>,
    /// Wakes the catch-up thread.
    pub(crate) wake: Arc<Wakeup>,
    /// Source of watcher and stream identities.
    next_id: AtomicU64,
}

/// A watcher just registered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Registered {
    /// Its hub identity.
    pub key: WatcherKey,
    /// The hub's revision at registration: the watcher gets every event after it (or from its
    /// start revision).
    pub rev: i64,
}

impl WatchHub {
    /// A hub over `store`, registered as its commit observer, with etcd's default bounds.
    pub fn new(store: Arc<KvStore>) -> Arc<Self> {
        Self::with_config(store, HubConfig::default())
    }

    /// A hub over `store` with the given bounds; starts its catch-up thread.
    pub fn with_config(store: Arc<KvStore>, config: HubConfig) -> Arc<Self> {
        let hub = Arc::new(Self {
            state: Mutex::new(HubState {
                rev: store.current_revision(),
                ..HubState::default()
            }),
            store: Arc::clone(&store),
            config,
            wake: Arc::new(Wakeup::default()),
            next_id: AtomicU64::new(1),
        });
        let weak: Weak<Self> = Arc::downgrade(&hub);
        store.set_commit_observer(Box::new(move |committed| {
            if let Some(hub) = weak.upgrade() {
                hub.on_commit(committed);
            }
        }));
        super::sync::spawn(&hub);
        hub
    }

    /// The store's contents were replaced (a Raft snapshot installed): no commit reported the
    /// revisions in between, so every synced watcher goes back to catching up from the last
    /// revision it was given, or from its own start revision if that is later (a watch on a
    /// future revision; etcd's watchable store resumes each from its own `minRev` on restore).
    /// Those that now fall below the compacted revision are cancelled with `compact_revision`.
    pub fn store_replaced(&self) {
        let mut state = self.state.lock();
        let resume_from = state.rev + 1;
        let synced: Vec<(WatcherKey, i64)> = state
            .watchers
            .iter()
            .filter(|(_, w)| w.state == WatcherState::Synced)
            .map(|(key, w)| (*key, w.next_rev.max(resume_from)))
            .collect();
        for (key, from) in synced {
            state.set_aside(key, from, WatcherState::Unsynced);
        }
        state.rev = self.store.current_revision();
        drop(state);
        self.wake.wake();
    }

    /// The last revision dispatched to synced watchers.
    pub fn revision(&self) -> i64 {
        self.state.lock().rev
    }

    /// Number of watchers in each state: (synced, unsynced, victim).
    pub fn counts(&self) -> (usize, usize, usize) {
        let st = self.state.lock();
        let victims = st
            .unsynced
            .iter()
            .filter(|k| {
                st.watchers
                    .get(k)
                    .is_some_and(|w| w.state == WatcherState::Victim)
            })
            .count();
        (st.synced.len(), st.unsynced.len() - victims, victims)
    }

    /// The state of one watcher, if registered.
    pub fn watcher_state(&self, key: WatcherKey) -> Option<WatcherState> {
        self.state.lock().watchers.get(&key).map(|w| w.state)
    }

    /// Registers a new stream; its watchers live until it is dropped.
    pub fn open_stream(self: &Arc<Self>) -> HubStream {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(StreamQueue::new(self.config.queue, Arc::clone(&self.wake)));
        self.state.lock().streams.insert(
            id,
            StreamEntry {
                queue: Arc::clone(&queue),
                watchers: HashSet::default(),
            },
        );
        HubStream {
            hub: Arc::clone(self),
            id,
            queue,
        }
    }

    /// The observer: dispatches one commit to the synced watchers of its keys. Runs under the
    /// store's writer lock, so it only enqueues; a watcher whose queue is full is set aside.
    /// A stream's deliveries are queued together, so its task wakes once and answers them in
    /// one batch (see `server::watch`).
    fn on_commit(&self, committed: &Committed) {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        st.rev = st.rev.max(committed.rev);
        #[cfg(feature = "fault-injection")]
        if crate::faults::drop_watch_revision(committed.rev) {
            return;
        }
        if st.synced.is_empty() {
            return;
        }
        // Every (watcher, event) match, sorted so each watcher's events sit together in commit
        // order; one Arc per matched event, shared by its watchers.
        let mut matches: Vec<(WatcherKey, usize)> = Vec::new();
        let mut shared: Vec<Option<Arc<SharedEvent>>> = vec![None; committed.events.len()];
        for (i, event) in committed.events.iter().enumerate() {
            let Some(kv) = event.kv.as_ref() else {
                continue;
            };
            st.synced
                .for_each_matching(&kv.key, |key| matches.push((key, i)));
            if matches.last().is_some_and(|&(_, at)| at == i) {
                shared[i] = Some(Arc::new(SharedEvent::new(event.clone())));
            }
        }
        // With one event each watcher matched once: nothing to bring together.
        if committed.events.len() > 1 {
            matches.sort_unstable();
        }
        let mut deliveries: Vec<(StreamId, Delivery)> = Vec::new();
        match shared.as_slice() {
            // The usual commit has one event: a stream's watchers that want it share one batch
            // and one delivery.
            [Some(only)] => {
                let batch: EventBatch = Arc::from([Arc::clone(only)]);
                let mut wanting: Vec<(StreamId, WatcherKey)> = matches
                    .iter()
                    .filter_map(|&(key, _)| {
                        let w = st.watchers.get(&key)?;
                        w.wants(only).then_some((w.stream, key))
                    })
                    .collect();
                wanting.sort_unstable();
                for run in wanting.chunk_by(|a, b| a.0 == b.0) {
                    let delivery = Delivery::Events {
                        watchers: run.iter().map(|&(_, key)| key).collect(),
                        rev: committed.rev,
                        events: Arc::clone(&batch),
                    };
                    deliveries.push((run[0].0, delivery));
                }
            }
            _ => {
                for run in matches.chunk_by(|a, b| a.0 == b.0) {
                    let key = run[0].0;
                    let Some(w) = st.watchers.get(&key) else {
                        continue;
                    };
                    let events: EventBatch = run
                        .iter()
                        .filter_map(|&(_, i)| shared[i].as_ref())
                        .filter(|e| w.wants(e))
                        .cloned()
                        .collect();
                    if !events.is_empty() {
                        let delivery = Delivery::Events {
                            watchers: vec![key],
                            rev: committed.rev,
                            events,
                        };
                        deliveries.push((w.stream, delivery));
                    }
                }
                // A stream's deliveries are queued together.
                deliveries.sort_unstable_by_key(|(stream, _)| *stream);
            }
        }
        let mut per_stream: Vec<(StreamId, Vec<Delivery>)> = Vec::new();
        for (stream, delivery) in deliveries {
            match per_stream.last_mut() {
                Some((last, batch)) if *last == stream => batch.push(delivery),
                _ => per_stream.push((stream, vec![delivery])),
            }
        }
        let mut victims = Vec::new();
        for (stream, deliveries) in per_stream {
            let Some(stream) = st.streams.get(&stream) else {
                continue;
            };
            for refused in stream.queue.try_push_all(deliveries) {
                if let Delivery::Events { watchers, .. } = refused {
                    victims.extend(watchers);
                }
            }
        }
        if !victims.is_empty() {
            for key in victims {
                st.set_aside(key, committed.rev, WatcherState::Victim);
            }
            self.wake.wake();
        }
    }

    /// Registers a watcher on `stream`. Synced at once if it starts at or after the next
    /// revision; otherwise the catch-up thread replays history for it first.
    fn watch(&self, stream: StreamId, spec: WatchSpec) -> Registered {
        let key = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut st = self.state.lock();
        let rev = st.rev;
        let synced = spec.start_rev <= 0 || spec.start_rev > rev;
        let watcher = Watcher {
            stream,
            range: spec.range,
            filters: spec.filters,
            next_rev: if synced {
                spec.start_rev.max(rev + 1)
            } else {
                spec.start_rev
            },
            state: if synced {
                WatcherState::Synced
            } else {
                WatcherState::Unsynced
            },
        };
        if synced {
            st.synced.add(key, &watcher.range);
        } else {
            st.unsynced.insert(key);
        }
        st.watchers.insert(key, watcher);
        if let Some(entry) = st.streams.get_mut(&stream) {
            entry.watchers.insert(key);
        }
        drop(st);
        if !synced {
            self.wake.wake();
        }
        Registered { key, rev }
    }

    /// Removes a watcher; false if it was not registered (already cancelled or compacted).
    fn cancel(&self, key: WatcherKey) -> bool {
        self.state.lock().remove(key)
    }

    /// Queues a progress notification for one watcher if it is synced (etcd's
    /// `RequestProgress`; nothing is sent for a watcher still catching up).
    fn request_progress(&self, key: WatcherKey) {
        let st = self.state.lock();
        let Some(w) = st.watchers.get(&key) else {
            return;
        };
        if w.state != WatcherState::Synced {
            return;
        }
        if let Some(stream) = st.streams.get(&w.stream) {
            // A full queue means the client is behind anyway; the next tick tries again.
            let _ = stream.queue.try_push(Delivery::Progress {
                watcher: Some(key),
                rev: st.rev,
            });
        }
    }

    /// etcd 3.5's progress request: one notification with `watch_id` -1 once every watcher of
    /// the stream is synced (now, or when the last of them catches up).
    fn request_progress_all(&self, stream: StreamId) {
        let mut st = self.state.lock();
        if !st.try_progress_all(stream) {
            st.progress_pending.insert(stream);
            drop(st);
            self.wake.wake();
        }
    }

    /// Removes a stream and every watcher of it.
    fn close_stream(&self, stream: StreamId) {
        let mut st = self.state.lock();
        let Some(entry) = st.streams.remove(&stream) else {
            return;
        };
        for key in entry.watchers {
            st.remove(key);
        }
        st.progress_pending.remove(&stream);
    }
}

/// One stream's handle on the hub: registers and cancels its watchers and receives their
/// deliveries in order. Dropping it removes every watcher of the stream.
pub struct HubStream {
    /// The hub.
    hub: Arc<WatchHub>,
    /// This stream's identity.
    id: StreamId,
    /// This stream's deliveries.
    queue: Arc<StreamQueue>,
}

impl HubStream {
    /// Registers a watcher on this stream.
    pub fn watch(&self, spec: WatchSpec) -> Registered {
        self.hub.watch(self.id, spec)
    }

    /// Cancels a watcher of this stream; false if it was not registered.
    pub fn cancel(&self, key: WatcherKey) -> bool {
        self.hub.cancel(key)
    }

    /// Asks for a progress notification for one watcher (sent only if it is synced).
    pub fn request_progress(&self, key: WatcherKey) {
        self.hub.request_progress(key);
    }

    /// Asks for one progress notification covering every watcher of the stream.
    pub fn request_progress_all(&self) {
        self.hub.request_progress_all(self.id);
    }

    /// The hub's revision (what control responses report).
    pub fn revision(&self) -> i64 {
        self.hub.revision()
    }

    /// The next delivery for this stream's watchers. Cancel-safe.
    pub async fn recv(&self) -> Delivery {
        self.queue.pop().await
    }

    /// The next delivery, if one is queued.
    pub fn try_recv(&self) -> Option<Delivery> {
        self.queue.try_pop()
    }
}

impl Drop for HubStream {
    fn drop(&mut self) {
        self.hub.close_stream(self.id);
    }
}

#[cfg(test)]
#[path = "hub_tests.rs"]
mod tests;
