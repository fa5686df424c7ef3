//! [`RaftProposer`]: the [`Proposer`] of a replicated member. Writes go through the Raft log;
//! linearizable reads wait for a read index.
//!
//! # Writes
//! On the leader a command is a `client_write`: appended, replicated to a quorum, applied, and
//! the leader's own result returned. A follower forwards the command to the leader it knows
//! (peer service `Forward`) and returns the leader's result. A leader that has lost its
//! leadership answers "not leader" *before* proposing anything, so the follower may safely try
//! again once it learns the new leader; it never forwards on (no loops).
//!
//! A command whose fate is unknown is never retried and never answered with a guess: if the
//! leader changed while it was in flight (its entry was truncated, the forward broke off after
//! it was sent, another leader was elected while the old one kept it) the client gets etcd's
//! retryable UNAVAILABLE error, exactly as etcd does. A truncated entry can still be committed
//! by a later leader, so retrying it here could apply it twice.
//!
//! # Failover
//! Nothing here waits on a leader that has been replaced: a forward or read index still in
//! flight to the old leader ends as soon as Raft reports another one, and the pause between
//! attempts on an unreachable leader ends then too, so the first request through a follower
//! completes within milliseconds of the election.
//!
//! # Reads
//! [`Proposer::read_barrier`] is Raft's read index: the leader confirms it is still leader with
//! a round of heartbeats to a quorum and takes its commit index (at least its own term's first
//! entry); a follower asks the leader for that index (peer service `ReadIndex`). Either way the
//! read waits until this member has applied up to the index, then reads its own store.
//! Concurrent reads share confirmation rounds ([`ReadIndexBatch`]).
//!
//! Every request has one deadline ([`ProposerOptions::request_timeout`], etcd's 5 s plus two
//! election timeouts by default); past it the client gets "etcdserver: request timed out".

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use kvstore_proto::raftpb::{self, ForwardRequest, ForwardResponse, ReadIndexRequest};
use openraft::error::{ClientWriteError, Fatal, RaftError};
use openraft::RaftMetrics;
use tokio::sync::{oneshot, watch};
use tokio::time::{timeout_at, Instant};
use tonic::Code;

use super::batcher::Batcher;
use super::network::{Peers, FORWARD_PATH};
use super::read_index::{leader_read_index, ReadIndexBatch, ReadIndexError};
use super::types::{MemberNode, NodeId, Raft, ServerMetrics};
use crate::apply::{Applied, Command, Proposer};
use crate::Error;
use grpc_link::ConnectFailed;

/// etcd's message for a request sent to a member that is not the leader (`ErrGRPCNotLeader`).
pub const NOT_LEADER: &str = "etcdserver: not leader";
/// etcd's message for a request whose leader lost leadership while it was in flight
/// (`ErrGRPCLeaderChanged`).
pub const LEADER_CHANGED: &str = "etcdserver: leader changed";

/// First pause before asking again after the leader could not take a request.
const RETRY_PAUSE_MIN: Duration = Duration::from_millis(20);
/// Longest such pause.
const RETRY_PAUSE_MAX: Duration = Duration::from_millis(500);

/// How long requests may take.
#[derive(Clone, Debug)]
pub struct ProposerOptions {
    /// The deadline of one write or read barrier, waiting for a leader included.
    pub request_timeout: Duration,
}

impl Default for ProposerOptions {
    /// etcd's request timeout with its default election timeout: 5 s + 2 × 1 s.
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(7),
        }
    }
}

/// The proposer of a member of a replicated cluster.
pub struct RaftProposer {
    /// This member's Raft.
    raft: Raft,
    /// Connections to the other members, shared with the Raft network.
    peers: Arc<Peers>,
    /// This member's ID.
    id: NodeId,
    /// Raft's metrics: the leader, the term, the applied index, the membership.
    metrics: watch::Receiver<RaftMetrics<NodeId, MemberNode>>,
    /// Raft's server metrics, for the term and leader every response header reports: Raft
    /// writes them only when they change, the full metrics several times per write.
    server: watch::Receiver<ServerMetrics>,
    /// Read-index rounds shared by concurrent reads (and by the peer service's `ReadIndex`).
    reads: Arc<ReadIndexBatch>,
    /// Deadlines.
    options: ProposerOptions,
    /// Batches this member's writes into log entries while it leads.
    batcher: Batcher,
}

