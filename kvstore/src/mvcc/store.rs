//! The revisioned store: the in-memory index and the RocksDB backend, kept consistent.
//!
//! # Concurrency
//! Writers are serialised by `writer` (one write transaction at a time, as Raft applies them).
//! A write transaction changes the index *in place* as it goes, at main revision
//! `current_rev + 1`, so later operations of the same transaction see earlier ones, as in etcd.
//! Readers read at `current_rev` or below, and a key index never shows a revision above the one
//! it is asked at, so those in-place changes are invisible to them until the commit: the batch is
//! written, then `current_rev` is bumped. That bump is the commit point of the index; if the
//! batch write fails, the index changes are rolled back and the revision is not bumped.
//!
//! Lock order: `writer`, then `group`, then `index`, then `leases`. Readers take only `index`
//! (shared) and then read RocksDB without any lock.
//!
//! A [`WriteGroup`](super::write_group::WriteGroup) holds `writer` across several write
//! transactions and commits them with one RocksDB write (see [`super::write_group`]).
//!
//! # Reads racing compaction
//! Compaction at revision C removes only revisions that no read at or above C can see, so a read
//! at R >= C is unaffected. A read at R that raced a compaction to C > R may find a revision
//! gone: it then fails with [`Error::Compacted`], exactly what it would have got a moment later.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use kvstore_proto::mvccpb::{event::EventType, Event, KeyValue};
use parking_lot::{Mutex, MutexGuard, RwLock};
use prost::Message;
use rocksdb::{IteratorMode, WriteBatch};

use super::backend::{
    encode_i64, Backend, LeaseRecord, CF_KV, CF_LEASE, CF_META, META_CONSISTENT_INDEX,
    META_CURRENT_REV, META_FINISHED_COMPACT, META_SCHEDULED_COMPACT,
};
use super::error::{Error, Result};
use super::index::{KeyRange, TreeIndex};
use super::leases::{LeaseChange, LeaseTable};
use super::revision::Revision;
use super::write_group::GroupState;

/// Limits on what one request may ask, etcd's defaults unless configured.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Largest encoded request accepted (etcd's `--max-request-bytes`, 1.5 MiB).
    pub max_request_bytes: usize,
    /// Most compares, or operations in one branch, of a transaction (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_request_bytes: 1536 * 1024,
            max_txn_ops: 128,
        }
    }
}

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// Fsync every write batch before acknowledging it. True for a standalone store; under
    /// Raft the log append is the fsync, applies skip RocksDB's WAL and are replayed after a
    /// crash (see `Backend::write`).
    pub sync_writes: bool,
    /// Request limits.
    pub limits: Limits,
    /// Revisions removed per batch by a compaction (etcd's `compactionBatchLimit`).
    pub compaction_batch: usize,
    /// Pause between compaction batches, so writers are never starved for long.
    pub compaction_pause: Duration,
    /// A deliberate bug, compiled into unit tests only, to show the model test catches it.
    #[cfg(test)]
    pub(crate) fault: Option<Fault>,
}

/// Deliberate bugs the model test must catch (unit tests only; never in a build).
#[cfg(test)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Compaction removes every revision at or below it, including each key's latest one.
    CompactionDropsLatest,
    /// A put into a key that was deleted keeps counting the old generation's version.
    RecreateKeepsVersion,
    /// A transaction in a write group reads values only from disk, not those written earlier
    /// in its group.
    GroupReadsOnlyDisk,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            sync_writes: true,
            limits: Limits::default(),
            compaction_batch: 1000,
            compaction_pause: Duration::from_millis(10),
            #[cfg(test)]
            fault: None,
        }
    }
}

/// What a read asks for beyond the key range.
#[derive(Clone, Copy, Debug, Default)]
pub struct RangeOptions {
    /// At most this many keys (0: no limit). `count` still counts every key in range.
    pub limit: usize,
    /// Read as of this main revision (0 or less: the current revision).
    pub rev: i64,
    /// Only count; return no key-values.
    pub count_only: bool,
}

