//! Snapshots of the state machine: a file format, how one is written from a consistent view of
//! the database, and how one replaces a member's contents.
//!
//! Raft sends snapshots to learners and lagging followers; Maintenance.Snapshot streams the
//! same format to clients (`kvctl snapshot save`, `etcdctl snapshot save`), and
//! `kvctl snapshot status/restore` read it back (DESIGN.md, decision 7; see [`crate::backup`]).
//! A file saved from a client has no header record; a Raft snapshot file (`snap/current.snap`
//! copied out of a data directory) has one, and is accepted by status and restore too.
//!
//! # What a snapshot holds
//! Every key-value of the column families `kv` (revision → KeyValue), `lease` (granted leases)
//! and `meta` (revisions of compaction, the current revision, alarms, the applied Raft log id
//! and membership) — everything the state machine is — read from one RocksDB snapshot, so it
//! is exactly the state after one applied entry. The Raft log and vote (`raft_log`,
//! `raft_state`) belong to the member, not the state machine, and are never included.
//!
//! # File format (version 1)
//! All integers big-endian.
//!
//! ```text
//! file    = magic record* end
//! magic   = "KVSNAP" version:u16             (version = 1)
//! record  = tag:u8 key_len:u32 key value_len:u32 value
//! end     = 0xFF count:u64 crc:u32
//! ```
//!
//! | tag | record |
//! |---|---|
//! | `0x01` | header, at most one, before any data: key `raft`, value the Raft snapshot metadata (postcard `SnapshotMeta`; opaque to other readers, absent from snapshots not made by Raft) |
//! | `0x02` | padding, at most one, last before `end`: empty key, value zero bytes (see below) |
//! | `0x10` | a `kv` key-value, in key order |
//! | `0x11` | a `lease` key-value, in key order |
//! | `0x12` | a `meta` key-value, in key order |
//!
//! `count` is the number of records before `end`; `crc` is the CRC-32C (Castagnoli) of every
//! byte of the file before it, so truncation and corruption anywhere are detected. Nothing
//! follows `crc`. Keys and values are at most [`MAX_FIELD`] bytes each. Readers refuse unknown
//! tags and versions.
//!
//! # Padding for etcdctl
//! etcdctl 3.4 refuses to save a snapshot whose size is not 32 more than a multiple of 512
//! (what it takes for the sign of etcd's sha256 trailer: "sha256 checksum not found").
//! Files streamed by Maintenance.Snapshot therefore end with a padding record of 0 to 511
//! bytes that makes their size 32 (mod 512); readers skip it.
//!
//! The size of a file is known before it is written ([`encoded_size`]: the fixed 21 bytes of
//! magic and end, plus `9 + key + value` per record), which is how Maintenance.Snapshot fills
//! in `remaining_bytes` from its first message on. A receiver that cannot parse records as they
//! arrive (a stream of chunks) still verifies the trailer with [`StreamVerifier`].
//!
//! # Durability
//! A snapshot file is written to a temporary name, fsynced, renamed to `current.snap` and the
//! directory fsynced, so `current.snap` is always a whole snapshot. Installing copies and
//! verifies the received file the same way before touching the database, then replaces the
//! three column families with unsynced writes and ends with a WAL sync. A crash part-way
//! leaves `current.snap` newer than the applied log id in `meta`, and opening the state machine
//! installs it again (see [`super::state_machine::StateMachine::open`]).

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;
use rocksdb::{DBWithThreadMode, MultiThreaded, ReadOptions, SnapshotWithThreadMode, WriteBatch};

use super::codec;
use super::types::SnapshotMeta;
use crate::backup::restore::META_CLUSTER_IDENTITY;
use crate::mvcc::backend::{Backend, CF_KV, CF_LEASE, CF_META};

