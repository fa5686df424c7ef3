//! The protobuf wire form of a [`Command`] (a `raftpb::Command`), encoded straight from a
//! borrowed command.
//!
//! `raftpb::Command::from(command)` needs the command by value, so encoding one that is still
//! needed (a log entry being written, then sent to each follower) meant a deep copy of every
//! key and value first. The functions here produce the same bytes from a reference; the tests
//! hold them to the generated encoder's output.

use prost::encoding::{self, encode_key, encode_varint, encoded_len_varint, key_len, WireType};

use crate::apply::{lease_checkpoints_wire, Command};

/// Field numbers of `raftpb.Command`'s `request` oneof (`proto/kvstore/raftpb/raft.proto`).
mod field {
    pub const PUT: u32 = 1;
    pub const DELETE_RANGE: u32 = 2;
    pub const TXN: u32 = 3;
    pub const COMPACTION: u32 = 4;
    pub const LEASE_GRANT: u32 = 5;
    pub const LEASE_REVOKE: u32 = 6;
    pub const LEASE_CHECKPOINT: u32 = 7;
    pub const ALARM: u32 = 8;
    pub const MEMBER_ATTRIBUTES: u32 = 9;
    pub const BATCH: u32 = 10;
    /// `raftpb.CommandBatch.commands`.
    pub const BATCH_COMMANDS: u32 = 1;
}

/// The encoded length of `command` as a `raftpb::Command`.
pub fn encoded_len(command: &Command) -> usize {
    use encoding::message;
    match command {
        Command::Put(r) => message::encoded_len(field::PUT, r),
        Command::DeleteRange(r) => message::encoded_len(field::DELETE_RANGE, r),
        Command::Txn(r) => message::encoded_len(field::TXN, r),
        Command::Compact(r) => message::encoded_len(field::COMPACTION, r),
        Command::LeaseGrant(r) => message::encoded_len(field::LEASE_GRANT, r),
        Command::LeaseRevoke(id) => encoding::int64::encoded_len(field::LEASE_REVOKE, id),
        Command::LeaseCheckpoint(cps) => {
            message::encoded_len(field::LEASE_CHECKPOINT, &lease_checkpoints_wire(cps))
        }
        Command::Alarm(r) => message::encoded_len(field::ALARM, r),
        Command::PublishMember(a) => message::encoded_len(field::MEMBER_ATTRIBUTES, a),
        Command::Batch(commands) => SizedBatch::new(commands).encoded_len(),
    }
}

/// `command` encoded as a `raftpb::Command`.
pub fn encode_to_vec(command: &Command) -> Vec<u8> {
    if let Command::Batch(commands) = command {
        // Sized once, for both the buffer and the commands' length prefixes.
        let batch = SizedBatch::new(commands);
        let mut buf = Vec::with_capacity(batch.encoded_len());
        batch.encode(&mut buf);
        return buf;
    }
    let mut buf = Vec::with_capacity(encoded_len(command));
    encode(command, &mut buf);
    buf
}

/// Appends `command`, encoded as a `raftpb::Command`, to `buf`.
fn encode(command: &Command, buf: &mut Vec<u8>) {
    use encoding::message;
    match command {
        Command::Put(r) => message::encode(field::PUT, r, buf),
        Command::DeleteRange(r) => message::encode(field::DELETE_RANGE, r, buf),
        Command::Txn(r) => message::encode(field::TXN, r, buf),
        Command::Compact(r) => message::encode(field::COMPACTION, r, buf),
        Command::LeaseGrant(r) => message::encode(field::LEASE_GRANT, r, buf),
        Command::LeaseRevoke(id) => encoding::int64::encode(field::LEASE_REVOKE, id, buf),
        Command::LeaseCheckpoint(cps) => {
            message::encode(field::LEASE_CHECKPOINT, &lease_checkpoints_wire(cps), buf)
        }
        Command::Alarm(r) => message::encode(field::ALARM, r, buf),
        Command::PublishMember(a) => message::encode(field::MEMBER_ATTRIBUTES, a, buf),
        Command::Batch(commands) => SizedBatch::new(commands).encode(buf),
    }
}

/// The encoded length of a length-delimited field `tag` holding `len` bytes.
fn field_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// A batch's commands with their encoded lengths, computed once.
struct SizedBatch<'a> {
    commands: &'a [Command],
    lens: Vec<usize>,
    /// The encoded length of the `raftpb::CommandBatch`.
    inner: usize,
}

