//! Failover tests: real `kvstore` binaries on loopback forming 3-member clusters whose leader
//! is paused (SIGSTOP/SIGCONT) or killed (SIGKILL) while clients read, write, watch and hold
//! leases through the other members.
//!
//! Correctness is asserted; timings (time to a new leader, catch-up time) are measured and
//! printed only, since CI machines may be loaded. Every wait is bounded and generous.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kvstore_proto::etcdserverpb::{
    kv_client::KvClient, watch_client::WatchClient, watch_request::RequestUnion, HashKvRequest,
    HashKvResponse, LeaseGrantRequest, LeaseKeepAliveRequest, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, RangeRequest, WatchCreateRequest, WatchRequest,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

#[path = "support/cluster.rs"]
mod cluster_support;

use cluster_support::*;

/// The members other than `i` in a 3-member cluster.
fn others(i: usize) -> Vec<usize> {
    (0..3).filter(|&j| j != i).collect()
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Result<i64, tonic::Status> {
    put_with_lease(kv, key, value, 0).await
}

async fn put_with_lease(
    kv: &mut KvClient<Channel>,
    key: &str,
    value: &str,
    lease: i64,
) -> Result<i64, tonic::Status> {
    kv.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        lease,
        ..PutRequest::default()
    })
    .await
    .map(|r| r.into_inner().header.map_or(0, |h| h.revision))
}

/// Whether a failed request may be retried: the cluster is changing leaders.
fn retryable(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::DeadlineExceeded)
}

/// Puts until acknowledged, retrying while the cluster has no leader; panics after
/// [`RECOVERY`]. Each retry may apply the put again (a failed put's fate is unknown).
async fn put_retrying(kv: &mut KvClient<Channel>, key: &str, value: &str) -> i64 {
    let deadline = Instant::now() + RECOVERY;
    loop {
        match put(kv, key, value).await {
            Ok(rev) => return rev,
            Err(status) if retryable(&status) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("put {key}: {status}"),
        }
    }
}

/// The value of `key`, if any.
async fn get(
    kv: &mut KvClient<Channel>,
    key: &str,
    serializable: bool,
) -> Result<Option<String>, tonic::Status> {
    let resp = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..RangeRequest::default()
        })
        .await?
        .into_inner();
    Ok(resp
        .kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned()))
}

/// [`get`], retrying while the cluster has no leader; panics after [`RECOVERY`].
async fn get_retrying(kv: &mut KvClient<Channel>, key: &str) -> Option<String> {
    let deadline = Instant::now() + RECOVERY;
    loop {
        match get(kv, key, false).await {
            Ok(value) => return value,
            Err(status) if retryable(&status) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("get {key}: {status}"),
        }
    }
}

/// A serializable range over `prefix`: the member's revision and its (key, value) pairs.
async fn local_prefix(kv: &mut KvClient<Channel>, prefix: &str) -> (i64, Vec<(String, String)>) {
    let resp = kv
        .range(RangeRequest {
            key: prefix.as_bytes().to_vec(),
            range_end: prefix_end(prefix),
            serializable: true,
            ..RangeRequest::default()
        })
        .await
        .expect("serializable range")
        .into_inner();
    let pairs = resp
        .kvs
        .iter()
        .map(|kv| {
            (
                String::from_utf8_lossy(&kv.key).into_owned(),
                String::from_utf8_lossy(&kv.value).into_owned(),
            )
        })
        .collect();
    (resp.header.map_or(0, |h| h.revision), pairs)
}

/// The end of the range of keys starting with `prefix`.
fn prefix_end(prefix: &str) -> Vec<u8> {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    end
}

