//! The bench's results: every run, the per-front summary, and the markdown table.

use std::fmt::Write as _;

use serde::Serialize;

use crate::loadgen::{H2loadResult, WrkResult};
use crate::tools::Machine;

/// One wrk run against one front end.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    /// Round number, from 1.
    pub round: u32,
    /// Scenario name.
    pub scenario: String,
    /// Front end label.
    pub front: String,
    /// wrk's figures.
    pub wrk: WrkResult,
    /// CPU seconds the front end used during the run.
    pub front_cpu_s: f64,
    /// CPU seconds the backends used during the run.
    pub backend_cpu_s: f64,
}

impl Run {
    /// Front CPU seconds per 10 000 requests.
    pub fn cpu_per_10k(&self) -> f64 {
        if self.wrk.requests == 0 {
            return 0.0;
        }
        self.front_cpu_s / self.wrk.requests as f64 * 10_000.0
    }
}

/// One front end in one scenario, over all rounds.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// Scenario name.
    pub scenario: String,
    /// Front end label.
    pub front: String,
    /// Median requests per second over the rounds.
    pub rps: f64,
    /// (max - min) / median over the rounds, percent.
    pub rps_spread_pct: f64,
    /// Median over rounds of req/s divided by nginx's in the same round.
    pub ratio_to_nginx: Option<f64>,
    /// Median over rounds of the median latency, ms.
    pub p50_ms: f64,
    /// Median over rounds of the 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Errors summed over the rounds.
    pub errors: u64,
    /// Median over rounds of front CPU seconds per 10k requests.
    pub cpu_s_per_10k: f64,
    /// Peak RSS of the front end (VmHWM summed over its processes) at the end, MiB.
    pub peak_rss_mib: f64,
}

/// Memory figures per front end.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Front end label.
    pub front: String,
    /// RSS after start, before any load, MiB.
    pub idle_rss_mib: f64,
    /// Peak RSS over the whole bench, MiB.
    pub peak_rss_mib: f64,
    /// RSS growth per idle keep-alive client connection, KiB.
    pub kib_per_idle_conn: Option<f64>,
}

/// An h2load run.
#[derive(Debug, Clone, Serialize)]
pub struct H2Run {
    /// Round number.
    pub round: u32,
    /// Front end label.
    pub front: String,
    /// h2load's figures.
    pub h2load: H2loadResult,
    /// Front CPU seconds used.
    pub front_cpu_s: f64,
}

/// The whole bench.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The machine.
    pub machine: Machine,
    /// Versions of the programs compared.
    pub versions: Vec<(String, String)>,
    /// The command line that produced this.
    pub command: String,
    /// Rounds.
    pub rounds: u32,
    /// Seconds per wrk run.
    pub duration_s: u64,
    /// Layers on in "towergate (all layers)".
    pub towergate_layers: Vec<String>,
    /// Layers the gateway did not accept, and why.
    pub towergate_skipped: Vec<(String, String)>,
    /// Notes on the setup.
    pub notes: Vec<String>,
    /// The summary table.
    pub rows: Vec<Row>,
    /// Memory per front.
    pub memory: Vec<Memory>,
    /// h2c runs (or why there are none).
    pub h2: Vec<H2Run>,
    /// Every wrk run.
    pub runs: Vec<Run>,
    /// Wall time of the whole bench, seconds.
    pub wall_s: f64,
    /// Load averages when the bench ended.
    pub load_average_end: String,
}

/// The median (the mean of the middle two for an even count): one disturbed round moves
/// it less than the mean.
fn median(xs: impl Iterator<Item = f64>) -> f64 {
    let mut v: Vec<f64> = xs.collect();
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 0 {
        (v[mid - 1] + v[mid]) / 2.0
    } else {
        v[mid]
    }
}

/// Summarises runs into rows, scenario by scenario in first-seen order, fronts likewise.
pub fn summarise(runs: &[Run], nginx: &str, peak_rss_mib: &dyn Fn(&str) -> f64) -> Vec<Row> {
    let mut scenarios: Vec<&str> = Vec::new();
    let mut fronts: Vec<&str> = Vec::new();
    for r in runs {
        if !scenarios.contains(&r.scenario.as_str()) {
            scenarios.push(&r.scenario);
        }
        if !fronts.contains(&r.front.as_str()) {
            fronts.push(&r.front);
        }
    }
    let mut rows = Vec::new();
    for s in &scenarios {
        for f in &fronts {
            let mine: Vec<&Run> = runs
                .iter()
                .filter(|r| r.scenario == *s && r.front == *f)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let rps = median(mine.iter().map(|r| r.wrk.rps));
            let (lo, hi) = mine.iter().fold((f64::MAX, 0.0f64), |(lo, hi), r| {
                (lo.min(r.wrk.rps), hi.max(r.wrk.rps))
            });
            let ratios: Vec<f64> = mine
                .iter()
                .filter_map(|r| {
                    let n = runs.iter().find(|n| {
                        n.round == r.round && n.scenario == r.scenario && n.front == nginx
                    })?;
                    (n.wrk.rps > 0.0).then(|| r.wrk.rps / n.wrk.rps)
                })
                .collect();
            rows.push(Row {
                scenario: s.to_string(),
                front: f.to_string(),
                rps,
                rps_spread_pct: if rps > 0.0 {
                    (hi - lo) / rps * 100.0
                } else {
                    0.0
                },
                ratio_to_nginx: (!ratios.is_empty()).then(|| median(ratios.into_iter())),
                p50_ms: median(mine.iter().map(|r| r.wrk.p50_ms)),
                p99_ms: median(mine.iter().map(|r| r.wrk.p99_ms)),
                errors: mine.iter().map(|r| r.wrk.errors()).sum(),
                cpu_s_per_10k: median(mine.iter().map(|r| r.cpu_per_10k())),
                peak_rss_mib: peak_rss_mib(f),
            });
        }
    }
    rows
}

