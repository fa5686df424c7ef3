//! Watch responses on their way to gRPC, and the codec that encodes them.
//!
//! A stream's session hands gRPC [`Outbound`] responses. One carrying a watcher's events holds
//! the commit's shared events, and the codec writes it field by field straight into tonic's
//! buffer, each event copied from its encoding made once ([`SharedEvent::encoded`]); anything
//! else is a [`WatchResponse`] that prost encodes. Either way the bytes are what prost would
//! produce for the same response (fields in number order, defaults left out), which the tests
//! check byte for byte.

use std::sync::Arc;

use bytes::BufMut;
use kvstore_proto::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::watch::{EventBatch, SharedEvent};

/// `WatchResponse.header`.
const HEADER_FIELD: u32 = 1;
/// `WatchResponse.watch_id`.
const WATCH_ID_FIELD: u32 = 2;
/// `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;
/// A field key of a field number below 16 is one byte.
const KEY_LEN: usize = 1;

/// One response of a Watch stream, as its task hands it to gRPC.
#[derive(Debug)]
pub enum Outbound {
    /// A response with a header, a watch ID and events, and nothing else.
    Events {
        /// The member's header.
        header: ResponseHeader,
        /// The watch the events are for.
        watch_id: i64,
        /// The events, shared with the other watchers of the commit.
        events: EventBatch,
    },
    /// Any other response.
    Message(WatchResponse),
}

impl Outbound {
    /// The length of the encoded response.
    pub fn encoded_len(&self) -> usize {
        match self {
            Outbound::Message(resp) => resp.encoded_len(),
            Outbound::Events {
                header,
                watch_id,
                events,
            } => Self::events_len(header, *watch_id, events),
        }
    }

    /// The length of an encoded [`Outbound::Events`] with these fields.
    pub fn events_len(
        header: &ResponseHeader,
        watch_id: i64,
        events: &[Arc<SharedEvent>],
    ) -> usize {
        let header_len = header.encoded_len();
        let mut len = KEY_LEN + encoded_len_varint(header_len as u64) + header_len;
        if watch_id != 0 {
            len += KEY_LEN + encoded_len_varint(watch_id as u64);
        }
        for event in events {
            let n = event.encoded_len();
            len += KEY_LEN + encoded_len_varint(n as u64) + n;
        }
        len
    }

    /// Writes the response as an encoded `WatchResponse` message.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Outbound::Message(resp) => resp.encode_raw(buf),
            Outbound::Events {
                header,
                watch_id,
                events,
            } => {
                prost::encoding::message::encode(HEADER_FIELD, header, buf);
                if *watch_id != 0 {
                    encode_key(WATCH_ID_FIELD, WireType::Varint, buf);
                    encode_varint(*watch_id as u64, buf);
                }
                for event in events.iter() {
                    let encoded = event.encoded();
                    encode_key(EVENTS_FIELD, WireType::LengthDelimited, buf);
                    encode_varint(encoded.len() as u64, buf);
                    buf.put_slice(encoded);
                }
            }
        }
    }
}

/// etcd's `sendFragments`: a response of at least `max_bytes` with two or more events is split
/// into pieces, each under the limit unless a single event is larger, all but the last marked
/// `fragment`; the client joins them back into one response.
pub fn fragments(resp: WatchResponse, max_bytes: usize) -> Vec<WatchResponse> {
    if resp.encoded_len() < max_bytes || resp.events.len() < 2 {
        return vec![resp];
    }
    let mut template = resp;
    let events = std::mem::take(&mut template.events);
    template.fragment = true;
    let base = template.encoded_len();
    let mut out = Vec::new();
    let mut current = template.clone();
    let mut size = base;
    for event in events {
        let len = event.encoded_len();
        let field = 1 + encoded_len_varint(len as u64) + len;
        if !current.events.is_empty() && size + field >= max_bytes {
            out.push(std::mem::replace(&mut current, template.clone()));
            size = base;
        }
        current.events.push(event);
        size += field;
    }
    current.fragment = false;
    out.push(current);
    out
}

/// The Watch stream's codec: requests decoded by prost, [`Outbound`] responses encoded as
/// [`Outbound::encode`] does.
#[derive(Clone, Copy, Debug, Default)]
pub struct WireCodec;

