//! The list-append workload (Elle's): transactions of reads and appends over a few keys.
//!
//! A transaction first reads every key it touches in one read-only txn (one revision), then
//! commits its appends in one txn guarded by `mod_revision == observed` on every key it
//! touched; so its reads and writes take effect at one point, or not at all (a failed compare
//! is a definite failure). Read-only transactions are a single linearizable read-only txn.
//! Lists are stored as comma-separated decimal values, each value unique per key.

use kvstore_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use kvstore_proto::etcdserverpb::request_op::Request as Req;
use kvstore_proto::etcdserverpb::response_op::Response as Resp;
use kvstore_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::{Rng, SeedableRng};

use super::{timed, write_error, Ctx, Outcome};
use crate::history::{Call, Mop};

/// Keys per generation; generations rotate like the register's.
const KEYS: u64 = 5;
/// Seconds a generation of keys lives.
const KEY_LIFETIME_S: u64 = 20;

/// Runs `clients` append clients until stopped.
pub async fn run(ctx: Ctx, clients: usize) {
    super::run_clients(&ctx, clients, client).await;
}

/// Parses a stored list.
pub fn parse_list(bytes: &[u8]) -> Vec<u64> {
    std::str::from_utf8(bytes)
        .unwrap_or("")
        .split(',')
        .filter_map(|v| v.parse().ok())
        .collect()
}

fn range_op(key: &str) -> RequestOp {
    RequestOp {
        request: Some(Req::RequestRange(RangeRequest {
            key: key.as_bytes().to_vec(),
            ..Default::default()
        })),
    }
}

async fn client(ctx: Ctx, c: usize) {
    let node = (c + 1) % ctx.cluster.nodes();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let process = ctx.process();
    loop {
        if ctx.pace(rng.random_range(5..40)).await {
            return;
        }
        let generation = ctx.recorder.now() / 1_000_000_000 / KEY_LIFETIME_S;
        let mut mops = Vec::new();
        for _ in 0..rng.random_range(1..=4) {
            let key = format!("a/{generation}/{}", rng.random_range(0..KEYS));
            if rng.random_bool(0.5) {
                mops.push(Mop::Read { key, list: None });
            } else {
                mops.push(Mop::Append {
                    key,
                    value: ctx.value(),
                });
            }
        }
        let start = ctx.recorder.now();
        let outcome = transact(&ctx, node, &mut mops).await;
        ctx.record(process, node, Call::Txn { mops }, start, outcome);
    }
}

/// Executes one transaction, filling in its reads.
async fn transact(ctx: &Ctx, node: usize, mops: &mut [Mop]) -> Outcome {
    let mut keys: Vec<String> = mops
        .iter()
        .map(|m| match m {
            Mop::Append { key, .. } | Mop::Read { key, .. } => key.clone(),
        })
        .collect();
    keys.sort();
    keys.dedup();
    let mut kv = ctx.cluster.kv(node);
    let snapshot = timed(kv.txn(TxnRequest {
        success: keys.iter().map(|k| range_op(k)).collect(),
        ..Default::default()
    }))
    .await;
    let snapshot = match snapshot {
        Ok(r) => r,
        Err(e) => return Outcome::Fail(format!("read phase: {e}")),
    };
    // (list, mod_revision) per key, as of one revision.
    let mut state: std::collections::BTreeMap<String, (Vec<u64>, i64)> = Default::default();
    for (key, resp) in keys.iter().zip(&snapshot.responses) {
        let (list, rev) = match &resp.response {
            Some(Resp::ResponseRange(r)) => r
                .kvs
                .first()
                .map(|kv| (parse_list(&kv.value), kv.mod_revision))
                .unwrap_or((Vec::new(), 0)),
            _ => return Outcome::Fail("read phase: unexpected response".into()),
        };
        state.insert(key.clone(), (list, rev));
    }
    let observed = state.clone();
    let mut writes = std::collections::BTreeMap::new();
    for m in mops.iter_mut() {
        match m {
            Mop::Read { key, list } => *list = state.get(key).map(|(l, _)| l.clone()),
            Mop::Append { key, value } => {
                if let Some((l, _)) = state.get_mut(key) {
                    l.push(*value);
                    writes.insert(key.clone(), l.clone());
                }
            }
        }
    }
    if writes.is_empty() {
        return Outcome::Ok;
    }
    let compare = observed
        .iter()
        .map(|(key, (_, rev))| Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Mod as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(TargetUnion::ModRevision(*rev)),
            ..Default::default()
        })
        .collect();
    let success = writes
        .iter()
        .map(|(key, list)| RequestOp {
            request: Some(Req::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: list
                    .iter()
                    .map(u64::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
                    .into_bytes(),
                ..Default::default()
            })),
        })
        .collect();
    match timed(kv.txn(TxnRequest {
        compare,
        success,
        failure: vec![],
    }))
    .await
    {
        Ok(r) if r.succeeded => Outcome::Ok,
        Ok(_) => Outcome::Fail("conflict".into()),
        Err(e) => write_error(&e),
    }
}
