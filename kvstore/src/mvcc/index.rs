//! The in-memory index over all keys: key → [`KeyIndex`], in key order (etcd's `treeIndex`).
//!
//! The backend stores versions by revision; this index is how a read by key finds them. It lives
//! only in memory and is rebuilt from the backend at start ([`TreeIndex::restore`],
//! [`TreeIndex::restore_tombstone`]).

use std::collections::HashSet;
use std::ops::Bound;

use crate::mvcc::btree::BPlusTree;
use crate::mvcc::key_index::{Generation, KeyIndex, KeyIndexError};
use crate::mvcc::revision::Revision;

/// Which keys a request touches, as etcd's `(key, range_end)` pair means it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeyRange {
    /// Exactly this key (`range_end` empty).
    Single(Vec<u8>),
    /// Every key in `[start, end)`; `end: None` means every key `>= start`.
    Range {
        /// First key in the range.
        start: Vec<u8>,
        /// First key after the range, or `None` for no upper bound.
        end: Option<Vec<u8>>,
    },
}

impl KeyRange {
    /// The keys etcd means by `key` and `range_end`: an empty `range_end` names `key` alone,
    /// `"\0"` every key from `key` on (so `"\0"`, `"\0"` is every key), anything else `[key,
    /// range_end)` — empty if `range_end <= key`.
    pub fn from_etcd(key: &[u8], range_end: &[u8]) -> KeyRange {
        match range_end {
            [] => KeyRange::Single(key.to_vec()),
            [0] => KeyRange::Range {
                start: key.to_vec(),
                end: None,
            },
            end => KeyRange::Range {
                start: key.to_vec(),
                end: Some(end.to_vec()),
            },
        }
    }

    /// True if `key` is one of the keys this range names.
    pub fn contains(&self, key: &[u8]) -> bool {
        match self {
            KeyRange::Single(single) => single.as_slice() == key,
            KeyRange::Range { start, end } => {
                start.as_slice() <= key && end.as_deref().is_none_or(|end| key < end)
            }
        }
    }
}

/// Every key with history, each with its [`KeyIndex`], ordered by key.
///
/// Not synchronised: the store owns it behind its own lock, and applies each transaction's
/// changes with `&mut self`.
pub struct TreeIndex {
    /// Key → its revisions. A key whose key index is left empty (by compaction or rollback) is
    /// removed, so every entry has at least one revision.
    tree: BPlusTree<Vec<u8>, KeyIndex>,
}

impl Default for TreeIndex {
    fn default() -> Self {
        Self::new()
    }
}

impl TreeIndex {
    /// An index with no keys.
    pub fn new() -> Self {
        TreeIndex {
            tree: BPlusTree::new(),
        }
    }

    /// Records a put of `key` at `rev`; returns what [`TreeIndex::get`] at `rev.main` answered
    /// just before, `(mod_revision, create_revision, version)` of the key the put continues
    /// (`None`: the put creates it). One descent of the tree for a key that has history.
    ///
    /// # Panics
    /// If `rev` is not after every revision recorded for `key` (see [`KeyIndex::put`]).
    pub fn put(&mut self, key: &[u8], rev: Revision) -> Option<(Revision, Revision, i64)> {
        if let Some(ki) = self.tree.get_mut(key) {
            let before = ki.get(rev.main);
            ki.put(rev);
            return before;
        }
        let mut ki = KeyIndex::new();
        ki.put(rev);
        self.tree.insert(key.to_vec(), ki);
        None
    }

    /// Records a delete of `key` at `rev`; [`KeyIndexError::NotFound`] if the key is not live.
    ///
    /// # Panics
    /// If `rev` is not after every revision recorded for `key` (see [`KeyIndex::put`]).
    pub fn tombstone(&mut self, key: &[u8], rev: Revision) -> Result<(), KeyIndexError> {
        match self.tree.get_mut(key) {
            Some(ki) => ki.tombstone(rev),
            None => Err(KeyIndexError::NotFound),
        }
    }

    /// Rebuilds the entry of `key` from a put read back from the backend at start-up; call it
    /// (or [`TreeIndex::restore_tombstone`]) for every version in the backend, in revision order.
    ///
    /// For the oldest version of the key left (compaction may have removed the put that created
    /// it), `created` and `version` come from the stored KeyValue (`create_revision`, sub 0, and
    /// `version`); for later versions they are ignored and the put is recorded as
    /// [`TreeIndex::put`] does.
    ///
    /// # Panics
    /// If `modified` is not after the key's newest revision: the backend scan was not in order.
    pub fn restore(&mut self, key: &[u8], created: Revision, modified: Revision, version: i64) {
        match self.tree.get_mut(key) {
            Some(ki) => ki.put(modified),
            None => {
                self.tree
                    .insert(key.to_vec(), KeyIndex::restored(created, modified, version));
            }
        }
    }

