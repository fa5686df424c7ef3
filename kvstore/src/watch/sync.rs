//! The catch-up thread: brings unsynced and victim watchers back to synced by replaying
//! history from RocksDB (etcd's `syncWatchersLoop` and `syncVictimsLoop` in one).
//!
//! One round: under the hub lock, pick up to `watchers_per_sync` waiting watchers whose
//! stream's queue has room, cancel those whose next revision was compacted, and note the hub's
//! revision as the head; without the lock, read one bounded batch of history from the lowest
//! next revision to the head, for the picked watchers' keys only, and sort it per watcher;
//! under the lock again, queue each watcher's share and advance its next revision to where the
//! batch ended, promoting it to synced if that is the hub's next revision. A watcher whose
//! queue refuses the batch stays behind (as a victim) and is retried, from the same revision,
//! once its queue drains.
//!
//! The thread holds only a weak reference to the hub and ends when the hub is dropped.

use std::collections::HashMap;
use std::sync::{Arc, Weak};

use super::event::SharedEvent;
use super::group::WatcherGroup;
use super::hub::WatchHub;
use super::queue::Delivery;
use super::watcher::{WatcherKey, WatcherState};
use crate::mvcc::Error as StoreError;

/// Starts the catch-up thread of `hub`.
pub(crate) fn spawn(hub: &Arc<WatchHub>) {
    let weak: Weak<WatchHub> = Arc::downgrade(hub);
    let wake = Arc::clone(&hub.wake);
    let interval = hub.config.sync_interval;
    let spawned = std::thread::Builder::new()
        .name("watch-sync".into())
        .spawn(move || loop {
            let Some(hub) = weak.upgrade() else {
                return;
            };
            let more = hub.sync_round();
            drop(hub);
            if !more {
                wake.wait(interval);
            }
        });
    if let Err(err) = spawned {
        tracing::error!(cause = %err, "cannot start the watch catch-up thread; watches from a past revision will not be served");
    }
}

/// The watchers picked for one round and what the history read must cover.
struct Picked {
    /// Each picked watcher with the next revision it had when picked.
    watchers: Vec<(WatcherKey, i64)>,
    /// The picked watchers by key and range, to select the keys read.
    group: WatcherGroup,
    /// The lowest next revision among them: where the read starts.
    from_rev: i64,
    /// The hub's revision when picked: where the read ends.
    head: i64,
}

impl WatchHub {
    /// Runs one catch-up round; returns true if it did work and another round should follow
    /// at once.
    pub(crate) fn sync_round(&self) -> bool {
        let Some(picked) = self.pick() else {
            return false;
        };
        let batch = match self.store.history_matching(
            picked.from_rev,
            picked.head,
            self.config.batch_events,
            self.config.batch_bytes,
            |key| picked.group.matches_any(key),
        ) {
            Ok(batch) => batch,
            // The next round finds the new compacted revision and cancels who needs it.
            Err(StoreError::Compacted) => return true,
            Err(err) => {
                tracing::error!(cause = %err, "reading history for watchers");
                return false;
            }
        };
        let mut per_watcher: HashMap<WatcherKey, Vec<Arc<SharedEvent>>> = HashMap::new();
        for event in batch.events {
            let Some(kv) = event.kv.as_ref() else {
                continue;
            };
            let mut matched = Vec::new();
            picked.group.for_each_matching(&kv.key, |w| matched.push(w));
            if matched.is_empty() {
                continue;
            }
            let event = Arc::new(SharedEvent::new(event));
            for w in matched {
                per_watcher.entry(w).or_default().push(Arc::clone(&event));
            }
        }
        self.deliver(picked, per_watcher, batch.next_rev);
        true
    }

    /// Picks the watchers to catch up this round (see the module docs); None if there are none.
    fn pick(&self) -> Option<Picked> {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        st.flush_progress();
        if st.unsynced.is_empty() {
            return None;
        }
        let compacted = self.store.compacted_revision();
        let head = st.rev;
        let mut picked = Picked {
            watchers: Vec::new(),
            group: WatcherGroup::new(),
            from_rev: i64::MAX,
            head,
        };
        let mut compacted_out = Vec::new();
        let mut caught_up = Vec::new();
        for &key in &st.unsynced {
            let Some(w) = st.watchers.get(&key) else {
                continue;
            };
            let Some(stream) = st.streams.get(&w.stream) else {
                continue;
            };
            if !stream.queue.has_room() {
                // Its queue's drain wakes this thread.
                continue;
            }
            if w.next_rev <= compacted {
                let delivery = Delivery::Compacted {
                    watcher: key,
                    compact_rev: compacted,
                    rev: head,
                };
                if stream.queue.try_push(delivery).is_ok() {
                    compacted_out.push(key);
                }
                continue;
            }
            if w.next_rev > head {
                caught_up.push(key);
                continue;
            }
            picked.watchers.push((key, w.next_rev));
            picked.group.add(key, &w.range);
            picked.from_rev = picked.from_rev.min(w.next_rev);
            if picked.watchers.len() >= self.config.watchers_per_sync {
                break;
            }
        }
        for key in compacted_out {
            st.remove(key);
        }
        for key in caught_up {
            st.promote(key);
        }
        st.flush_progress();
        (!picked.watchers.is_empty()).then_some(picked)
    }

    /// Queues each picked watcher's share of a batch that covers revisions up to
    /// `next_rev - 1`, and promotes the watchers that have caught up.
    fn deliver(
        &self,
        picked: Picked,
        mut per_watcher: HashMap<WatcherKey, Vec<Arc<SharedEvent>>>,
        next_rev: i64,
    ) {
        let mut guard = self.state.lock();
        let st = &mut *guard;
        for (key, picked_from) in picked.watchers {
            let Some(w) = st.watchers.get_mut(&key) else {
                // Cancelled while the batch was read.
                continue;
            };
            if w.state == WatcherState::Synced
                || w.next_rev != picked_from
                || next_rev <= w.next_rev
            {
                // Only this thread moves a waiting watcher; a batch that ended before its
                // next revision has nothing for it yet.
                continue;
            }
            let events: Vec<Arc<SharedEvent>> = per_watcher
                .remove(&key)
                .unwrap_or_default()
                .into_iter()
                .filter(|e| w.wants(e))
                .collect();
            if !events.is_empty() {
                let Some(stream) = st.streams.get(&w.stream) else {
                    continue;
                };
                let delivery = Delivery::Events {
                    watchers: vec![key],
                    rev: next_rev - 1,
                    events: events.into(),
                };
                if stream.queue.try_push(delivery).is_err() {
                    w.state = WatcherState::Victim;
                    continue;
                }
            }
            w.next_rev = next_rev;
            if w.next_rev > st.rev {
                st.promote(key);
            } else {
                w.state = WatcherState::Unsynced;
            }
        }
        st.flush_progress();
    }
}
