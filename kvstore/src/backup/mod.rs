//! Backups: a consistent snapshot of a member streamed to a client, saved to a file, inspected,
//! and restored offline into the data directory of a member of a new cluster (etcd's
//! `snapshot save | status | restore`).
//!
//! The file is the snapshot format of [`crate::raft::snapshot`] (the one Raft sends to lagging
//! members) without the Raft header: the `kv`, `lease` and `meta` column families as one
//! RocksDB snapshot saw them, ending with a CRC-32C. The Raft log and vote are never in it: a
//! restored member starts a new log.
//!
//! # Layout
//! - [`stream`]: Maintenance.Snapshot's producer — one RocksDB snapshot written out in bounded
//!   chunks on a blocking thread, with the exact size known before the first chunk.
//! - [`save`]: the client's side of a save — `<file>.part`, verified, fsynced, renamed.
//! - [`status`]: hash, revision, keys and size of a snapshot file, verifying its checksum.
//! - [`restore`]: a fresh data directory for one member of a new cluster, built next to the
//!   target and renamed into place only when whole.

pub mod restore;
pub mod save;
pub mod status;
pub mod stream;

use std::io;
use std::path::PathBuf;

pub use restore::{restore, RestoreOptions, Restored};
pub use save::PartFile;
pub use status::{status, SnapshotStatus};
pub use stream::{Chunk, SnapshotStream};

/// Why a backup operation failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Restore refuses to touch a data directory that already holds something (etcd's wording).
    #[error("data-dir \"{}\" exists", .0.display())]
    DataDirExists(PathBuf),
    /// The flags describe no valid member (`--name` not in `--initial-cluster`, ...).
    #[error("{0}")]
    Config(String),
    /// The snapshot is not whole: truncated, corrupted, wrong checksum, not a snapshot.
    #[error("{0}")]
    Invalid(String),
    /// Reading or writing files failed.
    #[error("{0}")]
    Io(io::Error),
    /// The database being built failed.
    #[error("{0}")]
    Store(String),
}

impl From<io::Error> for Error {
    /// Damaged input ([`io::ErrorKind::InvalidData`], what the snapshot reader reports) is
    /// [`Error::Invalid`]; anything else is an I/O failure.
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::InvalidData {
            Self::Invalid(e.to_string())
        } else {
            Self::Io(e)
        }
    }
}

impl From<crate::mvcc::Error> for Error {
    fn from(e: crate::mvcc::Error) -> Self {
        Self::Store(e.to_string())
    }
}

impl From<rocksdb::Error> for Error {
    fn from(e: rocksdb::Error) -> Self {
        Self::Store(e.to_string())
    }
}

/// `Result` with the backup [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
