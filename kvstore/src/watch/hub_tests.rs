//! Unit tests of the hub: registration and grouping, the catch-up switch-over, victims.

use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::{DeleteRangeRequest, PutRequest};

use super::*;
use crate::mvcc::{KeyRange, StoreOptions};
use crate::watch::queue::QueueLimits;
use crate::watch::watcher::Filters;

struct Fixture {
    _dir: tempfile::TempDir,
    store: Arc<KvStore>,
    hub: Arc<WatchHub>,
}

fn fixture(config: HubConfig) -> Fixture {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = Arc::new(
        KvStore::open(
            dir.path(),
            StoreOptions {
                sync_writes: false,
                ..StoreOptions::default()
            },
        )
        .expect("open store"),
    );
    let hub = WatchHub::with_config(Arc::clone(&store), config);
    Fixture {
        _dir: dir,
        store,
        hub,
    }
}

fn put(store: &KvStore, key: &str, value: &str) -> i64 {
    let (resp, _) = store
        .put(&PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })
        .expect("put");
    resp.header.expect("header").revision
}

fn prefix(p: &str) -> KeyRange {
    let mut end = p.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    KeyRange::from_etcd(p.as_bytes(), &end)
}

fn spec(range: KeyRange, start_rev: i64) -> WatchSpec {
    WatchSpec {
        range,
        start_rev,
        filters: Filters::default(),
    }
}

/// A hub whose streams queue at most `messages` responses, catching up 5 events at a time.
fn short_queues(messages: usize) -> HubConfig {
    HubConfig {
        queue: QueueLimits {
            messages,
            bytes: 1 << 20,
        },
        batch_events: 5,
        ..HubConfig::default()
    }
}

