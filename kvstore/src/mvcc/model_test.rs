//! Model-based property test: random sequences of puts, deletes, transactions, reads, lease
//! grants and revokes, compactions and restarts, run against the real store on RocksDB and
//! against a plain model of etcd's semantics (the full state at every revision, copied). Any
//! difference in a response, an error, a revision or a hash fails the test.
//!
//! The model is deliberately naive so that it is obviously right: it keeps a whole copy of the
//! key space per revision and answers a historical read by looking that copy up.

use std::collections::{BTreeMap, BTreeSet};

use kvstore_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    range_request::{SortOrder, SortTarget},
    request_op::Request,
    response_op::Response,
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use kvstore_proto::mvccpb::KeyValue;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use super::backend::LeaseRecord;
use super::error::Error;
use super::store::{Fault, KvStore, StoreOptions};

const KEYS: &[&[u8]] = &[b"a", b"ab", b"abc", b"b", b"ba", b"c", b"d"];
const LEASES: &[i64] = &[1, 2];

/// One step of a test.
#[derive(Clone, Debug)]
enum Op {
    Put {
        key: usize,
        value: u8,
        lease: usize,
    },
    Delete {
        key: usize,
        end: End,
    },
    Range(RangeSpec),
    /// A transaction: compare one key's version, then put/delete distinct keys or read.
    Txn {
        cmp_key: usize,
        cmp_version: i64,
        then_keys: Vec<usize>,
        else_read: usize,
    },
    Grant(usize),
    Revoke(usize),
    /// Compact at `current - back` (may be refused as compacted or future).
    Compact {
        back: i64,
    },
    Restart,
    /// Puts, deletes and writing transactions in one write group: each sees the ones before
    /// it, readers see none of them until the group ends.
    Group(Vec<Op>),
}

#[derive(Clone, Copy, Debug)]
enum End {
    Single,
    Prefix,
    FromKey,
    UpTo(usize),
}

#[derive(Clone, Debug)]
struct RangeSpec {
    key: usize,
    end: End,
    /// Read this many revisions back (0: current).
    back: i64,
    limit: i64,
    sort: Option<(SortTarget, SortOrder)>,
    keys_only: bool,
    count_only: bool,
    min_mod: i64,
}

fn end_bytes(key: &[u8], end: End) -> Vec<u8> {
    match end {
        End::Single => Vec::new(),
        End::FromKey => vec![0],
        End::Prefix => {
            let mut e = key.to_vec();
            // KEYS never end in 0xff.
            if let Some(last) = e.last_mut() {
                *last += 1;
            }
            e
        }
        End::UpTo(i) => KEYS[i].to_vec(),
    }
}

fn op_strategy() -> impl Strategy<Value = Op> {
    let key = 0..KEYS.len();
    let end = prop_oneof![
        3 => Just(End::Single),
        1 => Just(End::Prefix),
        1 => Just(End::FromKey),
        1 => (0..KEYS.len()).prop_map(End::UpTo),
    ];
    let sort = prop_oneof![
        3 => Just(None),
        1 => (
            prop_oneof![
                Just(SortTarget::Key),
                Just(SortTarget::Version),
                Just(SortTarget::Create),
                Just(SortTarget::Mod),
                Just(SortTarget::Value)
            ],
            prop_oneof![Just(SortOrder::None), Just(SortOrder::Ascend), Just(SortOrder::Descend)]
        )
            .prop_map(Some),
    ];
    let range = (
        key.clone(),
        end.clone(),
        0i64..6,
        0i64..4,
        sort,
        any::<bool>(),
        prop::bool::weighted(0.1),
        prop_oneof![4 => Just(0i64), 1 => 1i64..12],
    )
        .prop_map(
            |(key, end, back, limit, sort, keys_only, count_only, min_mod)| {
                Op::Range(RangeSpec {
                    key,
                    end,
                    back,
                    limit,
                    sort,
                    keys_only,
                    count_only,
                    min_mod,
                })
            },
        );
    let put = (key.clone(), any::<u8>(), 0..(LEASES.len() + 3))
        .prop_map(|(key, value, lease)| Op::Put { key, value, lease });
    let delete = (key.clone(), end).prop_map(|(key, end)| Op::Delete { key, end });
    let txn = |then: std::ops::Range<usize>| {
        (
            key.clone(),
            0i64..4,
            prop::collection::btree_set(0..KEYS.len(), then),
            key.clone(),
        )
            .prop_map(|(cmp_key, cmp_version, then_keys, else_read)| Op::Txn {
                cmp_key,
                cmp_version,
                then_keys: then_keys.into_iter().collect(),
                else_read,
            })
    };
    // What may join a write group (`Command::may_join_group`): a transaction that writes.
    let grouped = prop_oneof![3 => put.clone(), 1 => delete.clone(), 2 => txn(1..3)];
    prop_oneof![
        6 => put,
        2 => delete,
        6 => range,
        3 => txn(0..3),
        2 => prop::collection::vec(grouped, 1..6).prop_map(Op::Group),
        1 => (0..LEASES.len()).prop_map(Op::Grant),
        1 => (0..LEASES.len()).prop_map(Op::Revoke),
        1 => (0i64..8).prop_map(|back| Op::Compact { back }),
        1 => Just(Op::Restart),
    ]
}

