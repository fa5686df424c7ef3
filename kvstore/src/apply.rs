//! The state machine's commands: every request that changes state becomes one [`Command`],
//! applied to the store by the [`Applier`] in the order a [`Proposer`] decides.
//!
//! On a single member the proposer applies directly; under Raft it appends the command to the
//! log and every member's applier runs it when committed. Either way the gRPC services above see
//! only [`Proposer::propose`], so replication slots in underneath without touching them.

#[cfg(test)]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use kvstore_proto::etcdserverpb::{
    AlarmMember, AlarmRequest, AlarmResponse, CompactionRequest, CompactionResponse,
    DeleteRangeRequest, DeleteRangeResponse, LeaseGrantRequest, LeaseGrantResponse,
    LeaseRevokeResponse, PutRequest, PutResponse, TxnRequest, TxnResponse,
};
use kvstore_proto::raftpb;
use prost::Message;
use tokio::sync::oneshot;

use crate::alarm::Alarms;
use crate::mvcc::{self, KvStore, LeaseRecord};

/// A state-changing request, as ordered by the proposer (etcd's `InternalRaftRequest`).
/// KV requests are validated (`mvcc::validate`) before they are proposed; applying does not
/// check them again.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// KV.Put.
    Put(PutRequest),
    /// KV.DeleteRange.
    DeleteRange(DeleteRangeRequest),
    /// KV.Txn (only those that write; read-only ones never become commands).
    Txn(TxnRequest),
    /// KV.Compact.
    Compact(CompactionRequest),
    /// Lease.LeaseGrant, with the ID already chosen (never 0).
    LeaseGrant(LeaseGrantRequest),
    /// Lease.LeaseRevoke, or a lease's expiry.
    LeaseRevoke(i64),
    /// Remaining TTLs of leases, recorded so they survive a restart: (ID, remaining seconds).
    LeaseCheckpoint(Vec<(i64, i64)>),
    /// Maintenance.Alarm (activate or deactivate; GET is a read).
    Alarm(AlarmRequest),
    /// A member publishes its name and client URLs (etcd's member attributes).
    PublishMember(raftpb::MemberAttributes),
    /// Several commands proposed as one Raft entry (see [`crate::raft::batcher`]). The state
    /// machine applies them one by one, each exactly as if it had been an entry of its own.
    Batch(Vec<Command>),
}

/// What applying a command produced. Headers carry only the revision; the server fills in
/// cluster, member and term.
#[derive(Debug)]
pub enum Applied {
    /// Answer to [`Command::Put`].
    Put(PutResponse),
    /// Answer to [`Command::DeleteRange`].
    DeleteRange(DeleteRangeResponse),
    /// Answer to [`Command::Txn`].
    Txn(TxnResponse),
    /// Answer to [`Command::Compact`]; `done` fires when old revisions are removed from disk.
    Compact {
        /// The response to send.
        response: CompactionResponse,
        /// Completes when the physical compaction has finished.
        done: oneshot::Receiver<()>,
    },
    /// Answer to [`Command::LeaseGrant`].
    LeaseGrant(LeaseGrantResponse),
    /// Answer to [`Command::LeaseRevoke`].
    LeaseRevoke(LeaseRevokeResponse),
    /// Answer to [`Command::LeaseCheckpoint`].
    LeaseCheckpoint,
    /// Answer to [`Command::Alarm`].
    Alarm(AlarmResponse),
    /// Answer to [`Command::PublishMember`].
    PublishMember,
}

/// Applies commands to the store of this member.
pub struct Applier {
    /// The revisioned store.
    store: Arc<KvStore>,
    /// The cluster's alarms.
    alarms: Arc<Alarms>,
}

impl Applier {
    /// An applier over a store and its alarms.
    pub fn new(store: Arc<KvStore>, alarms: Arc<Alarms>) -> Self {
        Self { store, alarms }
    }

