//! `endpoint status | health | hashkv`: ask each endpoint (or, with `--cluster`, each member's client
//! URLs from the member list) about itself.

use std::time::Instant;

use clap::{Args, Subcommand};
use futures::stream::{FuturesUnordered, StreamExt};
use kvstore_proto::etcdserverpb::{HashKvRequest, MemberListRequest, RangeRequest, StatusRequest};

use crate::cli::Context;
use crate::client::{Client, Settings};
use crate::error::{Error, Result};
use crate::output::{emit, notices, EpHashKv, EpHealth, EpStatus};

/// `endpoint` and its subcommands.
#[derive(Args, Debug)]
pub struct EndpointArgs {
    /// Use all endpoints from the cluster member list.
    #[arg(long, global = true)]
    cluster: bool,
    /// Which subcommand to run.
    #[command(subcommand)]
    command: EndpointCommand,
}

#[derive(Subcommand, Debug)]
enum EndpointCommand {
    /// Checks the healthiness of the endpoints: a linearizable read must succeed
    Health {
        /// Extra arguments, which etcdctl ignores (or rejects, where it does).
        #[arg(hide = true)]
        extra: Vec<String>,
    },
    /// Prints the KV history hash for each endpoint in --endpoints
    Hashkv {
        /// maximum revision to hash (default: all revisions)
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Extra arguments, which etcdctl ignores (or rejects, where it does).
        #[arg(hide = true)]
        extra: Vec<String>,
    },
    /// Prints the status of the endpoints: endpoint, ID, version, db size, is leader,
    /// is learner, raft term, raft index, raft applied index, errors
    Status {
        /// Extra arguments, which etcdctl ignores (or rejects, where it does).
        #[arg(hide = true)]
        extra: Vec<String>,
    },
}

/// The endpoints to address: `--endpoints`, or with `--cluster` every client URL of every
/// member (etcdctl's `endpointsFromCluster`).
pub async fn endpoints_from_cluster(ctx: &Context, cluster: bool) -> Result<Vec<String>> {
    if !cluster {
        return Ok(ctx.settings.endpoints.clone());
    }
    let failed = |e| {
        Error::Request(format!(
            "failed to fetch endpoints from etcd cluster member list: {e}"
        ))
    };
    let client = Client::connect(&ctx.settings).await.map_err(failed)?;
    let members = client
        .unary(client.cluster().member_list(MemberListRequest {
            linearizable: false,
        }))
        .await
        .map_err(failed)?;
    Ok(members
        .members
        .into_iter()
        .flat_map(|m| m.client_ur_ls)
        .collect())
}

/// `endpoint ...`.
pub async fn run(ctx: &Context, args: EndpointArgs) -> Result<()> {
    match args.command {
        EndpointCommand::Status { .. } => status(ctx, args.cluster).await,
        EndpointCommand::Health { .. } => health(ctx, args.cluster).await,
        EndpointCommand::Hashkv { rev, .. } => hashkv(ctx, args.cluster, rev).await,
    }
}

async fn status(ctx: &Context, cluster: bool) -> Result<()> {
    let printer = ctx.printer()?;
    let mut list = Vec::new();
    let mut failed = false;
    for endpoint in endpoints_from_cluster(ctx, cluster).await? {
        let resp = async {
            let client = Client::connect_one(&endpoint, &ctx.settings).await?;
            client
                .unary(client.maintenance().status(StatusRequest {}))
                .await
        }
        .await;
        match resp {
            Ok(resp) => list.push(EpStatus { endpoint, resp }),
            Err(e) => {
                emit(&notices::status_failed(&endpoint, &e.0))?;
                failed = true;
            }
        }
    }
    emit(&printer.endpoint_status(&list)?)?;
    if failed {
        return Err(Error::Reported);
    }
    Ok(())
}

async fn hashkv(ctx: &Context, cluster: bool, revision: i64) -> Result<()> {
    let printer = ctx.printer()?;
    let mut list = Vec::new();
    let mut failed = None;
    for endpoint in endpoints_from_cluster(ctx, cluster).await? {
        let resp = async {
            let client = Client::connect_one(&endpoint, &ctx.settings).await?;
            client
                .unary(client.maintenance().hash_kv(HashKvRequest { revision }))
                .await
        }
        .await;
        match resp {
            Ok(resp) => list.push(EpHashKv { endpoint, resp }),
            Err(e) => {
                emit(&notices::hashkv_failed(&endpoint, &e.0))?;
                failed = Some(e.0);
            }
        }
    }
    emit(&printer.endpoint_hashkv(&list)?)?;
    // etcdctl lists what it got, then exits with the last failure.
    match failed {
        Some(cause) => Err(Error::Request(cause)),
        None => Ok(()),
    }
}

/// Checks one endpoint: connect and read a key linearizably. Permission denied counts as
/// healthy, since the read went through consensus to be refused.
async fn check(endpoint: String, settings: &Settings) -> EpHealth {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + settings.command_timeout;
    let result = async {
        let client = Client::connect_until(&endpoint, settings, deadline).await?;
        let req = RangeRequest {
            key: b"health".to_vec(),
            ..Default::default()
        };
        client.unary(client.kv().range(req)).await
    }
    .await;
    let took = crate::go::duration(start.elapsed());
    match result {
        Ok(_) => EpHealth {
            endpoint,
            health: true,
            took,
            error: String::new(),
        },
        Err(e) if e.0 == "etcdserver: permission denied" => EpHealth {
            endpoint,
            health: true,
            took,
            error: String::new(),
        },
        Err(e) => EpHealth {
            endpoint,
            health: false,
            took,
            error: e.0,
        },
    }
}

async fn health(ctx: &Context, cluster: bool) -> Result<()> {
    let printer = ctx.printer()?;
    let endpoints = endpoints_from_cluster(ctx, cluster).await?;
    // All endpoints at once; results in the order they complete, as etcdctl's.
    let mut checks: FuturesUnordered<_> = endpoints
        .into_iter()
        .map(|ep| check(ep, &ctx.settings))
        .collect();
    let mut list = Vec::new();
    while let Some(h) = checks.next().await {
        list.push(h);
    }
    emit(&printer.endpoint_health(&list)?)?;
    if list.iter().any(|h| !h.error.is_empty()) {
        return Err(Error::Request("unhealthy cluster".into()));
    }
    Ok(())
}
