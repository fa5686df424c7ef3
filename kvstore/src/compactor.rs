//! Auto-compaction (etcd's `--auto-compaction-mode` and `--auto-compaction-retention`): the
//! leader compacts history on a schedule by proposing an ordinary Compact through Raft, so every
//! member compacts at the same revision at the same point of the log. Followers keep watching
//! the revision too, so a new leader continues where the old one stopped.
//!
//! - **periodic** (etcd's `Periodic`): keep `retention` worth of history. Every `retention / 10`
//!   (at most 6 minutes) the current revision is sampled; once `retention` has passed since the
//!   last success (the first time) or `min(retention, 1h)` (afterwards), the oldest sample —
//!   the revision of `retention` ago — is compacted.
//! - **revision** (etcd's `Revision`): keep the last `retention` revisions; every 5 minutes
//!   (`--experimental-auto-compaction-revision-interval`) compact at `current - retention` if
//!   that moved since the last time.
//!
//! The removal of old revisions from disk is the store's batched compaction (`mvcc/compaction`),
//! so writes are never blocked for long.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::CompactionRequest;

use crate::apply::Command;
use crate::config::Config;
use crate::node::Node;
use crate::Error;

/// etcd's `retryDivisor`: periodic mode samples the revision `retention / 10` apart.
const RETRY_DIVISOR: u32 = 10;
/// The longest interval between periodic compactions (and the base of sampling).
const MAX_COMPACT_INTERVAL: Duration = Duration::from_secs(3600);

/// An auto-compaction policy, parsed from the flags.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    /// Keep this much history by time.
    Periodic(Duration),
    /// Keep this many revisions, checking every `interval`.
    Revision {
        /// Revisions kept.
        retention: i64,
        /// How often the revision is looked at.
        interval: Duration,
    },
}

impl Policy {
    /// The policy the flags ask for; `None` when auto-compaction is off (retention 0).
    /// etcd's rules: a bare number is hours (periodic) or revisions (revision); periodic
    /// also takes a duration such as `30m`.
    pub fn from_config(config: &Config) -> Result<Option<Self>, Error> {
        let retention = config.auto_compaction_retention.trim();
        let bad = |why: &str| {
            Error::Config(format!(
                "error parsing --auto-compaction-retention {retention:?}: {why}"
            ))
        };
        let number = retention.parse::<i64>().ok();
        let policy = match config.auto_compaction_mode.as_str() {
            "periodic" => {
                let span = match number {
                    Some(h) if h < 0 => return Err(bad("must not be negative")),
                    Some(h) => Duration::from_secs(h as u64 * 3600),
                    None => crate::server::watch::parse_duration(retention)
                        .ok_or_else(|| bad("want hours (1) or a duration (1h, 30m, 10s)"))?,
                };
                (!span.is_zero()).then_some(Self::Periodic(span))
            }
            "revision" => {
                let count = match number {
                    Some(n) if n >= 0 => n,
                    _ => return Err(bad("revision mode wants a number of revisions (1000)")),
                };
                (count > 0).then_some(Self::Revision {
                    retention: count,
                    interval: config.experimental_auto_compaction_revision_interval,
                })
            }
            other => {
                return Err(Error::Config(format!(
                    "unknown auto-compaction-mode {other:?}"
                )))
            }
        };
        Ok(policy)
    }
}

/// Starts the auto-compactor of `node` if its flags enable one; it stops at shutdown.
pub fn spawn(node: Arc<Node>) -> Result<(), Error> {
    let Some(policy) = Policy::from_config(&node.config)? else {
        return Ok(());
    };
    tracing::info!(?policy, "auto compaction enabled");
    tokio::spawn(async move {
        let shutdown = node.shutdown.clone();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run(&node, policy) => {}
        }
    });
    Ok(())
}

async fn run(node: &Node, policy: Policy) {
    match policy {
        Policy::Periodic(retention) => periodic(node, retention).await,
        Policy::Revision {
            retention,
            interval,
        } => revision(node, retention, interval).await,
    }
}

/// etcd's periodic compactor: sample the revision every `retention / 10`, compact the sample of
/// `retention` ago.
async fn periodic(node: &Node, retention: Duration) {
    let capped = retention.min(MAX_COMPACT_INTERVAL);
    let retry = (capped / RETRY_DIVISOR).max(Duration::from_millis(10));
    let samples = (retention.as_nanos() / retry.as_nanos()) as usize + 1;
    let mut revs: VecDeque<i64> = VecDeque::with_capacity(samples + 1);
    let mut last_success = Instant::now();
    let mut wait = retention;
    loop {
        revs.push_back(node.store.current_revision());
        if revs.len() > samples {
            revs.pop_front();
        }
        tokio::time::sleep(retry).await;
        if !is_leader(node) || last_success.elapsed() < wait {
            continue;
        }
        wait = capped;
        let Some(&rev) = revs.front() else { continue };
        if compact(node, rev, "periodic").await {
            last_success = Instant::now();
        }
    }
}

/// etcd's revision compactor: every `interval`, compact at `current - retention` if it moved.
async fn revision(node: &Node, retention: i64, interval: Duration) {
    let mut last = 0;
    loop {
        tokio::time::sleep(interval).await;
        if !is_leader(node) {
            continue;
        }
        let rev = node.store.current_revision() - retention;
        if rev <= 0 || rev == last {
            continue;
        }
        if compact(node, rev, "revision").await {
            last = rev;
        }
    }
}

fn is_leader(node: &Node) -> bool {
    node.proposer.leader() == Some(node.membership.member_id)
}

/// Proposes a compaction at `rev`; true if it succeeded or was already done.
async fn compact(node: &Node, rev: i64, mode: &str) -> bool {
    if rev <= node.store.compacted_revision() {
        return true;
    }
    tracing::info!(revision = rev, mode, "starting auto compaction");
    let started = Instant::now();
    let command = Command::Compact(CompactionRequest {
        revision: rev,
        physical: false,
    });
    match node.proposer.propose(command).await {
        Ok(_) => {
            tracing::info!(revision = rev, mode, took = ?started.elapsed(), "completed auto compaction");
            true
        }
        Err(Error::Store(crate::mvcc::Error::Compacted)) => true,
        Err(err) => {
            tracing::warn!(revision = rev, mode, cause = %err, "auto compaction failed; will retry");
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn policy(mode: &str, retention: &str) -> Result<Option<Policy>, Error> {
        let config = Config::parse_from([
            "kvstore".to_string(),
            format!("--auto-compaction-mode={mode}"),
            format!("--auto-compaction-retention={retention}"),
        ]);
        Policy::from_config(&config)
    }

    #[test]
    fn retention_parses_as_etcd_parses_it() {
        assert_eq!(
            policy("periodic", "1").ok().flatten(),
            Some(Policy::Periodic(Duration::from_secs(3600)))
        );
        assert_eq!(
            policy("periodic", "30m").ok().flatten(),
            Some(Policy::Periodic(Duration::from_secs(1800)))
        );
        assert_eq!(policy("periodic", "0").ok().flatten(), None);
        assert_eq!(
            policy("revision", "1000").ok().flatten(),
            Some(Policy::Revision {
                retention: 1000,
                interval: Duration::from_secs(300)
            })
        );
        assert!(policy("revision", "1h").is_err());
        assert!(policy("periodic", "soon").is_err());
        assert!(policy("periodic", "-1").is_err());
    }
}
