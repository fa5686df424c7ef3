//! Reading history back as watch events: every change with a main revision in a range, in
//! revision order, straight from the `kv` column family (etcd's `syncWatchers` backend read).
//!
//! The column family is keyed by big-endian revision, so one forward scan from
//! `Revision::new(from, 0)` walks the changes in the order they were committed. A put's stored
//! value is the key-value itself; a tombstone's stored value carries only the key, so the event
//! patches in `mod_revision` (as etcd's `kvsToEvents` does) and nothing else.
//!
//! Reads are bounded: a batch stops at a main-revision boundary once it holds `limit` events or
//! `max_bytes` of them, so catching up a watcher never loads unbounded history. A transaction's
//! events are never split across batches (a single transaction larger than the bounds is
//! returned whole: its events must reach a watcher in one response).

use kvstore_proto::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;
use rocksdb::{Direction, IteratorMode, ReadOptions};

use super::backend::CF_KV;
use super::error::{Error, Result};
use super::revision::Revision;
use super::store::KvStore;

/// Entries scanned per returned event before a batch stops anyway (at a revision boundary), so
/// a watcher of a rarely written key does not make one read walk all of history.
const SCAN_FACTOR: usize = 16;

/// One bounded read of history.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct HistoryBatch {
    /// The changes read, in revision order; whole transactions only.
    pub events: Vec<Event>,
    /// The first main revision not covered by this batch: `to_rev + 1` once the range is
    /// exhausted, otherwise where the next batch starts.
    pub next_rev: i64,
}

impl HistoryBatch {
    /// True if the batch reached the end of the range asked for.
    pub fn is_complete(&self, to_rev: i64) -> bool {
        self.next_rev > to_rev
    }
}

impl KvStore {
    /// The changes with main revision in `[from_rev, to_rev]`, in revision order, at most
    /// `limit` events (rounded up to a whole transaction). Fails with [`Error::Compacted`] if
    /// `from_rev` is at or below the compacted revision: compaction at C drops tombstones at
    /// C, so only history from C + 1 on is complete. `to_rev` above the current revision is
    /// read as the current revision.
    pub fn history(&self, from_rev: i64, to_rev: i64, limit: usize) -> Result<HistoryBatch> {
        self.history_matching(from_rev, to_rev, limit, usize::MAX, |_| true)
    }

