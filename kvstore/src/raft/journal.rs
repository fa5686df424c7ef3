//! The Raft log's journal: what makes an append durable, in preallocated segment files, as
//! etcd's WAL does, instead of RocksDB's write-ahead log.
//!
//! Why a file of our own: an append is acknowledged after one `fdatasync`, and what that costs
//! depends on what the file system must record besides the data. RocksDB reserves a WAL file's
//! space with `fallocate(FALLOC_FL_KEEP_SIZE)`, so every sync of an append also records a new
//! file size and an extent turned from unwritten to written. Into a segment whose size is set
//! up front (`fallocate` without `KEEP_SIZE`) the sync has the data to write and little more:
//! three members' 420-byte append-and-sync loops at once on this machine's disk took 296–328 µs
//! per sync the RocksDB way and 240 µs into such a segment (`docs/benchmarks.md`).
//!
//! The journal is only written, and read back once, at open. The entries also go to the
//! `raft_log` column family (without RocksDB's WAL), which is where every read of the log is
//! served from; after a crash, the journal puts back what RocksDB's memtables lost. A segment
//! is deleted once a flush of all column families ([`Backend::persist`]) has made everything
//! written before the segment was closed durable in RocksDB's tables.
//!
//! # Format
//! A segment is `<sequence, 16 hex digits>.journal`, [`SEGMENT_BYTES`] long, zero-filled past
//! its last record. A record is
//!
//! | bytes | |
//! |---|---|
//! | 4 | length `n` of what follows the checksum, little-endian, never 0 |
//! | 4 | CRC-32C of those `n` bytes |
//! | 1 | kind: 1 entries, 2 truncate |
//! | `n - 1` | entries: each a 4-byte little-endian length and a postcard [`Entry`]; truncate: the index, 8 bytes little-endian |
//!
//! Reading a segment stops at the first record that is not whole and intact: a zero length
//! (the preallocated tail), a length past the file's end, or a checksum that fails (a write
//! torn by a crash). Segments are never reused, so nothing older can follow the end.
//!
//! [`Backend::persist`]: crate::mvcc::backend::Backend::persist
//! [`Entry`]: super::types::Entry