/// The answer to a read.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeResult {
    /// Key-values in key order, at most `limit`.
    pub kvs: Vec<KeyValue>,
    /// How many keys are in range at the revision read, ignoring `limit`.
    pub count: usize,
    /// The store's revision the read was served at (etcd reports the current revision here).
    pub rev: i64,
}

/// A write transaction that has been made durable.
#[derive(Clone, Debug, Default)]
pub struct Committed {
    /// The store's revision after the transaction (unchanged if it wrote nothing).
    pub rev: i64,
    /// The changes, in order: puts carry the new key-value, deletes the key and `mod_revision`.
    pub events: Vec<Event>,
}

/// Called with every committed transaction that changed something, in revision order, while
/// the writer lock is held (so it must be quick: hand the events to another task).
pub type CommitObserver = Box<dyn Fn(&Committed) + Send + Sync>;

/// The revisioned key-value store of one member.
pub struct KvStore {
    /// RocksDB: revision → key-value, leases, metadata.
    pub(super) backend: Backend,
    /// Key → its generations of revisions. Written only while `writer` is held.
    pub(super) index: RwLock<TreeIndex>,
    /// Serialises write transactions; holds nothing but the right to write.
    pub(super) writer: Mutex<()>,
    /// The open write group, if any: write transactions its thread begins join it.
    pub(super) group: Mutex<Option<GroupState>>,
    /// The newest committed main revision; readers read at or below it.
    pub(super) current_rev: AtomicI64,
    /// Reads below this revision fail with `Compacted` (etcd's compactMainRev).
    compacted_rev: AtomicI64,
    /// The Raft log index of the last applied entry (etcd's consistent index).
    pub(super) consistent_index: AtomicI64,
    /// Granted leases and the keys attached to each. Written only while `writer` is held.
    pub(super) leases: RwLock<LeaseTable>,
    /// One physical compaction at a time.
    pub(super) compaction: Mutex<()>,
    /// Told about every committed change (the watch hub).
    pub(super) observer: RwLock<Option<CommitObserver>>,
    /// Metadata the Raft layer wants written atomically with the next committed transaction
    /// (the log position of the entry being applied). Drained by the next commit (or by the
    /// end of an open write group).
    pub(super) apply_meta: Mutex<StagedApply>,
    /// How the store was opened.
    pub(super) options: StoreOptions,
}

impl KvStore {
    /// Opens the store in `dir`, rebuilding the index and the lease table from RocksDB and
    /// finishing any compaction a crash interrupted.
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self> {
        let backend = Backend::open(dir, options.sync_writes)?;
        let store = Self {
            backend,
            index: RwLock::new(TreeIndex::new()),
            writer: Mutex::new(()),
            group: Mutex::new(None),
            current_rev: AtomicI64::new(1),
            compacted_rev: AtomicI64::new(0),
            consistent_index: AtomicI64::new(0),
            leases: RwLock::new(LeaseTable::default()),
            compaction: Mutex::new(()),
            observer: RwLock::new(None),
            apply_meta: Mutex::new(StagedApply::default()),
            options,
        };
        store.restore()?;
        Ok(store)
    }

    /// Rebuilds the in-memory state from disk (etcd's `restore`), then finishes any
    /// compaction a crash interrupted.
    fn restore(&self) -> Result<()> {
        if let Some((rev, keep)) = self.rebuild()? {
            tracing::info!(revision = rev, "resuming compaction interrupted by restart");
            self.remove_compacted(rev, &keep)?;
        }
        Ok(())
    }

