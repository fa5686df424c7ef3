//! Raft between in-process members over real gRPC on loopback: the peer network, the peer
//! service and the proposer, each member with its own RocksDB store, log and state machine.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore::alarm::Alarms;
use kvstore::apply::{Applied, Applier, Command, Proposer};
use kvstore::mvcc::backend::CF_KV;
use kvstore::mvcc::{KvStore, StoreOptions};
use kvstore::raft::types::Raft;
use kvstore::raft::{
    AfterInstall, LogStore, MemberNode, PeerNetwork, PeerOptions, Peers, ProposerOptions,
    RaftProposer, StateMachine,
};
use kvstore::server::peer::PeerService;
use kvstore_proto::etcdserverpb::{PutRequest, PutResponse, RangeRequest};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How long a cluster may take to agree on a leader.
const ELECTION_DEADLINE: Duration = Duration::from_secs(30);

/// Raft settings for tests: etcd-like timing, generous enough for a loaded debug build.
fn raft_config(snapshot_chunk: u64) -> Arc<openraft::Config> {
    let config = openraft::Config {
        cluster_name: "raft-network-test".into(),
        heartbeat_interval: 150,
        election_timeout_min: 1000,
        election_timeout_max: 2000,
        snapshot_max_chunk_size: snapshot_chunk,
        ..openraft::Config::default()
    };
    Arc::new(config.validate().expect("valid raft config"))
}

/// Logs to the test's output when `RUST_LOG` asks for it.
fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

/// One member: its store, Raft, proposer and peer server on a loopback port.
struct Member {
    id: u64,
    store: Arc<KvStore>,
    raft: Raft,
    proposer: RaftProposer,
    /// Stops the peer server.
    shutdown: CancellationToken,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    _dir: TempDir,
}

/// A loopback listener and the member node that advertises it.
fn listen(id: u64) -> (std::net::TcpListener, MemberNode) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a loopback port");
    listener.set_nonblocking(true).expect("non-blocking");
    let addr = listener.local_addr().expect("local addr");
    let node = MemberNode {
        name: format!("m{id}"),
        peer_urls: vec![format!("http://{addr}")],
        client_urls: vec![],
    };
    (listener, node)
}

impl Member {
    async fn start(
        id: u64,
        listener: std::net::TcpListener,
        config: Arc<openraft::Config>,
    ) -> Self {
        init_tracing();
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Arc::new(
            KvStore::open(
                &dir.path().join("db"),
                StoreOptions {
                    sync_writes: false,
                    ..StoreOptions::default()
                },
            )
            .expect("open store"),
        );
        let alarms = Arc::new(Alarms::load(store.backend()).expect("alarms"));
        let applier = Arc::new(Applier::new(Arc::clone(&store), alarms));
        let log = LogStore::open(Arc::clone(&store)).expect("log store");
        let after_install: AfterInstall = Arc::new(|_: &KvStore| Ok(()));
        let sm = StateMachine::open(
            Arc::clone(&store),
            applier,
            id,
            &dir.path().join("snap"),
            after_install,
        )
        .expect("state machine");
        let peers = Peers::new(
            id,
            PeerOptions {
                backoff_max: Duration::from_millis(500),
                ..PeerOptions::default()
            },
        );
        let raft = openraft::Raft::new(id, config, PeerNetwork::new(Arc::clone(&peers)), log, sm)
            .await
            .expect("start raft");
        let proposer = RaftProposer::new(
            raft.clone(),
            peers,
            ProposerOptions {
                request_timeout: Duration::from_secs(15),
            },
        );
        let shutdown = CancellationToken::new();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(
            tokio::net::TcpListener::from_std(listener).expect("tokio listener"),
        );
        let server = tokio::spawn(
            tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(
                    PeerService::new(raft.clone())
                        .with_read_index_batch(proposer.read_index_batch())
                        .into_server(),
                )
                .serve_with_incoming_shutdown(incoming, shutdown.clone().cancelled_owned()),
        );
        Self {
            id,
            store,
            raft,
            proposer,
            shutdown,
            server: Some(server),
            _dir: dir,
        }
    }

