//! etcdctl's `simple` format: `OK`, the deleted count, keys and values on their own lines,
//! comma-separated rows for members and endpoints.

use std::fmt::Write as _;

use kvstore_proto::etcdserverpb::{
    response_op::Response, AlarmResponse, AlarmType, DeleteRangeResponse, LeaseGrantResponse,
    LeaseKeepAliveResponse, LeaseLeasesResponse, LeaseTimeToLiveResponse, MemberAddResponse,
    MemberListResponse, PutResponse, RangeResponse, ResponseHeader, TxnResponse, WatchResponse,
};
use kvstore_proto::mvccpb::KeyValue;

use super::table::{endpoint_status_rows, member_rows};
use super::{EpHashKv, EpHealth, EpStatus};

/// Prints keys and values, as raw bytes or as `\x..` escapes (`--hex`).
pub(super) struct KvPrinter {
    /// `--hex`: keys and values as `\x..` escapes.
    pub hex: bool,
    /// `get --print-value-only`: values without their keys.
    pub value_only: bool,
}

impl KvPrinter {
    fn kv(&self, out: &mut Vec<u8>, kv: &KeyValue) {
        if !self.value_only {
            self.bytes(out, &kv.key);
        }
        self.bytes(out, &kv.value);
    }

    fn bytes(&self, out: &mut Vec<u8>, b: &[u8]) {
        if self.hex {
            for byte in b {
                out.extend_from_slice(format!("\\x{byte:02x}").as_bytes());
            }
        } else {
            out.extend_from_slice(b);
        }
        out.push(b'\n');
    }

    pub fn put(&self, r: &PutResponse) -> Vec<u8> {
        let mut out = b"OK\n".to_vec();
        if let Some(prev) = &r.prev_kv {
            self.kv(&mut out, prev);
        }
        out
    }

    pub fn get(&self, r: &RangeResponse) -> Vec<u8> {
        let mut out = Vec::new();
        for kv in &r.kvs {
            self.kv(&mut out, kv);
        }
        out
    }

    pub fn del(&self, r: &DeleteRangeResponse) -> Vec<u8> {
        let mut out = format!("{}\n", r.deleted).into_bytes();
        for kv in &r.prev_kvs {
            self.kv(&mut out, kv);
        }
        out
    }

    pub fn txn(&self, r: &TxnResponse) -> Vec<u8> {
        let mut out = if r.succeeded {
            b"SUCCESS\n".to_vec()
        } else {
            b"FAILURE\n".to_vec()
        };
        for op in &r.responses {
            out.push(b'\n');
            match &op.response {
                Some(Response::ResponseRange(r)) => out.extend(self.get(r)),
                Some(Response::ResponsePut(r)) => out.extend(self.put(r)),
                Some(Response::ResponseDeleteRange(r)) => out.extend(self.del(r)),
                // etcdctl cannot send a nested transaction, so it never sees one back.
                Some(Response::ResponseTxn(r)) => out.extend(self.txn(r)),
                None => out.extend_from_slice(b"unexpected response {Response:<nil>}\n"),
            }
        }
        out
    }