/// A change to one key in the model: `Some((value, lease))` puts, `None` deletes.
type Change = (Vec<u8>, Option<(Vec<u8>, i64)>);

/// etcd's semantics, naively: the whole key space at every revision.
struct Model {
    /// `states[r]` is the key space at revision r (index 0 unused; revision 1 is empty).
    states: Vec<BTreeMap<Vec<u8>, KeyValue>>,
    compacted: i64,
    leases: BTreeSet<i64>,
}

impl Model {
    fn new() -> Self {
        Self {
            states: vec![BTreeMap::new(), BTreeMap::new()],
            compacted: 0,
            leases: BTreeSet::new(),
        }
    }

    fn rev(&self) -> i64 {
        self.states.len() as i64 - 1
    }

    fn latest(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        &self.states[self.states.len() - 1]
    }

    fn in_range(k: &[u8], key: &[u8], end: &[u8]) -> bool {
        match end {
            [] => k == key,
            [0] => k >= key,
            _ => key <= k && k < end,
        }
    }

    /// Applies a list of changes (put = Some(value, lease), delete = None) as one revision.
    fn commit(&mut self, changes: Vec<Change>) {
        if changes.is_empty() {
            return;
        }
        let rev = self.rev() + 1;
        let mut next = self.latest().clone();
        for (key, change) in changes {
            match change {
                Some((value, lease)) => {
                    let (create, version) = match next.get(&key) {
                        Some(kv) => (kv.create_revision, kv.version + 1),
                        None => (rev, 1),
                    };
                    next.insert(
                        key.clone(),
                        KeyValue {
                            key,
                            create_revision: create,
                            mod_revision: rev,
                            version,
                            value,
                            lease,
                        },
                    );
                }
                None => {
                    next.remove(&key);
                }
            }
        }
        self.states.push(next);
    }

    fn range(&self, r: &RangeRequest) -> Result<(Vec<KeyValue>, i64, bool), Error> {
        let current = self.rev();
        if r.revision > current {
            return Err(Error::FutureRevision);
        }
        let rev = if r.revision <= 0 { current } else { r.revision };
        if rev < self.compacted {
            return Err(Error::Compacted);
        }
        let all: Vec<KeyValue> = self.states[rev as usize]
            .values()
            .filter(|kv| Self::in_range(&kv.key, &r.key, &r.range_end))
            .cloned()
            .collect();
        let count = all.len() as i64;
        if r.count_only {
            return Ok((Vec::new(), count, false));
        }
        let target = SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key);
        let mut order = SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None);
        let mut all = all;
        // etcd's quirk: unless an order or a filter is given, only the first limit+1 keys (in
        // key order) are fetched, and a non-key sort target then sorts just those.
        if order == SortOrder::None && r.min_mod_revision == 0 && r.limit > 0 {
            all.truncate(r.limit as usize + 1);
        }
        let mut kvs: Vec<KeyValue> = all
            .into_iter()
            .filter(|kv| r.min_mod_revision == 0 || kv.mod_revision >= r.min_mod_revision)
            .collect();
        if target != SortTarget::Key && order == SortOrder::None {
            order = SortOrder::Ascend;
        }
        let field = |kv: &KeyValue| -> (Vec<u8>, i64) {
            match target {
                SortTarget::Key => (kv.key.clone(), 0),
                SortTarget::Value => (kv.value.clone(), 0),
                SortTarget::Version => (Vec::new(), kv.version),
                SortTarget::Create => (Vec::new(), kv.create_revision),
                SortTarget::Mod => (Vec::new(), kv.mod_revision),
            }
        };
        match order {
            SortOrder::Ascend => kvs.sort_by_key(|kv| field(kv)),
            SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
            SortOrder::None => {}
        }
        let mut more = false;
        if r.limit > 0 && kvs.len() as i64 > r.limit {
            kvs.truncate(r.limit as usize);
            more = true;
        }
        if r.keys_only {
            for kv in &mut kvs {
                kv.value.clear();
            }
        }
        Ok((kvs, count, more))
    }
}

