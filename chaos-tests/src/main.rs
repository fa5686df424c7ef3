//! `chaos-tests`: runs kvstore under faults and checks the history. See `docs/chaos.md`.

use std::path::PathBuf;
use std::time::Duration;

use chaos_tests::nemesis::Fault;
use chaos_tests::runner::{self, RunConfig};
use chaos_tests::workload::Workload;
use clap::Parser;

/// Jepsen-style chaos tests for kvstore: members in network namespaces, seeded fault
/// schedules (partitions, kills, pauses, flaky links, bandwidth limits, membership churn,
/// leader transfer, compaction), workloads through the etcd API, and checkers for
/// linearizability, strict serializability, watch guarantees, optimistic concurrency and
/// leases. Needs root for network namespaces; otherwise it runs on loopback with process
/// faults only and says so. Exits 1 if any checker found a violation.
#[derive(Debug, Parser)]
#[command(name = "chaos-tests", version)]
struct Cli {
    /// Members in the cluster (3 or 5 are typical).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// Seconds of workload and faults (healing and checks come after).
    #[arg(long, default_value_t = 60)]
    time_limit: u64,
    /// Faults to schedule, comma-separated, or `all` / `none`.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// Workloads, comma-separated, or `all`.
    #[arg(long, default_value = "all")]
    workload: String,
    /// Seed of the fault schedule (default: from the clock; printed in the results).
    #[arg(long)]
    seed: Option<u64>,
    /// The kvstore binary (default: kvstore next to this binary).
    #[arg(long)]
    binary: Option<PathBuf>,
    /// Injected bugs for a `kvstore-faulty` binary: stale-read, ack-before-commit,
    /// drop-watch-event (comma-separated).
    #[arg(long)]
    inject: Option<String>,
    /// Results folder (default: chaos-results/<timestamp>).
    #[arg(long)]
    results: Option<PathBuf>,
    /// The members' --snapshot-count (low: snapshots are sent during the run).
    #[arg(long, default_value_t = 500)]
    snapshot_count: u64,
    /// Clients per workload.
    #[arg(long, default_value_t = 3)]
    clients: usize,
    /// Seconds of quiet between faults (randomised ±50%).
    #[arg(long, default_value_t = 5)]
    quiet: u64,
    /// Seconds a fault lasts (randomised ±50%).
    #[arg(long, default_value_t = 6)]
    window: u64,
    /// Run on loopback even if namespaces are available (process faults only).
    #[arg(long)]
    loopback: bool,
}

fn parse_list<T: clap::ValueEnum + Copy>(spec: &str, all: &[T]) -> Result<Vec<T>, String> {
    match spec {
        "all" => Ok(all.to_vec()),
        "none" | "" => Ok(Vec::new()),
        _ => spec
            .split(',')
            .map(|s| T::from_str(s.trim(), true))
            .collect(),
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let faults = match parse_list(&cli.nemesis, &Fault::ALL) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("chaos-tests: --nemesis: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let workloads = match parse_list(&cli.workload, &Workload::ALL) {
        Ok(w) if !w.is_empty() => w,
        Ok(_) => {
            eprintln!("chaos-tests: --workload: name at least one workload");
            return std::process::ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("chaos-tests: --workload: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let binary = cli.binary.unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("kvstore")))
            .unwrap_or_else(|| PathBuf::from("kvstore"))
    });
    let config = RunConfig {
        binary,
        nodes: cli.nodes,
        time_limit: Duration::from_secs(cli.time_limit),
        faults,
        workloads,
        seed: cli.seed.unwrap_or(now.as_secs()),
        inject: cli.inject,
        results: cli
            .results
            .unwrap_or_else(|| PathBuf::from(format!("chaos-results/{}", now.as_secs()))),
        snapshot_count: cli.snapshot_count,
        namespaces: !cli.loopback,
        quiet: Duration::from_secs(cli.quiet),
        window: Duration::from_secs(cli.window),
        clients: cli.clients,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        progress: true,
    };
    match runner::run(&config) {
        Ok(summary) => {
            let entries = chaos_tests::history::read_jsonl(&config.results.join("history.jsonl"))
                .unwrap_or_default();
            print!("{}", summary.text(&entries));
            println!("results in {}", config.results.display());
            if summary.valid() {
                std::process::ExitCode::SUCCESS
            } else {
                std::process::ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos-tests: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
