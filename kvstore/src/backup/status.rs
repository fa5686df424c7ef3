//! `snapshot status`: what a snapshot file holds, read whole so its checksum is verified.
//!
//! The figures are etcd's: `hash` is computed exactly as Maintenance.Hash hashes a member
//! (CRC-32C over each column family's name and then its keys and values, `kv`, `lease`,
//! `meta` in that order), so a snapshot's hash equals the member's Hash at the instant the
//! snapshot was taken; `revision` is the store's revision; `total keys` counts every
//! key-value of the three column families (etcd counts every key of every bucket); `total
//! size` is the file's size.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::Result;
use crate::mvcc::backend::{
    decode_i64, CF_KV, CF_LEASE, CF_META, META_CURRENT_REV, META_SCHEDULED_COMPACT,
};
use crate::mvcc::Revision;
use crate::raft::snapshot::{Section, SnapshotReader};

/// What a snapshot file holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// The member's Hash at the snapshot (see the module doc).
    pub hash: u32,
    /// The store's revision.
    pub revision: i64,
    /// The compacted revision (reads below it fail after a restore too).
    pub compact_revision: i64,
    /// Key-values of all column families.
    pub total_keys: u64,
    /// Revisions of key-value history (the `kv` column family).
    pub kv_revisions: u64,
    /// Granted leases.
    pub leases: u64,
    /// Bytes in the file.
    pub total_size: u64,
}

/// Folds records into a [`SnapshotStatus`]; shared by `status` and `restore`, which reads the
/// same records once.
#[derive(Debug, Default)]
pub struct StatusBuilder {
    /// The figures so far.
    status: SnapshotStatus,
    /// Sections whose name is already in the hash (the data sections in file order).
    hashed_sections: usize,
}

/// The data sections in file order, with their column family's name.
const SECTIONS: [(Section, &str); 3] = [
    (Section::Kv, CF_KV),
    (Section::Lease, CF_LEASE),
    (Section::Meta, CF_META),
];

impl StatusBuilder {
    /// Hashes the names of sections up to and including `upto` not hashed yet (an empty
    /// column family still contributes its name, as in Maintenance.Hash).
    fn enter(&mut self, upto: usize) {
        while self.hashed_sections <= upto.min(SECTIONS.len() - 1) {
            let name = SECTIONS[self.hashed_sections].1;
            self.status.hash = crc32c::crc32c_append(self.status.hash, name.as_bytes());
            self.hashed_sections += 1;
        }
    }

    /// Takes one record.
    pub fn record(&mut self, section: Section, key: &[u8], value: &[u8]) {
        let Some(pos) = SECTIONS.iter().position(|(s, _)| *s == section) else {
            return; // the Raft header is not data
        };
        self.enter(pos);
        let s = &mut self.status;
        s.hash = crc32c::crc32c_append(s.hash, key);
        s.hash = crc32c::crc32c_append(s.hash, value);
        s.total_keys += 1;
        match section {
            Section::Kv => {
                s.kv_revisions += 1;
                if let Ok((rev, _)) = Revision::from_key(key) {
                    s.revision = s.revision.max(rev.main);
                }
            }
            Section::Lease => s.leases += 1,
            Section::Meta => {
                let value = decode_i64(value).unwrap_or(0);
                if key == META_CURRENT_REV {
                    s.revision = s.revision.max(value);
                } else if key == META_SCHEDULED_COMPACT {
                    s.compact_revision = value;
                    s.revision = s.revision.max(value);
                }
            }
            Section::Header | Section::Padding => {}
        }
    }

    /// The figures, for a file of `size` bytes.
    pub fn finish(mut self, size: u64) -> SnapshotStatus {
        self.enter(SECTIONS.len() - 1);
        self.status.total_size = size;
        self.status
    }
}

/// Reads the snapshot in `path` whole; fails on a truncated or corrupted file.
pub fn status(path: &Path) -> Result<SnapshotStatus> {
    let file = File::open(path)?;
    let size = file.metadata()?.len();
    status_of(BufReader::with_capacity(1 << 20, file), size)
}

/// Reads a snapshot of `size` bytes from `input` whole.
pub fn status_of(input: impl Read, size: u64) -> Result<SnapshotStatus> {
    let mut reader = SnapshotReader::new(input)?;
    let mut builder = StatusBuilder::default();
    while let Some(r) = reader.next_record()? {
        builder.record(r.section, &r.key, &r.value);
    }
    Ok(builder.finish(size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::{KvStore, StoreOptions};
    use crate::raft::snapshot::write_state;

    #[test]
    fn hash_and_revision_match_the_store() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = KvStore::open(&dir.path().join("db"), StoreOptions::default()).expect("open");
        for i in 0..5 {
            let mut txn = store.write();
            txn.put(format!("k{i}").as_bytes(), b"v", 0);
            txn.commit().expect("commit");
        }
        let backend = store.backend();
        let view = backend.db().snapshot();
        let bytes = write_state(&view, backend, None, true, Vec::new()).expect("write");
        let (size, records) =
            crate::raft::snapshot::encoded_size(&view, backend, None, true).expect("size");
        assert_eq!(size, bytes.len() as u64);
        let s = status_of(bytes.as_slice(), bytes.len() as u64).expect("valid");
        assert_eq!(
            s.total_keys + 1,
            records,
            "every record but the padding is a key"
        );
        assert_eq!(size % 512, 32);
        assert_eq!(s.hash, store.hash_all().expect("hash"));
        assert_eq!(s.revision, store.current_revision());
        assert_eq!(s.kv_revisions, 5);
        let mut bad = bytes.clone();
        bad[20] ^= 1;
        assert!(matches!(
            status_of(bad.as_slice(), 0),
            Err(super::super::Error::Invalid(_))
        ));
    }
}
