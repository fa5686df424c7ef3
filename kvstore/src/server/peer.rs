//! The peer service (`raftpb.Raft`, on `--listen-peer-urls`): what other members of the
//! cluster ask of this one's Raft.
//!
//! - AppendEntries, Vote, InstallSnapshot: openraft's request, postcard-encoded in
//!   `RaftMessage.data`, handed to this member's Raft; its `Result<response, RaftError>` goes
//!   back the same way (see [`crate::raft::network`] for the client side). Snapshot chunks are
//!   appended to a file by openraft as they arrive.
//! - Forward: a write from a follower. Proposed only if this member is the leader; otherwise
//!   answered "etcdserver: not leader" without proposing, and never forwarded on.
//! - PreVote: would this member vote for the asker (see [`crate::raft::prevote`])?
//! - ReadIndex: the leader confirms its leadership and answers the index a linearizable read
//!   on the asking follower must wait for.

use std::sync::Arc;

use kvstore_proto::raftpb;
use kvstore_proto::raftpb::raft_server::{Raft as RaftService, RaftServer};
use kvstore_proto::raftpb::{
    ForwardRequest, ForwardResponse, RaftMessage, ReadIndexRequest, ReadIndexResponse,
};
use openraft::error::{ClientWriteError, RaftError};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::apply::Command;
use crate::raft::batcher::Batcher;
use crate::raft::codec;
use crate::raft::network::MAX_PEER_MESSAGE_BYTES;
use crate::raft::network::TO_MEMBER_HEADER;
use crate::raft::prevote::PreVoteJudge;
use crate::raft::proposer::{fatal_error, leader_changed_result, not_leader_result, NOT_LEADER};
use crate::raft::read_index::{leader_read_index, ReadIndexBatch, ReadIndexError};
use crate::raft::types::{
    AppendEntriesRequest, InstallSnapshotRequest, Raft, Request as RaftRequest,
    Response as RaftResponse, VoteRequest,
};
use crate::Error;

/// The peer service of one member.
#[derive(Clone)]
pub struct PeerService {
    /// This member's Raft (a cheap handle).
    raft: Raft,
    /// Read-index rounds, shared with this member's own linearizable reads.
    reads: Arc<ReadIndexBatch>,
    /// This member's ID, checked against every request's stamp.
    identity: Option<u64>,
    /// Answers pre-votes; without one every pre-vote is refused.
    judge: Option<PreVoteJudge>,
    /// Proposes forwarded writes in batches with this member's own; without one each is
    /// proposed alone.
    batcher: Option<Batcher>,
}

impl PeerService {
    /// The peer service over `raft`.
    pub fn new(raft: Raft) -> Self {
        Self {
            raft,
            reads: Arc::default(),
            identity: None,
            judge: None,
            batcher: None,
        }
    }

    /// Shares read-index rounds with this member's own reads (`reads` from
    /// [`RaftProposer::read_index_batch`](crate::raft::RaftProposer::read_index_batch)), so
    /// followers' and local linearizable reads share leadership confirmations.
    pub fn with_read_index_batch(mut self, reads: Arc<ReadIndexBatch>) -> Self {
        self.reads = reads;
        self
    }

    /// Refuses requests stamped for another member (see
    /// [`crate::raft::network::Peer::stamp`]): a member started with the wrong
    /// `--initial-cluster-token` or `--name`, or at an address that belongs to someone else,
    /// is told so loudly instead of quietly taking part.
    pub fn with_identity(mut self, member_id: u64) -> Self {
        self.identity = Some(member_id);
        self
    }

    /// Proposes forwarded writes through `batcher` (the proposer's).
    pub fn with_batcher(mut self, batcher: Batcher) -> Self {
        self.batcher = Some(batcher);
        self
    }

    /// Answers other members' pre-votes with `judge`.
    pub fn with_pre_vote(mut self, judge: PreVoteJudge) -> Self {
        self.judge = Some(judge);
        self
    }

