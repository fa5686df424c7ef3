//! The Raft state machine: committed entries applied to the revisioned store.
//!
//! Normal entries carry a [`Command`](crate::apply::Command), run by the
//! [`Applier`]; blank and membership entries change no data and are only recorded. The
//! applied position is kept in the `meta` column family:
//!
//! | `meta` key | value |
//! |---|---|
//! | `raft_applied` | postcard [`LogId`] of the last applied entry |
//! | `raft_membership` | postcard [`StoredMembership`], the last membership applied |
//! | `consistent_index` | big-endian `i64` index of the last applied entry (etcd's consistent index) |
//!
//! # Durability
//! Before each entry is applied, its position is staged with [`KvStore::stage_apply_position`], so
//! it is written in the same `WriteBatch` as the data the entry changes (or on its own with
//! [`KvStore::flush_apply_meta`] when the entry changed nothing): after a crash the data and
//! the recorded position always agree. Applies are not synced (DESIGN.md, decision 4): a crash
//! may lose the last few, and openraft re-applies them from the log, which the log store only
//! purges behind a snapshot once a synced write has made the applies it covers durable.

// `StorageError` is openraft's error, required by its traits; boxing it in the helpers only to
// unbox it at the trait boundary would buy nothing.
#![allow(clippy::result_large_err)]

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Seek, SeekFrom};
use std::path::Path;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use kvstore_proto::raftpb;
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{AnyError, OptionalSend, RaftLogId};
use tokio::io::AsyncWriteExt;

use super::codec;
use super::snapshot::{self, SnapshotDir};
use super::types::{
    Entry, EntryPayload, LogId, NodeId, Response, Snapshot, SnapshotMeta, StorageError,
    StorageIOError, StoredMembership, TypeConfig,
};
use crate::apply::{Applier, Command};
use crate::mvcc::backend::{encode_i64, CF_META, META_CONSISTENT_INDEX};
use crate::mvcc::{self, KvStore};

/// `meta` key of the last applied log id.
pub const META_RAFT_APPLIED: &[u8] = b"raft_applied";
/// `meta` key of the last applied membership.
pub const META_RAFT_MEMBERSHIP: &[u8] = b"raft_membership";
/// `meta` key of the progress through a batch entry ([`Command::Batch`]): its log index and how
/// many of its commands are applied. Written with each write of its commands (a write group or
/// a command applied alone), so that after a crash part-way the entry (re-applied, since the
/// applied log id is still the one before it) resumes with the first command not yet applied.
pub const META_RAFT_BATCH: &[u8] = b"raft_batch_progress";

/// Key-values for the `meta` column family.
type MetaEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Rebuilds what lives in memory from the store's column families, after a snapshot replaced
/// them: the store's index and lease table, the alarms, the lessor's timers, the watchers.
/// Called on a blocking thread, after the data is on disk and before the install returns.
pub type AfterInstall = Arc<dyn Fn(&KvStore) -> Result<(), crate::Error> + Send + Sync>;

/// The state machine of one member: [`RaftStateMachine`] over its [`KvStore`].
pub struct StateMachine {
    /// The store commands apply to (the same one `applier` writes).
    store: Arc<KvStore>,
    /// Runs commands.
    applier: Arc<Applier>,
    /// This member (alarms name the member that raised them).
    member_id: NodeId,
    /// The current snapshot and temporary files.
    snapshots: Arc<SnapshotDir>,
    /// Rebuilds in-memory state after an install.
    after_install: AfterInstall,
    /// The last applied log id, as recorded in `meta`.
    last_applied: Option<LogId>,
    /// The last applied membership, as recorded in `meta`.
    last_membership: StoredMembership,
}

/// Builds a snapshot of the state machine from a RocksDB snapshot, on a blocking thread.
pub struct SnapshotBuilder {
    /// The store to snapshot.
    store: Arc<KvStore>,
    /// Where the snapshot file goes.
    snapshots: Arc<SnapshotDir>,
}

