//! `snapshot restore`: a fresh data directory for one member of a new cluster, from a snapshot.
//!
//! # What a restored data directory holds
//! - The snapshot's `kv` and `lease` column families as they were: every revision since the
//!   last compaction and every lease, so the revision, the compacted revision (with any
//!   compaction the snapshot caught half-done, which the store finishes at open) and HashKV
//!   are the source's.
//! - Its `meta` column family without what belonged to the old cluster and its members: the
//!   applied Raft position and membership, the consistent index, the cluster identity, the
//!   published member attributes and the alarms (a CORRUPT or NOSPACE alarm of members that no
//!   longer exist would make the new cluster refuse writes from its first second; etcd keeps
//!   them, we do not).
//! - The identity of the new member — cluster and member IDs derived from `--initial-cluster`
//!   and `--initial-cluster-token` exactly as at bootstrap — so starting it with other flags
//!   is refused, as for any data directory.
//! - A Raft log holding one entry: the new cluster's membership at index 0, the entry
//!   openraft's `initialize` writes when a new cluster bootstraps. Every member restored with
//!   the same flags holds the same entry, so the members elect a leader among themselves on
//!   first start whether they are started with `--initial-cluster-state new` or `existing`,
//!   and the leader's log continues from it. Nothing is marked applied: the membership entry
//!   is applied like any other once committed, and it changes no data.
//!
//! # Nothing half-written
//! The directory is built as `.<name>.restoring-<pid>` next to the target and renamed to it
//! only once the whole snapshot was read, its checksum verified, and the database flushed
//! and synced; any failure removes it. A target that exists and is not an empty directory
//! is refused before anything is read.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use rocksdb::{WriteBatch, WriteOptions};

use super::status::{SnapshotStatus, StatusBuilder};
use super::{Error, Result};
use crate::membership::Membership;
use crate::mvcc::backend::{
    Backend, CF_KV, CF_LEASE, CF_META, CF_RAFT_LOG, CF_RAFT_STATE, META_CONSISTENT_INDEX,
};
use crate::raft::codec;
use crate::raft::snapshot::{Section, SnapshotReader};
use crate::raft::state_machine::{META_RAFT_APPLIED, META_RAFT_BATCH, META_RAFT_MEMBERSHIP};
use crate::raft::types::{Entry, EntryPayload, LogId, MemberNode, Membership as RaftMembership};

/// `meta` key of the member's cluster and member IDs (as the node checks them at start).
pub const META_CLUSTER_IDENTITY: &[u8] = b"cluster_identity";
/// `meta` keys of the old cluster that a restore leaves out (see the module doc).
const DROPPED_META: [&[u8]; 6] = [
    META_RAFT_APPLIED,
    META_RAFT_BATCH,
    META_RAFT_MEMBERSHIP,
    META_CONSISTENT_INDEX,
    META_CLUSTER_IDENTITY,
    b"alarms",
];
/// Prefix of `meta` keys holding published member attributes (left out too).
const MEMBER_ATTRIBUTES_PREFIX: &[u8] = b"member/";
/// Bytes per write batch while loading.
const BATCH_BYTES: usize = 4 << 20;

/// What to restore and as which member.
#[derive(Clone, Debug)]
pub struct RestoreOptions {
    /// `--name`: this member's name in `initial_cluster`.
    pub name: String,
    /// `--data-dir`: the directory to create.
    pub data_dir: PathBuf,
    /// `--initial-cluster`: the new cluster's members, `name=peer-url,...`.
    pub initial_cluster: String,
    /// `--initial-cluster-token`: the new cluster's token.
    pub initial_cluster_token: String,
    /// `--initial-advertise-peer-urls`: this member's peer URLs (as in `initial_cluster`).
    pub initial_advertise_peer_urls: Vec<String>,
    /// `--skip-hash-check`: restore a file whose checksum does not match.
    pub skip_hash_check: bool,
}

/// What a restore built.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The new cluster's ID.
    pub cluster_id: u64,
    /// The restored member's ID.
    pub member_id: u64,
    /// What the snapshot held.
    pub snapshot: SnapshotStatus,
}

