//! The Raft type configuration ([`TypeConfig`]) and short names for openraft's long generic
//! types, so the rest of the crate writes `LogId`, not `openraft::LogId<u64>`.
//!
//! - A log entry's application data is a [`Request`]: one [`Command`], serialized as the
//!   protobuf bytes of `raftpb::Command` (the same bytes a forwarded write carries).
//! - What applying it produced is a [`Response`]: a `raftpb::ApplyResult`, serialized as its
//!   protobuf bytes; errors travel as `ApplyError { code, message }` with etcd's gRPC status.
//! - A member is known to Raft as a [`MemberNode`]: its name and URLs.
//! - Snapshot data is a file ([`tokio::fs::File`]), so a snapshot is never held whole in memory.

use std::sync::{Arc, OnceLock};

use kvstore_proto::raftpb;
use serde::{Deserialize, Serialize};

use super::codec::prost_bytes;
use super::command_wire;
use crate::apply::{Applied, Command};
use crate::membership::Member;

openraft::declare_raft_types!(
    /// kvstore's Raft types: what a log entry carries, what applying it returns, who members
    /// are, and where snapshots live.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = MemberNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = tokio::fs::File,
        AsyncRuntime = openraft::TokioRuntime,
);

/// A member's Raft ID: its etcd member ID.
pub type NodeId = u64;
/// A running Raft node of this member.
pub type Raft = openraft::Raft<TypeConfig>;
/// Raft's server metrics: vote, role, leader, membership (they change only with those).
pub type ServerMetrics = openraft::metrics::RaftServerMetrics<NodeId, MemberNode>;
/// The (term, leader, index) identity of a log entry.
pub type LogId = openraft::LogId<NodeId>;
/// A vote: a term and the candidate voted for (committed once a quorum granted it).
pub type Vote = openraft::Vote<NodeId>;
/// One Raft log entry.
pub type Entry = openraft::Entry<TypeConfig>;
/// What a log entry carries: nothing (a new leader's blank), a command, or a membership.
pub type EntryPayload = openraft::EntryPayload<TypeConfig>;
/// A membership configuration (one or two sets of voters, plus learners).
pub type Membership = openraft::Membership<NodeId, MemberNode>;
/// A membership together with the log id of the entry that introduced it.
pub type StoredMembership = openraft::StoredMembership<NodeId, MemberNode>;
/// What a snapshot covers: last log id, last membership, its ID.
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, MemberNode>;
/// A snapshot: its metadata and its file.
pub type Snapshot = openraft::Snapshot<TypeConfig>;
/// The last purged and last present log ids.
pub type LogState = openraft::storage::LogState<TypeConfig>;
/// The completion callback of a log append.
pub type LogFlushed = openraft::storage::LogFlushed<TypeConfig>;
/// A storage failure; openraft stops the node on one.
pub type StorageError = openraft::StorageError<NodeId>;
/// The I/O detail of a [`StorageError`].
pub type StorageIOError = openraft::StorageIOError<NodeId>;
/// An error of the Raft API, with the API-specific error `E`.
pub type RaftError<E = openraft::error::Infallible> = openraft::error::RaftError<NodeId, E>;
/// Why a client write was refused (not the leader, membership change in progress).
pub type ClientWriteError = openraft::error::ClientWriteError<NodeId, MemberNode>;
/// Why a read-index (leadership confirmation) failed.
pub type CheckIsLeaderError = openraft::error::CheckIsLeaderError<NodeId, MemberNode>;
/// The answer to a client write: the entry's log id and the [`Response`].
pub type ClientWriteResponse = openraft::raft::ClientWriteResponse<TypeConfig>;
/// Raft's AppendEntries RPC.
pub type AppendEntriesRequest = openraft::raft::AppendEntriesRequest<TypeConfig>;
/// Reply to [`AppendEntriesRequest`].
pub type AppendEntriesResponse = openraft::raft::AppendEntriesResponse<NodeId>;
/// Raft's RequestVote RPC.
pub type VoteRequest = openraft::raft::VoteRequest<NodeId>;
/// Reply to [`VoteRequest`].
pub type VoteResponse = openraft::raft::VoteResponse<NodeId>;
/// One chunk of Raft's InstallSnapshot RPC.
pub type InstallSnapshotRequest = openraft::raft::InstallSnapshotRequest<TypeConfig>;
/// Reply to [`InstallSnapshotRequest`].
pub type InstallSnapshotResponse = openraft::raft::InstallSnapshotResponse<NodeId>;