    /// Replaces the whole contents on disk with what `replace` writes (a Raft snapshot being
    /// installed), then rebuilds the index, lease table and revisions from it. Writers and
    /// compaction are excluded throughout, so no reader sees a mix of old and new state.
    pub fn replace_contents<E: From<Error>>(
        &self,
        replace: impl FnOnce(&Backend) -> std::result::Result<(), E>,
    ) -> std::result::Result<(), E> {
        let resume = {
            let _compaction = self.compaction.lock();
            let _writer = self.writer.lock();
            replace(&self.backend)?;
            self.rebuild()?
        };
        if let Some((rev, keep)) = resume {
            self.remove_compacted(rev, &keep)?;
        }
        Ok(())
    }

    /// Loads index, leases and revisions from disk into memory. Returns the scheduled
    /// compaction whose removal of old revisions has not finished, if any.
    fn rebuild(&self) -> Result<Option<(i64, HashSet<Revision>)>> {
        let backend = &self.backend;
        let mut leases = LeaseTable::default();
        for item in backend
            .db()
            .iterator_cf(&backend.cf(CF_LEASE), IteratorMode::Start)
        {
            let (k, v) = item?;
            leases.grant(LeaseRecord::decode(&k, &v)?);
        }

        let mut index = TreeIndex::new();
        let mut current = 1;
        let mut key_lease: HashMap<Vec<u8>, i64> = HashMap::new();
        for item in backend
            .db()
            .iterator_cf(&backend.cf(CF_KV), IteratorMode::Start)
        {
            let (k, v) = item?;
            let (rev, tombstone) =
                Revision::from_key(&k).map_err(|e| Error::Corrupt(e.to_string()))?;
            let kv = KeyValue::decode(&*v).map_err(|e| Error::Corrupt(e.to_string()))?;
            current = current.max(rev.main);
            if tombstone {
                // A tombstone already deleted is a duplicate etcd also tolerates; one whose
                // earlier history was compacted away is kept as a closed generation.
                let _ = index.restore_tombstone(&kv.key, rev);
                key_lease.remove(&kv.key);
            } else {
                index.restore(
                    &kv.key,
                    Revision::new(kv.create_revision, 0),
                    rev,
                    kv.version,
                );
                if kv.lease != 0 {
                    key_lease.insert(kv.key.clone(), kv.lease);
                } else {
                    key_lease.remove(&kv.key);
                }
            }
        }
        for (key, lease) in key_lease {
            // A key whose lease record is gone (revoked, crash between) is simply unattached,
            // as in etcd; its lease field still says which lease it had.
            leases.attach(lease, key);
        }

        let scheduled = backend.meta_i64(META_SCHEDULED_COMPACT)?.unwrap_or(0);
        let finished = backend.meta_i64(META_FINISHED_COMPACT)?.unwrap_or(0);
        let stored_current = backend.meta_i64(META_CURRENT_REV)?.unwrap_or(1);
        let current = current.max(stored_current).max(scheduled);
        let ci = backend.meta_i64(META_CONSISTENT_INDEX)?.unwrap_or(0);

        *self.index.write() = index;
        *self.leases.write() = leases;
        self.current_rev.store(current, Ordering::Release);
        self.consistent_index.store(ci, Ordering::Release);
        self.compacted_rev.store(scheduled, Ordering::Release);
        if scheduled > 0 {
            let keep = self.index.write().compact(scheduled);
            if scheduled != finished {
                return Ok(Some((scheduled, keep)));
            }
        }
        Ok(None)
    }

    /// The newest committed main revision.
    pub fn current_revision(&self) -> i64 {
        self.current_rev.load(Ordering::Acquire)
    }

    /// The revision of the last compaction (0 if never compacted): reads below it fail.
    pub fn compacted_revision(&self) -> i64 {
        self.compacted_rev.load(Ordering::Acquire)
    }

    /// The Raft log index of the last entry applied (0 when not under Raft).
    pub fn consistent_index(&self) -> u64 {
        self.consistent_index.load(Ordering::Acquire) as u64
    }

    /// The configured request limits.
    pub fn limits(&self) -> Limits {
        self.options.limits
    }

