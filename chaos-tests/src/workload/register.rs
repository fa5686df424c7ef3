//! The register workload: clients read, write and compare-and-set a handful of keys. Keys are
//! replaced by fresh ones every [`KEY_LIFETIME`] so each key's history stays small enough for
//! the linearizability search (Jepsen's "independent" keys).

use std::time::Duration;

use kvstore_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use kvstore_proto::etcdserverpb::request_op::Request as Req;
use kvstore_proto::etcdserverpb::{Compare, PutRequest, RangeRequest, RequestOp, TxnRequest};
use rand::{Rng, SeedableRng};

use super::{parse_u64, timed, write_error, Ctx, Outcome};
use crate::history::Call;

/// How long a generation of keys is used.
pub const KEY_LIFETIME: Duration = Duration::from_secs(10);
/// Keys per generation.
const KEYS: u64 = 3;

/// Runs `clients` register clients until stopped.
pub async fn run(ctx: Ctx, clients: usize) {
    super::run_clients(&ctx, clients, client).await;
}

async fn client(ctx: Ctx, c: usize) {
    let n = ctx.cluster.nodes();
    let node = c % n;
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let process = ctx.process();
    let mut last: std::collections::HashMap<String, u64> = Default::default();
    loop {
        if ctx.pace(rng.random_range(5..40)).await {
            return;
        }
        let generation = ctx.recorder.now() / KEY_LIFETIME.as_nanos() as u64;
        let key = format!("r/{generation}/{}", rng.random_range(0..KEYS));
        let start = ctx.recorder.now();
        let mut kv = ctx.cluster.kv(node);
        match rng.random_range(0..3) {
            0 => {
                let got = timed(kv.range(RangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                }))
                .await;
                match got {
                    Ok(r) => {
                        let value = r.kvs.first().and_then(|kv| parse_u64(&kv.value));
                        if let Some(v) = value {
                            last.insert(key.clone(), v);
                        }
                        ctx.record(process, node, Call::Read { key, value }, start, Outcome::Ok);
                    }
                    Err(e) => ctx.record(
                        process,
                        node,
                        Call::Read { key, value: None },
                        start,
                        Outcome::Fail(e.to_string()),
                    ),
                }
            }
            1 => {
                let value = ctx.value();
                let got = timed(kv.put(PutRequest {
                    key: key.clone().into_bytes(),
                    value: value.to_string().into_bytes(),
                    ..Default::default()
                }))
                .await;
                let outcome = got.map_or_else(|e| write_error(&e), |_| Outcome::Ok);
                if matches!(outcome, Outcome::Ok) {
                    last.insert(key.clone(), value);
                }
                ctx.record(process, node, Call::Write { key, value }, start, outcome);
            }
            _ => {
                let from = last.get(&key).copied().unwrap_or(0);
                let to = ctx.value();
                let got = timed(kv.txn(cas(&key, from, to))).await;
                let outcome = match got {
                    Ok(r) if r.succeeded => Outcome::Ok,
                    Ok(_) => Outcome::Fail("compare failed".into()),
                    Err(e) => write_error(&e),
                };
                ctx.record(process, node, Call::Cas { key, from, to }, start, outcome);
            }
        }
    }
}

/// A txn that puts `to` if the value is `from`.
fn cas(key: &str, from: u64, to: u64) -> TxnRequest {
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: CompareTarget::Value as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(TargetUnion::Value(from.to_string().into_bytes())),
            ..Default::default()
        }],
        success: vec![RequestOp {
            request: Some(Req::RequestPut(PutRequest {
                key: key.as_bytes().to_vec(),
                value: to.to_string().into_bytes(),
                ..Default::default()
            })),
        }],
        failure: vec![],
    }
}
