//! Nemeses: the faults, and a seeded schedule that injects and heals them.
//!
//! The schedule alternates quiet periods and fault windows; each fault is healed at the end of
//! its window, and [`heal_all`] heals everything before the final checks. Every window is
//! recorded as a [`FaultRecord`] for the report.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};

use crate::cluster::Cluster;
use crate::error::{Error, Result};
use crate::history::{Entry, FaultRecord, Recorder};
use crate::hosts::Mode;
use crate::stop::Stop;

/// One kind of fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Fault {
    /// Cut the leader off from every other member.
    PartitionLeader,
    /// A random majority and minority.
    PartitionHalves,
    /// Two halves joined only through one member that sees both.
    PartitionBridge,
    /// Every member sees only its ring neighbours.
    PartitionRing,
    /// Random links drop packets on and off, 200 ms at a time (no netem here).
    Flaky,
    /// Outgoing bandwidth limited by a tbf qdisc with a small queue.
    Bandwidth,
    /// SIGKILL a minority of members, restart them at heal.
    Kill,
    /// SIGSTOP a member (often the leader), SIGCONT at heal.
    Pause,
    /// Remove a follower, add it back as a learner with empty data, promote it.
    Churn,
    /// Hand leadership to another member.
    LeaderTransfer,
    /// Compact the history a little behind the current revision.
    Compact,
}

impl Fault {
    /// Every fault, in the order `--nemesis all` uses.
    pub const ALL: [Fault; 11] = [
        Fault::PartitionLeader,
        Fault::PartitionHalves,
        Fault::PartitionBridge,
        Fault::PartitionRing,
        Fault::Flaky,
        Fault::Bandwidth,
        Fault::Kill,
        Fault::Pause,
        Fault::Churn,
        Fault::LeaderTransfer,
        Fault::Compact,
    ];

    /// Whether it needs network namespaces.
    pub fn needs_network(self) -> bool {
        matches!(
            self,
            Fault::PartitionLeader
                | Fault::PartitionHalves
                | Fault::PartitionBridge
                | Fault::PartitionRing
                | Fault::Flaky
                | Fault::Bandwidth
        )
    }

    /// The kebab-case name.
    pub fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_default()
    }
}

/// Timing of the schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub faults: Vec<Fault>,
    pub seed: u64,
    /// Quiet time between faults.
    pub quiet: Duration,
    /// How long a fault lasts.
    pub window: Duration,
}

/// Runs the schedule until `stop` fires, then heals everything.
pub async fn run(
    cluster: Arc<Cluster>,
    recorder: Recorder,
    schedule: Schedule,
    stop: Stop,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(schedule.seed);
    let network = cluster.hosts.mode == Mode::Namespaces;
    let faults: Vec<Fault> = schedule
        .faults
        .iter()
        .copied()
        .filter(|f| network || !f.needs_network())
        .collect();
    if faults.is_empty() {
        stop.wait().await;
        return Ok(());
    }
    loop {
        let quiet = jitter(&mut rng, schedule.quiet);
        if stop.sleep(quiet).await {
            break;
        }
        let Some(&fault) = faults.choose(&mut rng) else {
            break;
        };
        let start = recorder.now();
        let window = jitter(&mut rng, schedule.window);
        let detail = match inject(&cluster, fault, &mut rng, window, &stop).await {
            Ok(detail) => detail,
            Err(err) => format!("failed: {err}"),
        };
        heal_all(&cluster).await?;
        recorder.push(Entry::Fault(FaultRecord {
            name: fault.name(),
            detail,
            start,
            end: recorder.now(),
        }));
        if stop.is_stopped() {
            break;
        }
    }
    heal_all(&cluster).await
}

fn jitter(rng: &mut StdRng, base: Duration) -> Duration {
    base.mul_f64(rng.random_range(0.5..1.5))
}

/// Runs a blocking host operation off the runtime thread.
async fn host<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Host(e.to_string()))?
}