    /// Applies one command. `member_id` is the member that runs the applier (for alarms).
    /// Blocking: call from a blocking context.
    pub fn apply(&self, command: Command, member_id: u64) -> Result<Applied, crate::Error> {
        let store = &self.store;
        Ok(match command {
            Command::Batch(_) => {
                return Err(crate::Error::Internal(
                    "a command batch is applied one command at a time, by the state machine".into(),
                ))
            }
            Command::Put(req) => {
                self.alarms.check_write()?;
                Applied::Put(store.put_validated(&req)?.0)
            }
            Command::DeleteRange(req) => {
                self.alarms.check_corrupt()?;
                Applied::DeleteRange(store.delete_range_validated(&req)?.0)
            }
            Command::Txn(req) => {
                // As etcd's capped applier: only a transaction that puts is refused on NOSPACE.
                if crate::quota::txn_cost(&req) > 0 {
                    self.alarms.check_write()?;
                } else {
                    self.alarms.check_corrupt()?;
                }
                Applied::Txn(store.txn_validated(&req)?.0)
            }
            Command::Compact(req) => {
                self.alarms.check_corrupt()?;
                let job = store.compact(req.revision)?;
                let (tx, done) = oneshot::channel();
                let compactor = Arc::clone(store);
                std::thread::Builder::new()
                    .name("compaction".into())
                    .spawn(move || {
                        if let Err(err) = compactor.run_compaction(job) {
                            tracing::error!(cause = %err, "compaction failed");
                        }
                        let _ = tx.send(());
                    })
                    .map_err(|e| crate::Error::Internal(format!("spawn compaction: {e}")))?;
                Applied::Compact {
                    response: CompactionResponse {
                        header: mvcc::txn::header(store.current_revision()),
                    },
                    done,
                }
            }
            Command::LeaseGrant(req) => {
                self.alarms.check_write()?;
                let committed = store.lease_grant(LeaseRecord {
                    id: req.id,
                    ttl: req.ttl,
                    remaining_ttl: 0,
                })?;
                Applied::LeaseGrant(LeaseGrantResponse {
                    header: mvcc::txn::header(committed.rev),
                    id: req.id,
                    ttl: req.ttl,
                    error: String::new(),
                })
            }
            Command::LeaseRevoke(id) => {
                self.alarms.check_corrupt()?;
                let committed = store.lease_revoke(id)?;
                Applied::LeaseRevoke(LeaseRevokeResponse {
                    header: mvcc::txn::header(committed.rev),
                })
            }
            Command::LeaseCheckpoint(checkpoints) => {
                let mut txn = store.write();
                for (id, remaining) in checkpoints {
                    // A lease revoked since the checkpoint was taken has nothing to record.
                    let _ = txn.checkpoint_lease(id, remaining);
                }
                txn.commit()?;
                Applied::LeaseCheckpoint
            }
            Command::PublishMember(attributes) => {
                let mut txn = store.write();
                txn.put_meta(
                    crate::membership::attributes_key(attributes.id),
                    attributes.encode_to_vec(),
                );
                txn.commit()?;
                Applied::PublishMember
            }
            Command::Alarm(req) => {
                let member = if req.member_id == 0 {
                    member_id
                } else {
                    req.member_id
                };
                let alarms: Vec<AlarmMember> =
                    self.alarms.apply_persisted(store.backend(), &req, member)?;
                Applied::Alarm(AlarmResponse {
                    header: mvcc::txn::header(store.current_revision()),
                    alarms,
                })
            }
        })
    }
}

/// How a command reaches the state machine, and how reads learn they are up to date.
#[tonic::async_trait]
pub trait Proposer: Send + Sync + 'static {
    /// Orders the command, applies it, and returns the result of applying it on this member.
    async fn propose(&self, command: Command) -> Result<Applied, crate::Error>;

    /// Returns once this member's store reflects every write acknowledged before the call
    /// (a read index), so that a read served afterwards is linearizable.
    async fn read_barrier(&self) -> Result<(), crate::Error>;

    /// The current Raft term (1 on a single member).
    fn term(&self) -> u64;

    /// The member ID of the current leader, if known.
    fn leader(&self) -> Option<u64>;

    /// The index of the last command applied on this member.
    fn applied_index(&self) -> u64;
}

/// A proposer that applies each command directly, in arrival order: the test double (a real
/// implementation of the trait) for the layers above the proposer. Members use `RaftProposer`.
#[cfg(test)]
pub struct LocalProposer {
    /// The state machine.
    applier: Arc<Applier>,
    /// This member.
    member_id: u64,
    /// Commands applied (starting from the store's revision at open, so it never goes back).
    applied: Arc<AtomicU64>,
}

