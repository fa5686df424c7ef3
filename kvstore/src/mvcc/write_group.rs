//! Write groups: write transactions applied one after another and made durable by one RocksDB
//! write.
//!
//! Raft applies the commands of a batch entry in order, each a transaction of its own with its
//! own revision and its own answer. Committed one by one, each paid a RocksDB write, and with it
//! the store's revision and the applied position in `meta`: four memtable inserts for one put,
//! three of them overwriting the same few keys. In a group each transaction still changes the
//! index at once, reads what the ones before it wrote (their values are kept here until the
//! write), and gets the answer it would have got alone; but the batches are concatenated, the
//! metadata is written once, and readers, watchers and the lease table see the transactions only
//! after that one write, in revision order, as if each had committed alone.
//!
//! A group is open on one thread (the state machine's) and holds the writer lock throughout:
//! [`KvStore::write`] on that thread joins it, any other writer waits for it to end. Dropping a
//! group without [`WriteGroup::end`] undoes the index changes of everything in it; nothing of it
//! reached the disk. A crash before the end loses the whole group, which the Raft state machine
//! re-applies from the position it recorded before the group.
//!
//! A transaction in a group must not read what only publishing would show: the lease table
//! (grants, revokes), the store's published revision (read-only transactions read at it,
//! compaction checks against it). Such commands are applied between groups
//! (`Command::may_join_group`).

use std::thread::ThreadId;

use kvstore_proto::mvccpb::KeyValue;
use parking_lot::MutexGuard;
use rocksdb::WriteBatch;

use super::backend::{encode_i64, CF_META, META_CURRENT_REV};
use super::error::{Error, Result};
use super::leases::LeaseChange;
use super::revision::Revision;
use super::store::{Committed, KvStore, WriteTxn};

/// Bytes in front of a RocksDB `WriteBatch`'s records: an 8-byte sequence number and a 4-byte
/// little-endian record count. This is the write-ahead log's record format, which RocksDB keeps
/// stable across versions.
const BATCH_HEADER: usize = 12;

/// The open group of a store (in [`KvStore`]'s `group`).
pub(super) struct GroupState {
    /// The thread whose write transactions join the group.
    owner: ThreadId,
    /// The store's revision when the group began: undoing the group rolls the index back to it.
    base_rev: i64,
    /// The newest revision written in the group (`base_rev` while it has written nothing).
    rev: i64,
    /// The grouped transactions' batch records, concatenated, without the header.
    records: Vec<u8>,
    /// How many records `records` holds.
    count: u32,
    /// The grouped transactions, in revision order.
    txns: Vec<Grouped>,
}

/// A transaction committed to a group, waiting for the group's write to be published.
struct Grouped {
    /// Its revision (the one before it if it changed no key).
    rev: i64,
    /// Its changes (puts and tombstones), in sub-revision order: read by the transactions after
    /// it, then its watch events.
    changes: Vec<(KeyValue, bool)>,
    /// Lease attachments to apply once written.
    lease_changes: Vec<LeaseChange>,
    /// Keys whose index entries it changed (to undo an abandoned group).
    touched: Vec<Vec<u8>>,
}

/// An open write group (see the module documentation); holds the store's writer lock.
#[must_use = "a group that is dropped without `end` is undone"]
pub struct WriteGroup<'a> {
    store: &'a KvStore,
    _writer: MutexGuard<'a, ()>,
}

