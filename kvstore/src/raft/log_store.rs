//! The Raft log and hard state, in the member's RocksDB next to the data they order.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `raft_log` | entry index, big-endian `u64` (so byte order is log order) | postcard [`Entry`] |
//! | `raft_state` | `vote` | postcard [`Vote`] |
//! | `raft_state` | `committed` | postcard `Option<LogId>` |
//! | `raft_state` | `last_purged` | postcard [`LogId`] |
//!
//! # Durability
//! - **Append** is the one fsync on the write path. All entries of one call go into one
//!   `WriteBatch`, written unsynced (so they are readable at once, as openraft requires), then
//!   synced before the call's [`LogFlushed`] callback completes, in one of two places:
//!   - *The leader's own entries* go to a dedicated sync thread, which calls `FlushWAL(sync)`
//!     and then completes the callbacks of every append queued while it was syncing (group
//!     commit across calls as well as within one). `append` returns before the fsync, so the
//!     leader sends the entries to its followers while its own fsync runs (the openraft patch
//!     in `third_party/openraft`).
//!   - *Entries from another leader* (this member follows) are synced on the calling task
//!     before `append` returns, as etcd's follower saves its WAL before it answers. Raft's core
//!     only waits for that flush anyway, and handing it to the sync thread cost a wake-up
//!     there and back on every append (single-client put p50 −5 % without it, see
//!     `docs/benchmarks.md`). The task's worker is blocked for one `fdatasync`; the runtime's
//!     other worker takes the queued tasks meanwhile.
//!
//!   RocksDB's WAL is a single ordered stream, so a sync makes everything written before it
//!   durable, including the state machine's unsynced applies.
//! - **Vote** is written with `sync` before `save_vote` returns: a member must never forget a
//!   vote it granted, or it could vote twice in one term.
//! - **Committed** is written unsynced: losing it only means waiting for the leader to repeat it.
//! - **Truncate** (removing a follower's conflicting suffix) is unsynced: nothing is
//!   acknowledged on top of it before the next append's fsync, which makes it durable too.
//! - **Purge** is synced. It runs after a snapshot covers the purged entries; syncing it also
//!   makes durable the (unsynced) applies the snapshot reflects, so a crash can never leave the
//!   state machine behind the first entry still in the log.

// `StorageError` is openraft's error, required by its traits; boxing it in the helpers only to
// unbox it at the trait boundary would buy nothing.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};
use parking_lot::Mutex;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};

use super::codec::{self, log_index, log_key, LOG_KEY_END};
use super::entry_cache::EntryCache;
use super::types::{
    Entry, LogFlushed, LogId, LogState, NodeId, StorageError, StorageIOError, TypeConfig, Vote,
};
use crate::mvcc::backend::{CF_RAFT_LOG, CF_RAFT_STATE};
use crate::mvcc::KvStore;

/// `raft_state` key of the vote.
const KEY_VOTE: &[u8] = b"vote";
/// `raft_state` key of the last committed log id.
const KEY_COMMITTED: &[u8] = b"committed";
/// `raft_state` key of the last purged log id.
const KEY_LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log store of one member: [`RaftLogStorage`] over the `raft_log` and `raft_state`
/// column families of the member's database.
pub struct LogStore {
    /// Reads shared with replication tasks.
    reader: LogReader,
    /// The sync thread and the queue of appends waiting for its next fsync. `None` only while
    /// being dropped.
    syncer: Option<Syncer>,
    /// This member's Raft ID, if known: entries made by another leader are synced inline (see
    /// the module docs). `None` sends every append to the sync thread.
    member: Option<NodeId>,
    /// Appends are fsynced (false only with `--unsafe-no-fsync`).
    fsync: bool,
}

/// The thread that makes appends durable and completes their callbacks, in order.
struct Syncer {
    /// Appends written but not yet synced.
    queue: mpsc::Sender<LogFlushed>,
    /// Joined on drop, so the database is closed when the store is.
    thread: JoinHandle<()>,
}

