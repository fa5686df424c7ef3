//! Raft storage: the log, the hard state and the state machine of one member, on openraft 0.9
//! (`storage-v2`), all in the member's one RocksDB.
//!
//! # Layout
//! - [`types`]: the [`TypeConfig`], log entry data ([`Request`]) and apply result
//!   ([`Response`]), the [`MemberNode`], and aliases for openraft's long generic names.
//! - [`codec`]: byte encodings (postcard for Raft structures, protobuf for commands, big-endian
//!   log keys).
//! - [`command_wire`]: a command's protobuf encoding, written from a borrowed command.
//! - [`log_store`]: [`LogStore`], the log and vote in the `raft_log` and `raft_state` column
//!   families, with group-committed appends.
//! - [`journal`]: what makes an append durable: preallocated segment files of the log's own,
//!   read back at open to restore what a crash took from RocksDB's memtables.
//! - [`entry_cache`]: the newest log entries in memory, so replication and applying do not
//!   read back from disk (and decode) what was just appended.
//! - [`state_machine`]: [`StateMachine`], committed entries applied through the
//!   [`Applier`](crate::apply::Applier), the applied position written with the data.
//! - [`snapshot`]: the snapshot file format, building one from a RocksDB snapshot and
//!   installing one.
//! - [`network`]: [`PeerNetwork`], openraft's network over the peer service, with one cached
//!   channel per peer ([`Peers`]), timeouts and back-off.
//! - [`batcher`]: proposal batching — writes that arrive together share one log entry (and
//!   one fsync), since openraft 0.9 syncs each `client_write` on its own.
//! - [`proposer`]: [`RaftProposer`], writes through the log (forwarded to the leader from a
//!   follower) and read-index barriers for linearizable reads.
//! - [`membership`]: etcd's MemberAdd/Promote/Remove/Update rules on openraft's membership.
//! - [`read_index`]: the leader's read index, and rounds of it shared by concurrent reads.
//! - [`prevote`]: elections with pre-vote, in place of openraft's election timer, so a
//!   member that was cut off does not depose a healthy leader when it returns.
//!
//! # Durability, in one place
//! - The log append is the one fsync on the write path (of the journal, not RocksDB's WAL),
//!   shared by every entry of an append and by appends queued behind it (group commit).
//! - The vote is fsynced before it is acknowledged; purging the log is fsynced.
//! - Applying is not synced: the data of an entry and its log id land in one `WriteBatch`, so
//!   after a crash the store is at some applied entry, and openraft re-applies from the next.
//! - Snapshots are fsynced files replaced by rename; an interrupted install is redone at open.

pub mod batcher;
pub mod codec;
pub mod command_wire;
pub mod entry_cache;
pub mod journal;
pub mod log_store;
pub mod membership;
pub mod network;
pub mod prevote;
pub mod proposer;
pub mod read_index;
pub mod snapshot;
pub mod state_machine;
pub mod types;

pub use log_store::{LogReader, LogStore};
pub use network::{PeerNetwork, PeerOptions, Peers};
pub use prevote::{ElectionTiming, Elector, PreVoteJudge};
pub use proposer::{ProposerOptions, RaftProposer};
pub use state_machine::{AfterInstall, SnapshotBuilder, StateMachine};
pub use types::{MemberNode, NodeId, Request, Response, TypeConfig};
