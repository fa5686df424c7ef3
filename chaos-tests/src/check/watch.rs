//! The watch checker: etcd's watch guarantees, from what the watchers received.
//!
//! The truth per revision is the union of what every watcher saw at that revision plus the
//! writer's acknowledged writes (with the revision the server answered). Then, per watcher:
//! - ordered: revisions never go down, and each revision's events arrive in one response
//!   (atomic: a transaction's events are never split);
//! - unique: no (revision, key) is delivered twice, across resumed sessions too;
//! - reliable and resumable: a session that started at S and got as far as R (its last event
//!   or progress notification) received every revision of the truth in [S, R], with exactly
//!   the truth's events (so every watcher agrees, and no acknowledged write is missed);
//! - prev_kv: a put's or delete's previous value is the one the watcher saw last for that key;
//! - progress notifications are never ahead: after a notification at R no event at or below R
//!   arrives.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use super::Verdict;
use crate::history::{ops, Call, Entry, Status, WatchEvent, WatchRecord};

/// (key, kind, value): what an event says, for comparing watchers.
type Fact = (String, String, Option<u64>);

fn fact(e: &WatchEvent) -> Fact {
    (e.key.clone(), e.kind.clone(), e.value)
}

/// One session as received: (start revision, responses in order, progress revisions with
/// their position in the response sequence).
#[derive(Default)]
struct Session {
    start: i64,
    /// Each item: Some(events) for an event response, None plus a revision for progress.
    items: Vec<Item>,
}

enum Item {
    Events(Vec<WatchEvent>),
    Progress(i64),
}

/// Checks the watch records of a history.
pub fn check(entries: &[Entry]) -> Verdict {
    let mut truth: BTreeMap<i64, BTreeSet<Fact>> = BTreeMap::new();
    for op in ops(entries).filter(|o| o.status == Status::Ok) {
        match &op.call {
            Call::WatchPut {
                keys,
                value,
                revision: Some(r),
            } => {
                for k in keys {
                    truth
                        .entry(*r)
                        .or_default()
                        .insert((k.clone(), "put".into(), Some(*value)));
                }
            }
            Call::WatchDelete {
                key,
                revision: Some(r),
            } => {
                truth
                    .entry(*r)
                    .or_default()
                    .insert((key.clone(), "delete".into(), None));
            }
            _ => {}
        }
    }
    // Sessions per watcher, in order.
    let mut watchers: BTreeMap<u64, BTreeMap<u64, Session>> = BTreeMap::new();
    let mut responses = 0;
    for e in entries {
        let Entry::Watch(w) = e else { continue };
        match w {
            WatchRecord::Open {
                watcher,
                session,
                start_revision,
                ..
            } => {
                watchers.entry(*watcher).or_default().insert(
                    *session,
                    Session {
                        start: *start_revision,
                        items: Vec::new(),
                    },
                );
            }
            WatchRecord::Events {
                watcher,
                session,
                events,
                ..
            } => {
                responses += 1;
                for e in events {
                    truth.entry(e.mod_revision).or_default().insert(fact(e));
                }
                if let Some(s) = watchers.get_mut(watcher).and_then(|w| w.get_mut(session)) {
                    s.items.push(Item::Events(events.clone()));
                }
            }
            WatchRecord::Progress {
                watcher,
                session,
                header_revision,
                ..
            } => {
                if let Some(s) = watchers.get_mut(watcher).and_then(|w| w.get_mut(session)) {
                    s.items.push(Item::Progress(*header_revision));
                }
            }
            WatchRecord::Close { .. } => {}
        }
    }
    let mut problems = Vec::new();
    for (w, sessions) in &watchers {
        check_watcher(*w, sessions, &truth, &mut problems);
    }
    Verdict::new(
        "watch",
        format!(
            "{} watchers, {} sessions, {responses} event responses, {} revisions",
            watchers.len(),
            watchers.values().map(BTreeMap::len).sum::<usize>(),
            truth.len()
        ),
        problems,
    )
}