impl RaftProposer {
    /// The proposer of `raft`, forwarding over `peers` (the same ones its network uses).
    pub fn new(raft: Raft, peers: Arc<Peers>, options: ProposerOptions) -> Self {
        let metrics = raft.metrics();
        let server = raft.server_metrics();
        let id = peers.id();
        let raft_for_batcher = raft.clone();
        Self {
            raft,
            peers,
            id,
            metrics,
            server,
            reads: Arc::default(),
            options,
            batcher: Batcher::spawn(raft_for_batcher),
        }
    }

    /// The batcher of this member's writes, for its peer service to propose forwarded writes
    /// through (so they share entries with local ones).
    pub fn batcher(&self) -> Batcher {
        self.batcher.clone()
    }

    /// The read-index rounds of this member, for its peer service to share.
    pub fn read_index_batch(&self) -> Arc<ReadIndexBatch> {
        Arc::clone(&self.reads)
    }

    /// The current leader and, unless it is this member, how to reach it (a copy of its
    /// addresses, not made for every local write); waits for one until `deadline`.
    async fn leader(&self, deadline: Instant) -> Result<(NodeId, Option<MemberNode>), Error> {
        let mut metrics = self.metrics.clone();
        loop {
            {
                let m = metrics.borrow_and_update();
                if let Err(fatal) = &m.running_state {
                    return Err(fatal_error(fatal));
                }
                if let Some(leader) = m.current_leader {
                    let node = if leader == self.id {
                        None
                    } else {
                        m.membership_config.membership().get_node(&leader).cloned()
                    };
                    return Ok((leader, node));
                }
            }
            match timeout_at(deadline, metrics.changed()).await {
                Err(_) => return Err(Error::NoLeader),
                Ok(Err(_)) => return Err(Error::Stopped),
                Ok(Ok(())) => {}
            }
        }
    }

    /// Resolves once Raft reports a leader other than `leader`: the moment to stop waiting on
    /// `leader`, in flight or between attempts. Never resolves once Raft has stopped (the
    /// caller's deadline ends the wait then).
    async fn leader_other_than(&self, leader: NodeId) {
        let mut metrics = self.metrics.clone();
        let stopped = metrics
            .wait_for(|m| m.current_leader.is_some_and(|now| now != leader))
            .await
            .is_err();
        if stopped {
            std::future::pending::<()>().await;
        }
    }

    /// Proposes until `deadline` (enforced by the caller).
    async fn propose_until(&self, command: Command, deadline: Instant) -> Result<Applied, Error> {
        let mut pause = RetryPause::default();
        loop {
            let (leader, node) = self.leader(deadline).await?;
            if leader == self.id {
                return self.write_local(command).await;
            }
            let outcome = match &node {
                Some(node) => self.forward(leader, node, &command, deadline).await,
                None => Forwarded::NotSent(format!("leader {leader} is not in the membership")),
            };
            match outcome {
                Forwarded::Applied(result) => return applied_from_result(result),
                Forwarded::Unknown(err) => return Err(err),
                Forwarded::NotSent(cause) => {
                    tracing::debug!(%leader, %cause, "leader did not take a forwarded write; retrying");
                    if !pause.wait(deadline, self.leader_other_than(leader)).await {
                        return Err(Error::NoLeader);
                    }
                }
            }
        }
    }

