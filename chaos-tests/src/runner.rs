//! One run: hosts up, cluster started, workloads and the nemesis schedule for the time limit,
//! everything healed, final reads and HashKV compared, checkers run, results written, hosts
//! torn down (also on error or Ctrl-C).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use kvstore_proto::etcdserverpb::RangeRequest;

use crate::check::{self, append::FINAL_PROCESS, Verdict};
use crate::cluster::{Cluster, ClusterSpec};
use crate::error::{Error, Result};
use crate::history::{Call, Entry, Mop, Op, Recorder, Status};
use crate::hosts::{self, Hosts, Mode};
use crate::nemesis::{self, Fault, Schedule};
use crate::report::{self, Summary};
use crate::stop::Stop;
use crate::workload::{self, append::parse_list, Ctx, Workload};

/// Everything a run needs.
#[derive(Debug, Clone)]
pub struct RunConfig {
    pub binary: PathBuf,
    pub nodes: usize,
    pub time_limit: Duration,
    pub faults: Vec<Fault>,
    pub workloads: Vec<Workload>,
    pub seed: u64,
    /// Injected bugs for `kvstore-faulty` (`KVSTORE_INJECT_FAULTS`).
    pub inject: Option<String>,
    pub results: PathBuf,
    pub snapshot_count: u64,
    /// Use namespaces if possible (false: loopback even as root).
    pub namespaces: bool,
    /// Quiet time between faults and how long a fault lasts.
    pub quiet: Duration,
    pub window: Duration,
    /// Clients per workload (watchers for `watch`).
    pub clients: usize,
    /// How the run was asked for, for the report.
    pub command: String,
    /// Print a status line every 10 s.
    pub progress: bool,
}

/// Runs and checks; the results folder is written even if the run is invalid.
pub fn run(config: &RunConfig) -> Result<Summary> {
    if config.nodes < 3 {
        return Err(Error::Usage("at least 3 members are needed".into()));
    }
    let namespaces = config.namespaces && hosts::namespaces_available();
    let hosts = Arc::new(Hosts::setup(config.nodes, namespaces)?);
    let thread_hosts = Arc::clone(&hosts);
    let thread_config = config.clone();
    let outcome = std::thread::Builder::new()
        .name("chaos-clients".into())
        .spawn(move || -> Result<(Vec<Entry>, Vec<Verdict>, f64)> {
            // Clients, the nemesis and the cluster's children all run from this thread, inside
            // the client namespace.
            thread_hosts.enter_client_namespace()?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(drive(thread_hosts, thread_config))
        })
        .map_err(Error::Io)?
        .join()
        .map_err(|_| Error::Host("the client thread panicked".into()))?;
    hosts.teardown();
    let (entries, final_checks, seconds) = outcome?;
    let verdicts: Vec<Verdict> = check::check_all(&entries)
        .into_iter()
        .filter(|v| relevant(v, &config.workloads))
        .collect();
    let summary = Summary {
        command: config.command.clone(),
        mode: match hosts.mode {
            Mode::Namespaces => "network namespaces (network and process faults)".into(),
            Mode::Loopback => "LOOPBACK: no network namespaces here, process faults only".into(),
        },
        nodes: config.nodes,
        seed: config.seed,
        seconds,
        nemeses: config
            .faults
            .iter()
            .filter(|f| hosts.mode == Mode::Namespaces || !f.needs_network())
            .map(|f| f.name())
            .collect(),
        workloads: config
            .workloads
            .iter()
            .map(|w| format!("{w:?}").to_lowercase())
            .collect(),
        injected: config.inject.clone(),
        final_checks,
        verdicts,
    };
    report::write(&config.results, &summary, &entries)?;
    Ok(summary)
}

fn relevant(v: &Verdict, workloads: &[Workload]) -> bool {
    let w = match v.checker.as_str() {
        "linearizable-register" => Workload::Register,
        "append-strict-serializable" => Workload::Append,
        "watch" => Workload::Watch,
        "kube" => Workload::Kube,
        _ => Workload::Lease,
    };
    workloads.contains(&w)
}

