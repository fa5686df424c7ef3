//! Crash safety of the revisioned store: a child process writes transactions and reports each
//! one it got acknowledged; the parent kills it with SIGKILL at a random moment, reopens the
//! store and checks that every acknowledged transaction is there and none is half applied.
//! Repeated many times over the same data directory, so recovery itself is also crashed into.
//!
//! Transaction `i` puts `t{i}/0` .. `t{i}/4` (value `i`) and deletes the keys of transaction
//! `i - 10`, in one Txn; every 25 transactions the child also compacts. So after any crash, with
//! `h` the newest transaction on disk: transactions `h-9..=h` have all five keys, older ones
//! none, `h` is at least the last acknowledged one, and the revision is `h + 2`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kvstore::mvcc::{KvStore, StoreOptions};
use kvstore_proto::etcdserverpb::{
    request_op::Request, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
};
use rand::Rng;

const KEYS_PER_TXN: usize = 5;
const DELETE_LAG: i64 = 10;
const CHILD_ENV: &str = "KVSTORE_CRASH_CHILD_DIR";

fn prefix(i: i64) -> Vec<u8> {
    format!("t{i:08}/").into_bytes()
}

fn prefix_end(i: i64) -> Vec<u8> {
    let mut end = prefix(i);
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

fn txn(i: i64) -> TxnRequest {
    let mut success: Vec<RequestOp> = (0..KEYS_PER_TXN)
        .map(|j| {
            let mut key = prefix(i);
            key.extend_from_slice(j.to_string().as_bytes());
            RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key,
                    value: i.to_string().into_bytes(),
                    ..PutRequest::default()
                })),
            }
        })
        .collect();
    if i >= DELETE_LAG {
        success.push(RequestOp {
            request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                key: prefix(i - DELETE_LAG),
                range_end: prefix_end(i - DELETE_LAG),
                prev_kv: false,
            })),
        });
    }
    TxnRequest {
        compare: vec![],
        success,
        failure: vec![],
    }
}

/// The child: writes transactions forever, printing `ack i` after each commit.
#[test]
#[ignore = "run only as the child process of crash_test"]
fn crash_child_writer() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = KvStore::open(Path::new(&dir), StoreOptions::default()).expect("open store");
    // Continue after the newest transaction on disk.
    let mut i = newest_txn(&store).map_or(0, |h| h + 1);
    loop {
        store.txn(&txn(i)).expect("txn");
        println!("ack {i}");
        if i % 25 == 24 {
            let rev = store.current_revision() - 3;
            if rev > store.compacted_revision() {
                let job = store.compact(rev).expect("compact");
                store.run_compaction(job).expect("run compaction");
            }
        }
        i += 1;
    }
}

/// Every key in the store, with its value parsed as a transaction number.
fn all_keys(store: &KvStore) -> Vec<(String, i64)> {
    let resp = store
        .range(&RangeRequest {
            key: vec![0],
            range_end: vec![0],
            ..RangeRequest::default()
        })
        .expect("range all");
    resp.kvs
        .into_iter()
        .map(|kv| {
            let key = String::from_utf8(kv.key).expect("utf8 key");
            let value: i64 = String::from_utf8(kv.value)
                .expect("utf8 value")
                .parse()
                .expect("numeric value");
            (key, value)
        })
        .collect()
}

fn newest_txn(store: &KvStore) -> Option<i64> {
    all_keys(store).iter().map(|(_, v)| *v).max()
}

/// Checks the invariants after a crash; returns the newest transaction on disk.
fn check(store: &KvStore, last_ack: Option<i64>) -> Option<i64> {
    let keys = all_keys(store);
    let newest = keys.iter().map(|(_, v)| *v).max();
    if let Some(ack) = last_ack {
        let h = newest.expect("acknowledged transactions but an empty store");
        assert!(
            h >= ack,
            "acknowledged txn {ack} lost: newest on disk is {h}"
        );
    }
    let Some(h) = newest else {
        assert_eq!(
            store.current_revision(),
            1,
            "empty store must be at revision 1"
        );
        return None;
    };
    for i in 0..=h {
        let present = keys.iter().filter(|(_, v)| *v == i).count();
        let expected = if i > h - DELETE_LAG { KEYS_PER_TXN } else { 0 };
        assert_eq!(
            present, expected,
            "txn {i} has {present} of its keys on disk (newest {h}): half applied"
        );
        for (key, v) in keys.iter().filter(|(_, v)| *v == i) {
            assert!(
                key.starts_with(&format!("t{v:08}/")),
                "key {key} has value {v}"
            );
        }
    }
    assert_eq!(
        store.current_revision(),
        h + 2,
        "one revision per transaction, starting at 2"
    );
    h.into()
}

#[test]
fn acknowledged_transactions_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let exe = std::env::current_exe().expect("test binary");
    let mut rng = rand::rng();
    let mut last_ack: Option<i64> = None;
    let rounds = 25;
    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args(["crash_child_writer", "--exact", "--ignored", "--nocapture"])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn child");
        let stdout = child.stdout.take().expect("child stdout");
        // Kill after a random number of acknowledgements, or a random time, whichever first;
        // sometimes at once, to crash into recovery itself.
        let acks_before_kill: i64 = if round % 5 == 0 {
            0
        } else {
            rng.random_range(1..200)
        };
        let deadline = Instant::now() + Duration::from_millis(rng.random_range(5..400));
        let (tx, rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(n) = line.strip_prefix("ack ") {
                    if let Ok(n) = n.trim().parse::<i64>() {
                        if tx.send(n).is_err() {
                            break;
                        }
                    }
                }
            }
        });
        let mut acks = 0;
        while acks < acks_before_kill && Instant::now() < deadline {
            match rx.recv_timeout(Duration::from_millis(5)) {
                Ok(n) => {
                    last_ack = Some(n);
                    acks += 1;
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        child.kill().expect("SIGKILL child");
        let status = child.wait().expect("wait child");
        assert!(!status.success(), "child should have been killed");
        reader.join().expect("reader thread");
        // Acknowledgements printed before the kill are acknowledged too.
        while let Ok(n) = rx.try_recv() {
            last_ack = Some(n);
        }
        let store = KvStore::open(dir.path(), StoreOptions::default()).expect("reopen after crash");
        check(&store, last_ack);
    }
    let store = KvStore::open(dir.path(), StoreOptions::default()).expect("final open");
    let newest = check(&store, last_ack).expect("some transactions were written");
    assert!(
        newest > 50,
        "too few transactions written to exercise anything: {newest}"
    );
}