fn range_request(spec: &RangeSpec, current: i64) -> RangeRequest {
    let key = KEYS[spec.key].to_vec();
    let (target, order) = spec.sort.unwrap_or((SortTarget::Key, SortOrder::None));
    RangeRequest {
        range_end: end_bytes(&key, spec.end),
        key,
        limit: spec.limit,
        revision: if spec.back == 0 {
            0
        } else {
            current - spec.back + 1
        },
        sort_order: order as i32,
        sort_target: target as i32,
        keys_only: spec.keys_only,
        count_only: spec.count_only,
        min_mod_revision: spec.min_mod,
        ..RangeRequest::default()
    }
}

fn same_error(a: &Error, b: &Error) -> bool {
    std::mem::discriminant(a) == std::mem::discriminant(b)
}

/// Compares a store result with the model's; errors must be of the same kind.
fn check<T: std::fmt::Debug + PartialEq>(
    what: &str,
    store: Result<T, Error>,
    model: Result<T, Error>,
) -> Result<(), TestCaseError> {
    match (&store, &model) {
        (Ok(a), Ok(b)) if a == b => Ok(()),
        (Err(a), Err(b)) if same_error(a, b) => Ok(()),
        _ => Err(TestCaseError::fail(format!(
            "{what}: store {store:?}, model {model:?}"
        ))),
    }
}

