//! The results folder of a run: `history.jsonl`, `results.txt` (human-readable verdicts),
//! `results.json`, and `timeline.svg` (every operation's latency over time, coloured by
//! outcome, with fault windows as shaded bands).

use std::fmt::Write as _;
use std::path::Path;

use plotters::prelude::*;
use serde::Serialize;

use crate::check::Verdict;
use crate::history::{ops, write_jsonl, Entry, Status};

/// What a run was and how it went.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The command line (or test) that ran it.
    pub command: String,
    /// `namespaces` or `loopback (process faults only)`.
    pub mode: String,
    pub nodes: usize,
    pub seed: u64,
    pub seconds: f64,
    pub nemeses: Vec<String>,
    pub workloads: Vec<String>,
    /// e.g. `KVSTORE_INJECT_FAULTS=stale-read`.
    pub injected: Option<String>,
    /// Checks done by the harness itself (HashKV, healing, ...).
    pub final_checks: Vec<Verdict>,
    pub verdicts: Vec<Verdict>,
}

impl Summary {
    /// True if every checker and final check passed.
    pub fn valid(&self) -> bool {
        self.verdicts
            .iter()
            .chain(&self.final_checks)
            .all(|v| v.valid)
    }

    /// The names of the checkers that failed.
    pub fn failed(&self) -> Vec<String> {
        self.verdicts
            .iter()
            .chain(&self.final_checks)
            .filter(|v| !v.valid)
            .map(|v| v.checker.clone())
            .collect()
    }

    /// The human-readable report.
    pub fn text(&self, entries: &[Entry]) -> String {
        let mut s = String::new();
        let all: Vec<_> = ops(entries).collect();
        let count = |st: Status| all.iter().filter(|o| o.status == st).count();
        let _ = writeln!(
            s,
            "kvstore chaos run: {}",
            if self.valid() { "VALID" } else { "INVALID" }
        );
        let _ = writeln!(s, "command:   {}", self.command);
        let _ = writeln!(s, "mode:      {}", self.mode);
        let _ = writeln!(
            s,
            "members:   {}   seed: {}   duration: {:.1}s",
            self.nodes, self.seed, self.seconds
        );
        let _ = writeln!(s, "nemeses:   {}", self.nemeses.join(", "));
        let _ = writeln!(s, "workloads: {}", self.workloads.join(", "));
        if let Some(i) = &self.injected {
            let _ = writeln!(s, "injected:  {i}");
        }
        let _ = writeln!(
            s,
            "ops:       {} ({} ok, {} failed, {} unknown)",
            all.len(),
            count(Status::Ok),
            count(Status::Fail),
            count(Status::Info)
        );
        let faults = entries
            .iter()
            .filter(|e| matches!(e, Entry::Fault(_)))
            .count();
        let _ = writeln!(s, "faults:    {faults} windows");
        for e in entries {
            if let Entry::Fault(f) = e {
                let _ = writeln!(
                    s,
                    "  {:>7.1}s-{:>7.1}s  {:<17} {}",
                    f.start as f64 / 1e9,
                    f.end as f64 / 1e9,
                    f.name,
                    f.detail
                );
            }
        }
        let _ = writeln!(s);
        for v in self.final_checks.iter().chain(&self.verdicts) {
            let _ = writeln!(
                s,
                "{:<28} {:<7} {}",
                v.checker,
                if v.valid { "ok" } else { "INVALID" },
                v.checked
            );
            for p in &v.problems {
                let _ = writeln!(s, "    - {p}");
            }
        }
        s
    }
}

/// Writes the results folder.
pub fn write(dir: &Path, summary: &Summary, entries: &[Entry]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_jsonl(&dir.join("history.jsonl"), entries)?;
    std::fs::write(dir.join("results.txt"), summary.text(entries))?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_vec_pretty(summary).map_err(std::io::Error::other)?,
    )?;
    plot(&dir.join("timeline.svg"), entries).map_err(std::io::Error::other)
}

/// The timeline: latency (log scale) of every operation at its invocation time.
pub fn plot(path: &Path, entries: &[Entry]) -> Result<(), String> {
    let all: Vec<_> = ops(entries).collect();
    let end_s = entries
        .iter()
        .map(|e| match e {
            Entry::Op(o) => o.end,
            Entry::Fault(f) => f.end,
            Entry::Watch(_) => 0,
        })
        .max()
        .unwrap_or(1) as f64
        / 1e9;
    let root = SVGBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "operations over time (latency, log scale) and faults",
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0f64..end_s.max(1.0), (0.1f64..10_000f64).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("latency (ms)")
        .draw()
        .map_err(|e| e.to_string())?;
    let palette = [
        RGBColor(255, 200, 200),
        RGBColor(200, 220, 255),
        RGBColor(255, 235, 180),
        RGBColor(220, 200, 255),
        RGBColor(200, 245, 220),
    ];
    let mut names: Vec<String> = Vec::new();
    for e in entries {
        if let Entry::Fault(f) = e {
            let idx = names.iter().position(|n| *n == f.name).unwrap_or_else(|| {
                names.push(f.name.clone());
                names.len() - 1
            });
            let color = palette[idx % palette.len()].mix(0.5);
            let (a, b) = (f.start as f64 / 1e9, f.end as f64 / 1e9);
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(a, 0.1), (b.max(a + 0.05), 10_000.0)],
                    color.filled(),
                )))
                .map_err(|e| e.to_string())?;
            chart
                .draw_series(std::iter::once(Text::new(
                    f.name.clone(),
                    (a, 5000.0),
                    ("sans-serif", 11),
                )))
                .map_err(|e| e.to_string())?;
        }
    }
    for (status, color, label) in [
        (Status::Ok, GREEN.mix(0.6), "ok"),
        (Status::Fail, BLUE.mix(0.6), "fail"),
        (Status::Info, RED.mix(0.8), "unknown"),
    ] {
        chart
            .draw_series(all.iter().filter(|o| o.status == status).map(|o| {
                let x = o.start as f64 / 1e9;
                let y = ((o.end.saturating_sub(o.start)) as f64 / 1e6).clamp(0.11, 9999.0);
                Circle::new((x, y), 2, color.filled())
            }))
            .map_err(|e| e.to_string())?
            .label(label)
            .legend(move |(x, y)| Circle::new((x, y), 4, color.filled()));
    }
    chart
        .configure_series_labels()
        .border_style(BLACK)
        .background_style(WHITE.mix(0.8))
        .draw()
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}
