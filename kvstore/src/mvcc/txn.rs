//! etcd's request semantics over the revisioned store: Range, Put, DeleteRange and Txn as the
//! etcd v3 API defines them (etcd's `applierV3backend`), taking and returning the API's own
//! protobuf messages so that the server and the Raft apply loop pass them straight through.
//!
//! A Txn is decided before anything is written: every compare on the chosen path, nested
//! transactions included, is evaluated against the state before the transaction (etcd's
//! `compareToPath`); then the chosen operations run in one write transaction with one main
//! revision. A transaction that only reads never takes the writer lock.

use std::cmp::Ordering as CmpOrdering;

use kvstore_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, RequestOp, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};
use kvstore_proto::mvccpb::KeyValue;

use super::error::{Error, Result};
use super::index::KeyRange;
use super::store::{Committed, KvStore, RangeOptions, RangeResult, WriteTxn};
use super::validate;

/// A consistent read view: every read through it is served at one revision.
pub struct ReadTxn<'a> {
    /// The store read.
    store: &'a KvStore,
    /// The revision this view sees as newest.
    rev: i64,
}

impl KvStore {
    /// A read view at the current revision.
    pub fn read(&self) -> ReadTxn<'_> {
        ReadTxn {
            store: self,
            rev: self.current_revision(),
        }
    }

    /// etcd's Range.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse> {
        validate::range(req, self.limits())?;
        let view = self.read();
        range(&View::Read(&view), req)
    }

    /// etcd's Put, as a transaction of its own.
    pub fn put(&self, req: &PutRequest) -> Result<(PutResponse, Committed)> {
        validate::put(req, self.limits())?;
        self.put_validated(req)
    }

    /// [`KvStore::put`] for a request already checked with [`validate::put`] (the server
    /// validates before proposing, so the state machine does not check again).
    pub fn put_validated(&self, req: &PutRequest) -> Result<(PutResponse, Committed)> {
        let mut txn = self.write();
        let resp = put(&mut txn, req)?;
        Ok((resp, txn.commit()?))
    }

    /// etcd's DeleteRange, as a transaction of its own (no revision bump if nothing matched).
    pub fn delete_range(
        &self,
        req: &DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Committed)> {
        validate::delete_range(req, self.limits())?;
        self.delete_range_validated(req)
    }

    /// [`KvStore::delete_range`] for a request already checked with [`validate::delete_range`].
    pub fn delete_range_validated(
        &self,
        req: &DeleteRangeRequest,
    ) -> Result<(DeleteRangeResponse, Committed)> {
        let mut txn = self.write();
        let resp = delete_range(&mut txn, req)?;
        Ok((resp, txn.commit()?))
    }

    /// etcd's Txn. The returned `Committed` is empty for a transaction that only read.
    pub fn txn(&self, req: &TxnRequest) -> Result<(TxnResponse, Committed)> {
        validate::txn(req, self.limits())?;
        self.txn_validated(req)
    }

    /// [`KvStore::txn`] for a request already checked with [`validate::txn`].
    pub fn txn_validated(&self, req: &TxnRequest) -> Result<(TxnResponse, Committed)> {
        if is_read_only(req) {
            let view = self.read();
            let mut view = View::Read(&view);
            let path = compare_path(&view, req);
            check_ranges(req, &path, view.begin_rev(), self.compacted_revision())?;
            let mut resp = apply_txn(&mut view, req, &path)?;
            let rev = view.rev();
            resp.header = header(rev);
            Ok((
                resp,
                Committed {
                    rev,
                    events: Vec::new(),
                },
            ))
        } else {
            let mut txn = self.write();
            let mut view = View::Write(&mut txn);
            let path = compare_path(&view, req);
            check_ranges(req, &path, view.begin_rev(), self.compacted_revision())?;
            let mut resp = apply_txn(&mut view, req, &path)?;
            let committed = txn.commit()?;
            resp.header = header(committed.rev);
            Ok((resp, committed))
        }
    }
}

impl ReadTxn<'_> {
    /// Reads as of `opts.rev` (0: this view's revision).
    pub fn range(&self, range: &KeyRange, opts: RangeOptions) -> Result<RangeResult> {
        self.store.read_range_at(range, opts, self.rev)
    }
}

/// What an operation runs against: a read view, or a write transaction.
enum View<'t, 's> {
    Read(&'t ReadTxn<'s>),
    Write(&'t mut WriteTxn<'s>),
}

impl<'s> View<'_, 's> {
    fn range(&self, range: &KeyRange, opts: RangeOptions) -> Result<RangeResult> {
        match self {
            View::Read(r) => r.range(range, opts),
            View::Write(w) => w.range(range, opts),
        }
    }

    /// The revision reads see now (a write transaction's own revision once it changed something).
    fn rev(&self) -> i64 {
        match self {
            View::Read(r) => r.rev,
            View::Write(w) => w.rev(),
        }
    }

    /// The revision before any change of this transaction.
    fn begin_rev(&self) -> i64 {
        match self {
            View::Read(r) => r.rev,
            View::Write(w) => w.begin_rev(),
        }
    }

    fn write(&mut self) -> &mut WriteTxn<'s> {
        match self {
            View::Write(w) => w,
            View::Read(_) => panic!("invariant: a read-only transaction performs no writes"),
        }
    }
}

