//! The lessor: leases at run time on top of the lease records in the store (etcd's
//! `lease.lessor`).
//!
//! The store holds what must survive (ID, TTL, last checkpointed remaining TTL, attached keys);
//! the lessor holds what does not: each lease's deadline. Only the primary lessor, the one on
//! the Raft leader, keeps deadlines, renews leases and proposes the revocation of expired ones;
//! on any other member leases never expire by themselves ("forever", as in etcd). When a member
//! becomes leader it is promoted: every lease restarts from its stored record (the checkpointed
//! remaining TTL, else the full TTL) plus the election timeout, so a lease is never lost or cut
//! short by a leader change or a restart.
//!
//! Every state change still goes through the proposer: grants, revocations (requested or on
//! expiry) and checkpoints are commands; a keep-alive is not (it only moves a deadline here).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kvstore_proto::etcdserverpb::{LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse};
use parking_lot::{Mutex, RwLock};
use tokio::time::{Instant, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::expiry::{secs, ExpiryQueue, LeaseTimer, Renewal};
use crate::apply::{Applied, Command, Proposer};
use crate::config::Config;
use crate::mvcc::{self, KvStore, LeaseRecord};
use crate::Error;

/// The largest TTL a lease may be granted with, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL: i64 = 9_000_000_000;

/// How many expired leases may be revoked per second (etcd's `leaseRevokeRate`), so that a
/// mass expiry does not flood the log.
pub const LEASE_REVOKE_RATE: usize = 1000;

/// How often remaining TTLs of long leases are checkpointed (etcd's
/// `defaultLeaseCheckpointInterval`). Only leases with a longer TTL are checkpointed
/// periodically: a shorter one is renewed or gone before the checkpoint would matter.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(5 * 60);

/// The most checkpoints proposed in one command (etcd's `maxLeaseCheckpointBatchSize`).
pub const MAX_CHECKPOINT_BATCH: usize = 1000;

/// How long after proposing an expired lease's revocation it is proposed again if it is still
/// there (etcd's `defaultExpiredleaseRetryInterval`).
pub const EXPIRED_RETRY_INTERVAL: Duration = Duration::from_secs(3);

/// How often the expiry loop wakes up. Expiry is at most this late, plus the time to apply.
const TICK: Duration = Duration::from_millis(250);

/// Expired leases revoked per tick: [`LEASE_REVOKE_RATE`] spread over the ticks of a second.
const REVOKES_PER_TICK: usize = LEASE_REVOKE_RATE * TICK.as_millis() as usize / 1000;

/// Revocations in flight at once within a tick.
const REVOKE_CONCURRENCY: usize = 16;

/// How often the primary lessor compares its deadlines with the store's leases, to pick up
/// leases granted or revoked by commands it did not propose itself (under Raft: applied from
/// the log after being proposed through another member).
const RECONCILE_INTERVAL: Duration = Duration::from_secs(1);

/// The smallest TTL a lease is granted with, in seconds, as etcd derives it: one and a half
/// election timeouts counted in whole heartbeats, rounded up (2 with the default 100 ms
/// heartbeat and 1000 ms election timeout, which is what real etcd 3.4 grants for TTL 1).
pub fn min_ttl(heartbeat_ms: u64, election_ms: u64) -> i64 {
    let heartbeat_ms = heartbeat_ms.max(1);
    let election_ticks = election_ms / heartbeat_ms;
    let min_ms = (3 * election_ticks / 2) * heartbeat_ms;
    i64::try_from(min_ms.div_ceil(1000)).unwrap_or(i64::MAX)
}

/// What the lessor needs to know about the member it runs on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LessorOptions {
    /// This member's ID: the lessor is primary while the proposer names it leader.
    /// 0 until bound: an unbound lessor is never primary.
    pub member_id: u64,
    /// The smallest TTL granted, in seconds (see [`min_ttl`]).
    pub min_ttl: i64,
    /// Added to every deadline on promotion (etcd extends by the election timeout), so clients
    /// have time to reach the new leader before their leases run out.
    pub promote_extend: Duration,
    /// How often long leases are checkpointed.
    pub checkpoint_interval: Duration,
}

