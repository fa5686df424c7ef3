//! Watch end to end: a real `kvstore` process on loopback, driven through the generated gRPC
//! clients, checked against etcd 3.5's Watch semantics: live events for key, prefix and
//! from-key watches; history replay; prev_kv; filters; a transaction's events in one response;
//! cancel; duplicate watch IDs; compaction; progress requests and notifications; and a reader
//! that stalls while 20k events are written still gets every event, once, in order, while the
//! server's memory stays bounded.

mod common;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::Server;
use futures::StreamExt;
use kvstore_proto::etcdserverpb::{
    kv_client::KvClient, request_op::Request as Op, watch_create_request::FilterType,
    watch_request::RequestUnion, CompactionRequest, DeleteRangeRequest, PutRequest, RequestOp,
    TxnRequest, WatchCancelRequest, WatchCreateRequest, WatchProgressRequest, WatchRequest,
    WatchResponse,
};
use kvstore_proto::mvccpb::{event::EventType, Event};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

const PUT: i32 = EventType::Put as i32;
const DELETE: i32 = EventType::Delete as i32;
const COMPACTED: &str = "etcdserver: mvcc: required revision has been compacted";

/// One client Watch stream.
struct Watcher {
    /// Requests to the server.
    requests: mpsc::Sender<WatchRequest>,
    /// Responses from it.
    responses: tonic::Streaming<WatchResponse>,
}

impl Watcher {
    async fn open(server: &Server) -> Self {
        let mut client = server.watch().await;
        let (requests, rx) = mpsc::channel(16);
        let responses = client
            .watch(ReceiverStream::new(rx))
            .await
            .expect("open watch stream")
            .into_inner();
        Self {
            requests,
            responses,
        }
    }

    async fn send(&self, request: RequestUnion) {
        self.requests
            .send(WatchRequest {
                request_union: Some(request),
            })
            .await
            .expect("send watch request");
    }

    /// Creates a watch and returns the server's answer to it.
    async fn create(&mut self, create: WatchCreateRequest) -> WatchResponse {
        self.send(RequestUnion::CreateRequest(create)).await;
        let resp = self.next().await;
        assert!(resp.created, "first answer is the creation: {resp:?}");
        resp
    }

    async fn next_within(&mut self, timeout: Duration) -> Option<WatchResponse> {
        match tokio::time::timeout(timeout, self.responses.message()).await {
            Ok(msg) => Some(
                msg.expect("watch stream healthy")
                    .expect("watch stream open"),
            ),
            Err(_) => None,
        }
    }

    async fn next(&mut self) -> WatchResponse {
        self.next_within(Duration::from_secs(10))
            .await
            .expect("a watch response within 10s")
    }

    /// Collects responses until `n` events have arrived.
    async fn events(&mut self, n: usize) -> Vec<(i64, Event)> {
        let mut out = Vec::new();
        while out.len() < n {
            let resp = self.next().await;
            assert!(!resp.canceled, "unexpected cancel: {resp:?}");
            let rev = resp.header.as_ref().expect("header").revision;
            for ev in resp.events {
                let kv = ev.kv.as_ref().expect("kv");
                assert!(
                    kv.mod_revision <= rev,
                    "header reflects the events it carries"
                );
                out.push((resp.watch_id, ev));
            }
        }
        assert_eq!(out.len(), n, "no more events than expected");
        out
    }

    /// Asserts that nothing arrives for a little while.
    async fn quiet(&mut self) {
        if let Some(resp) = self.next_within(Duration::from_millis(300)).await {
            panic!("unexpected watch response: {resp:?}");
        }
    }
}

fn watch(key: &str, range_end: &[u8]) -> WatchCreateRequest {
    WatchCreateRequest {
        key: key.into(),
        range_end: range_end.to_vec(),
        ..WatchCreateRequest::default()
    }
}

fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &[u8]) -> i64 {
    kv.put(PutRequest {
        key: key.into(),
        value: value.to_vec(),
        ..PutRequest::default()
    })
    .await
    .expect("put")
    .into_inner()
    .header
    .expect("header")
    .revision
}

