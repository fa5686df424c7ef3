//! The kube workload: what kube-apiserver does with etcd. Objects under `k/` are created if
//! absent, updated and deleted only if their `mod_revision` is still the one read (optimistic
//! concurrency); a reflector lists the prefix, then watches from the list's revision, resumes
//! after disconnects and relists when its revision is compacted. At the end its cache must
//! equal a fresh list.

use std::collections::BTreeMap;
use std::time::Duration;

use kvstore_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use kvstore_proto::etcdserverpb::request_op::Request as Req;
use kvstore_proto::etcdserverpb::watch_request::RequestUnion;
use kvstore_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use kvstore_proto::mvccpb;
use rand::{Rng, SeedableRng};

use super::{parse_u64, timed, write_error, Ctx, Outcome};
use crate::history::Call;

const PREFIX: &str = "k/";
const PREFIX_END: &[u8] = b"k0";
const KEYS: u64 = 8;

/// Key -> (value, mod_revision).
type Cache = BTreeMap<String, (u64, i64)>;

/// Runs `clients` writers and one reflector until stopped.
pub async fn run(ctx: Ctx, clients: usize) {
    let reflector = tokio::spawn(reflector(ctx.clone()));
    super::run_clients(&ctx, clients, writer).await;
    let _ = reflector.await;
}

fn guarded(key: &str, target: CompareTarget, rev: i64, op: Req) -> TxnRequest {
    let union = match target {
        CompareTarget::Create => TargetUnion::CreateRevision(rev),
        _ => TargetUnion::ModRevision(rev),
    };
    TxnRequest {
        compare: vec![Compare {
            result: CompareResult::Equal as i32,
            target: target as i32,
            key: key.as_bytes().to_vec(),
            target_union: Some(union),
            ..Default::default()
        }],
        success: vec![RequestOp { request: Some(op) }],
        failure: vec![],
    }
}

async fn writer(ctx: Ctx, c: usize) {
    let node = (c + 2) % ctx.cluster.nodes();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let process = ctx.process();
    loop {
        if ctx.pace(rng.random_range(10..60)).await {
            return;
        }
        let key = format!("{PREFIX}{}", rng.random_range(0..KEYS));
        let mut kv = ctx.cluster.kv(node);
        let current = timed(kv.range(RangeRequest {
            key: key.clone().into_bytes(),
            ..Default::default()
        }))
        .await;
        let Ok(current) = current else { continue };
        let start = ctx.recorder.now();
        let put = |value: u64| {
            Req::RequestPut(PutRequest {
                key: key.clone().into_bytes(),
                value: value.to_string().into_bytes(),
                ..Default::default()
            })
        };
        let value = ctx.value();
        let (call, txn) = match current.kvs.first() {
            None => (
                Call::KubeCreate {
                    key: key.clone(),
                    value,
                    revision: None,
                },
                guarded(&key, CompareTarget::Create, 0, put(value)),
            ),
            Some(obj) if rng.random_bool(0.8) => (
                Call::KubeUpdate {
                    key: key.clone(),
                    expect: obj.mod_revision,
                    value,
                    revision: None,
                },
                guarded(&key, CompareTarget::Mod, obj.mod_revision, put(value)),
            ),
            Some(obj) => (
                Call::KubeDelete {
                    key: key.clone(),
                    expect: obj.mod_revision,
                    revision: None,
                },
                guarded(
                    &key,
                    CompareTarget::Mod,
                    obj.mod_revision,
                    Req::RequestDeleteRange(DeleteRangeRequest {
                        key: key.clone().into_bytes(),
                        ..Default::default()
                    }),
                ),
            ),
        };
        let (call, outcome) = match timed(kv.txn(txn)).await {
            Ok(r) if r.succeeded => {
                let rev = r.header.map(|h| h.revision);
                let call = match call {
                    Call::KubeCreate { key, value, .. } => Call::KubeCreate {
                        key,
                        value,
                        revision: rev,
                    },
                    Call::KubeUpdate {
                        key, expect, value, ..
                    } => Call::KubeUpdate {
                        key,
                        expect,
                        value,
                        revision: rev,
                    },
                    Call::KubeDelete { key, expect, .. } => Call::KubeDelete {
                        key,
                        expect,
                        revision: rev,
                    },
                    other => other,
                };
                (call, Outcome::Ok)
            }
            Ok(_) => (call, Outcome::Fail("conflict".into())),
            Err(e) => (call, write_error(&e)),
        };
        ctx.record(process, node, call, start, outcome);
    }
}

