//! Consistency between members on real 3-member clusters: Hash and HashKV agree at the same
//! revision; a member whose data is damaged on purpose (a value rewritten in its RocksDB while
//! it is stopped) is refused at start by `--experimental-initial-corrupt-check` and, started
//! without it, is found by the leader's periodic check, which raises CORRUPT cluster-wide so
//! that writes fail with etcd's `etcdserver: corrupt cluster`.

use std::time::{Duration, Instant};

use kvstore::mvcc::backend::{Backend, CF_KV};
use kvstore_proto::etcdserverpb::{
    alarm_request::AlarmAction, AlarmRequest, AlarmType, CompactionRequest, DeleteRangeRequest,
    HashKvRequest, HashRequest, PutRequest,
};
use kvstore_proto::mvccpb::KeyValue;
use prost::Message;

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{Cluster, RECOVERY};

async fn put(cluster: &Cluster, i: usize, key: &str, value: &str) {
    cluster
        .kv(i)
        .await
        .put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        })
        .await
        .expect("put");
}

/// Waits until every member reports the same revision and applied index, and returns it.
async fn settled(cluster: &Cluster, members: &[usize]) -> i64 {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let mut seen = Vec::new();
        for &i in members {
            if let Some(s) = cluster.status(i).await {
                seen.push((s.header.map_or(0, |h| h.revision), s.raft_applied_index));
            }
        }
        if seen.len() == members.len() && seen.iter().all(|s| *s == seen[0]) {
            return seen[0].0;
        }
        assert!(Instant::now() < deadline, "members never settled: {seen:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hash_and_hash_kv_agree_across_members_at_the_same_revision() {
    let cluster = Cluster::start(3);
    cluster.leader().await;
    for i in 0..100 {
        put(
            &cluster,
            i % 3,
            &format!("key{}", i % 17),
            &format!("value{i}"),
        )
        .await;
    }
    let mid = settled(&cluster, &[0, 1, 2]).await;
    cluster
        .kv(1)
        .await
        .delete_range(DeleteRangeRequest {
            key: b"key3".to_vec(),
            ..DeleteRangeRequest::default()
        })
        .await
        .expect("delete");
    cluster
        .kv(2)
        .await
        .compact(CompactionRequest {
            revision: mid - 20,
            physical: true,
        })
        .await
        .expect("compact");
    for i in 0..20 {
        put(&cluster, i % 3, &format!("key{}", i % 5), "later").await;
    }
    let rev = settled(&cluster, &[0, 1, 2]).await;

    let mut kv_hashes = Vec::new();
    let mut hashes = Vec::new();
    for i in 0..3 {
        let mut m = cluster.maintenance(i).await;
        for at in [mid, rev] {
            let h = m
                .hash_kv(HashKvRequest { revision: at })
                .await
                .expect("hash kv")
                .into_inner();
            kv_hashes.push((at, h.hash, h.compact_revision));
        }
        hashes.push(
            m.hash(HashRequest {})
                .await
                .expect("hash")
                .into_inner()
                .hash,
        );
    }
    assert_eq!(kv_hashes[0], kv_hashes[2], "{kv_hashes:?}");
    assert_eq!(kv_hashes[0], kv_hashes[4], "{kv_hashes:?}");
    assert_eq!(kv_hashes[1], kv_hashes[3], "{kv_hashes:?}");
    assert_eq!(kv_hashes[1], kv_hashes[5], "{kv_hashes:?}");
    assert_ne!(
        kv_hashes[0].1, kv_hashes[1].1,
        "later writes change the hash"
    );
    assert!(hashes.iter().all(|h| *h == hashes[0]), "Hash: {hashes:?}");
}

/// Rewrites the value of the newest revision of `key` in a stopped member's RocksDB, keeping
/// everything else (revisions, versions) as it was: damage only a hash comparison can see.
fn damage(db: &std::path::Path, key: &[u8]) {
    let backend = Backend::open(db, true).expect("open the stopped member's RocksDB");
    let cf = backend.cf(CF_KV);
    let mut newest = None;
    for item in backend.db().iterator_cf(&cf, rocksdb::IteratorMode::Start) {
        let (k, v) = item.expect("read kv");
        let kv = KeyValue::decode(&*v).expect("a KeyValue");
        if kv.key == key {
            newest = Some((k.to_vec(), kv));
        }
    }
    let (k, mut kv) = newest.expect("the key is on disk");
    kv.value = b"damaged".to_vec();
    backend
        .db()
        .put_cf(&cf, k, kv.encode_to_vec())
        .expect("write the damaged value");
    backend.db().flush_wal(true).expect("sync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_member_is_refused_at_start_and_raises_corrupt_when_running() {
    let mut cluster = Cluster::start_with(3, &["--experimental-corrupt-check-time", "500ms"]);
    let leader = cluster.leader().await;
    let victim = (leader + 1) % 3;
    for i in 0..30 {
        put(&cluster, i % 3, &format!("k{i}"), "v").await;
    }
    put(&cluster, leader, "victim", "original").await;
    settled(&cluster, &[0, 1, 2]).await;
    let victim_id = cluster
        .status(victim)
        .await
        .and_then(|s| s.header)
        .map(|h| h.member_id)
        .expect("victim status");
    // A clean stop, so the victim's applied writes are on disk to damage (they skip RocksDB's
    // WAL; after a SIGKILL the member would replay them from its Raft log instead).
    cluster.signal(victim, "-TERM");
    assert!(
        cluster.wait_exit(victim, RECOVERY).is_some(),
        "the victim stops on SIGTERM"
    );
    damage(&cluster.data_dir(victim).join("db"), b"victim");

    // With the initial check, the damaged member refuses to start.
    cluster.spawn_with(victim, &["--experimental-initial-corrupt-check"]);
    let status = cluster
        .wait_exit(victim, RECOVERY)
        .expect("the member exits");
    assert!(!status.success(), "started despite damaged data");
    let log = std::fs::read_to_string(cluster.log_path(victim)).expect("log");
    assert!(
        log.contains("found data inconsistency with peers"),
        "log says why: {log}"
    );

    // Without it, the leader's periodic check finds it and raises CORRUPT cluster-wide.
    cluster.spawn(victim);
    let deadline = Instant::now() + RECOVERY;
    loop {
        let mut m = cluster.maintenance((victim + 2) % 3).await;
        let alarms = m
            .alarm(AlarmRequest {
                action: AlarmAction::Get as i32,
                member_id: 0,
                alarm: AlarmType::None as i32,
            })
            .await
            .expect("alarm list")
            .into_inner()
            .alarms;
        if !alarms.is_empty() {
            assert_eq!(alarms.len(), 1, "{alarms:?}");
            assert_eq!(alarms[0].alarm, AlarmType::Corrupt as i32);
            assert_eq!(
                alarms[0].member_id, victim_id,
                "the damaged member is named"
            );
            break;
        }
        assert!(Instant::now() < deadline, "CORRUPT never raised");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for i in 0..3 {
        let err = cluster
            .kv(i)
            .await
            .put(PutRequest {
                key: b"after".to_vec(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            })
            .await
            .expect_err("writes fail on a corrupt cluster");
        assert_eq!(err.code(), tonic::Code::DataLoss, "{err:?}");
        assert_eq!(err.message(), "etcdserver: corrupt cluster");
    }
}
