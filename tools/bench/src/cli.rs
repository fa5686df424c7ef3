//! Command line: etcd `benchmark`'s global flags and one subcommand per workload.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// A benchmark tool for etcd v3 API servers (kvstore and etcd), like etcd's `benchmark`.
///
/// Every workload drives `--clients` concurrent clients spread over `--conns` gRPC
/// connections, until `--total` operations completed or for `--duration`, and prints
/// throughput and latency percentiles (p50, p90, p99, p99.9, max) as a table or, with
/// `--json`, as one JSON object.
#[derive(Parser, Debug)]
#[command(name = "kvbench", version)]
pub struct Cli {
    /// Flags every workload shares.
    #[command(flatten)]
    pub common: Common,
    /// What to run.
    #[command(subcommand)]
    pub workload: Workload,
}

/// Flags shared by every workload (etcd benchmark's global flags).
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// gRPC endpoints, comma-separated (`host:port` or `http://host:port`).
    #[arg(
        long,
        global = true,
        value_delimiter = ',',
        default_value = "127.0.0.1:2379"
    )]
    pub endpoints: Vec<String>,
    /// Number of gRPC connections (HTTP/2 connections), spread over the endpoints. Unary KV
    /// calls and fan-out watch streams use raw HTTP/2 links, the other streams tonic channels;
    /// a workload opens only the kind it uses (`kube` both: this many of each).
    #[arg(long, global = true, default_value_t = 1)]
    pub conns: usize,
    /// Number of concurrent clients, spread over the connections.
    #[arg(long, global = true, default_value_t = 1)]
    pub clients: usize,
    /// Total number of operations (ignored when --duration is given).
    #[arg(long, global = true, default_value_t = 10_000)]
    pub total: u64,
    /// Run for this long instead of --total operations (e.g. 10s, 500ms, 2m).
    #[arg(long, global = true, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Key size in bytes (keys are zero-padded decimal numbers).
    #[arg(long, global = true, default_value_t = 8)]
    pub key_size: usize,
    /// Value size in bytes.
    #[arg(long, global = true, default_value_t = 8)]
    pub val_size: usize,
    /// Number of distinct keys the workload touches.
    #[arg(long, global = true, default_value_t = 1)]
    pub key_space_size: u64,
    /// Walk the key space in order instead of picking keys at random.
    #[arg(long, global = true)]
    pub sequential_keys: bool,
    /// Send every request to the leader only (found with Maintenance.Status).
    #[arg(long, global = true)]
    pub target_leader: bool,
    /// Print the report as one JSON object.
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not draw the progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, global = true)]
    pub no_progress: bool,
    /// Give up on one request after this long (counted as an error).
    #[arg(long, global = true, default_value = "10s", value_parser = parse_duration)]
    pub request_timeout: Duration,
}

/// Range consistency, as etcd's `--consistency`.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Consistency {
    /// Linearizable: the read goes through a read index on the leader.
    L,
    /// Serializable: the member answers from its own state.
    S,
}

impl Consistency {
    /// Whether requests carry `serializable: true`.
    pub fn serializable(self) -> bool {
        self == Consistency::S
    }
}

/// Options of the watch workloads.
#[derive(Args, Debug, Clone)]
pub struct WatchOpts {
    /// Number of watchers.
    #[arg(long, default_value_t = 100)]
    pub watchers: usize,
    /// Number of watch streams the watchers are spread over.
    #[arg(long, default_value_t = 10)]
    pub streams: usize,
    /// Number of distinct keys watched (watcher i watches key i mod this).
    #[arg(long, default_value_t = 10)]
    pub watched_keys: u64,
    /// Puts per second (0 = as fast as the writers go).
    #[arg(long, default_value_t = 0)]
    pub put_rate: u64,
}

/// The workloads.
#[derive(Subcommand, Debug, Clone)]
pub enum Workload {
    /// Put keys (each put its own request; --batch N puts N keys per transaction).
    Put {
        /// Puts per request (more than 1: a transaction of N puts on distinct keys).
        #[arg(long, default_value_t = 1)]
        batch: u64,
    },
    /// Range single keys of a preloaded key space.
    Range {
        /// Linearizable (l) or serializable (s).
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
        /// Do not write the key space first (it is already there, or reads of missing keys
        /// are what you want to measure).
        #[arg(long)]
        no_preload: bool,
    },
    /// Compare-and-swap: a transaction putting a key if its mod_revision is the one last seen,
    /// else reading it (a conflict).
    TxnPut,
    /// Transactions that either read or write one key.
    TxnMixed {
        /// Reads per write.
        #[arg(long, default_value_t = 1.0)]
        rw_ratio: f64,
        /// Consistency of the reads.
        #[arg(long, value_enum, default_value = "l")]
        consistency: Consistency,
    },
    /// N watchers on M keys while --clients writers put: events/s delivered and put-to-event
    /// latency.
    Watch(WatchOpts),
    /// Put-to-event latency at a steady put rate (one key, --put-rate puts per second).
    WatchLatency {
        /// Number of watchers on the key.
        #[arg(long, default_value_t = 100)]
        watchers: usize,
        /// Number of watch streams.
        #[arg(long, default_value_t = 10)]
        streams: usize,
        /// Puts per second.
        #[arg(long, default_value_t = 100)]
        put_rate: u64,
    },
    /// Open idle watchers and hold them (for measuring the server's memory per watcher).
    WatchHold {
        /// Number of watchers.
        #[arg(long, default_value_t = 10_000)]
        watchers: usize,
        /// Number of watch streams.
        #[arg(long, default_value_t = 100)]
        streams: usize,
        /// How long to hold them once all are created.
        #[arg(long, default_value = "10s", value_parser = parse_duration)]
        hold: Duration,
        /// Create this file once every watcher is created.
        #[arg(long)]
        ready_file: Option<std::path::PathBuf>,
    },
    /// Lease keep-alive round trips, one lease and one keep-alive stream per client.
    LeaseKeepalive,
    /// The Kubernetes storage pattern on --key-space-size objects: optimistic updates, creates
    /// and deletes by mod_revision, paginated lists, and list+watch watchers.
    Kube {
        /// Page size of lists (the apiserver's default chunk).
        #[arg(long, default_value_t = 500)]
        page_size: i64,
        /// Number of list+watch clients (informers).
        #[arg(long, default_value_t = 4)]
        informers: usize,
        /// Percent of operations that are paginated lists.
        #[arg(long, default_value_t = 5)]
        list_percent: u32,
    },
}

impl Workload {
    /// The workload's name as typed on the command line.
    pub fn name(&self) -> &'static str {
        match self {
            Workload::Put { .. } => "put",
            Workload::Range {
                consistency: Consistency::L,
                ..
            } => "range-l",
            Workload::Range {
                consistency: Consistency::S,
                ..
            } => "range-s",
            Workload::TxnPut => "txn-put",
            Workload::TxnMixed { .. } => "txn-mixed",
            Workload::Watch(_) => "watch",
            Workload::WatchLatency { .. } => "watch-latency",
            Workload::WatchHold { .. } => "watch-hold",
            Workload::LeaseKeepalive => "lease-keepalive",
            Workload::Kube { .. } => "kube",
        }
    }
}

/// Parses Go-style durations: `10s`, `500ms`, `2m`, `1.5s`; a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => s.split_at(i),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration {s:?} (use e.g. 10s, 500ms, 2m)"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("invalid duration unit in {s:?} (ms, s, m, h)")),
    };
    if !(secs.is_finite() && secs >= 0.0) {
        return Err(format!("invalid duration {s:?}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_like_go() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
