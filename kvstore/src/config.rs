//! Command-line flags and `KVSTORE_*` environment variables, named as etcd's.

use std::path::PathBuf;

use clap::Parser;

/// kvstore: a Raft-replicated, revisioned key-value store that speaks the etcd v3 API.
///
/// Every flag can also be set by an environment variable: `--data-dir` is
/// `KVSTORE_DATA_DIR`, and so on (etcd's `ETCD_*` names with `KVSTORE_` instead).
#[derive(Clone, Debug, Parser)]
#[command(name = "kvstore", version, about, long_about = None)]
pub struct Config {
    /// Human-readable name for this member.
    #[arg(long, env = "KVSTORE_NAME", default_value = "default")]
    pub name: String,

    /// Path to the data directory [default: ${name}.kvstore].
    #[arg(long, env = "KVSTORE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// List of URLs to listen on for client traffic (comma-separated; http only for now).
    #[arg(
        long,
        env = "KVSTORE_LISTEN_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    pub listen_client_urls: Vec<String>,

    /// List of this member's client URLs to advertise to the rest of the cluster and clients.
    #[arg(
        long,
        env = "KVSTORE_ADVERTISE_CLIENT_URLS",
        default_value = "http://localhost:2379",
        value_delimiter = ','
    )]
    pub advertise_client_urls: Vec<String>,

    /// List of URLs to listen on for peer (Raft) traffic.
    #[arg(
        long,
        env = "KVSTORE_LISTEN_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub listen_peer_urls: Vec<String>,

    /// List of this member's peer URLs to advertise to the rest of the cluster.
    #[arg(
        long,
        env = "KVSTORE_INITIAL_ADVERTISE_PEER_URLS",
        default_value = "http://localhost:2380",
        value_delimiter = ','
    )]
    pub initial_advertise_peer_urls: Vec<String>,

    /// Initial cluster configuration for bootstrapping: name=peer-url,...
    #[arg(
        long,
        env = "KVSTORE_INITIAL_CLUSTER",
        default_value = "default=http://localhost:2380"
    )]
    pub initial_cluster: String,

    /// Initial cluster state: `new` to bootstrap, `existing` to join.
    #[arg(long, env = "KVSTORE_INITIAL_CLUSTER_STATE", default_value = "new", value_parser = ["new", "existing"])]
    pub initial_cluster_state: String,

    /// Initial cluster token, distinguishing clusters bootstrapped with the same configuration.
    #[arg(
        long,
        env = "KVSTORE_INITIAL_CLUSTER_TOKEN",
        default_value = "etcd-cluster"
    )]
    pub initial_cluster_token: String,

    /// Maximum client request size in bytes the server will accept.
    #[arg(long, env = "KVSTORE_MAX_REQUEST_BYTES", default_value_t = 1536 * 1024)]
    pub max_request_bytes: usize,

    /// Maximum number of operations permitted in a transaction.
    #[arg(long, env = "KVSTORE_MAX_TXN_OPS", default_value_t = 128)]
    pub max_txn_ops: usize,

    /// Raise an alarm when the backend size exceeds this many bytes (0 means the default, 2 GiB).
    #[arg(long, env = "KVSTORE_QUOTA_BACKEND_BYTES", default_value_t = 0)]
    pub quota_backend_bytes: u64,

    /// Interpret `--auto-compaction-retention` as a time span (`periodic`) or as a number of
    /// revisions (`revision`).
    #[arg(long, env = "KVSTORE_AUTO_COMPACTION_MODE", default_value = "periodic", value_parser = ["periodic", "revision"])]
    pub auto_compaction_mode: String,

    /// Auto compaction retention: in `periodic` mode a duration (`1h`, `30m`; a bare number
    /// is hours), in `revision` mode the number of revisions to keep. 0 disables auto compaction.
    #[arg(long, env = "KVSTORE_AUTO_COMPACTION_RETENTION", default_value = "0")]
    pub auto_compaction_retention: String,

    /// How often `revision` mode auto compaction looks at the revision (etcd: fixed at 5m).
    #[arg(
        long,
        env = "KVSTORE_EXPERIMENTAL_AUTO_COMPACTION_REVISION_INTERVAL",
        default_value = "5m",
        value_parser = parse_go_duration,
        hide = true
    )]
    pub experimental_auto_compaction_revision_interval: std::time::Duration,

    /// Maximum number of revisions removed from disk per batch by a compaction.
    #[arg(
        long,
        env = "KVSTORE_EXPERIMENTAL_COMPACTION_BATCH_LIMIT",
        default_value_t = 1000
    )]
    pub experimental_compaction_batch_limit: usize,

    /// Check this member's data against its peers' before serving clients; refuse to start
    /// on a mismatch.
    #[arg(
        long,
        env = "KVSTORE_EXPERIMENTAL_INITIAL_CORRUPT_CHECK",
        default_value_t = false
    )]
    pub experimental_initial_corrupt_check: bool,

    /// How often the leader compares the members' HashKV and raises the CORRUPT alarm on a
    /// mismatch (Go-style duration; 0s disables).
    #[arg(
        long,
        env = "KVSTORE_EXPERIMENTAL_CORRUPT_CHECK_TIME",
        default_value = "0s",
        value_parser = parse_go_duration_or_zero
    )]
    pub experimental_corrupt_check_time: std::time::Duration,

    /// Time (in milliseconds) of a heartbeat interval.
    #[arg(long, env = "KVSTORE_HEARTBEAT_INTERVAL", default_value_t = 100)]
    pub heartbeat_interval: u64,

    /// Time (in milliseconds) for an election to timeout.
    #[arg(long, env = "KVSTORE_ELECTION_TIMEOUT", default_value_t = 1000)]
    pub election_timeout: u64,

    /// Number of committed transactions to trigger a snapshot to disk.
    #[arg(long, env = "KVSTORE_SNAPSHOT_COUNT", default_value_t = 100_000)]
    pub snapshot_count: u64,

    /// List of URLs to listen on for the metrics and health endpoints (/metrics, /health).
    #[arg(long, env = "KVSTORE_LISTEN_METRICS_URLS", value_delimiter = ',')]
    pub listen_metrics_urls: Vec<String>,

    /// Interval between watch progress notifications to idle watchers that asked for them
    /// (Go-style duration: 10m, 5s, 500ms; at least 100ms).
    #[arg(
        long,
        env = "KVSTORE_EXPERIMENTAL_WATCH_PROGRESS_NOTIFY_INTERVAL",
        default_value = "10m",
        value_parser = parse_go_duration
    )]
    pub experimental_watch_progress_notify_interval: std::time::Duration,

    /// Log level: debug, info, warn, error.
    #[arg(long, env = "KVSTORE_LOG_LEVEL", default_value = "warn")]
    pub log_level: String,

    /// Log format: `text` for people, `json` for log collectors.
    #[arg(long, env = "KVSTORE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,

    /// Do not fsync the Raft log: a write survives a process crash but not a power loss.
    /// For tests and benchmarks of the rest of the system only.
    #[arg(long, env = "KVSTORE_UNSAFE_NO_FSYNC", default_value_t = false)]
    pub unsafe_no_fsync: bool,
}

