//! The backend quota (etcd's `--quota-backend-bytes`): what counts as the backend's size, what
//! a request costs, and raising the NOSPACE alarm when a write would pass the quota.
//!
//! # What "backend size" means here
//! etcd measures its bbolt file. Our equivalent is the on-disk size of the store's own column
//! families — `kv` (every revision), `lease` and `meta` — counted as their SST files plus the
//! memtables not yet flushed (which become SST files). The Raft log (`raft_log`, `raft_state`)
//! is left out, as etcd leaves its WAL out: it is truncated after every Raft snapshot, not by
//! compaction and defragmentation, which are how an operator recovers from NOSPACE.
//! `Status.db_size` reports this size; `Status.db_size_in_use` reports RocksDB's estimate of the
//! live part of it, so `db_size - db_size_in_use` is roughly what `defrag` would give back.
//!
//! # What happens when the quota is reached
//! As in etcd's gRPC quota layer (`v3rpc/quota.go`): before a Put, a Txn that puts, or a
//! LeaseGrant is proposed, the member compares `size + cost` with the quota; if it does not fit,
//! it proposes `Alarm(ACTIVATE, NOSPACE)` for itself through Raft, so every member refuses
//! such writes from then on (`alarm.rs`), and fails the request with
//! `etcdserver: mvcc: database space exceeded` (ResourceExhausted). Reads, deletes, compaction
//! and defragmentation keep working. One difference: etcd also refuses a Txn that only reads or
//! deletes while the size is past the quota; we let it through (a Kubernetes delete is a Txn).

use kvstore_proto::etcdserverpb::{
    alarm_request::AlarmAction, request_op::Request as Op, AlarmRequest, AlarmType, PutRequest,
    RequestOp, TxnRequest,
};

use crate::apply::Command;
use crate::mvcc::backend::{Backend, CF_KV, CF_LEASE, CF_META};
use crate::node::Node;
use crate::Error;

/// etcd's default quota: 2 GiB.
pub const DEFAULT_QUOTA_BYTES: u64 = 2 * 1024 * 1024 * 1024;
/// etcd's suggested maximum quota: 8 GiB (a larger one works, with a warning at start).
pub const MAX_QUOTA_BYTES: u64 = 8 * 1024 * 1024 * 1024;

/// Bytes a key-value costs beyond its key and value (etcd's `kvOverhead`).
const KV_OVERHEAD: u64 = 256;
/// Bytes a lease costs (etcd's `leaseOverhead`).
const LEASE_OVERHEAD: u64 = 64;

/// The column families whose size is the backend size.
const QUOTA_CFS: [&str; 3] = [CF_KV, CF_LEASE, CF_META];

/// The backend size the quota is compared with (see the module docs).
pub fn backend_size(backend: &Backend) -> u64 {
    sum_property(backend, "rocksdb.total-sst-files-size")
        + sum_property(backend, "rocksdb.cur-size-all-mem-tables")
}

/// RocksDB's estimate of the live bytes in [`backend_size`]: never more than it.
pub fn backend_size_in_use(backend: &Backend) -> u64 {
    let live = sum_property(backend, "rocksdb.estimate-live-data-size")
        + sum_property(backend, "rocksdb.cur-size-all-mem-tables");
    live.min(backend_size(backend))
}

fn sum_property(backend: &Backend, property: &str) -> u64 {
    QUOTA_CFS
        .iter()
        .map(|name| {
            backend
                .db()
                .property_int_value_cf(&backend.cf(name), property)
                .ok()
                .flatten()
                .unwrap_or(0)
        })
        .sum()
}

/// The quota in effect for `--quota-backend-bytes` (0 is the default), with etcd's warning for
/// one past the suggested maximum.
pub fn effective_quota(flag: u64) -> u64 {
    let quota = if flag == 0 { DEFAULT_QUOTA_BYTES } else { flag };
    if quota > MAX_QUOTA_BYTES {
        tracing::warn!(
            quota_size_bytes = quota,
            quota_maximum_size_bytes = MAX_QUOTA_BYTES,
            "quota exceeds the maximum value"
        );
    }
    quota
}

