//! What `snapshot save`, `snapshot status` and `snapshot restore` print.
//!
//! `status` prints etcdctl's four figures in its four formats; `save` and `restore` print
//! etcdctl's one line on standard output, and what etcdctl only logs (size, time, throughput,
//! revision; the new member's IDs) as one line on standard error.

use std::time::Duration;

use super::{table, Format, Rendered};
use crate::go::humanize_bytes;

/// The figures `snapshot status` prints (etcd's `snapshot.Status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotStatus {
    /// The member's Hash at the snapshot.
    pub hash: u32,
    /// The store's revision.
    pub revision: i64,
    /// Keys of all column families.
    pub total_keys: u64,
    /// Bytes in the file.
    pub total_size: u64,
}

/// `snapshot status` in `format`.
pub(super) fn status(format: Format, s: &SnapshotStatus) -> String {
    match format {
        Format::Simple => format!(
            "{:x}, {}, {}, {}\n",
            s.hash,
            s.revision,
            s.total_keys,
            humanize_bytes(s.total_size)
        ),
        Format::Json => format!(
            "{{\"hash\":{},\"revision\":{},\"totalKey\":{},\"totalSize\":{}}}\n",
            s.hash, s.revision, s.total_keys, s.total_size
        ),
        Format::Fields => format!(
            "\"Hash\" : {}\n\"Revision\" : {}\n\"Keys\" : {}\n\"Size\" : {}\n",
            s.hash, s.revision, s.total_keys, s.total_size
        ),
        Format::Table => table::render(
            &["hash", "revision", "total keys", "total size"],
            &[vec![
                format!("{:x}", s.hash),
                s.revision.to_string(),
                s.total_keys.to_string(),
                humanize_bytes(s.total_size),
            ]],
        ),
    }
}

/// Bytes per second, as go-humanize words sizes (`212 MB/s`).
fn throughput(bytes: u64, took: Duration) -> String {
    let secs = took.as_secs_f64().max(1e-6);
    format!("{}/s", humanize_bytes((bytes as f64 / secs) as u64))
}

/// `snapshot save` succeeded: etcdctl's line, and the figures on standard error.
pub fn saved(path: &str, size: u64, took: Duration, revision: Option<i64>) -> Rendered {
    let revision = revision.map_or(String::new(), |r| format!(", revision {r}"));
    Rendered {
        stdout: format!("Snapshot saved at {path}\n").into_bytes(),
        stderr: format!(
            "saved {} in {:.2}s ({}){revision}\n",
            humanize_bytes(size),
            took.as_secs_f64(),
            throughput(size, took)
        )
        .into_bytes(),
    }
}

/// `snapshot restore` succeeded.
pub fn restored(
    data_dir: &str,
    member_id: u64,
    cluster_id: u64,
    status: &kvstore::backup::SnapshotStatus,
    took: Duration,
) -> Rendered {
    Rendered::err(format!(
        "restored snapshot (revision {}, compacted revision {}, {} revisions, {} leases, {} in \
         {:.2}s, {}) into {data_dir} as member {member_id:x} of cluster {cluster_id:x}\n",
        status.revision,
        status.compact_revision,
        status.kv_revisions,
        status.leases,
        humanize_bytes(status.total_size),
        took.as_secs_f64(),
        throughput(status.total_size, took),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// etcdctl 3.4's output for a 3-key store (`snapshot status s.db -w ...`).
    #[test]
    fn status_matches_etcdctl_in_every_format() {
        let s = SnapshotStatus {
            hash: 0xce77a57f,
            revision: 4,
            total_keys: 7,
            total_size: 24576,
        };
        assert_eq!(status(Format::Simple, &s), "ce77a57f, 4, 7, 25 kB\n");
        assert_eq!(
            status(Format::Json, &s),
            "{\"hash\":3463947647,\"revision\":4,\"totalKey\":7,\"totalSize\":24576}\n"
        );
        assert_eq!(
            status(Format::Fields, &s),
            "\"Hash\" : 3463947647\n\"Revision\" : 4\n\"Keys\" : 7\n\"Size\" : 24576\n"
        );
        assert_eq!(
            status(Format::Table, &s),
            "+----------+----------+------------+------------+\n\
             |   HASH   | REVISION | TOTAL KEYS | TOTAL SIZE |\n\
             +----------+----------+------------+------------+\n\
             | ce77a57f |        4 |          7 |      25 kB |\n\
             +----------+----------+------------+------------+\n"
        );
    }
}
