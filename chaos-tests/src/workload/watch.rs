//! The watch workload: one writer puts (sometimes two keys in one txn) and deletes keys under
//! `w/`; watchers on every member watch the prefix with `prev_kv` and progress notifications,
//! drop their stream every few seconds and resume from the revision after the last one they
//! saw. Every response is recorded for the watch checker.

use std::time::Duration;

use kvstore_proto::etcdserverpb::request_op::Request as Req;
use kvstore_proto::etcdserverpb::watch_request::RequestUnion;
use kvstore_proto::etcdserverpb::{
    DeleteRangeRequest, PutRequest, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest,
};
use kvstore_proto::mvccpb;
use rand::{Rng, SeedableRng};

use super::{parse_u64, timed, write_error, Ctx, Outcome};
use crate::history::{Call, Entry, WatchEvent, WatchRecord};

/// The watched prefix.
pub const PREFIX: &str = "w/";
const KEYS: u64 = 6;

/// Runs the writer and `watchers` watchers until stopped; watchers then catch up with the
/// writer's last revision before returning.
pub async fn run(ctx: Ctx, watchers: usize) {
    let writer = tokio::spawn(writer(ctx.clone()));
    super::run_clients(&ctx, watchers, |ctx, w| watcher(ctx, w as u64)).await;
    let _ = writer.await;
}

async fn writer(ctx: Ctx) {
    let n = ctx.cluster.nodes();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let process = ctx.process();
    loop {
        if ctx.pace(rng.random_range(10..50)).await {
            return;
        }
        let node = rng.random_range(0..n);
        let mut kv = ctx.cluster.kv(node);
        let key = |rng: &mut rand::rngs::StdRng| format!("{PREFIX}{}", rng.random_range(0..KEYS));
        let start = ctx.recorder.now();
        match rng.random_range(0..10) {
            0 => {
                let key = key(&mut rng);
                let got = timed(kv.delete_range(DeleteRangeRequest {
                    key: key.clone().into_bytes(),
                    ..Default::default()
                }))
                .await;
                let (revision, outcome) = match got {
                    Ok(r) if r.deleted > 0 => (r.header.map(|h| h.revision), Outcome::Ok),
                    Ok(_) => (None, Outcome::Ok),
                    Err(e) => (None, write_error(&e)),
                };
                ctx.record(
                    process,
                    node,
                    Call::WatchDelete { key, revision },
                    start,
                    outcome,
                );
            }
            1..=3 => {
                let mut keys = vec![key(&mut rng), key(&mut rng)];
                keys.sort();
                keys.dedup();
                let value = ctx.value();
                let ops = keys
                    .iter()
                    .map(|k| RequestOp {
                        request: Some(Req::RequestPut(PutRequest {
                            key: k.clone().into_bytes(),
                            value: value.to_string().into_bytes(),
                            ..Default::default()
                        })),
                    })
                    .collect();
                let got = timed(kv.txn(TxnRequest {
                    success: ops,
                    ..Default::default()
                }))
                .await;
                let (revision, outcome) = match got {
                    Ok(r) => (r.header.map(|h| h.revision), Outcome::Ok),
                    Err(e) => (None, write_error(&e)),
                };
                let call = Call::WatchPut {
                    keys,
                    value,
                    revision,
                };
                ctx.record(process, node, call, start, outcome);
            }
            _ => {
                let k = key(&mut rng);
                let value = ctx.value();
                let got = timed(kv.put(PutRequest {
                    key: k.clone().into_bytes(),
                    value: value.to_string().into_bytes(),
                    ..Default::default()
                }))
                .await;
                let (revision, outcome) = match got {
                    Ok(r) => (r.header.map(|h| h.revision), Outcome::Ok),
                    Err(e) => (None, write_error(&e)),
                };
                let call = Call::WatchPut {
                    keys: vec![k],
                    value,
                    revision,
                };
                ctx.record(process, node, call, start, outcome);
            }
        }
    }
}

fn event(e: &mvccpb::Event) -> Option<WatchEvent> {
    let kv = e.kv.as_ref()?;
    let delete = e.r#type == mvccpb::event::EventType::Delete as i32;
    Some(WatchEvent {
        kind: if delete { "delete" } else { "put" }.into(),
        key: String::from_utf8_lossy(&kv.key).into_owned(),
        value: if delete { None } else { parse_u64(&kv.value) },
        mod_revision: kv.mod_revision,
        create_revision: kv.create_revision,
        prev_value: e.prev_kv.as_ref().and_then(|p| parse_u64(&p.value)),
    })
}

