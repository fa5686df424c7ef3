//! [`SharedEvent`]: one committed event as every watcher it is delivered to shares it.

use std::ops::Deref;
use std::sync::OnceLock;

use bytes::Bytes;
use kvstore_proto::mvccpb::Event;
use prost::Message;

/// The events of one delivery, in revision order. The watchers of a one-event commit (the
/// usual one: a put) share one slice, one allocation per commit instead of one per watcher.
pub type EventBatch = std::sync::Arc<[std::sync::Arc<SharedEvent>]>;

/// One event of a commit, shared (behind an `Arc`) by all the watchers it is delivered to,
/// with its protobuf encoding made once, by the first stream that sends it, and reused by
/// every other: with 10k watchers on a key, cloning and encoding the event per watcher was
/// ~15 % of a member's CPU samples in the fan-out benchmark (`docs/benchmarks.md`).
#[derive(Debug)]
pub struct SharedEvent {
    /// The event.
    event: Event,
    /// The length of `event` encoded, computed once: each watcher's delivery counts it against
    /// its stream's queue budget, under the hub's lock.
    encoded_len: usize,
    /// `event` encoded, once asked for.
    encoded: OnceLock<Bytes>,
}

impl SharedEvent {
    /// The event, not yet encoded.
    pub fn new(event: Event) -> Self {
        Self {
            encoded_len: event.encoded_len(),
            event,
            encoded: OnceLock::new(),
        }
    }

    /// The length of the event's protobuf encoding.
    pub fn encoded_len(&self) -> usize {
        self.encoded_len
    }

    /// The event's protobuf encoding (an `mvccpb.Event` message, without a field key or length).
    pub fn encoded(&self) -> &Bytes {
        self.encoded
            .get_or_init(|| Bytes::from(self.event.encode_to_vec()))
    }
}

impl Deref for SharedEvent {
    type Target = Event;

    fn deref(&self) -> &Event {
        &self.event
    }
}

impl PartialEq for SharedEvent {
    fn eq(&self, other: &Self) -> bool {
        self.event == other.event
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::mvccpb::KeyValue;

    #[test]
    fn encoding_is_the_events_own_and_made_once() {
        let shared = SharedEvent::new(Event {
            r#type: 1,
            kv: Some(KeyValue {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                mod_revision: 7,
                ..KeyValue::default()
            }),
            prev_kv: None,
        });
        let first = shared.encoded().clone();
        assert_eq!(first, Bytes::from(shared.event.encode_to_vec()));
        assert_eq!(shared.encoded_len(), first.len());
        assert_eq!(
            first.as_ptr(),
            shared.encoded().as_ptr(),
            "the second call reuses the first encoding"
        );
    }
}
