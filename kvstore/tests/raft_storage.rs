//! The Raft storage of a member: openraft's own conformance suite, and what the suite does not
//! cover — reopening, truncation and purge on disk, commands applied through the real applier,
//! and snapshots moved between two stores.

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore::alarm::Alarms;
use kvstore::apply::{Applier, Command};
use kvstore::mvcc::backend::CF_KV;
use kvstore::mvcc::{KeyRange, KvStore, RangeOptions, StoreOptions};
use kvstore::raft::state_machine::META_RAFT_APPLIED;
use kvstore::raft::types::{Entry, EntryPayload, LogId, Membership, StorageError, Vote};
use kvstore::raft::{AfterInstall, LogStore, MemberNode, Request, StateMachine, TypeConfig};
use kvstore_proto::etcdserverpb::{
    CompactionRequest, DeleteRangeRequest, LeaseGrantRequest, PutRequest,
};
use kvstore_proto::raftpb::apply_result::Result as ApplyResult;
use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{CommittedLeaderId, RaftLogReader};
use tempfile::TempDir;
use tokio::io::AsyncWriteExt;

/// This member's ID in every test.
const MEMBER: u64 = 1;

fn open_store(dir: &Path) -> Arc<KvStore> {
    let options = StoreOptions {
        sync_writes: false,
        ..StoreOptions::default()
    };
    Arc::new(KvStore::open(&dir.join("db"), options).expect("open store"))
}

/// Waits until nothing else (a compaction thread) holds the store, then closes it.
fn close(store: Arc<KvStore>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut store = store;
    loop {
        match Arc::try_unwrap(store) {
            Ok(s) => return drop(s),
            Err(s) if Instant::now() < deadline => {
                store = s;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(_) => panic!("store still shared after 10s"),
        }
    }
}

fn no_reload() -> AfterInstall {
    Arc::new(|_: &KvStore| Ok(()))
}

/// An install hook that counts its calls.
fn counting_reload() -> (AfterInstall, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&calls);
    let hook: AfterInstall = Arc::new(move |_: &KvStore| {
        c.fetch_add(1, Ordering::SeqCst);
        Ok(())
    });
    (hook, calls)
}

fn open_sm(store: &Arc<KvStore>, dir: &Path, hook: AfterInstall) -> StateMachine {
    let alarms = Arc::new(Alarms::load(store.backend()).expect("alarms"));
    let applier = Arc::new(Applier::new(Arc::clone(store), alarms));
    StateMachine::open(Arc::clone(store), applier, MEMBER, &dir.join("snap"), hook)
        .expect("open state machine")
}

/// A fresh log store and state machine in a temporary directory, for openraft's suite.
struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_store(dir.path());
        let log = LogStore::open(Arc::clone(&store))?;
        let sm = open_sm(&store, dir.path(), no_reload());
        Ok((dir, log, sm))
    }
}

#[test]
fn storage_passes_openraft_conformance_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}

/// Like [`Builder`], for a member whose ID no entry of the suite carries: every append is a
/// follower's, written and synced on the calling task before `append` returns.
struct FollowerBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for FollowerBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError> {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = open_store(dir.path());
        let log = LogStore::open(Arc::clone(&store))?.for_member(0xfeed_f011_0000);
        let sm = open_sm(&store, dir.path(), no_reload());
        Ok((dir, log, sm))
    }
}

#[test]
fn follower_appends_synced_inline_pass_openraft_conformance_suite() {
    Suite::test_all(FollowerBuilder).expect("openraft storage suite, follower appends");
}

fn log_id(term: u64, index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(term, MEMBER), index)
}

fn entry(term: u64, index: u64, payload: EntryPayload) -> Entry {
    Entry {
        log_id: log_id(term, index),
        payload,
    }
}

fn put(key: &str, value: &str) -> EntryPayload {
    EntryPayload::Normal(Request::new(Command::Put(PutRequest {
        key: key.into(),
        value: value.into(),
        ..PutRequest::default()
    })))
}

fn membership() -> EntryPayload {
    EntryPayload::Membership(Membership::new(
        vec![[MEMBER].into()],
        [(
            MEMBER,
            MemberNode {
                name: "m1".into(),
                peer_urls: vec!["http://127.0.0.1:2380".into()],
                client_urls: vec!["http://127.0.0.1:2379".into()],
            },
        )]
        .into_iter()
        .collect::<std::collections::BTreeMap<_, _>>(),
    ))
}