impl Config {
    /// The data directory, defaulting to `<name>.kvstore` as etcd defaults to `<name>.etcd`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(format!("{}.kvstore", self.name)))
    }

    /// The quota in bytes (etcd's default of 2 GiB when 0).
    pub fn quota_bytes(&self) -> u64 {
        if self.quota_backend_bytes == 0 {
            2 * 1024 * 1024 * 1024
        } else {
            self.quota_backend_bytes
        }
    }
}

/// Parses a duration as Go's `time.ParseDuration` writes the common ones (`500ms`, `5s`, `10m`).
fn parse_go_duration(text: &str) -> Result<std::time::Duration, String> {
    crate::server::watch::parse_duration(text)
        .ok_or_else(|| format!("invalid duration {text:?}: want e.g. 500ms, 5s, 10m, 1h"))
}

/// Like [`parse_go_duration`], also accepting `0` (off).
fn parse_go_duration_or_zero(text: &str) -> Result<std::time::Duration, String> {
    if text.trim() == "0" {
        return Ok(std::time::Duration::ZERO);
    }
    parse_go_duration(text)
}

/// Parses a URL of the form `http://host:port` (or `host:port`) into a socket address string.
pub fn url_to_addr(url: &str) -> Result<String, crate::Error> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .unwrap_or(url);
    let rest = rest.trim_end_matches('/');
    if rest.is_empty() || !rest.contains(':') {
        return Err(crate::Error::Config(format!(
            "invalid URL {url:?}: want http://host:port"
        )));
    }
    Ok(rest.replace("localhost", "127.0.0.1"))
}
