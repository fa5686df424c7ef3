//! Leases end to end: a real `kvstore` process on loopback, driven through the generated gRPC
//! clients. Grants, TTL queries, revocation deleting every attached key in one revision,
//! expiry deleting keys when (and only when) the TTL runs out, keep-alives holding them, and
//! leases surviving a graceful restart (resuming from the checkpointed TTL) and a SIGKILL
//! (resuming with the full TTL, as etcd without a checkpoint does).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, LeaseGrantRequest, LeaseGrantResponse,
    LeaseKeepAliveRequest, LeaseLeasesRequest, LeaseRevokeRequest, LeaseTimeToLiveRequest,
    LeaseTimeToLiveResponse, PutRequest, RangeRequest,
};
use tonic::transport::Channel;
use tonic::Code;

/// How late past its TTL a lease may expire: the expiry loop's tick, the apply, and the
/// polling of this test.
const EXPIRY_BOUND: Duration = Duration::from_millis(1500);

/// A `kvstore` process, killed when dropped.
struct Server {
    /// The running process, if started.
    child: Option<Child>,
    /// Its data directory.
    data_dir: PathBuf,
    /// Its client port.
    client: u16,
    /// Its peer port.
    peer: u16,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[path = "support/ports.rs"]
mod ports;
use ports::free_port;

impl Server {
    /// Starts a single member with its data in `dir`.
    async fn start(dir: &Path) -> Self {
        let mut server = Server {
            child: None,
            data_dir: dir.join("data"),
            client: free_port(),
            peer: free_port(),
        };
        server.restart().await;
        server
    }

    /// Starts the process (again, on the same ports and data) and waits until it serves.
    async fn restart(&mut self) {
        let client = format!("http://127.0.0.1:{}", self.client);
        let peer = format!("http://127.0.0.1:{}", self.peer);
        let child = Command::new(env!("CARGO_BIN_EXE_kvstore"))
            .args(["--name", "n", "--data-dir"])
            .arg(&self.data_dir)
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("n={peer}")])
            .arg("--unsafe-no-fsync")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start kvstore");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(mut lease) = LeaseClient::connect(client.clone()).await {
                if lease.lease_leases(LeaseLeasesRequest {}).await.is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "kvstore did not start serving");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process with `signal` (`TERM`: graceful; `KILL`: a crash) and waits for it.
    /// Waits asynchronously: open client connections must keep answering the server's
    /// HTTP/2 shutdown handshake (GOAWAY, PING) for a graceful stop to finish.
    async fn stop(&mut self, signal: &str) {
        let mut child = self.child.take().expect("server running");
        let status = Command::new("kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} failed");
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().expect("wait for kvstore").is_none() {
            assert!(
                Instant::now() < deadline,
                "kvstore did not exit on SIG{signal}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://127.0.0.1:{}", self.client))
            .expect("endpoint")
            .connect()
            .await
            .expect("connect")
    }

    async fn lease(&self) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel().await)
    }

    async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel().await)
    }
}

async fn grant(lease: &mut LeaseClient<Channel>, id: i64, ttl: i64) -> LeaseGrantResponse {
    lease
        .lease_grant(LeaseGrantRequest { ttl, id })
        .await
        .expect("grant")
        .into_inner()
}

async fn time_to_live(lease: &mut LeaseClient<Channel>, id: i64) -> LeaseTimeToLiveResponse {
    lease
        .lease_time_to_live(LeaseTimeToLiveRequest { id, keys: true })
        .await
        .expect("time to live")
        .into_inner()
}

async fn put(kv: &mut KvClient<Channel>, key: &str, lease: i64) -> i64 {
    let resp = kv
        .put(PutRequest {
            key: key.into(),
            value: b"v".to_vec(),
            lease,
            ..PutRequest::default()
        })
        .await
        .expect("put")
        .into_inner();
    resp.header.map(|h| h.revision).unwrap_or_default()
}

/// The keys under `prefix` and the store's revision.
async fn keys(kv: &mut KvClient<Channel>, prefix: &str) -> (Vec<String>, i64) {
    let mut end = prefix.as_bytes().to_vec();
    if let Some(last) = end.last_mut() {
        *last += 1;
    }
    let resp = kv
        .range(RangeRequest {
            key: prefix.into(),
            range_end: end,
            ..RangeRequest::default()
        })
        .await
        .expect("range")
        .into_inner();
    let keys = resp
        .kvs
        .iter()
        .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
        .collect();
    (keys, resp.header.map(|h| h.revision).unwrap_or_default())
}

