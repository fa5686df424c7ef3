//! The storage layer: Kubernetes' storage contract over the etcd v3 gRPC API.
//!
//! The apiserver is the store's only client and uses nothing but the etcd v3 `KV` and `Watch`
//! services, so the same code runs against kvstore and against real etcd. The contract is
//! kube-apiserver's `storage/etcd3` one:
//! - an object lives at one key; its `resourceVersion` is the key's `mod_revision`;
//! - create is a txn guarded by `create_revision == 0`, so two creators cannot both win;
//! - update and delete are txns guarded by the `mod_revision` the caller read, so a writer that
//!   read stale data gets a conflict instead of overwriting someone else's change;
//! - a list is one range read at one revision; the next page reads at that same revision.
//!
//! Several endpoints may be given; a request that fails with a transport error or
//! `Unavailable` moves on to the next endpoint (the member may be down or partitioned).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use kvstore_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use kvstore_proto::etcdserverpb::kv_client::KvClient;
use kvstore_proto::etcdserverpb::request_op::Request;
use kvstore_proto::etcdserverpb::response_op::Response;
use kvstore_proto::etcdserverpb::watch_client::WatchClient;
use kvstore_proto::etcdserverpb::{
    watch_request, Compare, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp, TxnRequest,
    WatchCreateRequest, WatchRequest, WatchResponse,
};
use kvstore_proto::mvccpb::KeyValue;
use tonic::transport::{Channel, Endpoint};

/// What can go wrong talking to the store; mapped to Kubernetes `Status` errors in `error.rs`.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A create found the key already present.
    #[error("key already exists")]
    AlreadyExists,
    /// A guarded update or delete found a different `mod_revision` (or no key at all).
    #[error("mod revision mismatch")]
    Conflict { current: Option<Kv> },
    /// The key is not there.
    #[error("key not found")]
    NotFound,
    /// The revision asked for has been compacted away.
    #[error("required revision has been compacted (compacted up to {0})")]
    Compacted(i64),
    /// The revision asked for is in the future.
    #[error("required revision is a future revision")]
    FutureRevision,
    /// No endpoint answered.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),
    /// An endpoint URL could not be parsed.
    #[error("invalid etcd server URL {0:?}")]
    BadEndpoint(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One stored object as the store returned it.
#[derive(Debug, Clone)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub mod_revision: i64,
    pub create_revision: i64,
}

impl From<KeyValue> for Kv {
    fn from(kv: KeyValue) -> Self {
        Kv {
            key: kv.key,
            value: kv.value,
            mod_revision: kv.mod_revision,
            create_revision: kv.create_revision,
        }
    }
}

/// The result of one range read.
#[derive(Debug)]
pub struct Page {
    pub kvs: Vec<Kv>,
    /// More keys follow the last one returned.
    pub more: bool,
    /// The revision the read was served at.
    pub revision: i64,
}

/// A connection to the store's members with failover between them.
#[derive(Debug)]
pub struct Store {
    /// One lazily connected channel per endpoint, in the order given.
    channels: Vec<(String, Channel)>,
    /// The endpoint tried first; moved on when it fails.
    current: AtomicUsize,
}

/// Turns `127.0.0.1:2379` or `http://127.0.0.1:2379` into a URL tonic accepts.
fn endpoint_url(raw: &str) -> String {
    if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    }
}

/// The first key after every key that starts with `prefix` (etcd's `range_end` for a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Largest store response accepted: well above etcd's 1.5 MiB value limit times the 1000 keys
/// a list chunk reads, so no single gRPC message of ours can be refused for size.
const MAX_MESSAGE: usize = 256 << 20;

fn kv_client(ch: Channel) -> KvClient<Channel> {
    KvClient::new(ch).max_decoding_message_size(MAX_MESSAGE)
}

fn is_retryable(status: &tonic::Status) -> bool {
    matches!(
        status.code(),
        tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
    ) || status.message().contains("leader")
        || status.message().contains("timed out")
}

fn classify(status: tonic::Status) -> StoreError {
    let msg = status.message();
    if msg.contains("compacted") {
        StoreError::Compacted(0)
    } else if msg.contains("future revision") {
        StoreError::FutureRevision
    } else {
        StoreError::Unavailable(format!("{:?}: {}", status.code(), msg))
    }
}

