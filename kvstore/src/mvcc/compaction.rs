//! Compaction: forgetting history no read at or above a revision can see.
//!
//! Two steps, as in etcd. First, under the writer lock and quickly: record the revision as
//! scheduled (so a crash resumes it), raise the compacted revision (reads below it now fail) and
//! compact the in-memory index, which yields the set of revisions to keep. Second, without the
//! writer lock: delete from RocksDB every revision at or below it that is not kept, in bounded
//! batches with a pause between them, so writers are never blocked for long; then record the
//! compaction as finished.

use std::collections::HashSet;

use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch};

use super::backend::{encode_i64, CF_KV, CF_META, META_FINISHED_COMPACT};
use super::error::{Error, Result};
use super::revision::Revision;
use super::store::KvStore;

/// A scheduled compaction whose removal of old revisions from disk has yet to run.
#[derive(Debug)]
pub struct CompactionJob {
    /// The revision compacted at.
    pub rev: i64,
    /// Revisions at or below `rev` that must survive (each key's latest live revision).
    keep: HashSet<Revision>,
}

impl KvStore {
    /// etcd's Compact(rev): reads below `rev` fail from now on. Fails with `Compacted` if `rev`
    /// is not above the last compaction, `FutureRevision` if above the current revision. The
    /// returned job removes the old data; run it with [`KvStore::run_compaction`].
    pub fn compact(&self, rev: i64) -> Result<CompactionJob> {
        let keep = self.schedule_compaction(rev)?;
        Ok(CompactionJob { rev, keep })
    }

    /// Removes from disk what a scheduled compaction no longer needs, in batches.
    pub fn run_compaction(&self, job: CompactionJob) -> Result<()> {
        self.remove_compacted(job.rev, &job.keep)
    }

    /// Deletes every revision with main <= `rev` not in `keep`, then records `rev` as finished.
    pub(super) fn remove_compacted(&self, rev: i64, keep: &HashSet<Revision>) -> Result<()> {
        let _one_at_a_time = self.compaction.lock();
        let backend = &self.backend;
        let upper = Revision::new(rev + 1, 0).to_key().to_vec();
        let batch_size = self.options.compaction_batch.max(1);
        let mut from: Vec<u8> = Vec::new();
        let mut removed = 0usize;
        loop {
            let cf = backend.cf(CF_KV);
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(upper.clone());
            let iter = backend.db().iterator_cf_opt(
                &cf,
                opts,
                IteratorMode::From(&from, Direction::Forward),
            );
            let mut batch = WriteBatch::default();
            let mut scanned = 0;
            let mut last = None;
            for item in iter {
                let (k, _) = item?;
                let (r, _) = Revision::from_key(&k).map_err(|e| Error::Corrupt(e.to_string()))?;
                #[cfg(test)]
                let keep_it = keep.contains(&r)
                    && self.options.fault != Some(super::store::Fault::CompactionDropsLatest);
                #[cfg(not(test))]
                let keep_it = keep.contains(&r);
                if !keep_it {
                    batch.delete_cf(&cf, &k);
                }
                scanned += 1;
                last = Some(k);
                if scanned >= batch_size {
                    break;
                }
            }
            removed += batch.len();
            if !batch.is_empty() {
                backend.write(batch)?;
            }
            match last {
                Some(k) if scanned >= batch_size => {
                    from = k.to_vec();
                    from.push(0);
                    if !self.options.compaction_pause.is_zero() {
                        std::thread::sleep(self.options.compaction_pause);
                    }
                }
                _ => break,
            }
        }
        let mut batch = WriteBatch::default();
        batch.put_cf(&backend.cf(CF_META), META_FINISHED_COMPACT, encode_i64(rev));
        backend.write(batch)?;
        tracing::debug!(revision = rev, removed, "finished compaction");
        Ok(())
    }
}