    /// The backend, for snapshot and maintenance work.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// Registers the one observer told about every committed change.
    pub fn set_commit_observer(&self, observer: CommitObserver) {
        *self.observer.write() = Some(observer);
    }

    /// Stages `meta` key/values (column family `meta`) to be written in the same batch as the
    /// next committed write transaction. The Raft state machine records the applied log
    /// position this way, so data and position never disagree after a crash.
    pub fn stage_apply_meta(&self, meta: Vec<(Vec<u8>, Vec<u8>)>) {
        *self.apply_meta.lock() = StagedApply { index: None, meta };
    }

    /// Like [`KvStore::stage_apply_meta`], also recording `index` as the consistent index
    /// (on disk and, once written, in [`KvStore::consistent_index`]).
    pub fn stage_apply_position(&self, index: u64, meta: Vec<(Vec<u8>, Vec<u8>)>) {
        *self.apply_meta.lock() = StagedApply {
            index: Some(index),
            meta,
        };
    }

    /// Writes staged apply metadata that no transaction consumed (the command changed
    /// nothing), in a batch of its own.
    pub fn flush_apply_meta(&self) -> Result<()> {
        let _writer = self.writer.lock();
        let staged = std::mem::take(&mut *self.apply_meta.lock());
        if staged.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::default();
        staged.add_to(&mut batch, &self.backend.cf(CF_META));
        self.backend.write(batch)?;
        staged.publish(self);
        Ok(())
    }

    /// Makes a transaction whose batch is on disk visible: its lease changes, the revision,
    /// then (if it changed keys) its watch events, told to the observer. Called with the writer
    /// lock held, in revision order.
    pub(super) fn publish(
        &self,
        rev: i64,
        lease_changes: Vec<LeaseChange>,
        changes: Vec<(KeyValue, bool)>,
    ) -> Committed {
        self.leases.write().apply(lease_changes);
        self.current_rev.store(rev, Ordering::Release);
        let committed = Committed {
            rev,
            events: events_of(changes),
        };
        if !committed.events.is_empty() {
            if let Some(observer) = self.observer.read().as_ref() {
                observer(&committed);
            }
        }
        committed
    }

    /// Reads the keys in `range` as of `opts.rev` (etcd's `rangeKeys`).
    pub fn read_range(&self, range: &KeyRange, opts: RangeOptions) -> Result<RangeResult> {
        let current = self.current_revision();
        self.range_at(range, opts, current, &|_| None)
    }

    /// Reads as if `current` were the newest revision (a consistent read view).
    pub(super) fn read_range_at(
        &self,
        range: &KeyRange,
        opts: RangeOptions,
        current: i64,
    ) -> Result<RangeResult> {
        self.range_at(range, opts, current, &|_| None)
    }

    /// The shared read path: `current` is the revision the reader sees as newest, `unwritten`
    /// the values a write transaction reading sees before they are on disk (none for readers).
    fn range_at(
        &self,
        range: &KeyRange,
        opts: RangeOptions,
        current: i64,
        unwritten: Unwritten<'_>,
    ) -> Result<RangeResult> {
        if opts.rev > current {
            return Err(Error::FutureRevision);
        }
        let rev = if opts.rev <= 0 { current } else { opts.rev };
        if rev < self.compacted_revision() {
            return Err(Error::Compacted);
        }
        let (revs, count) = self.index.read().revisions(range, rev, opts.limit);
        if opts.count_only || revs.is_empty() {
            return Ok(RangeResult {
                kvs: Vec::new(),
                count,
                rev: current,
            });
        }
        let kvs = self.fetch(&revs, unwritten)?;
        if rev < self.compacted_revision() {
            // A compaction raced this read; what was fetched may be incomplete.
            return Err(Error::Compacted);
        }
        Ok(RangeResult {
            kvs,
            count,
            rev: current,
        })
    }

