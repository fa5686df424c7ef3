//! The etcd v3 gRPC services: one thin tonic adapter per service, over a [`crate::node::Node`].
//!
//! - [`kv`]: Range, Put, DeleteRange, Txn, Compact.
//! - [`watch`]: the Watch stream.
//! - [`lease`]: grants, revokes, keep-alives, TTL queries.
//! - [`cluster`]: the member list (membership changes come with replication).
//! - [`maintenance`]: status, hashes, alarms, defragmentation.
//! - [`auth`]: reports authentication disabled.
//! - [`authority`]: repairs the HTTP/2 `:authority` old etcd clients send, before h2 sees it.
//! - [`routes`]: the client listener's router, from a call's path to its service.
//! - [`peer`]: the peer service (`raftpb.Raft`) other members' Raft and forwarded writes use.
//! - [`status`]: the one mapping from errors to etcd's gRPC statuses.

pub mod auth;
pub mod authority;
pub mod cluster;
pub mod kv;
pub mod lease;
pub mod maintenance;
pub mod peer;
pub mod routes;
pub mod status;
pub mod watch;
