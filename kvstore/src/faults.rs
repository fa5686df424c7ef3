//! Test-only faults, compiled in only with the `fault-injection` feature (the `kvstore-faulty`
//! binary); a default or release build contains none of this.
//!
//! The chaos suite (`chaos-tests`) runs the faulty binary with `KVSTORE_INJECT_FAULTS` set to a
//! comma-separated list of fault names to prove its checkers catch real bugs. Each fault is one
//! plausible implementation mistake:
//! - `stale-read`: linearizable reads are served from local state without a read index, so a
//!   lagging follower or a deposed leader answers with old data.
//! - `ack-before-commit`: Put is acknowledged at once and proposed in the background, so a
//!   read right after the acknowledgement may miss it and a failed proposal loses it.
//! - `drop-watch-event`: the watch hub skips dispatching every commit whose revision is a
//!   multiple of [`DROP_WATCH_EVERY`] to synced watchers (a gap in every watch stream).

use std::sync::OnceLock;

/// The environment variable naming the active faults.
pub const ENV: &str = "KVSTORE_INJECT_FAULTS";

/// With `drop-watch-event`, commits at revisions that are multiples of this are not dispatched.
pub const DROP_WATCH_EVERY: i64 = 37;

/// One injectable bug.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Linearizable reads skip the read index.
    StaleRead,
    /// Put answers before its entry is committed.
    AckBeforeCommit,
    /// Some commits are never dispatched to synced watchers.
    DropWatchEvent,
}

impl Fault {
    fn parse(name: &str) -> Option<Self> {
        match name.trim() {
            "stale-read" => Some(Self::StaleRead),
            "ack-before-commit" => Some(Self::AckBeforeCommit),
            "drop-watch-event" => Some(Self::DropWatchEvent),
            _ => None,
        }
    }
}

/// The faults named in [`ENV`], read once; unknown names are reported and ignored.
fn enabled() -> &'static [Fault] {
    static ENABLED: OnceLock<Vec<Fault>> = OnceLock::new();
    ENABLED.get_or_init(|| {
        let spec = std::env::var(ENV).unwrap_or_default();
        let mut faults = Vec::new();
        for name in spec.split(',').filter(|n| !n.trim().is_empty()) {
            match Fault::parse(name) {
                Some(fault) => faults.push(fault),
                None => tracing::error!(fault = name, "unknown injected fault ignored"),
            }
        }
        if !faults.is_empty() {
            tracing::warn!(
                ?faults,
                "FAULT INJECTION ACTIVE: this member is deliberately broken"
            );
        }
        faults
    })
}

/// Whether `fault` is switched on for this process.
pub fn active(fault: Fault) -> bool {
    enabled().contains(&fault)
}

/// Whether the watch hub should skip dispatching the commit at `rev`.
pub fn drop_watch_revision(rev: i64) -> bool {
    active(Fault::DropWatchEvent) && rev % DROP_WATCH_EVERY == 0
}
