//! The kube checker: optimistic concurrency held (no two acknowledged conditional writes on a
//! key were conditioned on the same `mod_revision`, and every acknowledged write got a
//! revision of its own), and the reflector's cache equals a fresh list once caught up.

use std::collections::HashMap;

use super::Verdict;
use crate::history::{ops, Call, Entry, Status};

/// Checks the kube workload's operations.
pub fn check(entries: &[Entry]) -> Verdict {
    let mut problems = Vec::new();
    let mut guards: HashMap<(&str, i64), u64> = HashMap::new();
    let mut revisions: HashMap<i64, &str> = HashMap::new();
    let mut writes = 0;
    let mut caches = 0;
    for op in ops(entries).filter(|o| o.status == Status::Ok) {
        let (key, expect, revision) = match &op.call {
            Call::KubeCreate { key, revision, .. } => (key, None, revision),
            Call::KubeUpdate {
                key,
                expect,
                revision,
                ..
            }
            | Call::KubeDelete {
                key,
                expect,
                revision,
            } => (key, Some(*expect), revision),
            Call::KubeCache {
                revision,
                cache,
                list,
            } => {
                caches += 1;
                if cache != list {
                    let diff: Vec<String> = list
                        .iter()
                        .filter(|(k, v)| cache.get(*k) != Some(v))
                        .map(|(k, v)| format!("{k}: list {v:?}, cache {:?}", cache.get(k)))
                        .chain(
                            cache
                                .keys()
                                .filter(|k| !list.contains_key(*k))
                                .map(|k| format!("{k}: only in the cache")),
                        )
                        .collect();
                    problems.push(format!(
                        "reflector cache differs from a list at revision {revision}: {}",
                        diff.join("; ")
                    ));
                }
                continue;
            }
            _ => continue,
        };
        writes += 1;
        if let Some(expect) = expect {
            if let Some(other) = guards.insert((key, expect), op.start) {
                problems.push(format!(
                    "{key}: two acknowledged writes conditioned on mod_revision {expect} \
                     (invoked at {:.3}s and {:.3}s): a lost update",
                    other as f64 / 1e9,
                    op.start as f64 / 1e9
                ));
            }
            if revision.is_some_and(|r| r <= expect) {
                problems.push(format!(
                    "{key}: write after {expect} acknowledged at {revision:?}"
                ));
            }
        }
        if let Some(r) = revision {
            if let Some(k) = revisions.insert(*r, key) {
                problems.push(format!(
                    "revision {r} acknowledged for writes to {k} and {key}"
                ));
            }
        }
    }
    Verdict::new(
        "kube",
        format!("{writes} acknowledged conditional writes, {caches} reflector caches"),
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::Op;

    fn ok(call: Call) -> Entry {
        Entry::Op(Op {
            process: 0,
            node: 0,
            call,
            status: Status::Ok,
            start: 0,
            end: 1,
            error: None,
        })
    }

    #[test]
    fn two_updates_from_one_revision_are_a_lost_update() {
        let h = vec![
            ok(Call::KubeUpdate {
                key: "k/1".into(),
                expect: 5,
                value: 1,
                revision: Some(6),
            }),
            ok(Call::KubeUpdate {
                key: "k/1".into(),
                expect: 5,
                value: 2,
                revision: Some(7),
            }),
        ];
        assert!(check(&h).problems.iter().any(|p| p.contains("lost update")));
    }

    #[test]
    fn stale_reflector_cache_is_found() {
        let list = [("k/1".to_string(), (2, 7))].into_iter().collect();
        let cache = [("k/1".to_string(), (1, 6))].into_iter().collect();
        let h = vec![ok(Call::KubeCache {
            revision: 7,
            cache,
            list,
        })];
        assert!(!check(&h).valid);
    }
}
