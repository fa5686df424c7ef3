//! The workloads: set each one up, run it through [`crate::runner`], build its report.

pub mod kube;
pub mod kv;
pub mod lease;
pub mod watch;

use crate::cli::{Common, WatchOpts, Workload};
use crate::conn;
use crate::error::Result;
use crate::keys::Keys;
use crate::report::Report;
use crate::runner::{self, Client, Plan};

/// The connection (channel or link) client `i` uses.
fn pick<T: Clone>(conns: &[T], i: usize) -> T {
    conns[i % conns.len()].clone()
}

/// `--clients` clients made by `make(client index, its connection)`.
fn clients<T: Clone, C>(common: &Common, conns: &[T], make: impl Fn(usize, T) -> C) -> Vec<C> {
    (0..common.clients.max(1))
        .map(|i| make(i, pick(conns, i)))
        .collect()
}

/// Runs `clients` to the common plan and reports every kind as the workload's operations.
async fn measure<C: Client>(
    common: &Common,
    name: &str,
    kinds: &[&str],
    clients: Vec<C>,
) -> Report {
    let outcome = runner::run(clients, Plan::from_common(common, name)).await;
    Report::new(
        name,
        common,
        &outcome.tally,
        kinds,
        outcome.elapsed,
        outcome.longest_stall,
    )
}

/// Runs one workload.
pub async fn run(common: &Common, workload: Workload) -> Result<Report> {
    // Each workload opens only the connections it uses: idle ones would sit on the servers
    // (and `watch-hold` would count them in the server's memory per watcher).
    let targets = conn::targets(common).await?;
    let links = || conn::links(common, &targets);
    let channels = || conn::connections(common, &targets);
    let name = workload.name();
    let keys = Keys::new(
        "",
        common.key_size,
        common.key_space_size,
        common.sequential_keys,
    );
    let seed = |i: usize| i as u64 + 1;
    let report = match workload {
        Workload::Put { batch } => {
            kv::check_batch(batch, keys.space)?;
            let links = links().await?;
            let cs = clients(common, &links, |i, link| {
                kv::PutClient::new(link, keys.clone(), common.val_size, batch, seed(i))
            });
            let mut report = measure(common, name, &["put"], cs).await;
            report.extra.insert(
                "keys_written_per_sec".into(),
                report.ops_per_sec * batch as f64,
            );
            report
        }
        Workload::Range {
            consistency,
            no_preload,
        } => {
            let links = links().await?;
            if !no_preload {
                kv::preload(common, &links, &keys, common.val_size).await?;
            }
            let cs = clients(common, &links, |i, link| {
                kv::RangeClient::new(link, keys.clone(), consistency.serializable(), seed(i))
            });
            measure(common, name, &["range"], cs).await
        }
        Workload::TxnPut => {
            let links = links().await?;
            let cs = clients(common, &links, |i, link| {
                kv::CasClient::new(link, keys.clone(), common.val_size, seed(i))
            });
            let mut report = measure(common, name, &["cas", "cas-conflict"], cs).await;
            let conflicts = report.by_kind.get("cas-conflict").map_or(0, |l| l.count);
            report
                .extra
                .insert("cas_conflicts".into(), conflicts as f64);
            report
        }
        Workload::TxnMixed {
            rw_ratio,
            consistency,
        } => {
            let links = links().await?;
            kv::preload(common, &links, &keys, common.val_size).await?;
            let cs = clients(common, &links, |i, link| {
                kv::MixedClient::new(
                    link,
                    keys.clone(),
                    common.val_size,
                    rw_ratio,
                    consistency.serializable(),
                    seed(i),
                )
            });
            measure(common, name, &["txn-read", "txn-write"], cs).await
        }
        Workload::Watch(opts) => watch::run_watch(common, &links().await?, &opts, name).await?,
        Workload::WatchLatency {
            watchers,
            streams,
            put_rate,
        } => {
            let opts = WatchOpts {
                watchers,
                streams,
                watched_keys: 1,
                put_rate,
            };
            watch::run_watch(common, &links().await?, &opts, name).await?
        }
        Workload::WatchHold {
            watchers,
            streams,
            hold,
            ready_file,
        } => {
            watch::run_hold(
                common,
                &channels().await?,
                watchers,
                streams,
                hold,
                ready_file.as_deref(),
            )
            .await?
        }
        Workload::LeaseKeepalive => {
            let channels = channels().await?;
            let mut cs = Vec::new();
            for i in 0..common.clients.max(1) {
                cs.push(lease::KeepAliveClient::new(pick(&channels, i)).await?);
            }
            measure(common, name, &["keepalive"], cs).await
        }
        Workload::Kube {
            page_size,
            informers,
            list_percent,
        } => {
            kube::run(
                common,
                &channels().await?,
                &links().await?,
                page_size,
                informers,
                list_percent,
            )
            .await?
        }
    };
    Ok(report)
}