/// One watcher: sessions of a few seconds each, resuming after the last revision seen. After
/// the stop signal it runs one last session until it has seen the final revision.
async fn watcher(ctx: Ctx, id: u64) {
    let n = ctx.cluster.nodes();
    let mut rng = rand::rngs::StdRng::from_os_rng();
    let mut next = 1i64;
    let mut session = 0u64;
    let mut final_target: Option<i64> = None;
    let deadline_after_stop = Duration::from_secs(30);
    let mut stopped_at: Option<tokio::time::Instant> = None;
    loop {
        if ctx.stop.is_stopped() && final_target.is_none() {
            stopped_at = Some(tokio::time::Instant::now());
            // The writer has stopped; the current revision is the last to wait for.
            for i in 0..n {
                if let Ok(r) = ctx.cluster.revision(i).await {
                    final_target = Some(final_target.unwrap_or(0).max(r));
                }
            }
        }
        if let (Some(target), Some(at)) = (final_target, stopped_at) {
            if next > target || at.elapsed() > deadline_after_stop {
                return;
            }
        }
        session += 1;
        let node = (id as usize + session as usize) % n;
        let length = Duration::from_millis(rng.random_range(1000..4000));
        next = watch_session(&ctx, id, session, node, next, length, final_target).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..200))).await;
    }
}

/// Watches from `start` for `length` (or, if `target`, until past it); returns where the next
/// session should start.
async fn watch_session(
    ctx: &Ctx,
    watcher: u64,
    session: u64,
    node: usize,
    start: i64,
    length: Duration,
    target: Option<i64>,
) -> i64 {
    let rec = &ctx.recorder;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let create = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
            key: PREFIX.as_bytes().to_vec(),
            range_end: b"w0".to_vec(),
            start_revision: start,
            prev_kv: true,
            progress_notify: true,
            ..Default::default()
        })),
    };
    if tx.send(create).await.is_err() {
        return start;
    }
    let mut client = ctx.cluster.watch(node);
    let stream = tokio::time::timeout(
        Duration::from_secs(2),
        client.watch(tokio_stream::wrappers::ReceiverStream::new(rx)),
    )
    .await;
    let mut stream = match stream {
        Ok(Ok(s)) => s.into_inner(),
        _ => return start,
    };
    rec.push(Entry::Watch(WatchRecord::Open {
        watcher,
        session,
        node,
        start_revision: start,
        at: rec.now(),
    }));
    let mut next = start;
    let end = tokio::time::Instant::now()
        + if target.is_some() {
            Duration::from_secs(10)
        } else {
            length
        };
    let close = |compact_revision: i64, reason: &str| {
        rec.push(Entry::Watch(WatchRecord::Close {
            watcher,
            session,
            compact_revision,
            reason: reason.into(),
            at: rec.now(),
        }));
    };
    loop {
        if target.is_some_and(|t| next > t) {
            close(0, "caught up");
            return next;
        }
        let msg = tokio::select! {
            m = stream.message() => m,
            () = tokio::time::sleep_until(end) => {
                close(0, "disconnect");
                return next;
            }
        };
        let resp = match msg {
            Ok(Some(r)) => r,
            Ok(None) => {
                close(0, "stream ended");
                return next;
            }
            Err(e) => {
                close(0, &format!("error: {e}"));
                return next;
            }
        };
        let header_revision = resp.header.as_ref().map(|h| h.revision).unwrap_or(0);
        if resp.compact_revision > 0 {
            close(resp.compact_revision, "compacted");
            return next.max(resp.compact_revision);
        }
        if resp.canceled {
            close(0, &format!("canceled: {}", resp.cancel_reason));
            return next;
        }
        if resp.created {
            continue;
        }
        if resp.events.is_empty() {
            rec.push(Entry::Watch(WatchRecord::Progress {
                watcher,
                session,
                header_revision,
                at: rec.now(),
            }));
            next = next.max(header_revision + 1);
            continue;
        }
        let events: Vec<WatchEvent> = resp.events.iter().filter_map(event).collect();
        if let Some(last) = events.last() {
            next = next.max(last.mod_revision + 1);
        }
        rec.push(Entry::Watch(WatchRecord::Events {
            watcher,
            session,
            header_revision,
            events,
            at: rec.now(),
        }));
    }
}