#[cfg(test)]
impl LocalProposer {
    /// A proposer that applies straight to `applier`; its applied index starts at `applied`.
    pub fn new(applier: Arc<Applier>, member_id: u64, applied: u64) -> Self {
        Self {
            applier,
            member_id,
            applied: Arc::new(AtomicU64::new(applied)),
        }
    }
}

#[cfg(test)]
#[tonic::async_trait]
impl Proposer for LocalProposer {
    async fn propose(&self, command: Command) -> Result<Applied, crate::Error> {
        let applier = Arc::clone(&self.applier);
        let member = self.member_id;
        let applied = Arc::clone(&self.applied);
        tokio::task::spawn_blocking(move || {
            let result = applier.apply(command, member);
            applied.fetch_add(1, Ordering::AcqRel);
            result
        })
        .await
        .map_err(|e| crate::Error::Internal(format!("apply task: {e}")))?
    }

    async fn read_barrier(&self) -> Result<(), crate::Error> {
        // Every acknowledged write was applied before it was acknowledged.
        Ok(())
    }

    fn term(&self) -> u64 {
        1
    }

    fn leader(&self) -> Option<u64> {
        Some(self.member_id)
    }

    fn applied_index(&self) -> u64 {
        self.applied.load(Ordering::Acquire)
    }
}

impl Command {
    /// Whether applying it does a small, bounded amount of work: it touches single keys
    /// only, so its cost does not grow with the size of the store. The state machine applies
    /// entries of such commands on its own task instead of handing them to a blocking thread
    /// (the hand-off cost more than the work); a range delete, a lease revoke (every key of
    /// the lease) or a compaction (the whole index) may take long and goes to a blocking
    /// thread.
    pub fn is_light(&self) -> bool {
        match self {
            Command::Put(_)
            | Command::LeaseGrant(_)
            | Command::LeaseCheckpoint(_)
            | Command::Alarm(_)
            | Command::PublishMember(_) => true,
            Command::DeleteRange(d) => d.range_end.is_empty(),
            Command::Txn(t) => txn_is_light(t),
            Command::Compact(_) | Command::LeaseRevoke(_) => false,
            Command::Batch(commands) => commands.iter().all(Command::is_light),
        }
    }

    /// Whether the command may join a write group ([`mvcc::WriteGroup`]): a put, a delete, a
    /// transaction that writes. Those read only the index and the values of keys, which a
    /// group shows to the transactions after each; a read-only transaction reads at the
    /// published revision, lease commands read the lease table, a compaction checks the
    /// revision, and the rest write outside the key space, so they are applied between groups.
    pub fn may_join_group(&self) -> bool {
        match self {
            Command::Put(_) | Command::DeleteRange(_) => true,
            Command::Txn(t) => !mvcc::txn::is_read_only(t),
            _ => false,
        }
    }
}

/// Whether a transaction touches single keys only: compares and operations without a range
/// end, nested transactions likewise.
fn txn_is_light(txn: &TxnRequest) -> bool {
    use kvstore_proto::etcdserverpb::request_op::Request as Op;
    txn.compare.iter().all(|c| c.range_end.is_empty())
        && txn
            .success
            .iter()
            .chain(&txn.failure)
            .all(|op| match &op.request {
                None | Some(Op::RequestPut(_)) => true,
                Some(Op::RequestRange(r)) => r.range_end.is_empty(),
                Some(Op::RequestDeleteRange(d)) => d.range_end.is_empty(),
                Some(Op::RequestTxn(t)) => txn_is_light(t),
            })
}

/// The wire form of [`Command::LeaseCheckpoint`]'s (lease ID, remaining TTL) pairs.
pub(crate) fn lease_checkpoints_wire(cps: &[(i64, i64)]) -> raftpb::LeaseCheckpoints {
    raftpb::LeaseCheckpoints {
        checkpoints: cps
            .iter()
            .map(|&(id, remaining_ttl)| raftpb::LeaseCheckpoint { id, remaining_ttl })
            .collect(),
    }
}

