//! Helpers shared by the multi-process tests: a real single-member `kvstore` process on free
//! loopback ports with a temporary data directory, killed when dropped.

#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kvstore_proto::etcdserverpb::{kv_client::KvClient, watch_client::WatchClient};
use tonic::transport::Channel;

/// How long a member may take to start accepting connections.
const START_TIMEOUT: Duration = Duration::from_secs(30);

#[path = "../support/ports.rs"]
mod ports;
pub use ports::free_port;

/// One running `kvstore` member; killed (SIGKILL) and its data removed when dropped.
pub struct Server {
    /// The process.
    child: Child,
    /// Its data directory and log, removed after the process is killed.
    dir: tempfile::TempDir,
    /// `http://127.0.0.1:PORT` of its client listener.
    pub client_url: String,
}

impl Server {
    /// Starts a member named `name` and waits until it accepts client connections.
    pub fn start(name: &str) -> Self {
        Self::start_with_env(name, &[])
    }

    /// Starts a member with extra environment variables (e.g. `KVSTORE_*` settings).
    pub fn start_with_env(name: &str, env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let client_port = free_port();
        let peer_port = free_port();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let log = std::fs::File::create(dir.path().join("kvstore.log")).expect("log file");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kvstore"));
        cmd.arg("--name")
            .arg(name)
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--listen-client-urls")
            .arg(&client_url)
            .arg("--advertise-client-urls")
            .arg(&client_url)
            .arg("--listen-peer-urls")
            .arg(&peer_url)
            .arg("--initial-advertise-peer-urls")
            .arg(&peer_url)
            .arg("--initial-cluster")
            .arg(format!("{name}={peer_url}"))
            .arg("--unsafe-no-fsync")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start kvstore");
        let mut server = Server {
            child,
            dir,
            client_url,
        };
        server.wait_until_listening(client_port);
        server
    }

    fn wait_until_listening(&mut self, port: u16) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "kvstore exited with {status} before listening:\n{}",
                    self.log()
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return;
            }
            if Instant::now() > deadline {
                panic!(
                    "kvstore did not listen within {START_TIMEOUT:?}:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The member's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("kvstore.log")).unwrap_or_default()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The process's resident set size in KiB (`VmRSS` of `/proc/PID/status`).
    pub fn rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// A new gRPC connection to the member (each on its own HTTP/2 connection, so a stream
    /// left unread on one cannot stall requests on another).
    pub async fn channel(&self) -> Channel {
        Channel::from_shared(self.client_url.clone())
            .expect("valid URL")
            .connect()
            .await
            .expect("connect to kvstore")
    }

    /// A KV client on its own connection.
    pub async fn kv(&self) -> KvClient<Channel> {
        KvClient::new(self.channel().await)
    }

    /// A Watch client on its own connection.
    pub async fn watch(&self) -> WatchClient<Channel> {
        WatchClient::new(self.channel().await)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
