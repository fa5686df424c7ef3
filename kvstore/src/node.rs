//! One member: its store, state machine, proposer, watch hub and lessor wired together, its
//! listeners, and its graceful shutdown.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use kvstore_proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, ResponseHeader,
};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::alarm::Alarms;
use crate::apply::{Applier, Command, Proposer};
use crate::config::{url_to_addr, Config};
use crate::lease::{Lessor, LessorOptions};
use crate::membership::Membership;
use crate::metrics::{self, Metrics};
use crate::mvcc::{KvStore, Limits, StoreOptions};
use crate::raft::batcher::Batcher;
use crate::raft::log_store::LogStore;
use crate::raft::network::{PeerNetwork, PeerOptions, Peers};
use crate::raft::prevote::{ElectionTiming, Elector, PreVoteJudge};
use crate::raft::proposer::{ProposerOptions, RaftProposer};
use crate::raft::read_index::ReadIndexBatch;
use crate::raft::state_machine::{AfterInstall, StateMachine};
use crate::raft::types::{MemberNode, Raft, ServerMetrics};
use crate::server::authority::AuthorityFix;
use crate::server::peer::PeerService;
use crate::server::routes::{ClientRoutes, Services};
use crate::server::{
    auth::AuthService,
    cluster::ClusterService,
    kv::KvService,
    lease::LeaseService,
    maintenance::MaintenanceService,
    watch::{WatchServer, WatchService},
};
use crate::watch::WatchHub;
use crate::Error;

/// Extra room on top of `--max-request-bytes` for gRPC framing, so that a request just over
/// the limit gets etcd's "request is too large" from our own check rather than a transport error.
const GRPC_OVERHEAD_BYTES: usize = 512 * 1024;

/// One running member of a kvstore cluster.
pub struct Node {
    /// The configuration it was started with.
    pub config: Config,
    /// The revisioned store.
    pub store: Arc<KvStore>,
    /// Active alarms.
    pub alarms: Arc<Alarms>,
    /// How writes are ordered and applied.
    pub proposer: Arc<dyn Proposer>,
    /// The cluster's members and IDs.
    pub membership: Membership,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Fans out committed changes to watchers.
    pub watch_hub: Arc<WatchHub>,
    /// Expires leases.
    pub lessor: Arc<Lessor>,
    /// This member's Raft node.
    pub raft: Raft,
    /// Raft's server metrics (vote, role, leader, membership), which change only with those:
    /// read per request, unlike the full metrics, which Raft rewrites several times per write.
    server_metrics: tokio::sync::watch::Receiver<ServerMetrics>,
    /// Read-index rounds, shared by local linearizable reads and followers' ReadIndex calls.
    pub read_batch: Arc<ReadIndexBatch>,
    /// Connections to the other members (forgotten when a member is removed).
    pub peers: Arc<Peers>,
    /// A client connection to the leader's client URL (for the calls etcd forwards there:
    /// lease keep-alives and TTL queries, membership changes), with the leader it is for.
    leader_conn: parking_lot::Mutex<Option<(u64, tonic::transport::Channel)>>,
    /// Cancelled when the member shuts down.
    pub shutdown: CancellationToken,
    /// Answers other members' pre-votes (served on the peer listener).
    pub pre_vote: PreVoteJudge,
    /// Batches writes into log entries; forwarded writes join this member's own.
    pub batcher: Batcher,
}