/// A member as Raft knows it: what peers and clients need to reach it. Its ID is the
/// [`NodeId`] it is stored under; whether it votes is part of the membership, not of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberNode {
    /// Human-readable name (`--name`).
    pub name: String,
    /// URLs peers reach it on.
    pub peer_urls: Vec<String>,
    /// URLs clients reach it on.
    pub client_urls: Vec<String>,
}

impl From<&Member> for MemberNode {
    fn from(member: &Member) -> Self {
        Self {
            name: member.name.clone(),
            peer_urls: member.peer_urls.clone(),
            client_urls: member.client_urls.clone(),
        }
    }
}

impl std::fmt::Display for MemberNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({})", self.name, self.peer_urls.join(","))
    }
}

/// The application data of a log entry: one state-machine command. On disk and on the wire it
/// is the protobuf encoding of `raftpb::Command`, written straight from the borrowed command
/// ([`command_wire`]: no copy of its keys and values first).
///
/// A request is shared, not copied (cloning is a reference count), and keeps its encoding once
/// made: the leader writes an entry to its own log and sends it to every follower, and each of
/// those used to encode the command again (and each read back from the log decoded it again),
/// which at 256 clients putting was about a tenth of the leader's CPU (`perf`, see
/// `docs/benchmarks.md`). A request decoded from bytes keeps those bytes, so a follower's log
/// append writes what the leader sent without encoding it again.
#[derive(Clone)]
pub struct Request(Arc<Shared>);

/// A request's command and its encoding.
struct Shared {
    command: Command,
    /// The protobuf encoding of `command`, made on first need.
    wire: OnceLock<Vec<u8>>,
}

impl Request {
    /// A request carrying `command`.
    pub fn new(command: Command) -> Self {
        Self(Arc::new(Shared {
            command,
            wire: OnceLock::new(),
        }))
    }

    /// The command.
    pub fn command(&self) -> &Command {
        &self.0.command
    }

    /// The command, taken out if this is the only handle, copied otherwise. Under Raft the
    /// log's entry cache usually holds another handle when an entry is applied, so applying
    /// copies each command once (applying by reference instead measured no gain,
    /// `docs/benchmarks.md`).
    pub fn into_command(self) -> Command {
        match Arc::try_unwrap(self.0) {
            Ok(shared) => shared.command,
            Err(shared) => shared.command.clone(),
        }
    }

    /// The protobuf encoding of the command (made once, then kept).
    pub fn wire(&self) -> &[u8] {
        self.0
            .wire
            .get_or_init(|| command_wire::encode_to_vec(&self.0.command))
    }
}

impl PartialEq for Request {
    fn eq(&self, other: &Self) -> bool {
        self.command() == other.command()
    }
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Request").field(self.command()).finish()
    }
}

impl Serialize for Request {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(self.wire())
    }
}

impl<'de> Deserialize<'de> for Request {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_bytes(RequestVisitor)
    }
}

/// Decodes a [`Request`] from its protobuf bytes and keeps them as its encoding.
struct RequestVisitor;

impl<'de> serde::de::Visitor<'de> for RequestVisitor {
    type Value = Request;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the bytes of a protobuf raftpb.Command")
    }

    fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<Request, E> {
        let wire = <raftpb::Command as prost::Message>::decode(bytes).map_err(E::custom)?;
        let command = Command::try_from(wire).map_err(E::custom)?;
        Ok(Request(Arc::new(Shared {
            command,
            wire: OnceLock::from(bytes.to_vec()),
        })))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<Request, A::Error> {
        self.visit_bytes(&prost_bytes::seq_bytes(seq)?)
    }
}

