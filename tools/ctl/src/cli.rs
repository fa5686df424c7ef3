//! The command line: global flags, the command tree, and the [`Context`] every command
//! receives (resolved settings, the output printer, a way to connect).
//!
//! Global flags may come before or after the command, as with etcdctl. Each can also be set
//! in the environment, as `KVCTL_<FLAG>` or, for drop-in use with etcdctl's environment,
//! `ETCDCTL_<FLAG>` (e.g. `KVCTL_ENDPOINTS`, `ETCDCTL_DIAL_TIMEOUT`); a flag on the command
//! line wins over both.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::client::{Client, Settings};
use crate::error::{Error, Result};
use crate::output::{Format, Printer};
use crate::{alarm, endpoint, kv, lease, maintenance, member, snapshot, txn, watch};

/// kvctl: a command-line client for kvstore and any etcd v3 server, compatible with
/// etcdctl (v3 API): same commands, flags, output formats, messages and exit codes.
#[derive(Parser, Debug)]
#[command(name = "kvctl", version, about, long_about = None, disable_help_subcommand = true)]
pub struct Cli {
    /// Flags every command accepts.
    #[command(flatten)]
    pub global: GlobalArgs,
    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command accepts.
#[derive(Args, Debug, Clone, Default)]
#[command(next_help_heading = "Global options")]
pub struct GlobalArgs {
    /// gRPC endpoints, comma-separated: host:port or http://host:port
    /// [default: 127.0.0.1:2379] [env: KVCTL_ENDPOINTS, ETCDCTL_ENDPOINTS]
    #[arg(long, global = true, value_name = "ENDPOINTS")]
    pub endpoints: Option<String>,
    /// How long to wait for a connection to an endpoint, e.g. 2s or 500ms
    /// [default: 2s] [env: KVCTL_DIAL_TIMEOUT, ETCDCTL_DIAL_TIMEOUT]
    #[arg(long, global = true, value_name = "DURATION")]
    pub dial_timeout: Option<String>,
    /// How long to wait for a short-running request (excluding the dial), e.g. 5s
    /// [default: 5s] [env: KVCTL_COMMAND_TIMEOUT, ETCDCTL_COMMAND_TIMEOUT]
    #[arg(long, global = true, value_name = "DURATION")]
    pub command_timeout: Option<String>,
    /// Output format: simple, json, fields or table
    /// [default: simple] [env: KVCTL_WRITE_OUT, ETCDCTL_WRITE_OUT]
    #[arg(short = 'w', long, global = true, value_name = "FORMAT")]
    pub write_out: Option<String>,
    /// Print keys and values as hex-escaped bytes (simple format)
    /// [env: KVCTL_HEX, ETCDCTL_HEX]
    #[arg(long, global = true)]
    pub hex: bool,
}

/// The commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Puts the given key into the store
    Put(kv::PutArgs),
    /// Gets the key or a range of keys
    Get(kv::GetArgs),
    /// Removes the specified key or range of keys [key, range_end)
    Del(kv::DelArgs),
    /// Txn processes all the requests in one transaction, read from standard input
    Txn(txn::TxnArgs),
    /// Watches events stream on keys or prefixes
    Watch(watch::WatchArgs),
    /// Compacts the event history
    Compaction(maintenance::CompactionArgs),
    /// Lease related commands
    Lease(lease::LeaseArgs),
    /// Endpoint related commands
    Endpoint(endpoint::EndpointArgs),
    /// Membership related commands
    Member(member::MemberArgs),
    /// Alarm related commands
    Alarm(alarm::AlarmArgs),
    /// Defragments the storage of the members with given endpoints
    Defrag(maintenance::DefragArgs),
    /// Transfers leadership to another member
    #[command(name = "move-leader")]
    MoveLeader(maintenance::MoveLeaderArgs),
    /// Manages member snapshots: save, status, restore
    Snapshot(snapshot::SnapshotArgs),
    /// Prints the version of kvctl
    Version,
}

