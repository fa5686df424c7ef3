//! Membership changes as etcd's Cluster API defines them, on openraft: add a member (as a
//! learner, or as a voter), promote a learner once it has caught up, remove a member, update a
//! member's peer URLs. Each runs on the leader; the Cluster service forwards from elsewhere.
//!
//! etcd's rules kept here: peer URLs must be unique; at most one learner; a learner is promoted
//! only when its log matches at least 90 % of the leader's. One difference: etcd salts an added
//! member's ID with the time and the joining process fetches it from the cluster; here the ID
//! is derived from the peer URLs and the cluster token alone (as for bootstrap members), so the
//! joining process (`--initial-cluster-state existing`) computes the same ID by itself.

use std::collections::{BTreeMap, BTreeSet};

use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use super::types::{MemberNode, NodeId, Raft};
use crate::Error;

/// etcd's `maxLearners`.
const MAX_LEARNERS: usize = 1;
/// etcd's `readyPercent`: a learner is ready when its log matches this share of the leader's.
const READY_PERCENT: f64 = 0.9;

/// Checks that every URL is `http(s)://host:port`.
fn check_urls(urls: &[String]) -> Result<(), Error> {
    let valid = |u: &String| {
        let rest = u
            .strip_prefix("http://")
            .or_else(|| u.strip_prefix("https://"));
        rest.and_then(|r| r.trim_end_matches('/').rsplit_once(':'))
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    };
    if urls.is_empty() || !urls.iter().all(valid) {
        return Err(Error::MemberBadUrls);
    }
    Ok(())
}

/// The current membership: every node, and which are voters.
fn current(raft: &Raft) -> (BTreeMap<NodeId, MemberNode>, BTreeSet<NodeId>) {
    let metrics = raft.metrics();
    let m = metrics.borrow();
    let membership = m.membership_config.membership();
    let nodes = membership.nodes().map(|(id, n)| (*id, n.clone())).collect();
    let voters = membership.voter_ids().collect();
    (nodes, voters)
}

/// Maps an openraft membership-change failure to what a client can act on.
fn change_error(err: RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>) -> Error {
    match err {
        RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => Error::LeaderChanged,
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
            Error::Internal(format!("membership change refused: {e}"))
        }
        RaftError::Fatal(_) => Error::Stopped,
    }
}

/// MemberAdd: adds a member with `peer_urls`, as a learner or a voter. Returns its ID.
pub async fn add(
    raft: &Raft,
    token: &str,
    peer_urls: Vec<String>,
    is_learner: bool,
) -> Result<NodeId, Error> {
    check_urls(&peer_urls)?;
    let (nodes, voters) = current(raft);
    let taken: BTreeSet<&String> = nodes.values().flat_map(|n| &n.peer_urls).collect();
    if peer_urls.iter().any(|u| taken.contains(u)) {
        return Err(Error::PeerUrlExists);
    }
    let learners = nodes.keys().filter(|id| !voters.contains(id)).count();
    if is_learner && learners >= MAX_LEARNERS {
        return Err(Error::TooManyLearners);
    }
    let id = crate::membership::member_id(&peer_urls, token);
    let node = MemberNode {
        name: String::new(),
        peer_urls,
        client_urls: Vec::new(),
    };
    // Not blocking: the new member is usually not running yet (etcd adds first, starts after).
    raft.add_learner(id, node, false)
        .await
        .map_err(change_error)?;
    if !is_learner {
        raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
            .await
            .map_err(change_error)?;
    }
    Ok(id)
}

/// MemberPromote: makes a caught-up learner a voter.
pub async fn promote(raft: &Raft, id: NodeId) -> Result<(), Error> {
    let (nodes, voters) = current(raft);
    if !nodes.contains_key(&id) {
        return Err(Error::MemberNotFound);
    }
    if voters.contains(&id) {
        return Err(Error::MemberNotLearner);
    }
    let (leader_index, learner_index) = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        let learner = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&id).copied().flatten())
            .map_or(0, |l| l.index);
        (m.last_log_index.unwrap_or(0), learner)
    };
    if (learner_index as f64) < (leader_index as f64) * READY_PERCENT {
        return Err(Error::LearnerNotReady);
    }
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), true)
        .await
        .map_err(change_error)?;
    Ok(())
}

