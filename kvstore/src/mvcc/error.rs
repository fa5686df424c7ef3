//! The one error type of the revisioned store.
//!
//! Messages are the ones etcd users already know (they are what etcd's gRPC layer sends), so the
//! server can pass them through unchanged and map each variant to etcd's status code.

/// `Result` with the store's error as the default.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything the revisioned store can refuse or fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A read or compaction asked for a revision that compaction has already removed.
    #[error("etcdserver: mvcc: required revision has been compacted")]
    Compacted,
    /// A read or compaction asked for a revision newer than the store's current revision.
    #[error("etcdserver: mvcc: required revision is a future revision")]
    FutureRevision,
    /// A request named no key.
    #[error("etcdserver: key is not provided")]
    EmptyKey,
    /// `range_end` sorts before `key` (and is not etcd's "\0" meaning "every key from `key`").
    #[error("etcdserver: range end must be greater than key")]
    InvalidRangeEnd,
    /// A transaction has more compares or operations in one branch than allowed.
    #[error("etcdserver: too many operations in txn request")]
    TooManyOps,
    /// A transaction writes the same key twice (or a put overlaps a delete range) in one branch.
    #[error("etcdserver: duplicate key given in txn request")]
    DuplicateKey,
    /// The encoded request is larger than `max_request_bytes`.
    #[error("etcdserver: request is too large")]
    RequestTooLarge,
    /// `ignore_value` or `ignore_lease` was asked for a key that does not exist.
    #[error("etcdserver: key not found")]
    KeyNotFound,
    /// `ignore_value` was set together with a value.
    #[error("etcdserver: value is provided")]
    ValueProvided,
    /// `ignore_lease` was set together with a lease.
    #[error("etcdserver: lease is provided")]
    LeaseProvided,
    /// A put or revoke named a lease that does not exist.
    #[error("etcdserver: requested lease not found")]
    LeaseNotFound,
    /// A grant named a lease ID that is already in use.
    #[error("etcdserver: lease already exists")]
    LeaseExists,
    /// RocksDB failed; the store may be unusable until restarted.
    #[error("mvcc: backend: {0}")]
    Backend(#[from] rocksdb::Error),
    /// Data read back from disk is not what the store wrote: a broken invariant on disk.
    #[error("mvcc: corrupt data: {0}")]
    Corrupt(String),
}