async fn delete(kv: &mut KvClient<Channel>, key: &str) -> i64 {
    kv.delete_range(DeleteRangeRequest {
        key: key.into(),
        ..DeleteRangeRequest::default()
    })
    .await
    .expect("delete")
    .into_inner()
    .header
    .expect("header")
    .revision
}

/// (watch id, type, key, value, mod_revision) of events, for comparing.
fn summary(events: &[(i64, Event)]) -> Vec<(i64, i32, String, String, i64)> {
    events
        .iter()
        .map(|(id, ev)| {
            let kv = ev.kv.as_ref().expect("kv");
            (
                *id,
                ev.r#type,
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
                kv.mod_revision,
            )
        })
        .collect()
}

fn ev(id: i64, kind: i32, key: &str, value: &str, rev: i64) -> (i64, i32, String, String, i64) {
    (id, kind, key.into(), value.into(), rev)
}

#[tokio::test]
async fn live_events_reach_key_prefix_and_from_key_watches() {
    let server = Server::start("live");
    let mut kv = server.kv().await;
    let mut w = Watcher::open(&server).await;
    let key = w.create(watch("/a/1", b"")).await.watch_id;
    let prefix = w.create(watch("/a/", &prefix_end("/a/"))).await.watch_id;
    let from = w.create(watch("/b", b"\0")).await.watch_id;
    assert_eq!(
        (key, prefix, from),
        (0, 1, 2),
        "automatic IDs count from 0 per stream"
    );

    let r1 = put(&mut kv, "/a/1", b"x").await;
    let r2 = put(&mut kv, "/a/2", b"y").await;
    let r3 = put(&mut kv, "/b/1", b"z").await;
    let r4 = put(&mut kv, "/0", b"not watched").await;
    let r5 = delete(&mut kv, "/a/1").await;
    let mut got = summary(&w.events(6).await);
    got.sort();
    let mut want = vec![
        ev(key, PUT, "/a/1", "x", r1),
        ev(prefix, PUT, "/a/1", "x", r1),
        ev(prefix, PUT, "/a/2", "y", r2),
        ev(from, PUT, "/b/1", "z", r3),
        ev(key, DELETE, "/a/1", "", r5),
        ev(prefix, DELETE, "/a/1", "", r5),
    ];
    want.sort();
    assert_eq!(got, want, "nothing for /0 at {r4}");
    w.quiet().await;
}

#[tokio::test]
async fn history_is_replayed_from_a_past_revision_then_live() {
    let server = Server::start("history");
    let mut kv = server.kv().await;
    let r1 = put(&mut kv, "/h/a", b"1").await;
    let r2 = put(&mut kv, "/h/b", b"2").await;
    put(&mut kv, "/other", b"-").await;
    let r4 = delete(&mut kv, "/h/a").await;

    let mut w = Watcher::open(&server).await;
    let created = w
        .create(WatchCreateRequest {
            start_revision: r1,
            ..watch("/h/", &prefix_end("/h/"))
        })
        .await;
    let id = created.watch_id;
    let replayed = w.events(3).await;
    assert_eq!(
        summary(&replayed),
        vec![
            ev(id, PUT, "/h/a", "1", r1),
            ev(id, PUT, "/h/b", "2", r2),
            ev(id, DELETE, "/h/a", "", r4),
        ]
    );
    let r5 = put(&mut kv, "/h/c", b"3").await;
    assert_eq!(
        summary(&w.events(1).await),
        vec![ev(id, PUT, "/h/c", "3", r5)],
        "then live, with nothing missed or repeated"
    );
}

