//! What a bench step measured, how it is summarised from the commit stamps, and the outputs:
//! one line per step on stdout, `results.json`, and `latency.svg` (latency against committed
//! throughput, one point per step).

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Serialize;

use super::observe::Stamp;
use super::stages::StageTime;

/// Submit-to-commit latency percentiles, in milliseconds.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Latency {
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// CPU and memory of one measured process over a step's measured window.
#[derive(Clone, Debug, Serialize)]
pub struct ProcessCost {
    /// validatorN, validatorN/<command> for its chaincode, or "bench" (the load generator).
    pub name: String,
    pub pid: u32,
    pub cpu_seconds: f64,
    /// CPU milliseconds per committed transaction.
    pub cpu_ms_per_tx: f64,
    /// Resident at the end of the window, MiB.
    pub rss_mib: f64,
    /// Most resident since the process started (VmHWM), MiB.
    pub peak_rss_mib: f64,
}

/// One step: a fixed offered rate for a fixed time.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub label: String,
    pub offered_tx_per_s: f64,
    pub duration_s: f64,
    /// Left out of throughput and latency (the start of the step).
    pub warmup_s: f64,
    pub sent: usize,
    /// The rate the load generator achieved (below the offered rate when it fell behind).
    pub sent_tx_per_s: f64,
    pub rejected: usize,
    pub first_rejection: Option<String>,
    pub committed: usize,
    pub committed_invalid: usize,
    /// Why the first transaction committed as not VALID failed.
    pub first_invalid: Option<String>,
    /// Sent, accepted, and not committed when the step's drain ended.
    pub uncommitted: usize,
    /// Committed in the measured window (after warmup, until the last send) per second.
    pub committed_tx_per_s: f64,
    /// Of the transactions sent in the measured window.
    pub latency: Latency,
    /// None when not every validator's metrics answered (an existing network without
    /// --operations).
    pub view_changes: Option<f64>,
    /// Times the validators' re-send timer fired, no new checkpoint in time (None as for
    /// view_changes).
    pub retransmissions: Option<f64>,
    /// Client transactions per signature batch where the validators admitted them, and per
    /// batch they relayed to other validators in one message (to the primary, or to all
    /// when a request timer fired; None as for view_changes, or when there was none).
    pub admission_batch_mean: Option<f64>,
    pub relay_batch_mean: Option<f64>,
    /// Client signatures the validators checked at admission per transaction the step
    /// committed: 1 when each is checked once, where it is admitted; more when checked
    /// transactions are then refused (None as for view_changes).
    pub admission_checks_per_commit: Option<f64>,
    /// Where the time went inside the validators over the step, warmup and drain included
    /// (empty when not every validator's metrics answered).
    pub stages: Vec<StageTime>,
    /// Blocks that carried this step's transactions, and their mean size.
    pub blocks: usize,
    pub mean_block_transactions: f64,
    pub max_send_lag_ms: f64,
    pub processes: Vec<ProcessCost>,
    /// CPU ms per committed transaction of the nodes (validators), of their chaincode, and of
    /// the load generator.
    pub validators_cpu_ms_per_tx: f64,
    pub chaincode_cpu_ms_per_tx: f64,
    pub bench_cpu_ms_per_tx: f64,
    /// The most any node process was resident (VmHWM), MiB.
    pub max_node_peak_rss_mib: f64,
}

/// The value below which `p` percent of `sorted` lie (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    // The epsilon keeps float error (99.9 / 100 * 1000 = 999.0000000000001) from moving the
    // rank up by one.
    let rank = (p * sorted.len() as f64 / 100.0 - 1e-9).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Throughput and latency of a step from its (sent, committed) stamps: throughput counts
/// commits within [from, to); latency covers transactions sent within [from, to) that
/// committed.
pub fn summarise(stamps: &[(Stamp, Stamp)], from: Stamp, to: Stamp) -> (f64, Latency) {
    let window = (to.saturating_sub(from)) as f64 / 1e9;
    let committed_in_window = stamps.iter().filter(|(_, c)| *c >= from && *c < to).count();
    let mut latencies: Vec<f64> = stamps
        .iter()
        .filter(|(s, c)| *s >= from && *s < to && *c > 0)
        .map(|(s, c)| c.saturating_sub(*s) as f64 / 1e6)
        .collect();
    latencies.sort_by(f64::total_cmp);
    let latency = Latency {
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        p999_ms: percentile(&latencies, 99.9),
        max_ms: latencies.last().copied().unwrap_or(0.0),
    };
    let tps = if window > 0.0 {
        committed_in_window as f64 / window
    } else {
        0.0
    };
    (tps, latency)
}

