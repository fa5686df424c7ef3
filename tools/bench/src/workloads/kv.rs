//! Key-value workloads: `put`, `range`, `txn-put` (compare-and-swap) and `txn-mixed`, and the
//! preloading the read workloads need.

use std::collections::HashMap;

use kvstore_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use kvstore_proto::etcdserverpb::request_op::Request;
use kvstore_proto::etcdserverpb::response_op::Response;
use kvstore_proto::etcdserverpb::{
    Compare, PutRequest, RangeRequest, RequestOp, TxnRequest, TxnResponse,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::cli::Common;
use crate::error::{Error, Result};
use crate::keys::Keys;
use crate::kv_link::KvLink;
use crate::runner::{self, Client, Plan};

/// Most puts one transaction may carry (etcd's default `--max-txn-ops` is 128).
pub const MAX_BATCH: u64 = 128;

/// A put request.
pub fn put_op(key: Vec<u8>, value: Vec<u8>) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestPut(PutRequest {
            key,
            value,
            ..Default::default()
        })),
    }
}

/// A single-key range request.
pub fn get_op(key: Vec<u8>, serializable: bool) -> RequestOp {
    RequestOp {
        request: Some(Request::RequestRange(RangeRequest {
            key,
            serializable,
            ..Default::default()
        })),
    }
}

/// `mod_revision(key) == rev` (0 for a key that does not exist).
pub fn mod_is(key: Vec<u8>, rev: i64) -> Compare {
    Compare {
        result: CompareResult::Equal as i32,
        target: CompareTarget::Mod as i32,
        key,
        range_end: Vec::new(),
        target_union: Some(TargetUnion::ModRevision(rev)),
    }
}

/// The mod_revision of the key a failed compare-and-swap read back (0 if it is gone).
pub fn mod_revision_read(resp: &TxnResponse) -> i64 {
    resp.responses
        .iter()
        .find_map(|r| match &r.response {
            Some(Response::ResponseRange(range)) => {
                Some(range.kvs.first().map_or(0, |kv| kv.mod_revision))
            }
            _ => None,
        })
        .unwrap_or(0)
}

/// The revision a response header carries.
pub fn header_revision(resp: &TxnResponse) -> i64 {
    resp.header.as_ref().map_or(0, |h| h.revision)
}

/// Puts one key per request, or `batch` keys per transaction.
pub struct PutClient {
    kv: KvLink,
    keys: Keys,
    value: Vec<u8>,
    batch: u64,
    rng: SmallRng,
}