#[tokio::test]
async fn prev_kv_carries_the_value_before_each_change() {
    let server = Server::start("prevkv");
    let mut kv = server.kv().await;
    let mut w = Watcher::open(&server).await;
    w.create(WatchCreateRequest {
        prev_kv: true,
        ..watch("/p", b"")
    })
    .await;
    put(&mut kv, "/p", b"1").await;
    put(&mut kv, "/p", b"2").await;
    delete(&mut kv, "/p").await;
    let events = w.events(3).await;
    let prev: Vec<Option<String>> = events
        .iter()
        .map(|(_, e)| {
            e.prev_kv
                .as_ref()
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
        })
        .collect();
    assert_eq!(prev, vec![None, Some("1".into()), Some("2".into())]);
}

/// The watchers of one stream that a commit reaches share one delivery: those that asked for
/// prev_kv get the previous value (read once for them all), the one that did not gets none.
#[tokio::test]
async fn prev_kv_is_per_watcher_within_a_shared_delivery() {
    let server = Server::start("prevkv-shared");
    let mut kv = server.kv().await;
    let mut w = Watcher::open(&server).await;
    let mut ids = Vec::new();
    for prev_kv in [true, false, true] {
        let created = w
            .create(WatchCreateRequest {
                prev_kv,
                ..watch("/q", b"")
            })
            .await;
        ids.push((created.watch_id, prev_kv));
    }
    put(&mut kv, "/q", b"1").await;
    put(&mut kv, "/q", b"2").await;
    let events = w.events(6).await;
    for (id, prev_kv) in ids {
        let prev: Vec<Option<String>> = events
            .iter()
            .filter(|(watch_id, _)| *watch_id == id)
            .map(|(_, e)| {
                e.prev_kv
                    .as_ref()
                    .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
            })
            .collect();
        let want = if prev_kv {
            vec![None, Some("1".to_string())]
        } else {
            vec![None, None]
        };
        assert_eq!(prev, want, "watch {id} (prev_kv {prev_kv})");
    }
}

#[tokio::test]
async fn filters_drop_puts_or_deletes() {
    let server = Server::start("filters");
    let mut kv = server.kv().await;
    let mut w = Watcher::open(&server).await;
    let no_put = w
        .create(WatchCreateRequest {
            filters: vec![FilterType::Noput as i32],
            ..watch("/f", b"")
        })
        .await
        .watch_id;
    let no_delete = w
        .create(WatchCreateRequest {
            filters: vec![FilterType::Nodelete as i32],
            ..watch("/f", b"")
        })
        .await
        .watch_id;
    let r1 = put(&mut kv, "/f", b"v").await;
    let r2 = delete(&mut kv, "/f").await;
    let mut got = summary(&w.events(2).await);
    got.sort();
    assert_eq!(
        got,
        vec![
            ev(no_put, DELETE, "/f", "", r2),
            ev(no_delete, PUT, "/f", "v", r1)
        ]
    );
    w.quiet().await;
}

#[tokio::test]
async fn a_transactions_events_arrive_in_one_response_in_order() {
    let server = Server::start("txn");
    let mut kv = server.kv().await;
    put(&mut kv, "/t/c", b"old").await;
    let mut w = Watcher::open(&server).await;
    w.create(watch("/t/", &prefix_end("/t/"))).await;
    let ops = vec![
        RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: b"/t/b".to_vec(),
                value: b"1".to_vec(),
                ..PutRequest::default()
            })),
        },
        RequestOp {
            request: Some(Op::RequestPut(PutRequest {
                key: b"/t/a".to_vec(),
                value: b"2".to_vec(),
                ..PutRequest::default()
            })),
        },
        RequestOp {
            request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                key: b"/t/c".to_vec(),
                ..DeleteRangeRequest::default()
            })),
        },
    ];
    let rev = kv
        .txn(TxnRequest {
            compare: vec![],
            success: ops,
            failure: vec![],
        })
        .await
        .expect("txn")
        .into_inner()
        .header
        .expect("header")
        .revision;
    let resp = w.next().await;
    assert_eq!(resp.header.as_ref().expect("header").revision, rev);
    let events: Vec<(i64, Event)> = resp
        .events
        .into_iter()
        .map(|e| (resp.watch_id, e))
        .collect();
    assert_eq!(
        summary(&events),
        vec![
            ev(0, PUT, "/t/b", "1", rev),
            ev(0, PUT, "/t/a", "2", rev),
            ev(0, DELETE, "/t/c", "", rev),
        ],
        "one response, in the transaction's order"
    );
}