/// The report as markdown: the machine, the command, the tables.
pub fn markdown(r: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(
        m,
        "Machine: {} CPUs ({}), {} MiB, Linux {}; load average {} at the start, {} at the end. \
         Command: `{}` ({} rounds of {} s per run, interleaved; {:.0} s after the build).\n",
        r.machine.nproc,
        r.machine.cpu_model,
        r.machine.mem_mib,
        r.machine.kernel,
        r.machine.load_average,
        r.load_average_end,
        r.command,
        r.rounds,
        r.duration_s,
        r.wall_s
    );
    let _ = writeln!(
        m,
        "| scenario | front end | req/s | ± | vs nginx | p50 ms | p99 ms | errors | CPU s / 10k req | peak RSS MiB |"
    );
    let _ = writeln!(
        m,
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for row in &r.rows {
        let ratio = row
            .ratio_to_nginx
            .map_or_else(|| "".into(), |x| format!("{x:.2}×"));
        let _ = writeln!(
            m,
            "| {} | {} | {:.0} | {:.0}% | {} | {:.2} | {:.2} | {} | {:.3} | {:.1} |",
            row.scenario,
            row.front,
            row.rps,
            row.rps_spread_pct,
            ratio,
            row.p50_ms,
            row.p99_ms,
            row.errors,
            row.cpu_s_per_10k,
            row.peak_rss_mib
        );
    }
    if !r.memory.is_empty() {
        let _ = writeln!(
            m,
            "\n| front end | idle RSS MiB | peak RSS MiB | KiB per idle keep-alive connection |"
        );
        let _ = writeln!(m, "| --- | ---: | ---: | ---: |");
        for mem in &r.memory {
            let per = mem
                .kib_per_idle_conn
                .map_or_else(|| "".into(), |k| format!("{k:.1}"));
            let _ = writeln!(
                m,
                "| {} | {:.1} | {:.1} | {per} |",
                mem.front, mem.idle_rss_mib, mem.peak_rss_mib
            );
        }
    }
    if !r.h2.is_empty() {
        let _ = writeln!(
            m,
            "\n| h2c (h2load) | round | req/s | mean ms | max ms | failed | 4xx/5xx | CPU s / 10k req |"
        );
        let _ = writeln!(
            m,
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
        );
        for h in &r.h2 {
            let done = h.h2load.succeeded.max(1) as f64;
            let _ = writeln!(
                m,
                "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {:.3} |",
                h.front,
                h.round,
                h.h2load.rps,
                h.h2load.mean_ms,
                h.h2load.max_ms,
                h.h2load.failed,
                h.h2load.status_errors,
                h.front_cpu_s / done * 10_000.0
            );
        }
    }
    let _ = writeln!(m);
    if !r.towergate_layers.is_empty() {
        let _ = writeln!(
            m,
            "towergate (all layers) ran with: {}.",
            r.towergate_layers.join(", ")
        );
    }
    for (layer, why) in &r.towergate_skipped {
        let _ = writeln!(m, "Not in this build's config: {layer} ({why}).");
    }
    for n in &r.notes {
        let _ = writeln!(m, "{n}");
    }
    let _ = writeln!(
        m,
        "\nVersions: {}.",
        r.versions
            .iter()
            .map(|(a, b)| format!("{a}: {b}"))
            .collect::<Vec<_>>()
            .join("; ")
    );
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(round: u32, front: &str, rps: f64) -> Run {
        Run {
            round,
            scenario: "small".into(),
            front: front.into(),
            wrk: WrkResult {
                requests: (rps * 10.0) as u64,
                seconds: 10.0,
                rps,
                p50_ms: 1.0,
                p99_ms: 4.0,
                socket_errors: 1,
                non_2xx_3xx: 0,
            },
            front_cpu_s: rps * 10.0 / 10_000.0 * 0.5,
            backend_cpu_s: 0.0,
        }
    }

    #[test]
    fn medians() {
        assert_eq!(median([3.0, 1.0, 2.0].into_iter()), 2.0);
        assert_eq!(median([4.0, 1.0, 2.0, 100.0].into_iter()), 3.0);
        assert_eq!(median(std::iter::empty()), 0.0);
    }

    #[test]
    fn ratios_are_taken_within_each_round() {
        // Round 2 is slower for everyone (drift); the ratio stays 1.2 in both.
        let runs = vec![
            run(1, "towergate", 1200.0),
            run(1, "nginx", 1000.0),
            run(2, "towergate", 600.0),
            run(2, "nginx", 500.0),
        ];
        let rows = summarise(&runs, "nginx", &|_| 7.0);
        let tg = &rows[0];
        assert_eq!(tg.front, "towergate");
        assert!((tg.ratio_to_nginx.unwrap() - 1.2).abs() < 1e-9);
        assert!((tg.rps - 900.0).abs() < 1e-9);
        assert!((tg.rps_spread_pct - 600.0 / 900.0 * 100.0).abs() < 1e-9);
        assert_eq!(tg.errors, 2);
        assert!((tg.cpu_s_per_10k - 0.5).abs() < 1e-9);
        assert!((rows[1].ratio_to_nginx.unwrap() - 1.0).abs() < 1e-9);
        assert_eq!(rows[1].peak_rss_mib, 7.0);
    }
}