/// Waits until no key is left under `prefix`, returning when that was seen.
async fn wait_gone(kv: &mut KvClient<Channel>, prefix: &str, limit: Duration) -> Instant {
    let deadline = Instant::now() + limit;
    loop {
        if keys(kv, prefix).await.0.is_empty() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "keys under {prefix} never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn grant_time_to_live_leases_and_revoke_answer_as_etcd() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut lease = server.lease().await;

    let picked = grant(&mut lease, 0, 1).await;
    assert!(picked.id > 0, "the server picks a positive ID");
    assert_eq!(picked.ttl, 2, "etcd's minimum TTL with default timeouts");
    assert!(picked
        .header
        .is_some_and(|h| h.member_id != 0 && h.cluster_id != 0));

    let chosen = grant(&mut lease, 1000, 30).await;
    assert_eq!((chosen.id, chosen.ttl), (1000, 30));
    let taken = lease
        .lease_grant(LeaseGrantRequest { ttl: 30, id: 1000 })
        .await
        .expect_err("ID in use");
    assert_eq!(taken.code(), Code::FailedPrecondition);
    assert_eq!(taken.message(), "etcdserver: lease already exists");
    let too_large = lease
        .lease_grant(LeaseGrantRequest {
            ttl: 9_000_000_001,
            id: 0,
        })
        .await
        .expect_err("TTL above the maximum");
    assert_eq!(too_large.code(), Code::OutOfRange);
    assert_eq!(too_large.message(), "etcdserver: too large lease TTL");

    let ttl = time_to_live(&mut lease, 1000).await;
    assert_eq!((ttl.id, ttl.granted_ttl), (1000, 30));
    assert!(
        (28..=29).contains(&ttl.ttl),
        "truncated as etcd: {}",
        ttl.ttl
    );

    let mut all: Vec<i64> = lease
        .lease_leases(LeaseLeasesRequest {})
        .await
        .expect("leases")
        .into_inner()
        .leases
        .iter()
        .map(|l| l.id)
        .collect();
    all.sort_unstable();
    let mut want = vec![picked.id, 1000];
    want.sort_unstable();
    assert_eq!(all, want);

    lease
        .lease_revoke(LeaseRevokeRequest { id: 1000 })
        .await
        .expect("revoke");
    let gone = time_to_live(&mut lease, 1000).await;
    assert_eq!((gone.id, gone.ttl, gone.granted_ttl), (1000, -1, 0));
    assert!(gone.header.is_some());
    let again = lease
        .lease_revoke(LeaseRevokeRequest { id: 1000 })
        .await
        .expect_err("already revoked");
    assert_eq!(again.code(), Code::NotFound);
    assert_eq!(again.message(), "etcdserver: requested lease not found");

    // A keep-alive for a lease that does not exist answers TTL 0, as etcd.
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(LeaseKeepAliveRequest { id: 1000 })
        .await
        .expect("send");
    let mut responses = lease
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keep-alive stream")
        .into_inner();
    let resp = responses
        .message()
        .await
        .expect("keep-alive response")
        .expect("one response");
    assert_eq!((resp.id, resp.ttl), (1000, 0));
}

#[tokio::test]
async fn put_with_an_unknown_lease_is_not_found() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut kv = server.kv().await;
    let err = kv
        .put(PutRequest {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
            lease: 12345,
            ..PutRequest::default()
        })
        .await
        .expect_err("unknown lease");
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "etcdserver: requested lease not found");
}

#[tokio::test]
async fn keys_expire_with_their_lease_and_only_then() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut lease = server.lease().await;
    let mut kv = server.kv().await;

    let before_grant = Instant::now();
    let id = grant(&mut lease, 0, 3).await.id;
    let after_grant = Instant::now();
    put(&mut kv, "exp/a", id).await;
    put(&mut kv, "exp/b", id).await;
    put(&mut kv, "stay", 0).await;

    tokio::time::sleep_until((before_grant + Duration::from_millis(2_500)).into()).await;
    assert_eq!(keys(&mut kv, "exp/").await.0.len(), 2, "expired too early");
    let gone_at = wait_gone(&mut kv, "exp/", Duration::from_secs(10)).await;
    assert!(
        gone_at >= before_grant + Duration::from_secs(3),
        "expired early"
    );
    assert!(
        gone_at <= after_grant + Duration::from_secs(3) + EXPIRY_BOUND,
        "expired {:?} after the grant",
        gone_at - after_grant
    );
    assert_eq!(keys(&mut kv, "stay").await.0.len(), 1);
    assert_eq!(time_to_live(&mut lease, id).await.ttl, -1);
}

