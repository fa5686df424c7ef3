//! RocksDB, laid out for the revisioned store: one database per member, one column family per kind
//! of data.
//!
//! | column family | key | value |
//! |---|---|---|
//! | `kv` | [`Revision::to_key`] (17 bytes, `t` appended for a tombstone) | protobuf `mvccpb.KeyValue` |
//! | `meta` | ASCII name | big-endian `i64` (or raw bytes for the Raft layer) |
//! | `lease` | big-endian lease ID | [`LeaseRecord`] encoding |
//! | `raft_log`, `raft_state` | reserved for the Raft layer | |
//!
//! Revision keys are big-endian, so a byte-ordered scan of `kv` walks history in revision order,
//! exactly like etcd's bbolt `key` bucket. Every write of the store is one [`WriteBatch`], so a
//! crash leaves either all of a transaction on disk or none of it.

use std::path::Path;

use rocksdb::{
    BoundColumnFamily, ColumnFamilyDescriptor, DBWithThreadMode, FlushOptions, MultiThreaded,
    Options, WriteBatch, WriteOptions,
};

use super::error::{Error, Result};
use super::revision::Revision;

/// Column family holding revision → KeyValue.
pub const CF_KV: &str = "kv";
/// Column family holding store metadata (revisions of compaction, the applied Raft index).
pub const CF_META: &str = "meta";
/// Column family holding granted leases.
pub const CF_LEASE: &str = "lease";
/// Column family reserved for Raft log entries.
pub const CF_RAFT_LOG: &str = "raft_log";
/// Column family reserved for Raft's vote and other hard state.
pub const CF_RAFT_STATE: &str = "raft_state";

const ALL_CFS: [&str; 5] = [CF_KV, CF_META, CF_LEASE, CF_RAFT_LOG, CF_RAFT_STATE];

/// Meta key: the main revision a compaction was asked for (written before it starts).
pub const META_SCHEDULED_COMPACT: &[u8] = b"scheduledCompactRev";
/// Meta key: the main revision of the last compaction that finished removing data.
pub const META_FINISHED_COMPACT: &[u8] = b"finishedCompactRev";
/// Meta key: the Raft log index of the last entry applied to the store (etcd's consistent index).
pub const META_CONSISTENT_INDEX: &[u8] = b"consistent_index";
/// Meta key: the store's current main revision. Kept explicitly because compaction may remove
/// every revision on disk that would otherwise tell it.
pub const META_CURRENT_REV: &[u8] = b"currentRev";

/// Bound on the WAL files kept (see [`Backend::open`]).
const MAX_TOTAL_WAL_BYTES: u64 = 64 << 20;

/// The database of one member.
pub struct Backend {
    /// The RocksDB handle; multi-threaded column families so the Raft layer can add its own.
    db: DBWithThreadMode<MultiThreaded>,
    /// Whether every batch is fsynced before it is acknowledged (the standalone store).
    /// Otherwise (under Raft) a batch skips RocksDB's WAL altogether: the Raft log is the
    /// record a crash recovers from, and [`Backend::persist`] runs before the log is trimmed.
    sync: bool,
}

