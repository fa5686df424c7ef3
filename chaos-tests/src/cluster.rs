//! The cluster under test: real kvstore processes on the [`Hosts`], started, killed, paused
//! and re-added by the nemesis, and gRPC clients to each of them.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::time::Duration;

use kvstore_proto::etcdserverpb::cluster_client::ClusterClient;
use kvstore_proto::etcdserverpb::kv_client::KvClient;
use kvstore_proto::etcdserverpb::lease_client::LeaseClient;
use kvstore_proto::etcdserverpb::maintenance_client::MaintenanceClient;
use kvstore_proto::etcdserverpb::watch_client::WatchClient;
use kvstore_proto::etcdserverpb::{
    HashKvRequest, MemberAddRequest, MemberListRequest, MemberPromoteRequest, MemberRemoveRequest,
    MoveLeaderRequest, StatusRequest,
};
use parking_lot::Mutex;
use rustix::process::{kill_process, Pid, Signal};
use tonic::transport::{Channel, Endpoint};

use crate::error::{Error, Result};
use crate::hosts::Hosts;

/// How to start the members.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// The kvstore (or kvstore-faulty) binary.
    pub binary: PathBuf,
    /// Members.
    pub nodes: usize,
    /// `--snapshot-count` (low values force snapshots during the run).
    pub snapshot_count: u64,
    /// Extra environment, e.g. the injected faults for `kvstore-faulty`.
    pub env: Vec<(String, String)>,
    /// Where member logs go.
    pub log_dir: PathBuf,
}

/// One member process slot.
struct Member {
    /// The running process (None: killed).
    child: Option<Child>,
    /// Stopped with SIGSTOP.
    paused: bool,
    /// Whether it is currently a member of the cluster (false while removed by churn).
    joined: bool,
    /// `--initial-cluster-state` and `--initial-cluster` of its first start on this data
    /// directory: a restart repeats them (kvstore refuses flags that describe another member).
    bootstrap: Option<(String, String)>,
}

/// The running cluster; kills every member when dropped.
pub struct Cluster {
    /// Where members run.
    pub hosts: Arc<Hosts>,
    spec: ClusterSpec,
    /// Data directories.
    data: tempfile::TempDir,
    members: Mutex<Vec<Member>>,
    /// One lazily connected channel per member (created in the client namespace thread).
    channels: Vec<Channel>,
    token: String,
}