/// The first bytes of every snapshot file: the name and the format version.
pub const MAGIC: [u8; 8] = *b"KVSNAP\x00\x01";
/// Largest key or value a record may have (far above etcd's 1.5 MiB request limit; a guard
/// against allocating what a corrupt length asks for).
pub const MAX_FIELD: u32 = 64 << 20;
/// The key of the Raft header record.
const HEADER_KEY: &[u8] = b"raft";
/// Tag of the end marker.
const TAG_END: u8 = 0xFF;
/// Bytes written per `WriteBatch` while installing.
const INSTALL_BATCH_BYTES: usize = 4 << 20;
/// File name of the current snapshot in a [`SnapshotDir`].
const CURRENT: &str = "current.snap";

/// What a record holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Section {
    /// The Raft snapshot metadata.
    Header = 0x01,
    /// Zero bytes that align the file's size for etcdctl.
    Padding = 0x02,
    /// A key-value of the `kv` column family.
    Kv = 0x10,
    /// A key-value of the `lease` column family.
    Lease = 0x11,
    /// A key-value of the `meta` column family.
    Meta = 0x12,
}

impl Section {
    fn from_tag(tag: u8) -> Option<Self> {
        Some(match tag {
            0x01 => Self::Header,
            0x02 => Self::Padding,
            0x10 => Self::Kv,
            0x11 => Self::Lease,
            0x12 => Self::Meta,
            _ => return None,
        })
    }

    /// The column family a data section is read from and restores into.
    pub fn column_family(self) -> Option<&'static str> {
        match self {
            Self::Header | Self::Padding => None,
            Self::Kv => Some(CF_KV),
            Self::Lease => Some(CF_LEASE),
            Self::Meta => Some(CF_META),
        }
    }
}

/// One record of a snapshot file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// What it holds.
    pub section: Section,
    /// The key (column family key, or `raft` for the header).
    pub key: Vec<u8>,
    /// The value.
    pub value: Vec<u8>,
}

