//! Elections with pre-vote: who campaigns, and when.
//!
//! openraft 0.9 has no pre-vote: a follower whose election timer fires raises its term and
//! campaigns. A member cut off from the others does that again and again, and when the
//! network heals its higher term makes the healthy leader step down — one needless election,
//! and a second or two without a leader, every time a member returns (etcd avoids this with
//! `--pre-vote`, on by default since 3.4... and always in 3.5).
//!
//! So kvstore turns openraft's own election timer off (`enable_elect = false`) and runs the
//! [`Elector`] instead. It keeps openraft's timing — a follower campaigns `leader lease +
//! rand[election_timeout_min, election_timeout_max)` after it last heard from its leader — but
//! before campaigning it asks every voter a PreVote ([`PreVoteRequest`]), which changes
//! nothing on the voter. Only with a majority of yeses (in each configuration of a joint
//! membership) does it call openraft's `trigger().elect()`, which raises the term.
//!
//! A voter says yes ([`grants`]) when it is not the leader, it has not heard from a leader
//! for a leader lease, the candidate's next term is above its own and the candidate's log is
//! at least as up to date as its own — the same log rule as a real vote, so a pre-vote that
//! wins is followed by an election that can win. While a majority still follows a leader, a
//! cut-off member cannot win a pre-vote and keeps its term.
//!
//! Leadership transfer (MoveLeader's Campaign RPC) calls `trigger().elect()` directly, as
//! etcd's transfer skips pre-vote too.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use kvstore_proto::raftpb::{PreVoteRequest, PreVoteResponse};
use openraft::ServerState;
use rand::Rng;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::codec;
use super::log_store::LogReader;
use super::network::Peers;
use super::types::{LogId, MemberNode, NodeId, Raft};

/// Election timing, from openraft's configuration (see `raft_config` in `node.rs`).
#[derive(Clone, Copy, Debug)]
pub struct ElectionTiming {
    /// How long a follower trusts a leader it last heard from (openraft's leader lease,
    /// `election_timeout_max`): no pre-vote is granted, and none asked for, within it.
    pub lease: Duration,
    /// The randomized part of the wait before campaigning, from `min` to `max`.
    pub timeout_min: Duration,
    pub timeout_max: Duration,
    /// How often the elector looks at the member's state (the heartbeat interval).
    pub tick: Duration,
}

impl ElectionTiming {
    /// The timing of `config`.
    pub fn from_config(config: &openraft::Config) -> Self {
        Self {
            lease: Duration::from_millis(config.election_timeout_max),
            timeout_min: Duration::from_millis(config.election_timeout_min),
            timeout_max: Duration::from_millis(config.election_timeout_max),
            tick: Duration::from_millis(config.heartbeat_interval.max(10)),
        }
    }

    /// A fresh random wait in `[timeout_min, timeout_max)`.
    fn random_timeout(&self) -> Duration {
        let (min, max) = (self.timeout_min, self.timeout_max.max(self.timeout_min));
        if max <= min {
            return min;
        }
        rand::rng().random_range(min..max)
    }
}

/// What a member's Raft state says about elections, read in one look.
#[derive(Clone, Debug)]
struct Standing {
    /// Whether this member leads.
    leader: bool,
    /// Whether this member is a voter of the effective membership.
    voter: bool,
    /// Its current term.
    term: u64,
    /// Whether its vote is committed (it follows or is an elected leader), as opposed to a
    /// vote granted to a candidate that has not won yet.
    committed: bool,
    /// When the vote was last set or refreshed: a leader's heartbeats refresh it.
    heard: Option<Instant>,
    /// The voter sets of the effective membership (two during a joint change).
    configs: Vec<BTreeSet<NodeId>>,
    /// Every member's address.
    nodes: Vec<(NodeId, MemberNode)>,
}

async fn standing(raft: &Raft, me: NodeId) -> Option<Standing> {
    let raft = raft.clone();
    // Detached: a caller that gives up (a pre-vote whose asker timed out, a shutdown) must not
    // leave openraft answering into a dropped channel, which it logs as an error
    // ("to-Raft tx send error").
    let ask = tokio::spawn(async move {
        raft.with_raft_state(move |st| {
            let membership = st.membership_state.effective().membership();
            let vote = st.vote_ref();
            Standing {
                leader: st.server_state == ServerState::Leader,
                voter: membership.voter_ids().any(|id| id == me),
                term: vote.leader_id().term,
                committed: vote.is_committed(),
                heard: st.vote_last_modified(),
                configs: membership.get_joint_config().clone(),
                nodes: membership
                    .nodes()
                    .map(|(id, node)| (*id, node.clone()))
                    .collect(),
            }
        })
        .await
        .ok()
    });
    ask.await.ok().flatten()
}