/// A read handle on the log, for openraft's replication tasks (cheap to clone).
#[derive(Clone)]
pub struct LogReader {
    /// The store whose database holds the log.
    store: Arc<KvStore>,
    /// The newest entries, in memory; updated by the log store with every change to the log.
    cache: Arc<Mutex<EntryCache>>,
}

impl LogStore {
    /// A log store on `store`'s database; starts its sync thread.
    pub fn open(store: Arc<KvStore>) -> Result<Self, StorageError> {
        Self::open_with_fsync(store, true)
    }

    /// Like [`LogStore::open`]; with `fsync` false appends are only flushed to the operating
    /// system (`--unsafe-no-fsync`: survives a process crash, not a power loss; tests only).
    pub fn open_with_fsync(store: Arc<KvStore>, fsync: bool) -> Result<Self, StorageError> {
        let (queue, pending) = mpsc::channel();
        let sync_store = Arc::clone(&store);
        let thread = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(&sync_store, &pending, fsync))
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        Ok(Self {
            reader: LogReader {
                store,
                cache: Arc::default(),
            },
            syncer: Some(Syncer { queue, thread }),
            member: None,
            fsync,
        })
    }

    /// The same log store, told that it belongs to member `id`: appends of entries made by
    /// another leader are then synced before `append` returns instead of on the sync thread.
    pub fn for_member(mut self, id: NodeId) -> Self {
        self.member = Some(id);
        self
    }

    fn store(&self) -> &KvStore {
        &self.reader.store
    }

    /// Reads a `raft_state` value.
    fn read_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>, StorageError> {
        self.reader.read_state(key, subject)
    }

    /// A read handle on this log, for readers outside openraft (the pre-vote elector).
    pub fn reader(&self) -> LogReader {
        self.reader.clone()
    }

    /// Writes a batch on the calling task; with `sync`, returns once it is on disk.
    fn write_here(&self, batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.store().backend().db().write_opt(batch, &opts)
    }

    /// Writes a batch; with `sync`, on a blocking thread, returning once it is on disk.
    async fn write(&self, batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
        if !sync {
            return self.write_here(batch, false);
        }
        let mut opts = WriteOptions::default();
        opts.set_sync(true);
        let store = Arc::clone(&self.reader.store);
        tokio::task::spawn_blocking(move || store.backend().db().write_opt(batch, &opts))
            .await
            .unwrap_or_else(|e| panic!("invariant: a log write task never panics: {e}"))
    }
}

impl Drop for LogStore {
    fn drop(&mut self) {
        if let Some(Syncer { queue, thread }) = self.syncer.take() {
            drop(queue);
            if thread.join().is_err() {
                tracing::error!("raft log sync thread panicked");
            }
        }
    }
}

/// Syncs the WAL for every batch of queued appends, then completes their callbacks in order.
fn sync_loop(store: &KvStore, pending: &mpsc::Receiver<LogFlushed>, fsync: bool) {
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        group.extend(pending.try_iter());
        let result = store.backend().db().flush_wal(fsync);
        if let Err(err) = &result {
            tracing::error!(cause = %err, "raft log fsync failed");
        }
        for callback in group {
            callback.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::other(e.to_string())),
            );
        }
    }
}

/// Whether an append to the log of `member` is a follower's: its entries were made by a leader
/// other than this member, so it is synced before `append` returns. The leader's own appends
/// return before their fsync (see the module docs); so does every append of a log store that
/// does not know its member.
fn is_followers_append(member: Option<NodeId>, entries: &[Entry]) -> bool {
    match (member, entries.first()) {
        (Some(me), Some(first)) => first.log_id.leader_id.node_id != me,
        _ => false,
    }
}