impl Node {
    /// Opens the data directory, starts Raft (bootstrapping a new cluster from
    /// `--initial-cluster` on first start) and builds the member. Listeners are started by
    /// [`serve`].
    pub async fn open(config: Config) -> Result<Arc<Self>, Error> {
        let membership = Membership::from_initial_cluster(
            &config.initial_cluster,
            &config.initial_cluster_token,
            &config.name,
            &config.initial_advertise_peer_urls,
            &config.advertise_client_urls,
            config.initial_cluster_state == "existing",
        )?;
        let data_dir = config.data_dir();
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            Error::Config(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        // Under Raft the log append is the one fsync on the write path; applying to the store
        // skips RocksDB's WAL, because a restart re-applies from the last applied index on disk.
        let store = Arc::new(KvStore::open(
            &data_dir.join("db"),
            StoreOptions {
                sync_writes: false,
                limits: Limits {
                    max_request_bytes: config.max_request_bytes,
                    max_txn_ops: config.max_txn_ops,
                },
                compaction_batch: config.experimental_compaction_batch_limit,
                ..StoreOptions::default()
            },
        )?);
        check_cluster_identity(&store, &membership)?;
        let alarms = Arc::new(Alarms::load(store.backend())?);
        let applier = Arc::new(Applier::new(Arc::clone(&store), Arc::clone(&alarms)));
        let watch_hub = WatchHub::new(Arc::clone(&store));

        let member_id = membership.member_id;
        let peers = Peers::new(member_id, PeerOptions::default());
        let log_store = LogStore::open_with_fsync(Arc::clone(&store), !config.unsafe_no_fsync)
            .map_err(raft_error)?
            .for_member(member_id);
        let reload_alarms = Arc::clone(&alarms);
        let hub = Arc::downgrade(&watch_hub);
        let after_install: AfterInstall = Arc::new(move |store: &KvStore| {
            reload_alarms.reload(store.backend())?;
            if let Some(hub) = hub.upgrade() {
                hub.store_replaced();
            }
            Ok(())
        });
        let state_machine = StateMachine::open(
            Arc::clone(&store),
            Arc::clone(&applier),
            member_id,
            &data_dir.join("snap"),
            after_install,
        )
        .map_err(raft_error)?;
        let raft_config = raft_config(&config)?;
        let timing = ElectionTiming::from_config(&raft_config);
        let log_reader = log_store.reader();
        let raft = Raft::new(
            member_id,
            Arc::new(raft_config),
            PeerNetwork::new(Arc::clone(&peers)),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| Error::Internal(format!("starting raft: {e}")))?;
        bootstrap(&raft, &config, &membership).await?;
        let shutdown = CancellationToken::new();
        Elector::new(raft.clone(), Arc::clone(&peers), log_reader.clone(), timing)
            .spawn(shutdown.clone());
        let pre_vote = PreVoteJudge::new(raft.clone(), log_reader, timing);

        let raft_proposer = Arc::new(RaftProposer::new(
            raft.clone(),
            Arc::clone(&peers),
            ProposerOptions {
                // etcd's request timeout: 5 s plus two election timeouts.
                request_timeout: Duration::from_millis(5000 + 2 * config.election_timeout),
            },
        ));
        let read_batch = raft_proposer.read_index_batch();
        let batcher = raft_proposer.batcher();
        let proposer: Arc<dyn Proposer> = raft_proposer;
        let lessor = Lessor::new(Arc::clone(&store), Arc::clone(&proposer));
        lessor.bind(LessorOptions::from_config(member_id, &config));
        let metrics = Metrics::new();
        follow_leadership(&raft, Arc::clone(&lessor), metrics.leader_changes.clone());
        Ok(Arc::new(Self {
            config,
            store,
            alarms,
            proposer,
            membership,
            metrics,
            watch_hub,
            lessor,
            server_metrics: raft.server_metrics(),
            raft,
            read_batch,
            peers,
            leader_conn: parking_lot::Mutex::new(None),
            shutdown,
            pre_vote,
            batcher,
        }))
    }

    /// A response header for `revision` from this member.
    pub fn header(&self, revision: i64) -> ResponseHeader {
        ResponseHeader {
            cluster_id: self.membership.cluster_id,
            member_id: self.membership.member_id,
            revision,
            raft_term: self.proposer.term(),
        }
    }

    /// Completes a header the store filled with only a revision (or none: the current one).
    pub fn fill_header(&self, header: &mut Option<ResponseHeader>) {
        let revision = header
            .as_ref()
            .map(|h| h.revision)
            .unwrap_or_else(|| self.store.current_revision());
        *header = Some(self.header(revision));
    }

    /// `None` when this member leads; otherwise a connection to the leader's client URL, for
    /// requests etcd serves only on the leader. Fails when no leader is known or it has not
    /// published its client URLs yet (retryable either way).
    pub async fn leader_channel(&self) -> Result<Option<tonic::transport::Channel>, Error> {
        let leader = self.proposer.leader().ok_or(Error::NoLeader)?;
        if leader == self.membership.member_id {
            return Ok(None);
        }
        if let Some((id, channel)) = self.leader_conn.lock().as_ref() {
            if *id == leader {
                return Ok(Some(channel.clone()));
            }
        }
        let published = crate::membership::published_attributes(self.store.backend())?;
        let url = published
            .get(&leader)
            .and_then(|a| a.client_urls.first().cloned())
            .ok_or(Error::LeaderChanged)?;
        let channel = tonic::transport::Channel::from_shared(url)
            .map_err(|e| Error::Internal(format!("leader client URL: {e}")))?
            .connect_timeout(Duration::from_secs(2))
            .connect_lazy();
        *self.leader_conn.lock() = Some((leader, channel.clone()));
        Ok(Some(channel))
    }

    /// Whether this member is a non-voting learner (it serves only serializable reads).
    pub fn is_learner(&self) -> bool {
        let m = self.server_metrics.borrow();
        let is_voter = m
            .membership_config
            .membership()
            .voter_ids()
            .any(|id| id == m.id);
        !is_voter
    }

    /// Refuses what a learner must not serve, with etcd's error.
    pub fn refuse_if_learner(&self) -> Result<(), Error> {
        if self.is_learner() {
            return Err(Error::NotSupportedForLearner);
        }
        Ok(())
    }

    /// The index of the last command applied on this member.
    pub fn applied_index(&self) -> u64 {
        self.proposer.applied_index()
    }
}

/// Runs the member's listeners until its shutdown token is cancelled, then shuts down
/// gracefully (in-flight requests finish, leases are checkpointed).
pub async fn serve(node: Arc<Node>) -> Result<(), Error> {
    let max_msg = node.config.max_request_bytes + GRPC_OVERHEAD_BYTES;
    let mut tasks = tokio::task::JoinSet::new();
    node.lessor.spawn(node.shutdown.clone());
    crate::quota::effective_quota(node.config.quota_backend_bytes);
    crate::compactor::spawn(Arc::clone(&node))?;
    crate::corruption::spawn_periodic(Arc::clone(&node));
    tokio::spawn(publish_attributes(Arc::clone(&node)));

    for url in &node.config.listen_peer_urls {
        let addr = url_to_addr(url)?;
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {url}: {e}")))?;
        tracing::info!(%url, "serving peer traffic");
        let service = PeerService::new(node.raft.clone())
            .with_read_index_batch(Arc::clone(&node.read_batch))
            .with_pre_vote(node.pre_vote.clone())
            .with_batcher(node.batcher.clone())
            .with_identity(node.membership.member_id)
            .into_server();
        let shutdown = node.shutdown.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(no_delay);
        // The peer service is served as it is, not through tonic's router (an axum router that
        // looks up, boxes and clones per request; see `server/routes.rs`): it is the only
        // service here, and it answers a path it does not know with `Unimplemented` as the
        // router would.
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .serve_with_incoming_shutdown(service, incoming, shutdown.cancelled_owned())
                .await
                .map_err(|e| Error::Internal(format!("peer listener: {e}")))
        });
    }

    // Clients are served once a leader is known (or after three election timeouts), so their
    // first requests do not wait on an election; peers must be served before that wait, or
    // the members of a new cluster cannot elect anyone until each has waited it out (and the
    // peers' back-offs grow meanwhile: a fresh 3-member cluster took 3 s to start).
    wait_for_leader(
        &node.raft,
        Duration::from_millis(3 * node.config.election_timeout),
    )
    .await;
    crate::corruption::initial_check(&node).await?;
    for url in &node.config.listen_client_urls {
        let addr = url_to_addr(url)?;
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {url}: {e}")))?;
        tracing::info!(%url, "serving client requests");
        let routes = ClientRoutes::new(Services {
            kv: KvServer::new(KvService::new(Arc::clone(&node))).max_decoding_message_size(max_msg),
            watch: WatchServer::new(WatchService::new(Arc::clone(&node)), max_msg),
            lease: LeaseServer::new(LeaseService::new(Arc::clone(&node))),
            cluster: ClusterServer::new(ClusterService::new(Arc::clone(&node))),
            maintenance: MaintenanceServer::new(MaintenanceService::new(Arc::clone(&node))),
            auth: AuthServer::new(AuthService),
            http: metrics::http_router(Arc::clone(&node)),
        });
        let shutdown = node.shutdown.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener)
            .map(|conn| no_delay(conn).map(AuthorityFix::new));
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .accept_http1(true)
                .serve_with_incoming_shutdown(routes, incoming, shutdown.cancelled_owned())
                .await
                .map_err(|e| Error::Internal(format!("client listener: {e}")))
        });
    }

    for url in &node.config.listen_metrics_urls {
        let addr: SocketAddr = url_to_addr(url)?
            .parse()
            .map_err(|e| Error::Config(format!("invalid metrics URL {url}: {e}")))?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {url}: {e}")))?;
        tracing::info!(%url, "serving metrics");
        let router = metrics::http_router(Arc::clone(&node));
        let shutdown = node.shutdown.clone();
        tasks.spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
                .map_err(|e| Error::Internal(format!("metrics listener: {e}")))
        });
    }

    let mut result = Ok(());
    loop {
        let joined = tokio::select! {
            joined = tasks.join_next() => joined,
            // Once shutdown starts, clients get a grace period to finish; a client that
            // never completes the HTTP/2 goodbye must not keep the member alive forever.
            _ = grace_period_over(&node.shutdown) => {
                tracing::warn!("connections still open after the shutdown grace period; closing them");
                tasks.abort_all();
                break;
            }
        };
        let Some(joined) = joined else { break };
        let outcome = joined.map_err(|e| Error::Internal(format!("listener task: {e}")));
        if let Err(err) = outcome.and_then(|r| r) {
            tracing::error!(cause = %err, "listener failed; shutting down");
            node.shutdown.cancel();
            result = Err(err);
        }
    }
    node.lessor.checkpoint_all().await;
    if let Err(err) = node.raft.shutdown().await {
        tracing::warn!(cause = %err, "raft did not shut down cleanly");
    }
    // Applied writes skip RocksDB's WAL (`Backend::write`): a clean stop puts them on disk, so
    // the next start finds the store as it was instead of replaying them from the Raft log.
    let store = Arc::clone(&node.store);
    match tokio::task::spawn_blocking(move || store.backend().persist()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(cause = %err, "could not flush the store at shutdown"),
        Err(err) => tracing::warn!(cause = %err, "store flush task failed at shutdown"),
    }
    result
}

