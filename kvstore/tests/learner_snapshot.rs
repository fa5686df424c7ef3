//! A learner joining a cluster that holds 100k keys: it catches up by snapshot (the leader's
//! log was purged long before), is promoted, and serves linearizable reads; then removing a
//! member shrinks the quorum, so the cluster survives losing one more.

use std::path::Path;
use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::{
    kv_client::KvClient, request_op::Request as Op, PutRequest, RequestOp, TxnRequest,
};

#[path = "support/members.rs"]
mod members;

use members::*;

const KEYS: usize = 100_000;
const PER_TXN: usize = 128;

/// Loads `KEYS` keys through `endpoint`, `PER_TXN` puts per transaction, 4 writers at once.
async fn load(endpoint: String) {
    let mut writers = Vec::new();
    for w in 0..4usize {
        let endpoint = endpoint.clone();
        writers.push(tokio::spawn(async move {
            let mut kv = KvClient::connect(format!("http://{endpoint}"))
                .await
                .expect("connect");
            let mut start = w * PER_TXN;
            while start < KEYS {
                let success = (start..(start + PER_TXN).min(KEYS))
                    .map(|i| RequestOp {
                        request: Some(Op::RequestPut(PutRequest {
                            key: format!("/registry/pods/ns/pod-{i:06}").into_bytes(),
                            value: vec![b'v'; 100],
                            ..PutRequest::default()
                        })),
                    })
                    .collect();
                kv.txn(TxnRequest {
                    compare: vec![],
                    success,
                    failure: vec![],
                })
                .await
                .expect("load txn");
                start += 4 * PER_TXN;
            }
        }));
    }
    for w in writers {
        w.await.expect("writer");
    }
}

/// The revision a member reports for a serializable read (its own applied state).
fn revision(endpoint: &str) -> Option<i64> {
    let out = etcdctl(endpoint, &["get", "x", "--consistency=s", "-w", "json"]);
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("\"revision\":")? + "\"revision\":".len();
    text[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_catches_up_100k_keys_by_snapshot_then_quorum_shrinks() {
    if !Path::new(ETCDCTL).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd-client must be installed in CI"
        );
        eprintln!("SKIPPED: install etcd-client to run the learner test");
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    // A small snapshot count, so the log is purged and a new member needs a snapshot.
    let extra = ["--snapshot-count", "100", "--unsafe-no-fsync"];
    let StartedCluster {
        specs,
        initial,
        mut procs,
        all,
    } = start_cluster(dir.path(), &["m0", "m1", "m2"], &extra);
    let loading = Instant::now();
    load(specs[0].endpoint()).await;
    eprintln!("loaded {KEYS} keys in {:?}", loading.elapsed());
    let target = revision(&specs[0].endpoint()).expect("leader revision");

    let learner = Spec::new("m3");
    let out = ok(
        &etcdctl(
            &all,
            &[
                "member",
                "add",
                "m3",
                "--learner",
                &format!("--peer-urls={}", learner.peer_url()),
            ],
        ),
        "member add --learner",
    );
    let learner_id = out
        .split_whitespace()
        .nth(1)
        .expect("member ID")
        .to_string();
    let joined = format!("{initial},m3={}", learner.peer_url());
    let started = Instant::now();
    let _learner = start_with(dir.path(), &learner, &joined, "existing", TOKEN, &extra);
    eventually(Duration::from_secs(120), "the learner to catch up", || {
        revision(&learner.endpoint()).filter(|r| *r >= target)
    });
    let catch_up = started.elapsed();
    let snapshot_bytes: u64 = std::fs::read_dir(dir.path().join("m0").join("snap"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0);
    eprintln!(
        "learner caught up {KEYS} keys (revision {target}) in {catch_up:?}; leader snapshot file {snapshot_bytes} bytes"
    );
    assert!(
        snapshot_bytes > 0,
        "the leader should have taken a snapshot"
    );

    eventually(Duration::from_secs(60), "a successful promote", || {
        etcdctl(&all, &["member", "promote", &learner_id])
            .status
            .success()
            .then_some(())
    });
    let got = ok(
        &etcdctl(
            &learner.endpoint(),
            &["get", "/registry/pods/ns/pod-099999", "--print-value-only"],
        ),
        "linearizable read on the promoted member",
    );
    assert_eq!(got.trim().len(), 100, "{got}");

    // Four voters: remove m0 (quorum 3 of 4 becomes 2 of 3), then lose m1 as well: m2 and m3
    // still form a quorum and accept writes.
    let list = ok(&etcdctl(&all, &["member", "list"]), "member list");
    let m0_id = list
        .lines()
        .find(|l| l.contains(", m0, "))
        .and_then(|l| l.split(',').next())
        .expect("m0 listed")
        .to_string();
    let survivors = format!("{},{}", specs[2].endpoint(), learner.endpoint());
    ok(
        &etcdctl(
            &format!("{},{survivors}", specs[1].endpoint()),
            &["member", "remove", &m0_id],
        ),
        "member remove",
    );
    procs[0] = None;
    procs[1] = None;
    eventually(
        Duration::from_secs(30),
        "writes with two of three members",
        || {
            etcdctl(&survivors, &["put", "after", "shrink"])
                .status
                .success()
                .then_some(())
        },
    );
}