impl KvStore {
    /// Opens a write group on this thread: write transactions it begins until the group ends
    /// are committed together. Waits for any write transaction in progress.
    pub fn begin_group(&self) -> WriteGroup<'_> {
        let writer = self.writer.lock();
        let rev = self.current_revision();
        *self.group.lock() = Some(GroupState {
            owner: std::thread::current().id(),
            base_rev: rev,
            rev,
            records: Vec::new(),
            count: 0,
            txns: Vec::new(),
        });
        WriteGroup {
            store: self,
            _writer: writer,
        }
    }

    /// The newest revision of the group open on this thread, if one is.
    pub(super) fn own_group_revision(&self) -> Option<i64> {
        let group = self.group.lock();
        let state = group.as_ref()?;
        (state.owner == std::thread::current().id()).then_some(state.rev)
    }

    /// The value a grouped transaction wrote at `rev` (none for a delete, or if no grouped
    /// transaction wrote there).
    pub(super) fn grouped_value(&self, rev: Revision) -> Option<KeyValue> {
        #[cfg(test)]
        if self.options.fault == Some(super::store::Fault::GroupReadsOnlyDisk) {
            return None;
        }
        let group = self.group.lock();
        let txn = group
            .as_ref()?
            .txns
            .iter()
            .rev()
            .find(|t| t.rev == rev.main && !t.changes.is_empty())?;
        let (kv, tombstone) = txn.changes.get(usize::try_from(rev.sub).ok()?)?;
        (!tombstone).then(|| kv.clone())
    }
}

impl WriteTxn<'_> {
    /// Adds this transaction to the open group. Its answer is final (its revision is the one it
    /// will have); it is published when the group ends.
    pub(super) fn commit_to_group(mut self) -> Result<Committed> {
        let rev = self.rev();
        let mut group = self.store.group.lock();
        let Some(state) = group.as_mut() else {
            drop(group);
            return Err(Error::Corrupt(
                "invariant: a grouped transaction outlived its write group".into(),
            ));
        };
        let written = !self.batch.is_empty() || !self.lease_changes.is_empty();
        if written {
            if let Some((header, records)) = self.batch.data().split_at_checked(BATCH_HEADER) {
                let count = u32::from_le_bytes([header[8], header[9], header[10], header[11]]);
                state.records.extend_from_slice(records);
                state.count += count;
            }
            state.rev = rev;
            state.txns.push(Grouped {
                rev,
                changes: std::mem::take(&mut self.pending.changes),
                lease_changes: std::mem::take(&mut self.lease_changes),
                touched: std::mem::take(&mut self.touched),
            });
        }
        self.done = true;
        Ok(Committed {
            rev,
            events: Vec::new(),
        })
    }
}

impl WriteGroup<'_> {
    /// Writes everything the group holds, with the staged apply metadata, in one batch; then
    /// publishes each transaction in order (lease table, revision, watch events). On a failed
    /// write nothing is published and the index changes are undone.
    pub fn end(self) -> Result<()> {
        let store = self.store;
        let Some(state) = store.group.lock().take() else {
            return Ok(());
        };
        let staged = std::mem::take(&mut *store.apply_meta.lock());
        let mut rep = Vec::with_capacity(BATCH_HEADER + state.records.len());
        rep.extend_from_slice(&[0; 8]);
        rep.extend_from_slice(&state.count.to_le_bytes());
        rep.extend_from_slice(&state.records);
        let mut batch = WriteBatch::from_data(&rep);
        let meta = store.backend.cf(CF_META);
        if state.rev > state.base_rev {
            batch.put_cf(&meta, META_CURRENT_REV, encode_i64(state.rev));
        }
        staged.add_to(&mut batch, &meta);
        drop(meta);
        if !batch.is_empty() {
            if let Err(err) = store.backend.write(batch) {
                *store.apply_meta.lock() = staged;
                undo(store, state);
                return Err(err);
            }
        }
        for txn in state.txns {
            store.publish(txn.rev, txn.lease_changes, txn.changes);
        }
        staged.publish(store);
        Ok(())
    }
}

impl Drop for WriteGroup<'_> {
    /// A group dropped without `end` (its thread gave up part-way) leaves no trace.
    fn drop(&mut self) {
        if let Some(state) = self.store.group.lock().take() {
            undo(self.store, state);
        }
    }
}