fn invalid(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Writes the snapshot format to `W`, computing the trailing CRC as it goes.
pub struct SnapshotWriter<W: Write> {
    /// Where bytes go.
    out: W,
    /// CRC-32C of everything written so far.
    crc: u32,
    /// Records written so far.
    records: u64,
    /// Whether a data record was written (the header must come first).
    has_data: bool,
    /// Bytes written so far.
    written: u64,
    /// Whether [`SnapshotWriter::finish`] pads the file's size for etcdctl.
    etcd_aligned: bool,
}

impl<W: Write> SnapshotWriter<W> {
    /// Starts a snapshot: writes the magic.
    pub fn new(out: W) -> io::Result<Self> {
        let mut w = Self {
            out,
            crc: 0,
            records: 0,
            has_data: false,
            written: 0,
            etcd_aligned: false,
        };
        w.put(&MAGIC)?;
        Ok(w)
    }

    /// Ends the file with a padding record that makes its size 32 (mod 512), as etcdctl 3.4
    /// requires of a streamed snapshot (see the module doc).
    pub fn etcd_aligned(mut self) -> Self {
        self.etcd_aligned = true;
        self
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.crc = crc32c::crc32c_append(self.crc, bytes);
        self.written += bytes.len() as u64;
        Ok(())
    }

    /// Writes the Raft header record (before any data).
    pub fn header(&mut self, raft_meta: &[u8]) -> io::Result<()> {
        if self.has_data || self.records > 0 {
            return Err(io::Error::other("snapshot header after other records"));
        }
        self.record(Section::Header, HEADER_KEY, raft_meta)
    }

    /// Writes one record.
    pub fn record(&mut self, section: Section, key: &[u8], value: &[u8]) -> io::Result<()> {
        let len = |b: &[u8]| {
            u32::try_from(b.len())
                .ok()
                .filter(|l| *l <= MAX_FIELD)
                .ok_or_else(|| io::Error::other(format!("snapshot field of {} bytes", b.len())))
        };
        let (key_len, value_len) = (len(key)?, len(value)?);
        self.put(&[section as u8])?;
        self.put(&key_len.to_be_bytes())?;
        self.put(key)?;
        self.put(&value_len.to_be_bytes())?;
        self.put(value)?;
        self.records += 1;
        self.has_data |= section != Section::Header;
        Ok(())
    }

    /// Writes the end marker, count and CRC; returns the output (not flushed or synced).
    pub fn finish(mut self) -> io::Result<W> {
        if self.etcd_aligned {
            let padding = vec![0u8; etcd_padding(self.written) as usize];
            self.record(Section::Padding, &[], &padding)?;
        }
        self.put(&[TAG_END])?;
        let count = self.records;
        self.put(&count.to_be_bytes())?;
        let crc = self.crc;
        self.out.write_all(&crc.to_be_bytes())?;
        Ok(self.out)
    }
}

/// Reads the snapshot format, verifying count and CRC when it reaches the end. Records read
/// before the end are not yet verified: verify a whole file (e.g. [`copy_verified`]) before
/// acting on what it says.
pub struct SnapshotReader<R: Read> {
    /// Where bytes come from.
    input: R,
    /// CRC-32C of everything read so far.
    crc: u32,
    /// Records read so far.
    records: u64,
    /// Whether the end was reached and verified.
    done: bool,
    /// Whether a wrong count or CRC at the end is an error (`--skip-hash-check` turns it off).
    verify: bool,
}

impl<R: Read> SnapshotReader<R> {
    /// Does not fail on a wrong record count or CRC at the end (etcd's `--skip-hash-check`);
    /// the structure must still be whole.
    pub fn skip_checksum(mut self) -> Self {
        self.verify = false;
        self
    }

    /// Starts reading: checks the magic.
    pub fn new(input: R) -> io::Result<Self> {
        let mut r = Self {
            input,
            crc: 0,
            records: 0,
            done: false,
            verify: true,
        };
        let mut magic = [0u8; 8];
        r.take(&mut magic)?;
        if magic[..6] != MAGIC[..6] {
            return Err(invalid("not a kvstore snapshot"));
        }
        if magic != MAGIC {
            return Err(invalid(format!(
                "snapshot format version {} (this member reads {})",
                u16::from_be_bytes([magic[6], magic[7]]),
                u16::from_be_bytes([MAGIC[6], MAGIC[7]]),
            )));
        }
        Ok(r)
    }

    fn take(&mut self, buf: &mut [u8]) -> io::Result<()> {
        self.input.read_exact(buf).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                invalid("snapshot is truncated")
            } else {
                e
            }
        })?;
        self.crc = crc32c::crc32c_append(self.crc, buf);
        Ok(())
    }

    fn field(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        self.take(&mut len)?;
        let len = u32::from_be_bytes(len);
        if len > MAX_FIELD {
            return Err(invalid(format!("snapshot field of {len} bytes")));
        }
        let mut buf = vec![0u8; len as usize];
        self.take(&mut buf)?;
        Ok(buf)
    }

    /// The next record, or `None` at the (verified) end.
    pub fn next_record(&mut self) -> io::Result<Option<Record>> {
        if self.done {
            return Ok(None);
        }
        let mut tag = [0u8; 1];
        self.take(&mut tag)?;
        if tag[0] == TAG_END {
            let mut count = [0u8; 8];
            self.take(&mut count)?;
            let expected = self.crc;
            let mut crc = [0u8; 4];
            self.input
                .read_exact(&mut crc)
                .map_err(|_| invalid("snapshot is truncated"))?;
            if self.verify && u32::from_be_bytes(crc) != expected {
                return Err(invalid("snapshot checksum mismatch"));
            }
            if self.verify && u64::from_be_bytes(count) != self.records {
                return Err(invalid("snapshot record count mismatch"));
            }
            let mut extra = [0u8; 1];
            if self.input.read(&mut extra)? != 0 {
                return Err(invalid("bytes after the end of the snapshot"));
            }
            self.done = true;
            return Ok(None);
        }
        let section = Section::from_tag(tag[0])
            .ok_or_else(|| invalid(format!("unknown snapshot record tag {:#04x}", tag[0])))?;
        let key = self.field()?;
        let value = self.field()?;
        if section == Section::Header && self.records > 0 {
            return Err(invalid("snapshot header after other records"));
        }
        self.records += 1;
        Ok(Some(Record {
            section,
            key,
            value,
        }))
    }
}

