//! Real `kvstore` processes and real `etcdctl` for the multi-process tests that drive a
//! cluster the way an operator does. Included with `#[path]` by the test files that use it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const ETCDCTL: &str = "/usr/bin/etcdctl";

#[path = "ports.rs"]
mod ports;
pub use ports::free_port;

/// A kvstore process, killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub struct Spec {
    pub name: String,
    pub client: u16,
    pub peer: u16,
}

impl Spec {
    pub fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            client: free_port(),
            peer: free_port(),
        }
    }

    pub fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer)
    }

    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client)
    }
}

/// The cluster token the tests' clusters use.
pub const TOKEN: &str = "membership-test";

/// Starts a member with the tests' token and default flags.
pub fn start(dir: &Path, spec: &Spec, initial_cluster: &str, state: &str) -> Proc {
    start_with(dir, spec, initial_cluster, state, TOKEN, &[])
}

/// Starts a member with a given cluster token and extra flags.
pub fn start_with(
    dir: &Path,
    spec: &Spec,
    initial_cluster: &str,
    state: &str,
    token: &str,
    extra: &[&str],
) -> Proc {
    let client = format!("http://127.0.0.1:{}", spec.client);
    let log = std::fs::File::create(dir.join(format!("{}.log", spec.name))).expect("log");
    let child = Command::new(env!("CARGO_BIN_EXE_kvstore"))
        .args(["--name", &spec.name])
        .arg("--data-dir")
        .arg(dir.join(&spec.name))
        .args([
            "--listen-client-urls",
            &client,
            "--advertise-client-urls",
            &client,
        ])
        .args(["--listen-peer-urls", &spec.peer_url()])
        .args(["--initial-advertise-peer-urls", &spec.peer_url()])
        .args(["--initial-cluster", initial_cluster])
        .args(["--initial-cluster-state", state])
        .args(["--initial-cluster-token", token])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start kvstore");
    Proc(child)
}

pub fn etcdctl(endpoints: &str, args: &[&str]) -> Output {
    Command::new(ETCDCTL)
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .args(args)
        .output()
        .expect("run etcdctl")
}

pub fn ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The member ID `etcdctl member list` shows for `name`.
pub fn list_id(endpoints: &str, name: &str) -> String {
    let list = ok(&etcdctl(endpoints, &["member", "list"]), "member list");
    list.lines()
        .find(|l| l.contains(&format!(", {name}, ")))
        .and_then(|l| l.split(',').next())
        .unwrap_or_else(|| panic!("{name} not in {list}"))
        .to_string()
}

/// Retries `f` until it returns Some or `limit` passes.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The `kvctl` binary next to `kvstore`, built if `cargo test` did not build it.
pub fn kvctl_binary() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_kvstore")).with_file_name("kvctl");
    if !path.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .args(["build", "-p", "kvctl"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p kvctl");
        assert!(status.success(), "cargo build -p kvctl failed");
    }
    path
}

/// A cluster started by [`start_cluster`].
pub struct StartedCluster {
    /// Its members, in the order of the names given.
    pub specs: Vec<Spec>,
    /// The `--initial-cluster` flag they were started with.
    pub initial: String,
    /// Their processes (`None` once a test stopped one).
    pub procs: Vec<Option<Proc>>,
    /// Every client endpoint, comma-separated (etcdctl's `--endpoints`).
    pub all: String,
}

/// Starts a new cluster of members named `names` (with `extra` flags each) and waits until
/// `etcdctl endpoint health` passes on all of them.
pub fn start_cluster(dir: &Path, names: &[&str], extra: &[&str]) -> StartedCluster {
    let specs: Vec<Spec> = names.iter().map(|n| Spec::new(n)).collect();
    let initial = specs
        .iter()
        .map(|s| format!("{}={}", s.name, s.peer_url()))
        .collect::<Vec<_>>()
        .join(",");
    let procs = specs
        .iter()
        .map(|s| Some(start_with(dir, s, &initial, "new", TOKEN, extra)))
        .collect();
    let all = specs
        .iter()
        .map(Spec::endpoint)
        .collect::<Vec<_>>()
        .join(",");
    eventually(Duration::from_secs(30), "a healthy cluster", || {
        etcdctl(&all, &["endpoint", "health"])
            .status
            .success()
            .then_some(())
    });
    StartedCluster {
        specs,
        initial,
        procs,
        all,
    }
}
