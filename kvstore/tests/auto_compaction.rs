//! Auto-compaction on real 3-member clusters: the leader compacts through Raft, so every member
//! ends at the same compacted revision; `revision` mode keeps exactly the last N revisions,
//! `periodic` mode keeps about the retention's worth of history. (The write-latency cost is
//! measured by `scripts/bench-compaction`, figures in docs/benchmarks.md.)

use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::{HashKvRequest, PutRequest, RangeRequest};

#[path = "support/cluster.rs"]
mod cluster;

use cluster::{Cluster, RECOVERY};

/// Puts a key through member `i` and returns the revision it was written at.
async fn put(cluster: &Cluster, i: usize, n: usize) -> i64 {
    cluster
        .kv(i)
        .await
        .put(PutRequest {
            key: format!("key{}", n % 10).into_bytes(),
            value: format!("value{n}").into_bytes(),
            ..PutRequest::default()
        })
        .await
        .expect("put")
        .into_inner()
        .header
        .expect("header")
        .revision
}

/// Every member's compacted revision (from HashKV at its current revision).
async fn compacted(cluster: &Cluster) -> Vec<i64> {
    let mut out = Vec::new();
    for i in 0..3 {
        let resp = cluster
            .maintenance(i)
            .await
            .hash_kv(HashKvRequest { revision: 0 })
            .await
            .expect("hash kv")
            .into_inner();
        out.push(resp.compact_revision);
    }
    out
}

/// Waits until every member reports `want(compacted)`; returns the revisions.
async fn wait_compacted(cluster: &Cluster, want: impl Fn(i64) -> bool) -> Vec<i64> {
    let deadline = Instant::now() + RECOVERY;
    loop {
        let seen = compacted(cluster).await;
        if seen.iter().all(|c| want(*c) && *c == seen[0]) {
            return seen;
        }
        assert!(Instant::now() < deadline, "compacted revisions: {seen:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revision_mode_keeps_the_last_n_revisions_on_every_member() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--auto-compaction-mode",
            "revision",
            "--auto-compaction-retention",
            "10",
            "--experimental-auto-compaction-revision-interval",
            "200ms",
        ],
    );
    cluster.leader().await;
    let mut last = 0;
    for n in 0..60 {
        last = put(&cluster, n % 3, n).await;
    }
    let seen = wait_compacted(&cluster, |c| c == last - 10).await;
    assert_eq!(seen, vec![last - 10; 3]);
    // Reads below the compacted revision fail as etcd's do; at it they work.
    let mut kv = cluster.kv(1).await;
    let err = kv
        .range(RangeRequest {
            key: b"key1".to_vec(),
            revision: last - 11,
            ..RangeRequest::default()
        })
        .await
        .expect_err("compacted");
    assert_eq!(err.code(), tonic::Code::OutOfRange);
    assert_eq!(
        err.message(),
        "etcdserver: mvcc: required revision has been compacted"
    );
    kv.range(RangeRequest {
        key: b"key1".to_vec(),
        revision: last - 10,
        ..RangeRequest::default()
    })
    .await
    .expect("a read at the compacted revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_mode_compacts_the_revision_of_one_retention_ago() {
    let cluster = Cluster::start_with(
        3,
        &[
            "--auto-compaction-mode",
            "periodic",
            "--auto-compaction-retention",
            "1s",
        ],
    );
    cluster.leader().await;
    // Write for 4 s, remembering when each revision was written.
    let start = Instant::now();
    let mut written = Vec::new();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(4) {
        written.push((start.elapsed(), put(&cluster, n % 3, n).await));
        n += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let end = start.elapsed();
    let seen = compacted(&cluster).await;
    let first = written[0].1;
    let written_before = |t: Duration| {
        written
            .iter()
            .take_while(|(at, _)| *at <= t)
            .last()
            .map_or(first, |(_, rev)| *rev)
    };
    // The leader compacts every second at the revision sampled a retention earlier: by the end
    // something was compacted, and nothing written in the last retention (minus slack for the
    // sampling) was.
    let bound = written_before(end - Duration::from_millis(800));
    for c in &seen {
        assert!(
            *c > first,
            "nothing compacted: {seen:?}, first write {first}"
        );
        assert!(
            *c <= bound,
            "compacted {seen:?}, but the revision of 0.8 s before the end was {bound}"
        );
    }
    // Every member compacts at the same revisions (the leader proposed them through Raft).
    wait_compacted(&cluster, |c| c > first).await;
}
