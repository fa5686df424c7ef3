//! etcdctl's `fields` format: one `"Name" : value` line per field, strings Go-quoted.
//!
//! etcdctl dereferences the response header unconditionally and panics when a server leaves
//! it out (etcd 3.4 does for `alarm list`); kvctl prints no header lines instead.

use std::fmt::Write as _;

use kvstore_proto::etcdserverpb::{
    response_op::Response, AlarmResponse, DeleteRangeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseTimeToLiveResponse, MemberListResponse,
    PutResponse, RangeResponse, ResponseHeader, TxnResponse, WatchResponse,
};
use kvstore_proto::mvccpb::KeyValue;

use super::simple::{alarm_type_name, event_type_name};
use super::{EpHashKv, EpHealth, EpStatus};
use crate::go::{quote, string_list};

fn hdr(s: &mut String, h: Option<&ResponseHeader>) {
    if let Some(h) = h {
        let _ = writeln!(s, "\"ClusterID\" : {}", h.cluster_id);
        let _ = writeln!(s, "\"MemberID\" : {}", h.member_id);
        let _ = writeln!(s, "\"Revision\" : {}", h.revision);
        let _ = writeln!(s, "\"RaftTerm\" : {}", h.raft_term);
    }
}

fn kv(s: &mut String, prefix: &str, kv: &KeyValue) {
    let _ = writeln!(s, "\"{prefix}Key\" : {}", quote(&kv.key));
    let _ = writeln!(s, "\"{prefix}CreateRevision\" : {}", kv.create_revision);
    let _ = writeln!(s, "\"{prefix}ModRevision\" : {}", kv.mod_revision);
    let _ = writeln!(s, "\"{prefix}Version\" : {}", kv.version);
    let _ = writeln!(s, "\"{prefix}Value\" : {}", quote(&kv.value));
    let _ = writeln!(s, "\"{prefix}Lease\" : {}", kv.lease);
}

/// Just the header: `lease revoke`'s output.
pub(super) fn header_only(h: Option<&ResponseHeader>) -> String {
    let mut s = String::new();
    hdr(&mut s, h);
    s
}

pub(super) fn put(r: &PutResponse) -> String {
    let mut s = String::new();
    put_into(&mut s, r);
    s
}

fn put_into(s: &mut String, r: &PutResponse) {
    hdr(s, r.header.as_ref());
    if let Some(prev) = &r.prev_kv {
        kv(s, "Prev", prev);
    }
}

pub(super) fn get(r: &RangeResponse) -> String {
    let mut s = String::new();
    get_into(&mut s, r);
    s
}

fn get_into(s: &mut String, r: &RangeResponse) {
    hdr(s, r.header.as_ref());
    for k in &r.kvs {
        kv(s, "", k);
    }
    let _ = writeln!(s, "\"More\" : {}", r.more);
    let _ = writeln!(s, "\"Count\" : {}", r.count);
}

pub(super) fn del(r: &DeleteRangeResponse) -> String {
    let mut s = String::new();
    del_into(&mut s, r);
    s
}

fn del_into(s: &mut String, r: &DeleteRangeResponse) {
    hdr(s, r.header.as_ref());
    let _ = writeln!(s, "\"Deleted\" : {}", r.deleted);
    for k in &r.prev_kvs {
        kv(s, "Prev", k);
    }
}

pub(super) fn txn(r: &TxnResponse) -> String {
    let mut s = String::new();
    txn_into(&mut s, r);
    s
}

fn txn_into(s: &mut String, r: &TxnResponse) {
    hdr(s, r.header.as_ref());
    let _ = writeln!(s, "\"Succeeded\" : {}", r.succeeded);
    for op in &r.responses {
        match &op.response {
            Some(Response::ResponseRange(r)) => get_into(s, r),
            Some(Response::ResponsePut(r)) => put_into(s, r),
            Some(Response::ResponseDeleteRange(r)) => del_into(s, r),
            Some(Response::ResponseTxn(r)) => txn_into(s, r),
            None => s.push_str("\"Unknown\" : \"<nil>\"\n"),
        }
    }
}

