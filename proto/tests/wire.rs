//! Wire-format checks against etcd's field numbers.
//!
//! Each message is encoded, decoded back, and its encoded bytes are checked for the tags
//! etcd uses (tag byte = field_number << 3 | wire_type). A field given the wrong number or
//! type in the `.proto` files makes these tests fail. Numbers were checked against etcd's
//! `api/etcdserverpb/rpc.proto` and `api/mvccpb/kv.proto` (v3.5) and against the descriptors
//! embedded in an etcd 3.4 binary.

use kvstore_proto::etcdserverpb::{
    compare::{CompareResult, CompareTarget, TargetUnion},
    request_op::Request,
    watch_create_request::FilterType,
    watch_request::RequestUnion,
    Compare, PutRequest, RangeRequest, RangeResponse, RequestOp, ResponseHeader, TxnRequest,
    WatchCreateRequest, WatchRequest,
};
use kvstore_proto::mvccpb::{event::EventType, Event, KeyValue};
use prost::Message;

const VARINT: u8 = 0;
const LEN: u8 = 2;

/// Every top-level field in `buf`, in order: (field number, wire type, payload). The payload
/// is the contents of a length-delimited field, or the raw bytes of any other kind.
fn walk(mut buf: &[u8]) -> Vec<(u64, u8, &[u8])> {
    let mut out = Vec::new();
    while !buf.is_empty() {
        let tag = prost::encoding::decode_varint(&mut buf).expect("tag");
        let wire = (tag & 7) as u8;
        let len = match wire {
            0 => buf.iter().position(|b| b & 0x80 == 0).expect("varint") + 1,
            1 => 8,
            2 => prost::encoding::decode_varint(&mut buf).expect("length") as usize,
            5 => 4,
            w => panic!("unexpected wire type {w}"),
        };
        let (payload, rest) = buf.split_at(len);
        out.push((tag >> 3, wire, payload));
        buf = rest;
    }
    out
}

/// The (field number, wire type) of every top-level field in `buf`, in order.
fn fields(buf: &[u8]) -> Vec<(u64, u8)> {
    walk(buf).into_iter().map(|(n, w, _)| (n, w)).collect()
}

/// The payload of the first top-level length-delimited field `number` in `buf`.
fn sub(buf: &[u8], number: u64) -> &[u8] {
    walk(buf)
        .into_iter()
        .find(|&(n, w, _)| n == number && w == LEN)
        .map(|(_, _, payload)| payload)
        .expect("field not found")
}

#[test]
fn put_request_exact_bytes() {
    let req = PutRequest {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        lease: 7,
        prev_kv: true,
        ignore_value: true,
        ignore_lease: true,
    };
    let buf = req.encode_to_vec();
    // key=1, value=2, lease=3, prev_kv=4, ignore_value=5, ignore_lease=6.
    assert_eq!(
        buf,
        [0x0a, 1, b'k', 0x12, 1, b'v', 0x18, 7, 0x20, 1, 0x28, 1, 0x30, 1]
    );
    assert_eq!(PutRequest::decode(buf.as_slice()).expect("decode"), req);
}

#[test]
fn range_request_field_numbers() {
    let req = RangeRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        limit: 10,
        revision: 42,
        serializable: true,
        keys_only: true,
        count_only: true,
        min_mod_revision: 1,
        max_mod_revision: 2,
        min_create_revision: 3,
        max_create_revision: 4,
        ..Default::default()
    };
    let buf = req.encode_to_vec();
    assert_eq!(
        fields(&buf),
        [
            (1, LEN),     // key
            (2, LEN),     // range_end
            (3, VARINT),  // limit
            (4, VARINT),  // revision
            (7, VARINT),  // serializable
            (8, VARINT),  // keys_only
            (9, VARINT),  // count_only
            (10, VARINT), // min_mod_revision
            (11, VARINT), // max_mod_revision
            (12, VARINT), // min_create_revision
            (13, VARINT), // max_create_revision
        ]
    );
    // limit is field 3 (tag 0x18) and revision is field 4 (tag 0x20).
    assert_eq!(buf[6..10], [0x18, 10, 0x20, 42]);
    assert_eq!(RangeRequest::decode(buf.as_slice()).expect("decode"), req);
}