    pub fn watch(&self, r: &WatchResponse) -> Vec<u8> {
        let mut out = Vec::new();
        for ev in &r.events {
            out.extend_from_slice(event_type_name(ev.r#type).as_bytes());
            out.push(b'\n');
            if let Some(prev) = &ev.prev_kv {
                self.kv(&mut out, prev);
            }
            self.kv(&mut out, ev.kv.as_ref().unwrap_or(&KeyValue::default()));
        }
        out
    }
}

/// The name Go prints for an `mvccpb.Event_EventType`.
pub(super) fn event_type_name(t: i32) -> String {
    match t {
        0 => "PUT".into(),
        1 => "DELETE".into(),
        other => other.to_string(),
    }
}

/// The name Go prints for an `etcdserverpb.AlarmType`.
pub(super) fn alarm_type_name(t: i32) -> String {
    match AlarmType::try_from(t) {
        Ok(a) => a.as_str_name().to_string(),
        Err(_) => t.to_string(),
    }
}

/// An `AlarmMember` as Go's `%+v` prints it (gogo's compact text format, with its
/// trailing space): `memberID:10276657743932975437 alarm:NOSPACE `.
pub(super) fn alarm_member_text(member_id: u64, alarm: i32) -> String {
    let mut s = String::new();
    if member_id != 0 {
        let _ = write!(s, "memberID:{member_id} ");
    }
    if alarm != 0 {
        let _ = write!(s, "alarm:{} ", alarm_type_name(alarm));
    }
    s
}

pub(super) fn lease_grant(r: &LeaseGrantResponse) -> String {
    format!("lease {:016x} granted with TTL({}s)\n", r.id, r.ttl)
}

pub(super) fn lease_revoke(id: i64) -> String {
    format!("lease {id:016x} revoked\n")
}

pub(super) fn lease_keep_alive(r: &LeaseKeepAliveResponse) -> String {
    format!("lease {:016x} keepalived with TTL({})\n", r.id, r.ttl)
}

pub(super) fn lease_time_to_live(r: &LeaseTimeToLiveResponse, keys: bool) -> String {
    if r.granted_ttl == 0 && r.ttl == -1 {
        return format!("lease {:016x} already expired\n", r.id);
    }
    let mut s = format!(
        "lease {:016x} granted with TTL({}s), remaining({}s)",
        r.id, r.granted_ttl, r.ttl
    );
    if keys {
        let names: Vec<String> = r
            .keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        let _ = write!(s, ", attached keys({})", crate::go::string_list(&names));
    }
    s.push('\n');
    s
}

pub(super) fn lease_list(r: &LeaseLeasesResponse) -> String {
    let mut s = format!("found {} leases\n", r.leases.len());
    for l in &r.leases {
        let _ = writeln!(s, "{:016x}", l.id);
    }
    s
}

pub(super) fn member_list(r: &MemberListResponse) -> String {
    rows_text(&member_rows(&r.members))
}

pub(super) fn member_add(r: &MemberAddResponse) -> String {
    let id = r.member.as_ref().map_or(0, |m| m.id);
    let cluster = r.header.as_ref().map_or(0, |h| h.cluster_id);
    format!("Member {id:16x} added to cluster {cluster:16x}\n")
}

/// `Member <id> removed from|updated in|promoted in cluster <cluster>`.
pub(super) fn member_changed(id: u64, what: &str, header: Option<&ResponseHeader>) -> String {
    let cluster = header.map_or(0, |h| h.cluster_id);
    format!("Member {id:16x} {what} cluster {cluster:16x}\n")
}

pub(super) fn endpoint_status(list: &[EpStatus]) -> String {
    rows_text(&endpoint_status_rows(list))
}

/// `ENDPOINT, HASH` lines.
pub(super) fn endpoint_hashkv(list: &[EpHashKv]) -> String {
    list.iter()
        .map(|h| format!("{}, {}\n", h.endpoint, h.resp.hash))
        .collect()
}

pub(super) fn endpoint_health(list: &[EpHealth]) -> String {
    let mut s = String::new();
    for h in list {
        if h.error.is_empty() {
            let _ = writeln!(
                s,
                "{} is healthy: successfully committed proposal: took = {}",
                h.endpoint, h.took
            );
        } else {
            let _ = writeln!(
                s,
                "{} is unhealthy: failed to commit proposal: {}",
                h.endpoint, h.error
            );
        }
    }
    s
}

pub(super) fn alarm(r: &AlarmResponse) -> String {
    let mut s = String::new();
    for a in &r.alarms {
        s.push_str(&alarm_member_text(a.member_id, a.alarm));
        s.push('\n');
    }
    s
}

fn rows_text(rows: &[Vec<String>]) -> String {
    let mut s = String::new();
    for row in rows {
        s.push_str(&row.join(", "));
        s.push('\n');
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::{Format, Printer};
    use kvstore_proto::etcdserverpb::{Member, ResponseOp};
    use kvstore_proto::mvccpb::Event;

    fn kv(key: &str, value: &str) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: value.into(),
            create_revision: 2,
            mod_revision: 3,
            version: 1,
            lease: 0,
        }
    }

    fn simple() -> Printer {
        Printer::new(Format::Simple, false)
    }

    #[test]
    fn put_prints_ok_and_previous_pair() {
        let r = PutResponse {
            header: None,
            prev_kv: Some(kv("foo", "bar")),
        };
        assert_eq!(simple().put(&r).unwrap().stdout_str(), "OK\nfoo\nbar\n");
    }

    #[test]
    fn get_prints_keys_and_values_or_hex_or_values_only() {
        let r = RangeResponse {
            kvs: vec![kv("a", "1"), kv("b", "")],
            count: 2,
            ..Default::default()
        };
        assert_eq!(simple().get(&r).unwrap().stdout_str(), "a\n1\nb\n\n");
        assert_eq!(
            simple().values_only().get(&r).unwrap().stdout_str(),
            "1\n\n"
        );
        let hex = Printer::new(Format::Simple, true);
        assert_eq!(hex.get(&r).unwrap().stdout_str(), "\\x61\n\\x31\n\\x62\n\n");
    }

    #[test]
    fn del_prints_count_then_previous_pairs() {
        let r = DeleteRangeResponse {
            header: None,
            deleted: 1,
            prev_kvs: vec![kv("k", "v")],
        };
        assert_eq!(simple().del(&r).unwrap().stdout_str(), "1\nk\nv\n");
    }

    #[test]
    fn txn_prints_outcome_and_each_response_after_a_blank_line() {
        let r = TxnResponse {
            header: None,
            succeeded: true,
            responses: vec![
                ResponseOp {
                    response: Some(Response::ResponsePut(PutResponse::default())),
                },
                ResponseOp {
                    response: Some(Response::ResponseRange(RangeResponse {
                        kvs: vec![kv("t1", "v2")],
                        ..Default::default()
                    })),
                },
                ResponseOp {
                    response: Some(Response::ResponseDeleteRange(DeleteRangeResponse::default())),
                },
            ],
        };
        assert_eq!(
            simple().txn(&r).unwrap().stdout_str(),
            "SUCCESS\n\nOK\n\nt1\nv2\n\n0\n"
        );
        let failed = TxnResponse {
            succeeded: false,
            ..Default::default()
        };
        assert_eq!(simple().txn(&failed).unwrap().stdout_str(), "FAILURE\n");
    }

    #[test]
    fn watch_prints_type_previous_pair_and_pair() {
        let r = WatchResponse {
            events: vec![
                Event {
                    r#type: 0,
                    kv: Some(kv("w", "2")),
                    prev_kv: Some(kv("w", "1")),
                },
                Event {
                    r#type: 1,
                    kv: Some(KeyValue {
                        key: "w".into(),
                        ..Default::default()
                    }),
                    prev_kv: None,
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            simple().watch(&r).unwrap().stdout_str(),
            "PUT\nw\n1\nw\n2\nDELETE\nw\n\n"
        );
    }

    #[test]
    fn lease_lines_match_etcdctl() {
        let g = LeaseGrantResponse {
            id: 0x694d5765fc71500b,
            ttl: 10,
            ..Default::default()
        };
        assert_eq!(
            lease_grant(&g),
            "lease 694d5765fc71500b granted with TTL(10s)\n"
        );
        assert_eq!(lease_revoke(0x123), "lease 0000000000000123 revoked\n");
        let ttl = LeaseTimeToLiveResponse {
            id: 0x10,
            ttl: 59,
            granted_ttl: 60,
            keys: vec![b"lk2".to_vec(), b"lk".to_vec()],
            header: None,
        };
        assert_eq!(
            lease_time_to_live(&ttl, true),
            "lease 0000000000000010 granted with TTL(60s), remaining(59s), attached keys([lk2 lk])\n"
        );
        let expired = LeaseTimeToLiveResponse {
            id: 0x10,
            ttl: -1,
            ..Default::default()
        };
        assert_eq!(
            lease_time_to_live(&expired, false),
            "lease 0000000000000010 already expired\n"
        );
    }

    #[test]
    fn member_list_rows_are_comma_separated() {
        let r = MemberListResponse {
            header: None,
            members: vec![
                Member {
                    id: 0x8e9e05c52164694d,
                    name: "default".into(),
                    peer_ur_ls: vec!["http://localhost:2380".into()],
                    client_ur_ls: vec!["http://localhost:2379".into()],
                    is_learner: false,
                },
                Member {
                    id: 0x5d4f,
                    peer_ur_ls: vec!["http://a:1".into(), "http://b:2".into()],
                    is_learner: true,
                    ..Default::default()
                },
            ],
        };
        assert_eq!(
            member_list(&r),
            "8e9e05c52164694d, started, default, http://localhost:2380, http://localhost:2379, false\n\
             5d4f, unstarted, , http://a:1,http://b:2, , true\n"
        );
    }

    #[test]
    fn member_changes_pad_ids_to_sixteen_columns() {
        let h = ResponseHeader {
            cluster_id: 0x48276a8f75b6a87,
            ..Default::default()
        };
        assert_eq!(
            member_changed(0x5d4fcdda10591db7, "removed from", Some(&h)),
            "Member 5d4fcdda10591db7 removed from cluster  48276a8f75b6a87\n"
        );
    }

    #[test]
    fn alarm_member_uses_gogo_compact_text() {
        assert_eq!(
            alarm_member_text(3704289084508602062, 1),
            "memberID:3704289084508602062 alarm:NOSPACE "
        );
    }
}