async fn drive(hosts: Arc<Hosts>, config: RunConfig) -> Result<(Vec<Entry>, Vec<Verdict>, f64)> {
    let mut env = Vec::new();
    if let Some(inject) = &config.inject {
        env.push(("KVSTORE_INJECT_FAULTS".to_string(), inject.clone()));
    }
    let spec = ClusterSpec {
        binary: config.binary.clone(),
        nodes: config.nodes,
        snapshot_count: config.snapshot_count,
        env,
        log_dir: config.results.join("logs"),
    };
    let stop = Stop::new();
    // Ctrl-C from the very start: stop the run, heal, check and tear down.
    let interrupt = {
        let stop = stop.clone();
        tokio::spawn(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("interrupted: healing, checking and tearing down");
                stop.stop();
            }
        })
    };
    let cluster = Arc::new(Cluster::start(hosts, spec).await?);
    let recorder = Recorder::new();
    let ctx = Ctx::new(Arc::clone(&cluster), recorder.clone(), stop.clone());
    let mut tasks = Vec::new();
    for &w in &config.workloads {
        let ctx = ctx.clone();
        let c = config.clients;
        tasks.push(tokio::spawn(async move {
            match w {
                Workload::Register => workload::register::run(ctx, c).await,
                Workload::Append => workload::append::run(ctx, c).await,
                Workload::Watch => workload::watch::run(ctx, c).await,
                Workload::Kube => workload::kube::run(ctx, c).await,
                Workload::Lease => workload::lease::run(ctx, c).await,
            }
        }));
    }
    let schedule = Schedule {
        faults: config.faults.clone(),
        seed: config.seed,
        quiet: config.quiet,
        window: config.window,
    };
    let nemesis = tokio::spawn(nemesis::run(
        Arc::clone(&cluster),
        recorder.clone(),
        schedule,
        stop.clone(),
    ));
    let timer = {
        let stop = stop.clone();
        let recorder = recorder.clone();
        let limit = config.time_limit;
        let bar = if config.progress {
            indicatif::ProgressBar::new(limit.as_secs())
        } else {
            indicatif::ProgressBar::hidden()
        };
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{elapsed_precise} [{bar:40}] {pos}/{len} s  {msg}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        // Not a terminal (CI, nohup): a plain line a minute instead of the bar.
        let plain = config.progress && !std::io::IsTerminal::is_terminal(&std::io::stderr());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + limit;
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            let mut ticks = 0u64;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(deadline) => break,
                    () = stop.wait() => break,
                    _ = tick.tick() => {
                        let (ops, faults) = recorder.counts();
                        bar.set_position(recorder.now() / 1_000_000_000);
                        bar.set_message(format!("{ops} ops, {faults} faults"));
                        ticks += 1;
                        if plain && ticks.is_multiple_of(60) {
                            eprintln!(
                                "[{:>5}s / {}s] {ops} ops, {faults} faults",
                                recorder.now() / 1_000_000_000,
                                limit.as_secs()
                            );
                        }
                    }
                }
            }
            bar.finish_with_message("healing, final reads, checking");
            stop.stop();
        })
    };
    let _ = timer.await;
    let healed = nemesis
        .await
        .map_err(|e| Error::Host(e.to_string()))
        .and_then(|r| r);
    let mut final_checks = vec![Verdict::new(
        "heal",
        "every fault healed before the final checks".into(),
        healed
            .err()
            .map(|e| vec![format!("healing failed: {e}")])
            .unwrap_or_default(),
    )];
    nemesis::heal_all(&cluster).await?;
    for t in tasks {
        let _ = t.await;
    }
    let seconds = recorder.now() as f64 / 1e9;
    if config.workloads.contains(&Workload::Append) {
        final_reads(&cluster, &recorder).await;
    }
    final_checks.push(hash_check(&cluster).await);
    cluster.stop_all();
    interrupt.abort();
    Ok((recorder.snapshot(), final_checks, seconds))
}

/// Reads every appended list once all faults are healed, for the lost-write check.
async fn final_reads(cluster: &Cluster, recorder: &Recorder) {
    for attempt in 0..30 {
        let node = attempt % cluster.nodes();
        let start = recorder.now();
        let got = workload::timed(cluster.kv(node).range(RangeRequest {
            key: b"a/".to_vec(),
            range_end: b"a0".to_vec(),
            ..Default::default()
        }))
        .await;
        if let Ok(r) = got {
            let mops = r
                .kvs
                .iter()
                .map(|kv| Mop::Read {
                    key: String::from_utf8_lossy(&kv.key).into_owned(),
                    list: Some(parse_list(&kv.value)),
                })
                .collect();
            recorder.push(Entry::Op(Op {
                process: FINAL_PROCESS,
                node,
                call: Call::Txn { mops },
                status: Status::Ok,
                start,
                end: recorder.now(),
                error: None,
            }));
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Waits until every member has applied the same revision, then compares their HashKV.
async fn hash_check(cluster: &Cluster) -> Verdict {
    let n = cluster.nodes();
    let mut problems = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut revs = Vec::new();
        for i in 0..n {
            revs.push(cluster.revision(i).await.ok());
        }
        let agreed = revs.iter().all(|r| r.is_some() && *r == revs[0]);
        if agreed {
            let rev = revs[0].unwrap_or(0);
            let mut hashes = Vec::new();
            for i in 0..n {
                hashes.push(cluster.hash_kv(i, rev).await.map_err(|e| e.to_string()));
            }
            if hashes
                .iter()
                .any(|h| h.is_err() || h.as_ref().ok() != hashes[0].as_ref().ok())
            {
                problems.push(format!("HashKV at revision {rev} differs: {hashes:?}"));
            }
            return Verdict::new("hashkv", format!("{n} members at revision {rev}"), problems);
        }
        if tokio::time::Instant::now() > deadline {
            problems.push(format!(
                "members did not converge on one revision within 60 s: {revs:?}"
            ));
            return Verdict::new("hashkv", format!("{n} members"), problems);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}