impl Backend {
    /// Opens (or creates) the database in `dir`, with every column family present.
    pub fn open(dir: &Path, sync: bool) -> Result<Self> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        opts.set_max_background_jobs(2);
        opts.set_bytes_per_sync(1 << 20);
        // A WAL file is deleted only once every column family with data in it has flushed its
        // memtable. `meta` (the applied index) takes a few bytes per apply and would not fill
        // its memtable for ages, so without a bound the WAL grew to RocksDB's default of 4 ×
        // the memtable budget (~2.5 GiB): it held, then, a second copy of every Raft entry and
        // every applied write (1153 bytes on disk per 288-byte key-value at 1M keys against etcd's
        // 669) and was replayed in full at every start. Past this size RocksDB flushes the
        // column families pinning the oldest WAL file and deletes it.
        opts.set_max_total_wal_size(MAX_TOTAL_WAL_BYTES);
        // Batches that skip the WAL (see `sync`) survive a crash only once flushed, so every
        // flush, RocksDB's own included, takes all column families at one point: after a crash
        // the store is as it was after some applied entry (the data and the applied index
        // agree), never a mix, and the Raft log replays from there.
        opts.set_atomic_flush(true);
        let cfs = ALL_CFS
            .iter()
            .map(|name| ColumnFamilyDescriptor::new(*name, Options::default()));
        let db = DBWithThreadMode::<MultiThreaded>::open_cf_descriptors(&opts, dir, cfs)?;
        Ok(Self { db, sync })
    }

    /// The handle of a column family that [`Backend::open`] created.
    pub fn cf(&self, name: &str) -> std::sync::Arc<BoundColumnFamily<'_>> {
        self.db
            .cf_handle(name)
            .unwrap_or_else(|| panic!("invariant: column family {name} is created at open"))
    }

    /// The underlying database, for the layers (Raft, snapshots) that keep their own data in it.
    pub fn db(&self) -> &DBWithThreadMode<MultiThreaded> {
        &self.db
    }

    /// Writes a batch atomically: fsynced if the backend was opened with `sync`, otherwise
    /// without the WAL (durable once flushed; see [`Backend::persist`]).
    ///
    /// Under Raft each applied command is a batch, and its WAL record is a `write` system call
    /// and a checksum on every member for data the Raft log already holds: leaving it out took
    /// about a tenth off the members' CPU per put at 256 clients (`docs/benchmarks.md`).
    pub fn write(&self, batch: WriteBatch) -> Result<()> {
        let mut opts = WriteOptions::default();
        if self.sync {
            opts.set_sync(true);
        } else {
            opts.disable_wal(true);
        }
        self.db.write_opt(batch, &opts)?;
        Ok(())
    }

    /// Makes every batch written so far durable: flushes all column families (together, as
    /// every flush here is). Blocks until the flush is done. Under Raft this runs before log
    /// entries are purged, so the applied state on disk never falls behind the log's start.
    pub fn persist(&self) -> Result<()> {
        let cfs: Vec<_> = ALL_CFS.iter().map(|name| self.cf(name)).collect();
        let refs: Vec<_> = cfs.iter().collect();
        self.db.flush_cfs_opt(&refs, &FlushOptions::default())?;
        Ok(())
    }

    /// Reads an `i64` meta value, if present.
    pub fn meta_i64(&self, key: &[u8]) -> Result<Option<i64>> {
        match self.db.get_pinned_cf(&self.cf(CF_META), key)? {
            None => Ok(None),
            Some(v) => decode_i64(&v).map(Some),
        }
    }

    /// The encoded KeyValue stored at a revision (live or tombstone), if present.
    pub fn get_revision(&self, rev: Revision, tombstone: bool) -> Result<Option<Vec<u8>>> {
        Ok(self.db.get_cf(&self.cf(CF_KV), rev.encode_key(tombstone))?)
    }

    /// Approximate bytes on disk of the whole database (SST files plus memtables).
    pub fn size_bytes(&self) -> u64 {
        ALL_CFS
            .iter()
            .map(|name| {
                let cf = self.cf(name);
                let sst = self
                    .db
                    .property_int_value_cf(&cf, "rocksdb.total-sst-files-size")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                let mem = self
                    .db
                    .property_int_value_cf(&cf, "rocksdb.cur-size-all-mem-tables")
                    .ok()
                    .flatten()
                    .unwrap_or(0);
                sst + mem
            })
            .sum()
    }

    /// Asks RocksDB to rewrite all files of the KV column family, dropping deleted data
    /// (what etcd's defragment achieves for bbolt).
    pub fn defragment(&self) {
        self.db
            .compact_range_cf(&self.cf(CF_KV), None::<&[u8]>, None::<&[u8]>);
        self.db
            .compact_range_cf(&self.cf(CF_LEASE), None::<&[u8]>, None::<&[u8]>);
    }
}

/// Big-endian encoding of an `i64` meta value.
pub fn encode_i64(v: i64) -> [u8; 8] {
    v.to_be_bytes()
}

/// Decodes a meta value written by [`encode_i64`].
pub fn decode_i64(bytes: &[u8]) -> Result<i64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| Error::Corrupt(format!("meta value of {} bytes, want 8", bytes.len())))?;
    Ok(i64::from_be_bytes(arr))
}

/// A granted lease as stored on disk: its ID, granted TTL and the TTL remaining at the last
/// checkpoint (0 = never checkpointed, so the full TTL applies after a restart, as in etcd).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseRecord {
    /// The lease ID (never 0).
    pub id: i64,
    /// The TTL in seconds the lease was granted with.
    pub ttl: i64,
    /// Seconds remaining at the last checkpoint, 0 if none.
    pub remaining_ttl: i64,
}

impl LeaseRecord {
    /// The `lease` column family key of this lease.
    pub fn key(id: i64) -> [u8; 8] {
        id.to_be_bytes()
    }

    /// The `lease` column family value: TTL then remaining TTL, big-endian.
    pub fn encode(&self) -> [u8; 16] {
        let mut out = [0u8; 16];
        out[..8].copy_from_slice(&self.ttl.to_be_bytes());
        out[8..].copy_from_slice(&self.remaining_ttl.to_be_bytes());
        out
    }

    /// Decodes a key/value pair of the `lease` column family.
    pub fn decode(key: &[u8], value: &[u8]) -> Result<Self> {
        let corrupt = || Error::Corrupt(format!("lease record of {} bytes", value.len()));
        let id = decode_i64(key)?;
        if value.len() != 16 {
            return Err(corrupt());
        }
        Ok(Self {
            id,
            ttl: decode_i64(&value[..8])?,
            remaining_ttl: decode_i64(&value[8..])?,
        })
    }
}
