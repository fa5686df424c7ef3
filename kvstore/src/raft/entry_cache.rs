//! The newest Raft log entries, kept in memory next to the log on disk.
//!
//! openraft 0.9 reads every entry it replicates or applies back from the log store: on the
//! leader each entry was read from RocksDB and decoded once per follower and once more for the
//! state machine, right after being appended. At 256 clients putting that read path (RocksDB
//! iteration, decoding every batched command) was about 5 % of the leader's CPU (`perf`, see
//! `docs/benchmarks.md`). The cache hands out the appended entries themselves instead: an
//! [`Entry`]'s command is shared ([`super::types::Request`]), so a copy is a reference count.
//!
//! The cache mirrors the end of the log: every append, truncation and purge of the log store
//! is applied to it too, so when it is not empty its last entry is the log's last entry, and
//! any range starting at or after its first entry reads the same from it as from disk. It
//! holds at most about [`CACHE_BYTES`] of entries, dropping the oldest first; older entries
//! (a follower far behind, a restart) are read from disk as before.

use std::collections::VecDeque;

use super::codec::encoded_size_hint;
use super::types::Entry;

/// Encoded bytes of entries kept, about (the newest entry is kept whatever its size).
pub const CACHE_BYTES: usize = 4 << 20;

/// Consecutive entries at the end of the log, oldest first.
#[derive(Default)]
pub struct EntryCache {
    entries: VecDeque<Entry>,
    /// The sum of [`encoded_size_hint`] over `entries`.
    bytes: usize,
}

impl EntryCache {
    /// Records entries just appended to the log (consecutive, in order). An entry that does not
    /// follow the cache's last one starts the cache afresh (the log's end moved without it,
    /// as when a snapshot replaced the log).
    pub fn append(&mut self, entries: &[Entry]) {
        for entry in entries {
            let follows = self
                .entries
                .back()
                .is_some_and(|last| last.log_id.index.checked_add(1) == Some(entry.log_id.index));
            if !follows {
                self.clear();
            }
            self.bytes += encoded_size_hint(entry);
            self.entries.push_back(entry.clone());
        }
        while self.bytes > CACHE_BYTES && self.entries.len() > 1 {
            self.pop_front();
        }
    }

    /// Forgets entries at and after `index` (the log was truncated there).
    pub fn truncate(&mut self, index: u64) {
        while self
            .entries
            .back()
            .is_some_and(|last| last.log_id.index >= index)
        {
            if let Some(entry) = self.entries.pop_back() {
                self.bytes -= encoded_size_hint(&entry);
            }
        }
    }

    /// Forgets entries up to and including `index` (the log was purged up to there).
    pub fn purge(&mut self, index: u64) {
        while self
            .entries
            .front()
            .is_some_and(|first| first.log_id.index <= index)
        {
            self.pop_front();
        }
    }

    /// Entries with index in `[start, end)` (`end` `None`: to the end of the log), if the
    /// cache holds the log from `start` on; `None` when the range begins before the cache.
    pub fn get(&self, start: u64, end: Option<u64>) -> Option<Vec<Entry>> {
        let first = self.entries.front()?.log_id.index;
        if start < first {
            return None;
        }
        let from = usize::try_from(start - first).ok()?;
        let to = match end {
            Some(end) if end <= start => return Some(Vec::new()),
            Some(end) => usize::try_from(end - first).ok()?.min(self.entries.len()),
            None => self.entries.len(),
        };
        Some(
            self.entries
                .range(from.min(to)..to)
                .cloned()
                .collect::<Vec<_>>(),
        )
    }

    fn pop_front(&mut self) {
        if let Some(entry) = self.entries.pop_front() {
            self.bytes -= encoded_size_hint(&entry);
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.bytes = 0;
    }
}

#[cfg(test)]
mod tests {
    use kvstore_proto::etcdserverpb::PutRequest;
    use proptest::prelude::*;

    use openraft::EntryPayload;

    use super::*;
    use crate::apply::Command;
    use crate::raft::types::{LogId, Request};