/// Lists the prefix: (cache, revision).
async fn list(ctx: &Ctx, node: usize) -> Option<(Cache, i64)> {
    let r = timed(ctx.cluster.kv(node).range(RangeRequest {
        key: PREFIX.as_bytes().to_vec(),
        range_end: PREFIX_END.to_vec(),
        ..Default::default()
    }))
    .await
    .ok()?;
    let cache = r
        .kvs
        .iter()
        .map(|kv| {
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            (key, (parse_u64(&kv.value).unwrap_or(0), kv.mod_revision))
        })
        .collect();
    Some((cache, r.header.map(|h| h.revision).unwrap_or(0)))
}

/// The reflector: list, then watch; after the stop signal, catches up with a fresh list and
/// records both.
async fn reflector(ctx: Ctx) {
    let n = ctx.cluster.nodes();
    let process = ctx.process();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut node = 0;
    let mut state: Option<(Cache, i64)> = None;
    let mut target: Option<(Cache, i64)> = None;
    let mut give_up = None;
    loop {
        if ctx.stop.is_stopped() && target.is_none() {
            give_up = Some(tokio::time::Instant::now() + Duration::from_secs(40));
            for _ in 0..50 {
                if let Some(t) = list(&ctx, rng.random_range(0..n)).await {
                    target = Some(t);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            if target.is_none() {
                return;
            }
        }
        if let (Some((want, rev)), Some((cache, at))) = (&target, &state) {
            if at >= rev || give_up.is_some_and(|g| tokio::time::Instant::now() > g) {
                let start = ctx.recorder.now();
                let call = Call::KubeCache {
                    revision: *rev,
                    cache: cache.clone(),
                    list: want.clone(),
                };
                // Only a cache at the list's own revision can be compared with it; one rebuilt
                // from a later list (after a compaction) may hold later writes.
                let outcome = match at.cmp(rev) {
                    std::cmp::Ordering::Equal => Outcome::Ok,
                    std::cmp::Ordering::Greater => Outcome::Info("relisted past the list".into()),
                    std::cmp::Ordering::Less => Outcome::Info("did not catch up".into()),
                };
                ctx.record(process, node, call, start, outcome);
                return;
            }
        }
        node = rng.random_range(0..n);
        if state.is_none() {
            state = list(&ctx, node).await;
            if state.is_none() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            continue;
        }
        let Some((cache, rev)) = state.as_mut() else {
            continue;
        };
        // Once the final list is taken, the cache catches up to exactly its revision: a write
        // still in flight when the workload stopped may land after it.
        let until = target.as_ref().map(|(_, r)| *r);
        let relist = watch_into(
            &ctx,
            node,
            cache,
            rev,
            until,
            Duration::from_millis(rng.random_range(1000..5000)),
        )
        .await;
        if relist {
            state = None;
        }
    }
}

/// Applies watch events from `rev + 1` for `length`, or up to revision `until` and no further
/// (then `rev` is `until`); true if the revision was compacted.
async fn watch_into(
    ctx: &Ctx,
    node: usize,
    cache: &mut Cache,
    rev: &mut i64,
    until: Option<i64>,
    length: Duration,
) -> bool {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: PREFIX_END.to_vec(),
            start_revision: *rev + 1,
            progress_notify: true,
            ..Default::default()
        })),
    };
    if tx.send(create).await.is_err() {
        return false;
    }
    let mut client = ctx.cluster.watch(node);
    let Ok(Ok(stream)) = tokio::time::timeout(
        Duration::from_secs(2),
        client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await
    else {
        return false;
    };
    let mut stream = stream.into_inner();
    let end = tokio::time::Instant::now() + length;
    loop {
        let msg = tokio::select! {
            m = stream.message() => m,
            () = tokio::time::sleep_until(end) => return false,
        };
        let Ok(Some(resp)) = msg else { return false };
        if resp.compact_revision > 0 {
            return true;
        }
        if resp.canceled {
            return false;
        }
        if resp.events.is_empty() {
            if let Some(h) = resp.header {
                if !resp.created {
                    // Nothing under the prefix changed up to the header's revision.
                    *rev = (*rev).max(h.revision);
                    if let Some(until) = until.filter(|u| *rev >= *u) {
                        *rev = until;
                        return false;
                    }
                }
            }
            continue;
        }
        for e in &resp.events {
            let Some(kv) = &e.kv else { continue };
            if let Some(until) = until.filter(|u| kv.mod_revision > *u) {
                // The cache now holds the state at `until`: nothing changed in between.
                *rev = until;
                return false;
            }
            let key = String::from_utf8_lossy(&kv.key).into_owned();
            if e.r#type == mvccpb::event::EventType::Delete as i32 {
                cache.remove(&key);
            } else {
                cache.insert(key, (parse_u64(&kv.value).unwrap_or(0), kv.mod_revision));
            }
            *rev = (*rev).max(kv.mod_revision);
        }
    }
}
