//! The history of one key: its revisions, grouped into generations (a port of etcd's
//! `mvcc/key_index.go`).

use std::collections::HashSet;

use crate::mvcc::revision::Revision;

/// Why a key index refused a change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyIndexError {
    /// The key has no live generation: it was never written, or its last change was a delete.
    #[error("mvcc: revision not found")]
    NotFound,
}

/// One life of a key: from the put that created it to the delete (tombstone) that ended it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Generation {
    /// Number of changes in this life (each put and the closing tombstone count one); the version
    /// of the key at `revs[i]` is `version - (revs.len() - 1 - i)`, which stays true when
    /// compaction drops revisions from the front.
    pub version: i64,
    /// Revision of the put that created the key in this life (it survives compaction of the put).
    pub created: Revision,
    /// Revisions of the changes, oldest first; in a closed generation the last is the tombstone.
    pub revs: Vec<Revision>,
}

impl Generation {
    /// True if the generation holds no revision: a key deleted and not yet re-created.
    pub fn is_empty(&self) -> bool {
        self.revs.is_empty()
    }

    /// Position of the newest revision with `main <= at_rev`.
    fn find_revision_index(&self, at_rev: i64) -> Option<usize> {
        self.revs
            .partition_point(|rev| rev.main <= at_rev)
            .checked_sub(1)
    }
}

/// The revisions of one key in the backend, grouped into generations.
///
/// A key's first put opens a generation; later puts append to it; a delete appends a tombstone
/// revision, which closes the generation, and starts an empty one that the next put fills. Every
/// revision names one version of the key in the backend.
///
/// For example `put(1.0); put(2.0); tombstone(3.0); put(4.0); tombstone(5.0)` gives
///
/// ```text
/// modified: 5.0
/// generations:
///     {empty}
///     {4.0, 5.0(t)}        created 4.0, version 2
///     {1.0, 2.0, 3.0(t)}   created 1.0, version 3
/// ```
///
/// and [`KeyIndex::get`] answers, by revision: 0 → none; 1 → (1.0, created 1.0, version 1);
/// 2 → (2.0, 1.0, 2); 3 → none (deleted); 4 → (4.0, 4.0, 1); 5 and later → none.
///
/// Compacting at `n` drops every revision that no read at or above `n` can see: in each
/// generation it keeps the newest revision `<= n` and everything after it, and it drops whole
/// generations that ended before `n`. A tombstone at exactly `n` is kept, so a watch that starts
/// at the compacted revision still sees the delete (as etcd does since etcd-io/etcd#18274).
/// Compacting the example, one step after the other:
///
/// ```text
/// compact(1): unchanged                            available {1.0}
/// compact(2): {empty} {4.0, 5.0(t)} {2.0, 3.0(t)}  available {2.0}
/// compact(3): {empty} {4.0, 5.0(t)} {3.0(t)}       available {3.0} (keep() leaves it out)
/// compact(4): {empty} {4.0, 5.0(t)}                available {4.0}
/// compact(5): {empty} {5.0(t)}                     available {5.0} (keep() leaves it out)
/// compact(6): {empty}                              available {}: the key index is empty
///                                                  and the tree index removes it
/// ```
///
/// `available` collects the revisions the backend must keep at or below `n`; the store deletes
/// every other version at or below `n`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KeyIndex {
    /// The newest revision given to put or tombstone; every later one must be greater.
    modified: Revision,
    /// The key's lives, oldest first. Every generation but the last is non-empty and ends in its
    /// tombstone; the last is open (non-empty, no tombstone) or empty (the key is deleted).
    /// Revisions strictly increase across all of them. A new key index has none.
    generations: Vec<Generation>,
}

impl KeyIndex {
    /// A key index with no history; the first [`KeyIndex::put`] creates the key.
    pub fn new() -> Self {
        Self::default()
    }

    /// A key index rebuilt at start-up from the oldest version of the key left in the backend: a
    /// put at `modified` in the life created at `created`, where it was the `version`th change.
    pub fn restored(created: Revision, modified: Revision, version: i64) -> Self {
        KeyIndex {
            modified,
            generations: vec![Generation {
                version,
                created,
                revs: vec![modified],
            }],
        }
    }

    /// A key index rebuilt at start-up when the oldest version of the key left in the backend is
    /// a tombstone (compaction removed the puts before it): a closed life holding only `rev`.
    /// Its creation revision is unknown and left at zero, as etcd does.
    pub fn restored_tombstone(rev: Revision) -> Self {
        let mut ki = Self::restored(Revision::default(), rev, 1);
        push_compact(&mut ki.generations, Generation::default());
        ki
    }