/// The read error of the log.
fn read_logs_err(e: &(dyn std::error::Error + 'static)) -> StorageError {
    StorageIOError::read_logs(AnyError::from_dyn(e, None)).into()
}

/// The write error of the log.
fn write_logs_err(e: &(dyn std::error::Error + 'static)) -> StorageError {
    StorageIOError::write_logs(AnyError::from_dyn(e, None)).into()
}

impl LogReader {
    /// Reads a `raft_state` value.
    pub(crate) fn read_state<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<u64>,
    ) -> Result<Option<T>, StorageError> {
        let backend = self.store.backend();
        let err = |e: &(dyn std::error::Error + 'static)| {
            StorageError::from(StorageIOError::new(
                subject.clone(),
                ErrorVerb::Read,
                AnyError::from_dyn(e, None),
            ))
        };
        let Some(bytes) = backend
            .db()
            .get_pinned_cf(&backend.cf(CF_RAFT_STATE), key)
            .map_err(|e| err(&e))?
        else {
            return Ok(None);
        };
        codec::decode(&bytes).map(Some).map_err(|e| err(&e))
    }

    /// The id of the last entry in the log, appended but perhaps not yet synced (`None` when
    /// the log is empty).
    fn last_entry_id(&self) -> Result<Option<LogId>, StorageError> {
        let backend = self.store.backend();
        let last = backend
            .db()
            .iterator_cf(&backend.cf(CF_RAFT_LOG), IteratorMode::End)
            .next()
            .transpose()
            .map_err(|e| read_logs_err(&e))?;
        match last {
            Some((_, value)) => {
                let entry: Entry = codec::decode(&value).map_err(|e| read_logs_err(&e))?;
                Ok(Some(*entry.get_log_id()))
            }
            None => Ok(None),
        }
    }

    /// The id of the last log entry, or of the last purged one when the log is empty: what a
    /// vote compares.
    pub fn last_log_id(&self) -> Result<Option<LogId>, StorageError> {
        match self.last_entry_id()? {
            Some(id) => Ok(Some(id)),
            None => self.read_state(KEY_LAST_PURGED, ErrorSubject::Logs),
        }
    }

    /// Entries with index in `[start, end)` (`end` `None`: to the end of the log), in order:
    /// from the cache when it holds them, from disk otherwise.
    fn entries(&self, start: u64, end: Option<u64>) -> Result<Vec<Entry>, StorageError> {
        if let Some(entries) = self.cache.lock().get(start, end) {
            return Ok(entries);
        }
        let backend = self.store.backend();
        let mut opts = ReadOptions::default();
        if let Some(end) = end {
            if end <= start {
                return Ok(Vec::new());
            }
            opts.set_iterate_upper_bound(log_key(end));
        }
        let start_key = log_key(start);
        let iter = backend.db().iterator_cf_opt(
            &backend.cf(CF_RAFT_LOG),
            opts,
            IteratorMode::From(&start_key, Direction::Forward),
        );
        let mut out = Vec::new();
        for item in iter {
            let (key, value) = item.map_err(|e| read_logs_err(&e))?;
            let entry: Entry = codec::decode(&value).map_err(|e| read_logs_err(&e))?;
            if log_index(&key) != Some(entry.log_id.index) {
                return Err(read_logs_err(&io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("log entry {} stored under key {key:?}", entry.log_id),
                )));
            }
            out.push(entry);
        }
        Ok(out)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(i) => i.checked_add(1),
            Bound::Excluded(i) => Some(*i),
            Bound::Unbounded => None,
        };
        self.entries(start, end)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        self.reader.try_get_log_entries(range).await
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState, StorageError> {
        let last_purged: Option<LogId> = self.read_state(KEY_LAST_PURGED, ErrorSubject::Logs)?;
        let last_log_id = self.reader.last_entry_id()?.or(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        self.reader.clone()
    }

    /// Durable before returning (see the module's durability notes).
    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        let err = |e: &(dyn std::error::Error + 'static)| {
            StorageIOError::write_vote(AnyError::from_dyn(e, None))
        };
        let bytes = codec::encode(vote).map_err(|e| err(&e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(&self.store().backend().cf(CF_RAFT_STATE), KEY_VOTE, bytes);
        self.write(batch, true).await.map_err(|e| err(&e))?;
        Ok(())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_state(KEY_VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let err = |e: &(dyn std::error::Error + 'static)| {
            StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Write,
                AnyError::from_dyn(e, None),
            )
        };
        let bytes = codec::encode(&committed).map_err(|e| err(&e))?;
        let mut batch = WriteBatch::default();
        batch.put_cf(
            &self.store().backend().cf(CF_RAFT_STATE),
            KEY_COMMITTED,
            bytes,
        );
        self.write(batch, false).await.map_err(|e| err(&e))?;
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_state::<Option<LogId>>(KEY_COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    /// One batch for the call, readable on return; the callback fires after the fsync.
    async fn append<I>(&mut self, entries: I, callback: LogFlushed) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let mut batch = WriteBatch::default();
        {
            let cf = self.store().backend().cf(CF_RAFT_LOG);
            for entry in &entries {
                let bytes = codec::encode_sized(entry, codec::encoded_size_hint(entry))
                    .map_err(|e| write_logs_err(&e))?;
                batch.put_cf(&cf, log_key(entry.log_id.index), bytes);
            }
        }
        let follower = is_followers_append(self.member, &entries);
        self.write_here(batch, follower && self.fsync)
            .map_err(|e| write_logs_err(&e))?;
        self.reader.cache.lock().append(&entries);
        if follower {
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let Some(syncer) = &self.syncer else {
            unreachable!("invariant: the sync thread lives as long as the log store");
        };
        if let Err(mpsc::SendError(callback)) = syncer.queue.send(callback) {
            callback.log_io_completed(Err(io::Error::other("raft log sync thread stopped")));
        }
        Ok(())
    }

    /// Removes entries at and after `log_id` (a follower's conflicting suffix).
    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(
            &self.store().backend().cf(CF_RAFT_LOG),
            &log_key(log_id.index)[..],
            &LOG_KEY_END[..],
        );
        self.write(batch, false)
            .await
            .map_err(|e| write_logs_err(&e))?;
        // Only uncommitted entries are truncated, and nobody reads those meanwhile: replication
        // reads on a leader, which never truncates, and applying reads committed entries.
        self.reader.cache.lock().truncate(log_id.index);
        Ok(())
    }

    /// Removes entries up to and including `log_id`, recording it as the last purged; synced.
    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Applied commands skip RocksDB's WAL: entries about to go must be applied on disk,
        // not only in memtables, or a crash would leave nothing to replay them from.
        let store = Arc::clone(&self.reader.store);
        tokio::task::spawn_blocking(move || store.backend().persist())
            .await
            .unwrap_or_else(|e| panic!("invariant: a flush task never panics: {e}"))
            .map_err(|e| write_logs_err(&e))?;
        let bytes = codec::encode(&log_id).map_err(|e| write_logs_err(&e))?;
        let mut batch = WriteBatch::default();
        {
            let backend = self.store().backend();
            batch.put_cf(&backend.cf(CF_RAFT_STATE), KEY_LAST_PURGED, bytes);
            let cf = backend.cf(CF_RAFT_LOG);
            match log_id.index.checked_add(1) {
                Some(end) => batch.delete_range_cf(&cf, &log_key(0)[..], &log_key(end)[..]),
                None => batch.delete_range_cf(&cf, &log_key(0)[..], &LOG_KEY_END[..]),
            }
        }
        self.write(batch, true)
            .await
            .map_err(|e| write_logs_err(&e))?;
        self.reader.cache.lock().purge(log_id.index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn blank(leader: NodeId, index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, leader), index),
            payload: EntryPayload::Blank,
        }
    }

    #[test]
    fn only_entries_another_leader_made_are_a_followers_append() {
        assert!(is_followers_append(Some(1), &[blank(2, 1), blank(2, 2)]));
        assert!(!is_followers_append(Some(2), &[blank(2, 1), blank(2, 2)]));
        assert!(!is_followers_append(None, &[blank(2, 1)]));
        assert!(!is_followers_append(Some(1), &[]));
    }
}