/// Restores the snapshot read from `input` (`size` bytes) into `opts.data_dir`.
pub fn restore(opts: &RestoreOptions, input: impl Read, size: u64) -> Result<Restored> {
    let membership = Membership::from_initial_cluster(
        &opts.initial_cluster,
        &opts.initial_cluster_token,
        &opts.name,
        &opts.initial_advertise_peer_urls,
        &[],
        false,
    )
    .map_err(|e| match e {
        crate::Error::Config(msg) => Error::Config(msg),
        other => Error::Config(other.to_string()),
    })?;
    check_target(&opts.data_dir)?;
    let created = create_parents(&parent_of(&opts.data_dir))?;
    let temp = match temp_dir_for(&opts.data_dir) {
        Ok(temp) => temp,
        Err(e) => {
            remove_created(&created);
            return Err(e);
        }
    };
    let result = build(&temp, &membership, input, opts.skip_hash_check)
        .and_then(|status| publish(&temp, &opts.data_dir).map(|()| status));
    match result {
        Ok(status) => Ok(Restored {
            cluster_id: membership.cluster_id,
            member_id: membership.member_id,
            snapshot: status.finish(size),
        }),
        Err(e) => {
            let _ = fs::remove_dir_all(&temp);
            remove_created(&created);
            Err(e)
        }
    }
}

/// Creates `dir` and its missing ancestors; returns those it created, outermost first.
fn create_parents(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        missing.push(d.to_path_buf());
        at = d.parent();
    }
    missing.reverse();
    for d in &missing {
        if let Err(e) = fs::create_dir(d) {
            remove_created(&missing);
            return Err(e.into());
        }
    }
    Ok(missing)
}

/// Removes directories [`create_parents`] made (still empty after a failed restore).
fn remove_created(created: &[PathBuf]) {
    for d in created.iter().rev() {
        let _ = fs::remove_dir(d);
    }
}

/// Refuses a target that exists, unless it is an empty directory.
fn check_target(data_dir: &Path) -> Result<()> {
    match fs::symlink_metadata(data_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e.into()),
        Ok(meta) if meta.is_dir() && fs::read_dir(data_dir)?.next().is_none() => Ok(()),
        Ok(_) => Err(Error::DataDirExists(data_dir.to_path_buf())),
    }
}

/// The parent directory of `path` (`.` for a bare name).
fn parent_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Creates the directory the restore is built in, next to the target (whose parent exists).
fn temp_dir_for(data_dir: &Path) -> Result<PathBuf> {
    let parent = parent_of(data_dir);
    let name = data_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "data".into());
    let temp = parent.join(format!(".{name}.restoring-{}", std::process::id()));
    if temp.exists() {
        fs::remove_dir_all(&temp)?;
    }
    fs::create_dir(&temp)?;
    Ok(temp)
}

/// Whether a `meta` key belonged to the old cluster or one of its members.
fn is_old_cluster_meta(key: &[u8]) -> bool {
    DROPPED_META.contains(&key) || key.starts_with(MEMBER_ATTRIBUTES_PREFIX)
}

/// The Raft log entry a new cluster starts from: its membership, every member a voter.
fn initial_membership_entry(membership: &Membership) -> Entry {
    let nodes: BTreeMap<u64, MemberNode> = membership
        .members
        .iter()
        .map(|(id, m)| {
            let node = MemberNode {
                name: m.name.clone(),
                peer_urls: m.peer_urls.clone(),
                client_urls: Vec::new(),
            };
            (*id, node)
        })
        .collect();
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    Entry {
        log_id: LogId::default(),
        payload: EntryPayload::Membership(RaftMembership::new(vec![voters], nodes)),
    }
}

/// Loads the snapshot into a new database in `dir/db`, adds the new member's identity and
/// Raft log, and makes it durable.
fn build(
    dir: &Path,
    membership: &Membership,
    input: impl Read,
    skip_hash_check: bool,
) -> Result<StatusBuilder> {
    let backend = Backend::open(&dir.join("db"), false)?;
    let db = backend.db();
    // The load needs no WAL: a failure throws the directory away, and success ends with a
    // flush of every column family to synced files.
    let mut unlogged = WriteOptions::default();
    unlogged.disable_wal(true);
    let write = |batch: WriteBatch| db.write_opt(batch, &unlogged);

    let mut reader = SnapshotReader::new(input)?;
    if skip_hash_check {
        reader = reader.skip_checksum();
    }
    let mut status = StatusBuilder::default();
    let mut batch = WriteBatch::default();
    while let Some(record) = reader.next_record()? {
        status.record(record.section, &record.key, &record.value);
        let Some(cf) = record.section.column_family() else {
            continue;
        };
        if record.section == Section::Meta && is_old_cluster_meta(&record.key) {
            continue;
        }
        batch.put_cf(&backend.cf(cf), &record.key, &record.value);
        if batch.size_in_bytes() >= BATCH_BYTES {
            write(std::mem::take(&mut batch))?;
        }
    }

    let mut identity = membership.cluster_id.to_be_bytes().to_vec();
    identity.extend_from_slice(&membership.member_id.to_be_bytes());
    batch.put_cf(&backend.cf(CF_META), META_CLUSTER_IDENTITY, identity);
    let entry = codec::encode(&initial_membership_entry(membership))
        .map_err(|e| Error::Store(format!("encoding the membership entry: {e}")))?;
    batch.put_cf(&backend.cf(CF_RAFT_LOG), codec::log_key(0), entry);
    write(batch)?;
    for cf in [CF_KV, CF_LEASE, CF_META, CF_RAFT_LOG, CF_RAFT_STATE] {
        db.flush_cf(&backend.cf(cf))?;
    }
    drop(backend);
    sync_dir(&dir.join("db"))?;
    Ok(status)
}

