//! Consistency checks between members (etcd's corruption checker, `etcdserver/corrupt.go`).
//!
//! Members apply the same log, so at the same revision their HashKV must be equal; a difference
//! means one member's data was damaged (a disk, a bug, a hand edit). Two checks, as in etcd 3.4:
//!
//! - **initial** (`--experimental-initial-corrupt-check`): before serving clients, a member
//!   hashes its own history and asks every peer for its HashKV at the same revision; on a
//!   mismatch it refuses to start ("found data inconsistency with peers").
//! - **periodic** (`--experimental-corrupt-check-time`): the leader does the same comparison
//!   every interval and, for a peer whose hash differs at the same compacted revision, proposes
//!   `Alarm(ACTIVATE, CORRUPT)` for that peer through Raft; every member then refuses writes with
//!   `etcdserver: corrupt cluster` until the alarm is disarmed.
//!
//! A peer behind the revision asked (`FutureRevision`) or compacted differently cannot be
//! compared this round and is skipped with a warning, as etcd does. Peers are asked over their
//! advertised client URLs with Maintenance.HashKV (etcd uses a peer-URL endpoint; the answer is
//! the same).

use std::sync::Arc;
use std::time::Duration;

use kvstore_proto::etcdserverpb::{
    alarm_request::AlarmAction, maintenance_client::MaintenanceClient, AlarmRequest, AlarmType,
    HashKvRequest, HashKvResponse,
};

use crate::apply::Command;
use crate::mvcc::hash::KvHash;
use crate::node::Node;
use crate::Error;

/// How long one peer gets to answer a HashKV.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// What comparing this member's hash with one peer's found.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Same hash at the same revision.
    Agree,
    /// Different hash at the same revision and compacted revision.
    Mismatch,
    /// Not comparable this time (unreachable, behind, compacted differently).
    Skipped,
}

/// The peer's answer, or why there is none.
struct PeerHash {
    /// The peer's member ID.
    id: u64,
    /// Its HashKV at the revision asked, or the error.
    answer: Result<HashKvResponse, String>,
}

fn judge(own: &KvHash, rev: i64, peer: &PeerHash) -> Verdict {
    match &peer.answer {
        Ok(resp) if resp.hash == own.hash => Verdict::Agree,
        Ok(resp) if resp.compact_revision == own.compact_revision => {
            tracing::error!(
                local_hash = own.hash,
                remote_peer_id = %format!("{:x}", peer.id),
                remote_hash = resp.hash,
                revision = rev,
                compact_revision = own.compact_revision,
                "found hash mismatch with peer"
            );
            Verdict::Mismatch
        }
        Ok(resp) => {
            tracing::warn!(
                remote_peer_id = %format!("{:x}", peer.id),
                local_compact_revision = own.compact_revision,
                remote_compact_revision = resp.compact_revision,
                "cannot check hash of peer: peer has a different compact revision"
            );
            Verdict::Skipped
        }
        Err(why) => {
            tracing::warn!(remote_peer_id = %format!("{:x}", peer.id), revision = rev, cause = %why,
                "cannot fetch hash from peer");
            Verdict::Skipped
        }
    }
}

/// This member's HashKV at its current revision (on a blocking thread).
async fn own_hash(node: &Node) -> Result<KvHash, Error> {
    let store = Arc::clone(&node.store);
    tokio::task::spawn_blocking(move || store.hash_kv(0))
        .await
        .map_err(|e| Error::Internal(format!("hash task: {e}")))?
        .map_err(Error::from)
}

/// Every other voter's and learner's HashKV at `rev`, asked concurrently over their published
/// client URLs.
async fn peer_hashes(node: &Node, rev: i64) -> Vec<PeerHash> {
    let published = match crate::membership::published_attributes(node.store.backend()) {
        Ok(p) => p,
        Err(err) => {
            tracing::warn!(cause = %err, "cannot read the members' client URLs");
            return Vec::new();
        }
    };
    let members: Vec<u64> = {
        let metrics = node.raft.metrics();
        let m = metrics.borrow();
        m.membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect()
    };
    let asks = members
        .into_iter()
        .filter(|id| *id != node.membership.member_id)
        .map(|id| {
            let url = published
                .get(&id)
                .and_then(|a| a.client_urls.first().cloned());
            async move {
                let answer = match url {
                    Some(url) => ask(url, rev).await,
                    None => Err("client URL not published yet".to_string()),
                };
                PeerHash { id, answer }
            }
        });
    futures::future::join_all(asks).await
}