    /// Records a put of the key at `rev`, creating it if its last life has ended.
    ///
    /// # Panics
    /// If `rev` is not greater than every revision recorded before: revisions only increase.
    pub fn put(&mut self, rev: Revision) {
        assert!(
            rev > self.modified,
            "KeyIndex::put: revision {rev:?} is not after the newest revision {:?}; \
             revisions of a key must increase",
            self.modified
        );
        if self.generations.is_empty() {
            push_compact(&mut self.generations, Generation::default());
        }
        let last = self.generations.len() - 1;
        let g = &mut self.generations[last];
        if g.revs.is_empty() {
            g.created = rev;
        }
        push_compact(&mut g.revs, rev);
        g.version += 1;
        self.modified = rev;
    }

    /// Records a delete of the key at `rev`: appends the tombstone to the live generation and
    /// starts an empty one.
    ///
    /// Returns [`KeyIndexError::NotFound`] if the key has no live generation.
    ///
    /// # Panics
    /// As [`KeyIndex::put`], if `rev` is not after every revision recorded before.
    pub fn tombstone(&mut self, rev: Revision) -> Result<(), KeyIndexError> {
        match self.generations.last() {
            Some(g) if !g.is_empty() => {}
            _ => return Err(KeyIndexError::NotFound),
        }
        self.put(rev);
        push_compact(&mut self.generations, Generation::default());
        Ok(())
    }

    /// `(mod_revision, create_revision, version)` of the key as a read at main revision `at_rev`
    /// sees it, or `None` if the key did not exist then.
    pub fn get(&self, at_rev: i64) -> Option<(Revision, Revision, i64)> {
        let g = self.find_generation(at_rev)?;
        let n = g.find_revision_index(at_rev)?;
        let newer = (g.revs.len() - n - 1) as i64;
        Some((g.revs[n], g.created, g.version - newer))
    }

    /// Every revision with main revision `>= rev`, oldest first, keeping only the last one of
    /// each main revision (the others are not visible outside their transaction).
    pub fn since(&self, rev: i64) -> Vec<Revision> {
        let since = Revision::new(rev, 0);
        let mut revs: Vec<Revision> = Vec::new();
        let newer = self
            .generations
            .iter()
            .skip_while(|g| g.revs.last().is_none_or(|newest| *newest < since))
            .flat_map(|g| g.revs.iter().copied())
            .filter(|r| *r >= since);
        for r in newer {
            match revs.last_mut() {
                Some(prev) if prev.main == r.main => *prev = r,
                _ => revs.push(r),
            }
        }
        revs
    }

    /// Drops the revisions that no read at or above `at_rev` can see, and adds to `available` the
    /// revision `<= at_rev` that survives (if any). Generations that ended before `at_rev` are
    /// dropped; the key index may be left empty, and then the caller removes it.
    pub fn compact(&mut self, at_rev: i64, available: &mut HashSet<Revision>) {
        if self.generations.is_empty() {
            return;
        }
        let (gen_idx, rev_idx) = self.do_compact(at_rev, available);
        if let Some(rev_idx) = rev_idx {
            self.generations[gen_idx].revs.drain(..rev_idx);
        }
        self.generations.drain(..gen_idx);
    }

    /// Adds to `available` what [`KeyIndex::compact`] at `at_rev` would keep, without changing
    /// the key index — except a tombstone at exactly `at_rev`, which compaction keeps but this
    /// leaves out, as etcd does, so hashes of the kept data stay the same across etcd versions.
    pub fn keep(&self, at_rev: i64, available: &mut HashSet<Revision>) {
        if self.is_empty() {
            return;
        }
        let (gen_idx, rev_idx) = self.do_compact(at_rev, available);
        let g = &self.generations[gen_idx];
        if let Some(rev_idx) = rev_idx {
            if rev_idx == g.revs.len() - 1 && gen_idx != self.generations.len() - 1 {
                available.remove(&g.revs[rev_idx]);
            }
        }
    }

