//! Network partitions on loopback: a member's peer traffic is cut with real firewall rules
//! (nftables) and healed, and the cluster must behave as Raft with pre-vote promises.
//!
//! Each member runs as its own user ID, so one nft rule can drop every packet of one member's
//! peer traffic (packets it sends, matched by owner, and packets sent to its peer port) while
//! its client port stays reachable for the test to observe it. Needs root and `nft`
//! (`scripts/setup` installs nftables); elsewhere the tests say so and pass without running.

use std::process::Command;
use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::{PutRequest, RangeRequest};

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::*;

/// User IDs the members run as (unused by anyone else on a test machine).
const UIDS: [u32; 3] = [61_001, 61_002, 61_003];

/// Whether firewall rules can be installed here.
fn can_cut() -> bool {
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    root && Command::new("nft")
        .args(["list", "tables"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// An nft table that isolates one member's peer traffic until dropped.
struct Cut {
    table: String,
}

impl Cut {
    /// Drops all peer traffic of member `i` of `cluster` (running as `uid`).
    fn isolate(cluster: &Cluster, i: usize, uid: u32) -> Self {
        let table = format!("kvstore_partition_test_{}", std::process::id());
        let peer_ports: Vec<String> = (0..3).map(|j| cluster.peer_port(j).to_string()).collect();
        let script = format!(
            "table inet {table} {{\n\
               chain output {{\n\
                 type filter hook output priority 0; policy accept;\n\
                 tcp dport {own} drop\n\
                 meta skuid {uid} tcp dport {{ {ports} }} drop\n\
                 meta skuid {uid} tcp sport {own} drop\n\
               }}\n\
             }}\n",
            own = cluster.peer_port(i),
            ports = peer_ports.join(", "),
        );
        let status = Command::new("nft")
            .args(["-f", "-"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut child| {
                use std::io::Write;
                child
                    .stdin
                    .take()
                    .expect("stdin")
                    .write_all(script.as_bytes())?;
                child.wait()
            })
            .expect("run nft");
        assert!(
            status.success(),
            "nft refused the partition rules:\n{script}"
        );
        Self { table }
    }
}

impl Drop for Cut {
    fn drop(&mut self) {
        let _ = Command::new("nft")
            .args(["delete", "table", "inet", &self.table])
            .status();
    }
}

/// Member `i`'s Raft term as it reports it.
async fn term(cluster: &Cluster, i: usize) -> u64 {
    cluster
        .status(i)
        .await
        .map(|s| s.raft_term)
        .unwrap_or_else(|| panic!("status of member {i}"))
}

async fn put(cluster: &Cluster, i: usize, key: &str) -> Result<i64, tonic::Status> {
    let mut kv = cluster.kv(i).await;
    kv.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: b"v".to_vec(),
        ..PutRequest::default()
    })
    .await
    .map(|r| r.into_inner().header.map_or(0, |h| h.revision))
}

/// A follower cut off for several election timeouts neither raises its term (its pre-votes
/// fail) nor, once the network heals, makes the leader step down; it catches up and serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_follower_rejoins_without_disrupting_the_leader() {
    if !can_cut() {
        eprintln!("skipped: needs root and nft to cut the network");
        return;
    }
    let cluster = Cluster::start_as(3, &[], &UIDS);
    let leader = cluster.leader().await;
    let follower = (leader + 1) % 3;
    put(&cluster, leader, "before")
        .await
        .expect("put before the cut");
    let term_before = term(&cluster, leader).await;

    let cut = Cut::isolate(&cluster, follower, UIDS[follower]);
    // Five election timeouts: without pre-vote the follower would campaign several times.
    let until = Instant::now() + 5 * ELECTION_TIMEOUT;
    let mut written = 0;
    while Instant::now() < until {
        put(&cluster, leader, &format!("during-{written}"))
            .await
            .expect("the majority keeps accepting writes");
        written += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        term(&cluster, follower).await,
        term_before,
        "the cut-off follower raised its term"
    );
    drop(cut);

    // Healed: the follower catches up under the same leader, in the same term.
    let deadline = Instant::now() + RECOVERY;
    loop {
        let mut kv = cluster.kv(follower).await;
        let caught_up = kv
            .range(RangeRequest {
                key: format!("during-{}", written - 1).into_bytes(),
                serializable: true,
                ..RangeRequest::default()
            })
            .await
            .is_ok_and(|r| r.into_inner().count == 1);
        if caught_up {
            break;
        }
        assert!(Instant::now() < deadline, "the follower never caught up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(3 * ELECTION_TIMEOUT).await;
    assert_eq!(cluster.leader().await, leader, "the leader changed");
    for i in 0..3 {
        assert_eq!(term(&cluster, i).await, term_before, "member {i}'s term");
    }
    put(&cluster, follower, "after")
        .await
        .expect("a write through the rejoined follower");
}

/// Pre-vote does not stand in the way of a needed election: with the leader cut off, the two
/// others elect one of themselves and keep accepting writes; the old leader, healed, follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolated_leader_is_replaced_and_follows_after_healing() {
    if !can_cut() {
        eprintln!("skipped: needs root and nft to cut the network");
        return;
    }
    let cluster = Cluster::start_as(3, &[], &UIDS);
    let old = cluster.leader().await;
    let term_before = term(&cluster, old).await;
    let cut = Cut::isolate(&cluster, old, UIDS[old]);
    let others: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    let started = Instant::now();
    let new = cluster.leader_among(&others).await;
    println!(
        "new leader after cutting the old one off: {:?}",
        started.elapsed()
    );
    assert_ne!(new, old);
    assert!(term(&cluster, new).await > term_before);
    put(&cluster, new, "with-new-leader")
        .await
        .expect("write to the new leader");
    let mut other_ids = Vec::new();
    for &i in &others {
        let id = cluster.status(i).await.and_then(|s| s.header);
        other_ids.push(id.map_or(0, |h| h.member_id));
    }
    drop(cut);

    // The old leader follows one of the others (usually `new`; a second election among the
    // two, when their first one split, is not the old leader's doing and is allowed).
    let deadline = Instant::now() + RECOVERY;
    loop {
        if cluster
            .status(old)
            .await
            .is_some_and(|s| other_ids.contains(&s.leader) && s.raft_term > term_before)
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old leader never followed one of the others"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(others.contains(&cluster.leader().await));
}
