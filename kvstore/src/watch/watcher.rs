//! One watcher as the hub sees it: what it watches, the next revision it expects, which
//! events it drops, and whether it is synced.

use kvstore_proto::mvccpb::{event::EventType, Event};

use crate::mvcc::KeyRange;

/// A watcher's identity inside the hub: unique for the hub's life and never reused, unlike the
/// client's `watch_id`, so a delivery queued for a cancelled watcher can never reach a new
/// watcher that reused its ID.
pub type WatcherKey = u64;

/// Identity of one registered stream (one gRPC Watch call).
pub type StreamId = u64;

/// Which events a watcher drops (etcd's `NOPUT` and `NODELETE` filters).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Filters {
    /// Drop put events.
    pub no_put: bool,
    /// Drop delete events.
    pub no_delete: bool,
}

impl Filters {
    /// True if the watcher wants `event`.
    pub fn keeps(&self, event: &Event) -> bool {
        if event.r#type == EventType::Delete as i32 {
            !self.no_delete
        } else {
            !self.no_put
        }
    }
}

/// What a new watcher asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchSpec {
    /// The keys watched.
    pub range: KeyRange,
    /// The first revision wanted: 0 (or less) for "after the current one", a past revision to
    /// replay history from it, a future one to skip everything before it.
    pub start_rev: i64,
    /// Events dropped.
    pub filters: Filters,
}

/// Where a watcher is in the hub (etcd's synced / unsynced groups and victim batches).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatcherState {
    /// Up to date: gets each commit's events as the commit happens.
    Synced,
    /// Behind: its start revision was in the past; caught up from history.
    Unsynced,
    /// Set aside: its stream's queue was full; caught up from history once the queue drains.
    Victim,
}

/// A registered watcher.
#[derive(Clone, Debug)]
pub(crate) struct Watcher {
    /// The stream its deliveries go to.
    pub stream: StreamId,
    /// The keys watched.
    pub range: KeyRange,
    /// Events dropped.
    pub filters: Filters,
    /// The lowest main revision it still needs. Synced: events below it are skipped (a future
    /// start revision); unsynced or victim: where catching up resumes. Never moves backwards.
    pub next_rev: i64,
    /// Synced, unsynced or victim.
    pub state: WatcherState,
}

impl Watcher {
    /// True if `event` concerns this watcher: its key is watched, it is not below `next_rev`,
    /// and no filter drops it.
    pub fn wants(&self, event: &Event) -> bool {
        let Some(kv) = event.kv.as_ref() else {
            return false;
        };
        kv.mod_revision >= self.next_rev
            && self.range.contains(&kv.key)
            && self.filters.keeps(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::mvccpb::KeyValue;

    fn event(kind: EventType, key: &str, rev: i64) -> Event {
        Event {
            r#type: kind as i32,
            kv: Some(KeyValue {
                key: key.into(),
                mod_revision: rev,
                ..KeyValue::default()
            }),
            prev_kv: None,
        }
    }

    #[test]
    fn filters_drop_puts_or_deletes() {
        let put = event(EventType::Put, "a", 2);
        let del = event(EventType::Delete, "a", 3);
        let no_put = Filters {
            no_put: true,
            no_delete: false,
        };
        assert!(!no_put.keeps(&put));
        assert!(no_put.keeps(&del));
        let no_delete = Filters {
            no_put: false,
            no_delete: true,
        };
        assert!(no_delete.keeps(&put));
        assert!(!no_delete.keeps(&del));
    }

    #[test]
    fn watcher_skips_events_below_its_next_revision() {
        let w = Watcher {
            stream: 1,
            range: KeyRange::Single(b"a".to_vec()),
            filters: Filters::default(),
            next_rev: 5,
            state: WatcherState::Synced,
        };
        assert!(!w.wants(&event(EventType::Put, "a", 4)));
        assert!(w.wants(&event(EventType::Put, "a", 5)));
        assert!(!w.wants(&event(EventType::Put, "b", 6)));
    }
}
