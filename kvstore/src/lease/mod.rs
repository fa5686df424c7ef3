//! Leases at run time: deadlines, keep-alives, expiry and checkpoints (etcd's `lease`
//! package). Leases as data (records, attached keys, revocation deleting them) live in
//! [`crate::mvcc::leases`].
//!
//! - [`lessor`]: the [`Lessor`], which grants, renews, checkpoints and expires leases through
//!   the proposer, on the leader only.
//! - [`expiry`]: the deadlines, ordered for expiry and indexed for renewal.

pub mod expiry;
pub mod lessor;

pub use lessor::{min_ttl, Lessor, LessorOptions, TimeToLive, MAX_LEASE_TTL};
