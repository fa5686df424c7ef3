//! Linearizability of the register history: a Wing–Gong–Lowe search with memoisation (as
//! Porcupine does it), one key at a time.
//!
//! Each key is a register starting absent. Acknowledged reads, writes and compare-and-sets
//! must all take effect at one instant between their invocation and completion. Operations
//! with an unknown outcome (`Info`) may take effect at any time after their invocation, or
//! never; those whose value nobody ever observed are left out (leaving them out is always a
//! valid choice, and each one doubles the search). Failed reads, writes and compare-and-sets
//! are left out too (a failed compare observes only "not this value", which would keep
//! unobserved unknown writes relevant).

use std::collections::{BTreeMap, HashSet};

use super::Verdict;
use crate::history::{ops, Call, Entry, Op, Status};

/// Most search states explored per key before giving up ("unknown", reported as a problem).
const MAX_STATES: usize = 1_000_000;

/// What one operation does to the register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Effect {
    /// Observed this value.
    Read(Option<u64>),
    /// Wrote this value.
    Write(u64),
    /// Wrote `to` if the value was `from`.
    Cas(u64, u64),
}

impl Effect {
    /// The state after the op, or None if the op cannot happen in `state`.
    fn step(self, state: Option<u64>) -> Option<Option<u64>> {
        match self {
            Effect::Read(v) => (v == state).then_some(state),
            Effect::Write(v) => Some(Some(v)),
            Effect::Cas(from, to) => (state == Some(from)).then_some(Some(to)),
        }
    }
}

/// One operation of one key, ready for the search.
#[derive(Debug, Clone)]
struct Event {
    start: u64,
    /// `u64::MAX` for unknown outcomes.
    end: u64,
    effect: Effect,
    /// Unknown outcome: may be left out.
    optional: bool,
}

fn event(op: &Op) -> Option<(String, Event)> {
    let optional = op.status == Status::Info;
    let (key, effect) = match (&op.call, op.status) {
        (Call::Read { key, value }, Status::Ok) => (key, Effect::Read(*value)),
        (Call::Write { key, value }, Status::Ok | Status::Info) => (key, Effect::Write(*value)),
        (Call::Cas { key, from, to }, Status::Ok | Status::Info) => (key, Effect::Cas(*from, *to)),
        _ => return None,
    };
    let end = if optional { u64::MAX } else { op.end };
    Some((
        key.clone(),
        Event {
            start: op.start,
            end,
            effect,
            optional,
        },
    ))
}

/// The outcome of the search for one key.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyResult {
    Linearizable,
    /// No order exists; the message shows where the search got stuck.
    Violation(String),
    /// Too many states to decide.
    Unknown,
}

/// Leaves out unknown writes whose value no read or compare ever observed.
fn prune(events: Vec<Event>) -> Vec<Event> {
    let observed: std::collections::HashSet<u64> = events
        .iter()
        .filter_map(|e| match e.effect {
            Effect::Read(v) => v,
            Effect::Cas(from, _) => Some(from),
            Effect::Write(_) => None,
        })
        .collect();
    events
        .into_iter()
        .filter(|e| match e.effect {
            Effect::Write(v) | Effect::Cas(_, v) if e.optional => observed.contains(&v),
            _ => true,
        })
        .collect()
}

/// Searches for a linearization of one key's events.
fn search(events: Vec<Event>) -> KeyResult {
    let mut events = prune(events);
    events.sort_by_key(|e| (e.start, e.end));
    let n = events.len();
    let words = n.div_ceil(64);
    let required: usize = events.iter().filter(|e| !e.optional).count();
    let mut visited: HashSet<(Vec<u64>, Option<u64>)> = HashSet::new();
    let mut stack: Vec<(Vec<u64>, Option<u64>, usize)> = vec![(vec![0; words], None, 0)];
    let mut deepest = (0usize, Vec::new(), None);
    while let Some((done, state, linearized_required)) = stack.pop() {
        if linearized_required == required {
            return KeyResult::Linearizable;
        }
        if visited.len() > MAX_STATES {
            return KeyResult::Unknown;
        }
        if linearized_required >= deepest.0 {
            deepest = (linearized_required, done.clone(), state);
        }
        let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
        // An op can go next only if it was invoked before every pending op completed.
        let min_end = (0..n)
            .filter(|&i| !is_done(i))
            .map(|i| events[i].end)
            .min()
            .unwrap_or(u64::MAX);
        for i in 0..n {
            if is_done(i) {
                continue;
            }
            let e = &events[i];
            if e.start > min_end {
                break;
            }
            let Some(next) = e.effect.step(state) else {
                continue;
            };
            let mut nd = done.clone();
            nd[i / 64] |= 1 << (i % 64);
            if visited.insert((nd.clone(), next)) {
                let req = linearized_required + usize::from(!e.optional);
                stack.push((nd, next, req));
            }
        }
    }
    let (count, done, state) = deepest;
    let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    let stuck: Vec<String> = (0..n)
        .filter(|&i| !is_done(i) && !events[i].optional)
        .take(3)
        .map(|i| {
            let e = &events[i];
            format!(
                "{:?} [{:.3}s, {:.3}s]",
                e.effect,
                secs(e.start),
                secs(e.end)
            )
        })
        .collect();
    KeyResult::Violation(format!(
        "no linearization: {count} of {required} acknowledged ops ordered; then the value is \
         {state:?} but none of the next ops fits: {}",
        stuck.join("; ")
    ))
}

