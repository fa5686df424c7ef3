//! The deadlines of the leases this member expires: an ordered set by deadline plus a map by
//! ID, both updated in place, so renewing a lease a million times still leaves one entry for
//! it (etcd's `LeaseExpiredNotifier`, an indexed heap, for the same reason).
//!
//! Pure bookkeeping: every operation takes `now`, nothing here reads a clock or proposes.

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// The run-time state of one lease on the primary lessor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseTimer {
    /// The TTL in seconds the lease was granted with; a renewal moves the deadline this far.
    pub ttl: i64,
    /// When the lease expires (or, once `revoking`, when its revocation is retried).
    pub deadline: Instant,
    /// The deadline passed and a revocation was proposed: renewals no longer revive it.
    pub revoking: bool,
    /// The stored record carries a remaining TTL (a checkpoint), which the next renewal must
    /// clear, or a restart would resume from the checkpoint instead of the renewal.
    pub checkpointed: bool,
}

/// What [`ExpiryQueue::renew`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The deadline moved to now + TTL.
    Renewed {
        /// The lease's TTL in seconds.
        ttl: i64,
        /// The stored record had a checkpointed remaining TTL, to be cleared.
        was_checkpointed: bool,
    },
    /// The lease expired (its revocation is pending): it cannot be renewed.
    Expired,
    /// No timer for this lease.
    Unknown,
}

/// Lease deadlines, ordered for expiry and indexed by ID for renewal.
///
/// Invariant: `by_deadline` holds exactly one `(timer.deadline, id)` per entry of `timers`,
/// so the memory used is proportional to the number of leases, whatever the renewal rate.
#[derive(Debug, Default)]
pub struct ExpiryQueue {
    /// Lease ID → its timer.
    timers: HashMap<i64, LeaseTimer>,
    /// `(deadline, lease ID)` for every timer, earliest first.
    by_deadline: BTreeSet<(Instant, i64)>,
}

impl ExpiryQueue {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of leases with a timer.
    pub fn len(&self) -> usize {
        self.timers.len()
    }

    /// Whether no lease has a timer.
    pub fn is_empty(&self) -> bool {
        self.timers.is_empty()
    }

    /// The timer of a lease.
    pub fn get(&self, id: i64) -> Option<&LeaseTimer> {
        self.timers.get(&id)
    }

    /// Whether a lease has a timer.
    pub fn contains(&self, id: i64) -> bool {
        self.timers.contains_key(&id)
    }

