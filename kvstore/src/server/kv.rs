//! The KV service: Range, Put, DeleteRange, Txn, Compact.
//!
//! Reads are served from this member's store (after a read barrier unless serializable);
//! writes are validated here, so bad input never reaches the log, then proposed.

use std::sync::Arc;

use kvstore_proto::etcdserverpb::request_op::Request as Op;
use kvstore_proto::etcdserverpb::{
    kv_server::Kv, CompactionRequest, CompactionResponse, DeleteRangeRequest, DeleteRangeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::{Request, Response, Status};

use crate::apply::{Applied, Command};
use crate::mvcc::{txn::is_read_only, validate};
use crate::node::Node;

/// The KV service of one member.
pub struct KvService {
    /// The member serving.
    node: Arc<Node>,
}

impl KvService {
    /// The KV service over a node.
    pub fn new(node: Arc<Node>) -> Self {
        Self { node }
    }
}

/// Whether every read of a read-only transaction asked for serializable consistency.
fn txn_serializable(req: &TxnRequest) -> bool {
    req.success
        .iter()
        .chain(&req.failure)
        .all(|op| match &op.request {
            Some(Op::RequestRange(r)) => r.serializable,
            Some(Op::RequestTxn(t)) => txn_serializable(t),
            _ => true,
        })
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(&self, req: Request<RangeRequest>) -> Result<Response<RangeResponse>, Status> {
        let req = req.into_inner();
        self.node.metrics.range_total.inc();
        if !req.serializable {
            self.node.refuse_if_learner()?;
            self.node.proposer.read_barrier().await?;
        }
        let mut resp = self.node.store.range(&req)?;
        self.node.fill_header(&mut resp.header);
        Ok(Response::new(resp))
    }

    async fn put(&self, req: Request<PutRequest>) -> Result<Response<PutResponse>, Status> {
        let req = req.into_inner();
        self.node.refuse_if_learner()?;
        validate::put(&req, self.node.store.limits())?;
        crate::quota::check(&self.node, crate::quota::put_cost(&req)).await?;
        self.node.metrics.put_total.inc();
        #[cfg(feature = "fault-injection")]
        if crate::faults::active(crate::faults::Fault::AckBeforeCommit) {
            let proposer = Arc::clone(&self.node.proposer);
            tokio::spawn(async move { proposer.propose(Command::Put(req)).await });
            let mut resp = PutResponse::default();
            self.node.fill_header(&mut resp.header);
            return Ok(Response::new(resp));
        }
        match self.node.proposer.propose(Command::Put(req)).await? {
            Applied::Put(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        req: Request<DeleteRangeRequest>,
    ) -> Result<Response<DeleteRangeResponse>, Status> {
        let req = req.into_inner();
        self.node.refuse_if_learner()?;
        validate::delete_range(&req, self.node.store.limits())?;
        self.node.metrics.delete_total.inc();
        match self
            .node
            .proposer
            .propose(Command::DeleteRange(req))
            .await?
        {
            Applied::DeleteRange(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(&self, req: Request<TxnRequest>) -> Result<Response<TxnResponse>, Status> {
        let req = req.into_inner();
        validate::txn(&req, self.node.store.limits())?;
        self.node.metrics.txn_total.inc();
        if !is_read_only(&req) || !txn_serializable(&req) {
            self.node.refuse_if_learner()?;
        }
        if is_read_only(&req) {
            if !txn_serializable(&req) {
                self.node.proposer.read_barrier().await?;
            }
            let (mut resp, _) = self.node.store.txn_validated(&req)?;
            self.node.fill_header(&mut resp.header);
            return Ok(Response::new(resp));
        }
        crate::quota::check(&self.node, crate::quota::txn_cost(&req)).await?;
        match self.node.proposer.propose(Command::Txn(req)).await? {
            Applied::Txn(mut resp) => {
                self.node.fill_header(&mut resp.header);
                Ok(Response::new(resp))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn compact(
        &self,
        req: Request<CompactionRequest>,
    ) -> Result<Response<CompactionResponse>, Status> {
        self.node.refuse_if_learner()?;
        let req = req.into_inner();
        let physical = req.physical;
        match self.node.proposer.propose(Command::Compact(req)).await? {
            Applied::Compact { mut response, done } => {
                if physical {
                    // The sender is dropped only if the compaction thread died; either way
                    // there is nothing more to wait for.
                    let _ = done.await;
                }
                self.node.fill_header(&mut response.header);
                Ok(Response::new(response))
            }
            other => Err(unexpected(&other)),
        }
    }
}

/// The proposer answered a command with the result of another: a broken invariant, reported
/// to the client instead of panicking the server.
pub(crate) fn unexpected(applied: &Applied) -> Status {
    tracing::error!(?applied, "proposer returned the result of another command");
    Status::internal("kvstore: mismatched apply result")
}