#[test]
fn range_response_with_key_value() {
    let kv = KeyValue {
        key: b"foo".to_vec(),
        create_revision: 2,
        mod_revision: 3,
        version: 4,
        value: b"bar".to_vec(),
        lease: 5,
    };
    let kv_bytes = kv.encode_to_vec();
    // key=1, create_revision=2, mod_revision=3, version=4, value=5, lease=6.
    assert_eq!(
        kv_bytes,
        [
            0x0a, 3, b'f', b'o', b'o', 0x10, 2, 0x18, 3, 0x20, 4, 0x2a, 3, b'b', b'a', b'r', 0x30,
            5
        ]
    );

    let resp = RangeResponse {
        header: Some(ResponseHeader {
            cluster_id: 1,
            member_id: 2,
            revision: 3,
            raft_term: 4,
        }),
        kvs: vec![kv.clone()],
        more: true,
        count: 9,
    };
    let buf = resp.encode_to_vec();
    assert_eq!(
        fields(&buf),
        [(1, LEN), (2, LEN), (3, VARINT), (4, VARINT)] // header, kvs, more, count
    );
    assert_eq!(sub(&buf, 1), [0x08, 1, 0x10, 2, 0x18, 3, 0x20, 4]);
    assert_eq!(sub(&buf, 2), kv_bytes);
    assert_eq!(RangeResponse::decode(buf.as_slice()).expect("decode"), resp);
}

#[test]
fn watch_create_request_field_numbers() {
    let create = WatchCreateRequest {
        key: b"a".to_vec(),
        range_end: b"b".to_vec(),
        start_revision: 5,
        progress_notify: true,
        filters: vec![FilterType::Nodelete as i32],
        prev_kv: true,
        watch_id: 7,
        fragment: true,
    };
    let req = WatchRequest {
        request_union: Some(RequestUnion::CreateRequest(create.clone())),
    };
    let buf = req.encode_to_vec();
    assert_eq!(fields(&buf), [(1, LEN)]); // create_request = 1
    let inner = sub(&buf, 1).to_vec();
    assert_eq!(
        fields(&inner),
        [
            (1, LEN),    // key
            (2, LEN),    // range_end
            (3, VARINT), // start_revision
            (4, VARINT), // progress_notify
            (5, LEN),    // filters (packed)
            (6, VARINT), // prev_kv
            (7, VARINT), // watch_id
            (8, VARINT), // fragment
        ]
    );
    // filters = [NODELETE (1)] packed, then prev_kv (field 6, tag 0x30) = true.
    assert_eq!(inner[10..16], [0x2a, 1, 1, 0x30, 1, 0x38]);
    assert_eq!(WatchRequest::decode(buf.as_slice()).expect("decode"), req);

    let cancel = WatchRequest {
        request_union: Some(RequestUnion::CancelRequest(Default::default())),
    };
    assert_eq!(cancel.encode_to_vec(), [0x12, 0]); // cancel_request = 2
    let progress = WatchRequest {
        request_union: Some(RequestUnion::ProgressRequest(Default::default())),
    };
    assert_eq!(progress.encode_to_vec(), [0x1a, 0]); // progress_request = 3
}