/// A global flag's value: the command line first, then `KVCTL_<NAME>`, then `ETCDCTL_<NAME>`.
fn flag_or_env(
    flag: Option<&str>,
    name: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<String> {
    flag.map(str::to_string)
        .or_else(|| env(&format!("KVCTL_{name}")))
        .or_else(|| env(&format!("ETCDCTL_{name}")))
}

fn duration_flag(value: Option<String>, flag: &str, default: Duration) -> Result<Duration> {
    match value {
        None => Ok(default),
        Some(v) => crate::go::parse_duration(&v).map_err(|e| {
            Error::Request(format!(
                "invalid argument {} for \"--{flag}\" flag: {e}",
                crate::go::quote(v.as_bytes())
            ))
        }),
    }
}

/// What every command receives: the resolved global settings and the output format.
#[derive(Debug, Clone)]
pub struct Context {
    /// Endpoints and timeouts.
    pub settings: Settings,
    /// `--write-out` as given; checked when a command first needs its printer, which is
    /// when etcdctl checks it too (after the command's own arguments).
    write_out: String,
    /// `--hex`.
    hex: bool,
}

impl Context {
    /// Resolves the global flags against the environment (`env` looks a variable up).
    pub fn new(global: &GlobalArgs, env: &dyn Fn(&str) -> Option<String>) -> Result<Self> {
        let endpoints = flag_or_env(global.endpoints.as_deref(), "ENDPOINTS", env)
            .unwrap_or_else(|| "127.0.0.1:2379".into());
        let endpoints: Vec<String> = endpoints
            .split(',')
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .map(str::to_string)
            .collect();
        let dial_timeout = duration_flag(
            flag_or_env(global.dial_timeout.as_deref(), "DIAL_TIMEOUT", env),
            "dial-timeout",
            Duration::from_secs(2),
        )?;
        let command_timeout = duration_flag(
            flag_or_env(global.command_timeout.as_deref(), "COMMAND_TIMEOUT", env),
            "command-timeout",
            Duration::from_secs(5),
        )?;
        let write_out = flag_or_env(global.write_out.as_deref(), "WRITE_OUT", env)
            .unwrap_or_else(|| "simple".into());
        let hex =
            global.hex || flag_or_env(None, "HEX", env).is_some_and(|v| v == "true" || v == "1");
        Ok(Self {
            settings: Settings {
                endpoints,
                dial_timeout,
                command_timeout,
            },
            write_out,
            hex,
        })
    }

    /// The printer for `--write-out`; etcdctl's error for an unknown format.
    pub fn printer(&self) -> Result<Printer> {
        Ok(Printer::new(Format::parse(&self.write_out)?, self.hex))
    }

    /// Checks the output format, then connects to the first reachable endpoint.
    pub async fn connect(&self) -> Result<(Client, Printer)> {
        let printer = self.printer()?;
        let client = Client::connect(&self.settings).await?;
        Ok((client, printer))
    }
}

/// Runs the parsed command.
pub async fn run(cli: Cli, ctx: &Context) -> Result<()> {
    match cli.command {
        Command::Put(a) => kv::put(ctx, a).await,
        Command::Get(a) => kv::get(ctx, a).await,
        Command::Del(a) => kv::del(ctx, a).await,
        Command::Txn(a) => txn::run(ctx, a).await,
        Command::Watch(a) => watch::run(ctx, a).await,
        Command::Compaction(a) => maintenance::compaction(ctx, a).await,
        Command::Lease(a) => lease::run(ctx, a).await,
        Command::Endpoint(a) => endpoint::run(ctx, a).await,
        Command::Member(a) => member::run(ctx, a).await,
        Command::Alarm(a) => alarm::run(ctx, a).await,
        Command::Defrag(a) => maintenance::defrag(ctx, a).await,
        Command::MoveLeader(a) => maintenance::move_leader(ctx, a).await,
        Command::Snapshot(a) => snapshot::run(ctx, a).await,
        Command::Version => crate::output::emit(&crate::output::notices::version()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_match_etcdctl() {
        let ctx = Context::new(&GlobalArgs::default(), &no_env).unwrap();
        assert_eq!(ctx.settings.endpoints, vec!["127.0.0.1:2379".to_string()]);
        assert_eq!(ctx.settings.dial_timeout, Duration::from_secs(2));
        assert_eq!(ctx.settings.command_timeout, Duration::from_secs(5));
        assert_eq!(ctx.printer().unwrap().format(), Format::Simple);
    }

    #[test]
    fn flags_win_over_kvctl_env_which_wins_over_etcdctl_env() {
        let env = |name: &str| match name {
            "KVCTL_ENDPOINTS" => Some("a:1".to_string()),
            "ETCDCTL_ENDPOINTS" => Some("b:2".to_string()),
            "ETCDCTL_COMMAND_TIMEOUT" => Some("1s".to_string()),
            _ => None,
        };
        let ctx = Context::new(&GlobalArgs::default(), &env).unwrap();
        assert_eq!(ctx.settings.endpoints, vec!["a:1".to_string()]);
        assert_eq!(ctx.settings.command_timeout, Duration::from_secs(1));
        let flags = GlobalArgs {
            endpoints: Some("c:3,http://d:4".into()),
            ..Default::default()
        };
        let ctx = Context::new(&flags, &env).unwrap();
        assert_eq!(
            ctx.settings.endpoints,
            vec!["c:3".to_string(), "http://d:4".to_string()]
        );
    }

    #[test]
    fn bad_duration_and_format_fail_like_etcdctl() {
        let flags = GlobalArgs {
            dial_timeout: Some("abc".into()),
            ..Default::default()
        };
        let err = Context::new(&flags, &no_env).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid argument \"abc\" for \"--dial-timeout\" flag: time: invalid duration \"abc\""
        );
        let flags = GlobalArgs {
            write_out: Some("yaml".into()),
            ..Default::default()
        };
        let err = Context::new(&flags, &no_env)
            .unwrap()
            .printer()
            .unwrap_err();
        assert_eq!(
            (err.exit_code(), err.to_string()),
            (4, "unsupported output format".into())
        );
    }

    #[test]
    fn global_flags_parse_after_the_command() {
        let cli = Cli::try_parse_from(["kvctl", "get", "foo", "--endpoints", "x:1", "-w", "json"])
            .unwrap();
        assert_eq!(cli.global.endpoints.as_deref(), Some("x:1"));
        assert_eq!(cli.global.write_out.as_deref(), Some("json"));
    }
}