/// What applying one log entry produced, as the member that proposed it hands it back to the
/// client: a response message, or an `ApplyError` with etcd's gRPC code and message. Blank and
/// membership entries produce an empty result (`result: None`). Serialized as the protobuf
/// encoding of `raftpb::ApplyResult`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response(#[serde(with = "prost_bytes")] pub raftpb::ApplyResult);

impl Response {
    /// The result of an entry that carries no command (blank or membership).
    pub fn empty() -> Self {
        Self::default()
    }
}

impl From<Result<Applied, crate::Error>> for Response {
    /// The wire form of an apply: the matching response message, or the error as the gRPC
    /// status the client would have got from this member. A compaction's completion signal is
    /// dropped: physical compaction runs on its own thread and nobody waits on it here.
    fn from(result: Result<Applied, crate::Error>) -> Self {
        use raftpb::apply_result::Result as R;
        let result = match result {
            Ok(Applied::Put(r)) => R::Put(r),
            Ok(Applied::DeleteRange(r)) => R::DeleteRange(r),
            Ok(Applied::Txn(r)) => R::Txn(r),
            Ok(Applied::Compact { response, done: _ }) => R::Compaction(response),
            Ok(Applied::LeaseGrant(r)) => R::LeaseGrant(r),
            Ok(Applied::LeaseRevoke(r)) => R::LeaseRevoke(r),
            Ok(Applied::LeaseCheckpoint) => R::LeaseCheckpoint(raftpb::LeaseCheckpointResult {}),
            Ok(Applied::Alarm(r)) => R::Alarm(r),
            Ok(Applied::PublishMember) => R::MemberAttributes(raftpb::MemberAttributesResult {}),
            Err(err) => {
                let status = tonic::Status::from(err);
                R::Error(raftpb::ApplyError {
                    code: status.code() as i32,
                    message: status.message().to_owned(),
                })
            }
        };
        Response(raftpb::ApplyResult {
            result: Some(result),
        })
    }
}

#[cfg(test)]
mod tests {
    use kvstore_proto::etcdserverpb::{PutRequest, PutResponse};

    use super::*;
    use crate::raft::codec;

    #[test]
    fn entries_round_trip_through_postcard() {
        let entry = Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(3, 7), 42),
            payload: EntryPayload::Normal(Request::new(Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            }))),
        };
        let bytes = codec::encode(&entry).expect("encodes");
        let back: Entry = codec::decode(&bytes).expect("decodes");
        assert_eq!(back.log_id, entry.log_id);
        assert!(
            matches!(back.payload, EntryPayload::Normal(ref r) if *r == Request::new(Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            })))
        );
        // Compact: the protobuf bytes plus a handful of varints.
        let proto_len =
            prost::Message::encoded_len(&raftpb::Command::from(Command::Put(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..PutRequest::default()
            })));
        assert!(bytes.len() <= proto_len + 8, "{} bytes", bytes.len());
    }

    #[test]
    fn a_request_decoded_keeps_the_bytes_it_came_from() {
        let request = Request::new(Command::Put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            ..PutRequest::default()
        }));
        // postcard writes the bytes as one string; JSON (self-describing) as a sequence.
        let postcard: Request =
            codec::decode(&codec::encode(&request).expect("encodes")).expect("decodes");
        let json: Request =
            serde_json::from_str(&serde_json::to_string(&request).expect("to json")).expect("json");
        for back in [postcard, json] {
            assert!(
                back.0.wire.get().is_some(),
                "kept at decoding, not encoded again later"
            );
            assert_eq!(back, request);
            assert_eq!(back.wire(), request.wire());
        }
    }

    #[test]
    fn errors_become_etcd_statuses() {
        let r = Response::from(Err(crate::Error::Store(crate::mvcc::Error::LeaseNotFound)));
        match r.0.result {
            Some(raftpb::apply_result::Result::Error(e)) => {
                assert_eq!(e.code, tonic::Code::NotFound as i32);
                assert_eq!(e.message, "etcdserver: requested lease not found");
            }
            other => panic!("want an error, got {other:?}"),
        }
        let ok = Response::from(Ok(Applied::Put(PutResponse::default())));
        let bytes = codec::encode(&ok).expect("encodes");
        assert_eq!(codec::decode::<Response>(&bytes).expect("decodes"), ok);
    }
}