    /// Proposes on this member, the leader.
    async fn write_local(&self, command: Command) -> Result<Applied, Error> {
        match self.batcher.write(command).await {
            Ok(result) => applied_from_result(result),
            // Either refused before it was appended or truncated after: which one is unknown.
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_))) => Err(leader_changed()),
            Err(RaftError::APIError(ClientWriteError::ChangeMembershipError(e))) => {
                Err(Error::Internal(format!("raft: {e}")))
            }
            Err(RaftError::Fatal(fatal)) => Err(fatal_error(&fatal)),
        }
    }

    /// Sends the command to the leader's peer service.
    async fn forward(
        &self,
        leader: NodeId,
        node: &MemberNode,
        command: &Command,
        deadline: Instant,
    ) -> Forwarded {
        let peer = self.peers.peer(leader, node);
        if let Err(unreachable) = peer.admit() {
            return Forwarded::NotSent(unreachable.to_string());
        }
        let request = ForwardRequest {
            command: Some(raftpb::Command::from(command.clone())),
        };
        let timeout = deadline.saturating_duration_since(Instant::now());
        // A leader that stops answering (paused, partitioned) would hold the write until the
        // deadline; once another leader is known the old one's term is over, and the write
        // either committed before it ended or never will. Which one is unknown: etcd answers
        // "leader changed" then too (its proposals wait on `leaderChanged`).
        let sent = tokio::select! {
            sent = peer.link_call::<_, ForwardResponse>(FORWARD_PATH, &request, timeout) => sent,
            () = self.leader_other_than(leader) => {
                tracing::debug!(%leader, "leader replaced while a forwarded write was in flight");
                return Forwarded::Unknown(leader_changed());
            }
        };
        match sent {
            Ok(response) => {
                peer.succeeded();
                match response.result {
                    Some(result) if is_not_leader(&result) => Forwarded::NotSent(NOT_LEADER.into()),
                    Some(result) => Forwarded::Applied(result),
                    None => Forwarded::Unknown(Error::Internal(
                        "forwarded write answered without a result".into(),
                    )),
                }
            }
            Err(status) if is_connect_error(&status) => {
                peer.failed(&status.message());
                Forwarded::NotSent(status.message().to_owned())
            }
            Err(status) => match status.code() {
                Code::DeadlineExceeded | Code::Cancelled => Forwarded::Unknown(Error::Timeout),
                // The leader refused the message itself: members disagree on the wire format.
                Code::InvalidArgument => Forwarded::Unknown(Error::Internal(format!(
                    "forwarding to the leader: {status}"
                ))),
                // The connection broke after the request may have been sent (the leader
                // stopped or crashed): the write may or may not have been applied.
                _ => {
                    if status.code() == Code::Unavailable {
                        peer.failed(&status.message());
                    }
                    tracing::debug!(%leader, %status, "forwarded write lost");
                    Forwarded::Unknown(leader_changed())
                }
            },
        }
    }

    /// Confirms a read index and waits for it, until `deadline` (enforced by the caller).
    async fn read_barrier_until(&self, deadline: Instant) -> Result<(), Error> {
        let mut pause = RetryPause::default();
        loop {
            let (leader, node) = self.leader(deadline).await?;
            let index = self
                .reads
                .run(|| async {
                    if leader == self.id {
                        leader_read_index(&self.raft).await
                    } else if let Some(node) = &node {
                        self.remote_read_index(leader, node, deadline).await
                    } else {
                        Err(ReadIndexError::Retry(format!(
                            "leader {leader} is not in the membership"
                        )))
                    }
                })
                .await;
            match index {
                Ok(index) => return self.wait_applied(index, deadline).await,
                Err(ReadIndexError::Fail(err)) => return Err(err),
                // A read changes nothing, so asking again is always safe.
                Err(ReadIndexError::Retry(cause)) => {
                    tracing::debug!(%leader, %cause, "read index not confirmed; retrying");
                    if !pause.wait(deadline, self.leader_other_than(leader)).await {
                        return Err(Error::Timeout);
                    }
                }
            }
        }
    }

    /// The read index, asked of the leader.
    async fn remote_read_index(
        &self,
        leader: NodeId,
        node: &MemberNode,
        deadline: Instant,
    ) -> Result<Option<u64>, ReadIndexError> {
        let peer = self.peers.peer(leader, node);
        let mut client = peer
            .client()
            .map_err(|e| ReadIndexError::Retry(e.to_string()))?;
        let mut request = tonic::Request::new(ReadIndexRequest {});
        peer.stamp(&mut request);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        let asked = tokio::select! {
            asked = client.read_index(request) => asked,
            // A read changes nothing: ask the new leader instead.
            () = self.leader_other_than(leader) => {
                return Err(ReadIndexError::Retry(format!("leader {leader} was replaced")));
            }
        };
        match asked {
            Ok(response) => {
                peer.succeeded();
                Ok(Some(response.into_inner().index))
            }
            Err(status) => {
                if is_connect_error(&status) {
                    peer.failed(&status.message());
                }
                Err(ReadIndexError::Retry(status.to_string()))
            }
        }
    }

    /// Waits until this member has applied the entry at `index`.
    async fn wait_applied(&self, index: Option<u64>, deadline: Instant) -> Result<(), Error> {
        let Some(index) = index else {
            return Ok(());
        };
        let mut metrics = self.metrics.clone();
        let reached = timeout_at(
            deadline,
            metrics.wait_for(|m| m.last_applied.as_ref().map(|id| id.index) >= Some(index)),
        )
        .await
        .map(|r| r.map(|_| ()));
        match reached {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout),
        }
    }
}

