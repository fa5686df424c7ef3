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

    fn members(&self) -> Vec<Member> {
        self.node
            .membership
            .members
            .values()
            .map(|m| Member {
                id: m.id,
                name: m.name.clone(),
                peer_ur_ls: m.peer_urls.clone(),
                client_ur_ls: m.client_urls.clone(),
                is_learner: m.is_learner,
            })
            .collect()
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
            members: self.members(),
        }))
    }

    async fn member_promote(
        &self,
        _req: Request<MemberPromoteRequest>,
    ) -> Result<Response<MemberPromoteResponse>, Status> {
        Err(unimplemented("Cluster.MemberPromote"))
    }
}