fn indexes(entries: &[Entry]) -> Vec<u64> {
    entries.iter().map(|e| e.log_id.index).collect()
}

#[tokio::test]
async fn log_entries_vote_and_committed_survive_reopen() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = open_store(dir.path());
        let mut log = LogStore::open(Arc::clone(&store)).expect("log");
        log.blocking_append([
            entry(1, 1, EntryPayload::Blank),
            entry(1, 2, membership()),
            entry(1, 3, put("a", "1")),
        ])
        .await
        .expect("append");
        log.blocking_append([entry(2, 4, put("b", "2")), entry(2, 5, put("c", "3"))])
            .await
            .expect("append");
        log.save_vote(&Vote::new_committed(2, MEMBER))
            .await
            .expect("vote");
        log.save_committed(Some(log_id(2, 4)))
            .await
            .expect("committed");
        drop(log);
        close(store);
    }
    let store = open_store(dir.path());
    let mut log = LogStore::open(Arc::clone(&store)).expect("log");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_log_id, Some(log_id(2, 5)));
    assert_eq!(state.last_purged_log_id, None);
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new_committed(2, MEMBER))
    );
    assert_eq!(
        log.read_committed().await.expect("committed"),
        Some(log_id(2, 4))
    );
    let entries = log.try_get_log_entries(1..=5).await.expect("read");
    assert_eq!(indexes(&entries), vec![1, 2, 3, 4, 5]);
    assert!(
        matches!(&entries[2].payload, EntryPayload::Normal(r) if matches!(r.command(), Command::Put(p) if p.key == b"a"))
    );
    assert!(matches!(&entries[1].payload, EntryPayload::Membership(_)));
    let mut reader = log.get_log_reader().await;
    assert_eq!(
        indexes(&reader.try_get_log_entries(4..).await.expect("read")),
        vec![4, 5]
    );
}

/// A copy of a running member's files, as a crash would leave them: what only RocksDB's
/// memtables held is not in it.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for item in std::fs::read_dir(from).expect("read dir") {
        let item = item.expect("dir entry");
        let target = to.join(item.file_name());
        if item.file_type().expect("file type").is_dir() {
            copy_dir(&item.path(), &target);
        } else if item.file_name() != "LOCK" {
            std::fs::copy(item.path(), &target).expect("copy");
        }
    }
}

#[tokio::test]
async fn the_journal_brings_back_after_a_crash_what_the_store_had_not_flushed() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let mut log = LogStore::open(Arc::clone(&store)).expect("log");
    log.blocking_append((1..=10).map(|i| entry(1, i, EntryPayload::Blank)))
        .await
        .expect("append");
    log.purge(log_id(1, 3)).await.expect("purge");
    log.truncate(log_id(1, 8)).await.expect("truncate");
    log.blocking_append([entry(2, 8, put("a", "1")), entry(2, 9, EntryPayload::Blank)])
        .await
        .expect("append");
    let crashed = tempfile::tempdir().expect("temp dir");
    copy_dir(dir.path(), crashed.path());
    let no_journal = tempfile::tempdir().expect("temp dir");
    copy_dir(dir.path(), no_journal.path());
    std::fs::remove_dir_all(no_journal.path().join("db").join("raft-journal")).expect("rm");
    drop(log);
    close(store);

    // Without the journal, the crash loses the entries written after the purge's flush: so
    // what the next copy has, it has from the journal.
    assert_eq!(
        indexes_after_reopen(no_journal.path()).await,
        vec![4, 5, 6, 7, 8, 9, 10],
        "the purge's flush holds the first leader's entries; the rest was only in memtables"
    );

    let store = open_store(crashed.path());
    let mut log = LogStore::open(Arc::clone(&store)).expect("log");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
    assert_eq!(state.last_log_id, Some(log_id(2, 9)));
    let entries = log.try_get_log_entries(..).await.expect("read");
    assert_eq!(indexes(&entries), vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(entries[4].log_id, log_id(2, 8));
    assert!(
        matches!(&entries[4].payload, EntryPayload::Normal(r) if matches!(r.command(), Command::Put(p) if p.key == b"a"))
    );
    // Restored, flushed and the old segments gone: a second crash needs no journal at all.
    drop(log);
    close(store);
    let again = tempfile::tempdir().expect("temp dir");
    copy_dir(crashed.path(), again.path());
    std::fs::remove_dir_all(again.path().join("db").join("raft-journal")).expect("rm");
    assert_eq!(
        indexes_after_reopen(again.path()).await,
        vec![4, 5, 6, 7, 8, 9]
    );
}

