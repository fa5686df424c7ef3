//! The Cluster service: the membership of the cluster. Changes need replication and come with it.

use std::sync::Arc;

use kvstore_proto::etcdserverpb::{
    cluster_server::Cluster, Member, MemberAddRequest, MemberAddResponse, MemberListRequest,
    MemberListResponse, MemberPromoteRequest, MemberPromoteResponse, MemberRemoveRequest,
    MemberRemoveResponse, MemberUpdateRequest, MemberUpdateResponse,
};
use tonic::{Request, Response, Status};

use super::status::unimplemented;
use crate::node::Node;

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
}

#[tonic::async_trait]
impl Cluster for ClusterService {
    async fn member_add(
        &self,
        _req: Request<MemberAddRequest>,
    ) -> Result<Response<MemberAddResponse>, Status> {
        Err(unimplemented("Cluster.MemberAdd"))
    }

    async fn member_remove(
        &self,
        _req: Request<MemberRemoveRequest>,
    ) -> Result<Response<MemberRemoveResponse>, Status> {
        Err(unimplemented("Cluster.MemberRemove"))
    }

    async fn member_update(
        &self,
        _req: Request<MemberUpdateRequest>,
    ) -> Result<Response<MemberUpdateResponse>, Status> {
        Err(unimplemented("Cluster.MemberUpdate"))
    }

    async fn member_list(
        &self,
        _req: Request<MemberListRequest>,
    ) -> Result<Response<MemberListResponse>, Status> {
        // etcd's Cluster service answers with a header that carries no revision.
        Ok(Response::new(MemberListResponse {
            header: Some(self.node.header(0)),
            members: self.members()?,
        }))
    }

    async fn member_promote(
        &self,
        _req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(unimplemented("Cluster.MemberPromote"))
    }
}