/// Runs one sequence of operations against a fresh store and the model.
fn run(ops: &[Op], fault: Option<Fault>) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let options = StoreOptions {
        sync_writes: false,
        compaction_batch: 3,
        compaction_pause: std::time::Duration::ZERO,
        fault,
        ..StoreOptions::default()
    };
    let open = || {
        KvStore::open(dir.path(), options.clone()).map_err(|e| TestCaseError::fail(e.to_string()))
    };
    let mut store = open()?;
    let mut model = Model::new();
    for (step, op) in ops.iter().enumerate() {
        let what = format!("step {step} {op:?}");
        match op {
            Op::Put { .. } | Op::Delete { .. } | Op::Txn { .. } => {
                write_step(&store, &mut model, op, &what)?;
            }
            Op::Group(ops) => {
                let base = model.rev();
                let group = store.begin_group();
                for (i, op) in ops.iter().enumerate() {
                    write_step(&store, &mut model, op, &format!("{what} [{i}]"))?;
                }
                // Readers see nothing of the group before it ends.
                let all = RangeRequest {
                    key: vec![0],
                    range_end: vec![0],
                    ..RangeRequest::default()
                };
                prop_assert_eq!(
                    store.current_revision(),
                    base,
                    "{}: revision in the group",
                    what
                );
                check(
                    &format!("{what}: read before the group ends"),
                    store.range(&all).map(|r| r.kvs),
                    model
                        .range(&RangeRequest {
                            revision: base,
                            ..all.clone()
                        })
                        .map(|r| r.0),
                )?;
                group
                    .end()
                    .map_err(|e| TestCaseError::fail(format!("{what}: end: {e}")))?;
            }
            Op::Range(spec) => {
                let req = range_request(spec, model.rev());
                let got = store.range(&req).map(|r| (r.kvs, r.count, r.more));
                let want =
                    if !req.range_end.is_empty() && req.range_end != [0] && req.range_end < req.key
                    {
                        Err(Error::InvalidRangeEnd)
                    } else {
                        model.range(&req)
                    };
                check(&what, got, want)?;
            }
            Op::Grant(i) => {
                let id = LEASES[*i];
                let got = store
                    .lease_grant(LeaseRecord {
                        id,
                        ttl: 60,
                        remaining_ttl: 0,
                    })
                    .map(|c| c.rev);
                let want = if model.leases.insert(id) {
                    Ok(model.rev())
                } else {
                    Err(Error::LeaseExists)
                };
                check(&what, got, want)?;
            }
            Op::Revoke(i) => {
                let id = LEASES[*i];
                let got = store.lease_revoke(id).map(|c| c.rev);
                let want = if model.leases.remove(&id) {
                    let doomed = model
                        .latest()
                        .values()
                        .filter(|kv| kv.lease == id)
                        .map(|kv| (kv.key.clone(), None))
                        .collect();
                    model.commit(doomed);
                    Ok(model.rev())
                } else {
                    Err(Error::LeaseNotFound)
                };
                check(&what, got, want)?;
            }
            Op::Compact { back } => {
                let rev = model.rev() - back;
                let got = store.compact(rev).and_then(|job| {
                    // A member that has scheduled a compaction and one that has also removed
                    // the data must agree on the hash: removal takes exactly what it skips.
                    let scheduled = store.hash_kv(0)?;
                    store.run_compaction(job)?;
                    Ok((scheduled, store.hash_kv(0)?))
                });
                let want = if rev <= model.compacted {
                    Err(Error::Compacted)
                } else if rev > model.rev() {
                    Err(Error::FutureRevision)
                } else {
                    model.compacted = rev;
                    Ok(())
                };
                if let Ok((scheduled, removed)) = &got {
                    prop_assert_eq!(
                        scheduled,
                        removed,
                        "{}: hash changed by removing compacted data",
                        what
                    );
                }
                check(&what, got.map(|_| ()), want)?;
            }
            Op::Restart => {
                drop(store);
                store = open()?;
            }
        }
        prop_assert_eq!(store.current_revision(), model.rev(), "{}: revision", what);
        prop_assert_eq!(
            store.compacted_revision(),
            model.compacted,
            "{}: compacted revision",
            what
        );
    }
    // Finally every historical revision still readable reads as the model says.
    for rev in model.compacted.max(1)..=model.rev() {
        let req = RangeRequest {
            key: vec![0],
            range_end: vec![0],
            revision: rev,
            ..RangeRequest::default()
        };
        check(
            &format!("final read at {rev}"),
            store.range(&req).map(|r| r.kvs),
            model.range(&req).map(|r| r.0),
        )?;
    }
    Ok(())
}

