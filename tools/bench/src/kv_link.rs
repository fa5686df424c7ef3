//! The unary KV calls of the workloads (put, range, txn), each written straight onto a raw
//! HTTP/2 connection ([`grpc_link::Link`]) instead of going through tonic's channel.
//!
//! Through the channel a request passes its buffer task, hyper's dispatch task and a task of
//! hyper's that pipes the body, before the connection task writes it: at 256 clients the client
//! used 22–26 µs of CPU per put, as much as half of what kvstore's three members used, taken
//! from the servers it measures on the same two cores; over links it uses 13–15 µs
//! (docs/benchmarks.md). The link sends HEADERS and DATA from the caller's task, in one write.
//! The servers get the same calls either way (no `grpc-timeout` is sent, as before). Streaming
//! calls (watch, lease keep-alive) and the `kube` workload's calls stay on tonic.

use std::sync::Arc;
use std::time::Duration;

use grpc_link::Link;
use kvstore_proto::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse,
};
use tonic::Status;

/// Longest a TCP connect may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest reply accepted (a range of a whole preloaded key space fits).
const MAX_REPLY_BYTES: usize = 256 << 20;

/// One raw HTTP/2 connection's KV calls; clones share the connection.
#[derive(Clone)]
pub struct KvLink {
    link: Arc<Link>,
}

impl KvLink {
    /// A link to `url` (`http://host:port`), connected at once; `None` if the URL is not one.
    pub async fn connect(url: &str) -> Option<Result<KvLink, Status>> {
        let link = Arc::new(Link::new(url, CONNECT_TIMEOUT, MAX_REPLY_BYTES)?);
        Some(link.connect().await.map(|()| KvLink { link }))
    }

    /// `KV.Put`.
    pub async fn put(&self, request: PutRequest) -> Result<PutResponse, Status> {
        self.link
            .unary("/etcdserverpb.KV/Put", &request, &[], None)
            .await
    }

    /// `KV.Range`.
    pub async fn range(&self, request: RangeRequest) -> Result<RangeResponse, Status> {
        self.link
            .unary("/etcdserverpb.KV/Range", &request, &[], None)
            .await
    }

    /// `KV.Txn`.
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, Status> {
        self.link
            .unary("/etcdserverpb.KV/Txn", &request, &[], None)
            .await
    }
}