impl PutClient {
    /// A put client on this connection; `seed` makes each client's random keys differ.
    pub fn new(link: KvLink, keys: Keys, val_size: usize, batch: u64, seed: u64) -> PutClient {
        PutClient {
            kv: link,
            keys,
            value: vec![b'v'; val_size],
            batch: batch.max(1),
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Client for PutClient {
    async fn op(&mut self, n: u64) -> Result<&'static str, tonic::Status> {
        if self.batch == 1 {
            let key = self.keys.pick(n, &mut self.rng);
            self.kv
                .put(PutRequest {
                    key,
                    value: self.value.clone(),
                    ..Default::default()
                })
                .await?;
            return Ok("put");
        }
        let base = if self.keys.sequential {
            n * self.batch
        } else {
            self.rng.random_range(0..self.keys.space)
        };
        let success = (0..self.batch)
            .map(|j| put_op(self.keys.at(base + j), self.value.clone()))
            .collect();
        self.kv
            .txn(TxnRequest {
                success,
                ..Default::default()
            })
            .await?;
        Ok("put")
    }
}

/// Checks `--batch` against the key space and etcd's transaction size limit.
pub fn check_batch(batch: u64, space: u64) -> Result<()> {
    if batch == 0 || batch > MAX_BATCH {
        return Err(Error::Usage(format!("--batch must be 1..={MAX_BATCH}")));
    }
    if batch > 1 && batch > space {
        return Err(Error::Usage(
            "--batch must not exceed --key-space-size (a transaction may not repeat a key)".into(),
        ));
    }
    Ok(())
}

/// Writes every key of `keys` once (100 per transaction, sequentially), so reads find data.
/// Not measured; fails if any write fails.
pub async fn preload(
    common: &Common,
    links: &[KvLink],
    keys: &Keys,
    val_size: usize,
) -> Result<()> {
    let batch = 100.min(keys.space);
    let mut keys = keys.clone();
    keys.sequential = true;
    let clients = (0..common.clients.clamp(1, 16))
        .map(|i| {
            PutClient::new(
                links[i % links.len()].clone(),
                keys.clone(),
                val_size,
                batch,
                i as u64,
            )
        })
        .collect();
    let mut plan = Plan::from_common(common, "preload");
    plan.total = keys.space.div_ceil(batch);
    plan.duration = None;
    let outcome = runner::run(clients, plan).await;
    if outcome.tally.errors > 0 {
        return Err(Error::Setup(format!(
            "preloading {} keys: {}",
            keys.space,
            outcome.tally.error_samples.join("; ")
        )));
    }
    Ok(())
}

/// Reads one random key per request.
pub struct RangeClient {
    kv: KvLink,
    keys: Keys,
    serializable: bool,
    rng: SmallRng,
}

impl RangeClient {
    /// A range client on this connection.
    pub fn new(link: KvLink, keys: Keys, serializable: bool, seed: u64) -> RangeClient {
        RangeClient {
            kv: link,
            keys,
            serializable,
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Client for RangeClient {
    async fn op(&mut self, n: u64) -> Result<&'static str, tonic::Status> {
        let key = self.keys.pick(n, &mut self.rng);
        self.kv
            .range(RangeRequest {
                key,
                serializable: self.serializable,
                ..Default::default()
            })
            .await?;
        Ok("range")
    }
}

/// Compare-and-swap: put the key if its mod_revision is the one this client last saw, else read
/// it back (a conflict, whose revision the next attempt uses).
pub struct CasClient {
    kv: KvLink,
    keys: Keys,
    value: Vec<u8>,
    rng: SmallRng,
    /// The mod_revision this client last saw per key (absent: assume the key does not exist).
    seen: HashMap<Vec<u8>, i64>,
}

impl CasClient {
    /// A compare-and-swap client on this connection.
    pub fn new(link: KvLink, keys: Keys, val_size: usize, seed: u64) -> CasClient {
        CasClient {
            kv: link,
            keys,
            value: vec![b'v'; val_size],
            rng: SmallRng::seed_from_u64(seed),
            seen: HashMap::new(),
        }
    }
}

impl Client for CasClient {
    async fn op(&mut self, n: u64) -> Result<&'static str, tonic::Status> {
        let key = self.keys.pick(n, &mut self.rng);
        let rev = self.seen.get(&key).copied().unwrap_or(0);
        let resp = self
            .kv
            .txn(TxnRequest {
                compare: vec![mod_is(key.clone(), rev)],
                success: vec![put_op(key.clone(), self.value.clone())],
                failure: vec![get_op(key.clone(), false)],
            })
            .await?;
        if resp.succeeded {
            self.seen.insert(key, header_revision(&resp));
            Ok("cas")
        } else {
            self.seen.insert(key, mod_revision_read(&resp));
            Ok("cas-conflict")
        }
    }
}

/// Transactions that read (with probability rw/(1+rw)) or write one random key.
pub struct MixedClient {
    kv: KvLink,
    keys: Keys,
    value: Vec<u8>,
    read_probability: f64,
    serializable: bool,
    rng: SmallRng,
}

impl MixedClient {
    /// A mixed-transaction client on this connection.
    pub fn new(
        link: KvLink,
        keys: Keys,
        val_size: usize,
        rw_ratio: f64,
        serializable: bool,
        seed: u64,
    ) -> MixedClient {
        MixedClient {
            kv: link,
            keys,
            value: vec![b'v'; val_size],
            read_probability: rw_ratio / (1.0 + rw_ratio),
            serializable,
            rng: SmallRng::seed_from_u64(seed),
        }
    }
}

impl Client for MixedClient {
    async fn op(&mut self, n: u64) -> Result<&'static str, tonic::Status> {
        let key = self.keys.pick(n, &mut self.rng);
        let read = self.rng.random_bool(self.read_probability.clamp(0.0, 1.0));
        let (op, kind) = if read {
            (get_op(key, self.serializable), "txn-read")
        } else {
            (put_op(key, self.value.clone()), "txn-write")
        };
        self.kv
            .txn(TxnRequest {
                success: vec![op],
                ..Default::default()
            })
            .await?;
        Ok(kind)
    }
}