/// The wire form of a command (what a Raft log entry and a forwarded write carry).
impl From<Command> for raftpb::Command {
    fn from(command: Command) -> Self {
        use raftpb::command::Request as R;
        let request = match command {
            Command::Put(r) => R::Put(r),
            Command::DeleteRange(r) => R::DeleteRange(r),
            Command::Txn(r) => R::Txn(r),
            Command::Compact(r) => R::Compaction(r),
            Command::LeaseGrant(r) => R::LeaseGrant(r),
            Command::LeaseRevoke(id) => R::LeaseRevoke(id),
            Command::LeaseCheckpoint(cps) => R::LeaseCheckpoint(lease_checkpoints_wire(&cps)),
            Command::Alarm(r) => R::Alarm(r),
            Command::PublishMember(a) => R::MemberAttributes(a),
            Command::Batch(commands) => R::Batch(raftpb::CommandBatch {
                commands: commands.into_iter().map(Into::into).collect(),
            }),
        };
        raftpb::Command {
            request: Some(request),
        }
    }
}

impl TryFrom<raftpb::Command> for Command {
    type Error = crate::Error;

    /// Fails only for a command with no request (a peer sent garbage).
    fn try_from(command: raftpb::Command) -> Result<Self, Self::Error> {
        use raftpb::command::Request as R;
        Ok(match command.request {
            Some(R::Put(r)) => Command::Put(r),
            Some(R::DeleteRange(r)) => Command::DeleteRange(r),
            Some(R::Txn(r)) => Command::Txn(r),
            Some(R::Compaction(r)) => Command::Compact(r),
            Some(R::LeaseGrant(r)) => Command::LeaseGrant(r),
            Some(R::LeaseRevoke(id)) => Command::LeaseRevoke(id),
            Some(R::LeaseCheckpoint(c)) => Command::LeaseCheckpoint(
                c.checkpoints
                    .into_iter()
                    .map(|c| (c.id, c.remaining_ttl))
                    .collect(),
            ),
            Some(R::Alarm(r)) => Command::Alarm(r),
            Some(R::MemberAttributes(a)) => Command::PublishMember(a),
            Some(R::Batch(batch)) => Command::Batch(
                batch
                    .commands
                    .into_iter()
                    .map(Command::try_from)
                    .collect::<Result<_, _>>()?,
            ),
            None => return Err(crate::Error::Internal("command without a request".into())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::etcdserverpb::PutRequest;
    use prost::Message;

    #[test]
    fn only_single_key_commands_are_light() {
        use kvstore_proto::etcdserverpb::request_op::Request as Op;
        use kvstore_proto::etcdserverpb::{RangeRequest, RequestOp};
        let put = || Command::Put(PutRequest::default());
        let delete = |end: &[u8]| DeleteRangeRequest {
            key: b"a".to_vec(),
            range_end: end.to_vec(),
            ..DeleteRangeRequest::default()
        };
        let txn = |op: Op| TxnRequest {
            success: vec![RequestOp {
                request: Some(Op::RequestPut(PutRequest::default())),
            }],
            failure: vec![RequestOp { request: Some(op) }],
            ..TxnRequest::default()
        };
        assert!(put().is_light());
        assert!(Command::DeleteRange(delete(b"")).is_light());
        assert!(!Command::DeleteRange(delete(b"b")).is_light());
        assert!(!Command::LeaseRevoke(1).is_light());
        assert!(!Command::Compact(CompactionRequest::default()).is_light());
        let get = RangeRequest {
            key: b"a".to_vec(),
            ..RangeRequest::default()
        };
        assert!(Command::Txn(txn(Op::RequestRange(get.clone()))).is_light());
        let scan = RangeRequest {
            range_end: vec![0],
            ..get
        };
        assert!(!Command::Txn(txn(Op::RequestRange(scan))).is_light());
        let nested = txn(Op::RequestTxn(txn(Op::RequestDeleteRange(delete(b"z")))));
        assert!(!Command::Txn(nested).is_light());
        assert!(Command::Batch(vec![put(), put()]).is_light());
        assert!(!Command::Batch(vec![put(), Command::LeaseRevoke(1)]).is_light());
    }

    #[test]
    fn commands_survive_the_wire_form() {
        let commands = vec![
            Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                lease: 7,
                ..PutRequest::default()
            }),
            Command::LeaseRevoke(42),
            Command::LeaseCheckpoint(vec![(1, 10), (2, 20)]),
            Command::Batch(vec![Command::LeaseRevoke(1), Command::LeaseRevoke(2)]),
        ];
        for command in commands {
            let wire = raftpb::Command::from(command.clone()).encode_to_vec();
            let back = raftpb::Command::decode(wire.as_slice()).expect("decodes");
            assert_eq!(Command::try_from(back).expect("has a request"), command);
        }
    }
}