    /// Every lease ID with a timer, in no particular order.
    pub fn ids(&self) -> impl Iterator<Item = i64> + '_ {
        self.timers.keys().copied()
    }

    /// Sets a lease's timer, replacing any previous one.
    pub fn insert(&mut self, id: i64, timer: LeaseTimer) {
        if let Some(old) = self.timers.insert(id, timer) {
            self.by_deadline.remove(&(old.deadline, id));
        }
        self.by_deadline.insert((timer.deadline, id));
    }

    /// Forgets a lease's timer (revoked, or no longer this member's to expire).
    pub fn remove(&mut self, id: i64) -> Option<LeaseTimer> {
        let old = self.timers.remove(&id)?;
        self.by_deadline.remove(&(old.deadline, id));
        Some(old)
    }

    /// Forgets every timer.
    pub fn clear(&mut self) {
        self.timers.clear();
        self.by_deadline.clear();
    }

    /// Moves a lease's deadline to `deadline`, keeping the rest of its timer.
    fn reschedule(&mut self, id: i64, deadline: Instant) {
        if let Some(timer) = self.timers.get_mut(&id) {
            self.by_deadline.remove(&(timer.deadline, id));
            timer.deadline = deadline;
            self.by_deadline.insert((deadline, id));
        }
    }

    /// Marks whether a lease's stored record carries a checkpointed remaining TTL.
    pub fn set_checkpointed(&mut self, id: i64, checkpointed: bool) {
        if let Some(timer) = self.timers.get_mut(&id) {
            timer.checkpointed = checkpointed;
        }
    }

    /// Renews a lease: its deadline becomes `now` + its TTL (etcd's `Lease.refresh(0)`), and its
    /// checkpoint is considered cleared. A lease whose deadline has passed is not renewed.
    pub fn renew(&mut self, id: i64, now: Instant) -> Renewal {
        let Some(timer) = self.timers.get(&id).copied() else {
            return Renewal::Unknown;
        };
        if timer.revoking || timer.deadline <= now {
            return Renewal::Expired;
        }
        self.reschedule(id, now + secs(timer.ttl));
        self.set_checkpointed(id, false);
        Renewal::Renewed {
            ttl: timer.ttl,
            was_checkpointed: timer.checkpointed,
        }
    }

    /// Takes up to `limit` leases whose deadline is at or before `now`, earliest first, and
    /// marks them `revoking` with a new deadline `now + retry`: if their revocation does not
    /// go through (a lost leadership, a failed proposal), they come up again then, as with
    /// etcd's `expiredLeaseRetryInterval`.
    pub fn take_expired(&mut self, now: Instant, limit: usize, retry: Duration) -> Vec<i64> {
        let due: Vec<i64> = self
            .by_deadline
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .take(limit)
            .map(|(_, id)| *id)
            .collect();
        for &id in &due {
            self.reschedule(id, now + retry);
            if let Some(timer) = self.timers.get_mut(&id) {
                timer.revoking = true;
            }
        }
        due
    }

    /// The time left before a lease expires, in whole seconds truncated toward zero (negative
    /// once overdue), as etcd's `int64(lease.Remaining().Seconds())`.
    pub fn remaining_secs(&self, id: i64, now: Instant) -> Option<i64> {
        let timer = self.timers.get(&id)?;
        Some(signed_nanos(timer.deadline, now) / 1_000_000_000)
    }

    /// The remaining TTL to checkpoint for a lease: whole seconds rounded up (etcd's
    /// `math.Ceil`), at least 1, since a stored 0 means "no checkpoint: use the full TTL".
    pub fn checkpoint_secs(&self, id: i64, now: Instant) -> Option<i64> {
        let timer = self.timers.get(&id)?;
        let nanos = signed_nanos(timer.deadline, now);
        Some(nanos.div_euclid(1_000_000_000) + i64::from(nanos.rem_euclid(1_000_000_000) > 0))
            .map(|s| s.max(1))
    }

    /// Spreads out a pile-up of deadlines so that no more than `rate * 3 / 4` leases fall due
    /// in any second (etcd's `Promote`): after a leader change or a restart, every lease
    /// restarts its TTL at once, and those granted together would all be revoked together.
    /// A lease pushed back is pushed by at most what the pile-up in front of it needs.
    pub fn spread_pile_ups(&mut self, rate: usize) {
        if self.timers.len() < rate {
            return;
        }
        let target = (rate * 3 / 4).max(1);
        let order: Vec<(Instant, i64)> = self.by_deadline.iter().copied().collect();
        let Some(&(first, _)) = order.first() else {
            return;
        };
        let mut base = first;
        let mut next_window = base + Duration::from_secs(1);
        let mut expires = 0usize;
        for (deadline, id) in order {
            if deadline > next_window {
                base = deadline;
                next_window = base + Duration::from_secs(1);
                expires = 1;
                continue;
            }
            expires += 1;
            if expires <= target {
                continue;
            }
            let rate_delay = Duration::from_secs_f64(expires as f64 / target as f64);
            let delay = rate_delay.saturating_sub(deadline - base);
            next_window = base + delay;
            self.reschedule(id, deadline + delay);
        }
    }
}

/// `secs` seconds as a duration (negative TTLs, which a grant never keeps, count as zero).
pub fn secs(secs: i64) -> Duration {
    Duration::from_secs(u64::try_from(secs).unwrap_or(0))
}

