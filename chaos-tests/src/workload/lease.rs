//! The lease workload: each client grants a short lease, puts a key under it, sometimes keeps
//! it alive once, then polls the key with linearizable reads until it is gone. The lease
//! checker bounds how long a key may outlive its lease.

use std::time::Duration;

use kvstore_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, PutRequest, RangeRequest,
};
use rand::{Rng, SeedableRng};

use super::{timed, write_error, Ctx, Outcome};
use crate::history::Call;

/// Lease TTL in seconds.
pub const TTL: i64 = 2;

/// Runs `clients` lease clients until stopped.
pub async fn run(ctx: Ctx, clients: usize) {
    super::run_clients(&ctx, clients, client).await;
}

async fn client(ctx: Ctx, c: usize) {
    let n = ctx.cluster.nodes();
    let node = c % n;
    let process = ctx.process();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut round = 0u64;
    loop {
        if ctx.pace(rng.random_range(100..500)).await {
            return;
        }
        round += 1;
        let key = format!("l/{process}/{round}");
        let granted = timed(
            ctx.cluster
                .lease(node)
                .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 }),
        )
        .await;
        let Ok(granted) = granted else { continue };
        let lease = granted.id;
        let start = ctx.recorder.now();
        let put = timed(ctx.cluster.kv(node).put(PutRequest {
            key: key.clone().into_bytes(),
            value: b"1".to_vec(),
            lease,
            ..Default::default()
        }))
        .await;
        let outcome = put.map_or_else(|e| write_error(&e), |_| Outcome::Ok);
        let put_ok = matches!(outcome, Outcome::Ok);
        ctx.record(
            process,
            node,
            Call::LeasePut {
                key: key.clone(),
                lease,
                ttl: TTL,
            },
            start,
            outcome,
        );
        if !put_ok {
            continue;
        }
        if rng.random_bool(0.5) {
            tokio::time::sleep(Duration::from_millis(800)).await;
            let start = ctx.recorder.now();
            let req = LeaseKeepAliveRequest { id: lease };
            let mut lc = ctx.cluster.lease(node);
            let answered = async {
                let mut s = lc
                    .lease_keep_alive(tokio_stream::iter(vec![req]))
                    .await?
                    .into_inner();
                s.message().await
            };
            let outcome = match tokio::time::timeout(super::OP_TIMEOUT, answered).await {
                Ok(Ok(Some(r))) => (Some(r.ttl), Outcome::Ok),
                Ok(Ok(None)) => (None, Outcome::Info("stream ended".into())),
                Ok(Err(e)) => (None, Outcome::Info(e.to_string())),
                Err(_) => (None, Outcome::Info("timeout".into())),
            };
            let call = Call::LeaseKeepAlive {
                key: key.clone(),
                lease,
                ttl: outcome.0,
            };
            ctx.record(process, node, call, start, outcome.1);
        }
        // Poll until gone (or give up after 20 s).
        let until = tokio::time::Instant::now() + Duration::from_secs(20);
        while tokio::time::Instant::now() < until && !ctx.stop.is_stopped() {
            tokio::time::sleep(Duration::from_millis(250)).await;
            let start = ctx.recorder.now();
            let got = timed(ctx.cluster.kv(node).range(RangeRequest {
                key: key.clone().into_bytes(),
                ..Default::default()
            }))
            .await;
            match got {
                Ok(r) => {
                    let present = !r.kvs.is_empty();
                    ctx.record(
                        process,
                        node,
                        Call::LeaseRead {
                            key: key.clone(),
                            present: Some(present),
                        },
                        start,
                        Outcome::Ok,
                    );
                    if !present {
                        break;
                    }
                }
                Err(e) => ctx.record(
                    process,
                    node,
                    Call::LeaseRead {
                        key: key.clone(),
                        present: None,
                    },
                    start,
                    Outcome::Fail(e.to_string()),
                ),
            }
        }
    }
}