    /// Stops the member as a crash would look to its peers: Raft stops, the listener closes and
    /// its connections are shut.
    async fn kill(&mut self) {
        self.raft.shutdown().await.expect("raft shutdown");
        self.shutdown.cancel();
        if let Some(server) = self.server.take() {
            match tokio::time::timeout(Duration::from_secs(10), server).await {
                Ok(joined) => joined.expect("server task").expect("server"),
                Err(_) => panic!("peer server of m{} did not stop", self.id),
            }
        }
    }

    fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow().current_leader
    }

    fn last_applied(&self) -> Option<u64> {
        self.raft
            .metrics()
            .borrow()
            .last_applied
            .as_ref()
            .map(|id| id.index)
    }

    /// The value of `key` in this member's own store (no barrier).
    fn get(&self, key: &str) -> Option<String> {
        let resp = self
            .store
            .range(&RangeRequest {
                key: key.into(),
                ..RangeRequest::default()
            })
            .expect("range");
        resp.kvs
            .first()
            .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
    }

    /// A linearizable read of `key` on this member.
    async fn get_linearizable(&self, key: &str) -> Option<String> {
        self.proposer.read_barrier().await.expect("read barrier");
        self.get(key)
    }

    async fn put(&self, key: &str, value: &str) -> PutResponse {
        let command = Command::Put(PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        });
        match self.proposer.propose(command).await {
            Ok(Applied::Put(resp)) => resp,
            other => panic!("put {key} on m{}: {other:?}", self.id),
        }
    }
}

/// Starts `n` members (IDs 1..=n) and initializes them as one cluster of voters.
async fn start_cluster(n: u64) -> Vec<Member> {
    let config = raft_config(3 << 20);
    let endpoints: Vec<_> = (1..=n).map(listen).collect();
    let nodes: BTreeMap<u64, MemberNode> = endpoints
        .iter()
        .enumerate()
        .map(|(i, (_, node))| (i as u64 + 1, node.clone()))
        .collect();
    let mut members = Vec::new();
    for (i, (listener, _)) in endpoints.into_iter().enumerate() {
        members.push(Member::start(i as u64 + 1, listener, Arc::clone(&config)).await);
    }
    members[0]
        .raft
        .initialize(nodes)
        .await
        .expect("initialize the cluster");
    members
}