/// MemberRemove: removes a voter or a learner.
pub async fn remove(raft: &Raft, id: NodeId) -> Result<(), Error> {
    let (nodes, voters) = current(raft);
    if !nodes.contains_key(&id) {
        return Err(Error::MemberNotFound);
    }
    if voters.contains(&id) {
        // First demote it to a learner (`retain`), then drop the node: each step is one
        // committed membership change, so a failure leaves a consistent membership behind.
        raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), true)
            .await
            .map_err(change_error)?;
    }
    raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
        .await
        .map_err(change_error)?;
    Ok(())
}

/// MemberUpdate: replaces a member's peer URLs.
pub async fn update(raft: &Raft, id: NodeId, peer_urls: Vec<String>) -> Result<(), Error> {
    check_urls(&peer_urls)?;
    let (nodes, _) = current(raft);
    let Some(node) = nodes.get(&id) else {
        return Err(Error::MemberNotFound);
    };
    let taken: BTreeSet<&String> = nodes
        .iter()
        .filter(|(other, _)| **other != id)
        .flat_map(|(_, n)| &n.peer_urls)
        .collect();
    if peer_urls.iter().any(|u| taken.contains(u)) {
        return Err(Error::PeerUrlExists);
    }
    let mut node = node.clone();
    node.peer_urls = peer_urls;
    raft.change_membership(ChangeMembers::SetNodes(BTreeMap::from([(id, node)])), true)
        .await
        .map_err(change_error)?;
    Ok(())
}

/// Maintenance.MoveLeader on the leader: hands leadership to voter `target`.
///
/// openraft 0.9 has no leadership transfer, so it is built from what it has: the leader stops
/// sending heartbeats (so the other members' leader leases lapse and they will grant a vote), and
/// asks the target to campaign at once, repeatedly, until the target leads or `limit` passes;
/// then heartbeats resume. The target's log is complete (it is a voter that acknowledged the
/// leader's entries), so no committed entry is lost; at worst another member wins the election.
pub async fn move_leader(
    raft: &Raft,
    target: NodeId,
    limit: std::time::Duration,
) -> Result<(), Error> {
    let (me, leader, node) = {
        let metrics = raft.metrics();
        let m = metrics.borrow();
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|id| id == target);
        let node = membership.get_node(&target).cloned();
        (m.id, m.current_leader, node.filter(|_| is_voter))
    };
    if leader != Some(me) {
        return Err(Error::NotLeader);
    }
    if target == me {
        return Ok(());
    }
    let Some(node) = node else {
        return Err(Error::BadLeaderTransferee);
    };
    let url = node
        .peer_urls
        .first()
        .cloned()
        .ok_or(Error::BadLeaderTransferee)?;
    let channel = tonic::transport::Channel::from_shared(url)
        .map_err(|_| Error::BadLeaderTransferee)?
        .connect_timeout(std::time::Duration::from_secs(1))
        .connect_lazy();
    let mut client = kvstore_proto::raftpb::raft_client::RaftClient::new(channel);

    raft.runtime_config().heartbeat(false);
    let deadline = tokio::time::Instant::now() + limit;
    let mut metrics = raft.metrics();
    let result = loop {
        if metrics.borrow().current_leader == Some(target) {
            break Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            break Err(Error::LeaderTransferTimeout);
        }
        // A campaign refused (leases not lapsed yet) is simply asked for again.
        let _ = client
            .campaign(kvstore_proto::raftpb::CampaignRequest {})
            .await;
        let pause = tokio::time::sleep(std::time::Duration::from_millis(100));
        tokio::select! {
            _ = pause => {}
            _ = metrics.changed() => {}
        }
    };
    raft.runtime_config().heartbeat(true);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_urls_are_refused() {
        for bad in [
            vec![],
            vec!["127.0.0.1:1".to_string()],
            vec!["http://:1".to_string()],
            vec!["http://h:port".to_string()],
        ] {
            assert!(
                matches!(check_urls(&bad), Err(Error::MemberBadUrls)),
                "{bad:?}"
            );
        }
        assert!(check_urls(&["http://127.0.0.1:2380".to_string()]).is_ok());
    }
}