impl Step {
    pub fn line(&self) -> String {
        format!(
            "{:<14} offered {:>7.0}/s (sent {:>7.0}/s)  committed {:>7.0}/s  p50 {:>7.1} ms  p99 {:>7.1} ms  p999 {:>7.1} ms  not valid {}  rejected {}  uncommitted {}  view changes {}  blocks {} (mean {:.1} tx)  CPU/tx: nodes {:.3} ms, chaincode {:.3} ms, bench {:.3} ms  peak node RSS {:.0} MiB",
            self.label,
            self.offered_tx_per_s,
            self.sent_tx_per_s,
            self.committed_tx_per_s,
            self.latency.p50_ms,
            self.latency.p99_ms,
            self.latency.p999_ms,
            self.committed_invalid,
            self.rejected,
            self.uncommitted,
            self.view_changes
                .map_or("not measured".to_string(), |v| v.to_string()),
            self.blocks,
            self.mean_block_transactions,
            self.validators_cpu_ms_per_tx,
            self.chaincode_cpu_ms_per_tx,
            self.bench_cpu_ms_per_tx,
            self.max_node_peak_rss_mib
        )
    }
}

/// Writes `results.json` (`header` plus every step) and `latency.svg` into `dir`.
pub fn write(dir: &Path, header: serde_json::Value, steps: &[Step]) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut json = header;
    json["steps"] = serde_json::to_value(steps)?;
    std::fs::write(
        dir.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    let title = json["title"].as_str().unwrap_or("weft bench").to_string();
    std::fs::write(dir.join("latency.svg"), plot(&title, steps))?;
    Ok(())
}

/// An SVG line chart: committed tx/s on x, latency (ms, log scale) on y; p50, p99 and p999
/// series, one point per step, in order of throughput.
pub fn plot(title: &str, steps: &[Step]) -> String {
    let (width, height) = (760.0, 460.0);
    let (left, right, top, bottom) = (70.0, 20.0, 40.0, 50.0);
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let mut points: Vec<&Step> = steps.iter().filter(|s| s.latency.p50_ms > 0.0).collect();
    points.sort_by(|a, b| a.committed_tx_per_s.total_cmp(&b.committed_tx_per_s));
    let x_max = nice_ceiling(
        points
            .iter()
            .map(|s| s.committed_tx_per_s)
            .fold(1.0, f64::max),
    );
    let y_values = points
        .iter()
        .flat_map(|s| [s.latency.p50_ms, s.latency.p999_ms]);
    let y_min = 10f64.powf(
        y_values
            .clone()
            .fold(1e9, f64::min)
            .max(0.1)
            .log10()
            .floor(),
    );
    let y_max = 10f64.powf(y_values.fold(1.0, f64::max).log10().ceil());
    let x = |v: f64| left + v / x_max * plot_w;
    let y = |v: f64| {
        let span = (y_max.log10() - y_min.log10()).max(1e-9);
        top + plot_h - (v.max(y_min).log10() - y_min.log10()) / span * plot_h
    };
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        width / 2.0,
        escape(title)
    );
    // Axes, grid and ticks.
    for i in 0..=5 {
        let v = x_max * f64::from(i) / 5.0;
        let px = x(v);
        let _ = writeln!(
            svg,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{v:.0}</text>"##,
            top + plot_h,
            top + plot_h + 18.0
        );
    }
    let mut decade = y_min;
    while decade <= y_max * 1.0001 {
        let py = y(decade);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + plot_w,
            left - 6.0,
            py + 4.0,
            if decade < 1.0 {
                format!("{decade}")
            } else {
                format!("{decade:.0}")
            }
        );
        decade *= 10.0;
    }
    let _ = writeln!(
        svg,
        r##"<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle">committed transactions per second</text><text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle">submit-to-commit latency, ms (log)</text>"##,
        left + plot_w / 2.0,
        height - 12.0,
        top + plot_h / 2.0
    );
    let series: [Series; 3] = [
        ("p50", "#1f77b4", |s| s.latency.p50_ms),
        ("p99", "#ff7f0e", |s| s.latency.p99_ms),
        ("p999", "#d62728", |s| s.latency.p999_ms),
    ];
    for (n, (name, colour, value)) in series.iter().enumerate() {
        let path: Vec<String> = points
            .iter()
            .map(|s| format!("{:.1},{:.1}", x(s.committed_tx_per_s), y(value(s))))
            .collect();
        let _ = writeln!(
            svg,
            r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"#,
            path.join(" ")
        );
        for s in &points {
            let _ = writeln!(
                svg,
                r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{colour}"><title>{}: offered {:.0}/s, committed {:.0}/s, {name} {:.1} ms</title></circle>"#,
                x(s.committed_tx_per_s),
                y(value(s)),
                escape(&s.label),
                s.offered_tx_per_s,
                s.committed_tx_per_s,
                value(s)
            );
        }
        let ly = top + 14.0 + 16.0 * n as f64;
        let _ = writeln!(
            svg,
            r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="{colour}" stroke-width="2"/><text x="{:.1}" y="{:.1}">{name}</text>"#,
            left + 10.0,
            left + 30.0,
            left + 36.0,
            ly + 4.0
        );
    }
    svg.push_str("</svg>\n");
    svg
}