/// Copies a snapshot from `src` to `dst`, verifying it whole; returns its header value, if any.
/// `dst` has every byte of `src` once this returns `Ok`.
pub fn copy_verified(src: impl Read, dst: impl Write) -> io::Result<Option<Vec<u8>>> {
    struct Tee<R, W>(R, W);
    impl<R: Read, W: Write> Read for Tee<R, W> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.0.read(buf)?;
            self.1.write_all(&buf[..n])?;
            Ok(n)
        }
    }
    let mut reader = SnapshotReader::new(Tee(src, dst))?;
    let mut header = None;
    while let Some(record) = reader.next_record()? {
        if record.section == Section::Header {
            header = Some(record.value);
        }
    }
    reader.input.1.flush()?;
    Ok(header)
}

/// The sections of the state machine, in file order.
const DATA_SECTIONS: [Section; 3] = [Section::Kv, Section::Lease, Section::Meta];

/// Bytes of a record beyond its key and value: tag and two lengths.
const RECORD_OVERHEAD: u64 = 1 + 4 + 4;

/// Bytes of every file beyond its records: magic, end tag, count, CRC.
const FIXED_OVERHEAD: u64 = MAGIC.len() as u64 + 1 + 8 + 4;

/// Bytes read ahead while scanning the database for a snapshot.
const SCAN_READAHEAD: usize = 2 << 20;

/// Bytes of the end: tag, count, CRC.
const END_BYTES: u64 = 1 + 8 + 4;

/// The padding value's length after `written` bytes of magic and records that makes the
/// whole file 32 bytes more than a multiple of 512.
fn etcd_padding(written: u64) -> u64 {
    let unpadded = (written + RECORD_OVERHEAD + END_BYTES) % 512;
    (512 + 32 - unpadded) % 512
}

/// Calls `f` with every key-value of the data sections as `view` sees them, in file order.
/// The raw iterator lends each key and value without copying it; the scan reads ahead and
/// leaves the block cache to the reads that serve clients (RocksDB's advice for bulk scans).
fn for_each_record(
    view: &SnapshotWithThreadMode<'_, DBWithThreadMode<MultiThreaded>>,
    backend: &Backend,
    mut f: impl FnMut(Section, &[u8], &[u8]) -> io::Result<()>,
) -> io::Result<()> {
    for section in DATA_SECTIONS {
        let Some(cf) = section.column_family() else {
            continue;
        };
        let mut opts = ReadOptions::default();
        opts.fill_cache(false);
        opts.set_readahead_size(SCAN_READAHEAD);
        let mut it = view.raw_iterator_cf_opt(&backend.cf(cf), opts);
        it.seek_to_first();
        while let (Some(k), Some(v)) = (it.key(), it.value()) {
            f(section, k, v)?;
            it.next();
        }
        it.status().map_err(io::Error::other)?;
    }
    Ok(())
}

/// The exact size [`write_state`] will write for `view` (and `header`), with the number of
/// records. Reads keys and values without copying them.
pub fn encoded_size(
    view: &SnapshotWithThreadMode<'_, DBWithThreadMode<MultiThreaded>>,
    backend: &Backend,
    header: Option<&[u8]>,
    etcd_aligned: bool,
) -> io::Result<(u64, u64)> {
    let mut size = FIXED_OVERHEAD;
    let mut records = 0;
    if let Some(header) = header {
        size += RECORD_OVERHEAD + (HEADER_KEY.len() + header.len()) as u64;
        records += 1;
    }
    for_each_record(view, backend, |_, k, v| {
        size += RECORD_OVERHEAD + (k.len() + v.len()) as u64;
        records += 1;
        Ok(())
    })?;
    if etcd_aligned {
        size += RECORD_OVERHEAD + etcd_padding(size - END_BYTES);
        records += 1;
    }
    Ok((size, records))
}