#[test]
fn txn_request_with_compares() {
    let compare = |target: CompareTarget, union: TargetUnion| Compare {
        result: CompareResult::Equal as i32,
        target: target as i32,
        key: b"k".to_vec(),
        target_union: Some(union),
        range_end: Vec::new(),
    };
    let compares = vec![
        compare(CompareTarget::Version, TargetUnion::Version(1)),
        compare(CompareTarget::Create, TargetUnion::CreateRevision(2)),
        compare(CompareTarget::Mod, TargetUnion::ModRevision(3)),
        compare(CompareTarget::Value, TargetUnion::Value(b"v".to_vec())),
        compare(CompareTarget::Lease, TargetUnion::Lease(4)),
    ];
    // result=1, target=2, key=3, then the target_union variant: version=4,
    // create_revision=5, mod_revision=6, value=7, lease=8.
    let expected_union_fields = [(4, VARINT), (5, VARINT), (6, VARINT), (7, LEN), (8, VARINT)];
    for (c, union_field) in compares.iter().zip(expected_union_fields) {
        let buf = c.encode_to_vec();
        let mut want = vec![(3, LEN), union_field];
        if c.target != 0 {
            want.insert(0, (2, VARINT));
        }
        assert_eq!(fields(&buf), want, "{c:?}");
    }
    // mod_revision(k) == 3, as kube-apiserver's optimistic updates send it.
    assert_eq!(
        compares[2].encode_to_vec(),
        [0x10, 2, 0x1a, 1, b'k', 0x30, 3]
    );

    // result NOT_EQUAL = 3, target MOD = 2, range_end is field 64 (tag 0x82 0x04).
    let ranged = Compare {
        result: CompareResult::NotEqual as i32,
        target: CompareTarget::Mod as i32,
        key: b"a".to_vec(),
        target_union: Some(TargetUnion::ModRevision(0)),
        range_end: b"b".to_vec(),
    };
    assert_eq!(
        ranged.encode_to_vec(),
        [0x08, 3, 0x10, 2, 0x1a, 1, b'a', 0x30, 0, 0x82, 0x04, 1, b'b']
    );

    let txn = TxnRequest {
        compare: compares.clone(),
        success: vec![RequestOp {
            request: Some(Request::RequestPut(PutRequest {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                ..Default::default()
            })),
        }],
        failure: vec![RequestOp {
            request: Some(Request::RequestRange(RangeRequest {
                key: b"k".to_vec(),
                ..Default::default()
            })),
        }],
    };
    let buf = txn.encode_to_vec();
    let mut want = vec![(1, LEN); compares.len()]; // compare = 1
    want.push((2, LEN)); // success = 2
    want.push((3, LEN)); // failure = 3
    assert_eq!(fields(&buf), want);
    assert_eq!(fields(sub(&buf, 2)), [(2, LEN)]); // RequestOp.request_put = 2
    assert_eq!(fields(sub(&buf, 3)), [(1, LEN)]); // RequestOp.request_range = 1
    assert_eq!(TxnRequest::decode(buf.as_slice()).expect("decode"), txn);

    // Nested txn and delete_range variants: request_txn = 4, request_delete_range = 3.
    let nested = RequestOp {
        request: Some(Request::RequestTxn(TxnRequest::default())),
    };
    assert_eq!(nested.encode_to_vec(), [0x22, 0]);
    let delete = RequestOp {
        request: Some(Request::RequestDeleteRange(Default::default())),
    };
    assert_eq!(delete.encode_to_vec(), [0x1a, 0]);
}

#[test]
fn decodes_bytes_as_etcd_writes_them() {
    // An Event as etcd encodes it: type DELETE (field 1 = 1), kv (2), prev_kv (3).
    let bytes = [0x08, 1, 0x12, 2, 0x0a, 0, 0x1a, 2, 0x18, 9];
    let ev = Event::decode(bytes.as_slice()).expect("decode");
    assert_eq!(ev.r#type(), EventType::Delete);
    assert_eq!(ev.kv, Some(KeyValue::default()));
    assert_eq!(ev.prev_kv.map(|kv| kv.mod_revision), Some(9));

    // A Compare with value (field 7) decodes into the Value variant.
    let c = Compare::decode([0x10, 3, 0x1a, 1, b'k', 0x3a, 1, b'x'].as_slice()).expect("decode");
    assert_eq!(c.target(), CompareTarget::Value);
    assert_eq!(c.target_union, Some(TargetUnion::Value(b"x".to_vec())));
}

#[test]
fn descriptor_set_is_exported() {
    let set = kvstore_proto::FILE_DESCRIPTOR_SET;
    let contains = |needle: &[u8]| set.windows(needle.len()).any(|w| w == needle);
    assert!(contains(b"etcd/api/etcdserverpb/rpc.proto"));
    assert!(contains(b"etcd/api/mvccpb/kv.proto"));
    assert!(contains(b"etcd/api/authpb/auth.proto"));
    assert!(contains(b"etcdserverpb"));
}