/// After the leader has been paused and another elected, the resumed old leader must not
/// answer a linearizable read with a value older than a write acknowledged by the new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_leader_serves_no_stale_read() {
    let mut cluster = Cluster::start(3);
    for round in 0..3 {
        let old = cluster.leader().await;
        let followers = others(old);
        // Connected before the pause, so the reads reach the old leader as soon as it runs.
        let mut on_old = cluster.kv(old).await;
        let on_old_serializable = cluster.kv(old).await;
        let mut on_follower = cluster.kv(followers[0]).await;
        let on_other = cluster.kv(followers[1]).await;
        let before = format!("before-{round}");
        let after = format!("after-{round}");
        put(&mut on_old, "k", &before)
            .await
            .expect("put through the leader");
        assert_eq!(
            get(&mut on_old, "k", false).await.expect("read").as_deref(),
            Some(before.as_str())
        );

        cluster.pause(old);
        let paused_at = Instant::now();
        // A write sent through the other follower at the moment of the pause is forwarded to
        // the stopped leader: its fate is unknown until the old leader runs again or the
        // request times out. Reported, not asserted (round 0 only, it takes a while).
        let in_flight = (round == 0).then(|| {
            let mut kv = on_other.clone();
            tokio::spawn(async move {
                let result = put(&mut kv, "in-flight", "x").await;
                (paused_at.elapsed(), result)
            })
        });
        let new = cluster.leader_among(&followers).await;
        let elected = paused_at.elapsed();
        put_retrying(&mut on_follower, "k", &after).await;
        let acked = paused_at.elapsed();
        eprintln!(
            "round {round}: leader m{old} paused; m{new} leads after {elected:?}; a write \
             through a follower sent then was acknowledged after {acked:?}"
        );
        tokio::time::sleep_until((paused_at + 3 * ELECTION_TIMEOUT).into()).await;

        // Reads sent while the old leader is still stopped: it sees them the moment it runs,
        // before it can hear from anyone that it was deposed.
        let queued: Vec<_> = (0..4)
            .map(|_| {
                let mut kv = on_old.clone();
                tokio::spawn(async move { get(&mut kv, "k", false).await })
            })
            .collect();
        let queued_serializable = {
            let mut kv = on_old_serializable.clone();
            tokio::spawn(async move { get(&mut kv, "k", true).await })
        };
        tokio::time::sleep(Duration::from_millis(100)).await;
        cluster.resume(old);
        let resumed_at = Instant::now();
        let mut results = vec![get(&mut on_old, "k", false).await];
        let first_read = resumed_at.elapsed();
        for read in queued {
            results.push(read.await.expect("read task"));
        }
        for _ in 0..5 {
            results.push(get(&mut on_old, "k", false).await);
        }
        for (n, result) in results.iter().enumerate() {
            match result {
                Ok(value) => assert_eq!(
                    value.as_deref(),
                    Some(after.as_str()),
                    "round {round}: linearizable read {n} on the resumed old leader m{old} \
                     returned a stale value (all results: {results:?})"
                ),
                Err(status) => eprintln!("round {round}: read {n} failed (allowed): {status}"),
            }
        }
        // Serializable reads may be stale: reported, not asserted.
        let serializable = queued_serializable.await.expect("read task");
        eprintln!(
            "round {round}: first linearizable read on the resumed old leader took \
             {first_read:?}; serializable read queued during the pause returned {serializable:?}"
        );
        // Once it has caught up, the old member serves the new value linearizably.
        assert_eq!(
            get_retrying(&mut on_old, "k").await.as_deref(),
            Some(after.as_str())
        );
        if let Some(in_flight) = in_flight {
            let (took, result) = in_flight.await.expect("write task");
            eprintln!(
                "round {round}: the write forwarded to the leader as it was paused ended after \
                 {took:?}: {:?}",
                result.map_err(|s| s.message().to_owned())
            );
        }
    }
}

