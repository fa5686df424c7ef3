//! Checks a request must pass before it touches the store (etcd's `v3rpc/key.go` checks), so
//! that bad input gets etcd's error and changes nothing.

use std::collections::HashSet;

use kvstore_proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use prost::Message;

use super::error::{Error, Result};
use super::index::KeyRange;
use super::store::Limits;

/// A Range request: a key, a sane range end, not too large.
pub fn range(r: &RangeRequest, limits: Limits) -> Result<()> {
    size(r.encoded_len(), limits)?;
    range_fields(r)
}

/// A Put request: a key; `ignore_value`/`ignore_lease` not combined with a value/lease.
pub fn put(r: &PutRequest, limits: Limits) -> Result<()> {
    size(r.encoded_len(), limits)?;
    put_fields(r)
}

/// A DeleteRange request: a key and a sane range end.
pub fn delete_range(r: &DeleteRangeRequest, limits: Limits) -> Result<()> {
    size(r.encoded_len(), limits)?;
    delete_fields(r)
}

/// A Txn request: within the operation limit, every operation valid, no key written twice.
pub fn txn(r: &TxnRequest, limits: Limits) -> Result<()> {
    size(r.encoded_len(), limits)?;
    txn_fields(r, limits.max_txn_ops)?;
    check_intervals(&r.success)?;
    check_intervals(&r.failure)?;
    Ok(())
}

fn size(len: usize, limits: Limits) -> Result<()> {
    if len > limits.max_request_bytes {
        return Err(Error::RequestTooLarge);
    }
    Ok(())
}

fn key_and_end(key: &[u8], range_end: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if !range_end.is_empty() && range_end != [0] && range_end < key {
        return Err(Error::InvalidRangeEnd);
    }
    Ok(())
}

fn range_fields(r: &RangeRequest) -> Result<()> {
    key_and_end(&r.key, &r.range_end)
}

fn put_fields(r: &PutRequest) -> Result<()> {
    if r.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if r.ignore_value && !r.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if r.ignore_lease && r.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}

fn delete_fields(r: &DeleteRangeRequest) -> Result<()> {
    key_and_end(&r.key, &r.range_end)
}

fn txn_fields(r: &TxnRequest, max_ops: usize) -> Result<()> {
    let ops = r.compare.len().max(r.success.len()).max(r.failure.len());
    if ops > max_ops {
        return Err(Error::TooManyOps);
    }
    if r.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in r.success.iter().chain(&r.failure) {
        match &op.request {
            Some(Request::RequestRange(r)) => range_fields(r)?,
            Some(Request::RequestPut(r)) => put_fields(r)?,
            Some(Request::RequestDeleteRange(r)) => delete_fields(r)?,
            Some(Request::RequestTxn(inner)) => txn_fields(inner, max_ops)?,
            // etcd answers an empty operation this way too.
            None => return Err(Error::KeyNotFound),
        }
    }
    Ok(())
}