/// A plotted line: its name, colour and the value it takes from a step.
type Series = (&'static str, &'static str, fn(&Step) -> f64);

/// 1, 2 or 5 times a power of ten, at least `v`.
fn nice_ceiling(v: f64) -> f64 {
    let magnitude = 10f64.powf(v.log10().floor());
    for factor in [1.0, 2.0, 5.0, 10.0] {
        if factor * magnitude >= v {
            return factor * magnitude;
        }
    }
    10.0 * magnitude
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(label: &str, tps: f64, p50: f64) -> Step {
        Step {
            label: label.into(),
            offered_tx_per_s: tps,
            duration_s: 10.0,
            warmup_s: 2.0,
            sent: 0,
            sent_tx_per_s: tps,
            rejected: 0,
            first_rejection: None,
            committed: 0,
            committed_invalid: 0,
            first_invalid: None,
            uncommitted: 0,
            committed_tx_per_s: tps,
            latency: Latency {
                p50_ms: p50,
                p99_ms: p50 * 3.0,
                p999_ms: p50 * 5.0,
                max_ms: p50 * 6.0,
            },
            view_changes: Some(0.0),
            retransmissions: Some(0.0),
            admission_batch_mean: Some(3.5),
            relay_batch_mean: Some(4.0),
            admission_checks_per_commit: Some(1.0),
            stages: Vec::new(),
            blocks: 0,
            mean_block_transactions: 0.0,
            max_send_lag_ms: 0.0,
            processes: Vec::new(),
            validators_cpu_ms_per_tx: 0.0,
            chaincode_cpu_ms_per_tx: 0.0,
            bench_cpu_ms_per_tx: 0.0,
            max_node_peak_rss_mib: 0.0,
        }
    }

    #[test]
    fn percentiles_by_nearest_rank() {
        let values: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 500.0);
        assert_eq!(percentile(&values, 99.0), 990.0);
        assert_eq!(percentile(&values, 99.9), 999.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        assert_eq!(percentile(&[7.0], 99.9), 7.0);
    }

    #[test]
    fn summary_counts_the_window_only() {
        let ms = 1_000_000u64;
        // Sent at 0, 100, 200, ... ms; each commits 31 ms later; the last one never.
        let mut stamps: Vec<(Stamp, Stamp)> = (0..10)
            .map(|i| (i * 100 * ms + 1, i * 100 * ms + 31 * ms + 1))
            .collect();
        stamps.push((1_000 * ms, 0));
        // Window [200 ms, 700 ms): commits at 230..630 ms = 5 in 0.5 s.
        let (tps, latency) = summarise(&stamps, 200 * ms, 700 * ms);
        assert!((tps - 10.0).abs() < 1e-9, "{tps}");
        assert!((latency.p50_ms - 31.0).abs() < 1e-3, "{latency:?}");
        assert!((latency.max_ms - 31.0).abs() < 1e-3);
    }

    #[test]
    fn the_plot_has_a_point_per_step_and_series() {
        let steps = [step("a", 1000.0, 10.0), step("b <2>", 4000.0, 40.0)];
        let svg = plot("t", &steps);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert_eq!(svg.matches("<circle").count(), 6);
        assert_eq!(svg.matches("<polyline").count(), 3);
        assert!(svg.contains("b &lt;2&gt;") && !svg.contains("b <2>"));
        assert_eq!(nice_ceiling(4000.0), 5000.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
    }
}
