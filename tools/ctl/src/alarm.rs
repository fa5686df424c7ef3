//! `alarm list | disarm`: the cluster's alarms (NOSPACE when the backend quota is
//! exhausted, CORRUPT when a member's data is found inconsistent).

use clap::{Args, Subcommand};
use kvstore_proto::etcdserverpb::{alarm_request::AlarmAction, AlarmRequest, AlarmResponse};

use crate::cli::Context;
use crate::error::{Error, Result};
use crate::output::emit;

/// `alarm` and its subcommands.
#[derive(Args, Debug)]
pub struct AlarmArgs {
    /// Which subcommand to run.
    #[command(subcommand)]
    command: AlarmCommand,
}

#[derive(Subcommand, Debug)]
enum AlarmCommand {
    /// Lists all alarms
    List {
        /// Extra arguments, which etcdctl ignores (or rejects, where it does).
        #[arg(hide = true)]
        extra: Vec<String>,
    },
    /// Disarms all alarms
    Disarm {
        /// Extra arguments, which etcdctl ignores (or rejects, where it does).
        #[arg(hide = true)]
        extra: Vec<String>,
    },
}

/// `alarm ...`.
pub async fn run(ctx: &Context, args: AlarmArgs) -> Result<()> {
    match args.command {
        AlarmCommand::List { extra } => {
            if !extra.is_empty() {
                return Err(Error::BadArgs(
                    "alarm list command accepts no arguments".into(),
                ));
            }
            let (client, printer) = ctx.connect().await?;
            let resp = client
                .unary(client.maintenance().alarm(list_request()))
                .await?;
            emit(&printer.alarm(&resp)?)
        }
        AlarmCommand::Disarm { extra } => {
            if !extra.is_empty() {
                return Err(Error::BadArgs(
                    "alarm disarm command accepts no arguments".into(),
                ));
            }
            let (client, printer) = ctx.connect().await?;
            // Like clientv3's AlarmDisarm for "all alarms": list them, deactivate each, and
            // answer with the alarms deactivated (and no header).
            let active = client
                .unary(client.maintenance().alarm(list_request()))
                .await?;
            let mut disarmed = AlarmResponse::default();
            for a in active.alarms {
                let req = AlarmRequest {
                    action: AlarmAction::Deactivate as i32,
                    member_id: a.member_id,
                    alarm: a.alarm,
                };
                let resp = client.unary(client.maintenance().alarm(req)).await?;
                disarmed.alarms.extend(resp.alarms);
            }
            emit(&printer.alarm(&disarmed)?)
        }
    }
}

fn list_request() -> AlarmRequest {
    AlarmRequest {
        action: AlarmAction::Get as i32,
        member_id: 0,
        alarm: 0,
    }
}
