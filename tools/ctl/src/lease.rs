//! `lease grant | revoke | timetolive | list | keep-alive`.
//!
//! Lease IDs are written and read in hexadecimal, as etcdctl does.

use std::time::Duration;

use clap::{Args, Subcommand};
use kvstore_proto::etcdserverpb::{
    LeaseGrantRequest, LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest,
    LeaseTimeToLiveRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::cli::Context;
use crate::client::{rpc_error, Client};
use crate::error::{Error, Result, RpcError};
use crate::go;
use crate::output::{emit, notices, Format, Printer};

/// `lease` and its subcommands.
#[derive(Args, Debug)]
pub struct LeaseArgs {
    /// Which subcommand to run.
    #[command(subcommand)]
    command: LeaseCommand,
}

#[derive(Subcommand, Debug)]
enum LeaseCommand {
    /// Creates a lease with a TTL in seconds
    Grant {
        /// Time to live, in seconds.
        #[arg(value_name = "TTL", allow_negative_numbers = true)]
        args: Vec<String>,
    },
    /// Revokes a lease, deleting the keys attached to it
    Revoke {
        /// Lease ID, in hexadecimal.
        #[arg(value_name = "LEASE_ID")]
        args: Vec<String>,
    },
    /// Gets lease information: granted and remaining TTL
    Timetolive {
        /// Lease ID, in hexadecimal.
        #[arg(value_name = "LEASE_ID")]
        args: Vec<String>,
        /// Get the keys attached to this lease too.
        #[arg(long)]
        keys: bool,
    },
    /// Lists all active leases
    List {
        /// Extra arguments, which etcdctl ignores (or rejects, where it does).
        #[arg(hide = true)]
        extra: Vec<String>,
    },
    /// Keeps a lease alive (renews it) until it expires, is revoked, or kvctl is stopped
    KeepAlive {
        /// Lease ID, in hexadecimal.
        #[arg(value_name = "LEASE_ID")]
        args: Vec<String>,
        /// Renew the lease once (reset its TTL to the granted one) and exit.
        #[arg(long)]
        once: bool,
    },
}

/// Parses a hexadecimal lease ID argument (etcdctl's `leaseFromArgs`).
pub fn lease_from_arg(arg: &str) -> Result<i64> {
    go::parse_int(arg, 16)
        .map_err(|e| Error::BadArgs(format!("bad lease ID arg ({e}), expecting ID in Hex")))
}

fn one_arg(args: &[String], usage: &str) -> Result<String> {
    match args {
        [one] => Ok(one.clone()),
        _ => Err(Error::BadArgs(usage.into())),
    }
}

/// `lease ...`.
pub async fn run(ctx: &Context, args: LeaseArgs) -> Result<()> {
    match args.command {
        LeaseCommand::Grant { args } => {
            let ttl = one_arg(&args, "lease grant command needs TTL argument")?;
            let ttl =
                go::parse_int(&ttl, 10).map_err(|e| Error::BadArgs(format!("bad TTL ({e})")))?;
            let (client, printer) = ctx.connect().await?;
            let resp = client
                .unary(client.lease().lease_grant(LeaseGrantRequest { ttl, id: 0 }))
                .await
                .map_err(|e| Error::Request(format!("failed to grant lease ({e})")))?;
            emit(&printer.lease_grant(&resp)?)
        }
        LeaseCommand::Revoke { args } => {
            let id = lease_from_arg(&one_arg(&args, "lease revoke command needs 1 argument")?)?;
            let (client, printer) = ctx.connect().await?;
            let resp = client
                .unary(client.lease().lease_revoke(LeaseRevokeRequest { id }))
                .await
                .map_err(|e| Error::Request(format!("failed to revoke lease ({e})")))?;
            emit(&printer.lease_revoke(id, &resp)?)
        }
        LeaseCommand::Timetolive { args, keys } => {
            let usage = "lease timetolive command needs lease ID as argument";
            let id = lease_from_arg(&one_arg(&args, usage)?)?;
            let (client, printer) = ctx.connect().await?;
            let req = LeaseTimeToLiveRequest { id, keys };
            let resp = client
                .unary(client.lease().lease_time_to_live(req))
                .await
                .map_err(RpcError::connection)?;
            emit(&printer.lease_time_to_live(&resp, keys)?)
        }
        LeaseCommand::List { .. } => {
            let (client, printer) = ctx.connect().await?;
            let resp = client
                .unary(client.lease().lease_leases(LeaseLeasesRequest {}))
                .await
                .map_err(RpcError::connection)?;
            emit(&printer.lease_list(&resp)?)
        }
        LeaseCommand::KeepAlive { args, once } => {
            let usage = "lease keep-alive command needs lease ID as argument";
            let id = lease_from_arg(&one_arg(&args, usage)?)?;
            let (client, printer) = ctx.connect().await?;
            keep_alive(&client, &printer, id, once).await
        }
    }
}

/// Renews lease `id` on a keep-alive stream: once, or every third of its TTL until the
/// server reports it gone (TTL 0) or the stream ends.
async fn keep_alive(client: &Client, printer: &Printer, id: i64, once: bool) -> Result<()> {
    let (tx, rx) = mpsc::channel(1);
    let _ = tx.send(LeaseKeepAliveRequest { id }).await;
    let stream = client
        .lease()
        .lease_keep_alive(ReceiverStream::new(rx))
        .await;
    let mut stream = match stream {
        Ok(s) => s.into_inner(),
        Err(status) => return Err(rpc_error(&status).connection()),
    };
    loop {
        let resp = match stream.message().await {
            Ok(Some(resp)) => resp,
            Ok(None) if once => return Err(Error::Connection("EOF".into())),
            Err(status) if once => return Err(rpc_error(&status).connection()),
            Ok(None) | Err(_) => break,
        };
        if resp.ttl <= 0 {
            if once {
                return Err(Error::Connection(
                    "etcdserver: requested lease not found".into(),
                ));
            }
            break;
        }
        emit(&printer.lease_keep_alive(&resp)?)?;
        if once {
            return Ok(());
        }
        let wait = Duration::from_millis((resp.ttl.max(0) as u64 * 1000 / 3).max(500));
        tokio::time::sleep(wait).await;
        if tx.send(LeaseKeepAliveRequest { id }).await.is_err() {
            break;
        }
    }
    if printer.format() == Format::Simple {
        emit(&notices::lease_expired(id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_ids_are_hex() {
        assert_eq!(
            lease_from_arg("694d5765fc71500b").unwrap(),
            0x694d5765fc71500b
        );
        let err = lease_from_arg("zz").unwrap_err();
        assert_eq!(err.exit_code(), 128);
        assert_eq!(
            err.to_string(),
            "bad lease ID arg (strconv.ParseInt: parsing \"zz\": invalid syntax), expecting ID in Hex"
        );
    }

    #[test]
    fn commands_take_exactly_one_argument() {
        assert!(one_arg(&[], "usage").is_err());
        assert!(one_arg(&["a".into(), "b".into()], "usage").is_err());
        assert_eq!(one_arg(&["a".into()], "usage").unwrap(), "a");
    }
}