/// Tells the lessor about every change of leader as soon as Raft reports it, and counts the
/// changes (`etcd_server_leader_changes_seen_total`).
///
/// It follows the server metrics (vote, role, leader, membership), not the full ones: those are
/// sent on every turn of Raft's loop, several times per write, and each woke this task, which
/// then took tokio's next-task slot ahead of the state machine's worker that Raft had just
/// handed an entry (timed in a single-client put: 100 → 30 µs from the hand-off to the apply).
fn follow_leadership(raft: &Raft, lessor: Arc<Lessor>, changes: prometheus::IntCounter) {
    let mut metrics = raft.server_metrics();
    tokio::spawn(async move {
        let mut leader = None;
        loop {
            let now = metrics.borrow_and_update().current_leader;
            if now != leader {
                if now.is_some() {
                    changes.inc();
                }
                leader = now;
                lessor.leadership_changed();
            }
            if metrics.changed().await.is_err() {
                return; // Raft shut down.
            }
        }
    });
}

/// Waits until a leader is known, or `limit` passes (a member whose peers are not up yet
/// still starts serving; its requests wait for a leader themselves).
async fn wait_for_leader(raft: &Raft, limit: Duration) {
    let mut metrics = raft.metrics();
    let _ = tokio::time::timeout(limit, metrics.wait_for(|m| m.current_leader.is_some())).await;
}

