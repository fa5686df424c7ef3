//! Differential test against the real thing: the scenario in `tests/compat/scenario.txt` runs
//! through real `etcdctl` against real etcd 3.4 (the reference), then through `etcdctl` against
//! kvstore, and through `kvctl` against both. Every command's stdout, stderr and exit code must
//! match the reference once the masks below are applied; each mask says why the difference is
//! legitimate. All four runs use the same name, ports and cluster token, so even member and
//! cluster IDs are compared unmasked.
//!
//! Needs Debian's `etcd-server` and `etcd-client` (`.ci/run` installs them). Without them the
//! test fails under CI and is skipped with a message elsewhere.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[path = "support/members.rs"]
mod members;

use members::kvctl_binary;

const ETCD: &str = "/usr/bin/etcd";
const ETCDCTL: &str = "/usr/bin/etcdctl";
const NAME: &str = "default";

/// A server process, killed when dropped.
struct Server {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

use members::free_port;

fn start(binary: &str, client: u16, peer: u16) -> Server {
    let dir = tempfile::tempdir().expect("tempdir");
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let mut cmd = Command::new(binary);
    cmd.args([
        "--name",
        NAME,
        "--data-dir",
        &dir.path().join("data").to_string_lossy(),
        "--listen-client-urls",
        &client_url,
        "--advertise-client-urls",
        &client_url,
        "--listen-peer-urls",
        &peer_url,
        "--initial-advertise-peer-urls",
        &peer_url,
        "--initial-cluster",
        &format!("{NAME}={peer_url}"),
        "--initial-cluster-token",
        "compat-test",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("start {binary}: {e}"));
    let server = Server { child, _dir: dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let ok = Command::new(ETCDCTL)
            .env("ETCDCTL_API", "3")
            .args([
                &format!("--endpoints=127.0.0.1:{client}"),
                "endpoint",
                "health",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        if ok {
            return server;
        }
        assert!(Instant::now() < deadline, "{binary} did not become healthy");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn wait_port_free(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// What one command printed.
#[derive(Clone, Debug, PartialEq)]
struct Outcome {
    line: String,
    stdout: String,
    stderr: String,
    code: Option<i32>,
}

/// Splits a command line like a shell would for our simple needs: spaces, and "double quotes".
fn split_args(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut cur = String::new();
    let mut in_quotes = false;
    let mut has_arg = false;
    for c in line.chars() {
        match c {
            '"' => {
                in_quotes = !in_quotes;
                has_arg = true;
            }
            ' ' if !in_quotes => {
                if has_arg {
                    args.push(std::mem::take(&mut cur));
                    has_arg = false;
                }
            }
            _ => {
                cur.push(c);
                has_arg = true;
            }
        }
    }
    if has_arg {
        args.push(cur);
    }
    args
}

/// Runs the scenario with `ctl` against the server on `client`.
fn run_scenario(ctl: &Path, client: u16) -> (Vec<Outcome>, HashMap<String, String>) {
    let scenario = include_str!("compat/scenario.txt");
    let mut vars: HashMap<String, String> = HashMap::new();
    let mut out = Vec::new();
    for raw in scenario.lines() {
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut rest = line;
        let mut stdin = None;
        let mut timeout = None;
        let mut capture = None;
        while let Some(directive) = rest.strip_prefix('@') {
            // `@stdin=` runs to " :: " (its text has spaces); other directives to a space.
            let (d, tail) = if directive.starts_with("stdin=") {
                directive.split_once(" :: ").unwrap_or((directive, ""))
            } else {
                directive.split_once(' ').unwrap_or((directive, ""))
            };
            let (k, v) = d.split_once('=').unwrap_or((d, ""));
            match k {
                "stdin" => stdin = Some(v.replace("\\n", "\n")),
                "timeout" => timeout = Some(Duration::from_secs(v.parse().expect("timeout secs"))),
                "capture" => capture = Some(v.to_string()),
                "sleep" => std::thread::sleep(Duration::from_secs(v.parse().expect("sleep secs"))),
                other => panic!("unknown directive @{other}"),
            }
            rest = tail.trim_start();
        }
        if rest.is_empty() {
            continue;
        }
        let mut expanded = rest.to_string();
        for (k, v) in &vars {
            expanded = expanded.replace(&format!("${k}"), v);
        }
        let mut cmd = Command::new(ctl);
        cmd.env("ETCDCTL_API", "3")
            .arg(format!("--endpoints=127.0.0.1:{client}"))
            .args(split_args(&expanded))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ctl");
        {
            let mut input = child.stdin.take().expect("stdin");
            if let Some(text) = &stdin {
                // A command that fails before reading its input closes the pipe; what it
                // printed is still compared.
                let _ = input.write_all(text.as_bytes());
            }
        }
        let code = match timeout {
            Some(t) => {
                std::thread::sleep(t);
                let _ = child.kill();
                let _ = child.wait();
                None
            }
            None => {
                let deadline = Instant::now() + Duration::from_secs(20);
                loop {
                    if let Some(status) = child.try_wait().expect("wait") {
                        break status.code();
                    }
                    if Instant::now() > deadline {
                        let _ = child.kill();
                        panic!("{rest}: no answer in 20 s");
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        let mut stdout = String::new();
        let mut stderr = String::new();
        child
            .stdout
            .take()
            .expect("stdout")
            .read_to_string(&mut stdout)
            .expect("read stdout");
        child
            .stderr
            .take()
            .expect("stderr")
            .read_to_string(&mut stderr)
            .expect("read stderr");
        if let Some(name) = capture {
            let id = stdout
                .split_whitespace()
                .skip_while(|w| *w != "lease")
                .nth(1)
                .unwrap_or_else(|| panic!("{rest}: no lease ID in {stdout:?}"))
                .to_string();
            vars.insert(name, id);
        }
        out.push(Outcome {
            line: line.to_string(),
            stdout,
            stderr,
            code,
        });
    }
    (out, vars)
}

/// Replaces every match of `pattern` (a tiny regex subset: literal prefix, then digits or a
/// non-space run) — kept dependency-free on purpose.
fn mask_after(text: &str, prefix: &str, what: fn(char) -> bool, with: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find(prefix) {
        out.push_str(&rest[..i + prefix.len()]);
        rest = &rest[i + prefix.len()..];
        let end = rest.find(|c: char| !what(c)).unwrap_or(rest.len());
        if end > 0 {
            out.push_str(with);
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The differences we accept, each with its reason.
fn mask(text: &str, vars: &HashMap<String, String>) -> String {
    let digit = |c: char| c.is_ascii_digit();
    let word = |c: char| !c.is_whitespace() && c != ',' && c != '"' && c != '}';
    // etcdctl's client library logs its retries as JSON lines on stderr (with timestamps and
    // random client IDs); they are not part of a command's output, and kvctl has none.
    let mut t: String = text
        .lines()
        .filter(|l| !l.starts_with("{\"level\":"))
        .map(|l| format!("{l}\n"))
        .collect();
    // Lease IDs are random on both servers (etcdctl prints them in hex, JSON in decimal).
    for v in vars.values() {
        t = t.replace(v.as_str(), "<LEASE>");
        if let Ok(n) = i64::from_str_radix(v, 16) {
            t = t.replace(&n.to_string(), "<LEASE>");
        }
    }
    // Raft terms: etcd elects itself in term 2; a single kvstore member runs without
    // elections. Raft indexes count different internal entries (etcd's config changes).
    t = mask_after(&t, "\"raft_term\":", digit, "<TERM>");
    t = mask_after(&t, "\"RaftTerm\" : ", digit, "<TERM>");
    t = mask_after(&t, "\"raftIndex\":", digit, "<INDEX>");
    t = mask_after(&t, "\"raftTerm\":", digit, "<TERM>");
    t = mask_after(&t, "\"raftAppliedIndex\":", digit, "<INDEX>");
    // Database sizes depend on the storage engine (bbolt pages vs RocksDB files).
    t = mask_after(&t, "\"dbSize\":", digit, "<SIZE>");
    t = mask_after(&t, "\"dbSizeInUse\":", digit, "<SIZE>");
    // kvstore reports the etcd API version it implements (3.5), etcd its own release.
    t = mask_after(&t, "\"version\":\"", |c| c != '"', "<VERSION>");
    // Timings.
    t = mask_after(&t, "took = ", word, "<TIME>");
    t = mask_after(&t, "remaining(", digit, "<TTL>");
    t
}

#[test]
fn etcdctl_and_kvctl_see_kvstore_as_they_see_etcd() {
    if !Path::new(ETCD).exists() || !Path::new(ETCDCTL).exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "etcd-server and etcd-client must be installed in CI"
        );
        eprintln!("SKIPPED: install etcd-server and etcd-client to run the differential test");
        return;
    }
    let kvctl = kvctl_binary();
    let client = free_port();
    let peer = free_port();
    let etcdctl = PathBuf::from(ETCDCTL);
    let runs: [(&str, &str, &Path); 4] = [
        ("etcdctl → etcd", ETCD, &etcdctl),
        ("etcdctl → kvstore", env!("CARGO_BIN_EXE_kvstore"), &etcdctl),
        ("kvctl → etcd", ETCD, &kvctl),
        ("kvctl → kvstore", env!("CARGO_BIN_EXE_kvstore"), &kvctl),
    ];
    let mut results = Vec::new();
    for (label, server, ctl) in runs {
        wait_port_free(client);
        wait_port_free(peer);
        let s = start(server, client, peer);
        let (outcomes, vars) = run_scenario(ctl, client);
        drop(s);
        let masked: Vec<Outcome> = outcomes
            .into_iter()
            .map(|o| Outcome {
                stdout: mask(&o.stdout, &vars),
                stderr: mask(&o.stderr, &vars),
                ..o
            })
            .collect();
        results.push((label, masked));
    }
    let (ref_label, reference) = &results[0];
    if let Some(path) = std::env::var_os("KVSTORE_COMPAT_DUMP") {
        let dump: String = reference
            .iter()
            .map(|o| {
                format!(
                    "$ {}\n{}{}[exit {:?}]\n",
                    o.line, o.stdout, o.stderr, o.code
                )
            })
            .collect();
        std::fs::write(path, dump).expect("write the dump");
    }
    let mut report = String::new();
    for (label, outcomes) in &results[1..] {
        assert_eq!(outcomes.len(), reference.len(), "{label}: command count");
        for (want, got) in reference.iter().zip(outcomes) {
            if want != got {
                report.push_str(&format!(
                    "\n=== {label} differs from {ref_label} on `{}`\n--- want stdout:\n{}--- got stdout:\n{}--- want stderr:\n{}--- got stderr:\n{}--- exit codes: want {:?}, got {:?}\n",
                    want.line, want.stdout, got.stdout, want.stderr, got.stderr, want.code, got.code
                ));
            }
        }
    }
    assert!(report.is_empty(), "differences from real etcd:{report}");
}
