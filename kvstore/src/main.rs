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

/// No transparent huge pages for this process. mimalloc asks for them (`madvise(MADV_HUGEPAGE)`)
/// on the memory it maps, and it gives memory back in smaller pieces than 2 MiB, so the kernel
/// kept faulting in and zeroing whole 2 MiB pages: `clear_page_erms` was 8 % of the members' CPU
/// with 256 clients putting (`perf`; docs/benchmarks.md). What the flag is set on is the process's
/// address space, so it covers RocksDB's allocations and hosts where THP is `always`, and it is
/// set before the runtime's workers allocate much. A kernel without the flag just keeps THP.
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    if let Err(err) = rustix::thread::disable_transparent_huge_pages(true) {
        eprintln!("kvstore: cannot disable transparent huge pages: {err}");
    }
}

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

pub fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("kvstore: cannot start the async runtime: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    runtime.block_on(run())
}

async fn run() -> std::process::ExitCode {
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