/// The indexes of the log in the member directory `dir`, opened and closed again.
async fn indexes_after_reopen(dir: &Path) -> Vec<u64> {
    let store = open_store(dir);
    let mut log = LogStore::open(Arc::clone(&store)).expect("log");
    let found = indexes(&log.try_get_log_entries(..).await.expect("read"));
    drop(log);
    close(store);
    found
}

#[tokio::test]
async fn truncate_and_purge_leave_a_contiguous_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = open_store(dir.path());
        let mut log = LogStore::open(Arc::clone(&store)).expect("log");
        log.blocking_append((1..=10).map(|i| entry(1, i, EntryPayload::Blank)))
            .await
            .expect("append");
        log.truncate(log_id(1, 8)).await.expect("truncate");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_log_id, Some(log_id(1, 7)));

        log.purge(log_id(1, 3)).await.expect("purge");
        let state = log.get_log_state().await.expect("state");
        assert_eq!(state.last_purged_log_id, Some(log_id(1, 3)));
        assert_eq!(state.last_log_id, Some(log_id(1, 7)));
        assert_eq!(
            indexes(&log.try_get_log_entries(0..100).await.expect("read")),
            vec![4, 5, 6, 7]
        );
        // A new leader's entries replace the truncated ones.
        log.blocking_append([entry(2, 8, EntryPayload::Blank)])
            .await
            .expect("append");
        drop(log);
        close(store);
    }
    let store = open_store(dir.path());
    let mut log = LogStore::open(Arc::clone(&store)).expect("log");
    let entries = log.try_get_log_entries(..).await.expect("read");
    assert_eq!(indexes(&entries), vec![4, 5, 6, 7, 8]);
    assert_eq!(entries[4].log_id, log_id(2, 8));

    // Purging everything leaves the last purged id as the last log id.
    log.purge(log_id(2, 8)).await.expect("purge");
    let state = log.get_log_state().await.expect("state");
    assert_eq!(state.last_purged_log_id, Some(log_id(2, 8)));
    assert_eq!(state.last_log_id, Some(log_id(2, 8)));
    assert!(log.try_get_log_entries(..).await.expect("read").is_empty());
}

#[tokio::test]
async fn vote_is_persisted_before_save_returns() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = open_store(dir.path());
        let mut log = LogStore::open(Arc::clone(&store)).expect("log");
        assert_eq!(log.read_vote().await.expect("vote"), None);
        log.save_vote(&Vote::new(3, 2)).await.expect("vote");
        log.save_vote(&Vote::new(4, MEMBER)).await.expect("vote");
        drop(log);
        close(store);
    }
    let store = open_store(dir.path());
    let mut log = LogStore::open(Arc::clone(&store)).expect("log");
    assert_eq!(
        log.read_vote().await.expect("vote"),
        Some(Vote::new(4, MEMBER))
    );
}

#[tokio::test]
async fn applied_position_is_written_with_the_data() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = open_store(dir.path());
        let mut sm = open_sm(&store, dir.path(), no_reload());
        let responses = sm
            .apply([
                entry(1, 1, membership()),
                entry(1, 2, put("a", "1")),
                entry(1, 3, EntryPayload::Blank),
                // Refused by the store: an answer for the client, not a storage failure.
                entry(
                    1,
                    4,
                    EntryPayload::Normal(Request::new(Command::LeaseRevoke(99))),
                ),
            ])
            .await
            .expect("apply");
        assert_eq!(responses.len(), 4);
        assert_eq!(responses[0].0.result, None);
        match &responses[1].0.result {
            Some(ApplyResult::Put(p)) => assert_eq!(p.header.as_ref().map(|h| h.revision), Some(2)),
            other => panic!("want a put response, got {other:?}"),
        }
        match &responses[3].0.result {
            Some(ApplyResult::Error(e)) => {
                assert_eq!(e.code, tonic::Code::NotFound as i32);
                assert_eq!(e.message, "etcdserver: requested lease not found");
            }
            other => panic!("want an error, got {other:?}"),
        }
        drop(sm);
        close(store);
    }
    let store = open_store(dir.path());
    assert_eq!(store.consistent_index(), 4);
    assert_eq!(store.current_revision(), 2);
    let mut sm = open_sm(&store, dir.path(), no_reload());
    let (applied, membership) = sm.applied_state().await.expect("applied");
    assert_eq!(applied, Some(log_id(1, 4)));
    assert_eq!(membership.log_id(), &Some(log_id(1, 1)));
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![MEMBER]);
}