    /// Rebuilds the entry of `key` from a tombstone read back from the backend at start-up.
    ///
    /// If it is the oldest version of the key left (compaction keeps a tombstone at the compacted
    /// revision and removes the puts before it), the key gets a closed generation holding only
    /// the tombstone, as etcd does (etcd-io/etcd#19188), so that compacting at that revision again
    /// (resuming an interrupted compaction) still keeps it for watchers. Returns
    /// [`KeyIndexError::NotFound`] if the key is already deleted (etcd logs that and goes on).
    ///
    /// # Panics
    /// If `rev` is not after the key's newest revision: the backend scan was not in order.
    pub fn restore_tombstone(&mut self, key: &[u8], rev: Revision) -> Result<(), KeyIndexError> {
        match self.tree.get_mut(key) {
            Some(ki) => ki.tombstone(rev),
            None => {
                self.tree
                    .insert(key.to_vec(), KeyIndex::restored_tombstone(rev));
                Ok(())
            }
        }
    }

    /// True if `key` has any history in the index (live or deleted, not yet compacted away).
    pub fn contains(&self, key: &[u8]) -> bool {
        self.tree.get(key).is_some()
    }

    /// The generations of `key`, oldest first, if it has any history.
    pub fn generations_of(&self, key: &[u8]) -> Option<&[Generation]> {
        self.tree.get(key).map(KeyIndex::generations)
    }

    /// `(mod_revision, create_revision, version)` of `key` as a read at `at_rev` sees it, or
    /// `None` if the key did not exist then.
    pub fn get(&self, key: &[u8], at_rev: i64) -> Option<(Revision, Revision, i64)> {
        self.tree.get(key)?.get(at_rev)
    }

    /// Mod revisions of the keys in `range` that exist at `at_rev`, in key order, at most `limit`
    /// of them (0 = no limit); and how many such keys there are in all.
    pub fn revisions(&self, range: &KeyRange, at_rev: i64, limit: usize) -> (Vec<Revision>, usize) {
        let mut revs = Vec::new();
        let mut total = 0;
        self.visit(range, at_rev, |_, rev| {
            if limit == 0 || revs.len() < limit {
                revs.push(rev);
            }
            total += 1;
        });
        (revs, total)
    }

    /// As [`TreeIndex::revisions`], but each revision with its key (for keys-only reads and for
    /// deletes, which need the keys).
    pub fn keys(
        &self,
        range: &KeyRange,
        at_rev: i64,
        limit: usize,
    ) -> (Vec<(Vec<u8>, Revision)>, usize) {
        let mut keys = Vec::new();
        let mut total = 0;
        self.visit(range, at_rev, |key, rev| {
            if limit == 0 || keys.len() < limit {
                keys.push((key.to_vec(), rev));
            }
            total += 1;
        });
        (keys, total)
    }

    /// How many keys in `range` exist at `at_rev`.
    pub fn count(&self, range: &KeyRange, at_rev: i64) -> usize {
        let mut total = 0;
        self.visit(range, at_rev, |_, _| total += 1);
        total
    }

    /// Compacts every key index at `at_rev` (see [`KeyIndex::compact`]), removes the keys left
    /// with no revision, and returns the revisions at or below `at_rev` the backend must keep.
    pub fn compact(&mut self, at_rev: i64) -> HashSet<Revision> {
        let mut available = HashSet::new();
        self.tree.retain(|_, ki| {
            ki.compact(at_rev, &mut available);
            !ki.is_empty()
        });
        available
    }

    /// The revisions at or below `at_rev` a compaction there would keep (see [`KeyIndex::keep`]),
    /// without compacting; what the hash of the kept data is computed over.
    pub fn keep(&self, at_rev: i64) -> HashSet<Revision> {
        let mut available = HashSet::new();
        for (_, ki) in self.tree.iter() {
            ki.keep(at_rev, &mut available);
        }
        available
    }

