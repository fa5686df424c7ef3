//! `compaction` and `defrag`: reclaiming history and space.
//!
//! `snapshot save | status | restore` will live here too (Maintenance.Snapshot and the
//! offline restore); they are not implemented yet.

use clap::Args;
use kvstore_proto::etcdserverpb::{CompactionRequest, DefragmentRequest};

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
