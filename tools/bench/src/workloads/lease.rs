//! `lease-keepalive`: each client grants one lease and measures keep-alive round trips on its
//! own keep-alive stream (etcd's `lease-keepalive`).

use kvstore_proto::etcdserverpb::lease_client::LeaseClient;
use kvstore_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseKeepAliveResponse,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Streaming;

use crate::error::{Error, Result};
use crate::runner::Client;

/// TTL of the benchmark's leases: long enough never to expire during a run.
const TTL_SECS: i64 = 60;

/// One lease and its keep-alive stream.
pub struct KeepAliveClient {
    id: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

impl KeepAliveClient {
    /// Grants a lease and opens its keep-alive stream.
    pub async fn new(channel: Channel) -> Result<KeepAliveClient> {
        let mut lease = LeaseClient::new(channel);
        let id = lease
            .lease_grant(LeaseGrantRequest {
                ttl: TTL_SECS,
                id: 0,
            })
            .await?
            .into_inner()
            .id;
        let (requests, rx) = mpsc::channel(4);
        // One keep-alive is queued before the call: a Go gRPC server (etcd) sends the response
        // headers only with its first message.
        requests
            .send(LeaseKeepAliveRequest { id })
            .await
            .map_err(|_| Error::Setup("keep-alive stream closed".into()))?;
        let mut responses = lease
            .lease_keep_alive(ReceiverStream::new(rx))
            .await?
            .into_inner();
        responses
            .message()
            .await?
            .ok_or_else(|| Error::Setup("keep-alive stream ended".into()))?;
        Ok(KeepAliveClient {
            id,
            requests,
            responses,
        })
    }
}

impl Client for KeepAliveClient {
    async fn op(&mut self, _n: u64) -> Result<&'static str, tonic::Status> {
        self.requests
            .send(LeaseKeepAliveRequest { id: self.id })
            .await
            .map_err(|_| tonic::Status::unavailable("keep-alive stream closed"))?;
        let resp = self
            .responses
            .message()
            .await?
            .ok_or_else(|| tonic::Status::unavailable("keep-alive stream ended"))?;
        if resp.ttl <= 0 {
            return Err(tonic::Status::not_found("lease expired or revoked"));
        }
        Ok("keepalive")
    }
}
