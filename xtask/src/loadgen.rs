//! Load generators: wrk (HTTP/1.1) and h2load (HTTP/2), run bounded in time, their output
//! parsed into numbers.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::guard::Proc;

/// One wrk run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WrkResult {
    /// Completed requests.
    pub requests: u64,
    /// Wall time of the run, seconds.
    pub seconds: f64,
    /// Requests per second as wrk reports it.
    pub rps: f64,
    /// Median latency, milliseconds.
    pub p50_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Socket errors: connect + read + write + timeout.
    pub socket_errors: u64,
    /// Answers with a status outside 2xx and 3xx.
    pub non_2xx_3xx: u64,
}

impl WrkResult {
    /// Client-visible errors: socket errors plus non-2xx/3xx answers.
    pub fn errors(&self) -> u64 {
        self.socket_errors + self.non_2xx_3xx
    }
}

/// Parses a wrk duration such as `181.54us`, `1.96ms`, `2.01s` or `1.00m` into milliseconds.
fn parse_duration_ms(s: &str) -> Option<f64> {
    let split = s.find(|c: char| c.is_ascii_alphabetic())?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let factor = match unit {
        "us" => 0.001,
        "ms" => 1.0,
        "s" => 1000.0,
        "m" => 60_000.0,
        "h" => 3_600_000.0,
        _ => return None,
    };
    Some(v * factor)
}

/// Parses the output of `wrk --latency`.
pub fn parse_wrk(out: &str) -> anyhow::Result<WrkResult> {
    let mut r = WrkResult::default();
    let (mut have_total, mut have_rps) = (false, false);
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("50%") {
            r.p50_ms = parse_duration_ms(rest.trim()).context("wrk: bad 50% latency")?;
        } else if let Some(rest) = line.strip_prefix("99%") {
            r.p99_ms = parse_duration_ms(rest.trim()).context("wrk: bad 99% latency")?;
        } else if line.contains(" requests in ") {
            // "89189 requests in 1.10s, 12.34MB read"
            let mut words = line.split_whitespace();
            r.requests = words
                .next()
                .and_then(|n| n.parse().ok())
                .context("wrk: bad total")?;
            let secs = words
                .nth(2)
                .context("wrk: no duration")?
                .trim_end_matches(',');
            r.seconds = parse_duration_ms(secs).context("wrk: bad duration")? / 1000.0;
            have_total = true;
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            r.socket_errors = rest
                .split(',')
                .filter_map(|part| part.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum();
        } else if let Some(rest) = line.strip_prefix("Non-2xx or 3xx responses:") {
            r.non_2xx_3xx = rest.trim().parse().context("wrk: bad non-2xx count")?;
        } else if let Some(rest) = line.strip_prefix("Requests/sec:") {
            r.rps = rest.trim().parse().context("wrk: bad Requests/sec")?;
            have_rps = true;
        }
    }
    if !(have_total && have_rps) {
        bail!("wrk printed no result:\n{out}");
    }
    Ok(r)
}

/// Runs `wrk -t2 -cCONNS -dSECS --latency URL`, killed if it overruns; once more if wrk
/// itself fails without a result (it rarely crashes under heavy load).
pub fn run_wrk(url: &str, conns: u32, secs: u64, log_dir: &Path) -> anyhow::Result<WrkResult> {
    run_wrk_once(url, conns, secs, log_dir).or_else(|first| {
        eprintln!("wrk failed ({first:#}); running it again");
        std::thread::sleep(Duration::from_secs(1));
        run_wrk_once(url, conns, secs, log_dir)
    })
}

fn run_wrk_once(url: &str, conns: u32, secs: u64, log_dir: &Path) -> anyhow::Result<WrkResult> {
    let out = log_dir.join("wrk.out");
    let _ = std::fs::remove_file(&out);
    let threads = conns.min(2);
    let mut cmd = Command::new("wrk");
    cmd.args([
        format!("-t{threads}"),
        format!("-c{conns}"),
        format!("-d{secs}s"),
        "--timeout".into(),
        "5s".into(),
        "--latency".into(),
        url.into(),
    ]);
    let mut p = Proc::spawn("wrk", &mut cmd, &out)?;
    let Some(status) = p.wait_timeout(Duration::from_secs(secs + 15)) else {
        bail!("wrk against {url} overran its {secs}s by 15s and was killed");
    };
    let text = std::fs::read_to_string(&out)?;
    parse_wrk(&text).with_context(|| format!("wrk against {url} ({status})"))
}

/// One h2load run's figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct H2loadResult {
    /// Requests per second.
    pub rps: f64,
    /// Requests that got an answer.
    pub succeeded: u64,
    /// Requests that failed (including errored and timed out).
    pub failed: u64,
    /// Answers with status 4xx or 5xx.
    pub status_errors: u64,
    /// Mean time for request, milliseconds.
    pub mean_ms: f64,
    /// Longest time for request, milliseconds.
    pub max_ms: f64,
}