/// A header carrying only the revision; the server fills in cluster, member and term.
pub fn header(revision: i64) -> Option<ResponseHeader> {
    Some(ResponseHeader {
        revision,
        ..ResponseHeader::default()
    })
}

fn range(view: &View<'_, '_>, r: &RangeRequest) -> Result<RangeResponse> {
    let key_range = KeyRange::from_etcd(&r.key, &r.range_end);
    let sort_order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
    let sort_target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
    let filtered = r.min_mod_revision != 0
        || r.max_mod_revision != 0
        || r.min_create_revision != 0
        || r.max_create_revision != 0;
    // Sorting or filtering needs every key; otherwise fetch one extra to know about `more`.
    let limit = if sort_order != SortOrder::None || filtered || r.limit <= 0 {
        0
    } else {
        r.limit as usize + 1
    };
    let rr = view.range(
        &key_range,
        RangeOptions {
            limit,
            rev: r.revision,
            count_only: r.count_only,
        },
    )?;
    let mut kvs = rr.kvs;
    if r.max_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision <= r.max_mod_revision);
    }
    if r.min_mod_revision != 0 {
        kvs.retain(|kv| kv.mod_revision >= r.min_mod_revision);
    }
    if r.max_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision <= r.max_create_revision);
    }
    if r.min_create_revision != 0 {
        kvs.retain(|kv| kv.create_revision >= r.min_create_revision);
    }
    // Results come in key order; any other target sorts ascending unless told otherwise.
    let order = if sort_target != SortTarget::Key && sort_order == SortOrder::None {
        SortOrder::Ascend
    } else {
        sort_order
    };
    if order != SortOrder::None {
        let cmp = |a: &KeyValue, b: &KeyValue| -> CmpOrdering {
            match sort_target {
                SortTarget::Key => a.key.cmp(&b.key),
                SortTarget::Version => a.version.cmp(&b.version),
                SortTarget::Create => a.create_revision.cmp(&b.create_revision),
                SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
                SortTarget::Value => a.value.cmp(&b.value),
            }
        };
        if order == SortOrder::Descend {
            kvs.sort_by(|a, b| cmp(b, a));
        } else {
            kvs.sort_by(cmp);
        }
    }
    let mut more = false;
    if r.limit > 0 && kvs.len() > r.limit as usize {
        kvs.truncate(r.limit as usize);
        more = true;
    }
    if r.keys_only {
        for kv in &mut kvs {
            kv.value.clear();
        }
    }
    Ok(RangeResponse {
        header: header(rr.rev),
        kvs,
        more,
        count: rr.count as i64,
    })
}

fn put(txn: &mut WriteTxn<'_>, p: &PutRequest) -> Result<PutResponse> {
    let needs_prev = p.prev_kv || p.ignore_value || p.ignore_lease;
    let prev = if needs_prev {
        txn.range(&KeyRange::Single(p.key.clone()), RangeOptions::default())?
            .kvs
            .into_iter()
            .next()
    } else {
        None
    };
    if (p.ignore_value || p.ignore_lease) && prev.is_none() {
        return Err(Error::KeyNotFound);
    }
    let value = match (&prev, p.ignore_value) {
        (Some(prev), true) => prev.value.as_slice(),
        _ => p.value.as_slice(),
    };
    let lease = match (&prev, p.ignore_lease) {
        (Some(prev), true) => prev.lease,
        _ => p.lease,
    };
    if lease != 0 && !p.ignore_lease && !txn.lease_exists(lease) {
        return Err(Error::LeaseNotFound);
    }
    let value = value.to_vec();
    let rev = txn.put(&p.key, &value, lease);
    Ok(PutResponse {
        header: header(rev),
        prev_kv: if p.prev_kv { prev } else { None },
    })
}

fn delete_range(txn: &mut WriteTxn<'_>, d: &DeleteRangeRequest) -> Result<DeleteRangeResponse> {
    let key_range = KeyRange::from_etcd(&d.key, &d.range_end);
    let prev_kvs = if d.prev_kv {
        txn.range(&key_range, RangeOptions::default())?.kvs
    } else {
        Vec::new()
    };
    let deleted = txn.delete_range(&key_range);
    Ok(DeleteRangeResponse {
        header: header(txn.rev()),
        deleted: deleted as i64,
        prev_kvs,
    })
}

/// The branch taken by a transaction and, in order, by each nested transaction on it.
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

