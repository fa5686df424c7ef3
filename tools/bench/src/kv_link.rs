//! The unary KV calls of the workloads (put, range, txn), each written straight onto a raw
//! HTTP/2 connection ([`grpc_link::Link`]) instead of going through tonic's channel.
//!
//! Through the channel a request passes its buffer task, hyper's dispatch task and a task of
//! hyper's that pipes the body, before the connection task writes it: at 256 clients the client
//! used 22–26 µs of CPU per put, as much as half of what kvstore's three members used, taken
//! from the servers it measures on the same two cores; over links it uses less
//! (12–17 µs in the 2026-12-05 runs, docs/benchmarks.md). The link sends HEADERS and DATA from the caller's task, in one write.
//! The servers get the same calls either way (no `grpc-timeout` is sent, as before). The
//! `watch` and `watch-latency` workloads open their watch streams on the links too (their
//! readers decode hundreds of thousands of events per second on the servers' cores); the idle
//! watchers of `watch-hold`, lease keep-alives and the `kube` workload's calls stay on tonic.

use std::sync::Arc;
use std::time::Duration;

use grpc_link::{Link, Reader, Sender};
use kvstore_proto::etcdserverpb::{
    PutRequest, PutResponse, RangeRequest, RangeResponse, TxnRequest, TxnResponse, WatchRequest,
};
use tonic::Status;

use crate::error::{Error, Result};

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
    /// A link to `endpoint` (as given in `--endpoints`) at `url` (`http://host:port`),
    /// connected at once.
    pub async fn connect(endpoint: &str, url: &str) -> Result<KvLink> {
        let link = Link::new(url, CONNECT_TIMEOUT, MAX_REPLY_BYTES)
            .ok_or_else(|| Error::Endpoint(endpoint.to_string()))?;
        link.connect().await.map_err(|status| Error::Link {
            endpoint: endpoint.to_string(),
            status,
        })?;
        Ok(KvLink {
            link: Arc::new(link),
        })
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

    /// A `Watch.Watch` stream, opened with `creates` sent on it.
    pub async fn watch(&self, creates: &[WatchRequest]) -> Result<(Sender, Reader), Status> {
        self.link.stream("/etcdserverpb.Watch/Watch", creates).await
    }

    /// `KV.Txn`.
    pub async fn txn(&self, request: TxnRequest) -> Result<TxnResponse, Status> {
        self.link
            .unary("/etcdserverpb.KV/Txn", &request, &[], None)
            .await
    }
}
