//! A cluster of real `kvstore` processes on loopback for multi-process tests: start, SIGKILL,
//! restart, pause (SIGSTOP) and resume members, find the leader, open clients. Included with
//! `#[path]` by the test files that use it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::{
    kv_client::KvClient, lease_client::LeaseClient, maintenance_client::MaintenanceClient,
    StatusRequest, StatusResponse,
};
use tonic::transport::Channel;

/// The members' election timeout (the `--election-timeout` default).
pub const ELECTION_TIMEOUT: Duration = Duration::from_millis(1000);
/// The bound on every wait for the cluster to recover: generous, for loaded machines.
pub const RECOVERY: Duration = Duration::from_secs(30);

#[path = "ports.rs"]
mod ports;
pub use ports::free_port;

/// One member's process and addresses.
pub struct Member {
    /// Its `--name`.
    name: String,
    /// Its client port.
    client: u16,
    /// Its peer port.
    peer: u16,
    /// The process, while it runs (stopped or not).
    child: Option<Child>,
    /// Whether the process is stopped with SIGSTOP: it holds its sockets but answers nothing,
    /// so nobody should wait for it.
    paused: bool,
    /// The user ID the process runs as (`None`: this process's), so that firewall rules can
    /// match its packets by owner.
    uid: Option<u32>,
}

/// A cluster of real processes sharing one temp dir; killed on drop, printing the members'
/// logs if the test failed.
pub struct Cluster {
    /// Data directories and logs of every member.
    dir: tempfile::TempDir,
    members: Vec<Member>,
    /// The `--initial-cluster` flag.
    initial: String,
    /// Flags added to every member's command line.
    extra_args: Vec<String>,
    /// The `kvstore` binary members run (a copy inside `dir` when members run as other
    /// users, who may not reach the build directory).
    binary: PathBuf,
}

/// Spawns `command`, retrying while its binary is "busy". A binary just copied (see
/// [`Cluster::start_as`]) can be: a process forked by another thread (another test's member,
/// an `nft` call) while the copy's file was open for writing holds that descriptor until it
/// execs, and until then exec of the copy fails with ETXTBSY.
fn spawn_retrying(command: &mut Command) -> std::process::Child {
    let mut tries = 0;
    loop {
        match command.spawn() {
            Ok(child) => return child,
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => panic!("start kvstore: {e}"),
        }
    }
}

impl Cluster {
    pub fn start(n: usize) -> Self {
        Self::start_with(n, &[])
    }

    /// Starts `n` members with `extra_args` added to each command line.
    pub fn start_with(n: usize, extra_args: &[&str]) -> Self {
        Self::start_as(n, extra_args, &[])
    }

    /// Like [`Cluster::start_with`], member `i` running as user `uids[i]` (members past the
    /// end of `uids` run as this process's user). Needs root.
    pub fn start_as(n: usize, extra_args: &[&str], uids: &[u32]) -> Self {
        let mut cluster = Self::unstarted(n, extra_args, uids);
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster
    }