/// Verifies a snapshot arriving as a stream of byte chunks (a client saving
/// Maintenance.Snapshot): the magic, and the CRC-32C trailer over everything before it.
/// Records are not parsed; [`SnapshotReader`] checks those when the file is read.
#[derive(Debug, Default)]
pub struct StreamVerifier {
    /// CRC-32C of every byte except the last four seen so far.
    crc: u32,
    /// The first bytes seen (up to the magic's length).
    head: Vec<u8>,
    /// The last (up to) four bytes seen: the trailer if the stream ends now.
    tail: Vec<u8>,
    /// Bytes seen.
    len: u64,
}

impl StreamVerifier {
    /// Whether `prefix` (the first bytes of a stream) starts like a kvstore snapshot.
    pub fn is_snapshot(prefix: &[u8]) -> bool {
        prefix.len() >= 6 && prefix[..6] == MAGIC[..6]
    }

    /// Takes the next chunk.
    pub fn update(&mut self, chunk: &[u8]) {
        self.len += chunk.len() as u64;
        if self.head.len() < MAGIC.len() {
            let take = (MAGIC.len() - self.head.len()).min(chunk.len());
            self.head.extend_from_slice(&chunk[..take]);
        }
        // Everything but the last four bytes of (tail ++ chunk) is covered by the CRC.
        if chunk.len() >= 4 {
            self.crc = crc32c::crc32c_append(self.crc, &self.tail);
            let (body, last) = chunk.split_at(chunk.len() - 4);
            self.crc = crc32c::crc32c_append(self.crc, body);
            self.tail.clear();
            self.tail.extend_from_slice(last);
        } else {
            self.tail.extend_from_slice(chunk);
            let spill = self.tail.len().saturating_sub(4);
            self.crc = crc32c::crc32c_append(self.crc, &self.tail[..spill]);
            self.tail.drain(..spill);
        }
    }

    /// The first bytes seen (up to the magic's length).
    pub fn head(&self) -> &[u8] {
        &self.head
    }

    /// Bytes seen so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was seen.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Checks the whole stream: a snapshot's magic, and its CRC.
    pub fn finish(&self) -> io::Result<()> {
        if self.head.len() < MAGIC.len() || self.head[..6] != MAGIC[..6] {
            return Err(invalid("not a kvstore snapshot"));
        }
        if self.head[..] != MAGIC[..] {
            return Err(invalid("unknown snapshot format version"));
        }
        if self.len < FIXED_OVERHEAD {
            return Err(invalid("snapshot is truncated"));
        }
        let mut crc = [0u8; 4];
        crc.copy_from_slice(&self.tail);
        if u32::from_be_bytes(crc) != self.crc {
            return Err(invalid("snapshot checksum mismatch"));
        }
        Ok(())
    }
}

/// Writes the state machine as seen by a RocksDB snapshot (`kv`, `lease`, `meta`, in that
/// order) after an optional header. Writers are never blocked: the view is a RocksDB snapshot.
pub fn write_state<W: Write>(
    view: &SnapshotWithThreadMode<'_, DBWithThreadMode<MultiThreaded>>,
    backend: &Backend,
    header: Option<&[u8]>,
    etcd_aligned: bool,
    out: W,
) -> io::Result<W> {
    let mut w = SnapshotWriter::new(out)?;
    if etcd_aligned {
        w = w.etcd_aligned();
    }
    if let Some(header) = header {
        w.header(header)?;
    }
    for_each_record(view, backend, |section, k, v| w.record(section, k, v))?;
    w.finish()
}

