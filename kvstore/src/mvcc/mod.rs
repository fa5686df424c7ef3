//! The revisioned store: etcd's MVCC model over our own B+tree index and RocksDB.
//!
//! # Layout
//! - [`revision`]: `Revision { main, sub }` and its big-endian on-disk key.
//! - [`key_index`]: one key's generations of revisions (what a delete ends, what compaction keeps).
//! - [`btree`]: our B+tree with linked leaves, the ordered map under the index.
//! - [`index`]: key → key index over the B+tree; range lookups at a revision.
//! - [`backend`]: RocksDB column families and their encodings.
//! - [`leases`]: granted leases and the keys attached to them, as data.
//! - [`store`]: [`KvStore`], index and backend kept consistent; reads and write transactions.
//! - [`write_group`]: write transactions made durable together, by one RocksDB write.
//! - [`txn`]: etcd's Range/Put/DeleteRange/Txn semantics on the API's own messages.
//! - [`validate`]: the request checks etcd makes before touching the store.
//! - [`compaction`]: removing history in bounded batches.
//! - [`history`]: the changes between two revisions, read back for watchers catching up.
//! - [`hash`]: etcd's HashKV, for comparing members.
//! - [`error`]: the store's one error type.

pub mod backend;
pub mod btree;
pub mod compaction;
pub mod error;
pub mod hash;
pub mod history;
pub mod index;
pub mod key_index;
pub mod leases;
pub mod revision;
pub mod store;
pub mod txn;
pub mod validate;
pub mod write_group;

pub use backend::LeaseRecord;
pub use compaction::CompactionJob;
pub use error::{Error, Result};
pub use hash::KvHash;
pub use index::KeyRange;
pub use revision::Revision;
pub use store::{Committed, KvStore, Limits, RangeOptions, RangeResult, StoreOptions, WriteTxn};
pub use write_group::WriteGroup;
#[cfg(test)]
mod model_test;