#[tokio::test]
async fn cancel_answers_canceled_and_stops_events() {
    let server = Server::start("cancel");
    let mut kv = server.kv().await;
    let mut w = Watcher::open(&server).await;
    let id = w
        .create(WatchCreateRequest {
            watch_id: 42,
            ..watch("/c", b"")
        })
        .await
        .watch_id;
    assert_eq!(id, 42, "a client-chosen watch ID is kept");
    w.send(RequestUnion::CancelRequest(WatchCancelRequest {
        watch_id: id,
    }))
    .await;
    let resp = w.next().await;
    assert!(resp.canceled);
    assert_eq!(resp.watch_id, id);
    put(&mut kv, "/c", b"v").await;
    w.quiet().await;
    // The ID is free again.
    assert_eq!(
        w.create(WatchCreateRequest {
            watch_id: 42,
            ..watch("/c", b"")
        })
        .await
        .watch_id,
        42
    );
}

#[tokio::test]
async fn a_duplicate_watch_id_is_refused() {
    let server = Server::start("dup");
    let mut w = Watcher::open(&server).await;
    let first = w
        .create(WatchCreateRequest {
            watch_id: 7,
            ..watch("/d", b"")
        })
        .await;
    assert!(!first.canceled);
    let second = w
        .create(WatchCreateRequest {
            watch_id: 7,
            ..watch("/e", b"")
        })
        .await;
    assert!(second.canceled);
    assert_eq!(second.watch_id, -1);
    assert_eq!(
        second.cancel_reason,
        "mvcc: duplicate watch ID provided on the WatchStream"
    );
}

#[tokio::test]
async fn a_watch_from_a_compacted_revision_is_cancelled_with_the_compact_revision() {
    let server = Server::start("compact");
    let mut kv = server.kv().await;
    let r1 = put(&mut kv, "/k", b"1").await;
    let r2 = put(&mut kv, "/k", b"2").await;
    let r3 = put(&mut kv, "/k", b"3").await;
    kv.compact(CompactionRequest {
        revision: r2,
        physical: true,
    })
    .await
    .expect("compact");

    let mut w = Watcher::open(&server).await;
    let id = w
        .create(WatchCreateRequest {
            start_revision: r1,
            ..watch("/k", b"")
        })
        .await
        .watch_id;
    let resp = w.next().await;
    assert!(resp.canceled);
    assert_eq!(resp.watch_id, id);
    assert_eq!(resp.compact_revision, r2);
    assert_eq!(resp.cancel_reason, COMPACTED);

    // One past the compacted revision is still complete history.
    let id = w
        .create(WatchCreateRequest {
            start_revision: r2 + 1,
            ..watch("/k", b"")
        })
        .await
        .watch_id;
    assert_eq!(
        summary(&w.events(1).await),
        vec![ev(id, PUT, "/k", "3", r3)]
    );
}

#[tokio::test]
async fn a_progress_request_reports_the_revision_once_all_watchers_are_synced() {
    let server = Server::start("progress");
    let mut kv = server.kv().await;
    let mut w = Watcher::open(&server).await;
    w.create(watch("/w", b"")).await;
    put(&mut kv, "/w", b"1").await;
    let last = put(&mut kv, "/unwatched", b"2").await;
    assert_eq!(w.events(1).await.len(), 1);
    w.send(RequestUnion::ProgressRequest(WatchProgressRequest {}))
        .await;
    let resp = w.next().await;
    assert_eq!(resp.watch_id, -1);
    assert!(resp.events.is_empty() && !resp.created && !resp.canceled);
    assert_eq!(resp.header.expect("header").revision, last);
}