use std::fs::{self, File};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Bytes reserved for a segment (etcd's WAL segment size). A record longer than what is left
/// starts a new segment; one longer than a whole segment makes its segment grow.
pub const SEGMENT_BYTES: u64 = 64 << 20;

/// Bytes of a record's length and checksum.
const HEADER_BYTES: usize = 8;
/// Record kind: log entries appended.
const KIND_ENTRIES: u8 = 1;
/// Record kind: the log truncated from an index on.
const KIND_TRUNCATE: u8 = 2;
/// File name suffix of a segment.
const SUFFIX: &str = ".journal";

/// One change to the log, as read back from the journal.
#[derive(Debug, PartialEq, Eq)]
pub enum Record {
    /// Entries appended, each its postcard encoding, in log order.
    Entries(Vec<Vec<u8>>),
    /// Every entry at and after this index removed.
    Truncate(u64),
}

/// The journal of one member's log: the segment being written and where.
pub struct Journal {
    /// The directory of the segments.
    dir: PathBuf,
    /// Bytes reserved for each new segment.
    segment_bytes: u64,
    /// The segment appended to, shared with whoever syncs it.
    active: Arc<File>,
    /// Its sequence number.
    seq: u64,
    /// Where its next record goes.
    offset: u64,
}

impl Journal {
    /// Opens the journal in `dir` (created if missing) on a new segment after any that exist:
    /// those stay until [`Journal::remove_before`] is told the store has made them redundant.
    pub fn open(dir: &Path, segment_bytes: u64) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let seq = segments(dir)?.last().map_or(0, |last| last + 1);
        let active = create_segment(dir, seq, segment_bytes)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            segment_bytes,
            active: Arc::new(active),
            seq,
            offset: 0,
        })
    }

    /// The sequence number of the segment being written: every segment before it holds only
    /// records written before it was started.
    pub fn active_seq(&self) -> u64 {
        self.seq
    }

    /// Appends a record of `entries` (each a postcard [`Entry`](super::types::Entry)). Returns
    /// the file to sync for it to be durable, and whether this record started a new segment.
    pub fn append_entries<'a>(
        &mut self,
        entries: impl IntoIterator<Item = &'a [u8]>,
    ) -> io::Result<(Arc<File>, bool)> {
        let mut record = vec![0; HEADER_BYTES];
        record.push(KIND_ENTRIES);
        for entry in entries {
            let len = u32::try_from(entry.len()).map_err(|_| too_large(entry.len()))?;
            record.extend_from_slice(&len.to_le_bytes());
            record.extend_from_slice(entry);
        }
        self.write(record)
    }

    /// Appends a record removing the entries at and after `index`.
    pub fn append_truncate(&mut self, index: u64) -> io::Result<(Arc<File>, bool)> {
        let mut record = vec![0; HEADER_BYTES];
        record.push(KIND_TRUNCATE);
        record.extend_from_slice(&index.to_le_bytes());
        self.write(record)
    }

    /// Fills in the header of `record` (its body after [`HEADER_BYTES`]) and writes it, in a
    /// new segment if it does not fit in what is left of this one.
    fn write(&mut self, mut record: Vec<u8>) -> io::Result<(Arc<File>, bool)> {
        let body = record.len() - HEADER_BYTES;
        let len = u32::try_from(body).map_err(|_| too_large(body))?;
        let crc = crc32c::crc32c(&record[HEADER_BYTES..]);
        record[..4].copy_from_slice(&len.to_le_bytes());
        record[4..HEADER_BYTES].copy_from_slice(&crc.to_le_bytes());
        let bytes = record.len() as u64;
        let rolled = self.offset > 0 && self.offset + bytes > self.segment_bytes;
        if rolled {
            let seq = self.seq + 1;
            self.active = Arc::new(create_segment(&self.dir, seq, self.segment_bytes)?);
            self.seq = seq;
            self.offset = 0;
        }
        self.active.write_all_at(&record, self.offset)?;
        self.offset += bytes;
        Ok((Arc::clone(&self.active), rolled))
    }

    /// The sequence numbers of the segments in `dir`, oldest first (none if there is no such
    /// directory).
    pub fn segments(dir: &Path) -> io::Result<Vec<u64>> {
        if !dir.exists() {
            return Ok(Vec::new());
        }
        segments(dir)
    }

    /// The records of segment `seq` in `dir`, up to its end (see the module docs). Reads the
    /// segment record by record: a preallocated tail is not read, and a length field torn into
    /// garbage ends the segment rather than sizing an allocation.
    pub fn read_segment(dir: &Path, seq: u64) -> io::Result<Vec<Record>> {
        let path = segment_path(dir, seq);
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        let mut reader = BufReader::with_capacity(1 << 20, file);
        let mut records = Vec::new();
        let mut at = 0u64;
        let mut header = [0u8; HEADER_BYTES];
        while at + HEADER_BYTES as u64 <= size {
            reader.read_exact(&mut header)?;
            let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
            let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
            let start = at + HEADER_BYTES as u64;
            if len == 0 || start + u64::from(len) > size {
                break;
            }
            let mut body = vec![0; len as usize];
            reader.read_exact(&mut body)?;
            if crc32c::crc32c(&body) != crc {
                break;
            }
            let record = decode(&body).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "journal {}: record at byte {at} has a valid checksum but no valid body",
                        path.display()
                    ),
                )
            })?;
            records.push(record);
            at = start + u64::from(len);
        }
        Ok(records)
    }

    /// Deletes the segments before `seq`: the caller has made all they hold durable elsewhere.
    pub fn remove_before(dir: &Path, seq: u64) -> io::Result<()> {
        for old in segments(dir)?.into_iter().filter(|s| *s < seq) {
            match fs::remove_file(segment_path(dir, old)) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
        Ok(())
    }

    /// The directory of the segments.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn too_large(len: usize) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("a journal record of {len} bytes is too large"),
    )
}

fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("{seq:016x}{SUFFIX}"))
}

/// The sequence numbers of the segments in `dir`, in order.
fn segments(dir: &Path) -> io::Result<Vec<u64>> {
    let mut seqs = Vec::new();
    for item in fs::read_dir(dir)? {
        let name = item?.file_name();
        let Some(stem) = name.to_str().and_then(|n| n.strip_suffix(SUFFIX)) else {
            continue;
        };
        if let Ok(seq) = u64::from_str_radix(stem, 16) {
            seqs.push(seq);
        }
    }
    seqs.sort_unstable();
    Ok(seqs)
}

/// Creates segment `seq` with `bytes` reserved and its size set, and makes its directory
/// entry durable.
fn create_segment(dir: &Path, seq: u64, bytes: u64) -> io::Result<File> {
    let file = File::options()
        .read(true)
        .write(true)
        .create_new(true)
        .open(segment_path(dir, seq))?;
    match rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, bytes) {
        Ok(()) => {}
        // A file system without fallocate: the segment grows as it is written.
        Err(rustix::io::Errno::OPNOTSUPP) => {}
        Err(err) => return Err(err.into()),
    }
    file.sync_all()?;
    File::open(dir)?.sync_all()?;
    Ok(file)
}