    /// Undoes every change with main revision `> after_main` (a transaction whose batch write
    /// failed after its index changes were applied), leaving the key index as it was before them.
    ///
    /// Returns true if the key index is left with no revision at all, and should be removed.
    pub fn rollback(&mut self, after_main: i64) -> bool {
        while self.modified.main > after_main {
            // A closed key: the newest change is the tombstone that closed the generation before
            // the empty one; dropping the empty one makes it the last again.
            if self.generations.len() > 1
                && self.generations.last().is_some_and(Generation::is_empty)
            {
                self.generations.pop();
            }
            let Some(g) = self.generations.last_mut() else {
                break;
            };
            if g.revs.pop().is_none() {
                // Only an empty generation is left: nothing more to undo.
                break;
            }
            g.version -= 1;
            if g.revs.is_empty() {
                // The undone put created this life; the key was deleted (or new) before it.
                *g = Generation::default();
                if self.generations.len() == 1 {
                    self.generations.clear();
                }
            }
            self.modified = self.newest_revision().unwrap_or_default();
        }
        self.is_empty()
    }

    /// True if the key index holds no revision: a new key index, or one compacted away.
    pub fn is_empty(&self) -> bool {
        self.generations.iter().all(Generation::is_empty)
    }

    /// The newest revision given to put or tombstone.
    pub fn modified(&self) -> Revision {
        self.modified
    }

    /// The key's generations, oldest first.
    pub fn generations(&self) -> &[Generation] {
        &self.generations
    }

    fn newest_revision(&self) -> Option<Revision> {
        self.generations
            .iter()
            .rev()
            .find_map(|g| g.revs.last().copied())
    }

    /// The generation the key was live in at `at_rev`, or `None` if it did not exist then.
    fn find_generation(&self, at_rev: i64) -> Option<&Generation> {
        let last = self.generations.len().checked_sub(1)?;
        for (i, g) in self.generations.iter().enumerate().rev() {
            let (Some(first), Some(newest)) = (g.revs.first(), g.revs.last()) else {
                continue;
            };
            // A closed generation whose tombstone is at or before at_rev: the key was deleted
            // then, and every earlier generation is older still.
            if i != last && newest.main <= at_rev {
                return None;
            }
            if first.main <= at_rev {
                return Some(g);
            }
        }
        None
    }

    /// The part compact and keep share: finds the first generation a read at `at_rev` or later
    /// can see, and in it the newest revision `<= at_rev`, which it adds to `available`.
    ///
    /// A generation whose tombstone is at exactly `at_rev` is that generation — unless the key
    /// was re-created later in the same main revision (etcd-io/etcd#22376): then the tombstone is
    /// superseded and the next generation is the one to keep.
    ///
    /// Needs at least one generation.
    fn do_compact(&self, at_rev: i64, available: &mut HashSet<Revision>) -> (usize, Option<usize>) {
        let last = self.generations.len() - 1;
        let mut gen_idx = 0;
        while gen_idx < last {
            if let Some(tomb) = self.generations[gen_idx].revs.last() {
                if tomb.main > at_rev {
                    break;
                }
                let recreated_in_same_revision = self.generations[gen_idx + 1]
                    .revs
                    .first()
                    .is_some_and(|first| first.main == at_rev);
                if tomb.main == at_rev && !recreated_in_same_revision {
                    break;
                }
            }
            gen_idx += 1;
        }
        let rev_idx = self.generations[gen_idx].find_revision_index(at_rev);
        if let Some(rev_idx) = rev_idx {
            available.insert(self.generations[gen_idx].revs[rev_idx]);
        }
        (gen_idx, rev_idx)
    }
}