#[tonic::async_trait]
impl Proposer for RaftProposer {
    async fn propose(&self, command: Command) -> Result<Applied, Error> {
        let deadline = Instant::now() + self.options.request_timeout;
        timeout_at(deadline, self.propose_until(command, deadline))
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    async fn read_barrier(&self) -> Result<(), Error> {
        #[cfg(feature = "fault-injection")]
        if crate::faults::active(crate::faults::Fault::StaleRead) {
            return Ok(());
        }
        let deadline = Instant::now() + self.options.request_timeout;
        timeout_at(deadline, self.read_barrier_until(deadline))
            .await
            .unwrap_or(Err(Error::Timeout))
    }

    fn term(&self) -> u64 {
        self.server.borrow().vote.leader_id().get_term()
    }

    fn leader(&self) -> Option<u64> {
        self.server.borrow().current_leader
    }

    fn applied_index(&self) -> u64 {
        self.metrics
            .borrow()
            .last_applied
            .as_ref()
            .map_or(0, |id| id.index)
    }
}

/// What became of a forwarded write.
enum Forwarded {
    /// The leader applied it (successfully or not): its result.
    Applied(raftpb::ApplyResult),
    /// It was certainly not proposed (the leader was unreachable, or not the leader any more).
    NotSent(String),
    /// It may or may not have been applied.
    Unknown(Error),
}

/// Growing pauses between attempts, bounded by a deadline, cut short by news (a new leader).
struct RetryPause {
    next: Duration,
}

impl Default for RetryPause {
    fn default() -> Self {
        Self {
            next: RETRY_PAUSE_MIN,
        }
    }
}

impl RetryPause {
    /// Sleeps for the next pause, or until `news` resolves (then the pauses start over from the
    /// shortest: the next attempt goes somewhere new); `false` (without sleeping) if the pause
    /// would end past `deadline`.
    async fn wait(&mut self, deadline: Instant, news: impl Future<Output = ()>) -> bool {
        let until = Instant::now() + self.next;
        if until >= deadline {
            return false;
        }
        tokio::select! {
            () = tokio::time::sleep_until(until) => {
                self.next = (self.next * 2).min(RETRY_PAUSE_MAX);
            }
            () = news => self.next = RETRY_PAUSE_MIN,
        }
        true
    }
}

/// The error of a request whose leader changed while it was in flight: etcd's UNAVAILABLE
/// "etcdserver: leader changed" (it may or may not have been applied; clients retry).
pub fn leader_changed() -> Error {
    Error::LeaderChanged
}

/// The member's error for a fatal Raft error.
pub fn fatal_error(fatal: &Fatal<NodeId>) -> Error {
    match fatal {
        Fatal::Stopped => Error::Stopped,
        other => Error::Internal(format!("raft: {other}")),
    }
}

/// The `ApplyError` a member that is not the leader answers a forwarded write with.
pub fn not_leader_result() -> raftpb::ApplyResult {
    apply_error(Code::Unavailable, NOT_LEADER)
}

/// The `ApplyError` for a forwarded write whose leader changed while it was in flight.
pub fn leader_changed_result() -> raftpb::ApplyResult {
    apply_error(Code::Unavailable, LEADER_CHANGED)
}

fn apply_error(code: Code, message: &str) -> raftpb::ApplyResult {
    raftpb::ApplyResult {
        result: Some(raftpb::apply_result::Result::Error(raftpb::ApplyError {
            code: code as i32,
            message: message.to_owned(),
        })),
    }
}

fn is_not_leader(result: &raftpb::ApplyResult) -> bool {
    matches!(
        &result.result,
        Some(raftpb::apply_result::Result::Error(e)) if e.message == NOT_LEADER
    )
}

/// Whether a failed call never reached the peer (the connection could not be made).
fn is_connect_error(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if err.is::<tonic::ConnectError>() || err.is::<ConnectFailed>() {
            return true;
        }
        source = err.source();
    }
    false
}

