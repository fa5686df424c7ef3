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