impl Store {
    /// Prepares channels to every endpoint (`--etcd-servers`); connects lazily.
    pub fn new(endpoints: &[String]) -> Result<Self> {
        let mut channels = Vec::new();
        for raw in endpoints {
            let url = endpoint_url(raw.trim());
            let ep = Endpoint::from_shared(url.clone())
                .map_err(|_| StoreError::BadEndpoint(raw.clone()))?
                .connect_timeout(Duration::from_secs(2))
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(10))
                .keep_alive_timeout(Duration::from_secs(5));
            channels.push((url, ep.connect_lazy()));
        }
        if channels.is_empty() {
            return Err(StoreError::BadEndpoint(String::new()));
        }
        Ok(Store {
            channels,
            current: AtomicUsize::new(0),
        })
    }

    /// The endpoint URLs, for logs and `/readyz`.
    pub fn endpoints(&self) -> Vec<String> {
        self.channels.iter().map(|(u, _)| u.clone()).collect()
    }

    /// Runs `op` against the current endpoint, moving to the next on transport failures.
    /// Each endpoint gets two tries; a short pause between rounds lets an election finish.
    async fn with_failover<T, F, Fut>(&self, op: F) -> Result<T>
    where
        F: Fn(Channel) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, tonic::Status>>,
    {
        let n = self.channels.len();
        let mut last = String::new();
        for attempt in 0..(2 * n + 2) {
            let idx = self.current.load(Ordering::Relaxed) % n;
            let ch = self.channels[idx].1.clone();
            match tokio::time::timeout(Duration::from_secs(10), op(ch)).await {
                Ok(Ok(v)) => return Ok(v),
                Ok(Err(status)) if !is_retryable(&status) => return Err(classify(status)),
                Ok(Err(status)) => last = format!("{}: {}", self.channels[idx].0, status.message()),
                Err(_) => last = format!("{}: request timed out", self.channels[idx].0),
            }
            tracing::debug!(endpoint = %self.channels[idx].0, cause = %last, "store request failed; trying the next endpoint");
            let _ = self.current.compare_exchange(
                idx,
                (idx + 1) % n,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            if attempt % n == n - 1 {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        Err(StoreError::Unavailable(last))
    }

    /// The channel of the current endpoint (for watches, which manage their own retries).
    pub fn channel(&self, rotate: bool) -> (String, Channel) {
        let n = self.channels.len();
        let idx = if rotate {
            self.current.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            self.current.load(Ordering::Relaxed)
        } % n;
        self.channels[idx].clone()
    }

    /// Reads one key at the latest revision.
    pub async fn get(&self, key: &str) -> Result<(Option<Kv>, i64)> {
        let key = key.as_bytes().to_vec();
        let resp = self
            .with_failover(|ch| {
                let req = RangeRequest {
                    key: key.clone(),
                    ..Default::default()
                };
                async move { kv_client(ch).range(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        let rev = resp.header.map(|h| h.revision).unwrap_or(0);
        Ok((resp.kvs.into_iter().next().map(Kv::from), rev))
    }

    /// Reads keys in `[start, end)`, at most `limit` (0 = all), at `revision` (0 = latest).
    pub async fn range(&self, start: &[u8], end: &[u8], limit: i64, revision: i64) -> Result<Page> {
        let resp = self
            .with_failover(|ch| {
                let req = RangeRequest {
                    key: start.to_vec(),
                    range_end: end.to_vec(),
                    limit,
                    revision,
                    ..Default::default()
                };
                async move { kv_client(ch).range(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(Page {
            revision: resp.header.map(|h| h.revision).unwrap_or(0),
            more: resp.more,
            kvs: resp.kvs.into_iter().map(Kv::from).collect(),
        })
    }

    /// The store's current revision (a cheap count-only read).
    pub async fn current_revision(&self) -> Result<i64> {
        let resp = self
            .with_failover(|ch| {
                let req = RangeRequest {
                    key: b"/registry/".to_vec(),
                    range_end: prefix_end(b"/registry/"),
                    count_only: true,
                    ..Default::default()
                };
                async move { kv_client(ch).range(req).await.map(|r| r.into_inner()) }
            })
            .await?;
        Ok(resp.header.map(|h| h.revision).unwrap_or(0))
    }

    async fn txn(&self, req: TxnRequest) -> Result<kvstore_proto::etcdserverpb::TxnResponse> {
        self.with_failover(|ch| {
            let req = req.clone();
            async move { kv_client(ch).txn(req).await.map(|r| r.into_inner()) }
        })
        .await
    }

    /// Creates `key` only if it does not exist; returns the new revision.
    pub async fn create(&self, key: &str, value: Vec<u8>) -> Result<i64> {
        let key = key.as_bytes().to_vec();
        let req = TxnRequest {
            compare: vec![guard(&key, CompareTarget::Create, 0)],
            success: vec![put_op(&key, value)],
            failure: vec![],
        };
        let resp = self.txn(req).await?;
        if !resp.succeeded {
            return Err(StoreError::AlreadyExists);
        }
        Ok(resp.header.map(|h| h.revision).unwrap_or(0))
    }

    /// Replaces `key` only if its mod_revision is still `expected`; returns the new revision.
    pub async fn update(&self, key: &str, value: Vec<u8>, expected: i64) -> Result<i64> {
        let key = key.as_bytes().to_vec();
        let req = TxnRequest {
            compare: vec![guard(&key, CompareTarget::Mod, expected)],
            success: vec![put_op(&key, value)],
            failure: vec![range_op(&key)],
        };
        let resp = self.txn(req).await?;
        if !resp.succeeded {
            return Err(failure_current(resp.responses));
        }
        Ok(resp.header.map(|h| h.revision).unwrap_or(0))
    }

    /// Deletes `key` only if its mod_revision is still `expected`; returns the deletion revision.
    pub async fn delete(&self, key: &str, expected: i64) -> Result<i64> {
        let key = key.as_bytes().to_vec();
        let req = TxnRequest {
            compare: vec![guard(&key, CompareTarget::Mod, expected)],
            success: vec![RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: key.clone(),
                    ..Default::default()
                })),
            }],
            failure: vec![range_op(&key)],
        };
        let resp = self.txn(req).await?;
        if !resp.succeeded {
            return Err(failure_current(resp.responses));
        }
        Ok(resp.header.map(|h| h.revision).unwrap_or(0))
    }

    /// Opens a watch on `[start, end)` from `start_revision` with previous values.
    /// Returns the response stream; the caller handles compaction and cancellation.
    pub async fn watch(
        &self,
        start: &[u8],
        end: &[u8],
        start_revision: i64,
    ) -> Result<(
        tokio::sync::mpsc::Sender<WatchRequest>,
        tonic::Streaming<WatchResponse>,
    )> {
        let n = self.channels.len();
        let mut last = String::new();
        for i in 0..(2 * n) {
            let (url, ch) = self.channel(i > 0);
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let create = WatchRequest {
                request_union: Some(watch_request::RequestUnion::CreateRequest(
                    WatchCreateRequest {
                        key: start.to_vec(),
                        range_end: end.to_vec(),
                        start_revision,
                        prev_kv: true,
                        progress_notify: true,
                        ..Default::default()
                    },
                )),
            };
            if tx.send(create).await.is_err() {
                continue;
            }
            let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
            let mut client = WatchClient::new(ch).max_decoding_message_size(MAX_MESSAGE);
            match tokio::time::timeout(Duration::from_secs(5), client.watch(stream)).await {
                Ok(Ok(resp)) => return Ok((tx, resp.into_inner())),
                Ok(Err(status)) => last = format!("{url}: {}", status.message()),
                Err(_) => last = format!("{url}: watch open timed out"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(StoreError::Unavailable(last))
    }
}

fn guard(key: &[u8], target: CompareTarget, value: i64) -> Compare {
    let union = match target {
        CompareTarget::Create => TargetUnion::CreateRevision(value),
        _ => TargetUnion::ModRevision(value),
    };
    Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: key.to_vec(),
        range_end: vec![],
        target_union: Some(union),
    }
}

fn put_op(key: &[u8], value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key: key.to_vec(),
            value,
            ..Default::default()
        })),
    }
}

fn range_op(key: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key: key.to_vec(),
            ..Default::default()
        })),
    }
}

/// The error for a failed guarded txn: NotFound if the key is gone, else Conflict.
fn failure_current(responses: Vec<kvstore_proto::etcdserverpb::ResponseOp>) -> StoreError {
    let current = responses.into_iter().find_map(|r| match r.response {
        Some(Response::ResponseRange(rr)) => rr.kvs.into_iter().next().map(Kv::from),
        _ => None,
    });
    match current {
        None => StoreError::NotFound,
        Some(kv) => StoreError::Conflict { current: Some(kv) },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_increments_last_byte() {
        assert_eq!(prefix_end(b"/registry/pods/"), b"/registry/pods0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), vec![b'b']);
    }
}
