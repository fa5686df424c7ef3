//! The history: every operation the clients invoked, with its outcome and timing, and every
//! watch delivery and fault, in the order they completed. Written as JSON lines.

use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

/// Whether an operation happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Acknowledged: it took effect.
    Ok,
    /// Definitely did not take effect (a failed compare, a refused request).
    Fail,
    /// Unknown (timeout, connection lost): it may or may not have taken effect.
    Info,
}

/// One micro-operation of a list-append transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "m", rename_all = "lowercase")]
pub enum Mop {
    /// Append `value` to the list at `key`.
    Append { key: String, value: u64 },
    /// Read the list at `key` (filled in on success).
    Read { key: String, list: Option<Vec<u64>> },
}

/// What an operation did; results are filled in when it completes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "f", rename_all = "kebab-case")]
pub enum Call {
    /// Register: linearizable read (`None`: absent).
    Read { key: String, value: Option<u64> },
    /// Register: blind write.
    Write { key: String, value: u64 },
    /// Register: compare-and-set by value via a txn.
    Cas { key: String, from: u64, to: u64 },
    /// List-append transaction.
    Txn { mops: Vec<Mop> },
    /// Watch workload writer: put (revision filled on success).
    WatchPut {
        keys: Vec<String>,
        value: u64,
        revision: Option<i64>,
    },
    /// Watch workload writer: delete.
    WatchDelete { key: String, revision: Option<i64> },
    /// Kube: create if absent (`revision` of the create).
    KubeCreate {
        key: String,
        value: u64,
        revision: Option<i64>,
    },
    /// Kube: update guarded by mod_revision.
    KubeUpdate {
        key: String,
        expect: i64,
        value: u64,
        revision: Option<i64>,
    },
    /// Kube: delete guarded by mod_revision.
    KubeDelete {
        key: String,
        expect: i64,
        revision: Option<i64>,
    },
    /// Lease: put `key` under a lease of `ttl` seconds.
    LeasePut { key: String, lease: i64, ttl: i64 },
    /// Lease: keep-alive (the TTL the server answered).
    LeaseKeepAlive {
        key: String,
        lease: i64,
        ttl: Option<i64>,
    },
    /// Lease: a linearizable read of the key (whether it exists).
    LeaseRead { key: String, present: Option<bool> },
    /// Kube: the reflector's cache once caught up, and a fresh list at `revision`
    /// (key -> (value, mod_revision)).
    KubeCache {
        revision: i64,
        cache: std::collections::BTreeMap<String, (u64, i64)>,
        list: std::collections::BTreeMap<String, (u64, i64)>,
    },
}

/// One operation of one client.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Op {
    /// Client number.
    pub process: u64,
    /// The member the client talks to.
    pub node: usize,
    /// What it did.
    #[serde(flatten)]
    pub call: Call,
    /// Outcome.
    pub status: Status,
    /// Invocation, in nanoseconds since the run started.
    pub start: u64,
    /// Completion (for `Info`: when the client gave up; the op may take effect later).
    pub end: u64,
    /// The error, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One event as a watcher received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchEvent {
    /// `put` or `delete`.
    pub kind: String,
    pub key: String,
    pub value: Option<u64>,
    pub mod_revision: i64,
    pub create_revision: i64,
    /// The previous value as the server sent it (`prev_kv`).
    pub prev_value: Option<u64>,
}

/// One watch response (or session boundary) as a watcher received it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "w", rename_all = "kebab-case")]
pub enum WatchRecord {
    /// A session opened from `start_revision` (watch id `session`).
    Open {
        watcher: u64,
        session: u64,
        node: usize,
        start_revision: i64,
        at: u64,
    },
    /// A response with events.
    Events {
        watcher: u64,
        session: u64,
        header_revision: i64,
        events: Vec<WatchEvent>,
        at: u64,
    },
    /// A progress notification.
    Progress {
        watcher: u64,
        session: u64,
        header_revision: i64,
        at: u64,
    },
    /// The session ended; `compact_revision` if the server said the start was compacted.
    Close {
        watcher: u64,
        session: u64,
        compact_revision: i64,
        reason: String,
        at: u64,
    },
}

/// A fault window, for the report and the plot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FaultRecord {
    /// e.g. `partition-leader`, `kill`, `pause`.
    pub name: String,
    /// What exactly (members, rates).
    pub detail: String,
    pub start: u64,
    pub end: u64,
}

/// One line of the history file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    Op(Op),
    Watch(WatchRecord),
    Fault(FaultRecord),
}

/// The shared recorder of a run: cheap to clone, appended to by every client.
#[derive(Clone)]
pub struct Recorder {
    /// When the run started; all times are relative to it.
    epoch: Instant,
    /// Everything recorded so far.
    entries: Arc<Mutex<Vec<Entry>>>,
    /// Operations and fault windows recorded so far (for progress output without a copy).
    counts: Arc<[std::sync::atomic::AtomicU64; 2]>,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

impl Recorder {
    /// An empty history starting now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            entries: Arc::default(),
            counts: Arc::default(),
        }
    }

    /// Nanoseconds since the run started.
    pub fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Appends one entry.
    pub fn push(&self, entry: Entry) {
        use std::sync::atomic::Ordering;
        match entry {
            Entry::Op(_) => self.counts[0].fetch_add(1, Ordering::Relaxed),
            Entry::Fault(_) => self.counts[1].fetch_add(1, Ordering::Relaxed),
            Entry::Watch(_) => 0,
        };
        self.entries.lock().push(entry);
    }

    /// (operations, fault windows) recorded so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering;
        (
            self.counts[0].load(Ordering::Relaxed),
            self.counts[1].load(Ordering::Relaxed),
        )
    }

    /// Everything recorded so far.
    pub fn snapshot(&self) -> Vec<Entry> {
        self.entries.lock().clone()
    }
}

/// The operations of a history.
pub fn ops(entries: &[Entry]) -> impl Iterator<Item = &Op> {
    entries.iter().filter_map(|e| match e {
        Entry::Op(op) => Some(op),
        _ => None,
    })
}

/// Writes the history as JSON lines.
pub fn write_jsonl(path: &std::path::Path, entries: &[Entry]) -> std::io::Result<()> {
    use std::io::Write;
    let mut out = std::io::BufWriter::new(std::fs::File::create(path)?);
    for e in entries {
        serde_json::to_writer(&mut out, e)?;
        out.write_all(b"\n")?;
    }
    out.flush()
}

/// Reads a history written by [`write_jsonl`].
pub fn read_jsonl(path: &std::path::Path) -> std::io::Result<Vec<Entry>> {
    let text = std::fs::read_to_string(path)?;
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(std::io::Error::other))
        .collect()
}