/// Whether a voter in `standing`, whose last log id is `own_last`, would vote for a
/// candidate campaigning in `term` with last log id `candidate_last`, at `now`.
fn grants(
    standing: &Standing,
    now: Instant,
    lease: Duration,
    term: u64,
    candidate_last: Option<LogId>,
    own_last: Option<LogId>,
) -> bool {
    let follows_a_leader = standing.committed
        && standing
            .heard
            .is_some_and(|t| now.duration_since(t) <= lease);
    !standing.leader && !follows_a_leader && term > standing.term && candidate_last >= own_last
}

/// The voter's side of pre-vote: answers other members' [`PreVoteRequest`]s.
#[derive(Clone)]
pub struct PreVoteJudge {
    /// This member's Raft.
    raft: Raft,
    /// Its log, for the last log id.
    log: LogReader,
    /// Its leader lease.
    lease: Duration,
}

impl PreVoteJudge {
    /// A judge for `raft`, whose log `log` reads.
    pub fn new(raft: Raft, log: LogReader, timing: ElectionTiming) -> Self {
        Self {
            raft,
            log,
            lease: timing.lease,
        }
    }

    /// The answer to `request`; never changes this member's state.
    pub async fn judge(&self, request: &PreVoteRequest) -> PreVoteResponse {
        let me = self.raft.metrics().borrow().id;
        let Some(standing) = standing(&self.raft, me).await else {
            return PreVoteResponse::default();
        };
        let candidate_last: Option<LogId> = match codec::decode(&request.last_log_id) {
            Ok(id) => id,
            Err(_) => return refuse(&standing),
        };
        let own_last = match self.log.last_log_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(cause = %e, "pre-vote: cannot read the last log id");
                return refuse(&standing);
            }
        };
        let granted = grants(
            &standing,
            Instant::now(),
            self.lease,
            request.term,
            candidate_last,
            own_last,
        );
        tracing::debug!(term = request.term, granted, "pre-vote asked");
        PreVoteResponse {
            granted,
            term: standing.term,
        }
    }
}

fn refuse(standing: &Standing) -> PreVoteResponse {
    PreVoteResponse {
        granted: false,
        term: standing.term,
    }
}

/// The candidate's side: watches for a silent leader and campaigns after winning a pre-vote.
pub struct Elector {
    /// This member's Raft.
    raft: Raft,
    /// Connections to the voters.
    peers: Arc<Peers>,
    /// Its log, for the last log id a pre-vote carries.
    log: LogReader,
    /// Timing.
    timing: ElectionTiming,
}

impl Elector {
    /// An elector for `raft`.
    pub fn new(raft: Raft, peers: Arc<Peers>, log: LogReader, timing: ElectionTiming) -> Self {
        Self {
            raft,
            peers,
            log,
            timing,
        }
    }