/// Injects one fault and holds it for `window` (or until stopped); returns what it did.
async fn inject(
    cluster: &Arc<Cluster>,
    fault: Fault,
    rng: &mut StdRng,
    window: Duration,
    stop: &Stop,
) -> Result<String> {
    let n = cluster.nodes();
    let mut all: Vec<usize> = (0..n).filter(|&i| !cluster.is_removed(i)).collect();
    all.shuffle(rng);
    let leader = cluster.leader().await;
    let detail = match fault {
        Fault::PartitionLeader => {
            let l = leader.unwrap_or(all[0]);
            let rest: Vec<usize> = all.iter().copied().filter(|&i| i != l).collect();
            partition(cluster, vec![vec![l], rest]).await?
        }
        Fault::PartitionHalves => {
            let half = all.len() / 2;
            partition(cluster, vec![all[..half].to_vec(), all[half..].to_vec()]).await?
        }
        Fault::PartitionBridge => {
            let bridge = all[0];
            let rest = &all[1..];
            let (a, b) = rest.split_at(rest.len() / 2);
            partition(cluster, vec![a.to_vec(), b.to_vec()]).await?;
            format!("{a:?} | {b:?} bridged by n{bridge}")
        }
        Fault::PartitionRing => {
            let mut pairs = Vec::new();
            let k = all.len();
            for (p, &x) in all.iter().enumerate() {
                for (q, &y) in all.iter().enumerate() {
                    let d = (p + k - q) % k;
                    if x != y && d != 1 && d != k - 1 {
                        pairs.push((x, y));
                    }
                }
            }
            let hosts = Arc::clone(&cluster.hosts);
            host(move || hosts.block(&pairs)).await?;
            format!("ring {all:?}")
        }
        Fault::Flaky => {
            flaky(cluster, rng.random(), window, stop).await?;
            return Ok("20% of links down per 200 ms tick".into());
        }
        Fault::Bandwidth => {
            let hosts = Arc::clone(&cluster.hosts);
            host(move || {
                for i in 0..n {
                    hosts.set_bandwidth(i, Some("512kbit"))?;
                }
                Ok(())
            })
            .await?;
            "512kbit per member".into()
        }
        Fault::Kill => {
            let count = rng.random_range(1..=(all.len() - 1) / 2);
            let victims: Vec<usize> = all[..count].to_vec();
            for &v in &victims {
                cluster.kill(v);
            }
            format!("killed {victims:?}")
        }
        Fault::Pause => {
            let v = if rng.random_bool(0.5) {
                leader.unwrap_or(all[0])
            } else {
                all[0]
            };
            cluster.pause(v, true);
            format!("paused n{v}")
        }
        Fault::Churn => {
            let Some(l) = leader else {
                return Ok("no leader; skipped".into());
            };
            let Some(&v) = all.iter().find(|&&i| i != l) else {
                return Ok("no follower; skipped".into());
            };
            cluster.remove_member(l, v).await?;
            stop.sleep(window / 2).await;
            let via = cluster.leader().await.unwrap_or(l);
            cluster.add_back(via, v).await?;
            return Ok(format!("removed and re-added n{v}"));
        }
        Fault::LeaderTransfer => {
            let Some(l) = leader else {
                return Ok("no leader; skipped".into());
            };
            let Some(&to) = all.iter().find(|&&i| i != l) else {
                return Ok("no follower; skipped".into());
            };
            cluster.move_leader(l, to).await?;
            return Ok(format!("n{l} -> n{to}"));
        }
        Fault::Compact => {
            let via = leader.unwrap_or(all[0]);
            let rev = cluster.revision(via).await?;
            let target = (rev - 200).max(1);
            cluster.compact(via, target).await?;
            return Ok(format!("compacted at {target}"));
        }
    };
    stop.sleep(window).await;
    Ok(detail)
}

async fn partition(cluster: &Arc<Cluster>, groups: Vec<Vec<usize>>) -> Result<String> {
    let hosts = Arc::clone(&cluster.hosts);
    let detail = format!("{groups:?}");
    host(move || hosts.partition(&groups)).await?;
    Ok(detail)
}

/// Flaps random links every 200 ms for `window`.
async fn flaky(cluster: &Arc<Cluster>, seed: u64, window: Duration, stop: &Stop) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = cluster.nodes();
    let end = tokio::time::Instant::now() + window;
    while tokio::time::Instant::now() < end && !stop.is_stopped() {
        let mut down = Vec::new();
        let mut up = Vec::new();
        for a in 0..n {
            for b in 0..n {
                if a != b {
                    if rng.random_bool(0.2) {
                        down.push((a, b));
                    } else {
                        up.push((a, b));
                    }
                }
            }
        }
        let hosts = Arc::clone(&cluster.hosts);
        host(move || {
            hosts.unblock(&up)?;
            hosts.block(&down)
        })
        .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Heals every fault: network blocks, bandwidth limits, paused and killed members, removed
/// members (added back).
pub async fn heal_all(cluster: &Arc<Cluster>) -> Result<()> {
    let hosts = Arc::clone(&cluster.hosts);
    let n = cluster.nodes();
    if hosts.mode == Mode::Namespaces {
        host(move || {
            hosts.heal_network()?;
            for i in 0..n {
                hosts.set_bandwidth(i, None)?;
            }
            Ok(())
        })
        .await?;
    }
    cluster.heal_processes()?;
    for i in 0..n {
        if cluster.is_removed(i) {
            let via = cluster.await_leader(Duration::from_secs(30)).await?;
            cluster.add_back(via, i).await?;
        }
    }
    Ok(())
}
