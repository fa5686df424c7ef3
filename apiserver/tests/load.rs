//! Load test (not a timed assertion; `#[ignore]`d so CI skips it): 10k pods created, read,
//! listed and watched through one apiserver in front of a kvstore member, with latency
//! percentiles printed next to Kubernetes' API call SLOs (p99 ≤ 1 s for single-object calls,
//! ≤ 30 s for cluster-wide lists).
//!
//! Run (release build, the figures in docs/apiserver.md came from this):
//! `cargo build --release -p kvstore --bin kvstore &&
//!  cargo test --release -p apiserver --test load -- --ignored --nocapture`
//! `LOAD_PODS` (default 10000) and `LOAD_CLIENTS` (default 16) change the size;
//! `LOAD_WATCHERS` (default 100) sets the number of watchers; `LOAD_BACKEND=etcd` runs it
//! against etcd 3.4 instead of kvstore.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use support::{start_store, Apiserver, Backend, Client};

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Prints p50/p90/p99/max of `samples` (milliseconds).
fn report(what: &str, samples: &mut [f64], slo_ms: f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p).round() as usize];
    let p99 = pct(0.99);
    println!(
        "| {what} | {} | {:.1} | {:.1} | {:.1} | {:.1} | p99 ≤ {} ms: {} |",
        samples.len(),
        pct(0.5),
        pct(0.9),
        p99,
        samples[samples.len() - 1],
        slo_ms,
        if p99 <= slo_ms { "met" } else { "MISSED" }
    );
}