/// The result of applying a command, as the state machine (this member's or the leader's)
/// produced it: the inverse of `Response::from`.
///
/// A compaction's `done` is already complete: the physical compaction runs on the thread of
/// the member that applied it, and nothing carries its completion back through Raft.
pub fn applied_from_result(result: raftpb::ApplyResult) -> Result<Applied, Error> {
    use raftpb::apply_result::Result as R;
    match result.result {
        Some(R::Put(r)) => Ok(Applied::Put(r)),
        Some(R::DeleteRange(r)) => Ok(Applied::DeleteRange(r)),
        Some(R::Txn(r)) => Ok(Applied::Txn(r)),
        Some(R::Compaction(response)) => {
            let (tx, done) = oneshot::channel();
            let _ = tx.send(());
            Ok(Applied::Compact { response, done })
        }
        Some(R::LeaseGrant(r)) => Ok(Applied::LeaseGrant(r)),
        Some(R::LeaseRevoke(r)) => Ok(Applied::LeaseRevoke(r)),
        Some(R::LeaseCheckpoint(_)) => Ok(Applied::LeaseCheckpoint),
        Some(R::Alarm(r)) => Ok(Applied::Alarm(r)),
        Some(R::MemberAttributes(_)) => Ok(Applied::PublishMember),
        Some(R::Error(e)) => Err(error_from_apply(e)),
        Some(R::Batch(_)) => Err(Error::Internal(
            "a batch's results reached a single request".into(),
        )),
        None => Err(Error::Internal(
            "the entry of a command applied without a result".into(),
        )),
    }
}

/// The member's error for an `ApplyError`: the variant with the same message (hence the same
/// gRPC status) when it has no payload, so it stays typed; otherwise [`Error::Remote`], which
/// passes the code and message on unchanged. Either way the client sees exactly what the
/// applying member would have sent.
pub fn error_from_apply(e: raftpb::ApplyError) -> Error {
    unit_errors()
        .into_iter()
        .find(|candidate| candidate.to_string() == e.message)
        .unwrap_or(Error::Remote {
            code: e.code,
            message: e.message,
        })
}

