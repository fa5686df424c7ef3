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
//!   `WriteBatch` of the `raft_log` column family, written without RocksDB's WAL (so they are
//!   readable at once, as openraft requires), and into one record of the [`Journal`], which is
//!   what makes them durable: the call's [`LogFlushed`] callback completes after the journal's
//!   `fdatasync`, in one of two places:
//!   - *The leader's own entries* go to a dedicated sync thread, which syncs the journal and
//!     then completes the callbacks of every append queued while it was syncing (group commit
//!     across calls as well as within one). `append` returns before the fsync, so the leader
//!     sends the entries to its followers while its own fsync runs (the openraft patch in
//!     `third_party/openraft`).
//!   - *Entries from another leader* (this member follows) are synced on the calling task
//!     before `append` returns, as etcd's follower saves its WAL before it answers. Raft's core
//!     only waits for that flush anyway, and handing it to the sync thread cost a wake-up
//!     there and back on every append (single-client put p50 −5 % without it, see
//!     `docs/benchmarks.md`). The task's worker is blocked for one `fdatasync`; the runtime's
//!     other worker takes the queued tasks meanwhile.
//!
//!   At open, the journal's records are written back into `raft_log` (a crash loses what was
//!   only in RocksDB's memtables), the store is flushed, and the old segments are deleted.
//!   While running, when the journal starts a new segment, a flush of all column families
//!   makes the older segments redundant and they are deleted; purging the log and closing
//!   the store do the same.
//! - **Vote** is written with `sync` before `save_vote` returns: a member must never forget a
//!   vote it granted, or it could vote twice in one term.
//! - **Committed** is written unsynced: losing it only means waiting for the leader to repeat it.
//! - **Truncate** (removing a follower's conflicting suffix) is journaled unsynced: nothing is
//!   acknowledged on top of it before the next append's fsync, which makes it durable too.
//! - **Purge** is synced. It runs after a snapshot covers the purged entries; a flush first
//!   makes the (unsynced) applies the snapshot reflects durable, so a crash can never leave the
//!   state machine behind the first entry still in the log. Replaying the journal skips the
//!   entries a purge removed.

// `StorageError` is openraft's error, required by its traits; boxing it in the helpers only to
// unbox it at the trait boundary would buy nothing.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::fs::File;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::mpsc;
use std::sync::Arc;
use std::thread::JoinHandle;

use openraft::storage::{RaftLogReader, RaftLogStorage};
use openraft::{AnyError, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};
use parking_lot::Mutex;
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};

use super::codec::{self, log_index, log_key, LOG_KEY_END};
use super::entry_cache::EntryCache;
use super::journal::{Journal, Record, SEGMENT_BYTES};
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
/// The journal's directory, inside the member's RocksDB directory.
const JOURNAL_DIR: &str = "raft-journal";

/// The Raft log store of one member: [`RaftLogStorage`] over the `raft_log` and `raft_state`
/// column families of the member's database.
pub struct LogStore {
    /// Reads shared with replication tasks.
    reader: LogReader,
    /// The sync thread and the queue of appends waiting for its next fsync. `None` only while
    /// being dropped.
    syncer: Option<Syncer>,
    /// What makes appends durable.
    journal: Journal,
    /// This member's Raft ID, if known: entries made by another leader are synced inline (see
    /// the module docs). `None` sends every append to the sync thread.
    member: Option<NodeId>,
    /// Appends are fsynced (false only with `--unsafe-no-fsync`).
    fsync: bool,
}