    /// Checks a request's stamp against this member's identity.
    #[allow(clippy::result_large_err)]
    fn check<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let Some(member_id) = self.identity else {
            return Ok(());
        };
        let stamp = |key: &str| {
            request
                .metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| u64::from_str_radix(v, 16).ok())
        };
        if let Some(to) = stamp(TO_MEMBER_HEADER) {
            if to != member_id {
                tracing::error!(
                    meant_for = %format!("{to:x}"),
                    this_member = %format!("{member_id:x}"),
                    "refused a peer request meant for another member (different \
                     --initial-cluster-token, --name or peer URL than the cluster expects?)"
                );
                return Err(Status::failed_precondition(format!(
                    "raft: request meant for member {to:x}, this is member {member_id:x}"
                )));
            }
        }
        Ok(())
    }

    /// The tonic service, with the message limits both ends of the peer service use.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_PEER_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_PEER_MESSAGE_BYTES)
    }

    /// Whether this member believes it is the leader.
    fn is_leader(&self) -> bool {
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        m.current_leader == Some(m.id)
    }
}

/// Decodes an openraft request from a peer.
fn decode<T: DeserializeOwned>(request: Request<RaftMessage>) -> Result<T, Status> {
    codec::decode(&request.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

/// Encodes openraft's answer (response or error) for the peer.
fn reply<T: Serialize>(result: &T) -> Result<Response<RaftMessage>, Status> {
    codec::encode(result)
        .map(|data| Response::new(RaftMessage { data }))
        .map_err(|e| Status::internal(format!("unencodable Raft reply: {e}")))
}

#[tonic::async_trait]
impl RaftService for PeerService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.check(&request)?;
        let rpc: AppendEntriesRequest = decode(request)?;
        reply(&self.raft.append_entries(rpc).await)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.check(&request)?;
        let rpc: VoteRequest = decode(request)?;
        reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.check(&request)?;
        let rpc: InstallSnapshotRequest = decode(request)?;
        reply(&self.raft.install_snapshot(rpc).await)
    }

    async fn forward(
        &self,
        request: Request<ForwardRequest>,
    ) -> Result<Response<ForwardResponse>, Status> {
        self.check(&request)?;
        let command = request
            .into_inner()
            .command
            .ok_or_else(|| Status::invalid_argument("forwarded write without a command"))?;
        let command =
            Command::try_from(command).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let result = if !self.is_leader() {
            not_leader_result()
        } else {
            let written = match &self.batcher {
                Some(batcher) => batcher.write(command).await,
                None => self
                    .raft
                    .client_write(RaftRequest::new(command))
                    .await
                    .map(|response| response.data.0),
            };
            match written {
                Ok(result) => result,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => {
                    leader_changed_result()
                }
                Err(RaftError::APIError(e)) => {
                    RaftResponse::from(Err(Error::Internal(format!("raft: {e}")))).0
                }
                Err(RaftError::Fatal(fatal)) => RaftResponse::from(Err(fatal_error(&fatal))).0,
            }
        };
        Ok(Response::new(ForwardResponse {
            result: Some(result),
        }))
    }

    async fn campaign(
        &self,
        request: Request<raftpb::CampaignRequest>,
    ) -> Result<Response<raftpb::CampaignResponse>, Status> {
        self.check(&request)?;
        self.raft
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(format!("etcdserver: cannot campaign: {e}")))?;
        Ok(Response::new(raftpb::CampaignResponse {}))
    }

    async fn pre_vote(
        &self,
        request: Request<raftpb::PreVoteRequest>,
    ) -> Result<Response<raftpb::PreVoteResponse>, Status> {
        self.check(&request)?;
        let answer = match &self.judge {
            Some(judge) => judge.judge(request.get_ref()).await,
            None => raftpb::PreVoteResponse::default(),
        };
        Ok(Response::new(answer))
    }

    async fn read_index(
        &self,
        request: Request<ReadIndexRequest>,
    ) -> Result<Response<ReadIndexResponse>, Status> {
        self.check(&request)?;
        if !self.is_leader() {
            return Err(Status::unavailable(NOT_LEADER));
        }
        match self.reads.run(|| leader_read_index(&self.raft)).await {
            // `None`: nothing committed yet; the asker waits for the first entry, which the
            // leader commits at once.
            Ok(index) => Ok(Response::new(ReadIndexResponse {
                index: index.unwrap_or(0),
            })),
            Err(ReadIndexError::Retry(cause)) => {
                Err(Status::unavailable(format!("{NOT_LEADER}: {cause}")))
            }
            Err(ReadIndexError::Fail(err)) => Err(err.into()),
        }
    }
}