impl Default for LessorOptions {
    fn default() -> Self {
        Self {
            member_id: 0,
            min_ttl: min_ttl(100, 1000),
            promote_extend: Duration::from_secs(1),
            checkpoint_interval: CHECKPOINT_INTERVAL,
        }
    }
}

impl LessorOptions {
    /// The options of member `member_id` started with `config`.
    pub fn from_config(member_id: u64, config: &Config) -> Self {
        Self {
            member_id,
            min_ttl: min_ttl(config.heartbeat_interval, config.election_timeout),
            promote_extend: Duration::from_millis(config.election_timeout),
            checkpoint_interval: CHECKPOINT_INTERVAL,
        }
    }
}

/// A lease's state as reported by Lease.LeaseTimeToLive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimeToLive {
    /// Seconds left, truncated as etcd does.
    pub ttl: i64,
    /// The TTL the lease was granted with.
    pub granted_ttl: i64,
    /// The attached keys, sorted (empty unless asked for).
    pub keys: Vec<Vec<u8>>,
}

/// The lessor's run-time state. Lock order: `Lessor::state`, then the store's own locks; never
/// held across an `.await`.
#[derive(Debug)]
struct State {
    /// Whether this member is the leader, so that it keeps deadlines and expires leases.
    primary: bool,
    /// Deadlines of every lease, while primary; empty otherwise.
    queue: ExpiryQueue,
    /// When the deadlines were last compared with the store's leases.
    last_reconcile: Instant,
    /// When long leases were last checkpointed.
    last_checkpoint: Instant,
}

/// Keeps lease deadlines and revokes expired leases through the proposer.
pub struct Lessor {
    /// The store holding lease records and attached keys.
    store: Arc<KvStore>,
    /// Where grants, revocations and checkpoints are proposed; also says who leads.
    proposer: Arc<dyn Proposer>,
    /// What the lessor knows of its member; set by [`Lessor::bind`].
    options: RwLock<LessorOptions>,
    /// Deadlines and role.
    state: Mutex<State>,
}

impl Lessor {
    /// A lessor over the store's leases. It is not primary (expires nothing) until bound to
    /// its member with [`Lessor::bind`].
    pub fn new(store: Arc<KvStore>, proposer: Arc<dyn Proposer>) -> Arc<Self> {
        let now = Instant::now();
        Arc::new(Self {
            store,
            proposer,
            options: RwLock::new(LessorOptions::default()),
            state: Mutex::new(State {
                primary: false,
                queue: ExpiryQueue::new(),
                last_reconcile: now,
                last_checkpoint: now,
            }),
        })
    }

    /// Tells the lessor which member it runs on and how that member is configured, and
    /// promotes it at once if that member leads.
    pub fn bind(&self, options: LessorOptions) {
        *self.options.write() = options;
        self.update_role(Instant::now());
    }

    /// Whether this lessor currently keeps deadlines and expires leases.
    pub fn is_primary(&self) -> bool {
        self.state.lock().primary
    }