    /// Loads the key-values stored at `revs` (all live revisions, in the order given).
    fn fetch(&self, revs: &[Revision], unwritten: Unwritten<'_>) -> Result<Vec<KeyValue>> {
        let mut out = Vec::with_capacity(revs.len());
        let mut from_disk = Vec::with_capacity(revs.len());
        for (i, rev) in revs.iter().enumerate() {
            match unwritten(*rev) {
                Some(kv) => out.push(Some(kv)),
                None => {
                    out.push(None);
                    from_disk.push((i, rev.to_key()));
                }
            }
        }
        if !from_disk.is_empty() {
            let cf = self.backend.cf(CF_KV);
            let values = self.backend.db().batched_multi_get_cf(
                &cf,
                from_disk.iter().map(|(_, k)| k.as_slice()),
                false,
            );
            for ((i, _), value) in from_disk.iter().zip(values) {
                let value = value?.ok_or_else(|| {
                    if self.compacted_revision() >= revs[*i].main {
                        Error::Compacted
                    } else {
                        Error::Corrupt(format!("revision {:?} in index but not on disk", revs[*i]))
                    }
                })?;
                let kv = KeyValue::decode(&*value).map_err(|e| Error::Corrupt(e.to_string()))?;
                out[*i] = Some(kv);
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Begins a write transaction; it holds the writer lock until committed or dropped. On the
    /// thread of an open [`WriteGroup`](super::write_group::WriteGroup) it joins the group
    /// instead (the group holds the lock).
    pub fn write(&self) -> WriteTxn<'_> {
        if let Some(group_rev) = self.own_group_revision() {
            return WriteTxn::new(self, None, group_rev);
        }
        let guard = self.writer.lock();
        WriteTxn::new(self, Some(guard), self.current_revision())
    }

    /// Every granted lease.
    pub fn leases(&self) -> Vec<LeaseRecord> {
        self.leases.read().records()
    }

    /// One lease and the keys attached to it, if granted.
    pub fn lease(&self, id: i64) -> Option<(LeaseRecord, Vec<Vec<u8>>)> {
        self.leases.read().get(id)
    }

    /// Number of keys with any history in the index.
    pub fn index_len(&self) -> usize {
        self.index.read().len()
    }

    /// Records the compaction revision as scheduled and compacts the index (etcd's
    /// `updateCompactRev` + `kvindex.Compact`), returning the revisions to keep.
    pub(super) fn schedule_compaction(&self, rev: i64) -> Result<HashSet<Revision>> {
        let _writer = self.writer.lock();
        if rev <= self.compacted_revision() {
            return Err(Error::Compacted);
        }
        if rev > self.current_revision() {
            return Err(Error::FutureRevision);
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(
            &self.backend.cf(CF_META),
            META_SCHEDULED_COMPACT,
            encode_i64(rev),
        );
        self.backend.write(batch)?;
        self.compacted_rev.store(rev, Ordering::Release);
        Ok(self.index.write().compact(rev))
    }
}

/// The watch events of a transaction's changes (puts and tombstones, in order).
fn events_of(changes: Vec<(KeyValue, bool)>) -> Vec<Event> {
    changes
        .into_iter()
        .map(|(kv, tombstone)| Event {
            r#type: if tombstone {
                EventType::Delete as i32
            } else {
                EventType::Put as i32
            },
            kv: Some(kv),
            prev_kv: None,
        })
        .collect()
}

/// Metadata staged by the Raft layer for the next write (see [`KvStore::stage_apply_meta`]).
#[derive(Default)]
pub(super) struct StagedApply {
    /// The consistent index to record, if any.
    index: Option<u64>,
    /// `meta` column family entries to write.
    meta: Vec<(Vec<u8>, Vec<u8>)>,
}

impl StagedApply {
    pub(super) fn is_empty(&self) -> bool {
        self.index.is_none() && self.meta.is_empty()
    }

    /// Adds the staged entries to a batch.
    pub(super) fn add_to(&self, batch: &mut WriteBatch, meta_cf: &impl rocksdb::AsColumnFamilyRef) {
        if let Some(index) = self.index {
            batch.put_cf(meta_cf, META_CONSISTENT_INDEX, encode_i64(index as i64));
        }
        for (k, v) in &self.meta {
            batch.put_cf(meta_cf, k, v);
        }
    }

    /// Makes the recorded index visible once its batch is durable.
    pub(super) fn publish(&self, store: &KvStore) {
        if let Some(index) = self.index {
            store
                .consistent_index
                .store(index as i64, Ordering::Release);
        }
    }
}

/// Where a write transaction finds the values it wrote that are not on disk yet.
pub(super) type Unwritten<'a> = &'a dyn Fn(Revision) -> Option<KeyValue>;

/// The uncommitted changes of a write transaction, addressable by revision.
#[derive(Default)]
pub(super) struct Pending {
    /// Changes in order; the change with sub revision `s` is at position `s`.
    pub(super) changes: Vec<(KeyValue, bool)>,
    /// The main revision all changes share.
    pub(super) main: i64,
}

impl Pending {
    /// The value written at `rev`, if this is its transaction and it was not a delete.
    fn get(&self, rev: Revision) -> Option<&KeyValue> {
        if rev.main != self.main {
            return None;
        }
        let (kv, tombstone) = self.changes.get(usize::try_from(rev.sub).ok()?)?;
        (!tombstone).then_some(kv)
    }
}

/// One write transaction: every change shares one main revision and lands in one batch.
pub struct WriteTxn<'a> {
    /// The store written to.
    pub(super) store: &'a KvStore,
    /// The writer lock, held for the transaction's life; `None` in a write group (the group
    /// holds it).
    _guard: Option<MutexGuard<'a, ()>>,
    /// The store's revision when the transaction began (in a write group, the group's newest);
    /// changes are at `begin_rev + 1`.
    pub(super) begin_rev: i64,
    /// Everything to write, committed atomically.
    pub(super) batch: WriteBatch,
    /// Changes so far, readable by later operations of this transaction.
    pub(super) pending: Pending,
    /// Keys whose index entries changed (for rollback).
    pub(super) touched: Vec<Vec<u8>>,
    /// Lease attachments and grants to apply to the lease table at commit.
    pub(super) lease_changes: Vec<LeaseChange>,
    /// The Raft index to record with this transaction.
    consistent_index: Option<u64>,
    /// Committed (or rolled back): nothing to undo on drop.
    pub(super) done: bool,
}

impl<'a> WriteTxn<'a> {
    /// A transaction on `store` after revision `begin_rev`, holding `guard` (none in a group).
    fn new(store: &'a KvStore, guard: Option<MutexGuard<'a, ()>>, begin_rev: i64) -> Self {
        WriteTxn {
            store,
            _guard: guard,
            begin_rev,
            batch: WriteBatch::default(),
            pending: Pending::default(),
            touched: Vec::new(),
            lease_changes: Vec::new(),
            consistent_index: None,
            done: false,
        }
    }
}

impl WriteTxn<'_> {
    /// The revision this transaction's reads see, and its response headers report:
    /// `begin_rev + 1` once it has changed something, `begin_rev` before.
    pub fn rev(&self) -> i64 {
        if self.pending.changes.is_empty() {
            self.begin_rev
        } else {
            self.begin_rev + 1
        }
    }