/// Rolls the index back to before the group.
fn undo(store: &KvStore, state: GroupState) {
    let touched: Vec<Vec<u8>> = state.txns.into_iter().flat_map(|t| t.touched).collect();
    if !touched.is_empty() {
        store.index.write().rollback(&touched, state.base_rev);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use kvstore_proto::etcdserverpb::{PutRequest, RangeRequest};

    use super::*;
    use crate::mvcc::StoreOptions;

    fn open(dir: &std::path::Path) -> KvStore {
        let options = StoreOptions {
            sync_writes: false,
            ..StoreOptions::default()
        };
        KvStore::open(dir, options).expect("open store")
    }

    /// Puts `key` = `value`; the revision and the previous value.
    fn put(store: &KvStore, key: &str, value: &str) -> (i64, Option<Vec<u8>>) {
        let (resp, _) = store
            .put(&PutRequest {
                key: key.into(),
                value: value.into(),
                prev_kv: true,
                ..PutRequest::default()
            })
            .expect("put");
        (
            resp.header.expect("header").revision,
            resp.prev_kv.map(|kv| kv.value),
        )
    }

    fn value(store: &KvStore, key: &str) -> Option<(Vec<u8>, i64)> {
        let resp = store
            .range(&RangeRequest {
                key: key.into(),
                ..RangeRequest::default()
            })
            .expect("range");
        resp.kvs
            .first()
            .map(|kv| (kv.value.clone(), kv.mod_revision))
    }

    #[test]
    fn a_group_is_published_at_its_end_in_revision_order() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&seen);
        store.set_commit_observer(Box::new(move |c: &Committed| {
            let keys: Vec<_> = c
                .events
                .iter()
                .map(|e| e.kv.clone().unwrap_or_default())
                .collect();
            log.lock().expect("log").push((c.rev, keys));
        }));
        assert_eq!(put(&store, "a", "1"), (2, None));

        let group = store.begin_group();
        assert_eq!(put(&store, "a", "2"), (3, Some(b"1".to_vec())));
        // The second put reads the first one's value before it is on disk.
        assert_eq!(put(&store, "a", "3"), (4, Some(b"2".to_vec())));
        assert_eq!(put(&store, "b", "1"), (5, None));
        assert_eq!(store.current_revision(), 2, "published before the end");
        assert_eq!(value(&store, "a"), Some((b"1".to_vec(), 2)));
        assert_eq!(value(&store, "b"), None);
        assert_eq!(
            seen.lock().expect("log").len(),
            1,
            "no events before the end"
        );
        group.end().expect("end");

        assert_eq!(store.current_revision(), 5);
        assert_eq!(value(&store, "a"), Some((b"3".to_vec(), 4)));
        assert_eq!(value(&store, "b"), Some((b"1".to_vec(), 5)));
        let seen = seen.lock().expect("log");
        let revs: Vec<_> = seen.iter().map(|(rev, _)| *rev).collect();
        assert_eq!(revs, [2, 3, 4, 5]);
        let (_, last) = &seen[3];
        assert_eq!(last.len(), 1);
        assert_eq!(
            (last[0].key.as_slice(), last[0].mod_revision),
            (&b"b"[..], 5)
        );
    }

    #[test]
    fn a_dropped_group_leaves_no_trace() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open(dir.path());
        put(&store, "a", "1");
        let group = store.begin_group();
        put(&store, "a", "2");
        put(&store, "b", "1");
        drop(group);
        assert_eq!(store.current_revision(), 2);
        assert_eq!(value(&store, "a"), Some((b"1".to_vec(), 2)));
        assert_eq!(value(&store, "b"), None);
        assert_eq!(store.index_len(), 1, "the index is rolled back");
        // The next write takes the revision the abandoned group had.
        assert_eq!(put(&store, "a", "3"), (3, Some(b"1".to_vec())));
    }

    #[test]
    fn a_group_is_one_write_that_survives_a_restart() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let store = open(dir.path());
            let group = store.begin_group();
            for i in 0..50 {
                put(&store, &format!("k{i:02}"), &format!("v{i}"));
            }
            group.end().expect("end");
        }
        let store = open(dir.path());
        assert_eq!(store.current_revision(), 51);
        assert_eq!(store.index_len(), 50);
        assert_eq!(value(&store, "k00"), Some((b"v0".to_vec(), 2)));
        assert_eq!(value(&store, "k49"), Some((b"v49".to_vec(), 51)));
    }
}