    /// Runs until `shutdown` is cancelled.
    pub fn spawn(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            tokio::select! {
                () = self.run() => {}
                () = shutdown.cancelled() => {}
            }
        })
    }

    async fn run(self) {
        let me = self.peers.id();
        let started = Instant::now();
        // The wait after the last word from a leader; drawn again after every attempt.
        let mut wait = self.timing.random_timeout();
        // No attempt before this instant (spaces out failed pre-votes).
        let mut not_before = started;
        let mut ticker = tokio::time::interval(self.timing.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(standing) = standing(&self.raft, me).await else {
                return; // Raft stopped.
            };
            if standing.leader || !standing.voter {
                continue;
            }
            let now = Instant::now();
            let sole_voter = standing
                .configs
                .iter()
                .all(|c| c.len() == 1 && c.contains(&me));
            let base = standing.heard.unwrap_or(started).max(started);
            let due = if sole_voter {
                base
            } else if standing.committed {
                base + self.timing.lease + wait
            } else {
                base + wait
            };
            if now < due || now < not_before {
                continue;
            }
            wait = self.timing.random_timeout();
            not_before = now + wait;
            if sole_voter || self.pre_vote(&standing, me).await {
                tracing::info!(term = standing.term + 1, "pre-vote won; campaigning");
                if let Err(e) = self.raft.trigger().elect().await {
                    tracing::warn!(cause = %e, "cannot campaign");
                }
            }
        }
    }

    /// Asks every other voter; true if a majority of each configuration (counting this
    /// member) would vote for it.
    async fn pre_vote(&self, standing: &Standing, me: NodeId) -> bool {
        let last = match self.log.last_log_id() {
            Ok(id) => id,
            Err(e) => {
                tracing::warn!(cause = %e, "pre-vote: cannot read the last log id");
                return false;
            }
        };
        let Ok(last_log_id) = codec::encode(&last) else {
            return false;
        };
        let request = PreVoteRequest {
            term: standing.term + 1,
            last_log_id,
        };
        let voters: BTreeSet<NodeId> = standing.configs.iter().flatten().copied().collect();
        let mut asks = JoinSet::new();
        for (id, node) in &standing.nodes {
            if *id == me || !voters.contains(id) {
                continue;
            }
            let peer = self.peers.peer(*id, node);
            let request = request.clone();
            let deadline = self.timing.timeout_min.max(Duration::from_millis(50));
            let id = *id;
            asks.spawn(async move {
                let mut client = peer.client().ok()?;
                let mut req = tonic::Request::new(request);
                req.set_timeout(deadline);
                peer.stamp(&mut req);
                match tokio::time::timeout(deadline, client.pre_vote(req)).await {
                    Ok(Ok(reply)) => {
                        peer.succeeded();
                        Some((id, reply.into_inner().granted))
                    }
                    Ok(Err(status)) if status.code() == tonic::Code::Unavailable => {
                        peer.failed(&status.message());
                        None
                    }
                    _ => None,
                }
            });
        }
        let mut yes: BTreeSet<NodeId> = BTreeSet::from([me]);
        while let Some(answer) = asks.join_next().await {
            if let Ok(Some((id, true))) = answer {
                yes.insert(id);
            }
        }
        let won = standing
            .configs
            .iter()
            .all(|config| config.iter().filter(|id| yes.contains(id)).count() * 2 > config.len());
        tracing::debug!(term = request.term, votes = yes.len(), won, "pre-vote");
        won
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_id(term: u64, index: u64) -> Option<LogId> {
        Some(openraft::LogId::new(
            openraft::CommittedLeaderId::new(term, 1),
            index,
        ))
    }

    fn follower(heard: Option<Instant>) -> Standing {
        Standing {
            leader: false,
            voter: true,
            term: 5,
            committed: true,
            heard,
            configs: vec![BTreeSet::from([1, 2, 3])],
            nodes: Vec::new(),
        }
    }

    const LEASE: Duration = Duration::from_millis(750);

    /// Whether `standing` grants a candidate for `term` whose last log id is `candidate`,
    /// its own being `own`, at `now`.
    fn asks(
        standing: &Standing,
        now: Instant,
        term: u64,
        candidate: Option<LogId>,
        own: Option<LogId>,
    ) -> bool {
        grants(standing, now, LEASE, term, candidate, own)
    }

    #[test]
    fn follower_of_a_live_leader_refuses() {
        let now = Instant::now();
        let standing = follower(Some(now - Duration::from_millis(100)));
        assert!(!asks(&standing, now, 6, log_id(5, 10), log_id(5, 10)));
    }

    #[test]
    fn follower_whose_leader_went_silent_grants_an_up_to_date_candidate() {
        let now = Instant::now();
        let standing = follower(Some(now - Duration::from_secs(2)));
        assert!(asks(&standing, now, 6, log_id(5, 10), log_id(5, 10)));
        assert!(asks(&standing, now, 6, log_id(5, 11), log_id(5, 10)));
    }

    #[test]
    fn candidate_with_a_shorter_or_older_log_is_refused() {
        let now = Instant::now();
        let standing = follower(None);
        assert!(!asks(&standing, now, 6, log_id(5, 9), log_id(5, 10)));
        assert!(!asks(&standing, now, 6, log_id(4, 20), log_id(5, 10)));
        assert!(!asks(&standing, now, 6, None, log_id(5, 10)));
    }

    #[test]
    fn candidate_not_ahead_in_term_is_refused() {
        let now = Instant::now();
        let standing = follower(None);
        assert!(!asks(&standing, now, 5, log_id(5, 10), log_id(5, 10)));
    }

    #[test]
    fn leader_refuses_and_uncommitted_vote_does_not_hold_a_lease() {
        let now = Instant::now();
        let mut leader = follower(Some(now));
        leader.leader = true;
        assert!(!asks(&leader, now, 6, log_id(5, 10), log_id(5, 10)));
        let mut voted = follower(Some(now));
        voted.committed = false;
        assert!(asks(&voted, now, 6, log_id(5, 10), log_id(5, 10)));
    }
}