    /// The store's revision when this transaction began.
    pub fn begin_rev(&self) -> i64 {
        self.begin_rev
    }

    /// The store written to.
    pub fn store(&self) -> &KvStore {
        self.store
    }

    /// Reads as of `opts.rev` (0: including this transaction's own changes so far).
    pub fn range(&self, range: &KeyRange, opts: RangeOptions) -> Result<RangeResult> {
        let unwritten = |rev: Revision| match self.pending.get(rev) {
            Some(kv) => Some(kv.clone()),
            None if self.in_group() => self.store.grouped_value(rev),
            None => None,
        };
        self.store.range_at(range, opts, self.rev(), &unwritten)
    }

    /// Whether this transaction is part of a write group (committed with it, not alone).
    pub(super) fn in_group(&self) -> bool {
        self._guard.is_none()
    }

    /// Puts `key` = `value` attached to `lease` (0 for none), as etcd's `storeTxnWrite.put`.
    /// Returns the revision of the change.
    pub fn put(&mut self, key: &[u8], value: &[u8], lease: i64) -> i64 {
        let main = self.begin_rev + 1;
        let rev = Revision::new(main, self.pending.changes.len() as i64);
        let mut index = self.store.index.write();
        #[allow(unused_mut)]
        let (create, mut version) = match index.put(key, rev) {
            Some((_, created, version)) => (created.main, version + 1),
            None => (main, 1),
        };
        #[cfg(test)]
        if self.store.options.fault == Some(Fault::RecreateKeepsVersion) && version == 1 {
            if let Some(g) = index.generations_of(key) {
                version = g
                    .iter()
                    .rev()
                    .skip(1)
                    .map(|g| g.version)
                    .next()
                    .unwrap_or(0)
                    + 1;
            }
        }
        drop(index);
        let kv = KeyValue {
            key: key.to_vec(),
            create_revision: create,
            mod_revision: main,
            version,
            value: value.to_vec(),
            lease,
        };
        self.batch.put_cf(
            &self.store.backend.cf(CF_KV),
            rev.to_key(),
            kv.encode_to_vec(),
        );
        self.lease_changes.push(LeaseChange::Attach {
            key: key.to_vec(),
            lease,
        });
        self.record(kv, false);
        main
    }

