//! Read indexes: how a linearizable read learns which log index it must wait for.
//!
//! The leader confirms it is still leader with a round of heartbeats to a quorum and takes its
//! commit index (at least the first entry of its own term): [`leader_read_index`]. Followers
//! ask the leader for it over the peer service (`ReadIndex`). Concurrent reads share rounds
//! ([`ReadIndexBatch`]), as etcd batches them.

use openraft::error::RaftError;

use super::proposer::fatal_error;
use super::types::Raft;
use crate::Error;

/// Why a read index was not obtained.
#[derive(Debug)]
pub enum ReadIndexError {
    /// Worth asking again (no quorum yet, leader changing, leader unreachable).
    Retry(String),
    /// Final.
    Fail(Error),
}

/// The read index of this member as leader: it confirms its leadership with a heartbeat round
/// to a quorum (`None`: nothing committed yet).
pub async fn leader_read_index(raft: &Raft) -> Result<Option<u64>, ReadIndexError> {
    match raft.get_read_log_id().await {
        Ok((read_log_id, _applied)) => Ok(read_log_id.map(|id| id.index)),
        Err(RaftError::APIError(e)) => Err(ReadIndexError::Retry(e.to_string())),
        Err(RaftError::Fatal(fatal)) => Err(ReadIndexError::Fail(fatal_error(&fatal))),
    }
}

/// Shares read-index rounds among concurrent linearizable reads, as etcd batches them: a read
/// may use the index of any round that *started* after the read arrived, since that round
/// confirmed leadership and took the commit index after every write acknowledged before the
/// read. One round runs at a time; reads arriving meanwhile share the next one. Without this,
/// every read costs a heartbeat round to every voter.
#[derive(Default)]
pub struct ReadIndexBatch {
    /// Held while a round runs, so rounds do not overlap.
    round: tokio::sync::Mutex<()>,
    /// Rounds started, and the last successful one.
    state: parking_lot::Mutex<BatchState>,
}

#[derive(Default)]
struct BatchState {
    /// Rounds started so far; a round's number is the count when it started.
    started: u64,
    /// The number and index of the latest successful round.
    done: Option<(u64, Option<u64>)>,
}

impl ReadIndexBatch {
    /// A read index for a read arriving now: from a round started after now, run by `fetch`
    /// unless another read's round qualifies. Failures are not shared (each read retries).
    pub async fn run<F, Fut>(&self, fetch: F) -> Result<Option<u64>, ReadIndexError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<u64>, ReadIndexError>>,
    {
        let arrived = self.state.lock().started;
        let _round = self.round.lock().await;
        let round = {
            let mut state = self.state.lock();
            if let Some((done, index)) = state.done {
                if done > arrived {
                    return Ok(index);
                }
            }
            state.started += 1;
            state.started
        };
        let result = fetch().await;
        if let Ok(index) = &result {
            self.state.lock().done = Some((round, *index));
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::sync::oneshot;

    use super::*;

    #[tokio::test]
    async fn reads_share_only_rounds_that_started_after_they_arrived() {
        let batch = Arc::new(ReadIndexBatch::default());
        let (release, released) = oneshot::channel::<()>();
        let first = tokio::spawn({
            let batch = Arc::clone(&batch);
            async move {
                batch
                    .run(|| async {
                        let _ = released.await;
                        Ok(Some(1))
                    })
                    .await
            }
        });
        while batch.state.lock().started == 0 {
            tokio::task::yield_now().await;
        }
        // Both arrive while round 1 runs: its index may predate their writes, so they share a
        // new round instead.
        let rounds = Arc::new(AtomicU32::new(0));
        let later: Vec<_> = (0..2)
            .map(|_| {
                let batch = Arc::clone(&batch);
                let rounds = Arc::clone(&rounds);
                tokio::spawn(async move {
                    batch
                        .run(|| async move {
                            rounds.fetch_add(1, Ordering::SeqCst);
                            Ok(Some(2))
                        })
                        .await
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        release.send(()).expect("round 1 waits");
        assert_eq!(first.await.expect("joins").expect("index"), Some(1));
        for read in later {
            assert_eq!(read.await.expect("joins").expect("index"), Some(2));
        }
        assert_eq!(rounds.load(Ordering::SeqCst), 1, "one shared round");
    }
}