/// Pushes onto `v`, growing its capacity 1, 2, 4, 8 … instead of `Vec`'s first step to 4.
/// Most keys have one generation of a few revisions; at a million keys the difference is
/// about 200 bytes per key (measured by the `store` bench's index memory figure).
fn push_compact<T>(v: &mut Vec<T>, item: T) {
    if v.len() == v.capacity() {
        v.reserve_exact(v.len().max(1));
    }
    v.push(item);
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(main: i64) -> Revision {
        Revision::new(main, 0)
    }

    fn gen(created: Revision, version: i64, revs: &[Revision]) -> Generation {
        Generation {
            version,
            created,
            revs: revs.to_vec(),
        }
    }

    fn key_index(modified: Revision, generations: Vec<Generation>) -> KeyIndex {
        KeyIndex {
            modified,
            generations,
        }
    }

    fn set(revs: &[Revision]) -> HashSet<Revision> {
        revs.iter().copied().collect()
    }

    /// etcd's `newTestKeyIndex`:
    ///
    /// ```text
    /// {empty}
    /// {14.0, 15.1, 16.0(t)}
    /// {8.0, 10.0, 12.0(t)}
    /// {2.0, 4.0, 6.0(t)}
    /// ```
    fn test_key_index() -> KeyIndex {
        let mut ki = KeyIndex::new();
        ki.put(r(2));
        ki.put(r(4));
        assert_eq!(ki.tombstone(r(6)), Ok(()));
        ki.put(r(8));
        ki.put(r(10));
        assert_eq!(ki.tombstone(r(12)), Ok(()));
        ki.put(r(14));
        ki.put(Revision::new(15, 1));
        assert_eq!(ki.tombstone(r(16)), Ok(()));
        ki
    }

    #[test]
    fn put_appends_to_the_open_generation() {
        let mut ki = KeyIndex::new();
        ki.put(r(5));
        assert_eq!(ki, key_index(r(5), vec![gen(r(5), 1, &[r(5)])]));
        ki.put(r(7));
        assert_eq!(ki, key_index(r(7), vec![gen(r(5), 2, &[r(5), r(7)])]));
    }

    #[test]
    #[should_panic(expected = "revisions of a key must increase")]
    fn put_at_an_old_revision_is_a_broken_invariant() {
        let mut ki = KeyIndex::new();
        ki.put(r(5));
        ki.put(r(5));
    }

    #[test]
    fn tombstone_closes_the_generation_and_starts_an_empty_one() {
        let mut ki = KeyIndex::new();
        assert_eq!(ki.tombstone(r(1)), Err(KeyIndexError::NotFound));
        ki.put(r(5));
        assert_eq!(ki.tombstone(r(7)), Ok(()));
        assert_eq!(
            ki,
            key_index(
                r(7),
                vec![gen(r(5), 2, &[r(5), r(7)]), Generation::default()]
            )
        );

        ki.put(r(8));
        ki.put(r(9));
        assert_eq!(ki.tombstone(r(15)), Ok(()));
        assert_eq!(
            ki,
            key_index(
                r(15),
                vec![
                    gen(r(5), 2, &[r(5), r(7)]),
                    gen(r(8), 3, &[r(8), r(9), r(15)]),
                    Generation::default(),
                ]
            )
        );
        assert_eq!(ki.tombstone(r(16)), Err(KeyIndexError::NotFound));
        assert_eq!(ki.modified(), r(15));
    }

    #[test]
    fn get_answers_at_each_revision() {
        let mut ki = test_key_index();
        ki.compact(4, &mut HashSet::new());
        let none = None;
        let table = [
            (17, none),
            (16, none),
            (15, Some((Revision::new(15, 1), r(14), 2))),
            (14, Some((r(14), r(14), 1))),
            (13, none),
            (12, none),
            (11, Some((r(10), r(8), 2))),
            (10, Some((r(10), r(8), 2))),
            (9, Some((r(8), r(8), 1))),
            (8, Some((r(8), r(8), 1))),
            (7, none),
            (6, none),
            (5, Some((r(4), r(2), 2))),
            (4, Some((r(4), r(2), 2))),
            (3, none),
            (2, none),
            (1, none),
            (0, none),
        ];
        for (at, want) in table {
            assert_eq!(ki.get(at), want, "get({at})");
        }
        assert_eq!(KeyIndex::new().get(1), None);
    }

    #[test]
    fn since_returns_the_last_revision_of_each_main_revision() {
        let mut ki = test_key_index();
        ki.compact(4, &mut HashSet::new());
        let all = [
            r(4),
            r(6),
            r(8),
            r(10),
            r(12),
            r(14),
            Revision::new(15, 1),
            r(16),
        ];
        let table: [(i64, &[Revision]); 18] = [
            (17, &[]),
            (16, &all[7..]),
            (15, &all[6..]),
            (14, &all[5..]),
            (13, &all[5..]),
            (12, &all[4..]),
            (11, &all[4..]),
            (10, &all[3..]),
            (9, &all[3..]),
            (8, &all[2..]),
            (7, &all[2..]),
            (6, &all[1..]),
            (5, &all[1..]),
            (4, &all),
            (3, &all),
            (2, &all),
            (1, &all),
            (0, &all),
        ];
        for (rev, want) in table {
            assert_eq!(ki.since(rev), want, "since({rev})");
        }

        let mut same_txn = KeyIndex::new();
        same_txn.put(Revision::new(3, 0));
        same_txn.put(Revision::new(3, 1));
        assert_eq!(same_txn.tombstone(Revision::new(3, 2)), Ok(()));
        same_txn.put(Revision::new(3, 3));
        same_txn.put(Revision::new(4, 0));
        assert_eq!(same_txn.since(0), [Revision::new(3, 3), r(4)]);
        assert_eq!(KeyIndex::new().since(0), []);
    }

    #[test]
    fn find_generation_skips_the_gaps_between_lives() {
        let ki = test_key_index();
        let g = ki.generations();
        let table = [
            (0, None),
            (1, None),
            (2, Some(&g[0])),
            (3, Some(&g[0])),
            (4, Some(&g[0])),
            (5, Some(&g[0])),
            (6, None),
            (7, None),
            (8, Some(&g[1])),
            (9, Some(&g[1])),
            (10, Some(&g[1])),
            (11, Some(&g[1])),
            (12, None),
            (13, None),
            (14, Some(&g[2])),
            (15, Some(&g[2])),
            (16, None),
            (17, None),
        ];
        for (at, want) in table {
            let found = ki.find_generation(at);
            assert!(
                match (found, want) {
                    (Some(found), Some(want)) => std::ptr::eq(found, want),
                    (found, want) => found.is_none() && want.is_none(),
                },
                "find_generation({at}) = {found:?}, want {want:?}"
            );
        }
    }

    /// etcd's `TestKeyIndexCompactAndKeep`: what compacting the test key index at each revision
    /// leaves, and which revisions it keeps.
    fn compaction_table() -> Vec<(i64, KeyIndex, HashSet<Revision>)> {
        let g0 = |revs: &[Revision]| gen(r(2), 3, revs);
        let g1 = |revs: &[Revision]| gen(r(8), 3, revs);
        let g2 = |revs: &[Revision]| gen(r(14), 3, revs);
        let r15 = Revision::new(15, 1);
        let e = Generation::default;
        let (f0, f1, f2) = (
            g0(&[r(2), r(4), r(6)]),
            g1(&[r(8), r(10), r(12)]),
            g2(&[r(14), r15, r(16)]),
        );
        let row = |at: i64, generations: Vec<Generation>, available: &[Revision]| {
            (at, key_index(r(16), generations), set(available))
        };
        vec![
            row(1, vec![f0.clone(), f1.clone(), f2.clone(), e()], &[]),
            row(2, vec![f0.clone(), f1.clone(), f2.clone(), e()], &[r(2)]),
            row(3, vec![f0.clone(), f1.clone(), f2.clone(), e()], &[r(2)]),
            row(
                4,
                vec![g0(&[r(4), r(6)]), f1.clone(), f2.clone(), e()],
                &[r(4)],
            ),
            row(
                5,
                vec![g0(&[r(4), r(6)]), f1.clone(), f2.clone(), e()],
                &[r(4)],
            ),
            row(6, vec![g0(&[r(6)]), f1.clone(), f2.clone(), e()], &[r(6)]),
            row(7, vec![f1.clone(), f2.clone(), e()], &[]),
            row(8, vec![f1.clone(), f2.clone(), e()], &[r(8)]),
            row(9, vec![f1.clone(), f2.clone(), e()], &[r(8)]),
            row(10, vec![g1(&[r(10), r(12)]), f2.clone(), e()], &[r(10)]),
            row(11, vec![g1(&[r(10), r(12)]), f2.clone(), e()], &[r(10)]),
            row(12, vec![g1(&[r(12)]), f2.clone(), e()], &[r(12)]),
            row(13, vec![f2.clone(), e()], &[]),
            row(14, vec![f2.clone(), e()], &[r(14)]),
            row(15, vec![g2(&[r15, r(16)]), e()], &[r15]),
            row(16, vec![g2(&[r(16)]), e()], &[r(16)]),
            row(17, vec![e()], &[]),
        ]
    }

    /// True if `at` is the main revision of one of the key's tombstones.
    fn is_tombstone_rev(ki: &KeyIndex, at: i64) -> bool {
        let closed = &ki.generations[..ki.generations.len().saturating_sub(1)];
        closed
            .iter()
            .any(|g| g.revs.last().is_some_and(|tomb| tomb.main == at))
    }

    /// Checks keep then compact at `at` on `ki` against the table's row.
    fn check_keep_and_compact(
        ki: &mut KeyIndex,
        at: i64,
        want_ki: &KeyIndex,
        want_available: &HashSet<Revision>,
    ) {
        let before = ki.clone();
        let mut kept = HashSet::new();
        ki.keep(at, &mut kept);
        assert_eq!(*ki, before, "keep({at}) changed the key index");
        if is_tombstone_rev(ki, at) {
            assert_eq!(kept, set(&[]), "keep({at}) kept the tombstone at {at}");
        } else {
            assert_eq!(&kept, want_available, "keep({at})");
        }

        let mut available = HashSet::new();
        ki.compact(at, &mut available);
        assert_eq!(ki, want_ki, "compact({at})");
        assert_eq!(&available, want_available, "compact({at}) available");
    }

    #[test]
    fn compaction_one_revision_after_the_other() {
        let mut ki = test_key_index();
        for (at, want_ki, want_available) in compaction_table() {
            check_keep_and_compact(&mut ki, at, &want_ki, &want_available);
        }
    }

    #[test]
    fn compaction_jumping_over_tombstones() {
        let mut ki = test_key_index();
        for (at, want_ki, want_available) in compaction_table() {
            if !is_tombstone_rev(&ki, at) {
                check_keep_and_compact(&mut ki, at, &want_ki, &want_available);
            }
        }
    }

    #[test]
    fn compaction_once_at_each_revision() {
        for (at, want_ki, want_available) in compaction_table() {
            let mut ki = test_key_index();
            check_keep_and_compact(&mut ki, at, &want_ki, &want_available);
        }
    }

    #[test]
    fn compaction_beyond_the_newest_revision_keeps_the_live_one() {
        let mut ki = KeyIndex::new();
        ki.put(r(1));
        ki.put(r(2));
        let mut available = HashSet::new();
        ki.compact(3, &mut available);
        assert_eq!(ki, key_index(r(2), vec![gen(r(1), 2, &[r(2)])]));
        assert_eq!(available, set(&[r(2)]));
    }

    #[test]
    fn compaction_keeps_a_key_recreated_in_the_compacted_revision() {
        // Deleted and re-created in one transaction (etcd-io/etcd#22376): the re-created value
        // is live at the compacted revision, the tombstone before it is superseded.
        let mut ki = KeyIndex::new();
        ki.put(Revision::new(3, 89));
        assert_eq!(ki.tombstone(r(4)), Ok(()));
        ki.put(Revision::new(4, 145));
        let live = Revision::new(4, 145);

        let mut kept = HashSet::new();
        ki.keep(4, &mut kept);
        assert_eq!(kept, set(&[live]));
        let mut available = HashSet::new();
        ki.compact(4, &mut available);
        assert_eq!(available, set(&[live]));
        assert_eq!(ki, key_index(live, vec![gen(live, 1, &[live])]));
        assert_eq!(ki.get(4), Some((live, live, 1)));
    }

    #[test]
    fn compaction_keeps_the_last_tombstone_of_the_compacted_revision() {
        // Deleted, re-created and deleted again in one transaction.
        let mut ki = KeyIndex::new();
        ki.put(r(1));
        assert_eq!(ki.tombstone(r(2)), Ok(()));
        ki.put(Revision::new(2, 1));
        assert_eq!(ki.tombstone(Revision::new(2, 2)), Ok(()));

        let mut kept = HashSet::new();
        ki.keep(2, &mut kept);
        assert_eq!(kept, set(&[]));
        let mut available = HashSet::new();
        ki.compact(2, &mut available);
        assert_eq!(available, set(&[Revision::new(2, 2)]));
        assert_eq!(
            ki,
            key_index(
                Revision::new(2, 2),
                vec![
                    gen(Revision::new(2, 1), 2, &[Revision::new(2, 2)]),
                    Generation::default(),
                ]
            )
        );
    }

    #[test]
    fn compaction_keeps_a_tombstone_at_the_compacted_revision() {
        // etcd-io/etcd#18274: a watch from the compacted revision must still see the delete.
        let mut ki = KeyIndex::new();
        ki.put(r(2));
        ki.put(r(3));
        assert_eq!(ki.tombstone(r(4)), Ok(()));
        let mut kept = HashSet::new();
        ki.keep(4, &mut kept);
        assert_eq!(kept, set(&[]));
        let mut available = HashSet::new();
        ki.compact(4, &mut available);
        assert_eq!(available, set(&[r(4)]));
        assert_eq!(
            ki,
            key_index(r(4), vec![gen(r(2), 3, &[r(4)]), Generation::default()])
        );
        assert!(!ki.is_empty());

        // Re-created in a later revision: the tombstone is still kept.
        let mut ki = KeyIndex::new();
        ki.put(r(1));
        assert_eq!(ki.tombstone(r(2)), Ok(()));
        ki.put(r(3));
        let mut kept = HashSet::new();
        ki.keep(2, &mut kept);
        assert_eq!(kept, set(&[]));
        let mut available = HashSet::new();
        ki.compact(2, &mut available);
        assert_eq!(available, set(&[r(2)]));
        assert_eq!(
            ki,
            key_index(r(3), vec![gen(r(1), 2, &[r(2)]), gen(r(3), 1, &[r(3)])])
        );
    }

    #[test]
    fn documented_example_compacts_as_described() {
        let mut ki = KeyIndex::new();
        ki.put(r(1));
        ki.put(r(2));
        assert_eq!(ki.tombstone(r(3)), Ok(()));
        ki.put(r(4));
        assert_eq!(ki.tombstone(r(5)), Ok(()));
        let first = gen(r(1), 3, &[r(1), r(2), r(3)]);
        let second = gen(r(4), 2, &[r(4), r(5)]);
        let empty = Generation::default();
        assert_eq!(
            ki,
            key_index(r(5), vec![first.clone(), second.clone(), empty.clone()])
        );
        let reads = [
            (0, None),
            (1, Some((r(1), r(1), 1))),
            (2, Some((r(2), r(1), 2))),
            (3, None),
            (4, Some((r(4), r(4), 1))),
            (5, None),
            (6, None),
        ];
        for (at, want) in reads {
            assert_eq!(ki.get(at), want, "get({at})");
        }

        let first_from = |revs: &[Revision]| gen(r(1), 3, revs);
        let (f, s, e) = (first, second, empty);
        let steps = [
            (1, vec![f.clone(), s.clone(), e.clone()], vec![r(1)]),
            (
                2,
                vec![first_from(&[r(2), r(3)]), s.clone(), e.clone()],
                vec![r(2)],
            ),
            (
                3,
                vec![first_from(&[r(3)]), s.clone(), e.clone()],
                vec![r(3)],
            ),
            (4, vec![s.clone(), e.clone()], vec![r(4)]),
            (5, vec![gen(r(4), 2, &[r(5)]), e.clone()], vec![r(5)]),
            (6, vec![e.clone()], vec![]),
        ];
        for (at, generations, available) in steps {
            let mut got = HashSet::new();
            ki.compact(at, &mut got);
            assert_eq!(ki.generations(), generations, "compact({at})");
            assert_eq!(got, set(&available), "compact({at}) available");
        }
        assert!(ki.is_empty());
    }

    #[test]
    fn restored_tombstone_reads_as_deleted_and_is_compacted_away() {
        let mut ki = KeyIndex::restored_tombstone(r(16));
        for at in 16..=20 {
            assert_eq!(ki.get(at), None);
        }
        let mut kept = HashSet::new();
        let _ = ki.do_compact(16, &mut kept);
        assert_eq!(kept, set(&[r(16)]));

        ki.put(r(17));
        ki.put(r(18));
        assert_eq!(ki.since(16), [r(16), r(17), r(18)]);
        ki.compact(17, &mut HashSet::new());
        assert_eq!(ki.generations().len(), 1);
        assert_eq!(ki.generations()[0].revs, [r(17), r(18)]);
    }

    #[test]
    fn restored_key_keeps_its_creation_and_version() {
        let mut ki = KeyIndex::restored(r(5), r(7), 2);
        assert_eq!(ki, key_index(r(7), vec![gen(r(5), 2, &[r(7)])]));
        assert_eq!(ki.get(7), Some((r(7), r(5), 2)));
        ki.put(r(9));
        assert_eq!(ki.get(9), Some((r(9), r(5), 3)));
    }

    #[test]
    fn is_empty_means_no_revision_at_all() {
        assert!(KeyIndex::new().is_empty());
        assert!(key_index(r(16), vec![Generation::default()]).is_empty());
        assert!(!key_index(r(2), vec![gen(r(1), 2, &[r(2)])]).is_empty());
        assert!(!KeyIndex::restored_tombstone(r(3)).is_empty());
    }

    #[test]
    fn rollback_of_a_tombstone_reopens_the_generation() {
        let mut ki = KeyIndex::new();
        ki.put(r(2));
        ki.put(r(3));
        let before = ki.clone();
        assert_eq!(ki.tombstone(r(4)), Ok(()));
        assert!(!ki.rollback(3));
        assert_eq!(ki, before);
    }

    #[test]
    fn rollback_of_a_recreation_leaves_the_key_deleted() {
        let mut ki = KeyIndex::new();
        ki.put(r(2));
        assert_eq!(ki.tombstone(r(3)), Ok(()));
        let before = ki.clone();
        ki.put(Revision::new(4, 0));
        ki.put(Revision::new(4, 1));
        assert!(!ki.rollback(3));
        assert_eq!(ki, before);
        assert_eq!(ki.get(4), None);
    }

    #[test]
    fn rollback_of_the_first_put_empties_the_key_index() {
        let mut ki = KeyIndex::new();
        ki.put(Revision::new(5, 0));
        assert_eq!(ki.tombstone(Revision::new(5, 1)), Ok(()));
        ki.put(Revision::new(5, 2));
        assert!(ki.rollback(4));
        assert_eq!(ki, KeyIndex::new());
    }

    #[test]
    fn rollback_keeps_changes_at_or_before_after_main() {
        let mut ki = test_key_index();
        let before = ki.clone();
        assert!(!ki.rollback(16));
        assert!(!ki.rollback(100));
        assert_eq!(ki, before);
    }

    /// A history step: 0 continues the current transaction (next sub revision), otherwise the
    /// main revision advances by that much; and whether the change is a delete.
    fn history() -> impl Strategy<Value = Vec<(i64, bool)>> {
        prop::collection::vec((0i64..3, any::<bool>()), 0..24)
    }

    /// Applies `ops` with main revisions after `after_main`; returns the last main revision used.
    fn apply(ki: &mut KeyIndex, ops: &[(i64, bool)], after_main: i64) -> i64 {
        let mut rev = Revision::new(after_main, 0);
        for (i, &(step, delete)) in ops.iter().enumerate() {
            rev = if step == 0 && i > 0 {
                Revision::new(rev.main, rev.sub + 1)
            } else {
                Revision::new(rev.main + step.max(1), 0)
            };
            if delete {
                // Deleting a key that is not live is refused and changes nothing.
                let _ = ki.tombstone(rev);
            } else {
                ki.put(rev);
            }
        }
        rev.main
    }

    proptest! {
        #[test]
        fn rollback_undoes_later_changes(
            earlier in history(),
            compact_at in 0i64..48,
            later in history(),
            gap in 0i64..3,
        ) {
            let mut ki = KeyIndex::new();
            let last = apply(&mut ki, &earlier, 0);
            if compact_at <= last {
                ki.compact(compact_at, &mut HashSet::new());
            }
            if ki.is_empty() {
                // The tree index removes a key index that compaction left empty.
                ki = KeyIndex::new();
            }
            let before = ki.clone();
            let after = last + gap;
            apply(&mut ki, &later, after);
            prop_assert_eq!(ki.rollback(after), before.is_empty());
            prop_assert_eq!(ki, before);
        }

        #[test]
        fn compaction_preserves_reads_at_and_after_its_revision(
            ops in history(),
            at in 0i64..48,
        ) {
            let mut ki = KeyIndex::new();
            let last = apply(&mut ki, &ops, 0);
            let before = ki.clone();
            let mut kept = HashSet::new();
            ki.keep(at, &mut kept);
            let mut available = HashSet::new();
            ki.compact(at, &mut available);

            for read_at in at..=last + 1 {
                prop_assert_eq!(ki.get(read_at), before.get(read_at), "get({})", read_at);
                prop_assert_eq!(ki.since(read_at), before.since(read_at), "since({})", read_at);
            }
            if let Some((modified, _, _)) = before.get(at) {
                prop_assert!(kept.contains(&modified));
            }
            // keep() differs from compact only by a tombstone at `at`.
            prop_assert!(kept.is_subset(&available));
            for rev in available.difference(&kept) {
                prop_assert_eq!(rev.main, at);
            }
            let remaining: Vec<Revision> =
                ki.generations().iter().flat_map(|g| g.revs.iter().copied()).collect();
            for rev in &available {
                prop_assert!(rev.main <= at && remaining.contains(rev));
            }
            let newer: Vec<Revision> = before
                .generations()
                .iter()
                .flat_map(|g| g.revs.iter().copied())
                .filter(|rev| rev.main > at)
                .collect();
            prop_assert!(newer.iter().all(|rev| remaining.contains(rev)));
            // Compacted revisions <= at: only the kept ones remain.
            prop_assert!(remaining.iter().filter(|rev| rev.main <= at).all(|rev| available.contains(rev)));
        }
    }
}