/// Every error without a payload, which its message identifies.
fn unit_errors() -> Vec<Error> {
    use crate::mvcc::Error as Store;
    let store = [
        Store::Compacted,
        Store::FutureRevision,
        Store::EmptyKey,
        Store::InvalidRangeEnd,
        Store::TooManyOps,
        Store::DuplicateKey,
        Store::RequestTooLarge,
        Store::KeyNotFound,
        Store::ValueProvided,
        Store::LeaseProvided,
        Store::LeaseNotFound,
        Store::LeaseExists,
    ];
    let mut errors = vec![
        Error::NoSpace,
        Error::Corrupt,
        Error::LeaseTtlTooLarge,
        Error::NoLeader,
        Error::Timeout,
        Error::Stopped,
        Error::LeaderChanged,
    ];
    errors.extend(store.into_iter().map(Error::Store));
    errors
}

#[cfg(test)]
mod tests {
    use kvstore_proto::etcdserverpb::{CompactionResponse, PutResponse, ResponseHeader};

    use super::*;
    use crate::raft::types::Response;

    /// What a client of this member sees for `err` after it went through an `ApplyResult`.
    fn round_trip(err: Error) -> tonic::Status {
        let wire = Response::from(Err(err)).0;
        let back = applied_from_result(wire).expect_err("an error");
        tonic::Status::from(back)
    }

    #[test]
    fn apply_errors_come_back_with_the_same_status() {
        for i in 0..unit_errors().len() {
            let want = tonic::Status::from(unit_errors().swap_remove(i));
            let got = round_trip(unit_errors().swap_remove(i));
            assert_eq!(got.code(), want.code(), "{}", want.message());
            assert_eq!(got.message(), want.message());
        }
        let internal = round_trip(Error::Internal("disk on fire".into()));
        assert_eq!(internal.code(), Code::Internal);
        assert_eq!(
            internal.message(),
            "etcdserver: internal error: disk on fire"
        );
        let remote = round_trip(Error::Remote {
            code: Code::FailedPrecondition as i32,
            message: "etcdserver: something new".into(),
        });
        assert_eq!(remote.code(), Code::FailedPrecondition);
        assert_eq!(remote.message(), "etcdserver: something new");
    }

    #[test]
    fn leader_errors_are_retryable() {
        for result in [not_leader_result(), leader_changed_result()] {
            let status = tonic::Status::from(applied_from_result(result).expect_err("an error"));
            assert_eq!(status.code(), Code::Unavailable);
        }
        assert!(is_not_leader(&not_leader_result()));
        assert!(!is_not_leader(&leader_changed_result()));
    }

    #[tokio::test]
    async fn retry_pauses_grow_until_news_cuts_one_short() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut pause = RetryPause::default();
        assert!(pause.wait(deadline, std::future::pending()).await);
        assert_eq!(
            pause.next,
            RETRY_PAUSE_MIN * 2,
            "a full pause doubles the next"
        );
        pause.next = RETRY_PAUSE_MAX;
        let started = Instant::now();
        assert!(pause.wait(deadline, std::future::ready(())).await);
        assert!(started.elapsed() < RETRY_PAUSE_MAX, "news ends the pause");
        assert_eq!(pause.next, RETRY_PAUSE_MIN, "and starts the pauses over");
        let soon = Instant::now() + RETRY_PAUSE_MIN / 2;
        assert!(
            !pause.wait(soon, std::future::ready(())).await,
            "past the deadline"
        );
    }

    #[tokio::test]
    async fn results_become_applied_and_compactions_are_done() {
        let put = Response::from(Ok(Applied::Put(PutResponse {
            header: Some(ResponseHeader {
                revision: 7,
                ..ResponseHeader::default()
            }),
            prev_kv: None,
        })))
        .0;
        match applied_from_result(put) {
            Ok(Applied::Put(r)) => assert_eq!(r.header.map(|h| h.revision), Some(7)),
            other => panic!("want a put, got {other:?}"),
        }
        let (_tx, done) = oneshot::channel();
        let compact = Response::from(Ok(Applied::Compact {
            response: CompactionResponse::default(),
            done,
        }))
        .0;
        match applied_from_result(compact) {
            Ok(Applied::Compact { done, .. }) => done.await.expect("already complete"),
            other => panic!("want a compaction, got {other:?}"),
        }
    }
}