/// Turns Nagle's algorithm off on an accepted connection. tonic's `tcp_nodelay` applies only to
/// listeners it opens itself, not to `serve_with_incoming`, so without this every small write
/// after an unacknowledged one (the second HTTP/2 frame of a response, the next watch event)
/// waited for the peer's delayed ACK: watch fan-out put latency had a p90 of 45 ms.
fn no_delay(conn: std::io::Result<TcpStream>) -> std::io::Result<TcpStream> {
    let conn = conn?;
    if let Err(e) = conn.set_nodelay(true) {
        // The connection may already be gone; serving it shows that soon enough.
        tracing::debug!(cause = %e, "cannot turn Nagle's algorithm off");
    }
    Ok(conn)
}

/// openraft's configuration from etcd-style flags.
///
/// # Election timeouts
/// etcd's follower campaigns `rand[E, 2E)` after it last heard from its leader (E is
/// `--election-timeout`) and refuses votes for E after hearing from it. An openraft 0.9 follower
/// campaigns `election_timeout_max + rand[election_timeout_min, election_timeout_max)` after: the
/// first term is its leader lease (it also refuses votes for that long), the second its own
/// timeout, drawn once per process, which alone is a candidate's wait before trying again.
/// Passing E and 2E straight through therefore made a follower wait 3E to 4E (3–4 s by default)
/// before replacing a dead leader. With `min = E/4` and `max = 3E/4` it campaigns after
/// `[E, 1.5E)`: never sooner than etcd, randomized over E/2 (two followers rarely tie), a lease
/// of 3E/4 (7 heartbeats by default) and candidates retrying after E/4 to 3E/4. Only elections
/// get faster; no safety property of Raft depends on these timeouts (openraft confirms a read
/// index with a heartbeat round, not with the lease).
///
/// openraft requires both above the heartbeat interval: etcd requires `E >= 5 × heartbeat`, which
/// gives that; shorter election timeouts (still longer than a heartbeat) are stretched to fit.
fn raft_config(config: &Config) -> Result<openraft::Config, Error> {
    let (heartbeat, election) = (config.heartbeat_interval, config.election_timeout);
    if election <= heartbeat {
        return Err(Error::Config(format!(
            "raft settings: the election timeout ({election} ms) must be longer than the \
             heartbeat interval ({heartbeat} ms)"
        )));
    }
    let election_timeout_min = (election / 4).max(heartbeat + 1);
    let election_timeout_max = (election * 3 / 4).max(election_timeout_min + 1);
    openraft::Config {
        cluster_name: config.initial_cluster_token.clone(),
        heartbeat_interval: heartbeat,
        election_timeout_min,
        election_timeout_max,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(config.snapshot_count),
        max_in_snapshot_log_to_keep: 5000.min(config.snapshot_count),
        // The last chunk's RPC includes installing the whole snapshot into RocksDB.
        install_snapshot_timeout: 30_000,
        // Elections are started by the pre-vote elector (raft::prevote), not openraft's timer.
        enable_elect: false,
        ..openraft::Config::default()
    }
    .validate()
    .map_err(|e| Error::Config(format!("raft settings: {e}")))
}