impl Cluster {
    /// Starts every member and waits until the cluster has a leader. Must be called from the
    /// client namespace thread (channels connect from there).
    pub async fn start(hosts: Arc<Hosts>, spec: ClusterSpec) -> Result<Self> {
        std::fs::create_dir_all(&spec.log_dir)?;
        let data = tempfile::Builder::new().prefix("kxchaos-data").tempdir()?;
        let channels = (0..spec.nodes)
            .map(|i| {
                let (client, _) = hosts.ports(i);
                let url = format!("http://{}:{client}", hosts.member_ip(i));
                Endpoint::from_shared(url)
                    .map(|e| {
                        e.connect_timeout(Duration::from_secs(1))
                            .timeout(Duration::from_secs(3))
                            .connect_lazy()
                    })
                    .map_err(|e| Error::Member(e.to_string()))
            })
            .collect::<Result<Vec<_>>>()?;
        let members = (0..spec.nodes)
            .map(|_| Member {
                child: None,
                paused: false,
                joined: true,
                bootstrap: None,
            })
            .collect();
        let cluster = Self {
            token: format!("chaos-{}", std::process::id()),
            hosts,
            spec,
            data,
            members: Mutex::new(members),
            channels,
        };
        for i in 0..cluster.spec.nodes {
            cluster.spawn(i, "new")?;
        }
        cluster.await_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    /// Number of member slots.
    pub fn nodes(&self) -> usize {
        self.spec.nodes
    }

    fn peer_url(&self, i: usize) -> String {
        format!(
            "http://{}:{}",
            self.hosts.member_ip(i),
            self.hosts.ports(i).1
        )
    }

    fn initial_cluster(&self, only_joined: bool) -> String {
        let members = self.members.lock();
        (0..self.spec.nodes)
            .filter(|&i| !only_joined || members[i].joined)
            .map(|i| format!("n{i}={}", self.peer_url(i)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn data_dir(&self, i: usize) -> PathBuf {
        self.data.path().join(format!("n{i}"))
    }

    /// Starts member `i` with `--initial-cluster-state state`.
    fn spawn(&self, i: usize, state: &str) -> Result<()> {
        let (client, peer) = self.hosts.ports(i);
        let ip = self.hosts.member_ip(i);
        let log_path = self.spec.log_dir.join(format!("n{i}.log"));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)?;
        let fresh = (state.to_string(), self.initial_cluster(state == "existing"));
        let (state, initial_cluster) = self.members.lock()[i]
            .bootstrap
            .get_or_insert(fresh)
            .clone();
        let mut cmd = self.hosts.command(i, &self.spec.binary);
        cmd.args(["--name", &format!("n{i}")])
            .arg("--data-dir")
            .arg(self.data_dir(i))
            .args(["--listen-client-urls", &format!("http://{ip}:{client}")])
            .args(["--advertise-client-urls", &format!("http://{ip}:{client}")])
            .args(["--listen-peer-urls", &format!("http://{ip}:{peer}")])
            .args([
                "--initial-advertise-peer-urls",
                &format!("http://{ip}:{peer}"),
            ])
            .args(["--initial-cluster", &initial_cluster])
            .args(["--initial-cluster-state", &state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--snapshot-count", &self.spec.snapshot_count.to_string()])
            .args(["--heartbeat-interval", "100", "--election-timeout", "1000"])
            .args(["--experimental-watch-progress-notify-interval", "2s"])
            .arg("--unsafe-no-fsync")
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            // Its own process group: a Ctrl-C at the terminal reaches the harness only, which
            // then heals and stops the members itself.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd
            .spawn()
            .map_err(|e| Error::Member(format!("start {}: {e}", self.spec.binary.display())))?;
        let mut members = self.members.lock();
        members[i].child = Some(child);
        members[i].paused = false;
        Ok(())
    }

    /// SIGKILLs member `i` (no-op if not running).
    pub fn kill(&self, i: usize) {
        let mut members = self.members.lock();
        if let Some(mut child) = members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        members[i].paused = false;
    }

    /// Restarts member `i` on its existing data if it is not running and still a member.
    pub fn restart(&self, i: usize) -> Result<()> {
        let needed = {
            let m = &self.members.lock()[i];
            m.child.is_none() && m.joined
        };
        if needed {
            self.spawn(i, "new")?;
        }
        Ok(())
    }

    /// SIGSTOP (`true`) or SIGCONT (`false`) member `i`.
    pub fn pause(&self, i: usize, stop: bool) {
        let mut members = self.members.lock();
        let m = &mut members[i];
        if let Some(child) = &m.child {
            let signal = if stop { Signal::STOP } else { Signal::CONT };
            if let Some(pid) = Pid::from_raw(child.id() as i32) {
                let _ = kill_process(pid, signal);
            }
            m.paused = stop;
        }
    }

    /// Resumes every paused member and restarts every killed one.
    pub fn heal_processes(&self) -> Result<()> {
        for i in 0..self.spec.nodes {
            self.pause(i, false);
            self.restart(i)?;
        }
        Ok(())
    }

    /// Whether member `i` is currently a voting member slot that is running.
    pub fn is_running(&self, i: usize) -> bool {
        let m = &self.members.lock()[i];
        m.child.is_some() && !m.paused && m.joined
    }

    /// A KV client to member `i`.
    pub fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channels[i].clone())
    }

    /// A Watch client to member `i`.
    pub fn watch(&self, i: usize) -> WatchClient<Channel> {
        WatchClient::new(self.channels[i].clone())
    }

    /// A Lease client to member `i`.
    pub fn lease(&self, i: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channels[i].clone())
    }

    fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channels[i].clone())
    }

    fn cluster_api(&self, i: usize) -> ClusterClient<Channel> {
        ClusterClient::new(self.channels[i].clone())
    }

    /// Member `i`'s status: (its member id, the leader's member id).
    pub async fn status(&self, i: usize) -> Result<(u64, u64)> {
        let s = self
            .maintenance(i)
            .status(StatusRequest {})
            .await?
            .into_inner();
        let id = s.header.map(|h| h.member_id).unwrap_or_default();
        Ok((id, s.leader))
    }