/// etcd's `checkIntervals`: within one branch (nested transactions included) no key may be put
/// twice, nor put and deleted. Puts in the two branches of one nested transaction may overlap,
/// since only one of them runs. Returns the keys put and the ranges deleted.
fn check_intervals(ops: &[RequestOp]) -> Result<(HashSet<Vec<u8>>, Vec<KeyRange>)> {
    let mut dels: Vec<KeyRange> = ops
        .iter()
        .filter_map(|op| match &op.request {
            Some(Request::RequestDeleteRange(d)) => Some(KeyRange::from_etcd(&d.key, &d.range_end)),
            _ => None,
        })
        .collect();
    let deleted = |dels: &[KeyRange], k: &[u8]| dels.iter().any(|d| d.contains(k));
    let mut puts: HashSet<Vec<u8>> = HashSet::new();
    for op in ops {
        let Some(Request::RequestTxn(inner)) = &op.request else {
            continue;
        };
        let (puts_then, dels_then) = check_intervals(&inner.success)?;
        let (puts_else, dels_else) = check_intervals(&inner.failure)?;
        for k in &puts_then {
            if puts.contains(k) || deleted(&dels, k) {
                return Err(Error::DuplicateKey);
            }
        }
        puts.extend(puts_then.iter().cloned());
        for k in puts_else {
            if (puts.contains(&k) && !puts_then.contains(&k)) || deleted(&dels, &k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let Some(Request::RequestPut(p)) = &op.request else {
            continue;
        };
        if puts.contains(&p.key) || deleted(&dels, &p.key) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(p.key.clone());
    }
    Ok((puts, dels))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::etcdserverpb::RequestOp;

    fn put_op(k: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: k.as_bytes().to_vec(),
                ..Default::default()
            })),
        }
    }

    fn del_op(k: &str, end: &str) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: k.as_bytes().to_vec(),
                range_end: end.as_bytes().to_vec(),
                ..Default::default()
            })),
        }
    }

    fn txn_op(success: Vec<RequestOp>, failure: Vec<RequestOp>) -> RequestOp {
        RequestOp {
            request: Some(Request::RequestTxn(TxnRequest {
                compare: vec![],
                success,
                failure,
            })),
        }
    }

    fn check(success: Vec<RequestOp>) -> Result<()> {
        txn(
            &TxnRequest {
                compare: vec![],
                success,
                failure: vec![],
            },
            Limits::default(),
        )
    }

    #[test]
    fn two_puts_of_one_key_are_a_duplicate() {
        assert!(matches!(
            check(vec![put_op("a"), put_op("a")]),
            Err(Error::DuplicateKey)
        ));
        assert!(check(vec![put_op("a"), put_op("b")]).is_ok());
    }

    #[test]
    fn put_inside_a_deleted_range_is_a_duplicate() {
        assert!(matches!(
            check(vec![del_op("a", "c"), put_op("b")]),
            Err(Error::DuplicateKey)
        ));
        assert!(check(vec![del_op("a", "c"), put_op("c")]).is_ok());
        // Overlapping deletes are fine.
        assert!(check(vec![del_op("a", "c"), del_op("b", "d")]).is_ok());
    }

    #[test]
    fn nested_branches_may_put_the_same_key_but_not_twice_with_the_outer_level() {
        assert!(check(vec![txn_op(vec![put_op("a")], vec![put_op("a")])]).is_ok());
        assert!(matches!(
            check(vec![txn_op(vec![put_op("a")], vec![]), put_op("a")]),
            Err(Error::DuplicateKey)
        ));
        assert!(matches!(
            check(vec![txn_op(vec![del_op("a", "")], vec![]), put_op("a")]),
            Err(Error::DuplicateKey)
        ));
    }

    #[test]
    fn too_many_operations_are_refused() {
        let ops: Vec<_> = (0..129).map(|i| put_op(&format!("k{i}"))).collect();
        assert!(matches!(check(ops), Err(Error::TooManyOps)));
        let ops: Vec<_> = (0..128).map(|i| put_op(&format!("k{i}"))).collect();
        assert!(check(ops).is_ok());
    }

    #[test]
    fn empty_keys_and_inverted_ranges_are_refused() {
        assert!(matches!(check(vec![put_op("")]), Err(Error::EmptyKey)));
        assert!(matches!(
            check(vec![del_op("b", "a")]),
            Err(Error::InvalidRangeEnd)
        ));
        // "\0" as range end means every key from `key`, not an inverted range.
        assert!(check(vec![del_op("b", "\0")]).is_ok());
    }

    #[test]
    fn ignore_flags_conflict_with_values() {
        let r = PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ignore_value: true,
            ..Default::default()
        };
        assert!(matches!(
            put(&r, Limits::default()),
            Err(Error::ValueProvided)
        ));
        let r = PutRequest {
            key: b"k".to_vec(),
            lease: 5,
            ignore_lease: true,
            ..Default::default()
        };
        assert!(matches!(
            put(&r, Limits::default()),
            Err(Error::LeaseProvided)
        ));
    }

    #[test]
    fn oversized_requests_are_refused() {
        let r = PutRequest {
            key: b"k".to_vec(),
            value: vec![0; 1536 * 1024 + 1],
            ..Default::default()
        };
        assert!(matches!(
            put(&r, Limits::default()),
            Err(Error::RequestTooLarge)
        ));
    }
}
