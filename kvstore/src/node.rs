//! One member: its store, state machine, proposer, watch hub and lessor wired together, its
//! listeners, and its graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use kvstore_proto::etcdserverpb::{
    auth_server::AuthServer, cluster_server::ClusterServer, kv_server::KvServer,
    lease_server::LeaseServer, maintenance_server::MaintenanceServer, watch_server::WatchServer,
    ResponseHeader,
};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::alarm::Alarms;
use crate::apply::{Applier, LocalProposer, Proposer};
use crate::config::{url_to_addr, Config};
use crate::lease::{Lessor, LessorOptions};
use crate::membership::Membership;
use crate::metrics::{self, Metrics};
use crate::mvcc::{KvStore, Limits, StoreOptions};
use crate::server::{
    auth::AuthService, cluster::ClusterService, kv::KvService, lease::LeaseService,
    maintenance::MaintenanceService, watch::WatchService,
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
    /// Cancelled when the member shuts down.
    pub shutdown: CancellationToken,
}

impl Node {
    /// Opens the data directory and builds the member (listeners are started by [`serve`]).
    pub fn open(config: Config) -> Result<Arc<Self>, Error> {
        let membership = Membership::from_initial_cluster(
            &config.initial_cluster,
            &config.initial_cluster_token,
            &config.name,
            &config.initial_advertise_peer_urls,
            &config.advertise_client_urls,
        )?;
        let data_dir = config.data_dir();
        std::fs::create_dir_all(&data_dir).map_err(|e| {
            Error::Config(format!(
                "cannot create data dir {}: {e}",
                data_dir.display()
            ))
        })?;
        let store = Arc::new(KvStore::open(
            &data_dir.join("db"),
            StoreOptions {
                sync_writes: !config.unsafe_no_fsync,
                limits: Limits {
                    max_request_bytes: config.max_request_bytes,
                    max_txn_ops: config.max_txn_ops,
                },
                ..StoreOptions::default()
            },
        )?);
        let alarms = Arc::new(Alarms::load(store.backend())?);
        let applier = Arc::new(Applier::new(Arc::clone(&store), Arc::clone(&alarms)));
        let proposer: Arc<dyn Proposer> = Arc::new(LocalProposer::new(
            applier,
            membership.member_id,
            store.current_revision() as u64,
        ));
        let watch_hub = WatchHub::new(Arc::clone(&store));
        let lessor = Lessor::new(Arc::clone(&store), Arc::clone(&proposer));
        lessor.bind(LessorOptions::from_config(membership.member_id, &config));
        Ok(Arc::new(Self {
            config,
            store,
            alarms,
            proposer,
            membership,
            metrics: Metrics::new(),
            watch_hub,
            lessor,
            shutdown: CancellationToken::new(),
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

    for url in &node.config.listen_client_urls {
        let addr = url_to_addr(url)?;
        let listener = TcpListener::bind(&addr)
            .await
            .map_err(|e| Error::Config(format!("cannot listen on {url}: {e}")))?;
        tracing::info!(%url, "serving client requests");
        let routes = tonic::service::Routes::from(metrics::http_router(Arc::clone(&node)))
            .add_service(
                KvServer::new(KvService::new(Arc::clone(&node))).max_decoding_message_size(max_msg),
            )
            .add_service(
                WatchServer::new(WatchService::new(Arc::clone(&node)))
                    .max_decoding_message_size(max_msg),
            )
            .add_service(LeaseServer::new(LeaseService::new(Arc::clone(&node))))
            .add_service(ClusterServer::new(ClusterService::new(Arc::clone(&node))))
            .add_service(MaintenanceServer::new(MaintenanceService::new(Arc::clone(
                &node,
            ))))
            .add_service(AuthServer::new(AuthService));
        let shutdown = node.shutdown.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        tasks.spawn(async move {
            tonic::transport::Server::builder()
                .accept_http1(true)
                .tcp_nodelay(true)
                .add_routes(routes)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
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
    result
}

/// How long in-flight requests and open streams get to finish once shutdown starts.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Completes `SHUTDOWN_GRACE` after `shutdown` is cancelled.
async fn grace_period_over(shutdown: &CancellationToken) {
    shutdown.cancelled().await;
    tokio::time::sleep(SHUTDOWN_GRACE).await;
}