/// `deadline - now` in nanoseconds, negative once the deadline has passed.
fn signed_nanos(deadline: Instant, now: Instant) -> i64 {
    let clamp = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
    if deadline >= now {
        clamp(deadline - now)
    } else {
        -clamp(now - deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timer(ttl: i64, deadline: Instant) -> LeaseTimer {
        LeaseTimer {
            ttl,
            deadline,
            revoking: false,
            checkpointed: false,
        }
    }

    fn assert_consistent(q: &ExpiryQueue) {
        assert_eq!(
            q.timers.len(),
            q.by_deadline.len(),
            "one deadline entry per lease"
        );
        for (id, t) in &q.timers {
            assert!(q.by_deadline.contains(&(t.deadline, *id)));
        }
    }

    #[test]
    fn expired_leases_come_out_earliest_first() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        q.insert(1, timer(10, now + secs(3)));
        q.insert(2, timer(10, now + secs(1)));
        q.insert(3, timer(10, now + secs(2)));
        q.insert(4, timer(10, now + secs(60)));
        let retry = Duration::from_secs(3);
        assert!(q.take_expired(now, 10, retry).is_empty());
        assert_eq!(q.take_expired(now + secs(5), 10, retry), vec![2, 3, 1]);
        assert_consistent(&q);
    }

    #[test]
    fn take_expired_respects_the_limit_and_retries_later() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        for id in 1..=5 {
            q.insert(id, timer(1, now + Duration::from_millis(id as u64)));
        }
        let later = now + secs(1);
        let retry = Duration::from_secs(3);
        assert_eq!(q.take_expired(later, 2, retry), vec![1, 2]);
        assert_eq!(q.take_expired(later, 10, retry), vec![3, 4, 5]);
        // All are now waiting for their revocation; none is due again before the retry.
        assert!(q.take_expired(later + secs(2), 10, retry).is_empty());
        assert_eq!(q.take_expired(later + secs(3), 10, retry).len(), 5);
        assert_consistent(&q);
    }

    #[test]
    fn renewing_moves_the_deadline_without_growing_the_queue() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        q.insert(7, timer(5, now + secs(5)));
        for i in 0..1000 {
            let at = now + Duration::from_millis(i);
            assert_eq!(
                q.renew(7, at),
                Renewal::Renewed {
                    ttl: 5,
                    was_checkpointed: false
                }
            );
        }
        assert_eq!(q.len(), 1);
        assert_eq!(q.by_deadline.len(), 1);
        assert_eq!(
            q.get(7).map(|t| t.deadline),
            Some(now + Duration::from_millis(999) + secs(5))
        );
        assert_consistent(&q);
    }

    #[test]
    fn renewing_an_unknown_or_expired_lease_does_nothing() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        assert_eq!(q.renew(1, now), Renewal::Unknown);
        q.insert(2, timer(5, now + secs(5)));
        assert_eq!(q.renew(2, now + secs(5)), Renewal::Expired);
        q.insert(3, timer(5, now + secs(1)));
        assert_eq!(q.take_expired(now + secs(2), 10, secs(3)), vec![3]);
        // Revoking, with its retry deadline in the future: still not renewable.
        assert_eq!(q.renew(3, now + secs(2)), Renewal::Expired);
        assert_eq!(q.len(), 2);
    }

    #[test]
    fn renewal_reports_and_clears_a_checkpoint() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        q.insert(
            1,
            LeaseTimer {
                checkpointed: true,
                ..timer(30, now + secs(10))
            },
        );
        assert_eq!(
            q.renew(1, now),
            Renewal::Renewed {
                ttl: 30,
                was_checkpointed: true
            }
        );
        assert_eq!(
            q.renew(1, now),
            Renewal::Renewed {
                ttl: 30,
                was_checkpointed: false
            }
        );
    }

    #[test]
    fn remaining_truncates_and_checkpoint_rounds_up() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        q.insert(1, timer(10, now + Duration::from_millis(9_400)));
        assert_eq!(q.remaining_secs(1, now), Some(9));
        assert_eq!(q.checkpoint_secs(1, now), Some(10));
        q.insert(2, timer(10, now + secs(4)));
        assert_eq!(q.remaining_secs(2, now), Some(4));
        assert_eq!(q.checkpoint_secs(2, now), Some(4));
        // Overdue: remaining goes negative as etcd's does; a checkpoint never records 0.
        assert_eq!(
            q.remaining_secs(2, now + Duration::from_millis(5_500)),
            Some(-1)
        );
        assert_eq!(q.checkpoint_secs(2, now + secs(6)), Some(1));
        assert_eq!(q.remaining_secs(3, now), None);
    }

    #[test]
    fn removing_and_replacing_keep_one_entry_per_lease() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        q.insert(1, timer(5, now + secs(5)));
        q.insert(1, timer(6, now + secs(6)));
        assert_eq!(q.len(), 1);
        assert_consistent(&q);
        assert_eq!(q.remove(1).map(|t| t.ttl), Some(6));
        assert!(q.remove(1).is_none());
        assert!(q.is_empty());
        assert_consistent(&q);
    }

    #[test]
    fn a_pile_up_is_spread_to_the_target_rate() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        // 40 leases all due at the same instant, with a rate of 20 per second: 15 per second.
        for id in 0..40 {
            q.insert(id, timer(10, now + secs(10)));
        }
        q.spread_pile_ups(20);
        assert_consistent(&q);
        let mut per_second: HashMap<u64, usize> = HashMap::new();
        for t in q.timers.values() {
            let offset = t.deadline - (now + secs(10));
            *per_second.entry(offset.as_secs()).or_default() += 1;
        }
        assert!(per_second.values().all(|&n| n <= 15), "{per_second:?}");
        let latest = q.timers.values().map(|t| t.deadline).max();
        assert!(
            latest <= Some(now + secs(13)),
            "pushed back no further than needed"
        );
    }

    #[test]
    fn few_leases_are_not_spread() {
        let now = Instant::now();
        let mut q = ExpiryQueue::new();
        for id in 0..10 {
            q.insert(id, timer(10, now + secs(10)));
        }
        q.spread_pile_ups(1000);
        assert!(q.timers.values().all(|t| t.deadline == now + secs(10)));
    }
}