    /// Starts the expiry loop, which stops when `shutdown` is cancelled.
    pub fn spawn(self: &Arc<Self>, shutdown: CancellationToken) {
        let lessor = Arc::clone(self);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(TICK);
            ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = ticker.tick() => lessor.tick(Instant::now()).await,
                }
            }
            tracing::debug!("lessor stopped");
        });
    }

    /// One round of the expiry loop, as if run at `now`: follow leadership, reconcile with the
    /// store, revoke what expired, checkpoint when due.
    async fn tick(&self, now: Instant) {
        self.update_role(now);
        self.reconcile_if_due(now);
        self.revoke_expired(now).await;
        self.checkpoint_if_due(now).await;
    }

    /// Grants a lease (`id` 0: the server picks an unused positive one) with `ttl` seconds,
    /// raised to the minimum TTL.
    pub async fn grant(&self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, Error> {
        if ttl > MAX_LEASE_TTL {
            return Err(Error::LeaseTtlTooLarge);
        }
        let ttl = ttl.max(self.options.read().min_ttl);
        let id = if id == 0 { self.unused_id() } else { id };
        let command = Command::LeaseGrant(LeaseGrantRequest { ttl, id });
        let Applied::LeaseGrant(resp) = self.proposer.propose(command).await? else {
            return Err(mismatched());
        };
        let now = Instant::now();
        let mut state = self.state.lock();
        if state.primary && self.store.lease(id).is_some() {
            state.queue.insert(id, fresh_timer(ttl, now));
        }
        Ok(resp)
    }

    /// A random positive lease ID not in use (etcd draws from its request ID generator; any
    /// unused positive ID will do, a clash with a concurrent grant fails as "already exists").
    fn unused_id(&self) -> i64 {
        loop {
            let id = rand::random::<i64>() & i64::MAX;
            if id != 0 && self.store.lease(id).is_none() {
                return id;
            }
        }
    }

    /// Revokes a lease, deleting its keys in one transaction.
    pub async fn revoke(&self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        let result = self.proposer.propose(Command::LeaseRevoke(id)).await;
        match result {
            Ok(Applied::LeaseRevoke(resp)) => {
                self.state.lock().queue.remove(id);
                Ok(resp)
            }
            Ok(_) => Err(mismatched()),
            Err(err) => {
                if is_lease_not_found(&err) {
                    self.state.lock().queue.remove(id);
                }
                Err(err)
            }
        }
    }

    /// Renews a lease (a keep-alive): its deadline becomes now + its TTL. Returns the TTL, or
    /// `None` if the lease does not exist or has already expired. Fails with `NoLeader` on a
    /// member that is not the leader (renewals are the leader's alone, as in etcd).
    pub async fn renew(&self, id: i64) -> Result<Option<i64>, Error> {
        self.renew_at(id, Instant::now()).await
    }

    async fn renew_at(&self, id: i64, now: Instant) -> Result<Option<i64>, Error> {
        let (ttl, was_checkpointed) = {
            let mut state = self.state.lock();
            if !state.primary {
                return Err(Error::NoLeader);
            }
            match state.queue.renew(id, now) {
                Renewal::Renewed {
                    ttl,
                    was_checkpointed,
                } => (ttl, was_checkpointed),
                Renewal::Expired => return Ok(None),
                Renewal::Unknown => {
                    // Granted by a command this lessor did not propose and not reconciled yet.
                    let Some((record, _)) = self.store.lease(id) else {
                        return Ok(None);
                    };
                    state.queue.insert(id, fresh_timer(record.ttl, now));
                    (record.ttl, record.remaining_ttl > 0)
                }
            }
        };
        if was_checkpointed {
            // Clear the checkpoint, or a restart would resume from it instead of this renewal.
            // As in etcd, this costs at most one command per lease per checkpoint interval.
            self.propose_checkpoints(vec![(id, 0)]).await;
        }
        Ok(Some(ttl))
    }

    /// A lease's remaining and granted TTL, and its keys if `with_keys`; `None` if not granted.
    pub fn time_to_live(&self, id: i64, with_keys: bool) -> Option<TimeToLive> {
        let (record, keys) = self.store.lease(id)?;
        let now = Instant::now();
        let remaining = {
            let state = self.state.lock();
            match state.queue.get(id) {
                Some(timer) if timer.revoking => Some(0),
                Some(_) => state.queue.remaining_secs(id, now),
                None => None,
            }
        };
        Some(TimeToLive {
            ttl: remaining.unwrap_or_else(|| stored_remaining(&record)),
            granted_ttl: record.ttl,
            keys: if with_keys { keys } else { Vec::new() },
        })
    }

    /// Every granted lease's ID.
    pub fn leases(&self) -> Vec<i64> {
        self.store.leases().iter().map(|r| r.id).collect()
    }

    /// Records every lease's remaining TTL (on shutdown), so a restart resumes them.
    pub async fn checkpoint_all(&self) {
        let checkpoints = self.due_checkpoints(Instant::now(), |_| true);
        let n = checkpoints.len();
        self.propose_checkpoints(checkpoints).await;
        tracing::debug!(leases = n, "checkpointed lease TTLs");
    }

    /// Checkpoints for the leases `select`ed by their timer: the remaining TTL rounded up, or 0
    /// (clearing an old checkpoint) once a lease has as long as its full TTL left.
    fn due_checkpoints(
        &self,
        now: Instant,
        select: impl Fn(&LeaseTimer) -> bool,
    ) -> Vec<(i64, i64)> {
        let state = self.state.lock();
        if !state.primary {
            return Vec::new();
        }
        let mut out = Vec::new();
        for id in state.queue.ids() {
            let Some(timer) = state.queue.get(id) else {
                continue;
            };
            if !select(timer) {
                continue;
            }
            let remaining = if timer.revoking {
                1
            } else {
                state.queue.checkpoint_secs(id, now).unwrap_or(timer.ttl)
            };
            if remaining < timer.ttl {
                out.push((id, remaining));
            } else if timer.checkpointed {
                out.push((id, 0));
            }
        }
        out
    }

    /// Proposes checkpoints in batches and notes which leases' records now carry one.
    async fn propose_checkpoints(&self, checkpoints: Vec<(i64, i64)>) {
        for batch in checkpoints.chunks(MAX_CHECKPOINT_BATCH) {
            match self
                .proposer
                .propose(Command::LeaseCheckpoint(batch.to_vec()))
                .await
            {
                Ok(_) => {
                    let mut state = self.state.lock();
                    for &(id, remaining) in batch {
                        state.queue.set_checkpointed(id, remaining > 0);
                    }
                }
                Err(err) => {
                    tracing::warn!(cause = %err, leases = batch.len(), "lease checkpoint failed")
                }
            }
        }
    }

    /// Checkpoints leases longer than the checkpoint interval, once per interval.
    async fn checkpoint_if_due(&self, now: Instant) {
        let interval = self.options.read().checkpoint_interval;
        {
            let mut state = self.state.lock();
            if now.saturating_duration_since(state.last_checkpoint) < interval {
                return;
            }
            state.last_checkpoint = now;
        }
        let long = |t: &LeaseTimer| secs(t.ttl) > interval && !t.revoking;
        let checkpoints = self.due_checkpoints(now, long);
        self.propose_checkpoints(checkpoints).await;
    }

    /// Re-reads who leads, promoting or demoting at once. Called whenever Raft's leader
    /// changes, so a new leader's lessor is primary before it applies any client request of its
    /// term (the periodic tick is only a fallback).
    pub fn leadership_changed(&self) {
        self.update_role(Instant::now());
    }

    /// Promotes or demotes the lessor to follow the proposer's view of the leader.
    fn update_role(&self, now: Instant) {
        let options = self.options.read().clone();
        let leads = options.member_id != 0 && self.proposer.leader() == Some(options.member_id);
        let mut state = self.state.lock();
        if leads && !state.primary {
            self.promote(&mut state, now, options.promote_extend);
        } else if !leads && state.primary {
            state.primary = false;
            state.queue.clear();
            tracing::info!("lessor demoted: leases no longer expire on this member");
        }
    }

    /// Becomes primary: every lease's deadline restarts from its stored record plus `extend`
    /// (etcd's `Promote`), and pile-ups are spread out.
    fn promote(&self, state: &mut State, now: Instant, extend: Duration) {
        state.queue.clear();
        for record in self.store.leases() {
            state
                .queue
                .insert(record.id, stored_timer(&record, now + extend));
        }
        state.queue.spread_pile_ups(LEASE_REVOKE_RATE);
        state.primary = true;
        state.last_reconcile = now;
        tracing::info!(
            leases = state.queue.len(),
            "lessor promoted: expiring leases"
        );
    }

    /// Compares deadlines with the store's leases, at most once per [`RECONCILE_INTERVAL`]:
    /// forgets revoked leases, starts the timers of leases granted elsewhere.
    fn reconcile_if_due(&self, now: Instant) {
        let mut state = self.state.lock();
        if !state.primary
            || now.saturating_duration_since(state.last_reconcile) < RECONCILE_INTERVAL
        {
            return;
        }
        state.last_reconcile = now;
        let records = self.store.leases();
        let granted: HashSet<i64> = records.iter().map(|r| r.id).collect();
        let gone: Vec<i64> = state
            .queue
            .ids()
            .filter(|id| !granted.contains(id))
            .collect();
        for id in gone {
            state.queue.remove(id);
        }
        for record in &records {
            if !state.queue.contains(record.id) {
                state.queue.insert(record.id, stored_timer(record, now));
            }
        }
    }

    /// Proposes the revocation of leases whose deadline passed, at most [`REVOKES_PER_TICK`].
    async fn revoke_expired(&self, now: Instant) {
        let expired = {
            let mut state = self.state.lock();
            if !state.primary {
                return;
            }
            state
                .queue
                .take_expired(now, REVOKES_PER_TICK, EXPIRED_RETRY_INTERVAL)
        };
        if expired.is_empty() {
            return;
        }
        tracing::debug!(leases = expired.len(), "revoking expired leases");
        let proposer = &self.proposer;
        let mut results = futures::stream::iter(expired)
            .map(|id| async move { (id, proposer.propose(Command::LeaseRevoke(id)).await) })
            .buffer_unordered(REVOKE_CONCURRENCY);
        while let Some((id, result)) = results.next().await {
            match result {
                Err(err) if !is_lease_not_found(&err) => {
                    // Left marked as revoking: retried after EXPIRED_RETRY_INTERVAL.
                    tracing::warn!(cause = %err, lease = id, "revoking an expired lease failed");
                }
                _ => {
                    let mut state = self.state.lock();
                    // Unless granted anew (same ID) since: then the timer is a fresh one.
                    if state.queue.get(id).is_some_and(|t| t.revoking) {
                        state.queue.remove(id);
                    }
                }
            }
        }
    }
}