/// The thread that makes appends durable and completes their callbacks, in order.
struct Syncer {
    /// Appends written but not yet synced, with the journal segment each was written to.
    queue: mpsc::Sender<(Arc<File>, LogFlushed)>,
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
        let reader = LogReader {
            store,
            cache: Arc::default(),
        };
        let dir = reader.store.backend().db().path().join(JOURNAL_DIR);
        reader.replay_journal(&dir)?;
        let journal = Journal::open(&dir, SEGMENT_BYTES).map_err(|e| write_logs_err(&e))?;
        Journal::remove_before(&dir, journal.active_seq()).map_err(|e| write_logs_err(&e))?;
        let (queue, pending) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("raft-log-sync".into())
            .spawn(move || sync_loop(&pending, fsync))
            .map_err(|e| StorageIOError::write_logs(AnyError::new(&e)))?;
        Ok(Self {
            reader,
            syncer: Some(Syncer { queue, thread }),
            journal,
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

    /// Writes a batch of `raft_log` changes without RocksDB's WAL: the journal holds them.
    fn write_unlogged(&self, batch: WriteBatch) -> Result<(), rocksdb::Error> {
        write_unlogged(self.store(), batch)
    }

    /// Writes a batch on the calling task through RocksDB's WAL; with `sync`, returns once it
    /// is on disk.
    fn write_here(&self, batch: WriteBatch, sync: bool) -> Result<(), rocksdb::Error> {
        let mut opts = WriteOptions::default();
        opts.set_sync(sync);
        self.store().backend().db().write_opt(batch, &opts)
    }

    /// After the journal started a new segment: flushes the store and deletes the segments
    /// before it, in the background.
    fn checkpoint_in_background(&self) {
        let store = Arc::clone(&self.reader.store);
        let dir = self.journal.dir().to_path_buf();
        let before = self.journal.active_seq();
        tokio::task::spawn_blocking(move || {
            if let Err(err) = checkpoint(&store, &dir, before) {
                tracing::warn!(cause = %err, "could not delete old raft journal segments");
            }
        });
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
    /// Stops the sync thread; then, with the log flushed into RocksDB's tables, the journal
    /// is no longer needed, and goes (a stopped member keeps no preallocated segment).
    fn drop(&mut self) {
        if let Some(Syncer { queue, thread }) = self.syncer.take() {
            drop(queue);
            if thread.join().is_err() {
                tracing::error!("raft log sync thread panicked");
            }
        }
        if let Err(err) = checkpoint(self.store(), self.journal.dir(), u64::MAX) {
            tracing::warn!(cause = %err, "could not delete the raft journal at close");
        }
    }
}

/// Flushes every column family, making the `raft_log` entries of the journal's segments
/// before `before` durable in RocksDB's tables, and deletes those segments.
fn checkpoint(store: &KvStore, dir: &Path, before: u64) -> io::Result<()> {
    store.backend().persist().map_err(io::Error::other)?;
    Journal::remove_before(dir, before)
}

/// Writes a batch without RocksDB's WAL.
fn write_unlogged(store: &KvStore, batch: WriteBatch) -> Result<(), rocksdb::Error> {
    let mut opts = WriteOptions::default();
    opts.disable_wal(true);
    store.backend().db().write_opt(batch, &opts)
}

/// Syncs the journal for every batch of queued appends, then completes their callbacks in
/// order. A batch spans two segments only when the journal started a new one in it; each
/// segment is synced once, oldest first.
fn sync_loop(pending: &mpsc::Receiver<(Arc<File>, LogFlushed)>, fsync: bool) {
    while let Ok(first) = pending.recv() {
        let mut group = vec![first];
        group.extend(pending.try_iter());
        let mut result = Ok(());
        if fsync {
            let mut last: Option<&Arc<File>> = None;
            for (file, _) in &group {
                if last.is_some_and(|l| Arc::ptr_eq(l, file)) {
                    continue;
                }
                last = Some(file);
                if let Err(err) = file.sync_data() {
                    tracing::error!(cause = %err, "raft log fsync failed");
                    result = Err(err);
                    break;
                }
            }
        }
        for (_, callback) in group {
            callback.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| io::Error::new(e.kind(), e.to_string())),
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
    /// Writes the journal's records in `dir` back into `raft_log` (see the module docs), one
    /// segment at a time, then flushes the store so the segments can go. Entries a purge
    /// removed stay removed.
    fn replay_journal(&self, dir: &Path) -> Result<(), StorageError> {
        let segments = Journal::segments(dir).map_err(|e| read_logs_err(&e))?;
        let last_purged: Option<LogId> = self.read_state(KEY_LAST_PURGED, ErrorSubject::Logs)?;
        let purged = last_purged.map(|id| id.index);
        let backend = self.store.backend();
        let cf = backend.cf(CF_RAFT_LOG);
        let (mut records, mut restored) = (0usize, 0usize);
        for seq in segments {
            let mut batch = WriteBatch::default();
            for record in Journal::read_segment(dir, seq).map_err(|e| read_logs_err(&e))? {
                records += 1;
                match record {
                    Record::Entries(entries) => {
                        for (i, bytes) in entries.iter().enumerate() {
                            let entry: Entry =
                                codec::decode(bytes).map_err(|e| read_logs_err(&e))?;
                            let index = entry.log_id.index;
                            if i == 0 {
                                // An append follows the log's last entry: anything after that
                                // point in the store is from a later record, which comes again.
                                batch.delete_range_cf(&cf, &log_key(index)[..], &LOG_KEY_END[..]);
                            }
                            if purged.is_none_or(|p| index > p) {
                                batch.put_cf(&cf, log_key(index), bytes);
                                restored += 1;
                            }
                        }
                    }
                    Record::Truncate(index) => {
                        batch.delete_range_cf(&cf, &log_key(index)[..], &LOG_KEY_END[..]);
                    }
                }
            }
            write_unlogged(&self.store, batch).map_err(|e| write_logs_err(&e))?;
        }
        if records == 0 {
            return Ok(());
        }
        backend.persist().map_err(|e| write_logs_err(&e))?;
        tracing::info!(
            records,
            entries = restored,
            "raft log entries restored from the journal"
        );
        Ok(())
    }

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
        let mut encoded = Vec::with_capacity(entries.len());
        {
            let cf = self.store().backend().cf(CF_RAFT_LOG);
            for entry in &entries {
                let bytes = codec::encode_sized(entry, codec::encoded_size_hint(entry))
                    .map_err(|e| write_logs_err(&e))?;
                batch.put_cf(&cf, log_key(entry.log_id.index), &bytes);
                encoded.push(bytes);
            }
        }
        // The store first: a journal segment is deleted once the store holds all it has.
        self.write_unlogged(batch).map_err(|e| write_logs_err(&e))?;
        let (file, rolled) = self
            .journal
            .append_entries(encoded.iter().map(Vec::as_slice))
            .map_err(|e| write_logs_err(&e))?;
        if rolled {
            self.checkpoint_in_background();
        }
        self.reader.cache.lock().append(&entries);
        if is_followers_append(self.member, &entries) {
            if self.fsync {
                file.sync_data().map_err(|e| write_logs_err(&e))?;
            }
            callback.log_io_completed(Ok(()));
            return Ok(());
        }
        let Some(syncer) = &self.syncer else {
            unreachable!("invariant: the sync thread lives as long as the log store");
        };
        if let Err(mpsc::SendError((_, callback))) = syncer.queue.send((file, callback)) {
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
        self.write_unlogged(batch).map_err(|e| write_logs_err(&e))?;
        let (_, rolled) = self
            .journal
            .append_truncate(log_id.index)
            .map_err(|e| write_logs_err(&e))?;
        if rolled {
            self.checkpoint_in_background();
        }
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
        // The flush above holds every segment before the one being written.
        Journal::remove_before(self.journal.dir(), self.journal.active_seq())
            .map_err(|e| write_logs_err(&e))?;
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