/// Applies a history with puts, deletes, a lease with an attached key and a compaction.
async fn apply_history(sm: &mut StateMachine) -> u64 {
    let mut payloads = vec![
        membership(),
        EntryPayload::Normal(Request::new(Command::LeaseGrant(LeaseGrantRequest {
            ttl: 600,
            id: 7,
        }))),
    ];
    for i in 0..20 {
        payloads.push(put(&format!("key/{i:02}"), &format!("v{i}")));
    }
    payloads.push(EntryPayload::Normal(Request::new(Command::Put(
        PutRequest {
            key: b"leased".to_vec(),
            value: b"x".to_vec(),
            lease: 7,
            ..PutRequest::default()
        },
    ))));
    payloads.push(EntryPayload::Normal(Request::new(Command::DeleteRange(
        DeleteRangeRequest {
            key: b"key/05".to_vec(),
            range_end: b"key/10".to_vec(),
            ..DeleteRangeRequest::default()
        },
    ))));
    payloads.push(EntryPayload::Normal(Request::new(Command::Compact(
        CompactionRequest {
            revision: 8,
            physical: false,
        },
    ))));
    payloads.push(put("key/01", "again"));
    let entries: Vec<Entry> = payloads
        .into_iter()
        .enumerate()
        .map(|(i, p)| entry(1, i as u64 + 1, p))
        .collect();
    let last = entries.len() as u64;
    sm.apply(entries).await.expect("apply");
    last
}

/// Copies a snapshot's file into a state machine's receiving file.
async fn receive(from: &mut StateMachine, to: &mut StateMachine) -> Box<tokio::fs::File> {
    let mut current = from
        .get_current_snapshot()
        .await
        .expect("current")
        .expect("a snapshot");
    let mut target = to.begin_receiving_snapshot().await.expect("begin");
    tokio::io::copy(&mut *current.snapshot, &mut *target)
        .await
        .expect("copy");
    target.flush().await.expect("flush");
    target
}

#[tokio::test]
async fn snapshot_installed_into_a_fresh_store_has_the_same_history() {
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let leader_store = open_store(leader_dir.path());
    let mut leader = open_sm(&leader_store, leader_dir.path(), no_reload());
    let last = apply_history(&mut leader).await;
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    assert_eq!(built.meta.last_log_id, Some(log_id(1, last)));
    let expected_hash = leader_store.hash_kv(0).expect("hash");
    let expected_leases = leader_store.leases();
    assert_eq!(leader_store.current_revision(), 24);
    assert_eq!(leader_store.compacted_revision(), 8);

    let follower_dir = tempfile::tempdir().expect("temp dir");
    let follower_store = open_store(follower_dir.path());
    let (hook, reloads) = counting_reload();
    let mut follower = open_sm(&follower_store, follower_dir.path(), hook);
    // Something the snapshot must replace.
    follower
        .apply([entry(1, 1, put("stale", "gone"))])
        .await
        .expect("apply");
    let received = receive(&mut leader, &mut follower).await;
    follower
        .install_snapshot(&built.meta, received)
        .await
        .expect("install");
    assert_eq!(reloads.load(Ordering::SeqCst), 1);
    assert_eq!(
        follower.applied_state().await.expect("applied"),
        (built.meta.last_log_id, built.meta.last_membership.clone())
    );
    assert_eq!(
        follower
            .get_current_snapshot()
            .await
            .expect("current")
            .expect("a snapshot")
            .meta,
        built.meta
    );
    drop(follower);
    close(follower_store);

    // Reopening rebuilds the index from what the install wrote (what the reload hook will do
    // in place once the store offers it).
    let reopened = open_store(follower_dir.path());
    let hash = reopened.hash_kv(0).expect("hash");
    assert_eq!(hash, expected_hash);
    assert_eq!(reopened.current_revision(), 24);
    assert_eq!(reopened.compacted_revision(), 8);
    assert_eq!(reopened.consistent_index(), last);
    assert_eq!(reopened.leases(), expected_leases);
    let stale = reopened
        .read_range(&KeyRange::from_etcd(b"stale", b""), RangeOptions::default())
        .expect("read");
    assert_eq!(stale.count, 0);
    let leased = reopened.lease(7).expect("lease 7");
    assert_eq!(leased.1, vec![b"leased".to_vec()]);
    let (hook, reloads) = counting_reload();
    let mut follower = open_sm(&reopened, follower_dir.path(), hook);
    assert_eq!(
        reloads.load(Ordering::SeqCst),
        0,
        "a finished install is not redone"
    );
    assert_eq!(
        follower.applied_state().await.expect("applied").0,
        Some(log_id(1, last))
    );
    drop(leader);
    close(leader_store);
}