pub(super) fn watch(r: &WatchResponse) -> String {
    let mut s = String::new();
    hdr(&mut s, Some(&r.header.unwrap_or_default()));
    for ev in &r.events {
        let _ = writeln!(s, "\"Type\" : {}", event_type_name(ev.r#type));
        if let Some(prev) = &ev.prev_kv {
            kv(&mut s, "Prev", prev);
        }
        kv(&mut s, "", ev.kv.as_ref().unwrap_or(&KeyValue::default()));
    }
    s
}

pub(super) fn lease_grant(r: &LeaseGrantResponse) -> String {
    let mut s = String::new();
    hdr(&mut s, r.header.as_ref());
    let _ = writeln!(s, "\"ID\" : {}", r.id);
    let _ = writeln!(s, "\"TTL\" : {}", r.ttl);
    s
}

pub(super) fn lease_keep_alive(r: &LeaseKeepAliveResponse) -> String {
    let mut s = String::new();
    hdr(&mut s, r.header.as_ref());
    let _ = writeln!(s, "\"ID\" : {}", r.id);
    let _ = writeln!(s, "\"TTL\" : {}", r.ttl);
    s
}

pub(super) fn lease_time_to_live(r: &LeaseTimeToLiveResponse) -> String {
    let mut s = String::new();
    hdr(&mut s, r.header.as_ref());
    let _ = writeln!(s, "\"ID\" : {}", r.id);
    let _ = writeln!(s, "\"TTL\" : {}", r.ttl);
    let _ = writeln!(s, "\"GrantedTTL\" : {}", r.granted_ttl);
    for k in &r.keys {
        let _ = writeln!(s, "\"Key\" : {}", quote(k));
    }
    s
}

pub(super) fn lease_list(r: &LeaseLeasesResponse) -> String {
    let mut s = String::new();
    hdr(&mut s, r.header.as_ref());
    for l in &r.leases {
        let _ = writeln!(s, "\"ID\" : {}", l.id);
    }
    s
}

pub(super) fn member_list(r: &MemberListResponse) -> String {
    let mut s = String::new();
    hdr(&mut s, r.header.as_ref());
    for m in &r.members {
        let _ = writeln!(s, "\"ID\" : {}", m.id);
        let _ = writeln!(s, "\"Name\" : {}", quote(m.name.as_bytes()));
        for u in &m.peer_ur_ls {
            let _ = writeln!(s, "\"PeerURL\" : {}", quote(u.as_bytes()));
        }
        for u in &m.client_ur_ls {
            let _ = writeln!(s, "\"ClientURL\" : {}", quote(u.as_bytes()));
        }
        let _ = writeln!(s, "\"IsLearner\" : {}", m.is_learner);
        s.push('\n');
    }
    s
}

pub(super) fn endpoint_status(list: &[EpStatus]) -> String {
    let mut s = String::new();
    for ep in list {
        let r = &ep.resp;
        hdr(&mut s, r.header.as_ref());
        let _ = writeln!(s, "\"Version\" : {}", quote(r.version.as_bytes()));
        let _ = writeln!(s, "\"DBSize\" : {}", r.db_size);
        let _ = writeln!(s, "\"Leader\" : {}", r.leader);
        let _ = writeln!(s, "\"IsLearner\" : {}", r.is_learner);
        let _ = writeln!(s, "\"RaftIndex\" : {}", r.raft_index);
        let _ = writeln!(s, "\"RaftTerm\" : {}", r.raft_term);
        let _ = writeln!(s, "\"RaftAppliedIndex\" : {}", r.raft_applied_index);
        let _ = writeln!(s, "\"Errors\" : {}", string_list(&r.errors));
        let _ = writeln!(s, "\"Endpoint\" : {}", quote(ep.endpoint.as_bytes()));
        s.push('\n');
    }
    s
}

pub(super) fn endpoint_hashkv(list: &[EpHashKv]) -> String {
    let mut s = String::new();
    for ep in list {
        hdr(&mut s, ep.resp.header.as_ref());
        let _ = writeln!(s, "\"Endpoint\" : {}", quote(ep.endpoint.as_bytes()));
        let _ = writeln!(s, "\"Hash\" : {}", ep.resp.hash);
        s.push('\n');
    }
    s
}

pub(super) fn endpoint_health(list: &[EpHealth]) -> String {
    let mut s = String::new();
    for h in list {
        let _ = writeln!(s, "\"Endpoint\" : {}", quote(h.endpoint.as_bytes()));
        let _ = writeln!(s, "\"Health\" : {}", h.health);
        let _ = writeln!(s, "\"Took\" : {}", h.took);
        let _ = writeln!(s, "\"Error\" : {}", h.error);
        s.push('\n');
    }
    s
}

pub(super) fn alarm(r: &AlarmResponse) -> String {
    let mut s = String::new();
    hdr(&mut s, r.header.as_ref());
    for a in &r.alarms {
        let _ = writeln!(s, "\"MemberID\" : {}", a.member_id);
        let _ = writeln!(s, "\"AlarmType\" : {}", alarm_type_name(a.alarm));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_lists_header_pairs_more_and_count() {
        let r = RangeResponse {
            header: Some(ResponseHeader {
                cluster_id: 1,
                member_id: 2,
                revision: 3,
                raft_term: 4,
            }),
            kvs: vec![KeyValue {
                key: b"foo".to_vec(),
                create_revision: 2,
                mod_revision: 2,
                version: 1,
                value: b"b\"ar\n".to_vec(),
                lease: 0,
            }],
            more: false,
            count: 1,
        };
        assert_eq!(
            get(&r),
            "\"ClusterID\" : 1\n\"MemberID\" : 2\n\"Revision\" : 3\n\"RaftTerm\" : 4\n\
             \"Key\" : \"foo\"\n\"CreateRevision\" : 2\n\"ModRevision\" : 2\n\"Version\" : 1\n\
             \"Value\" : \"b\\\"ar\\n\"\n\"Lease\" : 0\n\"More\" : false\n\"Count\" : 1\n"
        );
    }

    #[test]
    fn txn_repeats_each_responses_fields() {
        let r = TxnResponse {
            header: Some(ResponseHeader {
                revision: 11,
                ..Default::default()
            }),
            succeeded: false,
            responses: vec![kvstore_proto::etcdserverpb::ResponseOp {
                response: Some(Response::ResponsePut(PutResponse {
                    header: Some(ResponseHeader {
                        revision: 11,
                        ..Default::default()
                    }),
                    prev_kv: None,
                })),
            }],
        };
        assert_eq!(
            txn(&r),
            "\"ClusterID\" : 0\n\"MemberID\" : 0\n\"Revision\" : 11\n\"RaftTerm\" : 0\n\"Succeeded\" : false\n\
             \"ClusterID\" : 0\n\"MemberID\" : 0\n\"Revision\" : 11\n\"RaftTerm\" : 0\n"
        );
    }

    #[test]
    fn endpoint_status_prints_errors_as_a_go_list() {
        let list = [EpStatus {
            endpoint: "127.0.0.1:2379".into(),
            resp: kvstore_proto::etcdserverpb::StatusResponse {
                version: "3.4.23".into(),
                errors: vec!["memberID:1 alarm:NOSPACE ".into()],
                ..Default::default()
            },
        }];
        let text = endpoint_status(&list);
        assert!(
            text.contains("\"Errors\" : [memberID:1 alarm:NOSPACE ]\n"),
            "{text}"
        );
        assert!(
            text.ends_with("\"Endpoint\" : \"127.0.0.1:2379\"\n\n"),
            "{text}"
        );
    }
}
