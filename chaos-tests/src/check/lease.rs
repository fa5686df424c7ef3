//! The lease checker: a key put under a lease must be gone once the lease has expired, give or
//! take the TTL and a fixed bound for expiry ticks. A new leader extends every lease it
//! inherits (etcd's lessor does the same on promotion), and any fault may change the leader,
//! so the clock starts at the later of the lease's last refresh and the end of the last fault
//! window that overlaps the time the key was alive; in quiet periods the bound is strict.

use std::collections::HashMap;

use super::Verdict;
use crate::history::{ops, Call, Entry, Status};

/// Slack beyond expiry + TTL before a live key is a violation.
pub const BOUND_NS: u64 = 3_000_000_000;

/// Checks the lease workload's operations.
pub fn check(entries: &[Entry]) -> Verdict {
    // key -> (latest time the lease was known to be refreshed, ttl s).
    let mut refreshed: HashMap<&str, (u64, i64)> = HashMap::new();
    let mut problems = Vec::new();
    let mut reads = 0;
    let mut keys = 0;
    let faults: Vec<(u64, u64)> = entries
        .iter()
        .filter_map(|e| match e {
            Entry::Fault(f) => Some((f.start, f.end)),
            _ => None,
        })
        .collect();
    for op in ops(entries) {
        match (&op.call, op.status) {
            (Call::LeasePut { key, ttl, .. }, Status::Ok) => {
                keys += 1;
                refreshed.insert(key, (op.end, *ttl));
            }
            (Call::LeaseKeepAlive { key, ttl, .. }, status) => {
                // A keep-alive may take effect until the client gave up on it.
                if let Some(r) = refreshed.get_mut(key.as_str()) {
                    if status == Status::Ok || status == Status::Info {
                        r.0 = r.0.max(op.end);
                        r.1 = r.1.max(ttl.unwrap_or(r.1));
                    }
                }
            }
            (
                Call::LeaseRead {
                    key,
                    present: Some(true),
                },
                Status::Ok,
            ) => {
                reads += 1;
                if let Some(&(refresh, ttl)) = refreshed.get(key.as_str()) {
                    let at = faults
                        .iter()
                        .filter(|(start, end)| *start < op.start && *end > refresh)
                        .map(|(_, end)| *end)
                        .fold(refresh, u64::max);
                    let ttl_ns = ttl as u64 * 1_000_000_000;
                    let deadline = at + 2 * ttl_ns + BOUND_NS;
                    if op.start > deadline {
                        problems.push(format!(
                            "{key}: still present at {:.3}s, {:.3}s after its lease (ttl {ttl}s) \
                             expired at the latest (counting from the last refresh or fault)",
                            op.start as f64 / 1e9,
                            (op.start - at - ttl_ns) as f64 / 1e9
                        ));
                    }
                }
            }
            _ => {}
        }
    }
    Verdict::new(
        "lease",
        format!("{keys} leased keys, {reads} reads that found one"),
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn op(call: Call, start: u64, end: u64) -> Entry {
        Entry::Op(Op {
            process: 0,
            node: 0,
            call,
            status: Status::Ok,
            start,
            end,
            error: None,
        })
    }

    #[test]
    fn key_outliving_its_lease_is_found() {
        let s = 1_000_000_000;
        let put = Call::LeasePut {
            key: "l/1".into(),
            lease: 1,
            ttl: 2,
        };
        let read = |t| {
            op(
                Call::LeaseRead {
                    key: "l/1".into(),
                    present: Some(true),
                },
                t,
                t + 1,
            )
        };
        assert!(check(&[op(put.clone(), 0, s), read(4 * s)]).valid);
        assert!(!check(&[op(put.clone(), 0, s), read(9 * s)]).valid);
        // A fault (a possible leader change) restarts the clock.
        let fault = Entry::Fault(crate::history::FaultRecord {
            name: "kill".into(),
            detail: String::new(),
            start: 2 * s,
            end: 5 * s,
        });
        assert!(check(&[op(put.clone(), 0, s), fault.clone(), read(9 * s)]).valid);
        assert!(!check(&[op(put, 0, s), fault, read(13 * s)]).valid);
    }
}
