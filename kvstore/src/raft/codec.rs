//! Byte encodings of the Raft layer, in one place.
//!
//! - Raft's own structures (log entries, vote, log ids, membership, snapshot metadata) are
//!   encoded with [postcard]: a compact, non-self-describing serde format (varint integers, no
//!   field names). Never JSON: a log entry is written once per member and read on every
//!   replication, so its size is the write path's size.
//! - A log entry's application payload is the protobuf `raftpb.Command` (see
//!   [`Request`](super::types::Request)), embedded as a byte string, so the same bytes a
//!   forwarded write carries are what the log stores.
//! - Log keys are the big-endian entry index, so RocksDB's byte order is log order.

use std::marker::PhantomData;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::types::{Entry, EntryPayload};

/// Encodes a Raft structure for disk (postcard).
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_stdvec(value)
}

/// Like [`encode`], into a buffer made with room for `capacity` bytes: for large structures
/// (a log entry, an AppendEntries request) whose size the caller knows about, so the buffer is
/// not grown, and copied, step by step.
pub fn encode_sized<T: Serialize + ?Sized>(
    value: &T,
    capacity: usize,
) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_extend(value, Vec::with_capacity(capacity))
}

/// About how many bytes [`encode`] makes of `entry`: its command's encoding (made once and
/// kept, see [`Request`](super::types::Request)) plus a little for the rest. A buffer size for
/// encoding entries, and the measure of the entry cache's bound.
pub fn encoded_size_hint(entry: &Entry) -> usize {
    const OVERHEAD: usize = 64;
    match &entry.payload {
        EntryPayload::Normal(request) => OVERHEAD + request.wire().len(),
        EntryPayload::Blank | EntryPayload::Membership(_) => OVERHEAD,
    }
}

/// Decodes what [`encode`] wrote.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// The `raft_log` key of the entry at `index`: big-endian, so byte order is log order.
pub fn log_key(index: u64) -> [u8; 8] {
    index.to_be_bytes()
}

/// A key that sorts after every [`log_key`]: the exclusive end of "to the end of the log".
pub const LOG_KEY_END: [u8; 9] = [0xff; 9];

/// The index a `raft_log` key names, if it is one.
pub fn log_index(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// Serde adapter that writes a protobuf message as one byte string (its prost encoding).
pub(crate) mod prost_bytes {
    use super::*;

    /// Serializes `message` as the bytes of its protobuf encoding.
    pub fn serialize<M, S>(message: &M, serializer: S) -> Result<S::Ok, S::Error>
    where
        M: prost::Message,
        S: serde::Serializer,
    {
        serializer.serialize_bytes(&message.encode_to_vec())
    }

    /// Deserializes a protobuf message from a byte string written by [`serialize`] (or a
    /// sequence of bytes, for self-describing formats that write bytes that way).
    pub fn deserialize<'de, M, D>(deserializer: D) -> Result<M, D::Error>
    where
        M: prost::Message + Default,
        D: serde::Deserializer<'de>,
    {
        deserializer.deserialize_bytes(Visitor::<M>(PhantomData))
    }

    /// The bytes of a byte string that a self-describing format wrote as a sequence.
    pub fn seq_bytes<'de, A: serde::de::SeqAccess<'de>>(mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut bytes = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(b) = seq.next_element::<u8>()? {
            bytes.push(b);
        }
        Ok(bytes)
    }

    struct Visitor<M>(PhantomData<M>);

    impl<'de, M: prost::Message + Default> serde::de::Visitor<'de> for Visitor<M> {
        type Value = M;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("the bytes of a protobuf message")
        }

        fn visit_bytes<E: serde::de::Error>(self, bytes: &[u8]) -> Result<M, E> {
            M::decode(bytes).map_err(E::custom)
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<M, A::Error> {
            M::decode(seq_bytes(seq)?.as_slice()).map_err(serde::de::Error::custom)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_in_index_order() {
        let mut keys: Vec<[u8; 8]> = [300u64, 2, 1 << 40, 255, 256].map(log_key).to_vec();
        keys.sort();
        let indexes: Vec<u64> = keys
            .iter()
            .map(|k| log_index(k).expect("8 bytes"))
            .collect();
        assert_eq!(indexes, vec![2, 255, 256, 300, 1 << 40]);
        assert!(keys.iter().all(|k| k.as_slice() < LOG_KEY_END.as_slice()));
        assert_eq!(log_index(b"short"), None);
    }
}
