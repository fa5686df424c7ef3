//! Storage engine benchmarks at scale (1M keys by default; `KVSTORE_BENCH_KEYS` to change):
//! put, point get, range scan and compaction on the real RocksDB-backed store, our B+tree index
//! against `std::collections::BTreeMap`, and the index's memory per key.
//!
//! Run: `cargo bench -p kvstore --bench store` (figures go in docs/benchmarks.md).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::ops::Bound;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput};
use kvstore::mvcc::btree::BPlusTree;
use kvstore::mvcc::index::TreeIndex;
use kvstore::mvcc::{KvStore, Revision, StoreOptions};
use kvstore_proto::etcdserverpb::{PutRequest, RangeRequest};
use rand::{Rng, SeedableRng};

/// 1M keys when benchmarking; 10k when `cargo test` runs the benches once as a smoke test.
fn n_keys() -> usize {
    let benchmarking = std::env::args().any(|a| a == "--bench");
    std::env::var("KVSTORE_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(if benchmarking { 1_000_000 } else { 10_000 })
}

fn key(i: usize) -> Vec<u8> {
    format!("/registry/pods/default/pod-{i:08}").into_bytes()
}

/// Opens a store in `dir` holding `n` keys of 256-byte values, written 1000 per transaction.
fn loaded_store(dir: &std::path::Path, n: usize) -> KvStore {
    let store = KvStore::open(
        dir,
        StoreOptions {
            sync_writes: false,
            compaction_pause: Duration::ZERO,
            ..StoreOptions::default()
        },
    )
    .expect("open");
    let value = vec![b'v'; 256];
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut txn = store.write();
        for &i in chunk {
            txn.put(&key(i), &value, 0);
        }
        txn.commit().expect("commit");
    }
    store
}

fn store_benches(c: &mut Criterion) {
    let n = n_keys();
    let dir = tempfile::tempdir().expect("tempdir");
    let started = Instant::now();
    let store = loaded_store(dir.path(), n);
    eprintln!("loaded {n} keys in {:?}", started.elapsed());
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut group = c.benchmark_group(format!("store_{n}_keys"));
    group.sample_size(30);
    let value = vec![b'x'; 256];
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_unsynced", |b| {
        b.iter(|| {
            let req = PutRequest {
                key: key(rng.random_range(0..n)),
                value: value.clone(),
                ..PutRequest::default()
            };
            black_box(store.put(&req).expect("put"));
        })
    });
    group.bench_function("point_get", |b| {
        b.iter(|| {
            let req = RangeRequest {
                key: key(rng.random_range(0..n)),
                ..RangeRequest::default()
            };
            black_box(store.range(&req).expect("get"));
        })
    });
    group.throughput(Throughput::Elements(1000));
    // A bounded range of 1000 consecutive keys. (A from-key range with a limit would mostly
    // measure the exact `count` etcd's API requires over the rest of the key space.)
    group.bench_function("range_scan_1000", |b| {
        b.iter(|| {
            let start = rng.random_range(0..n.saturating_sub(1000).max(1));
            let req = RangeRequest {
                key: key(start),
                range_end: key(start + 1000),
                ..RangeRequest::default()
            };
            black_box(store.range(&req).expect("scan"));
        })
    });
    group.finish();

    // Compaction: overwrite every key once (n more revisions), then compact them all away.
    let value = vec![b'y'; 256];
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let mut txn = store.write();
        for &i in chunk {
            txn.put(&key(i), &value, 0);
        }
        txn.commit().expect("commit");
    }
    let started = Instant::now();
    let job = store.compact(store.current_revision()).expect("compact");
    let scheduled = started.elapsed();
    store.run_compaction(job).expect("run compaction");
    eprintln!(
        "compaction of {n} superseded revisions: index step {scheduled:?} (writers blocked), \
         total {:?}",
        started.elapsed()
    );
}

fn index_benches(c: &mut Criterion) {
    let n = n_keys();
    let keys: Vec<Vec<u8>> = {
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        (0..n)
            .map(|_| key(rng.random_range(0..usize::MAX / 2)))
            .collect()
    };
    let mut group = c.benchmark_group(format!("index_{n}_keys"));
    group.sample_size(10);
    group.throughput(Throughput::Elements(n as u64));
    group.bench_function(BenchmarkId::new("insert", "bplustree"), |b| {
        b.iter(|| {
            let mut t = BPlusTree::new();
            for k in &keys {
                t.insert(k.clone(), 1u64);
            }
            black_box(t.len())
        })
    });
    group.bench_function(BenchmarkId::new("insert", "std_btreemap"), |b| {
        b.iter(|| {
            let mut t = BTreeMap::new();
            for k in &keys {
                t.insert(k.clone(), 1u64);
            }
            black_box(t.len())
        })
    });
    let mut ours = BPlusTree::new();
    let mut std = BTreeMap::new();
    for k in &keys {
        ours.insert(k.clone(), 1u64);
        std.insert(k.clone(), 1u64);
    }
    group.bench_function(BenchmarkId::new("get", "bplustree"), |b| {
        b.iter(|| {
            keys.iter()
                .filter(|k| ours.get(k.as_slice()).is_some())
                .count()
        })
    });
    group.bench_function(BenchmarkId::new("get", "std_btreemap"), |b| {
        b.iter(|| {
            keys.iter()
                .filter(|k| std.contains_key(k.as_slice()))
                .count()
        })
    });
    group.bench_function(BenchmarkId::new("scan", "bplustree"), |b| {
        b.iter(|| {
            ours.range::<[u8]>(Bound::Unbounded, Bound::Unbounded)
                .count()
        })
    });
    group.bench_function(BenchmarkId::new("scan", "std_btreemap"), |b| {
        b.iter(|| {
            std.range::<[u8], _>((Bound::Unbounded, Bound::Unbounded))
                .count()
        })
    });
    group.finish();
}

/// Resident memory of this process in bytes (Linux).
fn rss_bytes() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// Bytes of memory per key of the revision index at `n` keys, each with one revision.
fn index_memory() {
    let n = n_keys();
    let keys: Vec<Vec<u8>> = (0..n).map(key).collect();
    let key_bytes: usize = keys.iter().map(|k| k.len()).sum();
    let before = rss_bytes();
    let mut index = TreeIndex::new();
    for (i, k) in keys.iter().enumerate() {
        index.put(k, Revision::new(i as i64 + 2, 0));
    }
    let after = rss_bytes();
    let per_key = (after.saturating_sub(before)) as f64 / n as f64;
    eprintln!(
        "index memory at {n} keys: {per_key:.0} bytes/key (keys themselves average {:.0} bytes)",
        key_bytes as f64 / n as f64
    );
    black_box(index.len());
}

fn main() {
    index_memory();
    let mut c = Criterion::default()
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    index_benches(&mut c);
    store_benches(&mut c);
    c.final_summary();
}
