//! kvctl, the command-line client of kvstore: etcdctl's v3 commands, flags, output formats,
//! messages and exit codes, over the etcd v3 gRPC API (so it works against etcd too).
//!
//! # Layout
//! - `cli`: global flags, the command tree, the [`cli::Context`] commands receive.
//! - `client`: connecting (dial timeout, first reachable endpoint), the command timeout,
//!   and how failed requests are worded.
//! - `error`: the one error type and etcdctl's exit codes.
//! - `output`: every byte printed — the simple, json, fields and table formats, and notices.
//! - `go`: Go's quoting, durations, number parsing and byte sizes, which etcdctl's text uses.
//! - One module per command family: `kv` (put, get, del), `txn`, `watch`, `lease`,
//!   `endpoint`, `member`, `alarm`, `maintenance` (compaction, defrag, move-leader),
//!   `snapshot` (save, status, offline restore).

mod alarm;
mod cli;
mod client;
mod endpoint;
mod error;
mod go;
mod kv;
mod lease;
mod maintenance;
mod member;
mod output;
mod snapshot;
mod txn;
mod watch;

use std::io::Write;
use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::Parser;

use crate::cli::{Cli, Context};
use crate::error::{Error, EXIT_ERROR};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return match e.kind() {
                ErrorKind::DisplayHelp
                | ErrorKind::DisplayVersion
                | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ExitCode::SUCCESS,
                // cobra's usage errors (unknown flag or command) exit 1.
                _ => ExitCode::from(EXIT_ERROR as u8),
            };
        }
    };
    let env = |name: &str| std::env::var(name).ok();
    let result = match Context::new(&cli.global, &env) {
        Ok(ctx) => run(cli, &ctx),
        Err(e) => Err(e),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::from(EXIT_ERROR as u8)
        }
        Err(e) => {
            if e.has_message() {
                let _ = writeln!(std::io::stderr(), "Error: {e}");
            }
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

fn run(cli: Cli, ctx: &Context) -> Result<(), Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(cli::run(cli, ctx))
}