fn compare_path(view: &View<'_, '_>, t: &TxnRequest) -> Path {
    let succeeded = t.compare.iter().all(|c| compare(view, c));
    let ops = if succeeded { &t.success } else { &t.failure };
    let nested = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestTxn(inner)) => Some(compare_path(view, inner)),
            _ => None,
        })
        .collect();
    Path { succeeded, nested }
}

/// etcd's `applyCompare`: true if every key in the compare's range satisfies it. A missing key
/// compares as an empty key-value, except that a VALUE compare on a missing key always fails.
fn compare(view: &View<'_, '_>, c: &Compare) -> bool {
    let range = KeyRange::from_etcd(&c.key, &c.range_end);
    let Ok(rr) = view.range(&range, RangeOptions::default()) else {
        return false;
    };
    let target = CompareTarget::try_from(c.target).unwrap_or(CompareTarget::Version);
    if rr.kvs.is_empty() {
        return target != CompareTarget::Value && compare_kv(c, target, &KeyValue::default());
    }
    rr.kvs.iter().all(|kv| compare_kv(c, target, kv))
}

fn compare_kv(c: &Compare, target: CompareTarget, kv: &KeyValue) -> bool {
    let ord = match (target, &c.target_union) {
        (CompareTarget::Value, Some(TargetUnion::Value(v))) => kv.value.as_slice().cmp(v),
        (CompareTarget::Value, _) => kv.value.as_slice().cmp(&[][..]),
        (CompareTarget::Version, u) => kv.version.cmp(&int_target(u)),
        (CompareTarget::Create, u) => kv.create_revision.cmp(&int_target(u)),
        (CompareTarget::Mod, u) => kv.mod_revision.cmp(&int_target(u)),
        (CompareTarget::Lease, u) => kv.lease.cmp(&int_target(u)),
    };
    match CompareResult::try_from(c.result).unwrap_or(CompareResult::Equal) {
        CompareResult::Equal => ord == CmpOrdering::Equal,
        CompareResult::NotEqual => ord != CmpOrdering::Equal,
        CompareResult::Greater => ord == CmpOrdering::Greater,
        CompareResult::Less => ord == CmpOrdering::Less,
    }
}

fn int_target(u: &Option<TargetUnion>) -> i64 {
    match u {
        Some(TargetUnion::Version(v))
        | Some(TargetUnion::CreateRevision(v))
        | Some(TargetUnion::ModRevision(v))
        | Some(TargetUnion::Lease(v)) => *v,
        _ => 0,
    }
}

/// etcd's `checkRange` over the chosen path: a read of a future or compacted revision fails the
/// whole transaction before anything is written.
fn check_ranges(t: &TxnRequest, path: &Path, begin_rev: i64, compacted: i64) -> Result<()> {
    let ops = if path.succeeded {
        &t.success
    } else {
        &t.failure
    };
    let mut nested = path.nested.iter();
    for op in ops {
        match &op.request {
            Some(Request::RequestRange(r)) if r.revision > 0 => {
                if r.revision > begin_rev {
                    return Err(Error::FutureRevision);
                }
                if r.revision < compacted {
                    return Err(Error::Compacted);
                }
            }
            Some(Request::RequestTxn(inner)) => {
                let p = nested
                    .next()
                    .unwrap_or_else(|| panic!("invariant: one path per nested txn"));
                check_ranges(inner, p, begin_rev, compacted)?;
            }
            _ => {}
        }
    }
    Ok(())
}

fn apply_txn(view: &mut View<'_, '_>, t: &TxnRequest, path: &Path) -> Result<TxnResponse> {
    let ops: &[RequestOp] = if path.succeeded {
        &t.success
    } else {
        &t.failure
    };
    let mut nested = path.nested.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match &op.request {
            Some(Request::RequestRange(r)) => Response::ResponseRange(range(view, r)?),
            Some(Request::RequestPut(p)) => Response::ResponsePut(put(view.write(), p)?),
            Some(Request::RequestDeleteRange(d)) => {
                Response::ResponseDeleteRange(delete_range(view.write(), d)?)
            }
            Some(Request::RequestTxn(inner)) => {
                let p = nested
                    .next()
                    .unwrap_or_else(|| panic!("invariant: one path per nested txn"));
                let mut resp = apply_txn(view, inner, p)?;
                resp.header = header(view.rev());
                Response::ResponseTxn(resp)
            }
            None => return Err(Error::KeyNotFound),
        };
        responses.push(ResponseOp {
            response: Some(response),
        });
    }
    Ok(TxnResponse {
        header: None,
        succeeded: path.succeeded,
        responses,
    })
}

/// Whether no operation on either branch, at any depth, writes.
pub fn is_read_only(t: &TxnRequest) -> bool {
    t.success
        .iter()
        .chain(&t.failure)
        .all(|op| match &op.request {
            Some(Request::RequestRange(_)) | None => true,
            Some(Request::RequestTxn(inner)) => is_read_only(inner),
            Some(Request::RequestPut(_)) | Some(Request::RequestDeleteRange(_)) => false,
        })
}
