//! Prometheus `/metrics` and `/health`, served on the client URLs (as etcd does) and on any
//! `--listen-metrics-urls`. Metric names follow etcd's where etcd has the same thing.

use std::sync::Arc;

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Router};
use prometheus::{Encoder, IntCounter, IntGauge, Registry, TextEncoder};

use crate::node::Node;

/// The member's metrics.
pub struct Metrics {
    /// Everything below, for rendering.
    registry: Registry,
    /// Range requests served.
    pub range_total: IntCounter,
    /// Put requests received.
    pub put_total: IntCounter,
    /// DeleteRange requests received.
    pub delete_total: IntCounter,
    /// Txn requests received.
    pub txn_total: IntCounter,
    /// Watch streams open.
    pub watch_streams: IntGauge,
    /// Watchers registered.
    pub watchers: IntGauge,
    /// Whether a leader is known (set at scrape).
    has_leader: IntGauge,
    /// Whether this member leads (set at scrape).
    is_leader: IntGauge,
    /// Leader changes this member has seen since it started.
    pub leader_changes: IntCounter,
    /// Raft log entries applied (set at scrape).
    proposals_applied: IntGauge,
    /// The current Raft term (set at scrape).
    term: IntGauge,
    /// Bytes on disk (set at scrape).
    db_size: IntGauge,
    /// Keys with history in the index (set at scrape).
    keys: IntGauge,
    /// Current revision (set at scrape).
    current_revision: IntGauge,
    /// Compacted revision (set at scrape).
    compact_revision: IntGauge,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help)
        .unwrap_or_else(|e| panic!("invariant: metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(c.clone()))
        .unwrap_or_else(|e| panic!("invariant: metric {name} registered once: {e}"));
    c
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help)
        .unwrap_or_else(|e| panic!("invariant: metric {name} is well-formed: {e}"));
    registry
        .register(Box::new(g.clone()))
        .unwrap_or_else(|e| panic!("invariant: metric {name} registered once: {e}"));
    g
}

impl Metrics {
    /// A fresh set of metrics in its own registry.
    pub fn new() -> Self {
        let r = Registry::new();
        Self {
            range_total: counter(
                &r,
                "etcd_mvcc_range_total",
                "Total number of ranges seen by this member.",
            ),
            put_total: counter(
                &r,
                "etcd_mvcc_put_total",
                "Total number of puts seen by this member.",
            ),
            delete_total: counter(
                &r,
                "etcd_mvcc_delete_total",
                "Total number of deletes seen by this member.",
            ),
            txn_total: counter(
                &r,
                "etcd_mvcc_txn_total",
                "Total number of txns seen by this member.",
            ),
            watch_streams: gauge(
                &r,
                "etcd_debugging_mvcc_watch_stream_total",
                "Total number of watch streams.",
            ),
            watchers: gauge(
                &r,
                "etcd_debugging_mvcc_watcher_total",
                "Total number of watchers.",
            ),
            has_leader: gauge(
                &r,
                "etcd_server_has_leader",
                "Whether or not a leader exists. 1 is existence, 0 is not.",
            ),
            is_leader: gauge(
                &r,
                "etcd_server_is_leader",
                "Whether or not this member is a leader. 1 if is, 0 otherwise.",
            ),
            leader_changes: counter(
                &r,
                "etcd_server_leader_changes_seen_total",
                "The number of leader changes seen.",
            ),
            proposals_applied: gauge(
                &r,
                "etcd_server_proposals_applied_total",
                "The total number of consensus proposals applied.",
            ),
            term: gauge(
                &r,
                "etcd_server_term",
                "The current Raft term of this member.",
            ),
            db_size: gauge(
                &r,
                "etcd_mvcc_db_total_size_in_bytes",
                "Total size of the underlying database physically allocated in bytes.",
            ),
            keys: gauge(
                &r,
                "etcd_debugging_mvcc_keys_total",
                "Total number of keys.",
            ),
            current_revision: gauge(
                &r,
                "etcd_debugging_mvcc_current_revision",
                "The current revision of store.",
            ),
            compact_revision: gauge(
                &r,
                "etcd_debugging_mvcc_compact_revision",
                "The revision of the last compaction in store.",
            ),
            registry: r,
        }
    }

    /// The text exposition of every metric, with the gauges read from the node now.
    pub fn render(&self, node: &Node) -> String {
        let leader = node.proposer.leader();
        self.has_leader.set(i64::from(leader.is_some()));
        self.is_leader
            .set(i64::from(leader == Some(node.membership.member_id)));
        self.proposals_applied.set(node.applied_index() as i64);
        self.term.set(node.proposer.term() as i64);
        self.db_size
            .set(crate::quota::backend_size(node.store.backend()) as i64);
        self.keys.set(node.store.index_len() as i64);
        self.current_revision.set(node.store.current_revision());
        self.compact_revision.set(node.store.compacted_revision());
        let mut out = Vec::new();
        if let Err(err) = TextEncoder::new().encode(&self.registry.gather(), &mut out) {
            tracing::error!(cause = %err, "encoding metrics");
        }
        String::from_utf8_lossy(&out).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `/metrics` and `/health` for a node.
pub fn http_router(node: Arc<Node>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health))
        .with_state(node)
}

async fn metrics(State(node): State<Arc<Node>>) -> impl IntoResponse {
    (
        [("content-type", "text/plain; version=0.0.4")],
        node.metrics.render(&node),
    )
}

/// etcd's `/health`: healthy when a leader is known and no alarm is active.
async fn health(State(node): State<Arc<Node>>) -> impl IntoResponse {
    let alarms = node.alarms.list();
    let healthy = node.proposer.leader().is_some() && alarms.is_empty();
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        [("content-type", "application/json")],
        format!("{{\"health\":\"{healthy}\"}}"),
    )
}