    /// The cluster of [`Cluster::start_as`] with no member started yet ([`Cluster::spawn`]
    /// starts one).
    pub fn unstarted(n: usize, extra_args: &[&str], uids: &[u32]) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut binary = PathBuf::from(env!("CARGO_BIN_EXE_kvstore"));
        if !uids.is_empty() {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777))
                .expect("open the cluster dir to other users");
            let copy = dir.path().join("kvstore");
            std::fs::copy(&binary, &copy).expect("copy the kvstore binary");
            binary = copy;
        }
        let members: Vec<Member> = (0..n)
            .map(|i| Member {
                name: format!("m{i}"),
                client: free_port(),
                peer: free_port(),
                child: None,
                paused: false,
                uid: uids.get(i).copied(),
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer))
            .collect::<Vec<_>>()
            .join(",");
        Self {
            dir,
            members,
            initial,
            extra_args: extra_args.iter().map(|a| (*a).to_owned()).collect(),
            binary,
        }
    }

    pub fn data_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(&self.members[i].name)
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir
            .path()
            .join(format!("{}.log", self.members[i].name))
    }

    pub fn spawn(&mut self, i: usize) {
        let data_dir = self.data_dir(i);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("log file");
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client);
        let peer = format!("http://127.0.0.1:{}", m.peer);
        let mut command = Command::new(&self.binary);
        if let Some(uid) = m.uid {
            std::os::unix::process::CommandExt::uid(&mut command, uid);
        }
        command
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
                "failover-test",
                "--log-level",
                "warn",
            ])
            .args(&self.extra_args)
            .stdout(Stdio::null())
            .stderr(log);
        let child = spawn_retrying(&mut command);
        self.members[i].child = Some(child);
        self.members[i].paused = false;
    }

    /// Starts member `i` once with `extra` flags added to the cluster's.
    pub fn spawn_with(&mut self, i: usize, extra: &[&str]) {
        let saved = self.extra_args.clone();
        self.extra_args
            .extend(extra.iter().map(|a| (*a).to_owned()));
        self.spawn(i);
        self.extra_args = saved;
    }

    /// Waits up to `limit` for member `i`'s process to exit by itself; its exit status.
    pub fn wait_exit(&mut self, i: usize, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            let child = self.members[i].child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                self.members[i].child = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL member `i` (works on a paused member too).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.members[i].paused = false;
    }

    /// Sends `signal` (`-STOP`, `-CONT`) to member `i`'s process.
    pub fn signal(&self, i: usize, signal: &str) {
        let pid = self.members[i]
            .child
            .as_ref()
            .expect("a running member")
            .id()
            .to_string();
        let status = Command::new("kill")
            .args([signal, &pid])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {pid}: {status}");
    }

    /// SIGSTOP member `i`: it keeps its sockets open but runs nothing.
    pub fn pause(&mut self, i: usize) {
        self.signal(i, "-STOP");
        self.members[i].paused = true;
    }

    /// SIGCONT member `i`.
    pub fn resume(&mut self, i: usize) {
        self.signal(i, "-CONT");
        self.members[i].paused = false;
    }

    /// Members running and not paused.
    pub fn live(&self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].child.is_some() && !self.members[i].paused)
            .collect()
    }

    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client)
    }

    /// Member `i`'s peer port.
    pub fn peer_port(&self, i: usize) -> u16 {
        self.members[i].peer
    }

    /// Member `i`'s client port.
    pub fn client_port(&self, i: usize) -> u16 {
        self.members[i].client
    }

    pub async fn channel(&self, i: usize) -> Channel {
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

    pub async fn kv(&self, i: usize) -> KvClient<Channel> {
        KvClient::new(self.channel(i).await)
    }

    pub async fn lease(&self, i: usize) -> LeaseClient<Channel> {
        LeaseClient::new(self.channel(i).await)
    }

    pub async fn maintenance(&self, i: usize) -> MaintenanceClient<Channel> {
        MaintenanceClient::new(self.channel(i).await)
    }

    /// Member `i`'s status, or `None` if it does not answer within 2 s.
    pub async fn status(&self, i: usize) -> Option<StatusResponse> {
        let mut c = self.maintenance(i).await;
        match tokio::time::timeout(Duration::from_secs(2), c.status(StatusRequest {})).await {
            Ok(Ok(s)) => Some(s.into_inner()),
            _ => None,
        }
    }

    /// The index of the member, one of `among`, that every member of `among` agrees leads,
    /// waiting up to [`RECOVERY`].
    pub async fn leader_among(&self, among: &[usize]) -> usize {
        let deadline = Instant::now() + RECOVERY;
        loop {
            let mut seen = Vec::new();
            for &i in among {
                if let Some(s) = self.status(i).await {
                    seen.push((s.leader, s.header.map_or(0, |h| h.member_id), i));
                }
            }
            if seen.len() == among.len() {
                if let Some((leader, _, _)) = seen.first() {
                    if *leader != 0 && seen.iter().all(|(l, _, _)| l == leader) {
                        if let Some((_, _, i)) = seen.iter().find(|(_, id, _)| id == leader) {
                            return *i;
                        }
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader among {among:?}: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The leader every running, unpaused member agrees on.
    pub async fn leader(&self) -> usize {
        self.leader_among(&self.live()).await
    }

    /// The last 20 lines of every member's log.
    pub fn log_tails(&self) -> String {
        let mut out = String::new();
        for i in 0..self.members.len() {
            let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {} log ---\n", self.members[i].name));
            for line in &lines[lines.len().saturating_sub(20)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tails());
        }
    }
}
