//! kvbench: a load generator for etcd v3 API servers, playing the role of etcd's `benchmark`
//! tool so that kvstore and real etcd are measured by the same client, request for request.
//!
//! # Layout
//! - [`cli`]: flags and workloads (`put`, `range`, `txn-put`, `txn-mixed`, `watch`,
//!   `watch-latency`, `watch-hold`, `lease-keepalive`, `kube`).
//! - [`conn`]: connections to the endpoints (spread over `--conns`, or the leader only).
//! - [`kv_link`]: the unary KV calls, over raw HTTP/2 links rather than tonic's channel.
//! - [`keys`]: key and value generation (`--key-size`, `--key-space-size`, `--sequential-keys`).
//! - [`runner`]: the closed-loop driver: N clients issue operations until `--total` or
//!   `--duration`, optionally at a fixed rate; latency histograms per client, merged at the end.
//! - [`report`]: histograms, percentiles, text and JSON output.
//! - [`workloads`]: one module per workload family (KV, watch, lease, Kubernetes pattern).
//! - [`error`]: the crate's error type.

pub mod cli;
pub mod conn;
pub mod error;
pub mod keys;
pub mod kv_link;
pub mod report;
pub mod runner;
pub mod workloads;

pub use error::{Error, Result};

/// Runs the workload the command line names and prints its report.
pub async fn run(cli: cli::Cli) -> Result<()> {
    let report = workloads::run(&cli.common, cli.workload).await?;
    if cli.common.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(())
}
