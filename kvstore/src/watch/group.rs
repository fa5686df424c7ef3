//! Watchers grouped by what they watch, so finding the watchers of a changed key costs the
//! watchers that match plus the distinct ranges that start at or before the key, never a scan
//! of every watcher.
//!
//! Exact-key watchers sit in a hash map by key. Range watchers are grouped by distinct range:
//! a sorted map from start key to the ends starting there, each end with its watchers. Many
//! watchers of the same prefix (the common case: one per client of a resource type) cost one
//! comparison per changed key, however many there are.

use std::collections::{BTreeMap, HashMap};

use rustc_hash::FxHashSet;
use std::ops::Bound;

use super::watcher::WatcherKey;
use crate::mvcc::KeyRange;

/// The range watchers sharing one start key: end (`None`: no upper bound) → watchers.
type Ends = HashMap<Option<Vec<u8>>, Watchers>;

/// The watchers of one key or range. The outer maps hash clients' keys with std's SipHash;
/// watcher IDs are the hub's own, so a fast hash is safe for them.
type Watchers = FxHashSet<WatcherKey>;

/// A set of watchers indexed by key and by range.
#[derive(Debug, Default)]
pub struct WatcherGroup {
    /// Watchers of exactly one key.
    keys: HashMap<Vec<u8>, Watchers>,
    /// Range watchers by start key.
    ranges: BTreeMap<Vec<u8>, Ends>,
    /// Number of watchers in the group.
    len: usize,
}

impl WatcherGroup {
    /// An empty group.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of watchers in the group.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if the group has no watchers.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Number of distinct ranges (not exact keys) watched.
    pub fn distinct_ranges(&self) -> usize {
        self.ranges.values().map(HashMap::len).sum()
    }

    /// Adds a watcher of `range`; returns false if it was already in the group.
    pub fn add(&mut self, watcher: WatcherKey, range: &KeyRange) -> bool {
        let added = match range {
            KeyRange::Single(key) => self.keys.entry(key.clone()).or_default().insert(watcher),
            KeyRange::Range { start, end } => self
                .ranges
                .entry(start.clone())
                .or_default()
                .entry(end.clone())
                .or_default()
                .insert(watcher),
        };
        if added {
            self.len += 1;
        }
        added
    }

    /// Removes a watcher of `range`; returns false if it was not in the group.
    pub fn remove(&mut self, watcher: WatcherKey, range: &KeyRange) -> bool {
        let removed = match range {
            KeyRange::Single(key) => match self.keys.get_mut(key) {
                Some(set) => {
                    let removed = set.remove(&watcher);
                    if set.is_empty() {
                        self.keys.remove(key);
                    }
                    removed
                }
                None => false,
            },
            KeyRange::Range { start, end } => {
                let Some(ends) = self.ranges.get_mut(start) else {
                    return false;
                };
                let removed = match ends.get_mut(end) {
                    Some(set) => {
                        let removed = set.remove(&watcher);
                        if set.is_empty() {
                            ends.remove(end);
                        }
                        removed
                    }
                    None => false,
                };
                if ends.is_empty() {
                    self.ranges.remove(start);
                }
                removed
            }
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// Calls `f` with every watcher whose range contains `key`, each once.
    pub fn for_each_matching(&self, key: &[u8], mut f: impl FnMut(WatcherKey)) {
        if let Some(set) = self.keys.get(key) {
            set.iter().copied().for_each(&mut f);
        }
        let starts = self
            .ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)));
        for (_, ends) in starts {
            for (end, set) in ends {
                if end.as_deref().is_none_or(|end| key < end) {
                    set.iter().copied().for_each(&mut f);
                }
            }
        }
    }

    /// True if any watcher's range contains `key`.
    pub fn matches_any(&self, key: &[u8]) -> bool {
        if self.keys.contains_key(key) {
            return true;
        }
        self.ranges
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .any(|(_, ends)| {
                ends.keys()
                    .any(|end| end.as_deref().is_none_or(|end| key < end))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matching(group: &WatcherGroup, key: &str) -> Vec<WatcherKey> {
        let mut out = Vec::new();
        group.for_each_matching(key.as_bytes(), |w| out.push(w));
        out.sort_unstable();
        out
    }

    fn prefix(p: &str) -> KeyRange {
        let mut end = p.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        KeyRange::Range {
            start: p.as_bytes().to_vec(),
            end: Some(end),
        }
    }

    #[test]
    fn group_matches_exact_keys_prefixes_and_from_key_ranges() {
        let mut g = WatcherGroup::new();
        g.add(1, &KeyRange::Single(b"/a/x".to_vec()));
        g.add(2, &prefix("/a/"));
        g.add(3, &prefix("/b/"));
        g.add(
            4,
            &KeyRange::Range {
                start: b"/a/y".to_vec(),
                end: None,
            },
        );
        g.add(5, &prefix("/a/"));
        assert_eq!(g.len(), 5);
        assert_eq!(
            g.distinct_ranges(),
            3,
            "two watchers of /a/ share one range"
        );
        assert_eq!(matching(&g, "/a/x"), vec![1, 2, 5]);
        assert_eq!(matching(&g, "/a/z"), vec![2, 4, 5]);
        assert_eq!(matching(&g, "/b/1"), vec![3, 4]);
        assert_eq!(matching(&g, "/"), Vec::<WatcherKey>::new());
        assert!(g.matches_any(b"/a/q"));
        assert!(!g.matches_any(b"/0"));
    }

    #[test]
    fn group_removal_drops_empty_entries() {
        let mut g = WatcherGroup::new();
        let r = prefix("/a/");
        let k = KeyRange::Single(b"k".to_vec());
        assert!(g.add(1, &r));
        assert!(!g.add(1, &r), "adding twice is a no-op");
        assert!(g.add(2, &k));
        assert!(g.remove(1, &r));
        assert!(!g.remove(1, &r));
        assert!(!g.remove(2, &r), "removal names the watcher's own range");
        assert!(g.remove(2, &k));
        assert!(g.is_empty());
        assert_eq!(g.distinct_ranges(), 0);
        assert!(!g.matches_any(b"/a/x"));
    }
}