    /// The index of the current leader, as the running members see it.
    pub async fn leader(&self) -> Option<usize> {
        let mut ids = vec![None; self.spec.nodes];
        let mut leader_id = None;
        for (i, slot) in ids.iter_mut().enumerate() {
            if !self.is_running(i) {
                continue;
            }
            if let Ok((id, leader)) = self.status(i).await {
                *slot = Some(id);
                if leader != 0 {
                    leader_id = Some(leader);
                }
            }
        }
        let leader_id = leader_id?;
        ids.iter().position(|id| *id == Some(leader_id))
    }

    /// Waits until some member reports a leader.
    pub async fn await_leader(&self, within: Duration) -> Result<usize> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(l) = self.leader().await {
                return Ok(l);
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::Member(format!("no leader within {within:?}")));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Asks the leader to hand leadership to member `to`.
    pub async fn move_leader(&self, leader: usize, to: usize) -> Result<()> {
        let (target, _) = self.status(to).await?;
        self.maintenance(leader)
            .move_leader(MoveLeaderRequest { target_id: target })
            .await?;
        Ok(())
    }

    /// Compacts up to `revision` through member `i`.
    pub async fn compact(&self, i: usize, revision: i64) -> Result<()> {
        self.kv(i)
            .compact(kvstore_proto::etcdserverpb::CompactionRequest {
                revision,
                physical: false,
            })
            .await?;
        Ok(())
    }

    /// Member `i`'s current revision.
    pub async fn revision(&self, i: usize) -> Result<i64> {
        let r = self
            .kv(i)
            .range(kvstore_proto::etcdserverpb::RangeRequest {
                key: b"\0".to_vec(),
                limit: 1,
                serializable: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        Ok(r.header.map(|h| h.revision).unwrap_or_default())
    }

    /// HashKV of member `i` at `revision`: (hash, compact revision).
    pub async fn hash_kv(&self, i: usize, revision: i64) -> Result<(u32, i64)> {
        let r = self
            .maintenance(i)
            .hash_kv(HashKvRequest { revision })
            .await?
            .into_inner();
        Ok((r.hash, r.compact_revision))
    }

    /// Membership churn, step 1: removes member `i` (through `via`) and stops it.
    pub async fn remove_member(&self, via: usize, i: usize) -> Result<()> {
        let (id, _) = self.status(i).await?;
        self.cluster_api(via)
            .member_remove(MemberRemoveRequest { id })
            .await?;
        self.kill(i);
        {
            let mut members = self.members.lock();
            members[i].joined = false;
            members[i].bootstrap = None;
        }
        let _ = std::fs::remove_dir_all(self.data_dir(i));
        Ok(())
    }

    /// Membership churn, step 2: adds member `i` back as a learner with empty data, starts it,
    /// and promotes it once it has caught up (retrying while the leader refuses).
    pub async fn add_back(&self, via: usize, i: usize) -> Result<()> {
        let added = self
            .cluster_api(via)
            .member_add(MemberAddRequest {
                peer_ur_ls: vec![self.peer_url(i)],
                is_learner: true,
            })
            .await?
            .into_inner();
        let id = added.member.map(|m| m.id).unwrap_or_default();
        self.members.lock()[i].joined = true;
        self.spawn(i, "existing")?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let promoted = self
                .cluster_api(via)
                .member_promote(MemberPromoteRequest { id })
                .await;
            match promoted {
                Ok(_) => return Ok(()),
                Err(status) if tokio::time::Instant::now() < deadline => {
                    tracing::debug!(%status, "promote refused; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(status) => return Err(status.into()),
            }
        }
    }

    /// Members the cluster lists (for checks after churn).
    pub async fn member_count(&self, via: usize) -> Result<usize> {
        Ok(self
            .cluster_api(via)
            .member_list(MemberListRequest {
                linearizable: false,
            })
            .await?
            .into_inner()
            .members
            .len())
    }

    /// Whether member `i` has been removed and not yet re-added.
    pub fn is_removed(&self, i: usize) -> bool {
        !self.members.lock()[i].joined
    }

    /// The data directory root (for the report).
    pub fn data_root(&self) -> &Path {
        self.data.path()
    }

    /// Kills every member.
    pub fn stop_all(&self) {
        for i in 0..self.spec.nodes {
            self.pause(i, false);
            self.kill(i);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop_all();
    }
}