/// What a Put adds to the backend (etcd's `costPut`).
pub fn put_cost(req: &PutRequest) -> u64 {
    KV_OVERHEAD + req.key.len() as u64 + req.value.len() as u64
}

/// What a Txn adds at most: the costlier branch's puts (etcd's `costTxn`; nested transactions
/// are counted too). 0 for a transaction that does not put.
pub fn txn_cost(req: &TxnRequest) -> u64 {
    fn branch(ops: &[RequestOp]) -> u64 {
        ops.iter()
            .map(|op| match &op.request {
                Some(Op::RequestPut(p)) => put_cost(p),
                Some(Op::RequestTxn(t)) => txn_cost(t),
                _ => 0,
            })
            .sum()
    }
    branch(&req.success).max(branch(&req.failure))
}

/// What a LeaseGrant adds.
pub fn lease_grant_cost() -> u64 {
    LEASE_OVERHEAD
}

/// How long a measured backend size serves admission checks.
const SIZE_REFRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// [`backend_size`] for admission checks, measured at most every [`SIZE_REFRESH`]: asking
/// RocksDB for six properties on every write was ~2.5 % of the leader's CPU under a put load,
/// and the quota is a bound on growth, not an exact figure (etcd's bbolt size lags too).
fn admission_size(backend: &Backend) -> u64 {
    /// The last measurement: which backend (its address), when, and the size.
    static LAST: std::sync::Mutex<Option<(usize, std::time::Instant, u64)>> =
        std::sync::Mutex::new(None);
    let which = std::ptr::from_ref(backend) as usize;
    let now = std::time::Instant::now();
    if let Ok(last) = LAST.lock() {
        if let Some((at_backend, at, size)) = *last {
            if at_backend == which && now.duration_since(at) < SIZE_REFRESH {
                return size;
            }
        }
    }
    let size = backend_size(backend);
    if let Ok(mut last) = LAST.lock() {
        *last = Some((which, now, size));
    }
    size
}

/// Admits a write of `cost` bytes, or raises NOSPACE for this member (once) through Raft and
/// fails it with etcd's `database space exceeded`. A cost of 0 (no puts) is always admitted.
pub async fn check(node: &Node, cost: u64) -> Result<(), Error> {
    if cost == 0 {
        return Ok(());
    }
    let size = admission_size(node.store.backend());
    if size.saturating_add(cost) < node.config.quota_bytes() {
        return Ok(());
    }
    let me = node.membership.member_id;
    if !node.alarms.is_active(Some(me), AlarmType::Nospace) {
        tracing::warn!(
            quota_size_bytes = node.config.quota_bytes(),
            backend_size_bytes = size,
            "database space exceeded; raising the NOSPACE alarm"
        );
        let raise = Command::Alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: me,
            alarm: AlarmType::Nospace as i32,
        });
        if let Err(err) = node.proposer.propose(raise).await {
            tracing::warn!(cause = %err, "could not raise the NOSPACE alarm");
        }
    }
    Err(Error::NoSpace)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str) -> RequestOp {
        RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: key.into(),
                value: value.into(),
                ..PutRequest::default()
            })),
        }
    }

    #[test]
    fn txn_costs_its_costlier_branch_and_nothing_without_puts() {
        let delete = RequestOp {
            request: Some(Op::RequestDeleteRange(Default::default())),
        };
        let only_deletes = TxnRequest {
            success: vec![delete.clone()],
            failure: vec![delete],
            ..TxnRequest::default()
        };
        assert_eq!(txn_cost(&only_deletes), 0);
        let puts = TxnRequest {
            success: vec![put("a", "1")],
            failure: vec![put("bb", "22"), put("c", "3")],
            ..TxnRequest::default()
        };
        assert_eq!(txn_cost(&puts), 2 * KV_OVERHEAD + 6);
    }

    #[test]
    fn zero_quota_means_etcds_default() {
        assert_eq!(effective_quota(0), DEFAULT_QUOTA_BYTES);
        assert_eq!(effective_quota(1024), 1024);
    }
}
