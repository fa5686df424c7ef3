//! Multi-process replication tests: real `kvstore` binaries on loopback forming 3- and
//! 5-member clusters, killed with SIGKILL and restarted.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::{
    kv_client::KvClient, maintenance_client::MaintenanceClient, PutRequest, RangeRequest,
    StatusRequest,
};
use tonic::transport::Channel;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// One member's process and addresses.
struct Member {
    name: String,
    client: u16,
    peer: u16,
    child: Option<Child>,
}

/// A cluster of real processes sharing one temp dir; killed on drop.
struct Cluster {
    dir: tempfile::TempDir,
    members: Vec<Member>,
    initial: String,
}

impl Cluster {
    fn start(n: usize) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Self {
            dir,
            members,
            initial,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    fn spawn(&mut self, i: usize) {
        let data_dir = self.data_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(
                self.dir
                    .path()
                    .join(format!("{}.log", self.members[i].name)),
            )
            .expect("log file");
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let child = Command::new(env!("CARGO_BIN_EXE_kvstore"))
            .args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&data_dir)
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args(["--initial-cluster", &self.initial])
            .args([
                "--initial-cluster-token",
                "cluster-test",
                "--log-level",
                "warn",
            ])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start kvstore");
        self.members[i].child = Some(child);
    }

    /// SIGKILL member `i`.
    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await)
    }

    async fn channel(&self, i: usize) -> Channel {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Channel::from_shared(self.endpoint(i))
                .expect("endpoint")
                .connect_timeout(Duration::from_millis(500))
                .timeout(Duration::from_secs(10))
                .connect()
                .await
            {
                Ok(c) => return c,
                Err(e) => {
                    assert!(Instant::now() < deadline, "member {i} unreachable: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    /// The index of the member every running member agrees leads, waiting up to 20 s.
    async fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let mut seen = Vec::new();
            for (i, m) in self.members.iter().enumerate() {
                if m.child.is_none() {
                    continue;
                }
                let mut c = MaintenanceClient::new(self.channel(i).await);
                if let Ok(s) = c.status(StatusRequest {}).await {
                    let s = s.into_inner();
                    seen.push((s.leader, s.header.map(|h| h.member_id).unwrap_or(0), i));
                }
            }
            if let Some((leader, _, _)) = seen.first() {
                if *leader != 0 && seen.iter().all(|(l, _, _)| l == leader) {
                    if let Some((_, _, i)) = seen.iter().find(|(_, id, _)| id == leader) {
                        return *i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no agreed leader: {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
    }
}

async fn put(kv: &mut KvClient<Channel>, key: &str, value: &str) -> Result<i64, tonic::Status> {
    kv.put(PutRequest {
        key: key.as_bytes().to_vec(),
        value: value.as_bytes().to_vec(),
        ..PutRequest::default()
    })
    .await
    .map(|r| r.into_inner().header.map_or(0, |h| h.revision))
}

async fn get(kv: &mut KvClient<Channel>, key: &str, serializable: bool) -> Option<String> {
    let resp = kv
        .range(RangeRequest {
            key: key.as_bytes().to_vec(),
            serializable,
            ..RangeRequest::default()
        })
        .await
        .expect("range")
        .into_inner();
    resp.kvs
        .first()
        .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
}

async fn writes_through_any_member_are_readable_on_all(n: usize) {
    let cluster = Cluster::start(n);
    cluster.leader().await;
    for i in 0..n {
        let mut kv = cluster.kv(i).await;
        put(&mut kv, &format!("k{i}"), &format!("v{i}"))
            .await
            .expect("put through a member");
    }
    for j in 0..n {
        let mut kv = cluster.kv(j).await;
        for i in 0..n {
            assert_eq!(
                get(&mut kv, &format!("k{i}"), false).await.as_deref(),
                Some(format!("v{i}").as_str()),
                "linearizable read of k{i} on member {j}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_replicate_writes_through_any_member() {
    writes_through_any_member_are_readable_on_all(3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_members_replicate_writes_through_any_member() {
    writes_through_any_member_are_readable_on_all(5).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_sigkill_of_the_leader() {
    let mut cluster = Cluster::start(3);
    let leader = cluster.leader().await;
    let followers: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut clients = Vec::new();
    for &i in &followers {
        clients.push(cluster.kv(i).await);
    }

    // Write through the followers, before and after the leader dies.
    let mut acked = Vec::new();
    let mut seq = 0;
    let started = Instant::now();
    let mut killed_at = None;
    let mut first_ack_after_kill: Option<Duration> = None;
    // Write until 2 s of writes after the failover (or give up after 30 s).
    while started.elapsed() < Duration::from_secs(30)
        && !first_ack_after_kill
            .zip(killed_at)
            .is_some_and(|(ack, at): (Duration, Instant)| {
                at.elapsed() > ack + Duration::from_secs(2)
            })
    {
        if killed_at.is_none() && started.elapsed() > Duration::from_secs(1) {
            cluster.kill(leader);
            killed_at = Some(Instant::now());
        }
        let key = format!("w{seq:06}");
        let n_clients = clients.len();
        let kv = &mut clients[seq % n_clients];
        if put(kv, &key, "x").await.is_ok() {
            acked.push(key);
            if let (Some(at), None) = (killed_at, first_ack_after_kill) {
                first_ack_after_kill = Some(at.elapsed());
            }
        }
        seq += 1;
    }
    // Measured, not asserted: the machine may be loaded.
    let failover = first_ack_after_kill.expect("writes resumed after the leader was killed");
    eprintln!(
        "leader killed; first acknowledged write after {failover:?}; {} writes acknowledged",
        acked.len()
    );

    // The killed member comes back and catches up; every acknowledged write is everywhere.
    cluster.spawn(leader);
    cluster.leader().await;
    for i in 0..3 {
        let mut kv = cluster.kv(i).await;
        let resp = kv
            .range(RangeRequest {
                key: b"w".to_vec(),
                range_end: b"x".to_vec(),
                keys_only: true,
                ..RangeRequest::default()
            })
            .await
            .expect("range")
            .into_inner();
        let keys: std::collections::HashSet<String> = resp
            .kvs
            .iter()
            .map(|kv| String::from_utf8_lossy(&kv.key).into_owned())
            .collect();
        for key in &acked {
            assert!(
                keys.contains(key),
                "acknowledged {key} missing on member {i}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_every_member_loses_nothing() {
    let mut cluster = Cluster::start(3);
    cluster.leader().await;
    let mut kv = cluster.kv(0).await;
    let mut last = 0;
    for i in 0..200 {
        last = put(&mut kv, &format!("k{i:04}"), &i.to_string())
            .await
            .expect("put");
    }
    for i in 0..3 {
        cluster.kill(i);
    }
    for i in 0..3 {
        cluster.spawn(i);
    }
    cluster.leader().await;
    for i in 0..3 {
        let mut kv = cluster.kv(i).await;
        let resp = kv
            .range(RangeRequest {
                key: b"k".to_vec(),
                range_end: b"l".to_vec(),
                ..RangeRequest::default()
            })
            .await
            .expect("range after restart")
            .into_inner();
        assert_eq!(resp.count, 200, "member {i} after restart");
        assert!(
            resp.header.map_or(0, |h| h.revision) >= last,
            "member {i} went back in revision"
        );
        assert_eq!(get(&mut kv, "k0199", true).await.as_deref(), Some("199"));
    }
}