    /// [`KvStore::history`] restricted to the keys `matches` accepts, and bounded also by
    /// `max_bytes` of encoded events. Entries of other keys are skipped without being kept.
    pub fn history_matching(
        &self,
        from_rev: i64,
        to_rev: i64,
        limit: usize,
        max_bytes: usize,
        matches: impl Fn(&[u8]) -> bool,
    ) -> Result<HistoryBatch> {
        let from_rev = from_rev.max(1);
        if from_rev <= self.compacted_revision() {
            return Err(Error::Compacted);
        }
        let to_rev = to_rev.min(self.current_revision());
        let mut batch = HistoryBatch {
            events: Vec::new(),
            next_rev: to_rev + 1,
        };
        if from_rev > to_rev {
            batch.next_rev = from_rev;
            return Ok(batch);
        }
        let limit = limit.max(1);
        let max_scan = limit.saturating_mul(SCAN_FACTOR);

        let cf = self.backend.cf(CF_KV);
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(Revision::new(to_rev + 1, 0).to_key().to_vec());
        let start = Revision::new(from_rev, 0).to_key();
        let iter = self.backend.db().iterator_cf_opt(
            &cf,
            opts,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut bytes = 0usize;
        let mut current_main = None;
        for (scanned, item) in iter.enumerate() {
            let (key, value) = item?;
            let (rev, tombstone) =
                Revision::from_key(&key).map_err(|e| Error::Corrupt(e.to_string()))?;
            if current_main != Some(rev.main) {
                // A revision boundary: the only place a batch may stop.
                let full =
                    !batch.events.is_empty() && (batch.events.len() >= limit || bytes >= max_bytes);
                if full || scanned >= max_scan {
                    batch.next_rev = rev.main;
                    break;
                }
                current_main = Some(rev.main);
            }
            let mut kv = KeyValue::decode(&*value).map_err(|e| Error::Corrupt(e.to_string()))?;
            if !matches(&kv.key) {
                continue;
            }
            let kind = if tombstone {
                kv.mod_revision = rev.main;
                EventType::Delete
            } else {
                EventType::Put
            };
            let event = Event {
                r#type: kind as i32,
                kv: Some(kv),
                prev_kv: None,
            };
            bytes += event.encoded_len();
            batch.events.push(event);
        }
        if from_rev <= self.compacted_revision() {
            // A compaction raced the scan and may have removed part of what it read.
            return Err(Error::Compacted);
        }
        Ok(batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::StoreOptions;
    use kvstore_proto::etcdserverpb::{
        request_op::Request, DeleteRangeRequest, PutRequest, RequestOp, TxnRequest,
    };

    fn open() -> (tempfile::TempDir, KvStore) {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = KvStore::open(
            dir.path(),
            StoreOptions {
                sync_writes: false,
                ..StoreOptions::default()
            },
        )
        .expect("open store");
        (dir, store)
    }

    fn put(store: &KvStore, key: &str, value: &str) -> i64 {
        let (resp, _) = store
            .put(&PutRequest {
                key: key.into(),
                value: value.into(),
                ..PutRequest::default()
            })
            .expect("put");
        resp.header.expect("header").revision
    }

    fn delete(store: &KvStore, key: &str) -> i64 {
        let (resp, _) = store
            .delete_range(&DeleteRangeRequest {
                key: key.into(),
                ..DeleteRangeRequest::default()
            })
            .expect("delete");
        resp.header.expect("header").revision
    }

    fn summary(events: &[Event]) -> Vec<(i32, String, i64)> {
        events
            .iter()
            .map(|e| {
                let kv = e.kv.as_ref().expect("kv");
                (
                    e.r#type,
                    String::from_utf8_lossy(&kv.key).into_owned(),
                    kv.mod_revision,
                )
            })
            .collect()
    }

    const PUT: i32 = EventType::Put as i32;
    const DEL: i32 = EventType::Delete as i32;

    #[test]
    fn history_returns_puts_and_deletes_in_revision_order() {
        let (_dir, store) = open();
        let r1 = put(&store, "a", "1");
        let r2 = put(&store, "b", "1");
        let r3 = delete(&store, "a");
        let batch = store.history(r1, r3, 100).expect("history");
        assert_eq!(
            summary(&batch.events),
            vec![
                (PUT, "a".into(), r1),
                (PUT, "b".into(), r2),
                (DEL, "a".into(), r3)
            ]
        );
        assert!(batch.is_complete(r3));
        let tomb = batch.events[2].kv.as_ref().expect("kv");
        assert_eq!(
            tomb.create_revision, 0,
            "a delete event carries only key and mod_revision"
        );
        assert!(tomb.value.is_empty());
    }

    #[test]
    fn history_batches_never_split_a_transaction() {
        let (_dir, store) = open();
        let first = put(&store, "x", "0");
        let ops = (0..5)
            .map(|i| RequestOp {
                request: Some(Request::RequestPut(PutRequest {
                    key: format!("t{i}").into_bytes(),
                    value: b"v".to_vec(),
                    ..PutRequest::default()
                })),
            })
            .collect();
        let (resp, _) = store
            .txn(&TxnRequest {
                compare: vec![],
                success: ops,
                failure: vec![],
            })
            .expect("txn");
        let txn_rev = resp.header.expect("header").revision;
        let last = put(&store, "y", "0");

        let b1 = store.history(first, last, 1).expect("history");
        assert_eq!(b1.events.len(), 1, "stops before the 5-event transaction");
        assert_eq!(b1.next_rev, txn_rev);
        let b2 = store.history(b1.next_rev, last, 1).expect("history");
        assert_eq!(
            b2.events.len(),
            5,
            "a transaction larger than the limit comes whole"
        );
        assert_eq!(b2.next_rev, last);
        let b3 = store.history(b2.next_rev, last, 1).expect("history");
        assert_eq!(summary(&b3.events), vec![(PUT, "y".into(), last)]);
        assert!(b3.is_complete(last));
    }

    #[test]
    fn history_matching_skips_other_keys() {
        let (_dir, store) = open();
        let r1 = put(&store, "a", "1");
        put(&store, "b", "1");
        let r3 = put(&store, "a", "2");
        let batch = store
            .history_matching(r1, r3, 10, usize::MAX, |k| k == b"a")
            .expect("history");
        assert_eq!(
            summary(&batch.events),
            vec![(PUT, "a".into(), r1), (PUT, "a".into(), r3)]
        );
    }

    #[test]
    fn history_at_or_below_compaction_is_compacted() {
        let (_dir, store) = open();
        put(&store, "a", "1");
        let r2 = put(&store, "a", "2");
        let r3 = put(&store, "a", "3");
        let job = store.compact(r2).expect("compact");
        store.run_compaction(job).expect("run compaction");
        assert!(matches!(store.history(r2, r3, 10), Err(Error::Compacted)));
        let batch = store
            .history(r2 + 1, r3, 10)
            .expect("history after compaction");
        assert_eq!(summary(&batch.events), vec![(PUT, "a".into(), r3)]);
    }

    #[test]
    fn history_of_an_empty_range_is_empty() {
        let (_dir, store) = open();
        let r1 = put(&store, "a", "1");
        let batch = store.history(r1 + 1, r1 + 5, 10).expect("history");
        assert!(batch.events.is_empty());
        assert_eq!(
            batch.next_rev,
            r1 + 1,
            "nothing past the current revision is read"
        );
    }
}