fn io_err(
    subject: fn(AnyError) -> StorageIOError,
    e: &(dyn std::error::Error + 'static),
) -> StorageError {
    subject(AnyError::from_dyn(e, None)).into()
}

fn read_sm(e: &(dyn std::error::Error + 'static)) -> StorageError {
    io_err(StorageIOError::read_state_machine, e)
}

fn write_sm(e: &(dyn std::error::Error + 'static)) -> StorageError {
    io_err(StorageIOError::write_state_machine, e)
}

fn join_err(e: tokio::task::JoinError) -> StorageError {
    write_sm(&io::Error::other(format!("state machine task: {e}")))
}

/// Reads the applied position through `get` (the database or a snapshot of it).
fn read_applied(
    get: impl Fn(&[u8]) -> Result<Option<Vec<u8>>, rocksdb::Error>,
) -> io::Result<(Option<LogId>, StoredMembership)> {
    let applied = match get(META_RAFT_APPLIED).map_err(io::Error::other)? {
        Some(bytes) => Some(codec::decode(&bytes).map_err(io::Error::other)?),
        None => None,
    };
    let membership = match get(META_RAFT_MEMBERSHIP).map_err(io::Error::other)? {
        Some(bytes) => codec::decode(&bytes).map_err(io::Error::other)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// The `meta` entries recording `log_id` as applied (and `membership`, if it changed).
fn position_meta(
    log_id: &LogId,
    membership: Option<&StoredMembership>,
) -> Result<MetaEntries, postcard::Error> {
    let mut meta = vec![(META_RAFT_APPLIED.to_vec(), codec::encode(log_id)?)];
    if let Some(m) = membership {
        meta.push((META_RAFT_MEMBERSHIP.to_vec(), codec::encode(m)?));
    }
    Ok(meta)
}

/// Whether an apply error means the store itself failed (stop the node) rather than the
/// command being refused (an answer for the client, the same on every member).
fn is_fatal(err: &crate::Error) -> bool {
    matches!(
        err,
        crate::Error::Store(mvcc::Error::Backend(_) | mvcc::Error::Corrupt(_))
    )
}

impl StateMachine {
    /// The state machine over `store`, run by `applier` (which must write the same store),
    /// keeping snapshots in `snapshot_dir`. Blocking: reads the applied position, and finishes
    /// installing a snapshot that a crash interrupted (calling `after_install` if it does).
    pub fn open(
        store: Arc<KvStore>,
        applier: Arc<Applier>,
        member_id: NodeId,
        snapshot_dir: &Path,
        after_install: AfterInstall,
    ) -> Result<Self, StorageError> {
        let snapshots = Arc::new(SnapshotDir::open(snapshot_dir).map_err(|e| read_sm(&e))?);
        let (last_applied, last_membership) = {
            let backend = store.backend();
            read_applied(|k| backend.db().get_cf(&backend.cf(CF_META), k))
                .map_err(|e| read_sm(&e))?
        };
        let mut sm = Self {
            store,
            applier,
            member_id,
            snapshots,
            after_install,
            last_applied,
            last_membership,
        };
        if let Some(meta) = sm.snapshots.current_meta() {
            if meta.last_log_id > sm.last_applied {
                tracing::warn!(
                    snapshot = %meta,
                    "installing the current snapshot again: the last install was interrupted"
                );
                install_current(&sm.store, &sm.snapshots, &meta, &sm.after_install)
                    .map_err(|e| write_sm(&e))?;
                sm.last_applied = meta.last_log_id;
                sm.last_membership = meta.last_membership.clone();
            }
        }
        Ok(sm)
    }

    /// The store this state machine applies to.
    pub fn store(&self) -> &Arc<KvStore> {
        &self.store
    }
}

/// Whether applying `entry` is quick enough to do on the state machine's own task. Handing
/// an apply call to a blocking thread and back took longer than the applying itself (at 256
/// clients: 635 µs per call against 313 µs of work, ~26 puts per call; see
/// `docs/benchmarks.md`), so entries of single-key commands ([`Command::is_light`]) are
/// applied in place; only commands whose cost grows with the store (range deletes, lease
/// revokes, compactions) take the hand-off, so they cannot hold up the runtime's other tasks.
fn is_light(entry: &Entry) -> bool {
    match &entry.payload {
        EntryPayload::Normal(request) => request.command().is_light(),
        EntryPayload::Blank | EntryPayload::Membership(_) => true,
    }
}

/// Applies entries in order (on the caller's thread: see [`is_light`]); returns one response
/// each and the new applied position.
fn apply_entries(
    store: &KvStore,
    applier: &Applier,
    member_id: NodeId,
    entries: Vec<Entry>,
    mut membership: StoredMembership,
) -> Result<(Vec<Response>, Option<LogId>, StoredMembership), StorageError> {
    let mut responses = Vec::with_capacity(entries.len());
    let mut last = None;
    for entry in entries {
        let log_id = *entry.get_log_id();
        let apply_err = |e: &(dyn std::error::Error + 'static)| {
            StorageError::from(StorageIOError::apply(log_id, AnyError::from_dyn(e, None)))
        };
        let new_membership = match &entry.payload {
            EntryPayload::Membership(m) => Some(StoredMembership::new(Some(log_id), m.clone())),
            _ => None,
        };
        let stage_position = || -> Result<(), StorageError> {
            store.stage_apply_position(
                log_id.index,
                position_meta(&log_id, new_membership.as_ref()).map_err(|e| apply_err(&e))?,
            );
            Ok(())
        };
        let response = match entry.payload {
            EntryPayload::Normal(request) => match request.into_command() {
                Command::Batch(commands) => {
                    apply_batch(store, applier, member_id, &log_id, commands)?
                }
                command => {
                    stage_position()?;
                    apply_command(store, applier, member_id, &log_id, command)?
                }
            },
            EntryPayload::Blank | EntryPayload::Membership(_) => {
                stage_position()?;
                store.flush_apply_meta().map_err(|e| apply_err(&e))?;
                Response::empty()
            }
        };
        if let Some(m) = new_membership {
            membership = m;
        }
        last = Some(log_id);
        responses.push(response);
    }
    Ok((responses, last, membership))
}

/// Applies one command of the entry at `log_id` (its apply position already staged), then
/// writes the staged position if the command wrote nothing. A refused command is an answer
/// for its client; only a failing store stops the member.
fn apply_command(
    store: &KvStore,
    applier: &Applier,
    member_id: NodeId,
    log_id: &LogId,
    command: Command,
) -> Result<Response, StorageError> {
    let apply_err = |e: &(dyn std::error::Error + 'static)| {
        StorageError::from(StorageIOError::apply(*log_id, AnyError::from_dyn(e, None)))
    };
    let result = applier.apply(command, member_id);
    if let Err(err) = &result {
        if is_fatal(err) {
            return Err(apply_err(err));
        }
    }
    store.flush_apply_meta().map_err(|e| apply_err(&e))?;
    Ok(Response::from(result))
}

/// Applies the commands of the batch entry at `log_id`, each as if it were an entry of its own,
/// recording how far into the batch the store is ([`META_RAFT_BATCH`]); the entry's log id is
/// recorded with the last one. Runs of puts, deletes and writing transactions share one
/// RocksDB write ([`mvcc::WriteGroup`]); the other commands are applied alone, between runs.
/// Commands a crash left applied are skipped (nobody waits for their results any more).
fn apply_batch(
    store: &KvStore,
    applier: &Applier,
    member_id: NodeId,
    log_id: &LogId,
    commands: Vec<Command>,
) -> Result<Response, StorageError> {
    let apply_err = |e: &(dyn std::error::Error + 'static)| {
        StorageError::from(StorageIOError::apply(*log_id, AnyError::from_dyn(e, None)))
    };
    let backend = store.backend();
    let progress = backend
        .db()
        .get_cf(&backend.cf(CF_META), META_RAFT_BATCH)
        .map_err(|e| apply_err(&e))?;
    let done = match progress {
        Some(bytes) => match codec::decode::<(u64, u64)>(&bytes).map_err(|e| apply_err(&e))? {
            (index, done) if index == log_id.index => done as usize,
            _ => 0,
        },
        None => 0,
    };
    let total = commands.len();
    // Stages the record that the first `applied` commands are applied (and, after the last
    // one, the entry), for the next write.
    let stage = |applied: usize| -> Result<(), StorageError> {
        let progress = codec::encode(&(log_id.index, applied as u64)).map_err(|e| apply_err(&e))?;
        if applied == total {
            let mut meta = position_meta(log_id, None).map_err(|e| apply_err(&e))?;
            meta.push((META_RAFT_BATCH.to_vec(), progress));
            store.stage_apply_position(log_id.index, meta);
        } else {
            store.stage_apply_meta(vec![(META_RAFT_BATCH.to_vec(), progress)]);
        }
        Ok(())
    };
    let mut results = Vec::with_capacity(total);
    let mut group: Option<mvcc::WriteGroup<'_>> = None;
    for (i, command) in commands.into_iter().enumerate() {
        if i < done {
            results.push(
                Response::from(Err(crate::Error::Internal(
                    "applied before a restart".into(),
                )))
                .0,
            );
            continue;
        }
        if command.may_join_group() {
            if group.is_none() {
                group = Some(store.begin_group());
            }
            let result = applier.apply(command, member_id);
            if let Err(err) = &result {
                if is_fatal(err) {
                    // Dropping the group undoes it; the entry is applied again after a restart.
                    return Err(apply_err(err));
                }
            }
            results.push(Response::from(result).0);
            continue;
        }
        if let Some(open) = group.take() {
            stage(i)?;
            open.end().map_err(|e| apply_err(&e))?;
        }
        stage(i + 1)?;
        results.push(apply_command(store, applier, member_id, log_id, command)?.0);
    }
    if let Some(open) = group.take() {
        stage(total)?;
        open.end().map_err(|e| apply_err(&e))?;
    }
    if done >= total {
        // Nothing left to apply (or an empty batch): record the entry as applied.
        store.stage_apply_position(
            log_id.index,
            position_meta(log_id, None).map_err(|e| apply_err(&e))?,
        );
        store.flush_apply_meta().map_err(|e| apply_err(&e))?;
    }
    Ok(Response(raftpb::ApplyResult {
        result: Some(raftpb::apply_result::Result::Batch(raftpb::ApplyResults {
            results,
        })),
    }))
}

/// Replaces the store's contents with the current snapshot and rebuilds in-memory state.
fn install_current(
    store: &KvStore,
    snapshots: &SnapshotDir,
    meta: &SnapshotMeta,
    after_install: &AfterInstall,
) -> io::Result<()> {
    let mut position = Vec::new();
    if let Some(log_id) = &meta.last_log_id {
        position = position_meta(log_id, Some(&meta.last_membership)).map_err(io::Error::other)?;
        position.push((
            META_CONSISTENT_INDEX.to_vec(),
            encode_i64(log_id.index as i64).to_vec(),
        ));
    }
    let path = snapshots.current_path();
    store
        .replace_contents(|backend| {
            snapshot::install_file(backend, &path, &position)
                .map_err(|e| crate::Error::Internal(format!("install snapshot: {e}")))
        })
        .map_err(io::Error::other)?;
    after_install(store).map_err(io::Error::other)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok((self.last_applied, self.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let store = Arc::clone(&self.store);
        let applier = Arc::clone(&self.applier);
        let member_id = self.member_id;
        let membership = self.last_membership.clone();
        if entries[0].log_id.leader_id.node_id != member_id {
            // A follower's acknowledgement of the entries that carried this commit is ready
            // before they are applied: openraft's core answers the AppendEntries and then hands
            // the commit to this task, and tokio runs the task woken last first, so the apply
            // would run before the answer goes out, and the leader's commit (the write's
            // latency) would wait for it. Applying after a yield lets the answer go first:
            // single-client put p50 -3 %, 4 pairs (docs/benchmarks.md). A leader applies its
            // own entries at once: its clients wait for exactly that.
            tokio::task::yield_now().await;
        }
        let (responses, last, membership) = if entries.iter().all(is_light) {
            apply_entries(&store, &applier, member_id, entries, membership)?
        } else {
            tokio::task::spawn_blocking(move || {
                apply_entries(&store, &applier, member_id, entries, membership)
            })
            .await
            .map_err(join_err)??
        };
        if last.is_some() {
            self.last_applied = last;
        }
        self.last_membership = membership;
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder {
            store: Arc::clone(&self.store),
            snapshots: Arc::clone(&self.snapshots),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let (_, file) = self
            .snapshots
            .temp_file("recv")
            .map_err(|e| io_err(|e| StorageIOError::write_snapshot(None, e), &e))?;
        Ok(Box::new(tokio::fs::File::from_std(file)))
    }

    /// Verifies and keeps the received file as the current snapshot, then replaces the store's
    /// contents with it (see [`snapshot`] for the crash-safety argument).
    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        let signature = meta.signature();
        let err = |e: &(dyn std::error::Error + 'static)| {
            StorageError::from(StorageIOError::write_snapshot(
                Some(signature.clone()),
                AnyError::from_dyn(e, None),
            ))
        };
        let mut received = *snapshot;
        received.flush().await.map_err(|e| err(&e))?;
        let received = received.into_std().await;
        let store = Arc::clone(&self.store);
        let snapshots = Arc::clone(&self.snapshots);
        let after_install = Arc::clone(&self.after_install);
        let meta_owned = meta.clone();
        tokio::task::spawn_blocking(move || -> io::Result<()> {
            let meta = meta_owned;
            let mut received = received;
            received.seek(SeekFrom::Start(0))?;
            let (temp, copy) = snapshots.temp_file("install")?;
            let header = snapshot::copy_verified(
                BufReader::with_capacity(1 << 20, received),
                BufWriter::with_capacity(1 << 20, &copy),
            )?;
            let header: SnapshotMeta = match header {
                Some(h) => codec::decode(&h).map_err(io::Error::other)?,
                None => return Err(io::Error::other("received snapshot has no Raft header")),
            };
            if header != meta {
                return Err(io::Error::other(format!(
                    "received snapshot is {header}, expected {meta}"
                )));
            }
            copy.sync_all()?;
            snapshots.publish(&temp, &meta, true)?;
            install_current(&store, &snapshots, &meta, &after_install)?;
            snapshots.remove_temps("recv")
        })
        .await
        .map_err(join_err)?
        .map_err(|e| err(&e))?;
        self.last_applied = meta.last_log_id;
        self.last_membership = meta.last_membership.clone();
        tracing::info!(snapshot = %meta, "installed snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self
            .snapshots
            .open_current()
            .map_err(|e| io_err(|e| StorageIOError::read_snapshot(None, e), &e))?;
        Ok(current.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let store = Arc::clone(&self.store);
        let snapshots = Arc::clone(&self.snapshots);
        let (meta, file) = tokio::task::spawn_blocking(move || build(&store, &snapshots))
            .await
            .map_err(join_err)?
            .map_err(|e| io_err(|e| StorageIOError::write_snapshot(None, e), &e))?;
        tracing::info!(snapshot = %meta, "built snapshot");
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        })
    }
}

/// Writes a snapshot of the store as of now and makes it current (unless a newer one was
/// installed meanwhile); returns its metadata and an open handle on it.
fn build(store: &KvStore, snapshots: &SnapshotDir) -> io::Result<(SnapshotMeta, File)> {
    let backend = store.backend();
    let view = backend.db().snapshot();
    let (last_log_id, last_membership) = read_applied(|k| view.get_cf(&backend.cf(CF_META), k))?;
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let snapshot_id = match &last_log_id {
        Some(id) => format!("{}-{}-{nanos:x}", id.leader_id, id.index),
        None => format!("none-{nanos:x}"),
    };
    let meta = SnapshotMeta {
        last_log_id,
        last_membership,
        snapshot_id,
    };
    let path = snapshot::write_temp(snapshots, &view, backend, &meta)?;
    drop(view);
    let file = File::open(&path)?;
    snapshots.publish(&path, &meta, false)?;
    Ok((meta, file))
}

#[cfg(test)]
mod tests {
    use kvstore_proto::etcdserverpb::PutRequest;

    use super::*;
    use crate::alarm::Alarms;
    use crate::mvcc::StoreOptions;
    use crate::raft::types::Request;

    fn put(key: &str) -> Command {
        Command::Put(PutRequest {
            key: key.as_bytes().to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        })
    }

    fn entry(index: u64, command: Command) -> Entry {
        Entry {
            log_id: openraft::LogId::new(openraft::CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::new(command)),
        }
    }

    fn open(dir: &Path) -> (Arc<KvStore>, Applier) {
        let store = Arc::new(KvStore::open(dir, StoreOptions::default()).expect("store"));
        let alarms = Arc::new(Alarms::load(store.backend()).expect("alarms"));
        let applier = Applier::new(Arc::clone(&store), alarms);
        (store, applier)
    }

    fn revisions(responses: &[Response]) -> Vec<i64> {
        use raftpb::apply_result::Result as R;
        let Some(R::Batch(batch)) = &responses[0].0.result else {
            panic!("a batch result: {responses:?}");
        };
        batch
            .results
            .iter()
            .map(|r| match &r.result {
                Some(R::Put(p)) => p.header.as_ref().map_or(0, |h| h.revision),
                _ => -1,
            })
            .collect()
    }

    /// Applies `entry` alone as member 1; its responses and the new applied position.
    fn apply_one(
        store: &KvStore,
        applier: &Applier,
        entry: Entry,
    ) -> (Vec<Response>, Option<LogId>) {
        let (responses, last, _) =
            apply_entries(store, applier, 1, vec![entry], StoredMembership::default())
                .expect("applies");
        (responses, last)
    }

    #[test]
    fn a_batch_applies_each_command_as_its_own_revision() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, applier) = open(dir.path());
        let batch = Command::Batch(vec![put("a"), put("b"), put("c")]);
        let (responses, last) = apply_one(&store, &applier, entry(1, batch));
        assert_eq!(revisions(&responses), vec![2, 3, 4]);
        assert_eq!(last.map(|l| l.index), Some(1));
        assert_eq!(store.current_revision(), 4);
    }

    #[test]
    fn a_batch_cut_short_by_a_crash_resumes_without_repeating_a_command() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (store, applier) = open(dir.path());
            drop(applier);
            // As if the first two of entry 1's three commands were applied before a crash.
            store.stage_apply_meta(vec![(
                META_RAFT_BATCH.to_vec(),
                codec::encode(&(1u64, 2u64)).expect("encodes"),
            )]);
            store.flush_apply_meta().expect("writes");
        }
        let (store, applier) = open(dir.path());
        let batch = Command::Batch(vec![put("a"), put("b"), put("c")]);
        let (responses, _) = apply_one(&store, &applier, entry(1, batch));
        // Only "c" is applied now: one new revision, and the skipped ones answer an error.
        assert_eq!(revisions(&responses), vec![-1, -1, 2]);
        assert_eq!(store.current_revision(), 2);
        let (applied, _) =
            read_applied(|k| store.backend().db().get_cf(&store.backend().cf(CF_META), k))
                .expect("reads");
        assert_eq!(applied.map(|l| l.index), Some(1));
    }
}