    /// Undoes the changes with main revision `> after_main` to `keys` (a transaction whose batch
    /// write failed), removing keys that are left with no revision.
    pub fn rollback(&mut self, keys: &[Vec<u8>], after_main: i64) {
        for key in keys {
            let emptied = match self.tree.get_mut(key.as_slice()) {
                Some(ki) => ki.rollback(after_main),
                None => false,
            };
            if emptied {
                self.tree.remove(key.as_slice());
            }
        }
    }

    /// Number of keys with any history (live or deleted but not yet compacted away).
    pub fn len(&self) -> usize {
        self.tree.len()
    }

    /// True if no key has any history.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Calls `f` with each key in `range` that exists at `at_rev` and its mod revision, in key
    /// order.
    fn visit(&self, range: &KeyRange, at_rev: i64, mut f: impl FnMut(&[u8], Revision)) {
        match range {
            KeyRange::Single(key) => {
                if let Some((modified, _, _)) = self.get(key, at_rev) {
                    f(key, modified);
                }
            }
            KeyRange::Range { start, end } => {
                let upper = match end {
                    // An empty range; the tree may not accept bounds in the wrong order.
                    Some(end) if end <= start => return,
                    Some(end) => Bound::Excluded(end.as_slice()),
                    None => Bound::Unbounded,
                };
                for (key, ki) in self.tree.range(Bound::Included(start.as_slice()), upper) {
                    if let Some((modified, _, _)) = ki.get(at_rev) {
                        f(key, modified);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    fn range(start: &[u8], end: Option<&[u8]>) -> KeyRange {
        KeyRange::Range {
            start: start.to_vec(),
            end: end.map(<[u8]>::to_vec),
        }
    }

    /// a@2, b@3, c@4, b@5, delete a@6, d@7 (two changes: 7.0 put, 7.1 put).
    fn sample() -> TreeIndex {
        let mut index = TreeIndex::new();
        index.put(b"a", r(2));
        index.put(b"b", r(3));
        index.put(b"c", r(4));
        index.put(b"b", r(5));
        assert_eq!(index.tombstone(b"a", r(6)), Ok(()));
        index.put(b"d", Revision::new(7, 0));
        index.put(b"d", Revision::new(7, 1));
        index
    }

    #[test]
    fn from_etcd_reads_range_end_as_etcd_does() {
        assert_eq!(
            KeyRange::from_etcd(b"k", b""),
            KeyRange::Single(b"k".to_vec())
        );
        assert_eq!(KeyRange::from_etcd(b"k", b"\0"), range(b"k", None));
        assert_eq!(KeyRange::from_etcd(b"\0", b"\0"), range(b"\0", None));
        assert_eq!(KeyRange::from_etcd(b"k", b"l"), range(b"k", Some(b"l")));
    }

    #[test]
    fn contains_follows_the_half_open_range() {
        let single = KeyRange::Single(b"k".to_vec());
        assert!(single.contains(b"k"));
        assert!(!single.contains(b"k0"));

        let prefix = KeyRange::from_etcd(b"k", b"l");
        assert!(prefix.contains(b"k"));
        assert!(prefix.contains(b"k\xff"));
        assert!(!prefix.contains(b"l"));
        assert!(!prefix.contains(b"j"));

        let from = KeyRange::from_etcd(b"k", b"\0");
        assert!(from.contains(b"zzz"));
        assert!(!from.contains(b"a"));

        let all = KeyRange::from_etcd(b"\0", b"\0");
        assert!(all.contains(b"\0") && all.contains(b"a") && all.contains(b"\xff\xff"));

        let backwards = KeyRange::from_etcd(b"l", b"k");
        assert!(!backwards.contains(b"k") && !backwards.contains(b"l"));
    }

    #[test]
    fn get_sees_each_key_as_of_the_revision() {
        let index = sample();
        assert_eq!(index.get(b"a", 1), None);
        assert_eq!(index.get(b"a", 2), Some((r(2), r(2), 1)));
        assert_eq!(index.get(b"a", 6), None);
        assert_eq!(index.get(b"b", 4), Some((r(3), r(3), 1)));
        assert_eq!(index.get(b"b", 5), Some((r(5), r(3), 2)));
        assert_eq!(index.get(b"d", 7), Some((Revision::new(7, 1), r(7), 2)));
        assert_eq!(index.get(b"zz", 7), None);
        assert_eq!(index.len(), 4);
        assert!(!index.is_empty());
    }

    #[test]
    fn tombstone_of_a_missing_or_deleted_key_is_not_found() {
        let mut index = sample();
        assert_eq!(index.tombstone(b"zz", r(8)), Err(KeyIndexError::NotFound));
        assert_eq!(index.tombstone(b"a", r(8)), Err(KeyIndexError::NotFound));
    }

    #[test]
    fn revisions_come_in_key_order_with_limit_and_total() {
        let index = sample();
        let all = KeyRange::from_etcd(b"\0", b"\0");
        assert_eq!(
            index.revisions(&all, 7, 0),
            (vec![r(5), r(4), Revision::new(7, 1)], 3)
        );
        assert_eq!(index.revisions(&all, 7, 2), (vec![r(5), r(4)], 3));
        assert_eq!(index.revisions(&all, 5, 0), (vec![r(2), r(5), r(4)], 3));
        assert_eq!(index.revisions(&all, 3, 1), (vec![r(2)], 2));
        assert_eq!(index.revisions(&all, 1, 0), (vec![], 0));

        let b_to_d = KeyRange::from_etcd(b"b", b"d");
        assert_eq!(index.revisions(&b_to_d, 7, 0), (vec![r(5), r(4)], 2));
        let single = KeyRange::Single(b"c".to_vec());
        assert_eq!(index.revisions(&single, 7, 0), (vec![r(4)], 1));
        let deleted = KeyRange::Single(b"a".to_vec());
        assert_eq!(index.revisions(&deleted, 7, 0), (vec![], 0));
    }

    #[test]
    fn backwards_and_empty_ranges_find_nothing() {
        let index = sample();
        for range in [
            KeyRange::from_etcd(b"d", b"b"),
            KeyRange::from_etcd(b"b", b"b"),
            KeyRange::from_etcd(b"e", b"\0"),
        ] {
            assert_eq!(index.revisions(&range, 7, 0), (vec![], 0), "{range:?}");
            assert_eq!(index.count(&range, 7), 0, "{range:?}");
        }
    }

    #[test]
    fn keys_and_count_agree_with_revisions() {
        let index = sample();
        let from_b = KeyRange::from_etcd(b"b", b"\0");
        assert_eq!(
            index.keys(&from_b, 7, 0),
            (
                vec![
                    (b"b".to_vec(), r(5)),
                    (b"c".to_vec(), r(4)),
                    (b"d".to_vec(), Revision::new(7, 1)),
                ],
                3
            )
        );
        assert_eq!(index.keys(&from_b, 7, 1), (vec![(b"b".to_vec(), r(5))], 3));
        assert_eq!(index.count(&from_b, 7), 3);
        assert_eq!(index.count(&KeyRange::from_etcd(b"\0", b"\0"), 4), 3);
    }

    #[test]
    fn compaction_removes_keys_left_without_revisions() {
        let mut index = sample();
        assert_eq!(index.keep(6), HashSet::from([r(5), r(4)]));
        // The tombstone of a at 6 is kept by compaction at 6 (a watch from 6 sees it) ...
        assert_eq!(index.compact(6), HashSet::from([r(6), r(5), r(4)]));
        assert_eq!(index.len(), 4);
        assert_eq!(index.get(b"b", 6), Some((r(5), r(3), 2)));
        // ... and removed by the next one, with the key.
        assert_eq!(
            index.compact(7),
            HashSet::from([r(5), r(4), Revision::new(7, 1)])
        );
        assert_eq!(index.len(), 3);
        assert_eq!(index.get(b"a", 7), None);
        assert_eq!(index.get(b"d", 7), Some((Revision::new(7, 1), r(7), 2)));
    }

    #[test]
    fn rollback_undoes_a_failed_transaction() {
        let mut index = sample();
        let before: Vec<_> = [&b"a"[..], b"b", b"c", b"d"]
            .iter()
            .map(|key| index.get(key, 100))
            .collect();
        // Transaction 8: re-create a, delete b, create e.
        index.put(b"a", Revision::new(8, 0));
        assert_eq!(index.tombstone(b"b", Revision::new(8, 1)), Ok(()));
        index.put(b"e", Revision::new(8, 2));
        assert_eq!(index.len(), 5);

        let touched = [b"a".to_vec(), b"b".to_vec(), b"e".to_vec(), b"zz".to_vec()];
        index.rollback(&touched, 7);
        assert_eq!(index.len(), 4);
        let after: Vec<_> = [&b"a"[..], b"b", b"c", b"d"]
            .iter()
            .map(|key| index.get(key, 100))
            .collect();
        assert_eq!(after, before);
        assert_eq!(index.get(b"e", 100), None);
        // The index takes the next transaction as if 8 never happened.
        index.put(b"b", r(8));
        assert_eq!(index.get(b"b", 8), Some((r(8), r(3), 3)));
    }

    #[test]
    fn restore_rebuilds_keys_from_their_oldest_surviving_version() {
        let mut index = TreeIndex::new();
        index.restore(b"k", r(3), r(5), 2);
        assert!(index.contains(b"k"));
        assert_eq!(index.get(b"k", 5), Some((r(5), r(3), 2)));
        index.restore(b"k", r(3), r(6), 3);
        assert_eq!(index.get(b"k", 6), Some((r(6), r(3), 3)));
        assert_eq!(index.restore_tombstone(b"k", r(7)), Ok(()));
        assert_eq!(
            index.restore_tombstone(b"k", r(8)),
            Err(KeyIndexError::NotFound)
        );
        assert_eq!(index.get(b"k", 7), None);

        // Only a tombstone left: the key is deleted, but compaction at its revision keeps it.
        assert_eq!(index.restore_tombstone(b"t", r(9)), Ok(()));
        assert!(index.contains(b"t"));
        assert_eq!(index.get(b"t", 9), None);
        assert_eq!(index.generations_of(b"t").map(<[Generation]>::len), Some(2));
        assert!(index.compact(9).contains(&r(9)));
        assert!(index.contains(b"t"));
        index.compact(10);
        assert!(!index.contains(b"t"));
        assert_eq!(index.generations_of(b"t"), None);
    }

    #[test]
    fn many_keys_range_compact_and_roll_back_across_tree_nodes() {
        // Enough keys for the B+tree to have many leaves and internal levels.
        let key = |i: u32| format!("key/{i:05}").into_bytes();
        let mut index = TreeIndex::new();
        for i in 0..3000 {
            index.put(&key(i), r(2 + i64::from(i)));
        }
        // Transaction 3002 deletes every third key.
        for (sub, i) in (0..3000).step_by(3).enumerate() {
            assert_eq!(
                index.tombstone(&key(i), Revision::new(3002, sub as i64)),
                Ok(())
            );
        }
        let prefix = KeyRange::from_etcd(b"key/01", b"key/02");
        let (revs, total) = index.revisions(&prefix, 3002, 10);
        assert_eq!(total, 667);
        assert_eq!(revs.len(), 10);
        assert_eq!(revs[0], r(2 + 1000));
        assert_eq!(index.count(&prefix, 3001), 1000);

        let available = index.compact(3003);
        assert_eq!(available.len(), 2000);
        assert_eq!(index.len(), 2000);
        let all = KeyRange::from_etcd(b"\0", b"\0");
        let (keys, total) = index.keys(&all, 3003, 0);
        assert_eq!(total, 2000);
        assert!(keys.windows(2).all(|pair| pair[0].0 < pair[1].0));

        // Transaction 3004 creates 500 keys and fails.
        let new_keys: Vec<Vec<u8>> = (3000..3500).map(key).collect();
        for (sub, k) in new_keys.iter().enumerate() {
            index.put(k, Revision::new(3004, sub as i64));
        }
        assert_eq!(index.len(), 2500);
        index.rollback(&new_keys, 3003);
        assert_eq!(index.len(), 2000);
        assert_eq!(index.count(&all, 3004), 2000);
    }

    /// A change to one of a few keys: which key, how far the main revision advances (0 = same
    /// transaction, next sub revision), and whether it is a delete.
    fn changes() -> impl Strategy<Value = Vec<(u8, i64, bool)>> {
        prop::collection::vec((0u8..5, 0i64..3, any::<bool>()), 0..40)
    }

    /// One version as the backend would store it.
    struct Record {
        key: Vec<u8>,
        rev: Revision,
        tombstone: bool,
        create_revision: i64,
        version: i64,
    }

    /// Applies `changes` to `index`; returns the backend records written and the last main
    /// revision.
    fn apply(index: &mut TreeIndex, changes: &[(u8, i64, bool)]) -> (Vec<Record>, i64) {
        let mut records = Vec::new();
        let mut rev = Revision::new(1, 0);
        for (i, &(key, step, delete)) in changes.iter().enumerate() {
            rev = if step == 0 && i > 0 {
                Revision::new(rev.main, rev.sub + 1)
            } else {
                Revision::new(rev.main + step.max(1), 0)
            };
            let key = vec![b'a' + key];
            if delete {
                if index.tombstone(&key, rev).is_ok() {
                    records.push(Record {
                        key,
                        rev,
                        tombstone: true,
                        create_revision: 0,
                        version: 0,
                    });
                }
            } else {
                index.put(&key, rev);
                let (_, created, version) = index
                    .get(&key, rev.main)
                    .expect("a key just put exists at its revision");
                records.push(Record {
                    key,
                    rev,
                    tombstone: false,
                    create_revision: created.main,
                    version,
                });
            }
        }
        (records, rev.main)
    }

    fn all_keys() -> Vec<Vec<u8>> {
        (0u8..6).map(|k| vec![b'a' + k]).collect()
    }

    proptest! {
        #[test]
        fn range_reads_match_reading_each_key(
            changes in changes(),
            start in 0u8..6,
            len in 0u8..7,
            at in 0i64..80,
            limit in 0usize..4,
        ) {
            let mut index = TreeIndex::new();
            apply(&mut index, &changes);
            let range = KeyRange::from_etcd(&[b'a' + start], &[b'a' + start + len]);
            let want: Vec<(Vec<u8>, Revision)> = all_keys()
                .into_iter()
                .filter(|key| range.contains(key))
                .filter_map(|key| index.get(&key, at).map(|(rev, _, _)| (key, rev)))
                .collect();
            let limited: Vec<_> = if limit == 0 { want.clone() } else { want.iter().take(limit).cloned().collect() };
            prop_assert_eq!(index.keys(&range, at, limit), (limited.clone(), want.len()));
            let revs: Vec<Revision> = limited.iter().map(|(_, rev)| *rev).collect();
            prop_assert_eq!(index.revisions(&range, at, limit), (revs, want.len()));
            prop_assert_eq!(index.count(&range, at), want.len());
        }

        #[test]
        fn index_restored_from_compacted_backend_reads_the_same(
            changes in changes(),
            compact_at in 1i64..80,
        ) {
            let mut index = TreeIndex::new();
            let (records, last) = apply(&mut index, &changes);
            let compact_at = compact_at.min(last);
            let available = index.compact(compact_at);
            // What the store leaves in the backend: kept revisions and everything newer.
            let backend: BTreeMap<Revision, &Record> = records
                .iter()
                .filter(|rec| rec.rev.main > compact_at || available.contains(&rec.rev))
                .map(|rec| (rec.rev, rec))
                .collect();
            prop_assert_eq!(backend.len(), available.len() + records.iter().filter(|rec| rec.rev.main > compact_at).count());

            let mut restored = TreeIndex::new();
            for rec in backend.values() {
                if rec.tombstone {
                    prop_assert_eq!(restored.restore_tombstone(&rec.key, rec.rev), Ok(()));
                } else {
                    let created = Revision::new(rec.create_revision, 0);
                    restored.restore(&rec.key, created, rec.rev, rec.version);
                }
            }
            prop_assert_eq!(restored.len(), index.len());
            for key in all_keys() {
                for at in compact_at..=last + 1 {
                    let main_only = |got: Option<(Revision, Revision, i64)>| {
                        got.map(|(modified, created, version)| (modified, created.main, version))
                    };
                    prop_assert_eq!(
                        main_only(restored.get(&key, at)),
                        main_only(index.get(&key, at)),
                        "key {:?} at {}", key, at
                    );
                }
            }
        }

        #[test]
        fn rollback_restores_every_key(
            earlier in changes(),
            later in changes(),
        ) {
            let mut index = TreeIndex::new();
            let (_, last) = apply(&mut index, &earlier);
            let snapshot: Vec<_> = all_keys()
                .iter()
                .map(|key| (0..=last + 1).map(|at| index.get(key, at)).collect::<Vec<_>>())
                .collect();
            let keys_before = index.len();
            // The later changes as one more transaction after `last`.
            let mut touched = Vec::new();
            for (i, &(key, _, delete)) in later.iter().enumerate() {
                let key = vec![b'a' + key];
                let rev = Revision::new(last + 1, i as i64);
                if delete {
                    let _ = index.tombstone(&key, rev);
                } else {
                    index.put(&key, rev);
                }
                touched.push(key);
            }
            index.rollback(&touched, last);
            prop_assert_eq!(index.len(), keys_before);
            let after: Vec<_> = all_keys()
                .iter()
                .map(|key| (0..=last + 1).map(|at| index.get(key, at)).collect::<Vec<_>>())
                .collect();
            prop_assert_eq!(after, snapshot);
        }
    }
}