/// On the first start of a new cluster, every member initializes Raft with the same
/// membership (openraft accepts the same initial membership on every member); a member that
/// joins an existing cluster waits to be added by the leader.
async fn bootstrap(raft: &Raft, config: &Config, membership: &Membership) -> Result<(), Error> {
    let initialized = raft
        .is_initialized()
        .await
        .map_err(|e| Error::Internal(format!("raft: {e}")))?;
    if initialized || config.initial_cluster_state != "new" {
        return Ok(());
    }
    let members: BTreeMap<u64, MemberNode> = membership
        .members
        .iter()
        .map(|(id, m)| (*id, MemberNode::from(m)))
        .collect();
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        // Another member's initial membership reached us first: same cluster, nothing to do.
        Err(openraft::error::RaftError::APIError(
            openraft::error::InitializeError::NotAllowed(_),
        )) => Ok(()),
        Err(e) => Err(Error::Internal(format!("initializing raft: {e}"))),
    }
}

/// Refuses to start on a data directory of another cluster (a different
/// `--initial-cluster-token` or membership), as etcd does; records the identity on first start.
fn check_cluster_identity(store: &KvStore, membership: &Membership) -> Result<(), Error> {
    use crate::backup::restore::META_CLUSTER_IDENTITY as META_IDENTITY;
    let backend = store.backend();
    let cf = backend.cf(crate::mvcc::backend::CF_META);
    let mut want = membership.cluster_id.to_be_bytes().to_vec();
    want.extend_from_slice(&membership.member_id.to_be_bytes());
    match backend
        .db()
        .get_cf(&cf, META_IDENTITY)
        .map_err(crate::mvcc::Error::from)?
    {
        Some(have) if have == want => Ok(()),
        Some(have) if have.len() == 16 => {
            let mut cid = [0u8; 8];
            cid.copy_from_slice(&have[..8]);
            let mut mid = [0u8; 8];
            mid.copy_from_slice(&have[8..]);
            Err(Error::Config(format!(
                "data dir belongs to member {:x} of cluster {:x}, but the flags describe member \
                 {:x} of cluster {:x} (different --name, --initial-cluster or \
                 --initial-cluster-token?)",
                u64::from_be_bytes(mid),
                u64::from_be_bytes(cid),
                membership.member_id,
                membership.cluster_id
            )))
        }
        _ => {
            let mut batch = rocksdb::WriteBatch::default();
            batch.put_cf(&cf, META_IDENTITY, want);
            backend.write(batch)?;
            Ok(())
        }
    }
}

/// Publishes this member's name and client URLs through the log once a leader is known, so
/// every member's MemberList shows them (etcd's member attributes).
async fn publish_attributes(node: Arc<Node>) {
    let me = &node.membership.members[&node.membership.member_id];
    let command = Command::PublishMember(kvstore_proto::raftpb::MemberAttributes {
        id: me.id,
        name: me.name.clone(),
        client_urls: node.config.advertise_client_urls.clone(),
    });
    let mut pause = std::time::Duration::from_millis(100);
    loop {
        tokio::select! {
            _ = node.shutdown.cancelled() => return,
            result = node.proposer.propose(command.clone()) => match result {
                Ok(_) => return,
                Err(err) => tracing::debug!(cause = %err, "publishing member attributes; will retry"),
            },
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(std::time::Duration::from_secs(5));
    }
}

/// A Raft storage error at start-up.
fn raft_error(err: openraft::StorageError<u64>) -> Error {
    Error::Internal(format!("raft storage: {err}"))
}

/// How long in-flight requests and open streams get to finish once shutdown starts.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Completes `SHUTDOWN_GRACE` after `shutdown` is cancelled.
async fn grace_period_over(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}
