//! The Cluster service: list, add, promote, remove and update members. Changes run on the
//! leader; a member that is not the leader forwards the call to the leader's client URL.

use std::sync::Arc;

use kvstore_proto::etcdserverpb::{
    cluster_client::ClusterClient, cluster_server::Cluster, Member, MemberAddRequest,
    MemberAddResponse, MemberListRequest, MemberListResponse, MemberPromoteRequest,
    MemberPromoteResponse, MemberRemoveRequest, MemberRemoveResponse, MemberUpdateRequest,
    MemberUpdateResponse,
};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::node::Node;
use crate::raft::membership;

/// The Cluster service of one member.
pub struct ClusterService {
    /// The member serving.
    node: Arc<Node>,
}

impl ClusterService {
    /// The Cluster service over a node.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }

    /// Every member: voters and learners from Raft's membership, with the name and client URLs
    /// each member published (empty until it has, as in etcd for an unstarted member).
    fn members(&self) -> Result<Vec<Member>, Status> {
        let metrics = self.node.raft.metrics();
        let membership = metrics.borrow().membership_config.clone();
        let published = crate::membership::published_attributes(self.node.store.backend())?;
        let voters: std::collections::BTreeSet<u64> = membership.voter_ids().collect();
        Ok(membership
            .nodes()
            .map(|(id, node)| {
                let attrs = published.get(id);
                Member {
                    id: *id,
                    name: attrs.map(|a| a.name.clone()).unwrap_or_default(),
                    peer_ur_ls: node.peer_urls.clone(),
                    client_ur_ls: attrs.map(|a| a.client_urls.clone()).unwrap_or_default(),
                    is_learner: !voters.contains(id),
                }
            })
            .collect())
    }

    /// None when this member leads (run the change here); otherwise a client of the leader.
    async fn leader_client(&self) -> Result<Option<ClusterClient<Channel>>, Status> {
        Ok(self.node.leader_channel().await?.map(ClusterClient::new))
    }

    /// The header of a Cluster response (etcd's carries no revision).
    fn header(&self) -> Option<kvstore_proto::etcdserverpb::ResponseHeader> {
        Some(self.node.header(0))
    }
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        if let Some(mut leader) = self.leader_client().await? {
            return leader.member_add(req.into_inner()).await;
        }
        let req = req.into_inner();
        let id = membership::add(
            &self.node.raft,
            &self.node.config.initial_cluster_token,
            req.peer_ur_ls.clone(),
            req.is_learner,
        )
        .await?;
        Ok(Response::new(MemberAddResponse {
            header: self.header(),
            member: Some(Member {
                id,
                name: String::new(),
                peer_ur_ls: req.peer_ur_ls,
                client_ur_ls: Vec::new(),
                is_learner: req.is_learner,
            }),
            members: self.members()?,
        }))
    }

    async fn member_remove(
        &self,
        req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        if let Some(mut leader) = self.leader_client().await? {
            return leader.member_remove(req.into_inner()).await;
        }
        let id = req.into_inner().id;
        membership::remove(&self.node.raft, id).await?;
        self.node.peers.remove(id);
        Ok(Response::new(MemberRemoveResponse {
            header: self.header(),
            members: self.members()?,
        }))
    }

    async fn member_update(
        &self,
        req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        if let Some(mut leader) = self.leader_client().await? {
            return leader.member_update(req.into_inner()).await;
        }
        let req = req.into_inner();
        membership::update(&self.node.raft, req.id, req.peer_ur_ls).await?;
        Ok(Response::new(MemberUpdateResponse {
            header: self.header(),
            members: self.members()?,
        }))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        Ok(Response::new(MemberListResponse {
            header: self.header(),
            members: self.members()?,
        }))
    }

    async fn member_promote(
        &self,
        req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        if let Some(mut leader) = self.leader_client().await? {
            return leader.member_promote(req.into_inner()).await;
        }
        membership::promote(&self.node.raft, req.into_inner().id).await?;
        Ok(Response::new(MemberPromoteResponse {
            header: self.header(),
            members: self.members()?,
        }))
    }
}