/// Parses h2load's summary.
pub fn parse_h2load(out: &str) -> anyhow::Result<H2loadResult> {
    let mut r = H2loadResult::default();
    let mut seen = (false, false);
    for line in out.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // "finished in 1.00s, 12345.00 req/s, 1.23MB/s"
            let rps = rest.split(", ").nth(1).context("h2load: no req/s")?;
            r.rps = rps
                .trim_end_matches(" req/s")
                .parse()
                .context("h2load: bad req/s")?;
            seen.0 = true;
        } else if let Some(rest) = line.strip_prefix("requests:") {
            // "10 total, 10 started, 10 done, 10 succeeded, 0 failed, 0 errored, 0 timeout"
            for part in rest.split(',') {
                let mut w = part.split_whitespace();
                let (Some(n), Some(what)) = (w.next(), w.next()) else {
                    continue;
                };
                let n: u64 = n.parse().context("h2load: bad count")?;
                match what {
                    "succeeded" => r.succeeded = n,
                    "failed" => r.failed = n,
                    _ => {}
                }
            }
            seen.1 = true;
        } else if let Some(rest) = line.strip_prefix("status codes:") {
            r.status_errors = rest
                .split(',')
                .filter_map(|p| {
                    let mut w = p.split_whitespace();
                    let n: u64 = w.next()?.parse().ok()?;
                    matches!(w.next()?, "4xx" | "5xx").then_some(n)
                })
                .sum();
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            let cols: Vec<&str> = rest.split_whitespace().collect();
            if cols.len() >= 3 {
                r.max_ms = parse_duration_ms(cols[1]).unwrap_or(0.0);
                r.mean_ms = parse_duration_ms(cols[2]).unwrap_or(0.0);
            }
        }
    }
    if !(seen.0 && seen.1) {
        bail!("h2load printed no result:\n{out}");
    }
    Ok(r)
}

/// Runs h2load with prior-knowledge h2c for `secs` seconds (`-m` streams per connection).
pub fn run_h2load(
    url: &str,
    conns: u32,
    streams: u32,
    secs: u64,
    log_dir: &Path,
) -> anyhow::Result<H2loadResult> {
    let out = log_dir.join("h2load.out");
    let _ = std::fs::remove_file(&out);
    let mut cmd = Command::new("h2load");
    cmd.args([
        "-t".to_string(),
        "2".into(),
        "-c".into(),
        conns.to_string(),
        "-m".into(),
        streams.to_string(),
        "-D".into(),
        secs.to_string(),
        "-T".into(),
        "5".into(),
        url.into(),
    ]);
    let mut p = Proc::spawn("h2load", &mut cmd, &out)?;
    if p.wait_timeout(Duration::from_secs(secs + 15)).is_none() {
        bail!("h2load against {url} overran its {secs}s by 15s and was killed");
    }
    parse_h2load(&std::fs::read_to_string(&out)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK: &str = "Running 10s test @ http://127.0.0.1:8080/
  2 threads and 256 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     4.02ms    1.96ms  41.30ms   87.45%
    Req/Sec    32.10k     2.98k   44.58k    72.73%
  Latency Distribution
     50%  789.00us
     75%    1.96ms
     90%    3.85ms
     99%    1.02s
  641882 requests in 10.10s, 95.21MB read
  Socket errors: connect 3, read 7, write 0, timeout 12
  Non-2xx or 3xx responses: 5
Requests/sec:  63552.67
Transfer/sec:      9.43MB
";

    #[test]
    fn wrk_full_output() {
        let r = parse_wrk(WRK).unwrap();
        assert_eq!(r.requests, 641_882);
        assert!((r.seconds - 10.10).abs() < 1e-9);
        assert!((r.rps - 63552.67).abs() < 1e-9);
        assert!((r.p50_ms - 0.789).abs() < 1e-9);
        assert!((r.p99_ms - 1020.0).abs() < 1e-9);
        assert_eq!(r.socket_errors, 22);
        assert_eq!(r.non_2xx_3xx, 5);
        assert_eq!(r.errors(), 27);
    }

    #[test]
    fn wrk_without_error_lines() {
        let clean: String = WRK
            .lines()
            .filter(|l| !l.contains("errors") && !l.contains("Non-2xx"))
            .map(|l| format!("{l}\n"))
            .collect();
        let r = parse_wrk(&clean).unwrap();
        assert_eq!(r.errors(), 0);
        assert_eq!(r.requests, 641_882);
    }

    #[test]
    fn wrk_failure_is_an_error_with_the_output() {
        let err = parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("Connection refused"), "{err}");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration_ms("250.00us"), Some(0.25));
        assert_eq!(parse_duration_ms("2.00s"), Some(2000.0));
        assert_eq!(parse_duration_ms("1.50m"), Some(90_000.0));
        assert_eq!(parse_duration_ms("12"), None);
        assert_eq!(parse_duration_ms("3.0xs"), None);
    }

    #[test]
    fn h2load_summary() {
        let out = "starting benchmark...
Application protocol: h2c

finished in 8.00s, 41234.50 req/s, 5.12MB/s
requests: 329876 total, 329876 started, 329876 done, 329870 succeeded, 6 failed, 6 errored, 0 timeout
status codes: 329860 2xx, 0 3xx, 10 4xx, 0 5xx
traffic: 40.96MB (42949672) total, 3.14MB (3292160) headers (space savings 93.51%), 30.00MB data
                     min         max         mean         sd        +/- sd
time for request:      112us     30.12ms      3.08ms      1.11ms    70.00%
";
        let r = parse_h2load(out).unwrap();
        assert!((r.rps - 41234.5).abs() < 1e-9);
        assert_eq!((r.succeeded, r.failed, r.status_errors), (329_870, 6, 10));
        assert!((r.max_ms - 30.12).abs() < 1e-9);
        assert!((r.mean_ms - 3.08).abs() < 1e-9);
        assert!(parse_h2load("unable to connect\n").is_err());
    }
}