#[tokio::test]
async fn progress_notify_reaches_an_idle_synced_watch() {
    let server = Server::start_with_env(
        "notify",
        &[(
            "KVSTORE_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
            "200ms",
        )],
    );
    let mut kv = server.kv().await;
    let rev = put(&mut kv, "/elsewhere", b"v").await;
    let mut w = Watcher::open(&server).await;
    let id = w
        .create(WatchCreateRequest {
            progress_notify: true,
            ..watch("/n", b"")
        })
        .await
        .watch_id;
    let resp = w
        .next_within(Duration::from_secs(3))
        .await
        .expect("a progress notification within 3s");
    assert_eq!(resp.watch_id, id);
    assert!(resp.events.is_empty());
    assert_eq!(resp.header.expect("header").revision, rev);
}

/// Events written while the readers stall.
const SLOW_EVENTS: usize = 20_000;
/// Streams that stall: with unbounded buffering each would hold every event, ~20 MiB apiece.
const STALLED_STREAMS: usize = 8;
/// Most the server's RSS may grow over the test. Writing the 20 MiB with no watcher at all grows
/// it by about 32 MiB (RocksDB's memtable); bounded buffering adds a few MiB per stream (its
/// 2 MiB queue and HTTP/2 buffers) plus the catch-up reads, and the allocator (mimalloc) keeps
/// freed pages for reuse: 93–103 MiB of growth in all with 8 streams (76–91 MiB with 4, so the
/// streams' share is small). Buffering every event for each stalled stream would add another
/// 20 MiB per stream, 160 MiB in all, on top.
const RSS_GROWTH_BOUND_KIB: u64 = 128 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_event_once_in_order_with_bounded_memory() {
    let server = Server::start("slow");
    let mut streams = Vec::new();
    for _ in 0..STALLED_STREAMS {
        let mut w = Watcher::open(&server).await;
        let id = w
            .create(watch("/slow/", &prefix_end("/slow/")))
            .await
            .watch_id;
        streams.push((w, id));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let baseline = server.rss_kib().expect("read VmRSS");

    let peak = Arc::new(AtomicU64::new(baseline));
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (peak, stop, pid) = (Arc::clone(&peak), Arc::clone(&stop), server.pid());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = rss_of(pid) {
                    peak.fetch_max(rss, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };

    let kv = server.kv().await;
    let value = vec![b'v'; 1024];
    let revs: Vec<i64> = futures::stream::iter(0..SLOW_EVENTS)
        .map(|i| {
            let (mut kv, value) = (kv.clone(), value.clone());
            async move { put(&mut kv, &format!("/slow/{i:06}"), &value).await }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let last = revs.iter().copied().max().expect("writes");
    let peak_stalled = peak.load(Ordering::Relaxed);

    for (w, id) in &mut streams {
        let mut seen = HashSet::with_capacity(SLOW_EVENTS);
        let mut prev_rev = 0;
        while seen.len() < SLOW_EVENTS {
            let resp = w
                .next_within(Duration::from_secs(60))
                .await
                .expect("the stalled stream catches up");
            assert!(!resp.canceled, "stream cancelled: {resp:?}");
            assert_eq!(resp.watch_id, *id);
            for ev in resp.events {
                let kv = ev.kv.expect("kv");
                assert!(kv.mod_revision > prev_rev, "in revision order, no repeats");
                assert_eq!(kv.value.len(), 1024);
                prev_rev = kv.mod_revision;
                assert!(seen.insert(kv.key), "each key once");
            }
        }
        assert_eq!(prev_rev, last, "up to the last write");
        w.quiet().await;
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let peak_all = peak.load(Ordering::Relaxed);
    eprintln!(
        "slow reader: {SLOW_EVENTS} events of 1 KiB, {STALLED_STREAMS} stalled streams; \
         RSS baseline {baseline} KiB, peak while stalled {peak_stalled} KiB, \
         peak overall {peak_all} KiB (growth {} KiB)",
        peak_all.saturating_sub(baseline)
    );
    assert!(
        peak_all.saturating_sub(baseline) < RSS_GROWTH_BOUND_KIB,
        "RSS grew by {} KiB",
        peak_all - baseline
    );
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
}