    fn entry(index: u64, value_len: usize) -> Entry {
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::new(Command::Put(PutRequest {
                key: index.to_be_bytes().to_vec(),
                value: vec![b'v'; value_len],
                ..PutRequest::default()
            }))),
        }
    }

    fn indexes(entries: &[Entry]) -> Vec<u64> {
        entries.iter().map(|e| e.log_id.index).collect()
    }

    #[test]
    fn keeps_the_newest_entries_within_its_bound() {
        let mut cache = EntryCache::default();
        let big = CACHE_BYTES / 4;
        cache.append(&(1..=6).map(|i| entry(i, big)).collect::<Vec<_>>());
        let kept = cache.get(0, None);
        assert_eq!(
            kept, None,
            "entry 1 was dropped for room, so index 0.. is not whole"
        );
        let first = cache.entries.front().map(|e| e.log_id.index);
        assert_eq!(first, Some(4), "three quarter-sized entries fit, not four");
        assert_eq!(
            indexes(&cache.get(4, None).unwrap_or_default()),
            vec![4, 5, 6]
        );
        // One entry larger than the bound is still kept: it is the log's end.
        cache.append(&[entry(7, CACHE_BYTES * 2)]);
        assert_eq!(indexes(&cache.get(7, None).unwrap_or_default()), vec![7]);
    }

    #[test]
    fn an_entry_that_does_not_follow_starts_afresh() {
        let mut cache = EntryCache::default();
        cache.append(&[entry(1, 1), entry(2, 1)]);
        cache.append(&[entry(10, 1)]);
        assert_eq!(cache.get(2, None), None);
        assert_eq!(indexes(&cache.get(10, None).unwrap_or_default()), vec![10]);
    }

    /// What the log on disk holds after the same calls: the model the cache must agree with.
    #[derive(Default)]
    struct Log(std::collections::BTreeMap<u64, Entry>);

    #[derive(Debug, Clone)]
    enum Op {
        /// Append `n` entries after the last (or at `start` if the log is empty).
        Append(u64, usize),
        /// Truncate at the last index minus this.
        Truncate(u64),
        /// Purge up to the first index plus this.
        Purge(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (1u64..50, 1usize..4).prop_map(|(start, n)| Op::Append(start, n)),
            1 => (0u64..4).prop_map(Op::Truncate),
            1 => (0u64..4).prop_map(Op::Purge),
        ]
    }

    proptest! {
        /// Any range the cache serves reads the same as the log itself.
        #[test]
        fn serves_what_the_log_holds(ops in proptest::collection::vec(op(), 1..60),
                                     value_len in prop_oneof![Just(1usize), Just(CACHE_BYTES / 7)]) {
            let mut cache = EntryCache::default();
            let mut log = Log::default();
            for op in ops {
                match op {
                    Op::Append(start, n) => {
                        let from = log.0.keys().next_back().map_or(start, |last| last + 1);
                        let new: Vec<Entry> = (from..from + n as u64).map(|i| entry(i, value_len)).collect();
                        for e in &new {
                            log.0.insert(e.log_id.index, e.clone());
                        }
                        cache.append(&new);
                    }
                    Op::Truncate(back) => {
                        if let Some(&last) = log.0.keys().next_back() {
                            let at = last.saturating_sub(back);
                            log.0.retain(|&i, _| i < at);
                            cache.truncate(at);
                        }
                    }
                    Op::Purge(ahead) => {
                        if let Some(&first) = log.0.keys().next() {
                            let upto = first + ahead;
                            log.0.retain(|&i, _| i > upto);
                            cache.purge(upto);
                        }
                    }
                }
                let (lo, hi) = match (log.0.keys().next(), log.0.keys().next_back()) {
                    (Some(&lo), Some(&hi)) => (lo, hi),
                    _ => (0, 0),
                };
                for start in lo.saturating_sub(1)..=hi + 1 {
                    for end in [None, Some(start), Some(start + 1), Some(hi + 2)] {
                        if let Some(got) = cache.get(start, end) {
                            let want: Vec<u64> = log.0.range(start..end.unwrap_or(u64::MAX)).map(|(&i, _)| i).collect();
                            prop_assert_eq!(indexes(&got), want, "range {}..{:?}", start, end);
                        }
                    }
                }
                if let Some(cached_last) = cache.entries.back() {
                    prop_assert_eq!(Some(&cached_last.log_id.index), log.0.keys().next_back(),
                        "a cache that holds anything holds the log's end");
                }
            }
        }
    }
}
