//! Watch responses on their way to gRPC, and the codec that encodes them.
//!
//! A stream's session hands gRPC [`Outbound`] responses. One carrying a watcher's events holds
//! the commit's shared events, and the codec writes it field by field straight into tonic's
//! buffer, each event copied from its encoding made once ([`SharedEvent::encoded`]); anything
//! else is a [`WatchResponse`] that prost encodes. Either way the bytes are what prost would
//! produce for the same response (fields in number order, defaults left out), which the tests
//! check byte for byte.

use bytes::BufMut;
use kvstore_proto::etcdserverpb::{ResponseHeader, WatchRequest, WatchResponse};
use prost::encoding::{encode_key, encode_varint, encoded_len_varint, WireType};
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::Status;

use crate::watch::EventBatch;

/// `WatchResponse.header`.
const HEADER_FIELD: u32 = 1;
/// `WatchResponse.watch_id`.
const WATCH_ID_FIELD: u32 = 2;
/// `WatchResponse.events`.
const EVENTS_FIELD: u32 = 11;
/// A field key of a field number below 16 is one byte.
const KEY_LEN: usize = 1;

/// The longest `WatchResponse.header` field: its key, a one-byte length and a message of four
/// fields, each a key and a varint of at most ten bytes.
const MAX_HEADER_FIELD: usize = KEY_LEN + 1 + 4 * (KEY_LEN + 10);

/// A `WatchResponse.header` field (key, length, message), encoded once and copied into every
/// response of a delivery: the responses of one commit to a stream's watchers all carry the
/// same header.
#[derive(Clone, Copy, Debug)]
pub struct EncodedHeader {
    /// The field's bytes, `len` of them.
    bytes: [u8; MAX_HEADER_FIELD],
    /// How many of `bytes` are used.
    len: u8,
}

impl EncodedHeader {
    /// The encoded `header` field of `header`.
    pub fn new(header: &ResponseHeader) -> Self {
        let mut bytes = [0; MAX_HEADER_FIELD];
        let mut rest = &mut bytes[..];
        prost::encoding::message::encode(HEADER_FIELD, header, &mut rest);
        let len = (MAX_HEADER_FIELD - rest.len()) as u8;
        Self { bytes, len }
    }

    /// The field's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// What the responses of one delivery share: the header field and the events, with the length
/// of the events' fields.
#[derive(Clone, Debug)]
pub struct EventsBody {
    /// The member's header for the delivery's revision.
    header: EncodedHeader,
    /// The events, shared with the other watchers of the commit.
    events: EventBatch,
    /// The length of the events encoded as `WatchResponse.events` fields.
    events_len: usize,
}

impl EventsBody {
    /// The shared part of responses carrying `events` under `header`.
    pub fn new(header: &ResponseHeader, events: EventBatch) -> Self {
        let events_len = events
            .iter()
            .map(|event| {
                let n = event.encoded_len();
                KEY_LEN + encoded_len_varint(n as u64) + n
            })
            .sum();
        Self {
            header: EncodedHeader::new(header),
            events,
            events_len,
        }
    }

    /// The events.
    pub fn events(&self) -> &EventBatch {
        &self.events
    }

    /// The length of the encoded response for `watch_id`.
    pub fn encoded_len(&self, watch_id: i64) -> usize {
        let id_len = if watch_id == 0 {
            0
        } else {
            KEY_LEN + encoded_len_varint(watch_id as u64)
        };
        usize::from(self.header.len) + id_len + self.events_len
    }
}

/// One response of a Watch stream, as its task hands it to gRPC.
#[derive(Debug)]
pub enum Outbound {
    /// A response with a header, a watch ID and events, and nothing else.
    Events {
        /// The header and events, shared with the other watchers of the delivery.
        body: EventsBody,
        /// The watch the events are for.
        watch_id: i64,
    },
    /// Any other response.
    Message(WatchResponse),
}

impl Outbound {
    /// The length of the encoded response.
    pub fn encoded_len(&self) -> usize {
        match self {
            Outbound::Message(resp) => resp.encoded_len(),
            Outbound::Events { body, watch_id } => body.encoded_len(*watch_id),
        }
    }

    /// Writes the response as an encoded `WatchResponse` message.
    pub fn encode(&self, buf: &mut impl BufMut) {
        match self {
            Outbound::Message(resp) => resp.encode_raw(buf),
            Outbound::Events { body, watch_id } => {
                buf.put_slice(body.header.as_bytes());
                if *watch_id != 0 {
                    encode_key(WATCH_ID_FIELD, WireType::Varint, buf);
                    encode_varint(*watch_id as u64, buf);
                }
                for event in body.events.iter() {
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
    use std::sync::Arc;

    use super::*;
    use crate::watch::SharedEvent;
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
            let out = Outbound::Events {
                body: EventsBody::new(&header, shared.into()),
                watch_id,
            };
            prop_assert_eq!(out.encoded_len(), expected.len());
            let mut encoded = Vec::new();
            out.encode(&mut encoded);
            prop_assert_eq!(encoded, expected);
        }
    }

    #[test]
    fn the_largest_header_fits_its_encoding() {
        let header = ResponseHeader {
            cluster_id: u64::MAX,
            member_id: u64::MAX,
            revision: i64::MIN,
            raft_term: u64::MAX,
        };
        let expected = WatchResponse {
            header: Some(header),
            ..WatchResponse::default()
        }
        .encode_to_vec();
        assert_eq!(EncodedHeader::new(&header).as_bytes(), &expected[..]);
        assert_eq!(expected.len(), MAX_HEADER_FIELD);
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