/// Replaces the contents of `kv`, `lease` and `meta` with a verified snapshot file, then
/// writes `extra_meta` (the Raft position of the snapshot) and syncs the WAL.
///
/// The `meta` records are written last, in the final batch together with `extra_meta`: until
/// that batch lands, `meta` holds no applied log id at or past the snapshot's, which is how
/// [`super::state_machine::StateMachine::open`] knows to install again after a crash.
/// The in-memory state built from these column families (index, leases, alarms) is stale
/// afterwards until rebuilt.
pub fn install_file(
    backend: &Backend,
    path: &Path,
    extra_meta: &[(Vec<u8>, Vec<u8>)],
) -> io::Result<()> {
    let db = backend.db();
    let write = |batch: WriteBatch| db.write(batch).map_err(io::Error::other);
    // This member's identity stamp is its own, not the sender's: keep it (without this a
    // member that installed a snapshot refused to restart; found by the chaos suite).
    let identity = db
        .get_cf(&backend.cf(CF_META), META_CLUSTER_IDENTITY)
        .map_err(io::Error::other)?;

    let mut clear = WriteBatch::default();
    for cf in [CF_KV, CF_LEASE, CF_META] {
        clear.delete_range_cf(&backend.cf(cf), &[][..], &[0xffu8; 64][..]);
    }
    write(clear)?;

    let mut reader = SnapshotReader::new(BufReader::with_capacity(1 << 20, File::open(path)?))?;
    let mut batch = WriteBatch::default();
    let mut meta = Vec::new();
    while let Some(record) = reader.next_record()? {
        match record.section {
            Section::Header | Section::Padding => {}
            Section::Meta => meta.push((record.key, record.value)),
            Section::Kv | Section::Lease => {
                let cf = record.section.column_family().unwrap_or_else(|| {
                    unreachable!("invariant: data sections name a column family")
                });
                batch.put_cf(&backend.cf(cf), record.key, record.value);
                if batch.size_in_bytes() >= INSTALL_BATCH_BYTES {
                    write(std::mem::take(&mut batch))?;
                }
            }
        }
    }
    let cf = backend.cf(CF_META);
    for (k, v) in meta.iter().chain(extra_meta) {
        if k.as_slice() != META_CLUSTER_IDENTITY {
            batch.put_cf(&cf, k, v);
        }
    }
    if let Some(identity) = identity {
        batch.put_cf(&cf, META_CLUSTER_IDENTITY, identity);
    }
    write(batch)?;
    db.flush_wal(true).map_err(io::Error::other)
}

/// The directory holding a member's Raft snapshot: `current.snap` (the one snapshot openraft
/// sees) and temporary files while one is being built or received.
pub struct SnapshotDir {
    /// The directory.
    dir: PathBuf,
    /// Metadata of `current.snap`; held while replacing or opening it, so a reader never
    /// pairs one snapshot's metadata with another's file.
    current: Mutex<Option<SnapshotMeta>>,
    /// Distinguishes temporary files made by this process.
    next_temp: AtomicU64,
}

impl SnapshotDir {
    /// Opens (creating it if needed) the snapshot directory; removes temporary files a crash
    /// left, and reads the current snapshot's metadata.
    pub fn open(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        for item in fs::read_dir(dir)? {
            let path = item?.path();
            if path.extension().is_some_and(|e| e == "tmp") {
                fs::remove_file(&path)?;
            }
        }
        let current_path = dir.join(CURRENT);
        let current = if current_path.exists() {
            Some(read_header(&current_path)?)
        } else {
            None
        };
        Ok(Self {
            dir: dir.to_path_buf(),
            current: Mutex::new(current),
            next_temp: AtomicU64::new(0),
        })
    }

    /// The path of the current snapshot.
    pub fn current_path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// Metadata of the current snapshot, if there is one.
    pub fn current_meta(&self) -> Option<SnapshotMeta> {
        self.current.lock().clone()
    }

    /// The current snapshot's metadata and an open handle on its file.
    pub fn open_current(&self) -> io::Result<Option<(SnapshotMeta, File)>> {
        let current = self.current.lock();
        match &*current {
            None => Ok(None),
            Some(meta) => Ok(Some((meta.clone(), File::open(self.current_path())?))),
        }
    }

