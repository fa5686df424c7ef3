//! The etcd v3 gRPC API, generated from `.proto` files that carry etcd 3.5's exact package,
//! service, method, message, field and enum names and numbers.
//!
//! kvstore speaks etcd's wire protocol so that real `etcdctl`, the etcd client libraries and
//! everything built on them (kube-apiserver among them) work against it unchanged, and so
//! that real etcd can serve as the reference for behaviour and benchmarks (DESIGN.md,
//! decision 1). The `.proto` sources live in `proto/etcd/api/...`, laid out like etcd 3.5's
//! import paths; `build.rs` compiles them with protox and generates prost messages and tonic
//! clients and servers.
//!
//! - [`mvccpb`]: `KeyValue` and watch `Event`.
//! - [`authpb`]: users, roles and permissions.
//! - [`raftpb`]: kvstore's peer protocol (not etcd's): Raft log commands and the peer service.
//! - [`etcdserverpb`]: the `KV`, `Watch`, `Lease`, `Cluster`, `Maintenance` and `Auth`
//!   services (e.g. [`etcdserverpb::kv_server::KvServer`], [`etcdserverpb::kv_client::KvClient`])
//!   and their request and response messages.
//!
//! Each module is named after its protobuf package, so the generated cross-package paths
//! (`super::mvccpb::KeyValue`, `super::authpb::Permission`) resolve.

/// etcd's `mvccpb` package: the stored key-value record and watch events.
#[allow(clippy::all)]
pub mod mvccpb {
    include!(concat!(env!("OUT_DIR"), "/mvccpb.rs"));
}

/// etcd's `authpb` package: users, roles and key-range permissions.
#[allow(clippy::all)]
pub mod authpb {
    include!(concat!(env!("OUT_DIR"), "/authpb.rs"));
}

/// etcd's `etcdserverpb` package: the client-facing gRPC services and their messages.
#[allow(clippy::all)]
pub mod etcdserverpb {
    include!(concat!(env!("OUT_DIR"), "/etcdserverpb.rs"));
}

/// kvstore's own `raftpb` package: the command a Raft log entry carries and the peer service.
#[allow(clippy::all)]
pub mod raftpb {
    include!(concat!(env!("OUT_DIR"), "/raftpb.rs"));
}

/// The encoded `google.protobuf.FileDescriptorSet` of every file above (with imports and
/// source info), for serving gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/file_descriptor_set.bin"));
