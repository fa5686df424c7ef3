//! `compaction` and `defrag`: reclaiming history and space; `move-leader`.
//! (`snapshot save | status | restore` live in `snapshot`.)

use clap::Args;
use kvstore_proto::etcdserverpb::{
    CompactionRequest, DefragmentRequest, MoveLeaderRequest, StatusRequest,
};

use crate::cli::Context;
use crate::client::Client;
use crate::endpoint::endpoints_from_cluster;
use crate::error::{Error, Result};
use crate::go;
use crate::output::{emit, notices};

/// Flags and arguments of `compaction`.
#[derive(Args, Debug, Clone, Default)]
pub struct CompactionArgs {
    /// The revision to compact up to: history before it is discarded.
    #[arg(value_name = "REVISION", allow_negative_numbers = true)]
    pub args: Vec<String>,
    /// Wait for the compaction to physically remove all old revisions.
    #[arg(long)]
    pub physical: bool,
}

/// Flags of `defrag`.
#[derive(Args, Debug, Clone, Default)]
pub struct DefragArgs {
    /// Defragment every member of the cluster (from the member list), not only `--endpoints`.
    #[arg(long)]
    pub cluster: bool,
    /// Extra arguments, which etcdctl ignores.
    #[arg(hide = true)]
    pub extra: Vec<String>,
}

/// `compaction`.
pub async fn compaction(ctx: &Context, args: CompactionArgs) -> Result<()> {
    let [rev] = args.args.as_slice() else {
        return Err(Error::BadArgs("compaction command needs 1 argument".into()));
    };
    let revision = go::parse_int(rev, 10).map_err(Error::Request)?;
    let (client, _) = ctx.connect().await?;
    let req = CompactionRequest {
        revision,
        physical: args.physical,
    };
    client.unary(client.kv().compact(req)).await?;
    emit(&notices::compacted(revision))
}

/// `defrag`: each endpoint in turn; failures are reported per endpoint and make the exit
/// code 1.
pub async fn defrag(ctx: &Context, args: DefragArgs) -> Result<()> {
    ctx.printer()?;
    let mut failures = 0;
    for endpoint in endpoints_from_cluster(ctx, args.cluster).await? {
        let result = async {
            let client = Client::connect_one(&endpoint, &ctx.settings).await?;
            client
                .unary(client.maintenance().defragment(DefragmentRequest {}))
                .await
        }
        .await;
        match result {
            Ok(_) => emit(&notices::defragmented(&endpoint))?,
            Err(e) => {
                emit(&notices::defrag_failed(&endpoint, &e.0))?;
                failures += 1;
            }
        }
    }
    if failures > 0 {
        return Err(Error::Reported);
    }
    Ok(())
}

/// Arguments of `move-leader`.
#[derive(Args, Debug, Clone, Default)]
pub struct MoveLeaderArgs {
    /// The member ID (hex) to hand leadership to.
    #[arg(value_name = "TRANSFEREE_ID")]
    pub args: Vec<String>,
}

/// `move-leader`: finds the leader among `--endpoints` (as etcdctl does) and asks it to hand
/// leadership to the transferee.
pub async fn move_leader(ctx: &Context, args: MoveLeaderArgs) -> Result<()> {
    let [target] = args.args.as_slice() else {
        return Err(Error::BadArgs(
            "move-leader command needs 1 argument".into(),
        ));
    };
    let target = go::parse_uint(target, 16).map_err(Error::BadArgs)?;
    for endpoint in &ctx.settings.endpoints {
        let client = Client::connect_one(endpoint, &ctx.settings).await?;
        let status = client
            .unary(client.maintenance().status(StatusRequest {}))
            .await?;
        let member = status.header.as_ref().map_or(0, |h| h.member_id);
        if member != 0 && member == status.leader {
            client
                .unary(
                    client
                        .maintenance()
                        .move_leader(MoveLeaderRequest { target_id: target }),
                )
                .await?;
            return emit(&notices::leadership_transferred(status.leader, target));
        }
    }
    Err(Error::BadArgs(format!(
        "no leader endpoint given at {:?}",
        ctx.settings.endpoints
    )))
}