/// A watch on a follower keeps delivering every event, once and in order, while the leader is
/// killed and another elected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_survives_a_leader_change_without_gaps() {
    const WRITES: usize = 300;
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let followers = others(leader);
    let (watched, writer) = (followers[0], followers[1]);

    let mut on_watched = cluster.kv(watched).await;
    let start = on_watched
        .range(RangeRequest {
            key: b"w/".to_vec(),
            ..RangeRequest::default()
        })
        .await
        .expect("range")
        .into_inner()
        .header
        .map_or(0, |h| h.revision)
        + 1;
    let mut watch = WatchClient::new(cluster.channel(watched).await);
    let (requests, rx) = mpsc::channel(4);
    requests
        .send(WatchRequest {
            request_union: Some(RequestUnion::CreateRequest(WatchCreateRequest {
                key: b"w/".to_vec(),
                range_end: prefix_end("w/"),
                start_revision: start,
                ..WatchCreateRequest::default()
            })),
        })
        .await
        .expect("send create");
    let mut responses = watch
        .watch(ReceiverStream::new(rx))
        .await
        .expect("open watch stream")
        .into_inner();
    let created = responses
        .message()
        .await
        .expect("watch stream healthy")
        .expect("watch stream open");
    assert!(created.created, "first answer is the creation: {created:?}");

    // Collects (revision, key) of every event until told the last revision to expect.
    let (target_tx, mut target_rx) = tokio::sync::watch::channel(i64::MAX);
    let collector = tokio::spawn(async move {
        let _requests = requests; // Closing it would end the stream.
        let mut events: Vec<(i64, String)> = Vec::new();
        loop {
            if events
                .last()
                .is_some_and(|(rev, _)| *rev >= *target_rx.borrow())
            {
                return events;
            }
            tokio::select! {
                msg = responses.message() => {
                    let resp = msg
                        .expect("watch stream healthy")
                        .expect("watch stream open");
                    assert!(!resp.canceled, "watch canceled: {resp:?}");
                    for ev in resp.events {
                        let kv = ev.kv.expect("event kv");
                        events.push((kv.mod_revision, String::from_utf8_lossy(&kv.key).into_owned()));
                    }
                }
                changed = target_rx.changed() => changed.expect("target sender alive"),
            }
        }
    });

    let mut kv = cluster.kv(writer).await;
    let mut acked: Vec<(i64, String)> = Vec::new();
    let mut retries = 0;
    let mut killed_at = None;
    let mut first_ack_after_kill = None;
    let started = Instant::now();
    for seq in 0..WRITES {
        if seq == WRITES / 2 {
            cluster.kill(leader);
            killed_at = Some(Instant::now());
        }
        let key = format!("w/{seq:04}");
        let deadline = Instant::now() + RECOVERY;
        loop {
            match put(&mut kv, &key, &seq.to_string()).await {
                Ok(rev) => {
                    acked.push((rev, key));
                    break;
                }
                Err(status) if retryable(&status) && Instant::now() < deadline => {
                    retries += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(status) => panic!("put {key}: {status}"),
            }
        }
        if let (Some(at), None) = (killed_at, first_ack_after_kill) {
            first_ack_after_kill = Some(at.elapsed());
        }
    }
    eprintln!(
        "{WRITES} writes through m{writer} in {:?} ({retries} retries); leader m{leader} killed, \
         first acknowledged write {:?} after the kill",
        started.elapsed(),
        first_ack_after_kill.expect("writes after the kill")
    );

    let last = acked.last().map_or(0, |(rev, _)| *rev);
    target_tx.send(last).expect("collector alive");
    let events = tokio::time::timeout(RECOVERY, collector)
        .await
        .expect("the watch delivers every acknowledged revision")
        .expect("collector task");

    for pair in events.windows(2) {
        assert!(
            pair[0].0 < pair[1].0,
            "watch events out of order or duplicated: {:?} then {:?}",
            pair[0],
            pair[1]
        );
    }
    let by_rev: HashMap<i64, &str> = events.iter().map(|(r, k)| (*r, k.as_str())).collect();
    for (rev, key) in &acked {
        assert_eq!(
            by_rev.get(rev).copied(),
            Some(key.as_str()),
            "acknowledged put of {key} at revision {rev} missing from the watch"
        );
    }
    // Nothing but these puts writes keys, so the watched revisions are contiguous; extra
    // events are puts that were committed although their client saw an error.
    let revisions: Vec<i64> = events.iter().map(|(r, _)| *r).collect();
    let expected: Vec<i64> = (start..=last).collect();
    assert_eq!(revisions, expected, "the watch skipped revisions");
    eprintln!(
        "watch on m{watched}: {} events for {} acknowledged puts",
        events.len(),
        acked.len()
    );
}

