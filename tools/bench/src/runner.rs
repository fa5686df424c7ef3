//! The closed-loop driver: `--clients` tasks each run one operation at a time until the run
//! has issued `--total` operations or `--duration` has passed, optionally paced to a fixed
//! rate. Each task keeps its own [`Tally`]; they are merged when the run ends.

use std::future::Future;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

use crate::cli::Common;
use crate::report::Tally;

/// One benchmark client: issues the workload's operation number `n`.
pub trait Client: Send + 'static {
    /// Runs operation `n` and returns the kind to file its latency under.
    fn op(&mut self, n: u64) -> impl Future<Output = Result<&'static str, tonic::Status>> + Send;
}

/// How long a run lasts and how fast it goes.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Stop after this many operations were issued (unless `duration` is set).
    pub total: u64,
    /// Stop after this long instead.
    pub duration: Option<Duration>,
    /// Operations per second across all clients (0: as fast as they go).
    pub rate: u64,
    /// Per-operation timeout.
    pub timeout: Duration,
    /// The progress bar's label; `None` hides the bar.
    pub label: Option<String>,
}

impl Plan {
    /// The plan `--total`/`--duration`/`--request-timeout` describe, with a progress bar unless
    /// `--no-progress` or stderr is not a terminal.
    pub fn from_common(common: &Common, label: &str) -> Plan {
        let show = !common.no_progress && std::io::stderr().is_terminal();
        Plan {
            total: common.total,
            duration: common.duration,
            rate: 0,
            timeout: common.request_timeout,
            label: show.then(|| label.to_string()),
        }
    }
}

/// What a run measured.
#[derive(Debug)]
pub struct Outcome {
    /// Every client's tally, merged.
    pub tally: Tally,
    /// From the first operation issued to the last one finished.
    pub elapsed: Duration,
    /// The longest time without a successful operation.
    pub longest_stall: Duration,
}

/// State the clients share: the next operation number and the stall clock.
struct Shared {
    start: Instant,
    next: AtomicU64,
    /// Nanoseconds after `start` of the latest success.
    last_ok: AtomicU64,
    /// Longest gap between successes, in nanoseconds.
    max_gap: AtomicU64,
    bar: ProgressBar,
}

impl Shared {
    fn success(&self) {
        let now = self.start.elapsed().as_nanos() as u64;
        let prev = self.last_ok.swap(now, Ordering::Relaxed);
        self.max_gap
            .fetch_max(now.saturating_sub(prev), Ordering::Relaxed);
    }
}

/// A progress bar of `len` steps, or a hidden one.
pub fn bar(label: Option<&str>, len: u64) -> ProgressBar {
    let Some(label) = label else {
        return ProgressBar::hidden();
    };
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg} [{elapsed_precise}] {wide_bar} {pos}/{len} ({per_sec})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

/// Runs the clients to the plan.
pub async fn run<C: Client>(clients: Vec<C>, plan: Plan) -> Outcome {
    let len = match plan.duration {
        Some(d) => d.as_millis() as u64,
        None => plan.total,
    };
    let shared = Arc::new(Shared {
        start: Instant::now(),
        next: AtomicU64::new(0),
        last_ok: AtomicU64::new(0),
        max_gap: AtomicU64::new(0),
        bar: bar(plan.label.as_deref(), len),
    });
    let tasks: Vec<_> = clients
        .into_iter()
        .map(|client| tokio::spawn(drive(client, plan.clone(), shared.clone())))
        .collect();
    let mut tally = Tally::default();
    for task in tasks {
        match task.await {
            Ok(t) => tally.merge(t),
            Err(e) => tally.error(format!("client task failed: {e}")),
        }
    }
    shared.bar.finish_and_clear();
    // A run that ended in a stall counts the tail too.
    shared.success();
    Outcome {
        tally,
        elapsed: shared.start.elapsed(),
        longest_stall: Duration::from_nanos(shared.max_gap.load(Ordering::Relaxed)),
    }
}

/// One client's loop.
async fn drive<C: Client>(mut client: C, plan: Plan, shared: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    loop {
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        match plan.duration {
            Some(d) if shared.start.elapsed() >= d => break,
            None if n >= plan.total => break,
            _ => {}
        }
        if plan.rate > 0 {
            let due = shared.start + Duration::from_secs_f64(n as f64 / plan.rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let began = Instant::now();
        match tokio::time::timeout(plan.timeout, client.op(n)).await {
            Ok(Ok(kind)) => {
                tally.record(kind, began.elapsed());
                shared.success();
            }
            Ok(Err(status)) => {
                tally.error(format!("{:?}: {}", status.code(), status.message()));
                // A member that is down fails at once; do not spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(_) => tally.error(format!("timed out after {:?}", plan.timeout)),
        }
        match plan.duration {
            Some(_) => shared
                .bar
                .set_position(shared.start.elapsed().as_millis() as u64),
            None => shared.bar.inc(1),
        }
    }
    tally
}
