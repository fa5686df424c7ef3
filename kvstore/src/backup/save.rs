//! The client's side of `snapshot save`: the stream goes to `<file>.part` (etcdctl's name for
//! it), and only a whole, verified, fsynced file is renamed to `<file>`. A save that fails or
//! is interrupted leaves `<file>` as it was and removes the part file.

use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Error, Result};
use crate::raft::snapshot::StreamVerifier;

/// A snapshot file being saved.
pub struct PartFile {
    /// Where the snapshot goes once whole.
    path: PathBuf,
    /// Where it is written meanwhile.
    part: PathBuf,
    /// The open part file; `None` once committed.
    out: Option<BufWriter<File>>,
    /// Checks the trailer of a kvstore snapshot as the bytes pass.
    verifier: StreamVerifier,
}

/// What a committed save wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Saved {
    /// Bytes in the file.
    pub size: u64,
    /// Whether its checksum was verified (false for another format: etcd's own snapshot).
    pub verified: bool,
}

impl PartFile {
    /// Creates (or truncates) `<path>.part`, readable by its owner only.
    pub fn create(path: &Path) -> Result<Self> {
        let mut part = path.as_os_str().to_owned();
        part.push(".part");
        let part = PathBuf::from(part);
        let mut opts = OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let file = opts.open(&part)?;
        Ok(Self {
            path: path.to_path_buf(),
            part,
            out: Some(BufWriter::with_capacity(1 << 20, file)),
            verifier: StreamVerifier::default(),
        })
    }

    /// The part file's path.
    pub fn part_path(&self) -> &Path {
        &self.part
    }

    /// Appends the next chunk.
    pub fn write_chunk(&mut self, chunk: &[u8]) -> Result<()> {
        let Some(out) = self.out.as_mut() else {
            return Err(Error::Io(std::io::Error::other(
                "snapshot file already saved",
            )));
        };
        out.write_all(chunk)?;
        self.verifier.update(chunk);
        Ok(())
    }

    /// Bytes written so far.
    pub fn len(&self) -> u64 {
        self.verifier.len()
    }

    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.verifier.is_empty()
    }

    /// Ends the save: verifies a kvstore snapshot's checksum (a stream from etcd is another
    /// format and is kept as it came), fsyncs, renames into place and fsyncs the directory.
    pub fn commit(mut self) -> Result<Saved> {
        let Some(out) = self.out.take() else {
            return Err(Error::Io(std::io::Error::other(
                "snapshot file already saved",
            )));
        };
        let result = self.finish(out);
        if result.is_err() {
            let _ = fs::remove_file(&self.part);
        }
        result
    }

    fn finish(&self, out: BufWriter<File>) -> Result<Saved> {
        let verified = StreamVerifier::is_snapshot(self.verifier.head());
        if verified {
            self.verifier.finish()?;
        } else if self.verifier.is_empty() {
            return Err(Error::Invalid("the server sent an empty snapshot".into()));
        }
        let file = out.into_inner().map_err(|e| Error::Io(e.into_error()))?;
        file.sync_all()?;
        drop(file);
        fs::rename(&self.part, &self.path)?;
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        File::open(dir)?.sync_all()?;
        Ok(Saved {
            size: self.verifier.len(),
            verified,
        })
    }
}

impl Drop for PartFile {
    /// A save that did not commit leaves no part file behind.
    fn drop(&mut self) {
        if self.out.take().is_some() {
            let _ = fs::remove_file(&self.part);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::snapshot::{Section, SnapshotWriter};

    fn snapshot_bytes() -> Vec<u8> {
        let mut w = SnapshotWriter::new(Vec::new()).expect("vec").etcd_aligned();
        w.record(Section::Kv, b"k", b"v").expect("record");
        w.finish().expect("finish")
    }

    fn save(path: &Path, bytes: &[u8]) -> Result<Saved> {
        let mut part = PartFile::create(path)?;
        for chunk in bytes.chunks(100) {
            part.write_chunk(chunk)?;
        }
        part.commit()
    }

    #[test]
    fn a_whole_snapshot_is_renamed_into_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.snap");
        let bytes = snapshot_bytes();
        let saved = save(&path, &bytes).expect("saved");
        assert_eq!(
            saved,
            Saved {
                size: bytes.len() as u64,
                verified: true
            }
        );
        assert_eq!(fs::read(&path).expect("read"), bytes);
        assert!(!dir.path().join("s.snap.part").exists());
    }

    #[test]
    fn a_damaged_stream_leaves_no_file_and_keeps_the_old_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.snap");
        fs::write(&path, b"previous backup").expect("write");
        let mut bytes = snapshot_bytes();
        bytes[10] ^= 1;
        assert!(matches!(save(&path, &bytes), Err(Error::Invalid(_))));
        let whole = snapshot_bytes();
        assert!(save(&path, &whole[..whole.len() - 3]).is_err());
        assert_eq!(fs::read(&path).expect("read"), b"previous backup");
        assert!(!dir.path().join("s.snap.part").exists());
        // A save abandoned midway (dropped) removes its part file too.
        let mut part = PartFile::create(&path).expect("create");
        part.write_chunk(&whole[..20]).expect("write");
        drop(part);
        assert!(!dir.path().join("s.snap.part").exists());
    }

    #[test]
    fn another_format_is_saved_as_it_came() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("etcd.db");
        let saved = save(&path, &[7u8; 4128]).expect("saved");
        assert!(!saved.verified);
        assert_eq!(fs::read(&path).expect("read").len(), 4128);
    }
}
