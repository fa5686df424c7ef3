//! Real stores (kvstore members, etcd 3.4) on free loopback ports, in-process apiservers in
//! front of them, and the real clients the tests drive them with (kubectl, python3-kubernetes).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use apiserver::config::Options;
use apiserver::server::App;
use clap::Parser;
use serde_json::Value;

#[path = "../../../kvstore/tests/support/ports.rs"]
mod ports;
pub use ports::free_port;

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Retries `f` until it returns Some or `limit` passes.
pub fn eventually<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The kvstore binary: `$KVSTORE_BIN`, else `kvstore` next to the test executable's
/// `deps/` directory (built with `cargo build -p kvstore --bin kvstore` if missing).
pub fn kvstore_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KVSTORE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile> directory");
    let bin = dir.join("kvstore");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "kvstore", "--bin", "kvstore"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p kvstore");
        assert!(status.success(), "cargo build -p kvstore failed");
    }
    bin
}

/// Which store the apiserver runs against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Kvstore,
    Etcd,
}

/// A running store: one or more members and their client endpoints.
pub struct StoreCluster {
    pub procs: Vec<Option<Proc>>,
    pub endpoints: Vec<String>,
    pub dir: tempfile::TempDir,
}

impl StoreCluster {
    pub fn endpoints_csv(&self) -> String {
        self.endpoints.join(",")
    }

    /// Compacts the store at `rev` with etcdctl (works against kvstore and etcd alike).
    pub fn compact(&self, rev: i64) {
        let out = Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints[0]))
            .args(["compact", &rev.to_string()])
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl compact: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Stops member `i` (for failover tests).
    pub fn stop(&mut self, i: usize) {
        self.procs[i] = None;
    }
}

fn wait_healthy(endpoints: &str) {
    eventually(Duration::from_secs(30), "a healthy store", || {
        Command::new("/usr/bin/etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={endpoints}"))
            .args(["endpoint", "health"])
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|_| ())
    });
}

/// Starts a store of `members` members (kvstore) or a single etcd.
pub fn start_store(backend: Backend, members: usize) -> StoreCluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let specs: Vec<(String, u16, u16)> = (0..members)
        .map(|i| (format!("m{}", i + 1), free_port(), free_port()))
        .collect();
    let initial = specs
        .iter()
        .map(|(n, _, p)| format!("{n}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut procs = Vec::new();
    for (name, client, peer) in &specs {
        let c = format!("http://127.0.0.1:{client}");
        let p = format!("http://127.0.0.1:{peer}");
        let bin = match backend {
            Backend::Kvstore => kvstore_bin(),
            Backend::Etcd => PathBuf::from("/usr/bin/etcd"),
        };
        let log = std::fs::File::create(dir.path().join(format!("{name}.log"))).expect("log");
        let child = Command::new(bin)
            .args(["--name", name])
            .arg("--data-dir")
            .arg(dir.path().join(name))
            .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
            .args([
                "--listen-peer-urls",
                &p,
                "--initial-advertise-peer-urls",
                &p,
            ])
            .args([
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
            ])
            .args(["--initial-cluster-token", "apiserver-test"])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start the store");
        procs.push(Some(Proc(child)));
    }
    let endpoints: Vec<String> = specs
        .iter()
        .map(|(_, c, _)| format!("http://127.0.0.1:{c}"))
        .collect();
    wait_healthy(&endpoints.join(","));
    StoreCluster {
        procs,
        endpoints,
        dir,
    }
}

/// An apiserver running in this process on its own runtime thread.
pub struct Apiserver {
    pub url: String,
    pub app: Arc<App>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Apiserver {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Apiserver {
    /// Starts a plain-HTTP apiserver against `endpoints` with extra flags.
    pub fn start(endpoints: &str, extra: &[&str]) -> Apiserver {
        let mut args = vec!["--watch-bookmark-interval", "1"];
        args.extend_from_slice(extra);
        Self::launch(endpoints, &args, false)
    }

    /// Starts an HTTPS apiserver (the flags must carry the TLS files).
    pub fn start_tls(endpoints: &str, extra: &[&str]) -> Apiserver {
        Self::launch(endpoints, extra, true)
    }

    fn launch(endpoints: &str, extra: &[&str], tls: bool) -> Apiserver {
        let mut args = vec!["kvstore-apiserver", "--etcd-servers", endpoints];
        args.extend_from_slice(extra);
        let opts = Options::try_parse_from(args).expect("flags");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (app, url) = rt.block_on(async {
            let app = App::new(&opts).expect("app");
            let l = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let port = l.local_addr().expect("addr").port();
            let url = if tls {
                let config = apiserver::tls::server_config(
                    opts.tls_cert_file.as_deref().expect("--tls-cert-file"),
                    opts.tls_private_key_file
                        .as_deref()
                        .expect("--tls-private-key-file"),
                    opts.client_ca_file.as_deref(),
                )
                .expect("tls config");
                tokio::spawn(apiserver::server::serve_tls(l, app.clone(), config));
                format!("https://127.0.0.1:{port}")
            } else {
                tokio::spawn(apiserver::server::serve_insecure(l, app.clone()));
                format!("http://127.0.0.1:{port}")
            };
            apiserver::server::bootstrap(&app).await;
            (app, url)
        });
        Apiserver {
            url,
            app,
            runtime: Some(rt),
        }
    }

    /// The watch hub of pods, to count its subscribers.
    pub fn pods_hub(&self) -> Arc<apiserver::watchcache::Hub> {
        let pods = apiserver::resources::lookup("", "v1", "pods").expect("pods");
        self.app.registry.hub(pods).expect("pods hub").clone()
    }

    /// Runs a future on the apiserver's runtime (to look at its internals).
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.as_ref().expect("runtime").block_on(f)
    }

    /// A kubeconfig for this plain-HTTP server, written into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!(
            "kubeconfig-{}",
            self.url.rsplit(':').next().unwrap_or("x")
        ));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: t\n  cluster:\n    server: {}\ncontexts:\n- name: t\n  context:\n    cluster: t\n    namespace: default\ncurrent-context: t\nusers: []\n",
            self.url
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }
}