/// The record in `body` (kind and what follows), if well formed.
fn decode(body: &[u8]) -> Option<Record> {
    let (kind, mut rest) = body.split_first()?;
    match *kind {
        KIND_ENTRIES => {
            let mut entries = Vec::new();
            while !rest.is_empty() {
                let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
                entries.push(rest.get(4..4 + len)?.to_vec());
                rest = &rest[4 + len..];
            }
            Some(Record::Entries(entries))
        }
        KIND_TRUNCATE => Some(Record::Truncate(u64::from_le_bytes(rest.try_into().ok()?))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of every segment in `dir`, oldest first.
    fn read_all(dir: &Path) -> Vec<Record> {
        let mut records = Vec::new();
        for seq in Journal::segments(dir).expect("segments") {
            records.extend(Journal::read_segment(dir, seq).expect("read"));
        }
        records
    }

    fn entries(journal: &mut Journal, items: &[&[u8]]) -> bool {
        journal
            .append_entries(items.iter().copied())
            .expect("append")
            .1
    }

    #[test]
    fn records_read_back_in_order_across_segments() {
        let dir = tempfile::tempdir().expect("dir");
        let mut journal = Journal::open(dir.path(), 64).expect("open");
        assert!(!entries(&mut journal, &[b"one", b"two"]));
        journal.append_truncate(7).expect("truncate");
        // 8 + 1 + 4 + 40 bytes do not fit after the first two records: a new segment.
        assert!(entries(&mut journal, &[&[3; 40]]));
        assert_eq!(journal.active_seq(), 1);
        assert_eq!(
            read_all(dir.path()),
            vec![
                Record::Entries(vec![b"one".to_vec(), b"two".to_vec()]),
                Record::Truncate(7),
                Record::Entries(vec![vec![3; 40]]),
            ]
        );
        Journal::remove_before(dir.path(), 1).expect("remove");
        assert_eq!(
            read_all(dir.path()),
            vec![Record::Entries(vec![vec![3; 40]])]
        );
    }

    #[test]
    fn a_torn_record_ends_the_segment_and_a_reopen_writes_a_new_one() {
        let dir = tempfile::tempdir().expect("dir");
        let mut journal = Journal::open(dir.path(), 1 << 20).expect("open");
        entries(&mut journal, &[b"kept"]);
        entries(&mut journal, &[b"torn by the crash"]);
        entries(&mut journal, &[b"after it"]);
        drop(journal);
        // Flip a byte inside the second record's body, as a write cut short would leave it.
        let path = segment_path(dir.path(), 0);
        let mut data = fs::read(&path).expect("read");
        assert_eq!(data.len(), 1 << 20, "the segment's size is set up front");
        let second = HEADER_BYTES + 1 + 4 + 4;
        data[second + HEADER_BYTES + 6] ^= 0xff;
        fs::write(&path, &data).expect("write");
        assert_eq!(
            read_all(dir.path()),
            vec![Record::Entries(vec![b"kept".to_vec()])]
        );
        let mut reopened = Journal::open(dir.path(), 1 << 20).expect("reopen");
        assert_eq!(reopened.active_seq(), 1);
        entries(&mut reopened, &[b"new"]);
        assert_eq!(
            read_all(dir.path()),
            vec![
                Record::Entries(vec![b"kept".to_vec()]),
                Record::Entries(vec![b"new".to_vec()]),
            ]
        );
    }

    #[test]
    fn a_length_torn_into_garbage_ends_the_segment() {
        let dir = tempfile::tempdir().expect("dir");
        let mut journal = Journal::open(dir.path(), 1 << 20).expect("open");
        entries(&mut journal, &[b"kept"]);
        drop(journal);
        // A header claiming 4 GiB right after the record: read as the end, not allocated.
        let path = segment_path(dir.path(), 0);
        let mut data = fs::read(&path).expect("read");
        let next = HEADER_BYTES + 1 + 4 + 4;
        data[next..next + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        fs::write(&path, &data).expect("write");
        assert_eq!(
            read_all(dir.path()),
            vec![Record::Entries(vec![b"kept".to_vec()])]
        );
    }

    #[test]
    fn a_record_larger_than_a_segment_grows_its_own() {
        let dir = tempfile::tempdir().expect("dir");
        let mut journal = Journal::open(dir.path(), 32).expect("open");
        entries(&mut journal, &[b"small"]);
        assert!(entries(&mut journal, &[&[9; 100]]));
        assert!(entries(&mut journal, &[b"next"]));
        assert_eq!(read_all(dir.path()).len(), 3);
    }
}
