//! The Lease service: LeaseGrant, LeaseRevoke, LeaseKeepAlive, LeaseTimeToLive, LeaseLeases
//! (etcd's `v3rpc/lease.go`), a thin adapter over the member's [`crate::lease::Lessor`].
//!
//! As in etcd, a keep-alive or a TTL query for a lease that does not exist is not an error:
//! it is answered with TTL 0 (keep-alive) or TTL -1 (time to live).

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use kvstore_proto::etcdserverpb::{
    lease_client::LeaseClient, lease_server::Lease, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseKeepAliveResponse, LeaseLeasesRequest, LeaseLeasesResponse,
    LeaseRevokeRequest, LeaseRevokeResponse, LeaseStatus, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::node::Node;
use crate::Error;

/// Keep-alive responses buffered per stream before the reader waits for the client.
const KEEP_ALIVE_BUFFER: usize = 16;

/// The Lease service of one member.
pub struct LeaseService {
    /// The member serving.
    node: Arc<Node>,
}

impl LeaseService {
    /// The Lease service over a node (whose lessor `Node::open` has bound).
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

type KeepAliveStream = Pin<Box<dyn Stream<Item = Result<LeaseKeepAliveResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        req: Request<LeaseGrantRequest>,
    ) -> Result<Response<LeaseGrantResponse>, Status> {
        let req = req.into_inner();
        crate::quota::check(&self.node, crate::quota::lease_grant_cost()).await?;
        let mut resp = self.node.lessor.grant(req.id, req.ttl).await?;
        self.node.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_revoke(
        &self,
        req: Request<LeaseRevokeRequest>,
    ) -> Result<Response<LeaseRevokeResponse>, Status> {
        let mut resp = self.node.lessor.revoke(req.into_inner().id).await?;
        self.node.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    type LeaseKeepAliveStream = KeepAliveStream;

    async fn lease_keep_alive(
        &self,
        req: Request<Streaming<LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let requests = req.into_inner();
        let (tx, rx) = mpsc::channel(KEEP_ALIVE_BUFFER);
        tokio::spawn(keep_alive(Arc::clone(&self.node), requests, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn lease_time_to_live(
        &self,
        req: Request<LeaseTimeToLiveRequest>,
    ) -> Result<Response<LeaseTimeToLiveResponse>, Status> {
        let req = req.into_inner();
        // Only the leader's lessor runs the timers: etcd forwards this query to the leader.
        if let Some(leader) = self.node.leader_channel().await? {
            return LeaseClient::new(leader).lease_time_to_live(req).await;
        }
        self.node.proposer.read_barrier().await?;
        let mut resp = match self.node.lessor.time_to_live(req.id, req.keys) {
            Some(ttl) => LeaseTimeToLiveResponse {
                header: None,
                id: req.id,
                ttl: ttl.ttl,
                granted_ttl: ttl.granted_ttl,
                keys: ttl.keys,
            },
            None => LeaseTimeToLiveResponse {
                header: None,
                id: req.id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        };
        self.node.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn lease_leases(
        &self,
        _req: Request<LeaseLeasesRequest>,
    ) -> Result<Response<LeaseLeasesResponse>, Status> {
        self.node.proposer.read_barrier().await?;
        let leases = self
            .node
            .lessor
            .leases()
            .into_iter()
            .map(|id| LeaseStatus { id })
            .collect();
        let mut resp = LeaseLeasesResponse {
            header: None,
            leases,
        };
        self.node.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }
}

/// Serves one keep-alive stream: each request renews its lease and is answered with the TTL
/// (0 if the lease is gone). Ends when the client closes its side, the client goes away, or
/// the member shuts down (a stream left open would hold up the graceful shutdown).
/// Renews one lease: here if this member leads, otherwise on the leader (etcd forwards
/// keep-alives to the leader, whose lessor runs the timers).
async fn renew(node: &Node, req: LeaseKeepAliveRequest) -> Result<LeaseKeepAliveResponse, Status> {
    if let Some(leader) = node.leader_channel().await? {
        let mut responses = LeaseClient::new(leader)
            .lease_keep_alive(futures::stream::iter([req]))
            .await?
            .into_inner();
        return responses
            .message()
            .await?
            .ok_or_else(|| Error::LeaderChanged.into());
    }
    // The header is taken before renewing, as etcd does: its revision is then never past a
    // revocation that the renewal missed.
    let header = node.header(node.store.current_revision());
    let ttl = node.lessor.renew(req.id).await?;
    Ok(LeaseKeepAliveResponse {
        header: Some(header),
        id: req.id,
        ttl: ttl.unwrap_or(0),
    })
}

async fn keep_alive(
    node: Arc<Node>,
    mut requests: Streaming<LeaseKeepAliveRequest>,
    tx: mpsc::Sender<Result<LeaseKeepAliveResponse, Status>>,
) {
    loop {
        let next = tokio::select! {
            _ = node.shutdown.cancelled() => {
                let _ = tx.send(Err(Error::Stopped.into())).await;
                return;
            }
            _ = tx.closed() => return,
            next = requests.message() => next,
        };
        let req = match next {
            Ok(Some(req)) => req,
            Ok(None) => return,
            Err(status) => {
                tracing::debug!(%status, "keep-alive stream failed");
                return;
            }
        };
        let resp = renew(&node, req).await;
        let failed = resp.is_err();
        if tx.send(resp).await.is_err() || failed {
            return;
        }
    }
}