impl Codec for WireCodec {
    type Encode = Outbound;
    type Decode = WatchRequest;
    type Encoder = WireCodec;
    type Decoder = WireCodec;

    fn encoder(&mut self) -> Self::Encoder {
        WireCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireCodec
    }
}

impl Encoder for WireCodec {
    type Item = Outbound;
    type Error = Status;

    fn encode(&mut self, item: Outbound, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.reserve(item.encoded_len());
        item.encode(dst);
        Ok(())
    }
}

impl Decoder for WireCodec {
    type Item = WatchRequest;
    type Error = Status;

    /// As tonic's prost codec: a request that does not decode is an `Internal` status.
    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<WatchRequest>, Status> {
        WatchRequest::decode(src)
            .map(Some)
            .map_err(|err| Status::internal(err.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::mvccpb::{event::EventType, Event, KeyValue};
    use proptest::prelude::*;

    fn event(key: &str, value_len: usize) -> Event {
        Event {
            r#type: EventType::Put as i32,
            kv: Some(KeyValue {
                key: key.into(),
                value: vec![b'x'; value_len],
                ..Default::default()
            }),
            prev_kv: None,
        }
    }

    fn arb_event() -> impl Strategy<Value = Event> {
        (
            0..2i32,
            proptest::collection::vec(any::<u8>(), 0..40),
            proptest::collection::vec(any::<u8>(), 0..300),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<i64>(),
            any::<bool>(),
        )
            .prop_map(
                |(kind, key, value, create, modr, version, lease, prev)| Event {
                    r#type: kind,
                    kv: Some(KeyValue {
                        key: key.clone(),
                        create_revision: create,
                        mod_revision: modr,
                        version,
                        value,
                        lease,
                    }),
                    prev_kv: prev.then(|| KeyValue {
                        key,
                        mod_revision: modr.wrapping_sub(1),
                        ..KeyValue::default()
                    }),
                },
            )
    }

    proptest! {
        /// The hand-written encoding is prost's, byte for byte, for any header, watch ID
        /// (zero and negative included) and events; a field left out or a length off by one
        /// fails it.
        #[test]
        fn events_responses_encode_exactly_as_prost_does(
            cluster_id in any::<u64>(),
            member_id in any::<u64>(),
            revision in any::<i64>(),
            raft_term in any::<u64>(),
            watch_id in prop_oneof![Just(0i64), Just(-1i64), any::<i64>()],
            events in proptest::collection::vec(arb_event(), 0..5),
        ) {
            let header = ResponseHeader { cluster_id, member_id, revision, raft_term };
            let shared: Vec<Arc<SharedEvent>> =
                events.iter().cloned().map(|e| Arc::new(SharedEvent::new(e))).collect();
            let expected = WatchResponse {
                header: Some(header),
                watch_id,
                events,
                ..WatchResponse::default()
            }
            .encode_to_vec();
            let out = Outbound::Events { header, watch_id, events: shared.into() };
            prop_assert_eq!(out.encoded_len(), expected.len());
            let mut encoded = Vec::new();
            out.encode(&mut encoded);
            prop_assert_eq!(encoded, expected);
        }
    }

    #[test]
    fn large_responses_are_split_into_fragments_in_order() {
        let resp = WatchResponse {
            watch_id: 7,
            events: (0..10).map(|i| event(&format!("k{i}"), 300)).collect(),
            ..WatchResponse::default()
        };
        let parts = fragments(resp.clone(), 1000);
        assert!(parts.len() > 1);
        for (i, part) in parts.iter().enumerate() {
            assert_eq!(part.watch_id, 7);
            assert_eq!(
                part.fragment,
                i + 1 < parts.len(),
                "all but the last are fragments"
            );
            assert!(part.encoded_len() < 1000, "each fragment fits");
        }
        let joined: Vec<Event> = parts.into_iter().flat_map(|p| p.events).collect();
        assert_eq!(joined, resp.events);
    }

    #[test]
    fn small_or_single_event_responses_are_not_fragmented() {
        let small = WatchResponse {
            events: vec![event("a", 10), event("b", 10)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(small.clone(), 1000), vec![small]);
        let single = WatchResponse {
            events: vec![event("a", 5000)],
            ..WatchResponse::default()
        };
        assert_eq!(fragments(single.clone(), 1000), vec![single]);
    }
}
