//! `kvbench`: see the library's documentation and `kvbench --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = kvbench::cli::Cli::parse();
    match kvbench::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kvbench: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}