fn secs(ns: u64) -> f64 {
    if ns == u64::MAX {
        f64::INFINITY
    } else {
        ns as f64 / 1e9
    }
}

/// Checks every register key in the history.
pub fn check(entries: &[Entry]) -> Verdict {
    let mut per_key: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    let mut count = 0;
    for (key, e) in ops(entries).filter_map(event) {
        count += 1;
        per_key.entry(key).or_default().push(e);
    }
    let mut problems = Vec::new();
    for (key, events) in &per_key {
        match search(events.clone()) {
            KeyResult::Linearizable => {}
            KeyResult::Violation(why) => problems.push(format!("key {key}: {why}")),
            KeyResult::Unknown => {
                problems.push(format!("key {key}: undecided after {MAX_STATES} states"))
            }
        }
    }
    Verdict::new(
        "linearizable-register",
        format!("{count} ops on {} keys", per_key.len()),
        problems,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(start: u64, end: u64, effect: Effect) -> Event {
        Event {
            start,
            end,
            effect,
            optional: false,
        }
    }

    fn info(start: u64, effect: Effect) -> Event {
        Event {
            start,
            end: u64::MAX,
            effect,
            optional: true,
        }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = vec![
            ev(0, 1, Effect::Write(1)),
            ev(2, 3, Effect::Read(Some(1))),
            ev(4, 5, Effect::Cas(1, 2)),
            ev(6, 7, Effect::Read(Some(2))),
        ];
        assert_eq!(search(h), KeyResult::Linearizable);
    }

    #[test]
    fn stale_read_after_acknowledged_write_is_a_violation() {
        let h = vec![
            ev(0, 1, Effect::Write(1)),
            ev(2, 3, Effect::Write(2)),
            ev(4, 5, Effect::Read(Some(1))),
        ];
        assert!(matches!(search(h), KeyResult::Violation(_)));
    }

    #[test]
    fn concurrent_ops_may_be_reordered() {
        let h = vec![
            ev(0, 10, Effect::Write(1)),
            ev(1, 2, Effect::Read(Some(1))),
            ev(3, 4, Effect::Read(None)),
        ];
        // The read of None completes after a read of 1 that ended earlier: impossible.
        assert!(matches!(search(h), KeyResult::Violation(_)));
        let h = vec![
            ev(0, 10, Effect::Write(1)),
            ev(1, 2, Effect::Read(None)),
            ev(3, 4, Effect::Read(Some(1))),
        ];
        assert_eq!(search(h), KeyResult::Linearizable);
    }

    #[test]
    fn unknown_write_may_take_effect_late_or_never() {
        let late = vec![
            info(0, Effect::Write(7)),
            ev(5, 6, Effect::Read(None)),
            ev(7, 8, Effect::Read(Some(7))),
        ];
        assert_eq!(search(late), KeyResult::Linearizable);
        let never = vec![info(0, Effect::Write(7)), ev(5, 6, Effect::Read(None))];
        assert_eq!(search(never), KeyResult::Linearizable);
        // But it cannot take effect before it was invoked.
        let early = vec![ev(0, 1, Effect::Read(Some(7))), info(2, Effect::Write(7))];
        assert!(matches!(search(early), KeyResult::Violation(_)));
    }

    #[test]
    fn many_unobserved_unknown_writes_stay_cheap() {
        let mut h: Vec<Event> = (0..200).map(|i| info(i, Effect::Write(1000 + i))).collect();
        h.push(ev(300, 301, Effect::Write(1)));
        h.push(ev(302, 303, Effect::Read(Some(1))));
        assert_eq!(search(h), KeyResult::Linearizable);
    }

    #[test]
    fn lost_acknowledged_write_is_a_violation() {
        let h = vec![
            ev(0, 1, Effect::Write(1)),
            ev(2, 3, Effect::Write(2)),
            ev(4, 5, Effect::Read(Some(1))),
            ev(6, 7, Effect::Read(Some(1))),
        ];
        assert!(matches!(search(h), KeyResult::Violation(_)));
    }
}