fn check_watcher(
    w: u64,
    sessions: &BTreeMap<u64, Session>,
    truth: &BTreeMap<i64, BTreeSet<Fact>>,
    problems: &mut Vec<String>,
) {
    let mut delivered: HashSet<(i64, String)> = HashSet::new();
    let mut last_value: HashMap<String, (i64, Option<u64>)> = HashMap::new();
    let mut watcher_reached = 0i64;
    for (sid, s) in sessions {
        let mut seen: BTreeMap<i64, BTreeSet<Fact>> = BTreeMap::new();
        let mut last_rev = 0i64;
        let mut progress = 0i64;
        let mut reached = s.start - 1;
        // A session that does not start where the last left off (compaction) breaks prev_kv
        // continuity.
        if s.start > watcher_reached + 1 {
            last_value.clear();
        }
        for item in &s.items {
            match item {
                Item::Progress(r) => {
                    progress = progress.max(*r);
                    reached = reached.max(*r);
                }
                Item::Events(events) => {
                    let first = events.first().map(|e| e.mod_revision).unwrap_or(0);
                    if first <= last_rev {
                        problems.push(format!(
                            "watcher {w} session {sid}: revision {first} after {last_rev} \
                             (out of order, or a transaction split across responses)"
                        ));
                    }
                    if first < s.start {
                        problems.push(format!(
                            "watcher {w} session {sid}: event at {first} before its start revision {}",
                            s.start
                        ));
                    }
                    let mut prev = first;
                    for e in events {
                        if e.mod_revision < prev {
                            problems.push(format!(
                                "watcher {w} session {sid}: revision {} after {prev} in one response",
                                e.mod_revision
                            ));
                        }
                        prev = e.mod_revision;
                        if e.mod_revision <= progress {
                            problems.push(format!(
                                "watcher {w} session {sid}: event at {} after a progress \
                                 notification at {progress} (notification ahead)",
                                e.mod_revision
                            ));
                        }
                        if !delivered.insert((e.mod_revision, e.key.clone())) {
                            problems.push(format!(
                                "watcher {w}: duplicate event {} at revision {}",
                                e.key, e.mod_revision
                            ));
                        }
                        if let Some((at, value)) = last_value.get(&e.key) {
                            if e.prev_value != *value {
                                problems.push(format!(
                                    "watcher {w}: prev_kv of {} at {} is {:?}, but the value \
                                     after revision {at} was {value:?}",
                                    e.key, e.mod_revision, e.prev_value
                                ));
                            }
                        }
                        last_value.insert(e.key.clone(), (e.mod_revision, e.value));
                        seen.entry(e.mod_revision).or_default().insert(fact(e));
                    }
                    last_rev = last_rev.max(prev);
                    reached = reached.max(prev);
                }
            }
        }
        watcher_reached = watcher_reached.max(reached);
        if reached < s.start {
            continue;
        }
        for (rev, facts) in truth.range(s.start..=reached) {
            match seen.get(rev) {
                None => problems.push(format!(
                    "watcher {w} session {sid}: missed revision {rev} ({facts:?}) although it \
                     got as far as {reached} (gap)"
                )),
                Some(got) if got != facts => problems.push(format!(
                    "watcher {w} session {sid}: revision {rev} delivered as {got:?}, but it is {facts:?}"
                )),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(rev: i64, key: &str, value: u64, prev: Option<u64>) -> WatchEvent {
        WatchEvent {
            kind: "put".into(),
            key: key.into(),
            value: Some(value),
            mod_revision: rev,
            create_revision: rev,
            prev_value: prev,
        }
    }
    fn open(s: u64, start: i64) -> Entry {
        Entry::Watch(WatchRecord::Open {
            watcher: 1,
            session: s,
            node: 0,
            start_revision: start,
            at: 0,
        })
    }
    fn events(s: u64, events: Vec<WatchEvent>) -> Entry {
        Entry::Watch(WatchRecord::Events {
            watcher: 1,
            session: s,
            header_revision: 0,
            events,
            at: 0,
        })
    }
    fn progress(s: u64, rev: i64) -> Entry {
        Entry::Watch(WatchRecord::Progress {
            watcher: 1,
            session: s,
            header_revision: rev,
            at: 0,
        })
    }
    fn put_ack(rev: i64, key: &str, value: u64) -> Entry {
        Entry::Op(crate::history::Op {
            process: 0,
            node: 0,
            call: Call::WatchPut {
                keys: vec![key.into()],
                value,
                revision: Some(rev),
            },
            status: Status::Ok,
            start: 0,
            end: 1,
            error: None,
        })
    }
    fn problems(h: &[Entry]) -> Vec<String> {
        check(h).problems
    }

    #[test]
    fn resumed_watch_without_gaps_is_valid() {
        let h = vec![
            put_ack(2, "w/a", 1),
            put_ack(3, "w/a", 2),
            open(1, 1),
            events(1, vec![ev(2, "w/a", 1, None)]),
            open(2, 3),
            events(2, vec![ev(3, "w/a", 2, Some(1))]),
            progress(2, 5),
        ];
        assert!(problems(&h).is_empty(), "{:?}", problems(&h));
    }

    #[test]
    fn missing_acknowledged_write_is_a_gap() {
        let h = vec![
            put_ack(2, "w/a", 1),
            put_ack(3, "w/b", 2),
            open(1, 1),
            events(1, vec![ev(2, "w/a", 1, None)]),
            progress(1, 4),
        ];
        assert!(
            problems(&h).iter().any(|p| p.contains("gap")),
            "{:?}",
            problems(&h)
        );
    }

    #[test]
    fn duplicates_disorder_split_txn_and_early_progress_are_found() {
        let h = vec![
            open(1, 1),
            events(1, vec![ev(3, "w/a", 1, None)]),
            events(1, vec![ev(3, "w/b", 1, None)]),
            progress(1, 5),
            events(1, vec![ev(4, "w/a", 2, Some(1))]),
            open(2, 1),
            events(2, vec![ev(3, "w/a", 1, None)]),
        ];
        let p = problems(&h);
        assert!(p.iter().any(|p| p.contains("split")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("notification ahead")), "{p:?}");
        assert!(p.iter().any(|p| p.contains("duplicate")), "{p:?}");
    }

    #[test]
    fn wrong_prev_kv_is_found() {
        let h = vec![
            open(1, 1),
            events(1, vec![ev(2, "w/a", 1, None)]),
            events(1, vec![ev(3, "w/a", 2, Some(7))]),
        ];
        assert!(
            problems(&h).iter().any(|p| p.contains("prev_kv")),
            "{:?}",
            problems(&h)
        );
    }

    #[test]
    fn watchers_disagreeing_on_a_revision_is_found() {
        let h = vec![
            put_ack(2, "w/a", 1),
            open(1, 1),
            events(1, vec![ev(2, "w/a", 9, None)]),
        ];
        assert!(
            problems(&h).iter().any(|p| p.contains("delivered as")),
            "{:?}",
            problems(&h)
        );
    }
}
