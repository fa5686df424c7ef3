//! `kvstore-apiserver`: see `kvstore-apiserver --help`.

use apiserver::config::{Command, Options};
use clap::Parser;

#[tokio::main]
async fn main() {
    let opts = Options::parse();
    let filter = tracing_subscriber::EnvFilter::try_new(&opts.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    if let Some(Command::Certs { dir, hosts, server }) = &opts.command {
        match apiserver::tls::generate(dir, hosts, server) {
            Ok(()) => {
                println!(
                    "wrote ca.crt, apiserver.crt/.key, admin.crt/.key and admin.kubeconfig to {}",
                    dir.display()
                );
                return;
            }
            Err(e) => {
                eprintln!("kvstore-apiserver certs: {e}");
                std::process::exit(1);
            }
        }
    }
    if let Err(e) = apiserver::server::run(opts).await {
        eprintln!("kvstore-apiserver: {e}");
        std::process::exit(1);
    }
}