/// Moves the built directory into place and makes the rename durable.
fn publish(temp: &Path, data_dir: &Path) -> Result<()> {
    sync_dir(temp)?;
    fs::rename(temp, data_dir)?;
    sync_dir(&parent_of(data_dir))
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{KvStore, StoreOptions};
    use crate::raft::snapshot::write_state;

    fn options(data_dir: PathBuf) -> RestoreOptions {
        RestoreOptions {
            name: "a".into(),
            data_dir,
            initial_cluster: "a=http://127.0.0.1:1".into(),
            initial_cluster_token: "t".into(),
            initial_advertise_peer_urls: vec!["http://127.0.0.1:1".into()],
            skip_hash_check: false,
        }
    }

    /// A snapshot of a store with three revisions, a lease, and old-cluster metadata.
    fn snapshot(dir: &Path) -> Vec<u8> {
        let store = KvStore::open(&dir.join("src"), StoreOptions::default()).expect("open");
        for key in ["a", "b", "c"] {
            let mut txn = store.write();
            txn.put(key.as_bytes(), b"v", 0);
            txn.commit().expect("commit");
        }
        store.stage_apply_meta(vec![
            (META_RAFT_APPLIED.to_vec(), b"old".to_vec()),
            (b"member/x".to_vec(), b"old".to_vec()),
        ]);
        store.flush_apply_meta().expect("meta");
        let backend = store.backend();
        let view = backend.db().snapshot();
        write_state(&view, backend, None, true, Vec::new()).expect("write")
    }

    #[test]
    fn restored_dir_holds_the_data_and_the_new_members_identity_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = snapshot(dir.path());
        let target = dir.path().join("new/member");
        let done = restore(&options(target.clone()), bytes.as_slice(), 0).expect("restore");
        assert_eq!(done.snapshot.revision, 4);
        let store = KvStore::open(&target.join("db"), StoreOptions::default()).expect("open");
        assert_eq!(store.current_revision(), 4);
        let backend = store.backend();
        let meta = |k: &[u8]| backend.db().get_cf(&backend.cf(CF_META), k).expect("get");
        assert_eq!(meta(META_RAFT_APPLIED), None);
        assert_eq!(meta(b"member/x"), None);
        let mut identity = done.cluster_id.to_be_bytes().to_vec();
        identity.extend_from_slice(&done.member_id.to_be_bytes());
        assert_eq!(meta(META_CLUSTER_IDENTITY), Some(identity));
        let entry = backend
            .db()
            .get_cf(&backend.cf(CF_RAFT_LOG), codec::log_key(0))
            .expect("get")
            .expect("the membership entry");
        let entry: Entry = codec::decode(&entry).expect("decode");
        assert!(matches!(entry.payload, EntryPayload::Membership(m)
            if m.voter_ids().collect::<Vec<_>>() == vec![done.member_id]));
    }

    #[test]
    fn a_failed_restore_leaves_nothing_behind() {
        let dir = tempfile::tempdir().expect("tempdir");
        let bytes = snapshot(dir.path());
        let target = dir.path().join("new/deeper/member");
        let cut = &bytes[..bytes.len() - 1];
        assert!(matches!(
            restore(&options(target), cut, 0),
            Err(Error::Invalid(_))
        ));
        assert!(
            !dir.path().join("new").exists(),
            "parents created were removed"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .expect("read")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("src")]);
    }
}