/// Waits until every member in `members` names the same leader, one of them.
async fn agreed_leader(members: &[&Member]) -> u64 {
    let deadline = Instant::now() + ELECTION_DEADLINE;
    loop {
        let leaders: Vec<Option<u64>> = members.iter().map(|m| m.leader()).collect();
        if let Some(Some(leader)) = leaders.first() {
            if leaders.iter().all(|l| *l == Some(*leader))
                && members.iter().any(|m| m.id == *leader)
            {
                return *leader;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no agreed leader after {ELECTION_DEADLINE:?}: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn revision(resp: &PutResponse) -> i64 {
    resp.header.as_ref().map_or(0, |h| h.revision)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_replicates_forwards_and_survives_losing_its_leader() {
    let mut members = start_cluster(3).await;
    let leader = agreed_leader(&members.iter().collect::<Vec<_>>()).await;
    let li = members.iter().position(|m| m.id == leader).expect("leader");
    let followers: Vec<usize> = (0..3).filter(|i| *i != li).collect();
    let (f1, f2) = (followers[0], followers[1]);

    // A write through the leader, and one through a follower (forwarded to the leader).
    let first = members[li].put("a", "1").await;
    let second = members[f1].put("b", "2").await;
    assert_eq!(
        revision(&second),
        revision(&first) + 1,
        "one revision per write"
    );

    // The other follower reads both linearizably: its read index covers them.
    assert_eq!(
        members[f2].get_linearizable("a").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        members[f2].get_linearizable("b").await.as_deref(),
        Some("2")
    );
    assert_eq!(
        members[f1].get_linearizable("a").await.as_deref(),
        Some("1")
    );
    assert_eq!(
        members[li].get_linearizable("b").await.as_deref(),
        Some("2")
    );
    for m in &members {
        assert_eq!(m.proposer.term(), members[li].proposer.term());
        assert_eq!(m.proposer.leader(), Some(leader));
    }

    // Kill the leader: the other two elect a new one and writes continue.
    let old_term = members[li].proposer.term();
    members[li].kill().await;
    match members[li].proposer.propose(Command::LeaseRevoke(1)).await {
        Err(err) => assert_eq!(tonic::Status::from(err).code(), tonic::Code::Unavailable),
        Ok(applied) => panic!("a stopped member applied {applied:?}"),
    }
    let survivors = [&members[f1], &members[f2]];
    let new_leader = agreed_leader(&survivors).await;
    assert_ne!(new_leader, leader);
    assert!(members[f1].proposer.term() > old_term);
    let (nl, nf) = if members[f1].id == new_leader {
        (f1, f2)
    } else {
        (f2, f1)
    };

    let third = members[nl].put("c", "3").await;
    let fourth = members[nf].put("d", "4").await;
    assert!(revision(&third) > revision(&second));
    assert_eq!(revision(&fourth), revision(&third) + 1);
    for key_value in [("a", "1"), ("b", "2"), ("c", "3"), ("d", "4")] {
        assert_eq!(
            members[nf].get_linearizable(key_value.0).await.as_deref(),
            Some(key_value.1)
        );
        assert_eq!(
            members[nl].get_linearizable(key_value.0).await.as_deref(),
            Some(key_value.1)
        );
    }
    assert_eq!(members[nf].store.current_revision(), revision(&fourth));

    for m in &mut members {
        if m.server.is_some() {
            m.kill().await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_learner_catches_up_from_a_snapshot_sent_in_chunks() {
    // Small chunks, so the snapshot takes many InstallSnapshot RPCs.
    let config = raft_config(4096);
    let (l1, n1) = listen(1);
    let (l2, n2) = listen(2);
    let mut leader = Member::start(1, l1, Arc::clone(&config)).await;
    leader
        .raft
        .initialize(BTreeMap::from([(1, n1)]))
        .await
        .expect("initialize");
    agreed_leader(&[&leader]).await;

    let value = "v".repeat(200);
    for i in 0..200 {
        leader.put(&format!("key-{i:03}"), &value).await;
    }
    let applied = leader.last_applied().expect("applied");

    // Snapshot everything and drop the log behind it, so only a snapshot can catch up a member.
    leader.raft.trigger().snapshot().await.expect("snapshot");
    leader
        .raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.snapshot.as_ref().map(|s| s.index) >= Some(applied),
            "snapshot built",
        )
        .await
        .expect("snapshot built");
    leader
        .raft
        .trigger()
        .purge_log(applied)
        .await
        .expect("purge");
    leader
        .raft
        .wait(Some(Duration::from_secs(30)))
        .metrics(
            |m| m.purged.as_ref().map(|p| p.index) >= Some(applied),
            "log purged",
        )
        .await
        .expect("log purged");

    let mut learner = Member::start(2, l2, Arc::clone(&config)).await;
    leader
        .raft
        .add_learner(2, n2, true)
        .await
        .expect("add learner");
    learner
        .raft
        .wait(Some(Duration::from_secs(30)))
        .applied_index_at_least(Some(applied), "learner caught up")
        .await
        .expect("learner caught up");
    assert!(
        learner.raft.metrics().borrow().snapshot.is_some(),
        "caught up by a snapshot"
    );
    let rows = |m: &Member| {
        let backend = m.store.backend();
        backend
            .db()
            .iterator_cf(&backend.cf(CF_KV), rocksdb::IteratorMode::Start)
            .count()
    };
    assert_eq!(rows(&learner), rows(&leader));
    assert_eq!(rows(&learner), 200);

    // A learner's linearizable read asks the leader for the read index.
    learner.proposer.read_barrier().await.expect("read barrier");
    assert_eq!(learner.proposer.leader(), Some(1));

    learner.kill().await;
    leader.kill().await;
}