/// Runs `per_client` calls of `f` on each of `clients` threads; returns latencies in ms.
fn parallel(
    clients: usize,
    per_client: usize,
    f: impl Fn(&Client, usize) + Send + Sync + 'static,
    base: &str,
) -> Vec<f64> {
    let f = Arc::new(f);
    let out = Arc::new(Mutex::new(Vec::with_capacity(clients * per_client)));
    let threads: Vec<_> = (0..clients)
        .map(|t| {
            let (f, out, base) = (f.clone(), out.clone(), base.to_string());
            std::thread::spawn(move || {
                let c = Client::new(&base);
                let mut mine = Vec::with_capacity(per_client);
                for i in 0..per_client {
                    let start = Instant::now();
                    f(&c, t * per_client + i);
                    mine.push(start.elapsed().as_secs_f64() * 1000.0);
                }
                out.lock().expect("latencies").extend(mine);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
    Arc::try_unwrap(out)
        .map(|m| m.into_inner().expect("latencies"))
        .unwrap_or_default()
}

#[test]
#[ignore = "load test: run by hand with --release (see the module doc)"]
fn load_10k_pods() {
    let pods = env_usize("LOAD_PODS", 10_000);
    let clients = env_usize("LOAD_CLIENTS", 16);
    let per_client = pods / clients;
    let backend = match std::env::var("LOAD_BACKEND").as_deref() {
        Ok("etcd") => Backend::Etcd,
        _ => Backend::Kvstore,
    };
    let store = start_store(backend, 1);
    let api = Apiserver::start(&store.endpoints_csv(), &["--max-requests-inflight", "0"]);
    let base = api.url.clone();
    println!("{pods} pods, {clients} clients, one apiserver, one {backend:?} member");
    println!("| call | n | p50 ms | p90 ms | p99 ms | max ms | SLO |");
    println!("|---|---|---|---|---|---|---|");

    // Watchers first, so they see every create: event latency = receive time - send time.
    let watchers = env_usize("LOAD_WATCHERS", 100);
    let sent: Arc<Mutex<Vec<Option<Instant>>>> = Arc::new(Mutex::new(vec![None; pods]));
    let w = Client::new(&base);
    let start_rv = w.get("/api/v1/namespaces/default/pods?limit=1").body["metadata"]
        ["resourceVersion"]
        .as_str()
        .expect("rv")
        .to_string();
    // Each watcher stamps events as they arrive on its own thread.
    let readers: Vec<_> = (0..watchers)
        .map(|_| {
            let resp = reqwest::blocking::Client::builder()
                .timeout(None)
                .build()
                .expect("client")
                .get(format!(
                    "{base}/api/v1/pods?watch=true&resourceVersion={start_rv}"
                ))
                .send()
                .expect("watch");
            let (tx, rx) = std::sync::mpsc::channel::<(String, Instant)>();
            std::thread::spawn(move || {
                use std::io::BufRead;
                for line in std::io::BufReader::new(resp).lines().map_while(Result::ok) {
                    let at = Instant::now();
                    let ev: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if ev["type"] == "ADDED" {
                        let name = ev["object"]["metadata"]["name"]
                            .as_str()
                            .unwrap_or("")
                            .to_string();
                        if tx.send((name, at)).is_err() {
                            break;
                        }
                    }
                }
            });
            rx
        })
        .collect();

    let sent_c = sent.clone();
    let wall = Instant::now();
    let mut create = parallel(
        clients,
        per_client,
        move |c, i| {
            sent_c.lock().expect("sent")[i] = Some(Instant::now());
            let pod = json!({"metadata": {"name": format!("load-{i:05}"), "labels": {"app": "load", "shard": (i % 10).to_string()}},
            "spec": {"containers": [{"name": "c", "image": "nginx:1.25"}], "nodeName": format!("node-{}", i % 100)}});
            let r = c.post("/api/v1/namespaces/default/pods", &pod);
            assert_eq!(r.code, 201, "{:?}", r.body);
        },
        &base,
    );
    let created = create.len();
    println!(
        "(create throughput: {:.0} pods/s)",
        created as f64 / wall.elapsed().as_secs_f64()
    );
    report("create pod", &mut create, 1000.0);

    let mut get = parallel(
        clients,
        per_client,
        |c, i| {
            let r = c.get(&format!("/api/v1/namespaces/default/pods/load-{i:05}"));
            assert_eq!(r.code, 200);
        },
        &base,
    );
    report("get pod", &mut get, 1000.0);

    let mut update = parallel(
        clients,
        per_client / 4,
        |c, i| {
            let r = c.patch(
                &format!("/api/v1/namespaces/default/pods/load-{i:05}/status"),
                &json!({"status": {"phase": "Running"}}),
                "application/merge-patch+json",
            );
            assert_eq!(r.code, 200);
        },
        &base,
    );
    report("patch pod status", &mut update, 1000.0);

    let mut list_all = parallel(
        2,
        5,
        move |c, _| {
            let r = c.get("/api/v1/pods");
            assert_eq!(r.body["items"].as_array().map(Vec::len), Some(created));
        },
        &base,
    );
    report("list all pods (cluster-wide)", &mut list_all, 30_000.0);

    let mut list_sel = parallel(
        2,
        5,
        |c, _| {
            let r = c.get("/api/v1/pods?fieldSelector=spec.nodeName%3Dnode-7");
            assert!(r.body["items"].as_array().is_some_and(|a| !a.is_empty()));
        },
        &base,
    );
    report(
        "list pods on one node (fieldSelector)",
        &mut list_sel,
        30_000.0,
    );

    let mut paged = parallel(
        1,
        5,
        |c, _| {
            let mut token = String::new();
            loop {
                let r = c.get(&format!(
                    "/api/v1/namespaces/default/pods?limit=500&continue={token}"
                ));
                match r.body["metadata"]["continue"].as_str() {
                    Some(t) => token = t.to_string(),
                    None => break,
                }
            }
        },
        &base,
    );
    report("list all pods in pages of 500", &mut paged, 30_000.0);

    // Every watcher must have seen every create; latency from send to receipt.
    let sent = sent.lock().expect("sent").clone();
    let mut watch_lat = Vec::new();
    for rx in &readers {
        for seen in 0..created {
            let (name, arrived) = rx
                .recv_timeout(Duration::from_secs(60))
                .expect("watch event");
            let sent_at = name
                .strip_prefix("load-")
                .and_then(|n| n.parse::<usize>().ok())
                .and_then(|i| sent[i]);
            if let (Some(t), true) = (sent_at, seen % 10 == 0) {
                watch_lat.push(arrived.duration_since(t).as_secs_f64() * 1000.0);
            }
        }
    }
    println!("({watchers} watchers each received all {created} ADDED events; latency sampled every 10th event, from the create request's start to the event's arrival)");
    report("watch event (create → received)", &mut watch_lat, 5000.0);
    let hub = api.pods_hub();
    println!(
        "(store watches for pods: 1 hub shared by {} watchers)",
        hub.watchers()
    );
}