/// The timer of a lease just granted or renewed at `now`.
fn fresh_timer(ttl: i64, now: Instant) -> LeaseTimer {
    LeaseTimer {
        ttl,
        deadline: now + secs(ttl),
        revoking: false,
        checkpointed: false,
    }
}

/// The timer of a lease resumed from its stored record, counting from `from`.
fn stored_timer(record: &LeaseRecord, from: Instant) -> LeaseTimer {
    LeaseTimer {
        ttl: record.ttl,
        deadline: from + secs(stored_remaining(record)),
        revoking: false,
        checkpointed: record.remaining_ttl > 0,
    }
}

/// The TTL a lease resumes with: its checkpointed remaining TTL, else its full TTL.
fn stored_remaining(record: &LeaseRecord) -> i64 {
    if record.remaining_ttl > 0 {
        record.remaining_ttl
    } else {
        record.ttl
    }
}

fn is_lease_not_found(err: &Error) -> bool {
    matches!(err, Error::Store(mvcc::Error::LeaseNotFound))
}

/// The proposer answered with the result of another command: a broken invariant, reported
/// rather than panicking the member.
fn mismatched() -> Error {
    Error::Internal("proposer returned the result of another command".into())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use kvstore_proto::etcdserverpb::{PutRequest, RangeRequest};

    use super::*;
    use crate::alarm::Alarms;
    use crate::apply::{Applier, LocalProposer};
    use crate::mvcc::StoreOptions;

    /// The member the local proposer names leader.
    const MEMBER: u64 = 42;

    fn open(dir: &Path, options: LessorOptions) -> (Arc<KvStore>, Arc<Lessor>) {
        let store = KvStore::open(
            dir,
            StoreOptions {
                sync_writes: false,
                ..StoreOptions::default()
            },
        )
        .expect("open store");
        let store = Arc::new(store);
        let alarms = Arc::new(Alarms::load(store.backend()).expect("load alarms"));
        let applier = Arc::new(Applier::new(Arc::clone(&store), alarms));
        let proposer = Arc::new(LocalProposer::new(applier, MEMBER, 0));
        let lessor = Lessor::new(Arc::clone(&store), proposer);
        lessor.bind(options);
        (store, lessor)
    }

    fn leader() -> LessorOptions {
        LessorOptions {
            member_id: MEMBER,
            ..LessorOptions::default()
        }
    }

    fn put(store: &KvStore, key: &str, lease: i64) {
        store
            .put(&PutRequest {
                key: key.into(),
                value: b"v".to_vec(),
                lease,
                ..PutRequest::default()
            })
            .expect("put");
    }

    fn exists(store: &KvStore, key: &str) -> bool {
        let req = RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        };
        store.range(&req).expect("range").count == 1
    }

    fn after(base: Instant, millis: u64) -> Instant {
        base + Duration::from_millis(millis)
    }

    #[test]
    fn min_ttl_is_derived_as_etcd_does() {
        assert_eq!(
            min_ttl(100, 1000),
            2,
            "etcd 3.4 grants TTL 1 as 2 by default"
        );
        assert_eq!(min_ttl(100, 500), 1);
        assert_eq!(min_ttl(500, 5000), 8);
        assert_eq!(min_ttl(0, 0), 0);
    }

    #[tokio::test]
    async fn a_short_ttl_is_raised_to_the_minimum() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, lessor) = open(dir.path(), leader());
        assert_eq!(lessor.grant(5, 1).await.expect("grant").ttl, 2);
        assert_eq!(lessor.grant(6, -3).await.expect("grant").ttl, 2);
        assert_eq!(lessor.grant(7, 3).await.expect("grant").ttl, 3);
    }

    #[tokio::test]
    async fn a_ttl_above_the_maximum_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, lessor) = open(dir.path(), leader());
        let err = lessor.grant(1, MAX_LEASE_TTL + 1).await;
        assert!(matches!(err, Err(Error::LeaseTtlTooLarge)), "{err:?}");
        assert!(lessor.grant(1, MAX_LEASE_TTL).await.is_ok());
    }

    #[tokio::test]
    async fn grant_picks_an_unused_positive_id_and_refuses_a_taken_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, lessor) = open(dir.path(), leader());
        let picked = lessor.grant(0, 10).await.expect("grant").id;
        assert!(picked > 0);
        let again = lessor.grant(picked, 10).await;
        assert!(
            matches!(again, Err(Error::Store(mvcc::Error::LeaseExists))),
            "{again:?}"
        );
        assert_eq!(lessor.leases(), vec![picked]);
    }

    #[tokio::test]
    async fn renewing_an_unknown_lease_finds_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, lessor) = open(dir.path(), leader());
        assert_eq!(lessor.renew(99).await.expect("renew"), None);
        assert!(lessor.time_to_live(99, false).is_none());
    }

    #[tokio::test]
    async fn expired_leases_are_revoked_in_deadline_order_with_their_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, lessor) = open(dir.path(), leader());
        lessor.grant(1, 5).await.expect("grant");
        lessor.grant(2, 2).await.expect("grant");
        let base = Instant::now();
        put(&store, "a", 1);
        put(&store, "b", 2);
        lessor.tick(after(base, 1_000)).await;
        assert_eq!(lessor.leases(), vec![1, 2]);
        lessor.tick(after(base, 3_000)).await;
        assert_eq!(lessor.leases(), vec![1]);
        assert!(exists(&store, "a") && !exists(&store, "b"));
        lessor.tick(after(base, 6_000)).await;
        assert!(lessor.leases().is_empty());
        assert!(!exists(&store, "a"));
        assert!(
            lessor.state.lock().queue.is_empty(),
            "revoked leases leave no timer"
        );
    }

    #[tokio::test]
    async fn keep_alive_postpones_expiry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, lessor) = open(dir.path(), leader());
        lessor.grant(1, 2).await.expect("grant");
        let base = Instant::now();
        let renewed = lessor.renew_at(1, after(base, 1_500)).await.expect("renew");
        assert_eq!(renewed, Some(2));
        lessor.tick(after(base, 2_500)).await;
        assert_eq!(lessor.leases(), vec![1]);
        lessor.tick(after(base, 4_000)).await;
        assert!(lessor.leases().is_empty());
        // Too late: the lease is gone.
        assert_eq!(
            lessor.renew_at(1, after(base, 4_000)).await.expect("renew"),
            None
        );
    }

    #[tokio::test]
    async fn an_expired_lease_cannot_be_renewed_while_its_revocation_is_pending() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, lessor) = open(dir.path(), leader());
        lessor.grant(1, 2).await.expect("grant");
        let late = after(Instant::now(), 3_000);
        assert_eq!(lessor.renew_at(1, late).await.expect("renew"), None);
    }

    #[tokio::test]
    async fn a_member_that_does_not_lead_expires_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let follower = LessorOptions {
            member_id: 7,
            ..LessorOptions::default()
        };
        let (_store, lessor) = open(dir.path(), follower);
        assert!(!lessor.is_primary());
        lessor.grant(1, 2).await.expect("grant");
        lessor.tick(after(Instant::now(), 60_000)).await;
        assert_eq!(lessor.leases(), vec![1]);
        assert!(matches!(lessor.renew(1).await, Err(Error::NoLeader)));
        assert_eq!(lessor.time_to_live(1, false).map(|t| t.ttl), Some(2));
    }

    #[tokio::test]
    async fn time_to_live_truncates_and_lists_keys_on_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (store, lessor) = open(dir.path(), leader());
        lessor.grant(1, 10).await.expect("grant");
        put(&store, "b", 1);
        put(&store, "a", 1);
        let ttl = lessor.time_to_live(1, true).expect("granted");
        assert_eq!(
            (ttl.ttl, ttl.granted_ttl),
            (9, 10),
            "as etcd: 9.99 s left is 9"
        );
        assert_eq!(ttl.keys, vec![b"a".to_vec(), b"b".to_vec()]);
        assert!(lessor
            .time_to_live(1, false)
            .expect("granted")
            .keys
            .is_empty());
    }

    #[tokio::test]
    async fn revoke_forgets_the_timer_and_unknown_leases_are_not_found() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (_store, lessor) = open(dir.path(), leader());
        lessor.grant(1, 10).await.expect("grant");
        lessor.revoke(1).await.expect("revoke");
        assert!(lessor.state.lock().queue.is_empty());
        let again = lessor.revoke(1).await;
        assert!(is_lease_not_found(&again.expect_err("already revoked")));
    }

    #[tokio::test]
    async fn a_restart_resumes_from_the_checkpoint_and_a_renewal_clears_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (_store, lessor) = open(dir.path(), leader());
            lessor.grant(1, 30).await.expect("grant");
            lessor.grant(2, 30).await.expect("grant");
            let checkpoints = lessor.due_checkpoints(after(Instant::now(), 10_000), |_| true);
            lessor.propose_checkpoints(checkpoints).await;
        }
        let (store, lessor) = open(dir.path(), leader());
        assert_eq!(store.lease(1).map(|(r, _)| r.remaining_ttl), Some(20));
        // 20 s from the checkpoint plus the 1 s promotion extension, truncated.
        assert_eq!(lessor.time_to_live(1, false).map(|t| t.ttl), Some(20));
        assert_eq!(lessor.renew(1).await.expect("renew"), Some(30));
        assert_eq!(store.lease(1).map(|(r, _)| r.remaining_ttl), Some(0));
        assert_eq!(store.lease(2).map(|(r, _)| r.remaining_ttl), Some(20));
    }

    #[tokio::test]
    async fn a_restart_without_checkpoint_resumes_the_full_ttl() {
        let dir = tempfile::tempdir().expect("tempdir");
        {
            let (_store, lessor) = open(dir.path(), leader());
            lessor.grant(1, 30).await.expect("grant");
        }
        let (_store, lessor) = open(dir.path(), leader());
        // etcd 3.4 shows the full TTL after a restart (plus the election timeout, truncated).
        assert_eq!(lessor.time_to_live(1, false).map(|t| t.ttl), Some(30));
    }

    #[tokio::test]
    async fn only_long_leases_are_checkpointed_periodically() {
        let dir = tempfile::tempdir().expect("tempdir");
        let options = LessorOptions {
            checkpoint_interval: Duration::from_secs(10),
            ..leader()
        };
        let (store, lessor) = open(dir.path(), options);
        lessor.grant(1, 60).await.expect("grant");
        lessor.grant(2, 10).await.expect("grant");
        let base = Instant::now();
        lessor.renew_at(2, after(base, 8_000)).await.expect("renew");
        lessor.tick(after(base, 10_500)).await;
        assert_eq!(store.lease(1).map(|(r, _)| r.remaining_ttl), Some(50));
        assert_eq!(store.lease(2).map(|(r, _)| r.remaining_ttl), Some(0));
    }
}