    /// Deletes every key in `range` that exists (writing a tombstone each); returns how many.
    pub fn delete_range(&mut self, range: &KeyRange) -> usize {
        let (keys, _) = self.store.index.read().keys(range, self.rev(), 0);
        for (key, _) in &keys {
            self.delete(key);
        }
        keys.len()
    }

    /// Writes a tombstone for a key known to exist.
    fn delete(&mut self, key: &[u8]) {
        let main = self.begin_rev + 1;
        let rev = Revision::new(main, self.pending.changes.len() as i64);
        if let Err(err) = self.store.index.write().tombstone(key, rev) {
            panic!("invariant: delete of a key found live in the index: {err:?}");
        }
        let kv = KeyValue {
            key: key.to_vec(),
            mod_revision: main,
            ..KeyValue::default()
        };
        let tomb = KeyValue {
            key: key.to_vec(),
            ..KeyValue::default()
        };
        self.batch.put_cf(
            &self.store.backend.cf(CF_KV),
            rev.to_tombstone_key(),
            tomb.encode_to_vec(),
        );
        self.lease_changes
            .push(LeaseChange::Detach { key: key.to_vec() });
        self.record(kv, true);
    }

    fn record(&mut self, kv: KeyValue, tombstone: bool) {
        self.pending.main = self.begin_rev + 1;
        self.touched.push(kv.key.clone());
        self.pending.changes.push((kv, tombstone));
    }

    /// Grants a lease (recorded with this transaction).
    pub fn grant_lease(&mut self, record: LeaseRecord) -> Result<()> {
        let exists = self.store.leases.read().contains(record.id)
            || self
                .lease_changes
                .iter()
                .any(|c| matches!(c, LeaseChange::Grant(r) if r.id == record.id));
        if exists {
            return Err(Error::LeaseExists);
        }
        self.batch.put_cf(
            &self.store.backend.cf(CF_LEASE),
            LeaseRecord::key(record.id),
            record.encode(),
        );
        self.lease_changes.push(LeaseChange::Grant(record));
        Ok(())
    }

