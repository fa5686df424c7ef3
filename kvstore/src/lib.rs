//! kvstore: a Raft-replicated, revisioned key-value store that speaks the etcd v3 API.
//!
//! # Layout
//! - [`mvcc`]: the revisioned store — etcd's revision model over our own B+tree index and RocksDB.
//! - [`apply`]: commands, the state machine that applies them, and the proposer that orders them.
//! - [`raft`]: Raft storage on openraft: the log, the vote, the state machine and snapshots.
//! - [`backup`]: snapshot save, status and offline restore (Maintenance.Snapshot, `kvctl snapshot`).
//! - [`alarm`]: NOSPACE and CORRUPT alarms.
//! - [`quota`]: the backend quota (`--quota-backend-bytes`) and what raises NOSPACE.
//! - [`compactor`]: auto-compaction by the leader (`--auto-compaction-mode`, `-retention`).
//! - [`corruption`]: HashKV comparisons between members that raise CORRUPT.
//! - [`watch`]: fan-out of committed changes to watchers.
//! - [`lease`]: lease TTLs and expiry at run time.
//! - [`server`]: the etcd v3 gRPC services, one thin adapter each.
//! - [`membership`]: the initial cluster and etcd-compatible member and cluster IDs.
//! - [`node`]: one member wired together; listeners and shutdown.
//! - [`metrics`]: Prometheus `/metrics` and `/health`.
//! - [`config`]: flags and `KVSTORE_*` environment variables.
//! - [`error`]: the crate's error type.
//! - `faults`: test-only injected bugs for the chaos suite (feature `fault-injection` only).

pub mod alarm;
pub mod apply;
pub mod backup;
pub mod compactor;
pub mod config;
pub mod corruption;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod faults;
pub mod lease;
pub mod membership;
pub mod metrics;
pub mod mvcc;
pub mod node;
pub mod quota;
pub mod raft;
pub mod server;
pub mod watch;

pub use error::Error;