    /// A new temporary file (`<kind>-<n>.tmp`), opened for reading and writing.
    pub fn temp_file(&self, kind: &str) -> io::Result<(PathBuf, File)> {
        let n = self.next_temp.fetch_add(1, Ordering::Relaxed);
        let path = self
            .dir
            .join(format!("{kind}-{}-{n}.tmp", std::process::id()));
        let file = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok((path, file))
    }

    /// Makes a synced temporary snapshot file the current one. Unless `force`, a snapshot
    /// older than the current one is dropped instead (a build that raced an install).
    /// Returns whether it became current.
    pub fn publish(&self, temp: &Path, meta: &SnapshotMeta, force: bool) -> io::Result<bool> {
        let mut current = self.current.lock();
        let older = current
            .as_ref()
            .is_some_and(|c| c.last_log_id > meta.last_log_id);
        if older && !force {
            fs::remove_file(temp)?;
            return Ok(false);
        }
        fs::rename(temp, self.current_path())?;
        File::open(&self.dir)?.sync_all()?;
        *current = Some(meta.clone());
        Ok(true)
    }

    /// Removes temporary files of `kind` (received snapshots once one is installed).
    pub fn remove_temps(&self, kind: &str) -> io::Result<()> {
        let prefix = format!("{kind}-");
        for item in fs::read_dir(&self.dir)? {
            let path = item?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                fs::remove_file(&path)?;
            }
        }
        Ok(())
    }
}

/// Reads the Raft header of a snapshot file (the first record). The file is not verified.
pub fn read_header(path: &Path) -> io::Result<SnapshotMeta> {
    let mut reader = SnapshotReader::new(BufReader::new(File::open(path)?))?;
    match reader.next_record()? {
        Some(Record {
            section: Section::Header,
            value,
            ..
        }) => codec::decode(&value).map_err(|e| invalid(format!("snapshot header: {e}"))),
        _ => Err(invalid(format!("{} has no Raft header", path.display()))),
    }
}

