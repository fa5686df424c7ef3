//! `kube`: the storage pattern of a kube-apiserver on `--key-space-size` objects under
//! `/registry/pods/bench/`:
//! - updates: `txn(mod_revision == seen) then put else get` (GuaranteedUpdate), retried once
//!   with the revision a conflict returned;
//! - creates (`mod_revision == 0`) and deletes (`mod_revision == seen`);
//! - paginated lists (`--page-size`, later pages at the first page's revision);
//! - `--informers` list+watch clients: a paginated list, then a watch of the prefix from the
//!   list's revision + 1, whose put-to-event latency is filed under `event`.

use std::collections::HashMap;
use std::sync::Arc;

use kvstore_proto::etcdserverpb::kv_client::KvClient;
use kvstore_proto::etcdserverpb::request_op::Request;
use kvstore_proto::etcdserverpb::{
    DeleteRangeRequest, RangeRequest, RequestOp, TxnRequest, WatchCreateRequest,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tonic::transport::Channel;

use crate::cli::Common;
use crate::error::Result;
use crate::keys::{stamped_value, Keys};
use crate::kv_link::KvLink;
use crate::report::Report;
use crate::runner::{self, Client, Plan};
use crate::workloads::kv::{get_op, header_revision, mod_is, mod_revision_read, preload, put_op};
use crate::workloads::watch::{open, spawn_readers, stop_readers, Conns, Delivery};

/// Where the objects live.
const PREFIX: &str = "/registry/pods/bench/";

/// Lists every key under `keys`' prefix in pages; returns the revision of the list.
async fn list(
    kv: &mut KvClient<Channel>,
    keys: &Keys,
    page_size: i64,
) -> Result<i64, tonic::Status> {
    let end = keys.prefix_end();
    let mut from = keys.prefix.clone().into_bytes();
    let mut revision = 0;
    loop {
        let resp = kv
            .range(RangeRequest {
                key: from,
                range_end: end.clone(),
                limit: page_size,
                revision,
                ..Default::default()
            })
            .await?
            .into_inner();
        if revision == 0 {
            revision = resp.header.as_ref().map_or(0, |h| h.revision);
        }
        match resp.kvs.last() {
            Some(last) if resp.more => {
                from = last.key.clone();
                from.push(0);
            }
            _ => return Ok(revision),
        }
    }
}

/// One apiserver-like client.
pub struct KubeClient {
    kv: KvClient<Channel>,
    keys: Keys,
    val_size: usize,
    page_size: i64,
    list_percent: u32,
    rng: SmallRng,
    /// Last mod_revision seen per object (0: believed absent).
    seen: HashMap<Vec<u8>, i64>,
}

impl KubeClient {
    /// Optimistic write: `mod_revision(key) == seen` then `op` else read; on a conflict, retry
    /// once with the revision read back. Returns whether the write happened.
    async fn optimistic(
        &mut self,
        key: &[u8],
        op: impl Fn() -> RequestOp,
    ) -> Result<bool, tonic::Status> {
        for _ in 0..2 {
            let rev = self.seen.get(key).copied().unwrap_or(0);
            let resp = self
                .kv
                .txn(TxnRequest {
                    compare: vec![mod_is(key.to_vec(), rev)],
                    success: vec![op()],
                    failure: vec![get_op(key.to_vec(), false)],
                })
                .await?
                .into_inner();
            if resp.succeeded {
                let deleted = matches!(op().request, Some(Request::RequestDeleteRange(_)));
                self.seen.insert(
                    key.to_vec(),
                    if deleted { 0 } else { header_revision(&resp) },
                );
                return Ok(true);
            }
            self.seen.insert(key.to_vec(), mod_revision_read(&resp));
        }
        Ok(false)
    }
}

impl Client for KubeClient {
    async fn op(&mut self, n: u64) -> Result<&'static str, tonic::Status> {
        let roll = self.rng.random_range(0..100);
        if roll < self.list_percent {
            let keys = self.keys.clone();
            list(&mut self.kv, &keys, self.page_size).await?;
            return Ok("list");
        }
        let key = self.keys.pick(n, &mut self.rng);
        let val_size = self.val_size;
        let exists = self.seen.get(&key).is_none_or(|&r| r != 0);
        // Mostly updates; a few deletes, and creates of what this client believes deleted.
        if !exists {
            let k = key.clone();
            self.optimistic(&key, || put_op(k.clone(), stamped_value(val_size)))
                .await?;
            Ok("create")
        } else if roll < self.list_percent + 5 {
            let k = key.clone();
            self.optimistic(&key, || RequestOp {
                request: Some(Request::RequestDeleteRange(DeleteRangeRequest {
                    key: k.clone(),
                    ..Default::default()
                })),
            })
            .await?;
            Ok("delete")
        } else {
            let k = key.clone();
            self.optimistic(&key, || put_op(k.clone(), stamped_value(val_size)))
                .await?;
            Ok("update")
        }
    }
}

/// `kube`: preloaded over `links`; the measured calls go over `channels` (tonic's, as a
/// kube-apiserver's etcd client makes them).
pub async fn run(
    common: &Common,
    channels: &[Channel],
    links: &[KvLink],
    page_size: i64,
    informers: usize,
    list_percent: u32,
) -> Result<Report> {
    let keys = Keys::new(
        PREFIX,
        common.key_size.max(PREFIX.len() + 8),
        common.key_space_size,
        common.sequential_keys,
    );
    preload(common, links, &keys, common.val_size.max(8)).await?;

    // Informers: list, then watch from the list's revision.
    let mut streams = Vec::new();
    for i in 0..informers {
        let channel = channels[i % channels.len()].clone();
        let rev = list(&mut KvClient::new(channel.clone()), &keys, page_size).await?;
        let end = keys.prefix_end();
        streams.extend(
            open(Conns::Channels(&[channel]), 1, 1, |_| WatchCreateRequest {
                key: keys.prefix.clone().into_bytes(),
                range_end: end.clone(),
                start_revision: rev + 1,
                ..Default::default()
            })
            .await?,
        );
    }
    let delivery = Arc::new(Delivery::default());
    let (stop, stop_rx) = watch::channel(false);
    let readers = spawn_readers(streams, delivery.clone(), stop_rx);

    let clients = (0..common.clients.max(1))
        .map(|i| KubeClient {
            kv: KvClient::new(channels[i % channels.len()].clone()),
            keys: keys.clone(),
            val_size: common.val_size.max(8),
            page_size,
            list_percent,
            rng: SmallRng::seed_from_u64(i as u64),
            seen: HashMap::new(),
        })
        .collect();
    let outcome = runner::run(clients, Plan::from_common(common, "kube")).await;
    // Let the informers catch up briefly before counting their events.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut tally = outcome.tally;
    tally.merge(stop_readers(stop, readers).await);
    let mut report = Report::new(
        "kube",
        common,
        &tally,
        &["list", "create", "update", "delete"],
        outcome.elapsed,
        outcome.longest_stall,
    );
    report.extra.insert(
        "informer_events".into(),
        delivery.events.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    Ok(report)
}