/// A lease survives a leader's death (the new leader restarts its TTL, extended by the election
/// timeout) and is expired by the new leader afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_outlives_no_failover_and_expires_after() {
    const TTL: i64 = 6;
    let ttl = Duration::from_secs(TTL as u64);
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let followers = others(leader);
    let via = followers[0];

    let mut lease = cluster.lease(via).await;
    let mut kv = cluster.kv(via).await;
    let granted_at = Instant::now();
    let granted = lease
        .lease_grant(LeaseGrantRequest { ttl: TTL, id: 0 })
        .await
        .expect("grant through a follower")
        .into_inner();
    assert_eq!(granted.ttl, TTL);
    put_with_lease(&mut kv, "leased", "x", granted.id)
        .await
        .expect("put with the lease");

    tokio::time::sleep_until((granted_at + Duration::from_secs(1)).into()).await;
    cluster.kill(leader);
    let killed_at = Instant::now();
    let new = cluster.leader().await;
    let failover = killed_at.elapsed();
    eprintln!("leader m{leader} killed; m{new} leads after {failover:?}");

    tokio::time::sleep_until((killed_at + Duration::from_secs(2)).into()).await;
    assert_eq!(
        get_retrying(&mut kv, "leased").await.as_deref(),
        Some("x"),
        "the lease expired early: 2 s after the failover, {:?} after the grant",
        granted_at.elapsed()
    );
    for &i in &followers {
        let ttl = time_to_live(&cluster, i, granted.id).await;
        eprintln!(
            "{:?} after the grant: TimeToLive on m{i} ({}): TTL {} of {}, keys {:?}",
            granted_at.elapsed(),
            if i == new { "leader" } else { "follower" },
            ttl.ttl,
            ttl.granted_ttl,
            ttl.keys
        );
        assert_eq!(ttl.granted_ttl, TTL, "granted TTL on m{i}");
        assert!(
            (1..=TTL + 1).contains(&ttl.ttl),
            "remaining TTL on m{i}: {}",
            ttl.ttl
        );
        assert_eq!(ttl.keys, vec![b"leased".to_vec()], "keys on m{i}");
    }

    // The new leader restarted the full TTL plus the election timeout when it took over; it
    // revokes on its next expiry tick after that.
    let bound = killed_at + failover + ttl + ELECTION_TIMEOUT + Duration::from_secs(5);
    let gone_after = loop {
        if get_retrying(&mut kv, "leased").await.is_none() {
            break granted_at.elapsed();
        }
        assert!(
            Instant::now() < bound,
            "the lease outlived its TTL + election timeout after the failover"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "lease key gone {gone_after:?} after the grant ({:?} after the new leader was found)",
        gone_after.saturating_sub(killed_at.duration_since(granted_at) + failover)
    );
    assert!(
        gone_after >= ttl,
        "the lease expired {gone_after:?} after the grant, before its TTL"
    );
    for &i in &followers {
        let ttl = time_to_live(&cluster, i, granted.id).await;
        assert_eq!(ttl.ttl, -1, "m{i} still knows the expired lease: {ttl:?}");
    }
}

/// As in etcd, LeaseTimeToLive through a follower reports the leader's deadline (etcd forwards
/// it to the leader, whose lessor alone keeps deadlines).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_time_to_live_through_a_follower_reports_the_leaders_deadline() {
    const TTL: i64 = 10;
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let follower = others(leader)[0];
    let id = grant(&cluster, follower, TTL).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let on_leader = time_to_live(&cluster, leader, id).await.ttl;
    let on_follower = time_to_live(&cluster, follower, id).await.ttl;
    eprintln!(
        "3.5 s after a {TTL} s grant: TTL {on_leader} on the leader, {on_follower} on a follower"
    );
    assert!(
        on_leader < TTL - 2,
        "the leader's TTL counts down: {on_leader}"
    );
    assert!(
        (on_leader - 1..=on_leader + 1).contains(&on_follower),
        "a follower reports the leader's remaining TTL {on_leader}, not {on_follower}"
    );
}

/// As in etcd, LeaseKeepAlive through a follower renews the lease on the leader (etcd forwards
/// keep-alives to the leader).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_keep_alive_through_a_follower_renews_on_the_leader() {
    const TTL: i64 = 10;
    let cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let follower = others(leader)[0];
    let id = grant(&cluster, follower, TTL).await;
    tokio::time::sleep(Duration::from_millis(3500)).await;

    let (requests, rx) = mpsc::channel(1);
    requests
        .send(LeaseKeepAliveRequest { id })
        .await
        .expect("queue a keep-alive");
    let mut lease = cluster.lease(follower).await;
    let renewed = match lease.lease_keep_alive(ReceiverStream::new(rx)).await {
        Ok(stream) => stream.into_inner().message().await,
        Err(status) => Err(status),
    }
    .map(|r| r.map(|r| r.ttl));
    assert!(
        matches!(renewed, Ok(Some(TTL))),
        "a keep-alive through a follower renews the lease: {renewed:?}"
    );
    let on_leader = time_to_live(&cluster, leader, id).await.ttl;
    assert!(
        on_leader >= TTL - 1,
        "the leader's deadline was renewed: TTL {on_leader}"
    );
}