/// Writes a snapshot of `backend` as seen by `view` to a new temporary file in `dir`, synced.
pub fn write_temp(
    dir: &SnapshotDir,
    view: &SnapshotWithThreadMode<'_, DBWithThreadMode<MultiThreaded>>,
    backend: &Backend,
    meta: &SnapshotMeta,
) -> io::Result<PathBuf> {
    let header = codec::encode(meta).map_err(io::Error::other)?;
    let (path, file) = dir.temp_file("build")?;
    let out = write_state(
        view,
        backend,
        Some(&header),
        false,
        BufWriter::with_capacity(1 << 20, file),
    )?;
    let file = out.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new()).expect("vec");
        w.header(b"meta").expect("header");
        w.record(Section::Kv, b"k1", b"v1").expect("record");
        w.record(Section::Lease, b"l", b"").expect("record");
        w.record(Section::Meta, b"m", b"x").expect("record");
        w.finish().expect("finish")
    }

    /// Found by the chaos suite: installing a snapshot replaced the member's identity stamp
    /// with the sender's, so the member refused to restart.
    #[test]
    fn install_keeps_the_members_own_identity() {
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::open(&dir.path().join("db"), false).expect("open");
        let meta = backend.cf(CF_META);
        backend
            .db()
            .put_cf(&meta, META_CLUSTER_IDENTITY, b"mine")
            .expect("stamp");
        let mut w = SnapshotWriter::new(Vec::new()).expect("vec");
        w.header(b"meta").expect("header");
        w.record(Section::Kv, b"k1", b"v1").expect("record");
        w.record(Section::Meta, META_CLUSTER_IDENTITY, b"sender's")
            .expect("record");
        w.record(Section::Meta, b"m", b"x").expect("record");
        let path = dir.path().join("s.snap");
        fs::write(&path, w.finish().expect("finish")).expect("write");
        install_file(&backend, &path, &[]).expect("install");
        let get = |k: &[u8]| backend.db().get_cf(&meta, k).expect("get");
        assert_eq!(get(META_CLUSTER_IDENTITY), Some(b"mine".to_vec()));
        assert_eq!(get(b"m"), Some(b"x".to_vec()));
    }

    #[test]
    fn records_round_trip() {
        let bytes = sample();
        let mut r = SnapshotReader::new(bytes.as_slice()).expect("magic");
        let mut got = Vec::new();
        while let Some(rec) = r.next_record().expect("valid") {
            got.push((rec.section, rec.key, rec.value));
        }
        assert_eq!(
            got,
            vec![
                (Section::Header, b"raft".to_vec(), b"meta".to_vec()),
                (Section::Kv, b"k1".to_vec(), b"v1".to_vec()),
                (Section::Lease, b"l".to_vec(), b"".to_vec()),
                (Section::Meta, b"m".to_vec(), b"x".to_vec()),
            ]
        );
    }

    #[test]
    fn every_flipped_byte_and_truncation_is_detected() {
        let bytes = sample();
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x40;
            assert!(
                copy_verified(bad.as_slice(), io::sink()).is_err(),
                "flip at {i} went unnoticed"
            );
            assert!(
                copy_verified(&bytes[..i], io::sink()).is_err(),
                "truncation to {i} went unnoticed"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(copy_verified(longer.as_slice(), io::sink()).is_err());
        let mut copy = Vec::new();
        assert_eq!(
            copy_verified(bytes.as_slice(), &mut copy).expect("valid"),
            Some(b"meta".to_vec())
        );
        assert_eq!(copy, bytes);
    }

    fn verify_in_chunks(bytes: &[u8], chunk: usize) -> io::Result<()> {
        let mut v = StreamVerifier::default();
        for c in bytes.chunks(chunk) {
            v.update(c);
        }
        assert_eq!(v.len(), bytes.len() as u64);
        v.finish()
    }

    #[test]
    fn stream_verifier_checks_the_trailer_whatever_the_chunking() {
        let bytes = sample();
        for chunk in [1, 2, 3, 4, 5, 7, 64, bytes.len()] {
            verify_in_chunks(&bytes, chunk).expect("valid in any chunking");
            for i in 0..bytes.len() {
                let mut bad = bytes.clone();
                bad[i] ^= 0x01;
                assert!(verify_in_chunks(&bad, chunk).is_err(), "flip at {i}");
                assert!(verify_in_chunks(&bytes[..i], chunk).is_err(), "cut at {i}");
            }
        }
    }

    #[test]
    fn etcd_aligned_files_are_32_past_a_multiple_of_512_and_read_the_same() {
        for n in 0..600usize {
            let mut w = SnapshotWriter::new(Vec::new()).expect("vec").etcd_aligned();
            w.record(Section::Kv, b"k", &vec![7u8; n]).expect("record");
            let bytes = w.finish().expect("finish");
            assert_eq!(bytes.len() % 512, 32, "value of {n} bytes");
            let mut r = SnapshotReader::new(bytes.as_slice()).expect("magic");
            let mut sections = Vec::new();
            while let Some(rec) = r.next_record().expect("valid") {
                sections.push(rec.section);
            }
            assert_eq!(sections, vec![Section::Kv, Section::Padding]);
        }
    }

    #[test]
    fn skip_checksum_reads_a_file_with_a_wrong_crc() {
        let mut bytes = sample();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let strict = (|| {
            let mut r = SnapshotReader::new(bytes.as_slice())?;
            while r.next_record()?.is_some() {}
            Ok::<_, io::Error>(())
        })();
        assert!(strict.is_err());
        let mut lax = SnapshotReader::new(bytes.as_slice())
            .expect("magic")
            .skip_checksum();
        let mut n = 0;
        while lax.next_record().expect("structure is whole").is_some() {
            n += 1;
        }
        assert_eq!(n, 4);
    }
}