/// (watcher, key, mod_revision) of every event delivered, watcher by watcher, each watcher's
/// in order.
fn events_of(d: &Delivery) -> Vec<(WatcherKey, String, i64)> {
    match d {
        Delivery::Events {
            watchers, events, ..
        } => watchers
            .iter()
            .flat_map(|watcher| {
                events.iter().map(move |e| {
                    let kv = e.kv.as_ref().expect("kv");
                    (
                        *watcher,
                        String::from_utf8_lossy(&kv.key).into_owned(),
                        kv.mod_revision,
                    )
                })
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn recv(stream: &HubStream) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), stream.recv())
        .await
        .expect("a delivery within 10s")
}

#[tokio::test]
async fn hub_dispatches_each_commit_to_the_watchers_of_its_keys() {
    let f = fixture(HubConfig::default());
    let stream = f.hub.open_stream();
    let exact = stream
        .watch(spec(KeyRange::Single(b"/a/1".to_vec()), 0))
        .key;
    let pre = stream.watch(spec(prefix("/a/"), 0)).key;
    let other = stream.watch(spec(prefix("/b/"), 0)).key;
    assert_eq!(f.hub.counts(), (3, 0, 0));

    let r1 = put(&f.store, "/a/1", "x");
    let r2 = put(&f.store, "/a/2", "x");
    let r3 = put(&f.store, "/c", "x");
    let mut got = Vec::new();
    while let Some(d) = stream.try_recv() {
        got.extend(events_of(&d));
    }
    got.sort();
    let mut want = vec![
        (exact, "/a/1".to_string(), r1),
        (pre, "/a/1".to_string(), r1),
        (pre, "/a/2".to_string(), r2),
    ];
    want.sort();
    assert_eq!(got, want, "nothing for {other} nor for {r3}");
}

#[tokio::test]
async fn a_commit_reaches_each_watcher_once_with_its_events_in_order() {
    let f = fixture(HubConfig::default());
    let a = f.hub.open_stream();
    let b = f.hub.open_stream();
    let all = a.watch(spec(prefix("/a/"), 0)).key;
    let two = a.watch(spec(KeyRange::Single(b"/a/2".to_vec()), 0)).key;
    let also = b.watch(spec(prefix("/a/"), 0)).key;
    for key in ["/a/1", "/a/2", "/a/3"] {
        put(&f.store, key, "x");
    }
    while a.try_recv().is_some() || b.try_recv().is_some() {}

    // One commit with three events: a delete of the whole prefix.
    let (resp, _) = f
        .store
        .delete_range(&DeleteRangeRequest {
            key: b"/a/".to_vec(),
            range_end: b"/a0".to_vec(),
            ..DeleteRangeRequest::default()
        })
        .expect("delete");
    let rev = resp.header.expect("header").revision;
    let in_order = |w| {
        ["/a/1", "/a/2", "/a/3"]
            .iter()
            .map(|k| (w, k.to_string(), rev))
            .collect::<Vec<_>>()
    };
    let mut from_a: Vec<Vec<_>> = std::iter::from_fn(|| a.try_recv())
        .map(|d| events_of(&d))
        .collect();
    from_a.sort();
    let mut want_a = vec![in_order(all), vec![(two, "/a/2".to_string(), rev)]];
    want_a.sort();
    assert_eq!(
        from_a, want_a,
        "one delivery per watcher, events in commit order"
    );
    let from_b: Vec<Vec<_>> = std::iter::from_fn(|| b.try_recv())
        .map(|d| events_of(&d))
        .collect();
    assert_eq!(from_b, vec![in_order(also)]);
}

#[tokio::test]
async fn hub_applies_filters_and_future_start_revisions() {
    let f = fixture(HubConfig::default());
    let stream = f.hub.open_stream();
    let now = f.hub.revision();
    let no_put = stream
        .watch(WatchSpec {
            range: prefix("/a/"),
            start_rev: 0,
            filters: Filters {
                no_put: true,
                no_delete: false,
            },
        })
        .key;
    let future = stream.watch(spec(prefix("/a/"), now + 2)).key;
    put(&f.store, "/a/1", "x");
    let r2 = put(&f.store, "/a/1", "y");
    let (resp, _) = f
        .store
        .delete_range(&DeleteRangeRequest {
            key: b"/a/1".to_vec(),
            ..DeleteRangeRequest::default()
        })
        .expect("delete");
    let r3 = resp.header.expect("header").revision;
    let mut got = Vec::new();
    while let Some(d) = stream.try_recv() {
        got.extend(events_of(&d));
    }
    got.sort();
    let mut want = vec![
        (no_put, "/a/1".to_string(), r3),
        (future, "/a/1".to_string(), r2),
        (future, "/a/1".to_string(), r3),
    ];
    want.sort();
    assert_eq!(got, want);
}

#[tokio::test]
async fn catch_up_switches_to_synced_without_gap_or_duplicate() {
    let f = fixture(HubConfig {
        batch_events: 7,
        ..HubConfig::default()
    });
    let first = put(&f.store, "/k/0", "v");
    for i in 1..200 {
        put(&f.store, &format!("/k/{i}"), "v");
    }
    // Keep writing while the watcher catches up, so the switch happens under live traffic.
    let store = Arc::clone(&f.store);
    let writer = std::thread::spawn(move || {
        let mut last = 0;
        for i in 200..600 {
            last = put(&store, &format!("/k/{i}"), "v");
            if i % 50 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
        last
    });
    let stream = f.hub.open_stream();
    let w = stream.watch(spec(prefix("/k/"), first)).key;

    let mut revs = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while revs.len() < 600 && Instant::now() < deadline {
        let d = recv(&stream).await;
        revs.extend(events_of(&d).into_iter().map(|(_, _, rev)| rev));
    }
    let last = writer.join().expect("writer");
    let want: Vec<i64> = (first..=last).collect();
    assert_eq!(revs, want, "every revision exactly once, in order");
    assert_eq!(f.hub.watcher_state(w), Some(WatcherState::Synced));
    let r = put(&f.store, "/k/next", "v");
    let d = recv(&stream).await;
    assert_eq!(events_of(&d), vec![(w, "/k/next".to_string(), r)]);
}

#[tokio::test]
async fn a_slow_stream_is_set_aside_and_caught_up_from_history() {
    let f = fixture(short_queues(2));
    let stream = f.hub.open_stream();
    let w = stream.watch(spec(prefix("/v/"), 0)).key;
    let mut written = Vec::new();
    for i in 0..50 {
        written.push(put(&f.store, &format!("/v/{i}"), "v"));
    }
    assert_eq!(
        f.hub.watcher_state(w),
        Some(WatcherState::Victim),
        "a full queue sets the watcher aside"
    );
    assert_eq!(
        stream.queue.len(),
        2,
        "the queue never grows past its bound"
    );

    let mut revs = Vec::new();
    while revs.len() < written.len() {
        let d = recv(&stream).await;
        assert!(stream.queue.len() <= 2);
        revs.extend(events_of(&d).into_iter().map(|(_, _, rev)| rev));
    }
    assert_eq!(revs, written, "every event exactly once, in order");
    let deadline = Instant::now() + Duration::from_secs(10);
    while f.hub.watcher_state(w) != Some(WatcherState::Synced) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(f.hub.watcher_state(w), Some(WatcherState::Synced));
    let r = put(&f.store, "/v/last", "v");
    assert_eq!(
        events_of(&recv(&stream).await),
        vec![(w, "/v/last".to_string(), r)]
    );
}

#[tokio::test]
async fn a_streams_watchers_of_one_event_share_a_delivery_and_those_that_do_not_fit_catch_up() {
    let f = fixture(short_queues(3));
    let stream = f.hub.open_stream();
    let other = f.hub.open_stream();
    let mine: Vec<WatcherKey> = (0..5)
        .map(|_| stream.watch(spec(KeyRange::Single(b"/s".to_vec()), 0)).key)
        .collect();
    let theirs = other.watch(spec(prefix("/"), 0)).key;
    let r1 = put(&f.store, "/s", "1");
    match other.try_recv() {
        Some(Delivery::Events { watchers, .. }) => assert_eq!(watchers, vec![theirs]),
        d => panic!("want the other stream's events, got {d:?}"),
    }
    // Three of the five fit the queue, in one delivery; the other two are set aside.
    let first = stream.try_recv().expect("a delivery");
    match &first {
        Delivery::Events { watchers, .. } => assert_eq!(watchers, &mine[..3]),
        d => panic!("want events, got {d:?}"),
    }
    assert!(stream.try_recv().is_none(), "one delivery for the commit");
    for w in &mine[3..] {
        assert_eq!(f.hub.watcher_state(*w), Some(WatcherState::Victim));
    }
    let r2 = put(&f.store, "/s", "2");
    // Every watcher gets both events exactly once, in order.
    let mut got: Vec<(WatcherKey, String, i64)> = events_of(&first);
    let want_len = 2 * mine.len();
    while got.len() < want_len {
        got.extend(events_of(&recv(&stream).await));
    }
    for w in &mine {
        let revs: Vec<i64> = got
            .iter()
            .filter(|(k, _, _)| k == w)
            .map(|(_, _, rev)| *rev)
            .collect();
        assert_eq!(revs, vec![r1, r2], "watcher {w}");
    }
    assert!(stream.try_recv().is_none(), "nothing twice");
}

#[tokio::test]
async fn a_watch_below_the_compacted_revision_is_cancelled() {
    let f = fixture(HubConfig::default());
    put(&f.store, "/a", "1");
    let r2 = put(&f.store, "/a", "2");
    put(&f.store, "/a", "3");
    let job = f.store.compact(r2).expect("compact");
    f.store.run_compaction(job).expect("run compaction");
    let stream = f.hub.open_stream();
    let w = stream.watch(spec(KeyRange::Single(b"/a".to_vec()), r2)).key;
    match recv(&stream).await {
        Delivery::Compacted {
            watcher,
            compact_rev,
            ..
        } => {
            assert_eq!(watcher, w);
            assert_eq!(compact_rev, r2);
        }
        other => panic!("expected a compaction cancel, got {other:?}"),
    }
    assert_eq!(f.hub.watcher_state(w), None, "the watcher is removed");
    let ok = stream
        .watch(spec(KeyRange::Single(b"/a".to_vec()), r2 + 1))
        .key;
    let d = recv(&stream).await;
    assert_eq!(events_of(&d), vec![(ok, "/a".to_string(), r2 + 1)]);
}

#[tokio::test]
async fn progress_for_the_whole_stream_waits_until_every_watcher_is_synced() {
    let f = fixture(HubConfig::default());
    let first = put(&f.store, "/p/0", "v");
    let last = put(&f.store, "/p/1", "v");
    let stream = f.hub.open_stream();
    stream.watch(spec(prefix("/p/"), first));
    stream.request_progress_all();
    let mut seen = Vec::new();
    loop {
        match recv(&stream).await {
            Delivery::Progress { watcher, rev } => {
                assert_eq!(watcher, None);
                assert_eq!(rev, last);
                break;
            }
            d => seen.extend(events_of(&d).into_iter().map(|(_, _, rev)| rev)),
        }
    }
    assert_eq!(
        seen,
        vec![first, last],
        "progress comes after the replayed events"
    );
}

#[tokio::test]
async fn closing_a_stream_frees_its_watchers() {
    let f = fixture(HubConfig::default());
    let stream = f.hub.open_stream();
    let a = stream.watch(spec(prefix("/a/"), 0)).key;
    stream.watch(spec(prefix("/b/"), 1));
    assert!(stream.cancel(a));
    assert!(!stream.cancel(a), "cancelling twice finds nothing");
    drop(stream);
    assert_eq!(f.hub.counts(), (0, 0, 0));
    assert!(f.hub.state.lock().streams.is_empty());
    assert!(f.hub.state.lock().watchers.is_empty());
    // Commits with no watchers left are cheap no-ops.
    let r = put(&f.store, "/a/x", "v");
    assert_eq!(f.hub.revision(), r);
}

#[tokio::test]
async fn a_victim_that_falls_behind_a_compaction_is_cancelled() {
    let f = fixture(HubConfig {
        queue: QueueLimits {
            messages: 1,
            bytes: 1 << 20,
        },
        ..HubConfig::default()
    });
    let stream = f.hub.open_stream();
    let w = stream.watch(spec(prefix("/v/"), 0)).key;
    let r1 = put(&f.store, "/v/1", "v");
    put(&f.store, "/v/2", "v");
    let r3 = put(&f.store, "/v/3", "v");
    assert_eq!(f.hub.watcher_state(w), Some(WatcherState::Victim));
    let job = f.store.compact(r3).expect("compact");
    f.store.run_compaction(job).expect("run compaction");

    assert_eq!(
        events_of(&recv(&stream).await),
        vec![(w, "/v/1".to_string(), r1)]
    );
    match recv(&stream).await {
        Delivery::Compacted {
            watcher,
            compact_rev,
            ..
        } => assert_eq!((watcher, compact_rev), (w, r3)),
        other => panic!("expected a compaction cancel, got {other:?}"),
    }
    assert_eq!(f.hub.watcher_state(w), None);
}

/// Replaces the store's contents with `kvs` (key, revision) as a Raft snapshot would: written
/// under the store, not committed through it, so no commit tells the hub.
fn replace_contents(store: &KvStore, kvs: &[(&str, i64)]) {
    use prost::Message;
    store
        .replace_contents(|backend| {
            let mut batch = rocksdb::WriteBatch::default();
            for (key, rev) in kvs {
                let kv = kvstore_proto::mvccpb::KeyValue {
                    key: key.as_bytes().to_vec(),
                    create_revision: *rev,
                    mod_revision: *rev,
                    version: 1,
                    value: b"v".to_vec(),
                    lease: 0,
                };
                batch.put_cf(
                    &backend.cf(crate::mvcc::backend::CF_KV),
                    crate::mvcc::Revision::new(*rev, 0).to_key(),
                    kv.encode_to_vec(),
                );
            }
            backend.write(batch)
        })
        .expect("replace contents");
}

/// The first non-empty delivery of `stream`, within 10 s.
async fn first_events(stream: &HubStream) -> Vec<(WatcherKey, String, i64)> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let events = events_of(&recv(stream).await);
        if !events.is_empty() {
            return events;
        }
        assert!(
            Instant::now() < deadline,
            "no event after the store was replaced"
        );
    }
}

#[tokio::test]
async fn synced_watchers_catch_up_after_the_store_is_replaced() {
    let f = fixture(HubConfig::default());
    let stream = f.hub.open_stream();
    let key = stream.watch(spec(prefix("/r/"), 0)).key;
    replace_contents(&f.store, &[("/r/x", 2)]);
    f.hub.store_replaced();
    assert_eq!(
        first_events(&stream).await,
        vec![(key, "/r/x".to_string(), 2)]
    );
    assert_eq!(f.hub.revision(), 2);
}

/// Found by the chaos suite (docs/chaos.md): a watch on a future revision, opened on a member
/// that then installed a snapshot, was replayed everything from the hub's last revision,
/// far below the revision it asked to start from.
#[tokio::test]
async fn a_future_watch_does_not_get_older_revisions_after_the_store_is_replaced() {
    let f = fixture(HubConfig::default());
    let stream = f.hub.open_stream();
    let key = stream.watch(spec(prefix("/r/"), 3)).key;
    replace_contents(&f.store, &[("/r/old", 2), ("/r/new", 3)]);
    f.hub.store_replaced();
    assert_eq!(
        first_events(&stream).await,
        vec![(key, "/r/new".to_string(), 3)]
    );
}
