//! Maintenance.Snapshot's producer: a RocksDB snapshot of the member's store written in the
//! snapshot format, chunk by chunk, into a bounded channel.
//!
//! The RocksDB snapshot is taken once, on a blocking thread, and both passes read it: the
//! first sizes the file exactly ([`snapshot::encoded_size`], so every chunk can say how many
//! bytes remain, as etcd's `remaining_bytes` does), the second writes it. Writers never wait
//! for either: a RocksDB snapshot pins a sequence number, not a lock. At most
//! [`QUEUED_CHUNKS`] chunks wait for a slow client, so memory stays bounded whatever the
//! store's size; a client that goes away stops the producer at its next chunk. The file is
//! padded for etcdctl (see [`snapshot`]'s module doc), so `etcdctl snapshot save` accepts it.

use std::io::{self, Write};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::mvcc::backend::{decode_i64, CF_META, META_CURRENT_REV};
use crate::mvcc::KvStore;
use crate::raft::snapshot;

/// Chunks produced ahead of the client at most.
pub const QUEUED_CHUNKS: usize = 4;

/// One piece of the snapshot.
#[derive(Debug)]
pub struct Chunk {
    /// The bytes.
    pub data: Vec<u8>,
    /// Bytes of the snapshot after this chunk (0 on the last).
    pub remaining: u64,
}

/// A snapshot being produced.
pub struct SnapshotStream {
    /// The store's revision in the snapshot.
    pub revision: i64,
    /// The snapshot's size in bytes.
    pub size: u64,
    /// The chunks, in order; an error ends the stream.
    pub chunks: mpsc::Receiver<io::Result<Chunk>>,
}

/// Writes into chunks of `chunk_size` bytes and sends each once full.
struct ChunkWriter {
    /// Where chunks go.
    tx: mpsc::Sender<io::Result<Chunk>>,
    /// The chunk being filled.
    buf: Vec<u8>,
    /// Bytes per chunk.
    chunk_size: usize,
    /// Bytes of the snapshot not yet sent.
    remaining: u64,
}

impl ChunkWriter {
    fn send(&mut self) -> io::Result<()> {
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(self.chunk_size));
        self.remaining = self.remaining.saturating_sub(data.len() as u64);
        let chunk = Chunk {
            data,
            remaining: self.remaining,
        };
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "snapshot client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        let room = self.chunk_size - self.buf.len();
        let n = room.min(bytes.len());
        self.buf.extend_from_slice(&bytes[..n]);
        if self.buf.len() == self.chunk_size {
            self.send()?;
        }
        Ok(n)
    }

    /// Sends what is buffered (the last, short chunk).
    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.send()
    }
}

/// Starts streaming a snapshot of `store` in chunks of `chunk_size` bytes (at least 1); returns
/// once the snapshot is taken and sized.
pub async fn open(store: Arc<KvStore>, chunk_size: usize) -> io::Result<SnapshotStream> {
    let chunk_size = chunk_size.max(1);
    let (tx, chunks) = mpsc::channel(QUEUED_CHUNKS);
    let (info_tx, info_rx) = oneshot::channel();
    tokio::task::spawn_blocking(move || {
        let backend = store.backend();
        let view = backend.db().snapshot();
        let info = snapshot::encoded_size(&view, backend, None, true).and_then(|(size, _)| {
            let rev = match view
                .get_cf(&backend.cf(CF_META), META_CURRENT_REV)
                .map_err(io::Error::other)?
            {
                Some(v) => decode_i64(&v).map_err(io::Error::other)?,
                None => 1,
            };
            Ok((size, rev))
        });
        let size = match info {
            Ok((size, rev)) => {
                if info_tx.send(Ok((size, rev))).is_err() {
                    return;
                }
                size
            }
            Err(e) => {
                let _ = info_tx.send(Err(e));
                return;
            }
        };
        let out = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(chunk_size),
            chunk_size,
            remaining: size,
        };
        let written = snapshot::write_state(&view, backend, None, true, out).and_then(|mut w| {
            w.flush()?;
            Ok(w.remaining)
        });
        match written {
            Ok(0) => {}
            Ok(left) => {
                let msg = format!("invariant: snapshot sized {size} bytes, {left} not written");
                tracing::error!("{msg}");
                let _ = tx.blocking_send(Err(io::Error::other(msg)));
            }
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
                tracing::info!("snapshot client went away; stopped streaming");
            }
            Err(e) => {
                tracing::warn!(cause = %e, "snapshot stream failed");
                let _ = tx.blocking_send(Err(e));
            }
        }
    });
    let (size, revision) = info_rx
        .await
        .map_err(|_| io::Error::other("snapshot task ended early"))??;
    Ok(SnapshotStream {
        revision,
        size,
        chunks,
    })
}