/// Grants a lease of `ttl` seconds through member `i`.
async fn grant(cluster: &Cluster, i: usize, ttl: i64) -> i64 {
    cluster
        .lease(i)
        .await
        .lease_grant(LeaseGrantRequest { ttl, id: 0 })
        .await
        .expect("grant")
        .into_inner()
        .id
}

/// Lease.TimeToLive with keys, retrying while the cluster has no leader.
async fn time_to_live(cluster: &Cluster, i: usize, id: i64) -> LeaseTimeToLiveResponse {
    let mut lease = cluster.lease(i).await;
    let deadline = Instant::now() + RECOVERY;
    loop {
        match lease
            .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
            .await
        {
            Ok(resp) => return resp.into_inner(),
            Err(status) if retryable(&status) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("TimeToLive on m{i}: {status}"),
        }
    }
}

/// Kills a follower, writes `writes` keys, restarts it and checks it catches up with every key
/// and the same `HashKV` as the others.
async fn killed_member_catches_up(extra_args: &[&str], writes: usize) {
    let mut cluster = Cluster::start_with(3, extra_args);
    let leader = cluster.leader().await;
    let victim = others(leader)[0];
    cluster.kill(victim);

    let kv = cluster.kv(leader).await;
    let started = Instant::now();
    let results: Vec<Result<i64, tonic::Status>> = futures::stream::iter(0..writes)
        .map(|i| {
            let mut kv = kv.clone();
            async move { put(&mut kv, &format!("c/{i:05}"), &i.to_string()).await }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    for result in &results {
        if let Err(status) = result {
            panic!("put with a follower down: {status}");
        }
    }
    let target = local_prefix(&mut cluster.kv(leader).await, "c/").await.0;
    eprintln!(
        "{writes} writes with m{victim} down took {:?}; revision {target}",
        started.elapsed()
    );

    let term_before = cluster.status(leader).await.map_or(0, |s| s.raft_term);
    cluster.spawn(victim);
    let restarted_at = Instant::now();
    let mut on_victim = cluster.kv(victim).await;
    let (revision, pairs) = loop {
        let (revision, pairs) = local_prefix(&mut on_victim, "c/").await;
        if revision >= target {
            break (revision, pairs);
        }
        assert!(
            restarted_at.elapsed() < RECOVERY,
            "m{victim} stuck at revision {revision} of {target}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let caught_up = restarted_at.elapsed();
    let now_leading = cluster.leader().await;
    let term_after = cluster.status(now_leading).await.map_or(0, |s| s.raft_term);
    // Without pre-vote, a restarted member that campaigns before it hears from the leader
    // deposes it: reported, not asserted.
    eprintln!(
        "m{victim} caught up {writes} writes in {caught_up:?} after its restart; leader m{leader} \
         term {term_before} before, m{now_leading} term {term_after} after"
    );
    assert_eq!(
        revision, target,
        "m{victim} went past the leader's revision"
    );
    let got: BTreeMap<String, String> = pairs.into_iter().collect();
    let want: BTreeMap<String, String> = (0..writes)
        .map(|i| (format!("c/{i:05}"), i.to_string()))
        .collect();
    assert_eq!(got.len(), writes, "keys on m{victim}");
    assert!(
        got == want,
        "m{victim} holds other values than were written"
    );

    let mut hashes: Vec<(usize, HashKvResponse)> = Vec::new();
    for i in 0..3 {
        let resp = cluster
            .maintenance(i)
            .await
            .hash_kv(HashKvRequest { revision: target })
            .await
            .expect("HashKV")
            .into_inner();
        hashes.push((i, resp));
    }
    let (_, first) = &hashes[0];
    for (i, h) in &hashes {
        assert_eq!(
            (h.hash, h.compact_revision),
            (first.hash, first.compact_revision),
            "HashKV at revision {target} differs on m{i}: {hashes:?}"
        );
        assert_eq!(h.header.as_ref().map(|h| h.revision), Some(target), "m{i}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_member_catches_up_after_missing_many_writes() {
    killed_member_catches_up(&[], 2000).await;
}

/// As above, but the leader snapshots every 500 entries and keeps only 500 behind a snapshot,
/// so the restarted member must install a snapshot rather than replay the log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_member_catches_up_from_a_snapshot() {
    killed_member_catches_up(&["--snapshot-count", "500"], 2000).await;
}
