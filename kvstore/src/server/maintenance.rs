//! The Maintenance service: Status, Hash, HashKV, Alarm, Defragment, Snapshot, MoveLeader.

use std::pin::Pin;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use kvstore_proto::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_server::Maintenance, AlarmRequest, AlarmResponse,
    AlarmType, DefragmentRequest, DefragmentResponse, DowngradeRequest, DowngradeResponse,
    HashKvRequest, HashKvResponse, HashRequest, HashResponse, MoveLeaderRequest,
    MoveLeaderResponse, SnapshotRequest, SnapshotResponse, StatusRequest, StatusResponse,
};
use tonic::{Request, Response, Status};

use super::kv::unexpected;
use super::status::unimplemented;
use crate::apply::{Applied, Command};
use crate::node::Node;

/// The etcd version this member reports: the API level it implements.
pub const ETCD_VERSION: &str = "3.5.0";

/// Bytes per Maintenance.Snapshot message: large enough that per-message costs vanish, far
/// below the 4 MiB a gRPC client accepts by default.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// The Maintenance service of one member.
pub struct MaintenanceService {
    /// The member serving.
    node: Arc<Node>,
}

impl MaintenanceService {
    /// The Maintenance service over a node.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

type SnapshotStream = Pin<Box<dyn Stream<Item = Result<SnapshotResponse, Status>> + Send>>;

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(&self, req: Request<AlarmRequest>) -> Result<Response<AlarmResponse>, Status> {
        let req = req.into_inner();
        if req.action == AlarmAction::Get as i32 {
            let alarms = self
                .node
                .alarms
                .list()
                .into_iter()
                .filter(|a| req.alarm == AlarmType::None as i32 || a.alarm == req.alarm)
                .filter(|a| req.member_id == 0 || a.member_id == req.member_id)
                .collect();
            return Ok(Response::new(AlarmResponse {
                header: Some(self.node.header(self.node.store.current_revision())),
                alarms,
            }));
        }
        match self.node.proposer.propose(Command::Alarm(req)).await? {
            Applied::Alarm(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn status(
        &self,
        _req: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let node = &self.node;
        let db_size = crate::quota::backend_size(node.store.backend()) as i64;
        let db_size_in_use = crate::quota::backend_size_in_use(node.store.backend()) as i64;
        let errors = node
            .alarms
            .list()
            .into_iter()
            .map(|a| {
                let name = AlarmType::try_from(a.alarm)
                    .map(|t| t.as_str_name().to_string())
                    .unwrap_or_else(|_| a.alarm.to_string());
                format!("memberID:{} alarm:{} ", a.member_id, name)
            })
            .collect();
        let (raft_index, applied, is_learner) = {
            let metrics = node.raft.metrics();
            let m = metrics.borrow();
            let is_learner = !m
                .membership_config
                .membership()
                .voter_ids()
                .any(|id| id == m.id);
            (
                m.last_log_index.unwrap_or(0),
                m.last_applied.map_or(0, |l| l.index),
                is_learner,
            )
        };
        Ok(Response::new(StatusResponse {
            header: Some(node.header(node.store.current_revision())),
            version: ETCD_VERSION.to_string(),
            db_size,
            leader: node.proposer.leader().unwrap_or(0),
            raft_index,
            raft_term: node.proposer.term(),
            raft_applied_index: applied,
            errors,
            db_size_in_use,
            is_learner,
        }))
    }

    async fn defragment(
        &self,
        _req: Request<DefragmentRequest>,
    ) -> Result<Response<DefragmentResponse>, Status> {
        let store = Arc::clone(&self.node.store);
        tokio::task::spawn_blocking(move || store.backend().defragment())
            .await
            .map_err(|e| Status::internal(format!("defragment task: {e}")))?;
        Ok(Response::new(DefragmentResponse {
            header: Some(self.node.header(self.node.store.current_revision())),
        }))
    }

    async fn hash(&self, _req: Request<HashRequest>) -> Result<Response<HashResponse>, Status> {
        let store = Arc::clone(&self.node.store);
        let hash = tokio::task::spawn_blocking(move || store.hash_all())
            .await
            .map_err(|e| Status::internal(format!("hash task: {e}")))??;
        Ok(Response::new(HashResponse {
            header: Some(self.node.header(self.node.store.current_revision())),
            hash,
        }))
    }

    async fn hash_kv(
        &self,
        req: Request<HashKvRequest>,
    ) -> Result<Response<HashKvResponse>, Status> {
        let rev = req.into_inner().revision;
        let store = Arc::clone(&self.node.store);
        let h = tokio::task::spawn_blocking(move || store.hash_kv(rev))
            .await
            .map_err(|e| Status::internal(format!("hash task: {e}")))??;
        Ok(Response::new(HashKvResponse {
            header: Some(self.node.header(h.current_revision)),
            hash: h.hash,
            compact_revision: h.compact_revision,
        }))
    }

    type SnapshotStream = SnapshotStream;

    /// Streams a consistent snapshot of this member's store (see [`crate::backup::stream`]):
    /// chunks of [`SNAPSHOT_CHUNK_BYTES`], each with the bytes remaining after it and a header
    /// carrying the snapshot's revision; the last bytes are the file's CRC-32C.
    async fn snapshot(
        &self,
        _req: Request<SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        let snapshot =
            crate::backup::stream::open(Arc::clone(&self.node.store), SNAPSHOT_CHUNK_BYTES)
                .await
                .map_err(|e| Status::internal(format!("snapshot: {e}")))?;
        tracing::info!(
            revision = snapshot.revision,
            bytes = snapshot.size,
            "sending a snapshot to a client"
        );
        let header = self.node.header(snapshot.revision);
        let stream =
            tokio_stream::wrappers::ReceiverStream::new(snapshot.chunks).map(move |chunk| {
                match chunk {
                    Ok(chunk) => Ok(SnapshotResponse {
                        header: Some(header),
                        remaining_bytes: chunk.remaining,
                        blob: chunk.data,
                    }),
                    Err(e) => Err(Status::internal(format!("snapshot: {e}"))),
                }
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn move_leader(
        &self,
        req: Request<MoveLeaderRequest>,
    ) -> Result<Response<MoveLeaderResponse>, Status> {
        let target = req.into_inner().target_id;
        let limit = std::time::Duration::from_millis(5 * self.node.config.election_timeout);
        crate::raft::membership::move_leader(&self.node.raft, target, limit).await?;
        Ok(Response::new(MoveLeaderResponse {
            header: Some(self.node.header(self.node.store.current_revision())),
        }))
    }

    async fn downgrade(
        &self,
        _req: Request<DowngradeRequest>,
    ) -> Result<Response<DowngradeResponse>, Status> {
        Err(unimplemented("Maintenance.Downgrade"))
    }
}