#[tokio::test]
async fn interrupted_install_is_redone_at_open() {
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let leader_store = open_store(leader_dir.path());
    let mut leader = open_sm(&leader_store, leader_dir.path(), no_reload());
    let last = apply_history(&mut leader).await;
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let expected_hash = leader_store.hash_kv(0).expect("hash");

    let dir = tempfile::tempdir().expect("temp dir");
    {
        let store = open_store(dir.path());
        let mut sm = open_sm(&store, dir.path(), no_reload());
        let received = receive(&mut leader, &mut sm).await;
        sm.install_snapshot(&built.meta, received)
            .await
            .expect("install");
        drop(sm);
        // Undo the end of the install, as a crash before its last batch would have.
        let backend = store.backend();
        let mut batch = rocksdb::WriteBatch::default();
        batch.delete_cf(&backend.cf("meta"), META_RAFT_APPLIED);
        batch.delete_range_cf(&backend.cf(CF_KV), &[][..], &[0xffu8; 64][..]);
        backend.db().write(batch).expect("write");
        close(store);
    }
    let store = open_store(dir.path());
    let (hook, reloads) = counting_reload();
    let mut sm = open_sm(&store, dir.path(), hook);
    assert_eq!(reloads.load(Ordering::SeqCst), 1);
    assert_eq!(
        sm.applied_state().await.expect("applied").0,
        Some(log_id(1, last))
    );
    drop(sm);
    close(store);
    let store = open_store(dir.path());
    assert_eq!(store.hash_kv(0).expect("hash"), expected_hash);
    drop(leader);
    close(leader_store);
}

#[tokio::test]
async fn corrupt_snapshot_is_refused_before_touching_the_store() {
    let leader_dir = tempfile::tempdir().expect("temp dir");
    let leader_store = open_store(leader_dir.path());
    let mut leader = open_sm(&leader_store, leader_dir.path(), no_reload());
    apply_history(&mut leader).await;
    let built = leader
        .get_snapshot_builder()
        .await
        .build_snapshot()
        .await
        .expect("build");
    let bytes = std::fs::read(leader_dir.path().join("snap/current.snap")).expect("read");

    let dir = tempfile::tempdir().expect("temp dir");
    let store = open_store(dir.path());
    let (hook, reloads) = counting_reload();
    let mut sm = open_sm(&store, dir.path(), hook);
    sm.apply([entry(1, 1, put("mine", "kept"))])
        .await
        .expect("apply");
    let before = store.hash_kv(0).expect("hash");

    let mut bad = bytes.clone();
    let middle = bad.len() / 2;
    bad[middle] ^= 1;
    let mut target = sm.begin_receiving_snapshot().await.expect("begin");
    target.write_all(&bad).await.expect("write");
    assert!(sm.install_snapshot(&built.meta, target).await.is_err());
    assert_eq!(reloads.load(Ordering::SeqCst), 0);
    assert_eq!(store.hash_kv(0).expect("hash"), before);
    assert_eq!(
        sm.applied_state().await.expect("applied").0,
        Some(log_id(1, 1))
    );
    assert!(sm.get_current_snapshot().await.expect("current").is_none());
    drop(sm);
    close(store);
    drop(leader);
    close(leader_store);
}