/// A small blocking JSON client for the REST API.
pub struct Client {
    pub base: String,
    pub http: reqwest::blocking::Client,
    pub token: Option<String>,
}

/// A response: status code and JSON body (Null if not JSON).
#[derive(Debug)]
pub struct Resp {
    pub code: u16,
    pub body: Value,
    /// The body as text (for messages when it is not JSON).
    pub raw: String,
}

impl Client {
    pub fn new(base: &str) -> Self {
        Client {
            base: base.to_string(),
            http: reqwest::blocking::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("http client"),
            token: None,
        }
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
        content_type: &str,
    ) -> Resp {
        let m = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut req = self.http.request(m, format!("{}{}", self.base, path));
        if let Some(b) = body {
            req = req.header("Content-Type", content_type).body(b.to_vec());
        }
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("request");
        let code = resp.status().as_u16();
        let bytes = resp.bytes().expect("body");
        Resp {
            code,
            body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            raw: String::from_utf8_lossy(&bytes).chars().take(300).collect(),
        }
    }

    pub fn get(&self, path: &str) -> Resp {
        self.request("GET", path, None, "")
    }

    pub fn post(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "POST",
            path,
            Some(body.to_string().as_bytes()),
            "application/json",
        )
    }

    pub fn put(&self, path: &str, body: &Value) -> Resp {
        self.request(
            "PUT",
            path,
            Some(body.to_string().as_bytes()),
            "application/json",
        )
    }

    pub fn patch(&self, path: &str, body: &Value, ct: &str) -> Resp {
        self.request("PATCH", path, Some(body.to_string().as_bytes()), ct)
    }

    pub fn delete(&self, path: &str) -> Resp {
        self.request("DELETE", path, None, "")
    }

    /// Opens a watch and returns a reader of its lines (events).
    pub fn watch(&self, path: &str) -> WatchReader {
        let client = reqwest::blocking::Client::builder()
            .timeout(None)
            .build()
            .expect("client");
        let mut req = client.get(format!("{}{}", self.base, path));
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().expect("watch");
        assert_eq!(resp.status().as_u16(), 200, "watch {path}");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let reader = std::io::BufReader::new(resp);
            for line in reader.lines() {
                let Ok(line) = line else { break };
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send(v).is_err() {
                        break;
                    }
                }
            }
        });
        WatchReader { rx }
    }
}

/// The events of one watch, as they arrive.
pub struct WatchReader {
    pub rx: std::sync::mpsc::Receiver<Value>,
}

impl WatchReader {
    /// The next event that is not a BOOKMARK.
    pub fn next_event(&self) -> Value {
        loop {
            let ev = self
                .rx
                .recv_timeout(Duration::from_secs(15))
                .expect("a watch event within 15 s");
            if ev["type"] != "BOOKMARK" {
                return ev;
            }
        }
    }

    /// The next event of any type.
    pub fn next_any(&self) -> Value {
        self.rx
            .recv_timeout(Duration::from_secs(15))
            .expect("a watch event within 15 s")
    }
}

/// The kubectl to test with: `$KUBECTL`, else `kubectl` on PATH (installing Debian's
/// `kubernetes-client` if there is none).
pub fn kubectl_bin() -> PathBuf {
    if let Ok(p) = std::env::var("KUBECTL") {
        return PathBuf::from(p);
    }
    let found = Command::new("sh")
        .args(["-c", "command -v kubectl"])
        .output();
    if let Ok(o) = &found {
        if o.status.success() {
            return PathBuf::from(String::from_utf8_lossy(&o.stdout).trim().to_string());
        }
    }
    apt_install(&["kubernetes-client"]);
    PathBuf::from("/usr/bin/kubectl")
}

/// `/usr/bin/python3` with the `kubernetes` module (installing python3-kubernetes if needed).
pub fn python_with_kubernetes() -> PathBuf {
    let py = PathBuf::from("/usr/bin/python3");
    let ok = Command::new(&py)
        .args(["-c", "import kubernetes"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        apt_install(&["python3-kubernetes"]);
    }
    py
}

fn apt_install(pkgs: &[&str]) {
    let sudo = if Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0"))
    {
        vec![]
    } else {
        vec!["sudo"]
    };
    let run = |args: &[&str]| {
        let mut cmd: Vec<&str> = sudo.clone();
        cmd.extend_from_slice(args);
        Command::new(cmd[0])
            .args(&cmd[1..])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .expect("run apt-get")
    };
    run(&["apt-get", "update", "-qq"]);
    let mut install = vec!["apt-get", "install", "-y", "-qq", "--no-install-recommends"];
    install.extend_from_slice(pkgs);
    assert!(run(&install).success(), "apt-get install {pkgs:?} failed");
}

/// Runs kubectl with a kubeconfig; returns the output.
pub fn kubectl(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new(kubectl_bin());
    cmd.arg("--kubeconfig").arg(kubeconfig).args(args);
    if let Some(input) = stdin {
        use std::io::Write;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run kubectl");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(input.as_bytes())
            .expect("write stdin");
        child.wait_with_output().expect("kubectl output")
    } else {
        cmd.output().expect("run kubectl")
    }
}

/// kubectl's stdout, asserting success.
pub fn kubectl_ok(kubeconfig: &Path, args: &[&str], stdin: Option<&str>) -> String {
    let out = kubectl(kubeconfig, args, stdin);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
