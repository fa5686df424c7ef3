//! Latency histograms and the report: throughput, p50/p90/p99/p99.9/max per operation kind,
//! errors, as text or JSON.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// How many distinct error messages a report keeps as samples.
const ERROR_SAMPLES: usize = 5;

/// What one client (or watch stream reader) measured; merged into a [`Report`] at the end.
/// Each task owns its tally, so recording takes no lock.
#[derive(Debug, Default)]
pub struct Tally {
    /// Latency histograms in microseconds, per operation kind.
    pub hists: BTreeMap<&'static str, Histogram<u64>>,
    /// Failed operations.
    pub errors: u64,
    /// A few distinct error messages, to say what failed.
    pub error_samples: Vec<String>,
}

fn new_hist() -> Histogram<u64> {
    // 1 µs to 10 min at 3 significant digits; values above are clamped by `saturating_record`.
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("constant histogram bounds are valid")
}

impl Tally {
    /// Records one successful operation of this kind.
    pub fn record(&mut self, kind: &'static str, latency: Duration) {
        let us = (latency.as_micros() as u64).max(1);
        self.hists
            .entry(kind)
            .or_insert_with(new_hist)
            .saturating_record(us);
    }

    /// Records one failed operation.
    pub fn error(&mut self, message: String) {
        self.errors += 1;
        if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    /// Adds another tally into this one.
    pub fn merge(&mut self, other: Tally) {
        for (kind, h) in other.hists {
            let mine = self.hists.entry(kind).or_insert_with(new_hist);
            // Same bounds on both sides, so adding cannot fail.
            let _ = mine.add(&h);
        }
        self.errors += other.errors;
        for m in other.error_samples {
            if self.error_samples.len() < ERROR_SAMPLES && !self.error_samples.contains(&m) {
                self.error_samples.push(m);
            }
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Serialize, Default)]
pub struct Latency {
    /// Number of samples.
    pub count: u64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    #[serde(rename = "p99.9")]
    pub p999: f64,
    pub max: f64,
    pub mean: f64,
}

impl Latency {
    fn of(h: &Histogram<u64>) -> Latency {
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            count: h.len(),
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            p999: ms(h.value_at_quantile(0.999)),
            max: ms(h.max()),
            mean: h.mean() / 1000.0,
        }
    }
}

/// The result of one benchmark run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Workload name (`put`, `range-l`, ...).
    pub workload: String,
    pub endpoints: Vec<String>,
    pub conns: usize,
    pub clients: usize,
    /// Successful operations (every kind).
    pub ops: u64,
    /// Failed operations.
    pub errors: u64,
    /// Wall-clock time of the measured phase.
    pub duration_secs: f64,
    /// Successful operations per second.
    pub ops_per_sec: f64,
    /// Latency of every operation together.
    pub latency_ms: Latency,
    /// Latency per operation kind (e.g. `put`, `event`, `list`).
    pub by_kind: BTreeMap<String, Latency>,
    /// The longest time without a successful operation (leader failover shows here).
    pub longest_stall_ms: f64,
    /// Workload-specific figures (`events_per_sec`, `cas_conflicts`, ...).
    pub extra: BTreeMap<String, f64>,
    /// A few distinct error messages.
    pub error_samples: Vec<String>,
}

impl Report {
    /// Builds a report from the merged tally of a run. `measured` names the kinds that count as
    /// the workload's operations (the others, like watch events, are reported separately).
    pub fn new(
        workload: &str,
        common: &crate::cli::Common,
        tally: &Tally,
        measured: &[&str],
        elapsed: Duration,
        longest_stall: Duration,
    ) -> Report {
        let mut all = new_hist();
        for (kind, h) in &tally.hists {
            if measured.contains(kind) {
                let _ = all.add(h);
            }
        }
        let secs = elapsed.as_secs_f64().max(1e-9);
        Report {
            workload: workload.to_string(),
            endpoints: common.endpoints.clone(),
            conns: common.conns,
            clients: common.clients,
            ops: all.len(),
            errors: tally.errors,
            duration_secs: secs,
            ops_per_sec: all.len() as f64 / secs,
            latency_ms: Latency::of(&all),
            by_kind: tally
                .hists
                .iter()
                .map(|(k, h)| (k.to_string(), Latency::of(h)))
                .collect(),
            longest_stall_ms: longest_stall.as_secs_f64() * 1000.0,
            extra: BTreeMap::new(),
            error_samples: tally.error_samples.clone(),
        }
    }

    /// The report as one line of JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
    }

    /// The report as a small table, like etcd benchmark's summary.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{}: {} ops, {} errors in {:.2} s: {:.1} ops/s ({} clients, {} conns)",
            self.workload,
            self.ops,
            self.errors,
            self.duration_secs,
            self.ops_per_sec,
            self.clients,
            self.conns
        );
        let _ = writeln!(
            s,
            "{:<14}{:>9}{:>10}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "latency (ms)", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
        );
        let mut row = |name: &str, l: &Latency| {
            let _ = writeln!(
                s,
                "{:<14}{:>9}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}{:>10.3}",
                name, l.count, l.p50, l.p90, l.p99, l.p999, l.max, l.mean
            );
        };
        row("all", &self.latency_ms);
        for (k, l) in &self.by_kind {
            row(k, l);
        }
        let _ = writeln!(s, "longest stall: {:.1} ms", self.longest_stall_ms);
        for (k, v) in &self.extra {
            let _ = writeln!(s, "{k}: {v:.1}");
        }
        for e in &self.error_samples {
            let _ = writeln!(s, "error: {e}");
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_tallies_give_percentiles_of_all_samples() {
        let mut a = Tally::default();
        let mut b = Tally::default();
        for i in 1..=50 {
            a.record("put", Duration::from_millis(i));
            b.record("put", Duration::from_millis(50 + i));
        }
        b.error("boom".into());
        b.error("boom".into());
        a.merge(b);
        let common = <crate::cli::Cli as clap::Parser>::parse_from(["kvbench", "put"]).common;
        let r = Report::new(
            "put",
            &common,
            &a,
            &["put"],
            Duration::from_secs(2),
            Duration::ZERO,
        );
        assert_eq!(r.ops, 100);
        assert_eq!(r.errors, 2);
        assert_eq!(r.error_samples, vec!["boom".to_string()]);
        assert!((r.ops_per_sec - 50.0).abs() < 1e-9);
        assert!(
            (r.latency_ms.p50 - 50.0).abs() < 0.1,
            "{}",
            r.latency_ms.p50
        );
        assert!((r.latency_ms.max - 100.0).abs() < 0.1);
    }
}
