//! Connections: `--conns` HTTP/2 connections over the endpoints (or the leader alone), which
//! the clients share round-robin, as etcd's benchmark does: raw links ([`KvLink`]) for the
//! unary KV calls and fan-out watch streams, tonic channels for the other streaming calls. A
//! workload opens only the kind it uses.

use kvstore_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use kvstore_proto::etcdserverpb::StatusRequest;
use tonic::transport::{Channel, Endpoint};

use crate::cli::Common;
use crate::error::{Error, Result};
use crate::kv_link::KvLink;

/// `host:port` → `http://host:port`; URLs pass through.
fn endpoint_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// Opens one connection (each `connect` is its own TCP connection).
pub async fn connect(endpoint: &str) -> Result<Channel> {
    Endpoint::from_shared(endpoint_url(endpoint))
        .map_err(|_| Error::Endpoint(endpoint.to_string()))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|source| Error::Connect {
            endpoint: endpoint.to_string(),
            source,
        })
}

/// How long to keep asking for a leader: a cluster that just started (or just lost its
/// leader) may answer reads before every member reports the new leader in its status.
const FIND_LEADER_FOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The endpoint whose member is the leader, asking each in turn until one says it leads.
pub async fn find_leader(endpoints: &[String]) -> Result<String> {
    let deadline = tokio::time::Instant::now() + FIND_LEADER_FOR;
    loop {
        if let Some(endpoint) = leader_now(endpoints).await {
            return Ok(endpoint);
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Error::NoLeader);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The endpoint that reports itself as leader right now, if any.
async fn leader_now(endpoints: &[String]) -> Option<String> {
    for endpoint in endpoints {
        let Ok(channel) = connect(endpoint).await else {
            continue;
        };
        let Ok(status) = MaintenanceClient::new(channel)
            .status(StatusRequest {})
            .await
        else {
            continue;
        };
        let status = status.into_inner();
        let member = status.header.map(|h| h.member_id).unwrap_or_default();
        if member != 0 && member == status.leader {
            return Some(endpoint.clone());
        }
    }
    None
}

/// The endpoints to connect to: `--endpoints`, or the leader alone with `--target-leader`.
pub async fn targets(common: &Common) -> Result<Vec<String>> {
    if common.endpoints.is_empty() {
        return Err(Error::Usage("--endpoints is empty".into()));
    }
    if common.target_leader {
        Ok(vec![find_leader(&common.endpoints).await?])
    } else {
        Ok(common.endpoints.clone())
    }
}

/// The `--conns` channels, round-robin over `targets`.
pub async fn connections(common: &Common, targets: &[String]) -> Result<Vec<Channel>> {
    let mut channels = Vec::with_capacity(common.conns.max(1));
    for i in 0..common.conns.max(1) {
        channels.push(connect(&targets[i % targets.len()]).await?);
    }
    Ok(channels)
}

/// The `--conns` raw links, round-robin over `targets`.
pub async fn links(common: &Common, targets: &[String]) -> Result<Vec<KvLink>> {
    let mut links = Vec::with_capacity(common.conns.max(1));
    for i in 0..common.conns.max(1) {
        let endpoint = &targets[i % targets.len()];
        links.push(KvLink::connect(endpoint, &endpoint_url(endpoint)).await?);
    }
    Ok(links)
}
