//! Proposal batching: client writes that arrive together share one Raft log entry.
//!
//! openraft 0.9 appends each `client_write` on its own and waits for that append's fsync before
//! it takes the next one (`RaftCore` awaits the flush; our patch in `third_party/openraft` only
//! lets the entry's replication run during it), so on the leader every write cost one fsync, in
//! series: 10,000 puts from 256 clients made 10,000 fsyncs on the leader (and about 100 on each
//! follower, whose appends arrive in batches), and the cluster topped out near one write per
//! fsync time whatever the concurrency.
//!
//! The [`Batcher`] proposes at most [`MAX_IN_FLIGHT`] entries at a time. Writes that arrive
//! while those are in flight wait in its queue and go into the next entry together (a
//! [`Command::Batch`], up to [`MAX_BATCH`] commands or about [`MAX_BATCH_BYTES`]), so one
//! append, one fsync, one replication round and one apply pass serve them all. A write that
//! finds nothing in flight is proposed at once, on its own: batching adds no delay.
//!
//! The state machine applies a batch's commands in order, each exactly as it would apply an
//! entry of its own (its own revision, its own watch events, its own result), and records how
//! far into the batch it got, so a crash part-way neither loses nor repeats a command (see
//! [`super::state_machine`]).

use std::sync::Arc;

use kvstore_proto::raftpb;
use kvstore_proto::raftpb::apply_result::Result as R;
use openraft::error::Fatal;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::command_wire;
use super::types::{ClientWriteError, Raft, RaftError, Request};
use crate::apply::Command;

/// Entries proposed and not yet answered, at most. Two keep the log busy: one is appended and
/// fsynced while the next fills up.
pub const MAX_IN_FLIGHT: usize = 2;
/// Commands in one entry, at most.
pub const MAX_BATCH: usize = 512;
/// Encoded bytes of one entry's commands, about (the last command may go past it; a single
/// request is at most etcd's 1.5 MiB).
pub const MAX_BATCH_BYTES: usize = 4 << 20;
/// Writes waiting for an entry, at most; more wait for room (they are bounded by the requests
/// the servers accept anyway).
const QUEUE: usize = 4096;

/// What a write comes back with: the result of applying it, or why Raft did not take it.
pub type WriteResult = Result<raftpb::ApplyResult, RaftError<ClientWriteError>>;

/// A write waiting for its entry.
struct Pending {
    command: Command,
    /// Its encoded size.
    bytes: usize,
    reply: oneshot::Sender<WriteResult>,
}

/// Hands writes to this member's Raft (the leader's), batched. Cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    queue: mpsc::Sender<Pending>,
}

impl Batcher {
    /// A batcher proposing to `raft`; its task ends when every handle is dropped.
    pub fn spawn(raft: Raft) -> Self {
        let (queue, pending) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, pending));
        Self { queue }
    }

    /// Proposes `command` and waits until it is applied (on this member, the leader) or
    /// refused: what `client_write` would answer for it alone.
    pub async fn write(&self, command: Command) -> WriteResult {
        let bytes = command_wire::encoded_len(&command);
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            command,
            bytes,
            reply,
        };
        if self.queue.send(pending).await.is_err() {
            return Err(RaftError::Fatal(Fatal::Stopped));
        }
        answer
            .await
            .unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }
}

/// Forms entries from the queue while slots for them are free.
async fn run(raft: Raft, mut queue: mpsc::Receiver<Pending>) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    while let Some(first) = queue.recv().await {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let mut bytes = first.bytes;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match queue.try_recv() {
                Ok(next) => {
                    bytes += next.bytes;
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            propose(&raft, batch).await;
            drop(slot);
        });
    }
}

/// Proposes one entry for `batch` and answers each of its writes.
async fn propose(raft: &Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        if let Some(only) = batch.pop() {
            let result = raft
                .client_write(Request::new(only.command))
                .await
                .map(|response| response.data.0);
            let _ = only.reply.send(result);
        }
        return;
    }
    let (commands, replies): (Vec<Command>, Vec<oneshot::Sender<WriteResult>>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let count = commands.len();
    match raft
        .client_write(Request::new(Command::Batch(commands)))
        .await
    {
        Err(refused) => {
            for reply in replies {
                let _ = reply.send(Err(refused.clone()));
            }
        }
        Ok(response) => match response.data.0.result {
            Some(R::Batch(results)) if results.results.len() == count => {
                for (reply, result) in replies.into_iter().zip(results.results) {
                    let _ = reply.send(Ok(result));
                }
            }
            // The whole entry failed as one (it never does today); every write gets that.
            Some(R::Error(error)) => {
                for reply in replies {
                    let _ = reply.send(Ok(raftpb::ApplyResult {
                        result: Some(R::Error(error.clone())),
                    }));
                }
            }
            other => {
                tracing::error!(
                    ?other,
                    count,
                    "a batch applied without one result per command"
                );
                for reply in replies {
                    let _ = reply.send(Ok(raftpb::ApplyResult {
                        result: Some(R::Error(raftpb::ApplyError {
                            code: tonic::Code::Internal as i32,
                            message: "etcdserver: batch applied without its results".into(),
                        })),
                    }));
                }
            }
        },
    }
}
