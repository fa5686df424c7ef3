//! Jepsen-style chaos testing for kvstore: real kvstore processes in their own network
//! namespaces, faults injected by a seeded schedule, workloads through the etcd API, and
//! checkers that decide from the recorded history whether kvstore kept its promises.
//! See `docs/chaos.md`.
//!
//! # Layout
//! - [`hosts`]: network namespaces, the bridge, the client namespace, partitions and
//!   bandwidth limits; loopback mode when namespaces are unavailable.
//! - [`cluster`]: kvstore member processes (start, SIGKILL, SIGSTOP, churn) and gRPC clients.
//! - [`nemesis`]: the faults and the seeded schedule that injects and heals them.
//! - [`workload`]: register, append, watch, kube and lease clients.
//! - [`history`]: the recorded operations, watch deliveries and faults (JSON lines).
//! - [`check`]: the checkers (linearizability, Elle-style append, watch, kube, lease).
//! - [`report`]: the results folder: history, verdicts, timeline plot.
//! - [`runner`]: one run from set-up to verdict.
//! - [`stop`]: the stop signal shared by the schedule and the clients.
//! - [`error`]: the crate's error type.

pub mod check;
pub mod cluster;
pub mod error;
pub mod history;
pub mod hosts;
pub mod nemesis;
pub mod report;
pub mod runner;
pub mod stop;
pub mod workload;

pub use error::{Error, Result};