async fn ask(url: String, rev: i64) -> Result<HashKvResponse, String> {
    let channel = tonic::transport::Channel::from_shared(url)
        .map_err(|e| e.to_string())?
        .connect_timeout(PEER_TIMEOUT)
        .timeout(PEER_TIMEOUT)
        .connect()
        .await
        .map_err(|e| e.to_string())?;
    MaintenanceClient::new(channel)
        .hash_kv(HashKvRequest { revision: rev })
        .await
        .map(|r| r.into_inner())
        .map_err(|s| s.message().to_string())
}

/// etcd's `CheckInitialHashKV`: fails with [`Error::Corrupt`] if a peer's hash at this member's
/// revision differs. Unreachable or lagging peers are skipped.
pub async fn initial_check(node: &Node) -> Result<(), Error> {
    if !node.config.experimental_initial_corrupt_check {
        return Ok(());
    }
    let own = own_hash(node).await?;
    let rev = own.current_revision;
    let peers = peer_hashes(node, rev).await;
    let mismatches = peers
        .iter()
        .filter(|p| judge(&own, rev, p) == Verdict::Mismatch)
        .count();
    if mismatches > 0 {
        tracing::error!(
            local_member_id = %format!("{:x}", node.membership.member_id),
            "found data inconsistency with peers"
        );
        eprintln!(
            "kvstore: {:x} found data inconsistency with peers",
            node.membership.member_id
        );
        return Err(Error::Corrupt);
    }
    tracing::info!(
        revision = rev,
        "initial corruption check passed: no corruption"
    );
    Ok(())
}

/// Starts the leader's periodic check if `--experimental-corrupt-check-time` is set.
pub fn spawn_periodic(node: Arc<Node>) {
    let every = node.config.experimental_corrupt_check_time;
    if every.is_zero() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = node.shutdown.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if node.proposer.leader() != Some(node.membership.member_id) {
                continue;
            }
            if let Err(err) = periodic_check(&node).await {
                tracing::warn!(cause = %err, "corruption check failed; will retry");
            }
        }
    });
}

/// One round of the leader's check: raise CORRUPT for each peer whose hash differs.
async fn periodic_check(node: &Node) -> Result<(), Error> {
    let own = own_hash(node).await?;
    let rev = own.current_revision;
    for peer in peer_hashes(node, rev).await {
        if judge(&own, rev, &peer) != Verdict::Mismatch
            || node.alarms.is_active(Some(peer.id), AlarmType::Corrupt)
        {
            continue;
        }
        let raise = Command::Alarm(AlarmRequest {
            action: AlarmAction::Activate as i32,
            member_id: peer.id,
            alarm: AlarmType::Corrupt as i32,
        });
        node.proposer.propose(raise).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(hash: u32, compact_revision: i64) -> PeerHash {
        PeerHash {
            id: 7,
            answer: Ok(HashKvResponse {
                header: None,
                hash,
                compact_revision,
            }),
        }
    }

    #[test]
    fn only_a_different_hash_at_the_same_compaction_is_a_mismatch() {
        let own = KvHash {
            hash: 1,
            current_revision: 10,
            compact_revision: 4,
        };
        assert_eq!(judge(&own, 10, &peer(1, 4)), Verdict::Agree);
        assert_eq!(judge(&own, 10, &peer(2, 4)), Verdict::Mismatch);
        assert_eq!(judge(&own, 10, &peer(2, 5)), Verdict::Skipped);
        let unreachable = PeerHash {
            id: 7,
            answer: Err("connection refused".into()),
        };
        assert_eq!(judge(&own, 10, &unreachable), Verdict::Skipped);
    }
}
