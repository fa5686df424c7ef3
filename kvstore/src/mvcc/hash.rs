//! Hashes of the store's state, for comparing members (etcd's Hash and HashKV).
//!
//! HashKV follows etcd's algorithm byte for byte: CRC-32C over the bucket name `key`, then every
//! (revision key, encoded KeyValue) pair at or below the revision asked, skipping what a
//! compaction has scheduled for removal. Since our revision keys and KeyValue encoding are
//! etcd's, two members with the same history agree whether or not their physical compaction
//! has finished. One deliberate difference: etcd skips nothing when the keep set is empty
//! (`len(keep) > 0`), which makes its hash depend on how far physical compaction got when every
//! key at the compacted revision was deleted; we always skip what is not kept (the model test
//! found this case).

use rocksdb::IteratorMode;

use super::backend::{CF_KV, CF_LEASE, CF_META};
use super::error::{Error, Result};
use super::revision::Revision;
use super::store::KvStore;

/// Meta keys that differ between members by design, so [`KvStore::hash_all`] leaves them out:
/// the member and cluster ID this data directory belongs to, and Raft's own record of the last
/// applied membership (each member bootstraps with the client URLs only it knows; the members'
/// published attributes, which are hashed, are the same everywhere).
const MEMBER_LOCAL_META: [&[u8]; 2] = [b"cluster_identity", b"raft_membership"];

/// The answer of [`KvStore::hash_kv`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvHash {
    /// CRC-32C of the key-value history up to the revision asked.
    pub hash: u32,
    /// The store's current revision when hashed.
    pub current_revision: i64,
    /// The store's compacted revision when hashed.
    pub compact_revision: i64,
}

impl KvStore {
    /// etcd's HashByRev: the hash of all key-value history visible at `rev` (0: current).
    pub fn hash_kv(&self, rev: i64) -> Result<KvHash> {
        let (keep, snapshot, current, compacted) = {
            let index = self.index.read();
            let current = self.current_revision();
            let compacted = self.compacted_revision();
            if rev > 0 && rev <= compacted {
                return Err(Error::Compacted);
            }
            if rev > current {
                return Err(Error::FutureRevision);
            }
            let rev = if rev == 0 { current } else { rev };
            (
                index.keep(rev),
                self.backend.db().snapshot(),
                current,
                compacted,
            )
        };
        let rev = if rev == 0 { current } else { rev };
        let upper = Revision::new(rev + 1, 0);
        let lower = Revision::new(compacted + 1, 0);
        let mut hash = crc32c::crc32c(b"key");
        for item in snapshot.iterator_cf(&self.backend.cf(CF_KV), IteratorMode::Start) {
            let (k, v) = item?;
            let (r, _) = Revision::from_key(&k).map_err(|e| Error::Corrupt(e.to_string()))?;
            if r >= upper {
                break;
            }
            if r < lower && !keep.contains(&r) {
                continue;
            }
            hash = crc32c::crc32c_append(hash, &k);
            hash = crc32c::crc32c_append(hash, &v);
        }
        Ok(KvHash {
            hash,
            current_revision: current,
            compact_revision: compacted,
        })
    }

    /// A hash of everything the store keeps (key-values, leases, metadata), at one instant.
    /// Members that applied the same log agree on it; the one meta key that says which member
    /// this is ([`MEMBER_LOCAL_META`]) is left out.
    pub fn hash_all(&self) -> Result<u32> {
        let snapshot = self.backend.db().snapshot();
        let mut hash = 0;
        for name in [CF_KV, CF_LEASE, CF_META] {
            hash = crc32c::crc32c_append(hash, name.as_bytes());
            for item in snapshot.iterator_cf(&self.backend.cf(name), IteratorMode::Start) {
                let (k, v) = item?;
                if name == CF_META && MEMBER_LOCAL_META.contains(&&*k) {
                    continue;
                }
                hash = crc32c::crc32c_append(hash, &k);
                hash = crc32c::crc32c_append(hash, &v);
            }
        }
        Ok(hash)
    }
}
