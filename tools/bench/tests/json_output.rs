//! kvbench against one real kvstore member: tiny workloads whose JSON reports must add up
//! (every operation counted once, no errors, ordered percentiles, every watch event delivered).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const KVBENCH: &str = env!("CARGO_BIN_EXE_kvbench");

/// The kvstore binary: `$KVSTORE_BIN`, or the one cargo built next to kvbench
/// (`cargo test --workspace` builds it; alone, run `cargo build -p kvstore --bin kvstore`).
fn kvstore_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("KVSTORE_BIN") {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(KVBENCH).with_file_name("kvstore");
    assert!(
        p.exists(),
        "{} not found: build it first with `cargo build -p kvstore --bin kvstore` or set KVSTORE_BIN",
        p.display()
    );
    p
}

#[path = "../../../kvstore/tests/support/ports.rs"]
mod ports;
use ports::free_port;

/// One kvstore member, killed when dropped.
struct Member {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_member() -> Member {
    let dir = tempfile::tempdir().expect("temp dir");
    let (client, peer) = (free_port(), free_port());
    let c = format!("http://127.0.0.1:{client}");
    let p = format!("http://127.0.0.1:{peer}");
    let child = Command::new(kvstore_binary())
        .args(["--name", "m1", "--data-dir"])
        .arg(dir.path().join("m1"))
        .args(["--listen-client-urls", &c, "--advertise-client-urls", &c])
        .args([
            "--listen-peer-urls",
            &p,
            "--initial-advertise-peer-urls",
            &p,
        ])
        .args(["--initial-cluster", &format!("m1={p}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start kvstore");
    let member = Member {
        child,
        endpoint: format!("127.0.0.1:{client}"),
        _dir: dir,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while bench(&member, &["--total", "1", "put"]).is_none() {
        assert!(
            Instant::now() < deadline,
            "kvstore did not start serving writes in 30 s"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    member
}

/// Runs kvbench with `--json` and returns its report, or `None` if it failed.
fn bench(member: &Member, args: &[&str]) -> Option<Value> {
    let out = Command::new(KVBENCH)
        .args(["--endpoints", &member.endpoint, "--json", "--no-progress"])
        .args(args)
        .output()
        .expect("run kvbench");
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice(&out.stdout).expect("kvbench --json prints one JSON object"))
}

fn f(report: &Value, path: &[&str]) -> f64 {
    let mut v = report;
    for p in path {
        v = &v[*p];
    }
    v.as_f64()
        .unwrap_or_else(|| panic!("{path:?} missing in {report}"))
}

/// Counts add up, nothing failed, percentiles are ordered and plausible.
fn assert_sane(report: &Value, total: f64) {
    assert_eq!(f(report, &["ops"]), total, "{report}");
    assert_eq!(f(report, &["errors"]), 0.0, "{report}");
    let l = |p: &str| f(report, &["latency_ms", p]);
    assert!(
        l("p50") > 0.0 && l("p50") <= l("p90") && l("p90") <= l("p99"),
        "{report}"
    );
    assert!(l("p99") <= l("p99.9") && l("p99.9") <= l("max"), "{report}");
    let rate = f(report, &["ops_per_sec"]);
    let secs = f(report, &["duration_secs"]);
    assert!(
        (rate * secs - total).abs() < 1.0,
        "ops/s × duration ≠ ops: {report}"
    );
}

#[test]
fn workloads_report_every_operation_once_and_no_errors() {
    let member = start_member();
    let common = [
        "--clients",
        "4",
        "--conns",
        "2",
        "--key-space-size",
        "50",
        "--val-size",
        "64",
    ];
    let run = |total: &str, workload: &[&str]| {
        let mut args: Vec<&str> = common.to_vec();
        args.extend(["--total", total]);
        args.extend(workload);
        bench(&member, &args).unwrap_or_else(|| panic!("kvbench {args:?} failed"))
    };

    let put = run("300", &["put"]);
    assert_sane(&put, 300.0);
    assert_eq!(f(&put, &["by_kind", "put", "count"]), 300.0);

    assert_sane(&run("200", &["range", "--consistency", "s"]), 200.0);

    let cas = run("200", &["txn-put"]);
    assert_sane(&cas, 200.0);
    let ok = cas["by_kind"]["cas"]["count"].as_f64().unwrap_or(0.0);
    assert!(ok > 0.0, "some compare-and-swaps must succeed: {cas}");

    // 20 watchers on 5 keys: each of the 50 puts is delivered to 4 watchers.
    let w = run(
        "50",
        &[
            "watch",
            "--watchers",
            "20",
            "--streams",
            "4",
            "--watched-keys",
            "5",
        ],
    );
    assert_sane(&w, 50.0);
    assert_eq!(f(&w, &["extra", "events_expected"]), 200.0, "{w}");
    assert_eq!(f(&w, &["extra", "events_delivered"]), 200.0, "{w}");
    assert_eq!(f(&w, &["by_kind", "event", "count"]), 200.0, "{w}");
}
