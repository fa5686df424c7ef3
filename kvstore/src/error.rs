//! The crate's error at its boundary (the server's services, the node), wrapping the store's.
//! The one mapping to gRPC statuses lives in `server::status`.

use crate::mvcc;

/// Everything a request to this member can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The revisioned store refused or failed.
    #[error(transparent)]
    Store(#[from] mvcc::Error),
    /// The NOSPACE alarm is active: writes are refused until it is disarmed.
    #[error("etcdserver: mvcc: database space exceeded")]
    NoSpace,
    /// The CORRUPT alarm is active.
    #[error("etcdserver: corrupt cluster")]
    Corrupt,
    /// The lease TTL asked for exceeds the maximum.
    #[error("etcdserver: too large lease TTL")]
    LeaseTtlTooLarge,
    /// No leader is known at the moment; the client should retry.
    #[error("etcdserver: no leader")]
    NoLeader,
    /// The request could not be completed in time (e.g. the leader changed); retry.
    #[error("etcdserver: request timed out")]
    Timeout,
    /// The member is shutting down.
    #[error("etcdserver: server stopped")]
    Stopped,
    /// The feature is not implemented by this member yet.
    #[error("{0}")]
    Unimplemented(String),
    /// A failure another member reported (a forwarded write failed on the leader): the gRPC
    /// status code and etcd's message, passed on unchanged.
    #[error("{message}")]
    Remote {
        /// The gRPC status code (`tonic::Code as i32`).
        code: i32,
        /// The message the leader gave.
        message: String,
    },
    /// The leader changed while the request was in flight; it may or may not have applied.
    #[error("etcdserver: leader changed")]
    LeaderChanged,
    /// A membership request named a member that is not in the cluster.
    #[error("etcdserver: member not found")]
    MemberNotFound,
    /// A member with one of these peer URLs is already in the cluster.
    #[error("etcdserver: Peer URLs already exists")]
    PeerUrlExists,
    /// The peer URLs given are not valid `http://host:port` URLs.
    #[error("etcdserver: given member URLs are invalid")]
    MemberBadUrls,
    /// Only a learner can be promoted.
    #[error("etcdserver: can only promote a learner member")]
    MemberNotLearner,
    /// The learner has not caught up with the leader's log yet.
    #[error("etcdserver: can only promote a learner member which is in sync with leader")]
    LearnerNotReady,
    /// The cluster already has as many learners as allowed (etcd allows one).
    #[error("etcdserver: too many learner members in cluster")]
    TooManyLearners,
    /// MoveLeader asked on a member that is not the leader.
    #[error("etcdserver: not leader")]
    NotLeader,
    /// MoveLeader named no voter other than the leader.
    #[error("etcdserver: bad leader transferee")]
    BadLeaderTransferee,
    /// The transferee did not become leader in time.
    #[error("etcdserver: request timed out, leader transfer took too long")]
    LeaderTransferTimeout,
    /// A learner serves only serializable reads and status.
    #[error("etcdserver: rpc not supported for learner")]
    NotSupportedForLearner,
    /// The configuration (flags, environment) is invalid.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// Anything else that went wrong inside the member.
    #[error("etcdserver: internal error: {0}")]
    Internal(String),
}