impl<'a> SizedBatch<'a> {
    fn new(commands: &'a [Command]) -> Self {
        let lens: Vec<usize> = commands.iter().map(encoded_len).collect();
        let inner = lens
            .iter()
            .map(|&len| field_len(field::BATCH_COMMANDS, len))
            .sum();
        Self {
            commands,
            lens,
            inner,
        }
    }

    /// Its length as the `batch` field of a `raftpb::Command`.
    fn encoded_len(&self) -> usize {
        field_len(field::BATCH, self.inner)
    }

    fn encode(&self, buf: &mut Vec<u8>) {
        encode_key(field::BATCH, WireType::LengthDelimited, buf);
        encode_varint(self.inner as u64, buf);
        for (command, &len) in self.commands.iter().zip(&self.lens) {
            encode_key(field::BATCH_COMMANDS, WireType::LengthDelimited, buf);
            encode_varint(len as u64, buf);
            encode(command, buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvstore_proto::etcdserverpb::{
        alarm_request::AlarmAction, request_op, AlarmRequest, CompactionRequest, Compare,
        DeleteRangeRequest, LeaseGrantRequest, PutRequest, RequestOp, TxnRequest,
    };
    use kvstore_proto::raftpb;
    use proptest::prelude::*;
    use prost::Message;

    /// What the generated encoder makes of the same command.
    fn reference(command: &Command) -> Vec<u8> {
        raftpb::Command::from(command.clone()).encode_to_vec()
    }

    fn every_kind() -> Vec<Command> {
        let put = |key: &[u8], value: &[u8], lease: i64| {
            Command::Put(PutRequest {
                key: key.to_vec(),
                value: value.to_vec(),
                lease,
                prev_kv: lease % 2 == 0,
                ..PutRequest::default()
            })
        };
        let single = vec![
            put(b"k", b"v", 7),
            // Every field at its default: the oneof variant must still be encoded.
            Command::Put(PutRequest::default()),
            Command::DeleteRange(DeleteRangeRequest {
                key: b"a".to_vec(),
                range_end: b"b".to_vec(),
                prev_kv: true,
            }),
            Command::Txn(TxnRequest {
                compare: vec![Compare {
                    key: b"k".to_vec(),
                    ..Compare::default()
                }],
                success: vec![RequestOp {
                    request: Some(request_op::Request::RequestPut(PutRequest {
                        key: b"k".to_vec(),
                        value: vec![9; 300],
                        ..PutRequest::default()
                    })),
                }],
                failure: vec![],
            }),
            Command::Compact(CompactionRequest {
                revision: 42,
                physical: true,
            }),
            Command::LeaseGrant(LeaseGrantRequest { ttl: 60, id: 5 }),
            Command::LeaseRevoke(0),
            Command::LeaseRevoke(-3),
            Command::LeaseCheckpoint(vec![]),
            Command::LeaseCheckpoint(vec![(1, 10), (2, 0)]),
            Command::Alarm(AlarmRequest {
                action: AlarmAction::Activate as i32,
                member_id: 3,
                alarm: 1,
            }),
            Command::PublishMember(raftpb::MemberAttributes {
                id: 9,
                name: "m1".into(),
                client_urls: vec!["http://127.0.0.1:2379".into()],
            }),
            Command::Batch(vec![]),
        ];
        let mut all = single.clone();
        all.push(Command::Batch(single));
        all.push(Command::Batch(vec![put(b"x", &[1; 200], 0); 300]));
        all
    }

    #[test]
    fn every_kind_of_command_encodes_as_the_generated_encoder_does() {
        for command in every_kind() {
            let want = reference(&command);
            assert_eq!(encode_to_vec(&command), want, "{command:?}");
            assert_eq!(encoded_len(&command), want.len(), "{command:?}");
        }
    }

    proptest! {
        #[test]
        fn batches_of_puts_encode_as_the_generated_encoder_does(
            puts in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..40),
                 proptest::collection::vec(any::<u8>(), 0..300),
                 any::<i64>()),
                0..20),
        ) {
            let command = Command::Batch(puts.into_iter().map(|(key, value, lease)| {
                Command::Put(PutRequest { key, value, lease, ..PutRequest::default() })
            }).collect());
            let want = reference(&command);
            prop_assert_eq!(encode_to_vec(&command), want.clone());
            prop_assert_eq!(encoded_len(&command), want.len());
            let back = Command::try_from(raftpb::Command::decode(want.as_slice()).expect("decodes"));
            prop_assert_eq!(back.expect("a command"), command);
        }
    }
}
