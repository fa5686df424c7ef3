//! Workloads: concurrent clients that drive the cluster through the etcd API and record every
//! operation in the history.
//!
//! - [`register`]: get, put and compare-and-set on a few keys (linearizability).
//! - [`append`]: Elle-style list appends in multi-key transactions (strict serializability).
//! - [`watch`]: watchers that disconnect and resume from their last revision.
//! - [`kube`]: optimistic create/update/delete by mod_revision plus a list+watch reflector.
//! - [`lease`]: keys under short leases that must expire.

pub mod append;
pub mod kube;
pub mod lease;
pub mod register;
pub mod watch;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::cluster::Cluster;
use crate::history::{Call, Entry, Op, Recorder, Status};
use crate::stop::Stop;

/// A workload name on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Workload {
    Register,
    Append,
    Watch,
    Kube,
    Lease,
}

impl Workload {
    /// Every workload (`--workload all`).
    pub const ALL: [Workload; 5] = [
        Workload::Register,
        Workload::Append,
        Workload::Watch,
        Workload::Kube,
        Workload::Lease,
    ];
}

/// What every client needs.
#[derive(Clone)]
pub struct Ctx {
    pub cluster: Arc<Cluster>,
    pub recorder: Recorder,
    pub stop: Stop,
    /// Next client (process) number.
    processes: Arc<AtomicU64>,
    /// Unique values for writes.
    values: Arc<AtomicU64>,
}

/// The per-request timeout of clients: past it, a write's outcome is unknown.
pub const OP_TIMEOUT: Duration = Duration::from_secs(2);

impl Ctx {
    /// A context over a running cluster.
    pub fn new(cluster: Arc<Cluster>, recorder: Recorder, stop: Stop) -> Self {
        Self {
            cluster,
            recorder,
            stop,
            processes: Arc::default(),
            values: Arc::new(AtomicU64::new(1)),
        }
    }

    /// A new client number.
    pub fn process(&self) -> u64 {
        self.processes.fetch_add(1, Ordering::Relaxed)
    }

    /// A value never written before.
    pub fn value(&self) -> u64 {
        self.values.fetch_add(1, Ordering::Relaxed)
    }

    /// Records a completed operation.
    pub fn record(&self, process: u64, node: usize, call: Call, start: u64, outcome: Outcome) {
        let (status, error) = match outcome {
            Outcome::Ok => (Status::Ok, None),
            Outcome::Fail(e) => (Status::Fail, Some(e)),
            Outcome::Info(e) => (Status::Info, Some(e)),
        };
        self.recorder.push(Entry::Op(Op {
            process,
            node,
            call,
            status,
            start,
            end: self.recorder.now(),
            error,
        }));
    }

    /// Pause between a client's operations.
    pub async fn pace(&self, ms: u64) -> bool {
        self.stop.sleep(Duration::from_millis(ms)).await
    }
}

/// Runs `clients` copies of `client` (numbered from 0) until they all return.
pub async fn run_clients<F, Fut>(ctx: &Ctx, clients: usize, client: F)
where
    F: Fn(Ctx, usize) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let tasks: Vec<_> = (0..clients)
        .map(|c| tokio::spawn(client(ctx.clone(), c)))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
}

/// How an operation ended.
pub enum Outcome {
    Ok,
    Fail(String),
    Info(String),
}

/// Runs `fut` with the client timeout; a timeout becomes a `DeadlineExceeded` status.
pub async fn timed<T>(
    fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
) -> Result<T, tonic::Status> {
    match tokio::time::timeout(OP_TIMEOUT, fut).await {
        Ok(r) => r.map(tonic::Response::into_inner),
        Err(_) => Err(tonic::Status::deadline_exceeded("client timeout")),
    }
}

/// A failed write: unknown, unless the server said it refused before doing anything.
pub fn write_error(status: &tonic::Status) -> Outcome {
    use tonic::Code;
    let msg = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::InvalidArgument | Code::FailedPrecondition | Code::PermissionDenied => {
            Outcome::Fail(msg)
        }
        _ => Outcome::Info(msg),
    }
}

/// Parses a decimal value stored by a workload.
pub fn parse_u64(bytes: &[u8]) -> Option<u64> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}
