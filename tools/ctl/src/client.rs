//! Connecting to the cluster, and running requests under the command timeout.
//!
//! kvctl connects to the first endpoint (in the order given) that accepts a connection
//! within `--dial-timeout`, and bounds every unary request by `--command-timeout`, like
//! etcdctl. Failures carry etcdctl's wording: a request that runs out of time, or a cluster
//! none of whose endpoints answer, is `context deadline exceeded`; an etcd error is its
//! message (`etcdserver: ...`); anything else is gRPC's `rpc error: code = ... desc = ...`.

use std::future::Future;
use std::time::Duration;

use kvstore_proto::etcdserverpb::{
    cluster_client::ClusterClient, kv_client::KvClient, lease_client::LeaseClient,
    maintenance_client::MaintenanceClient, watch_client::WatchClient,
};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

use crate::error::RpcError;

/// What etcdctl reports when a request or a connection runs out of time.
pub const DEADLINE_EXCEEDED: &str = "context deadline exceeded";

/// How long to wait between connection attempts in [`Client::connect_until`].
const RETRY_DELAY: Duration = Duration::from_millis(100);

/// Where and how patiently to connect: the resolved global flags.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Endpoints as the user gave them (`host:port` or a URL).
    pub endpoints: Vec<String>,
    /// How long to wait for a connection to one endpoint.
    pub dial_timeout: Duration,
    /// How long to wait for one unary request.
    pub command_timeout: Duration,
}

/// A connection to one member, and the timeout for requests on it.
#[derive(Debug, Clone)]
pub struct Client {
    /// The connection; cheap to clone into each service's client.
    channel: Channel,
    /// How long each unary request may take.
    command_timeout: Duration,
}

/// The URL to dial for an endpoint: etcdctl accepts `host:port` as well as `http://host:port`.
pub fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Client {
    /// Connects to the first of `settings.endpoints` that answers within the dial timeout.
    pub async fn connect(settings: &Settings) -> Result<Self, RpcError> {
        for endpoint in &settings.endpoints {
            if let Ok(client) = Self::connect_one(endpoint, settings).await {
                return Ok(client);
            }
        }
        Err(RpcError(DEADLINE_EXCEEDED.into()))
    }

    /// Connects to `endpoint` only (for commands that address each member in turn).
    pub async fn connect_one(endpoint: &str, settings: &Settings) -> Result<Self, RpcError> {
        let deadline = RpcError(DEADLINE_EXCEEDED.into());
        let target = Endpoint::from_shared(endpoint_url(endpoint))
            .map_err(|e| RpcError(format!("invalid endpoint {endpoint}: {e}")))?
            .connect_timeout(settings.dial_timeout)
            .tcp_nodelay(true)
            // etcdctl's keepalive (gRPC clamps its 2s to the 10s minimum).
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(6));
        let channel = tokio::time::timeout(settings.dial_timeout, target.connect())
            .await
            .map_err(|_| deadline.clone())?
            .map_err(|_| deadline)?;
        Ok(Self {
            channel,
            command_timeout: settings.command_timeout,
        })
    }

    /// Connects to `endpoint`, trying again until `deadline`, as a gRPC channel keeps
    /// reconnecting while a request waits: a member that is down costs the whole timeout,
    /// as it does with etcdctl (used where that timing shapes the output).
    pub async fn connect_until(
        endpoint: &str,
        settings: &Settings,
        deadline: tokio::time::Instant,
    ) -> Result<Self, RpcError> {
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let attempt = Settings {
                dial_timeout: settings.dial_timeout.min(left),
                ..settings.clone()
            };
            match Self::connect_one(endpoint, &attempt).await {
                Ok(client) => return Ok(client),
                Err(e) if tokio::time::Instant::now() + RETRY_DELAY >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(RETRY_DELAY).await,
            }
        }
    }

    /// The KV service.
    pub fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// The Watch service.
    pub fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// The Lease service.
    pub fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// The Cluster service.
    pub fn cluster(&self) -> ClusterClient<Channel> {
        ClusterClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// The Maintenance service.
    pub fn maintenance(&self) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel.clone()).max_decoding_message_size(usize::MAX)
    }

    /// Runs one unary request, giving up after the command timeout.
    pub async fn unary<T, F>(&self, request: F) -> Result<T, RpcError>
    where
        F: Future<Output = Result<tonic::Response<T>, Status>>,
    {
        match tokio::time::timeout(self.command_timeout, request).await {
            Err(_) => Err(RpcError(DEADLINE_EXCEEDED.into())),
            Ok(Err(status)) => Err(rpc_error(&status)),
            Ok(Ok(resp)) => Ok(resp.into_inner()),
        }
    }
}

/// The message etcdctl prints for a failed request: etcd's own error text when the server
/// sent one (they all start `etcdserver: `), otherwise Go gRPC's rendering of the status.
pub fn rpc_error(status: &Status) -> RpcError {
    let message = status.message();
    if message.starts_with("etcdserver: ") {
        return RpcError(message.to_string());
    }
    RpcError(format!(
        "rpc error: code = {} desc = {message}",
        code_name(status.code())
    ))
}

/// Go gRPC's name for a status code.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "Canceled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_without_scheme_are_http() {
        assert_eq!(endpoint_url("127.0.0.1:2379"), "http://127.0.0.1:2379");
        assert_eq!(endpoint_url("http://a:1"), "http://a:1");
    }

    #[test]
    fn etcd_errors_print_their_own_text() {
        let s = Status::out_of_range("etcdserver: mvcc: required revision has been compacted");
        assert_eq!(
            rpc_error(&s).0,
            "etcdserver: mvcc: required revision has been compacted"
        );
        let other = Status::unavailable("connection reset");
        assert_eq!(
            rpc_error(&other).0,
            "rpc error: code = Unavailable desc = connection reset"
        );
    }
}