    /// Revokes a lease: deletes every key attached to it, in this transaction.
    pub fn revoke_lease(&mut self, id: i64) -> Result<usize> {
        let keys = match self.store.leases.read().get(id) {
            Some((_, keys)) => keys,
            None => return Err(Error::LeaseNotFound),
        };
        let mut deleted = 0;
        for key in keys {
            if self.store.index.read().get(&key, self.rev()).is_some() {
                self.delete(&key);
                deleted += 1;
            }
        }
        self.batch
            .delete_cf(&self.store.backend.cf(CF_LEASE), LeaseRecord::key(id));
        self.lease_changes.push(LeaseChange::Revoke(id));
        Ok(deleted)
    }

    /// Records a lease's remaining TTL (etcd's lease checkpoint).
    pub fn checkpoint_lease(&mut self, id: i64, remaining_ttl: i64) -> Result<()> {
        let Some((mut record, _)) = self.store.leases.read().get(id) else {
            return Err(Error::LeaseNotFound);
        };
        record.remaining_ttl = remaining_ttl;
        self.batch.put_cf(
            &self.store.backend.cf(CF_LEASE),
            LeaseRecord::key(id),
            record.encode(),
        );
        self.lease_changes.push(LeaseChange::Checkpoint(record));
        Ok(())
    }

    /// Whether a lease is granted (committed, or granted earlier in this transaction).
    pub fn lease_exists(&self, id: i64) -> bool {
        self.store.leases.read().contains(id)
            || self
                .lease_changes
                .iter()
                .any(|c| matches!(c, LeaseChange::Grant(r) if r.id == id))
    }

    /// Writes a `meta` column family entry with this transaction (member attributes and
    /// other small state kept beside the key space). Does not bump the revision.
    pub fn put_meta(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.batch
            .put_cf(&self.store.backend.cf(CF_META), key, value);
    }

    /// Records the Raft index of the entry this transaction applies.
    pub fn set_consistent_index(&mut self, index: u64) {
        self.consistent_index = Some(index);
    }

    /// Makes the transaction durable, then visible. A transaction that changed nothing does not
    /// bump the revision (but still records the consistent index and lease changes).
    pub fn commit(mut self) -> Result<Committed> {
        if self.in_group() {
            return self.commit_to_group();
        }
        let changed = !self.pending.changes.is_empty();
        let new_rev = self.rev();
        let meta = self.store.backend.cf(CF_META);
        if changed {
            self.batch
                .put_cf(&meta, META_CURRENT_REV, encode_i64(new_rev));
        }
        if let Some(ci) = self.consistent_index {
            self.batch
                .put_cf(&meta, META_CONSISTENT_INDEX, encode_i64(ci as i64));
        }
        let staged = std::mem::take(&mut *self.store.apply_meta.lock());
        staged.add_to(&mut self.batch, &meta);
        drop(meta);
        if self.batch.is_empty() {
            self.done = true;
            return Ok(Committed {
                rev: new_rev,
                events: Vec::new(),
            });
        }
        let batch = std::mem::take(&mut self.batch);
        if let Err(err) = self.store.backend.write(batch) {
            // Keep the staged metadata for whoever retries or flushes.
            *self.store.apply_meta.lock() = staged;
            self.rollback();
            return Err(err);
        }
        self.done = true;
        staged.publish(self.store);
        if let Some(ci) = self.consistent_index {
            self.store
                .consistent_index
                .store(ci as i64, Ordering::Release);
        }
        Ok(self.store.publish(
            new_rev,
            std::mem::take(&mut self.lease_changes),
            std::mem::take(&mut self.pending.changes),
        ))
    }

    /// Undoes this transaction's index changes (nothing else was applied before commit).
    fn rollback(&mut self) {
        if !self.touched.is_empty() {
            self.store
                .index
                .write()
                .rollback(&self.touched, self.begin_rev);
        }
        self.done = true;
    }
}

impl Drop for WriteTxn<'_> {
    /// A transaction dropped without commit (an error part-way) leaves no trace.
    fn drop(&mut self) {
        if !self.done {
            self.rollback();
        }
    }
}