#[tokio::test]
async fn keep_alive_holds_a_lease_past_its_ttl() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut lease = server.lease().await;
    let mut kv = server.kv().await;

    let id = grant(&mut lease, 0, 2).await.id;
    put(&mut kv, "held", id).await;
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    let mut responses = lease
        .lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .expect("keep-alive stream")
        .into_inner();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(5) {
        tx.send(LeaseKeepAliveRequest { id }).await.expect("send");
        let resp = responses
            .message()
            .await
            .expect("keep-alive response")
            .expect("a response per request");
        assert_eq!((resp.id, resp.ttl), (id, 2));
        assert!(resp.header.is_some_and(|h| h.revision > 0));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        keys(&mut kv, "held").await.0.len(),
        1,
        "kept alive past its TTL"
    );
    drop(tx);
    let stopped = Instant::now();
    let gone_at = wait_gone(&mut kv, "held", Duration::from_secs(10)).await;
    assert!(gone_at - stopped <= Duration::from_secs(2) + EXPIRY_BOUND);
}

#[tokio::test]
async fn revoke_deletes_every_attached_key_in_one_revision() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(dir.path()).await;
    let mut lease = server.lease().await;
    let mut kv = server.kv().await;

    let id = grant(&mut lease, 0, 60).await.id;
    for key in ["rev/a", "rev/b", "rev/c"] {
        put(&mut kv, key, id).await;
    }
    let (before, rev) = keys(&mut kv, "rev/").await;
    assert_eq!(before.len(), 3);
    let attached = time_to_live(&mut lease, id).await.keys;
    assert_eq!(
        attached,
        vec![b"rev/a".to_vec(), b"rev/b".to_vec(), b"rev/c".to_vec()]
    );

    let revoked = lease
        .lease_revoke(LeaseRevokeRequest { id })
        .await
        .expect("revoke")
        .into_inner();
    assert_eq!(revoked.header.map(|h| h.revision), Some(rev + 1));
    let (after, now) = keys(&mut kv, "rev/").await;
    assert!(after.is_empty());
    assert_eq!(now, rev + 1, "three deletions, one revision");
}

#[tokio::test]
async fn leases_survive_graceful_and_crash_restarts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut server = Server::start(dir.path()).await;
    let mut lease = server.lease().await;
    let mut kv = server.kv().await;

    let graceful = grant(&mut lease, 0, 60).await.id;
    put(&mut kv, "kept/graceful", graceful).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let before = time_to_live(&mut lease, graceful).await.ttl;
    assert!((54..=56).contains(&before), "{before}");

    // SIGTERM: the remaining TTL is checkpointed and resumed (plus the election timeout).
    server.stop("TERM").await;
    server.restart().await;
    let mut lease = server.lease().await;
    let mut kv = server.kv().await;
    let resumed = time_to_live(&mut lease, graceful).await;
    assert_eq!(resumed.granted_ttl, 60);
    assert!(
        (before - 1..=before + 1).contains(&resumed.ttl),
        "resumed with {} s after {before} s before the restart",
        resumed.ttl
    );
    assert_eq!(resumed.keys, vec![b"kept/graceful".to_vec()]);

    // SIGKILL: no checkpoint; a lease never checkpointed resumes with its full TTL, as etcd.
    let crashed = grant(&mut lease, 0, 60).await.id;
    put(&mut kv, "kept/crashed", crashed).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    server.stop("KILL").await;
    server.restart().await;
    let mut lease = server.lease().await;
    let mut kv = server.kv().await;
    let full = time_to_live(&mut lease, crashed).await;
    assert!((59..=60).contains(&full.ttl), "{}", full.ttl);
    assert_eq!(full.keys, vec![b"kept/crashed".to_vec()]);
    // The one checkpointed at the graceful stop still resumes from its checkpoint.
    let still = time_to_live(&mut lease, graceful).await.ttl;
    assert!(still > 0 && still <= before + 1, "{still}");
    assert_eq!(keys(&mut kv, "kept/").await.0.len(), 2);
}