/// Runs one put, delete or transaction against the store (in a write group or not) and the
/// model.
fn write_step(
    store: &KvStore,
    model: &mut Model,
    op: &Op,
    what: &str,
) -> Result<(), TestCaseError> {
    match op {
        Op::Put { key, value, lease } => {
            let lease = LEASES.get(*lease).copied().unwrap_or(0);
            let key = KEYS[*key].to_vec();
            let req = PutRequest {
                key: key.clone(),
                value: vec![*value],
                lease,
                prev_kv: true,
                ..PutRequest::default()
            };
            let got = store
                .put(&req)
                .map(|(r, _)| (r.prev_kv, r.header.map(|h| h.revision)));
            let want = if lease != 0 && !model.leases.contains(&lease) {
                Err(Error::LeaseNotFound)
            } else {
                let prev = model.latest().get(&key).cloned();
                model.commit(vec![(key, Some((vec![*value], lease)))]);
                Ok((prev, Some(model.rev())))
            };
            check(what, got, want)?;
        }
        Op::Delete { key, end } => {
            let k = KEYS[*key].to_vec();
            let end = end_bytes(&k, *end);
            let req = DeleteRangeRequest {
                key: k.clone(),
                range_end: end.clone(),
                prev_kv: true,
            };
            let got = store
                .delete_range(&req)
                .map(|(r, _)| (r.deleted, r.prev_kvs, r.header.map(|h| h.revision)));
            let want = if !end.is_empty() && end != [0] && end < k {
                Err(Error::InvalidRangeEnd)
            } else {
                let prev: Vec<KeyValue> = model
                    .latest()
                    .values()
                    .filter(|kv| Model::in_range(&kv.key, &k, &end))
                    .cloned()
                    .collect();
                model.commit(prev.iter().map(|kv| (kv.key.clone(), None)).collect());
                Ok((prev.len() as i64, prev, Some(model.rev())))
            };
            check(what, got, want)?;
        }
        Op::Txn {
            cmp_key,
            cmp_version,
            then_keys,
            else_read,
        } => {
            let cmp_k = KEYS[*cmp_key].to_vec();
            let req = TxnRequest {
                compare: vec![Compare {
                    result: CompareResult::Equal as i32,
                    target: CompareTarget::Version as i32,
                    key: cmp_k.clone(),
                    target_union: Some(TargetUnion::Version(*cmp_version)),
                    range_end: Vec::new(),
                }],
                success: then_keys
                    .iter()
                    .enumerate()
                    .map(|(i, k)| RequestOp {
                        request: Some(if i % 2 == 0 {
                            Request::RequestPut(PutRequest {
                                key: KEYS[*k].to_vec(),
                                value: b"txn".to_vec(),
                                ..PutRequest::default()
                            })
                        } else {
                            Request::RequestDeleteRange(DeleteRangeRequest {
                                key: KEYS[*k].to_vec(),
                                ..DeleteRangeRequest::default()
                            })
                        }),
                    })
                    .collect(),
                failure: vec![RequestOp {
                    request: Some(Request::RequestRange(RangeRequest {
                        key: KEYS[*else_read].to_vec(),
                        ..RangeRequest::default()
                    })),
                }],
            };
            let got = store.txn(&req).map(|(r, _)| {
                let reads: Vec<Vec<KeyValue>> = r
                    .responses
                    .iter()
                    .filter_map(|op| match &op.response {
                        Some(Response::ResponseRange(rr)) => Some(rr.kvs.clone()),
                        _ => None,
                    })
                    .collect();
                (r.succeeded, reads, r.header.map(|h| h.revision))
            });
            let version = model.latest().get(&cmp_k).map(|kv| kv.version).unwrap_or(0);
            let want = if version == *cmp_version {
                let changes = then_keys
                    .iter()
                    .enumerate()
                    .filter_map(|(i, k)| {
                        let key = KEYS[*k].to_vec();
                        if i % 2 == 0 {
                            Some((key, Some((b"txn".to_vec(), 0))))
                        } else {
                            model.latest().contains_key(&key).then_some((key, None))
                        }
                    })
                    .collect();
                model.commit(changes);
                Ok((true, Vec::new(), Some(model.rev())))
            } else {
                let kv: Vec<KeyValue> = model
                    .latest()
                    .get(KEYS[*else_read])
                    .cloned()
                    .into_iter()
                    .collect();
                Ok((false, vec![kv], Some(model.rev())))
            };
            check(what, got, want)?;
        }
        _ => {}
    }
    Ok(())
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op_strategy(), 1..120)
}

proptest! {
    #![proptest_config(Config { cases: 96, ..Config::default() })]

    #[test]
    fn store_matches_model(ops in ops()) {
        run(&ops, None)?;
    }
}

/// Runs the property with a fault injected and returns whether the test found it.
fn finds(fault: Fault) -> bool {
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    runner.run(&ops(), |ops| run(&ops, Some(fault))).is_err()
}

#[test]
fn model_test_catches_compaction_dropping_latest_revision() {
    assert!(
        finds(Fault::CompactionDropsLatest),
        "the model test missed a compaction that drops each key's latest revision"
    );
}

#[test]
fn model_test_catches_recreated_key_keeping_its_version() {
    assert!(
        finds(Fault::RecreateKeepsVersion),
        "the model test missed a re-created key continuing the old version"
    );
}

#[test]
fn model_test_catches_a_group_not_reading_its_own_writes() {
    assert!(
        finds(Fault::GroupReadsOnlyDisk),
        "the model test missed a write group whose transactions cannot read earlier ones' values"
    );
}
