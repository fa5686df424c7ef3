//! The `kvstore` server binary: parses flags, sets up logging, runs one member until SIGINT or
//! SIGTERM, then shuts down gracefully.

use clap::Parser;
use kvstore::config::Config;
use kvstore::node::{serve, Node};
use tracing_subscriber::EnvFilter;

/// mimalloc rather than glibc's malloc: under write load glibc's allocator (arena locking,
/// `malloc_consolidate`) took 10-16 % of a member's CPU (`perf`, 256 clients putting); see
/// `docs/benchmarks.md`. RocksDB's own C++ allocations still use the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(format!("{level},kvstore={level}", level = config.log_level))
        .unwrap_or_else(|_| EnvFilter::new("warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if config.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(err) => {
                    tracing::error!(cause = %err, "cannot listen for SIGTERM");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
pub async fn main() -> std::process::ExitCode {
    let config = Config::parse();
    init_logging(&config);
    let node = match Node::open(config).await {
        Ok(node) => node,
        Err(err) => {
            eprintln!("kvstore: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let shutdown = node.shutdown.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("received signal, shutting down");
        shutdown.cancel();
    });
    match serve(node).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("kvstore: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
