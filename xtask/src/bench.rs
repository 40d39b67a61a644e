//! `cargo xtask bench`: the same wrk load against towergate (all layers and bare), nginx,
//! HAProxy, Apache and straight at one backend, interleaved over rounds.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};

use crate::backend::{LARGE, Mode};
use crate::cluster::{self, Front, Kind};
use crate::loadgen;
use crate::peers::{self, NAMES, Topology, Tuning};
use crate::procfs;
use crate::report::{self, H2Run, Memory, Report, Run};
use crate::tools;

/// Options of `cargo xtask bench`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// A one-minute smoke run: 2 rounds of 1 s per run.
    #[arg(long)]
    pub quick: bool,
    /// Rounds (each runs every front end once per scenario); at least 2 [default: 3].
    #[arg(long)]
    pub rounds: Option<u32>,
    /// Seconds per wrk run [default: 5].
    #[arg(long)]
    pub duration: Option<u64>,
    /// Where to write the JSON results (default: TARGET/bench/bench.json).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Where to write the markdown table (default: next to the JSON, .md).
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Keep the scratch directory (configs, logs) and print its path.
    #[arg(long)]
    pub keep: bool,
}

struct Scenario {
    name: &'static str,
    path: &'static str,
    conns: u32,
}

const SCENARIOS: [Scenario; 4] = [
    Scenario {
        name: "small, 16 conns",
        path: "/",
        conns: 16,
    },
    Scenario {
        name: "small, 256 conns",
        path: "/",
        conns: 256,
    },
    Scenario {
        name: "100 KB, 16 conns",
        path: "/100k",
        conns: 16,
    },
    Scenario {
        name: "100 KB, 256 conns",
        path: "/100k",
        conns: 256,
    },
];

const TG_FULL: &str = "towergate (all layers)";
const TG_BARE: &str = "towergate (bare)";
const TG_REDIS: &str = "towergate (all layers, Redis store)";
const TG_WAF: &str = "towergate (all layers, WAF + OWASP CRS)";
const NGINX: &str = "nginx";
const HAPROXY: &str = "HAProxy";
const APACHE: &str = "Apache (event)";
const DIRECT: &str = "one backend direct (ceiling)";

/// Runs the bench.
pub fn run(args: Args) -> anyhow::Result<()> {
    let rounds = args.rounds.unwrap_or(if args.quick { 2 } else { 3 }).max(2);
    let duration = args
        .duration
        .unwrap_or(if args.quick { 1 } else { 5 })
        .max(1);
    let warmup = if args.quick { 1 } else { 2 };
    let idle_conns = 1000;
    let command = std::env::args()
        .skip(1)
        .fold("cargo xtask".to_owned(), |a, b| a + " " + &b);

    tools::ensure(&[
        tools::WRK,
        tools::H2LOAD,
        tools::NGINX,
        tools::HAPROXY,
        tools::APACHE,
    ])?;
    let bins = cluster::build()?;
    let bin = bins.towergate.clone();
    let started = Instant::now();
    let machine = tools::machine();
    let versions = vec![
        ("towergate".to_owned(), env!("CARGO_PKG_VERSION").to_owned()),
        ("nginx".into(), tools::version(tools::NGINX)),
        ("HAProxy".into(), tools::version(tools::HAPROXY)),
        ("Apache".into(), tools::version(tools::APACHE)),
        ("wrk".into(), tools::version(tools::WRK)),
        ("h2load".into(), tools::version(tools::H2LOAD)),
    ];

    let scratch = cluster::scratch_dir("towergate-bench")?;
    let dir = scratch.path().to_owned();
    let mut notes = Vec::new();
    let outcome = (|| -> anyhow::Result<Report> {
        let ports = cluster::ports(NAMES.len() + 8)?;
        let listen: Vec<(String, u16)> = NAMES
            .iter()
            .zip(&ports)
            .map(|(n, p)| (n.to_string(), *p))
            .collect();
        let (backends, addrs) =
            cluster::start_backends(&bins.xtask, &dir, "backends", Mode::Ok, 1, &listen)?;
        let topo = Topology::new(addrs);
        notes.push(
            "Backends: one xtask process (hyper, current-thread runtime) listening on seven ports; \
             chosen over a one-worker nginx because it served the same small answers at about \
             two thirds of nginx's CPU per request."
                .to_owned(),
        );
        let tuning = Tuning::article();
        let front_ports = &ports[NAMES.len()..];

        let generated_full = peers::towergate::generate(&peers::towergate::Options {
            bin: &bin,
            dir: &dir,
            port: front_ports[0],
            topo: &topo,
            tuning: &tuning,
            name: "towergate_full",
        })?;
        let generated_bare = peers::towergate::generate(&peers::towergate::Options {
            bin: &bin,
            dir: &dir,
            port: front_ports[1],
            topo: &topo,
            tuning: &tuning,
            name: "towergate_bare",
        })?;
        if !generated_full.pools {
            notes.push(
                "This towergate build has no `[pool.NAME]` yet: its `/` goes to webserver_one only \
                 (the peers round-robin over webserver_one and webserver_two)."
                    .to_owned(),
            );
        }
        if generated_full.layers.iter().any(|l| l == "evasive") {
            notes.push(
                "evasive counts every request with page/site counts no load generator reaches \
                 (the article's 2 and 30 per second would block wrk), so its counting is measured."
                    .to_owned(),
            );
        }

        // The same full stack with `[cluster]`: the flood blocker's counts go to a local
        // Redis, when `redis-server` is installed.
        let redis = Redis::start(front_ports[6], &dir);
        let redis_config = match &redis {
            Some(r) => {
                let generated = peers::towergate::generate(&peers::towergate::Options {
                    bin: &bin,
                    dir: &dir,
                    port: front_ports[5],
                    topo: &topo,
                    tuning: &tuning,
                    name: "towergate_redis",
                })?;
                Some(format!(
                    "{}
[cluster]
redis = \"redis://127.0.0.1:{}/0\"\ninstance = \"bench\"\n",
                    generated.full, r.port
                ))
            }
            None => {
                notes.push(
                    "Redis store row skipped: redis-server is not installed (Debian package redis-server)."
                        .to_owned(),
                );
                None
            }
        };

        // The same full stack with `[waf]` loading Debian's OWASP CRS as the article's
        // `Include conf/modsecurity/*.conf` does, when libmodsecurity and the CRS are there.
        let waf_config = if let Some(waf_bin) = &bins.towergate_waf {
            let generated = peers::towergate::generate(&peers::towergate::Options {
                bin: waf_bin,
                dir: &dir,
                port: front_ports[7],
                topo: &topo,
                tuning: &tuning,
                name: "towergate_waf",
            })?;
            Some(format!(
                "{}
[waf]
rules_files = [
  \"/etc/modsecurity/crs/crs-setup.conf\",
  \"/etc/modsecurity/crs/REQUEST-900-EXCLUSION-RULES-BEFORE-CRS.conf\",
  \"/usr/share/modsecurity-crs/rules/*.conf\",
  \"/etc/modsecurity/crs/RESPONSE-999-EXCLUSION-RULES-AFTER-CRS.conf\",
]
engine = \"On\"
",
                generated.full
            ))
        } else {
            notes.push(
                "WAF row skipped: libmodsecurity 3 or the OWASP CRS is not installed (Debian packages libmodsecurity-dev, pkg-config, modsecurity-crs)."
                    .to_owned(),
            );
            None
        };

        eprintln!("starting front ends in {}", dir.display());
        let mut fronts: Vec<Front> = vec![
            cluster::start_front(
                Kind::Towergate,
                TG_FULL,
                &dir,
                front_ports[0],
                &topo,
                &tuning,
                Some((&bin, &generated_full.full)),
            )?,
            cluster::start_front(
                Kind::Towergate,
                TG_BARE,
                &dir,
                front_ports[1],
                &topo,
                &tuning,
                Some((&bin, &generated_bare.bare)),
            )?,
        ];
        if let Some(config) = &redis_config {
            fronts.push(cluster::start_front(
                Kind::Towergate,
                TG_REDIS,
                &dir,
                front_ports[5],
                &topo,
                &tuning,
                Some((&bin, config)),
            )?);
        }
        if let (Some(config), Some(waf_bin)) = (&waf_config, &bins.towergate_waf) {
            fronts.push(cluster::start_front(
                Kind::Towergate,
                TG_WAF,
                &dir,
                front_ports[7],
                &topo,
                &tuning,
                Some((waf_bin, config)),
            )?);
        }
        fronts.extend([
            cluster::start_front(
                Kind::Nginx,
                NGINX,
                &dir,
                front_ports[2],
                &topo,
                &tuning,
                None,
            )?,
            cluster::start_front(
                Kind::Haproxy,
                HAPROXY,
                &dir,
                front_ports[3],
                &topo,
                &tuning,
                None,
            )?,
            cluster::start_front(
                Kind::Apache,
                APACHE,
                &dir,
                front_ports[4],
                &topo,
                &tuning,
                None,
            )?,
            Front {
                label: DIRECT.into(),
                kind: Kind::Direct,
                addr: topo.addr("webserver_one"),
                pgid: backends.pid(),
                proc: None,
            },
        ]);
        // HAProxy's backups need a passed health check before they count; let checks run.
        std::thread::sleep(Duration::from_millis(500));
        for f in &fronts {
            notes.extend(sanity(f)?);
        }
        let idle_rss: Vec<u64> = fronts
            .iter()
            .map(|f| procfs::group_status_kib(f.pgid, "VmRSS"))
            .collect();
        // Before any load, so the growth is not hidden by memory that earlier connections
        // left in the allocators.
        eprintln!("measuring memory per idle keep-alive connection ({idle_conns} each)");
        let per_conn: Vec<Option<f64>> = fronts
            .iter()
            .map(|f| {
                (f.kind != Kind::Direct)
                    .then(|| per_idle_connection(f, idle_conns))
                    .flatten()
            })
            .collect();

        eprintln!("warming up ({warmup} s each)");
        for f in &fronts {
            loadgen::run_wrk(&f.url("/"), 256, warmup, &dir)?;
        }

        let mut runs: Vec<Run> = Vec::new();
        let mut h2: Vec<H2Run> = Vec::new();
        let mut h2_works = true;
        for round in 1..=rounds {
            for s in &SCENARIOS {
                for f in fronts.iter_mut() {
                    alive(f)?;
                    let cpu0 = procfs::group_cpu_seconds(f.pgid);
                    let b0 = procfs::group_cpu_seconds(backends.pid());
                    let wrk = loadgen::run_wrk(&f.url(s.path), s.conns, duration, &dir)?;
                    let front_cpu_s = procfs::group_cpu_seconds(f.pgid) - cpu0;
                    let backend_cpu_s = procfs::group_cpu_seconds(backends.pid()) - b0;
                    truncate_access_logs(&dir);
                    eprintln!(
                        "round {round} {:<18} {:<30} {:>9.0} req/s  p99 {:>7.2} ms  errors {}",
                        s.name,
                        f.label,
                        wrk.rps,
                        wrk.p99_ms,
                        wrk.errors()
                    );
                    runs.push(Run {
                        round,
                        scenario: s.name.into(),
                        front: f.label.clone(),
                        wrk,
                        front_cpu_s,
                        backend_cpu_s,
                    });
                }
            }
            if h2_works {
                let f = &fronts[0];
                let cpu0 = procfs::group_cpu_seconds(f.pgid);
                match loadgen::run_h2load(&f.url("/"), 16, 10, duration, &dir) {
                    Ok(r) if r.succeeded > 0 => {
                        eprintln!("round {round} h2c (h2load -c16 -m10) {:.0} req/s", r.rps);
                        h2.push(H2Run {
                            round,
                            front: format!("{} h2c, 16 conns x 10 streams", f.label),
                            front_cpu_s: procfs::group_cpu_seconds(f.pgid) - cpu0,
                            h2load: r,
                        });
                    }
                    other => {
                        h2_works = false;
                        let why = match other {
                            Ok(_) => "no request succeeded".to_owned(),
                            Err(e) => e.to_string().lines().next().unwrap_or("").to_owned(),
                        };
                        notes.push(format!(
                            "h2c row skipped: towergate did not serve prior-knowledge h2c ({why})."
                        ));
                    }
                }
            }
        }

        let mut memory = Vec::new();
        for ((f, idle), per) in fronts.iter_mut().zip(&idle_rss).zip(per_conn) {
            alive(f)?;
            memory.push(Memory {
                front: f.label.clone(),
                idle_rss_mib: *idle as f64 / 1024.0,
                peak_rss_mib: procfs::group_peak_rss_kib(f.pgid) as f64 / 1024.0,
                kib_per_idle_conn: per,
            });
        }
        for f in &fronts {
            if f.kind == Kind::Towergate {
                let log = dir.join(format!("{}.log", slug(&f.label)));
                let size = std::fs::metadata(&log).map_or(0, |m| m.len());
                if size > 1 << 20 {
                    notes.push(format!(
                        "{} wrote {} KiB to stderr during the bench.",
                        f.label,
                        size / 1024
                    ));
                }
            }
        }
        let peak = |label: &str| {
            memory
                .iter()
                .find(|m| m.front == label)
                .map_or(0.0, |m| m.peak_rss_mib)
        };
        if redis.is_some() {
            notes.push(redis_ratio(&runs));
        }
        let rows = report::summarise(&runs, NGINX, &peak);
        notes.push(
            "Errors: wrk socket errors plus answers outside 2xx/3xx. CPU: utime+stime of the front end's \
             processes (its process group) from /proc; for the ceiling row, the backends'. \
             Figures are medians over the rounds; ± is the spread of req/s between rounds."
                .to_owned(),
        );
        drop(fronts);
        drop(backends);
        drop(redis);
        Ok(Report {
            machine,
            versions,
            command,
            rounds,
            duration_s: duration,
            towergate_layers: generated_full.layers,
            towergate_skipped: generated_full.skipped,
            notes: std::mem::take(&mut notes),
            rows,
            memory,
            h2,
            runs,
            wall_s: 0.0,
            load_average_end: String::new(),
        })
    })();
    let mut report = match outcome {
        Ok(r) => r,
        Err(e) => {
            let kept = scratch.keep();
            bail!("{e:#}\n(configs and logs kept in {})", kept.display());
        }
    };
    report.wall_s = started.elapsed().as_secs_f64();
    report.load_average_end = tools::load_average();

    let json = match args.json {
        Some(p) => p,
        None => cluster::target_dir()?.join("bench").join("bench.json"),
    };
    let md_path = args.markdown.unwrap_or_else(|| json.with_extension("md"));
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    if let Some(parent) = md_path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&json, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("cannot write {}", json.display()))?;
    let md = report::markdown(&report);
    std::fs::write(&md_path, &md).with_context(|| format!("cannot write {}", md_path.display()))?;
    println!("\n{md}");
    println!("written: {} and {}", json.display(), md_path.display());
    if args.keep {
        let kept = scratch.keep();
        println!("configs and logs kept in {}", kept.display());
    }
    Ok(())
}

/// A `redis-server` for the Redis store row: loopback, no persistence, stopped by PID.
struct Redis {
    child: std::process::Child,
    port: u16,
}

impl Redis {
    fn start(port: u16, dir: &std::path::Path) -> Option<Redis> {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(Redis { child, port })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The Redis store row's req/s over the local-only full stack's, per scenario (medians
/// over the rounds).
fn redis_ratio(runs: &[Run]) -> String {
    let median = |front: &str, scenario: &str| {
        let mut v: Vec<f64> = runs
            .iter()
            .filter(|r| r.front == front && r.scenario == scenario)
            .map(|r| r.wrk.rps)
            .collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let ratios: Vec<String> = SCENARIOS
        .iter()
        .map(|s| {
            let full = median(TG_FULL, s.name);
            let shared = median(TG_REDIS, s.name);
            format!(
                "{} {:.2}",
                s.name,
                if full > 0.0 { shared / full } else { 0.0 }
            )
        })
        .collect();
    format!(
        "{TG_REDIS}: the full stack with `[cluster]` (flood counts pushed to and pulled from a local \
         redis-server every 100 ms; wrk's one client counted on every request). Its req/s over \
         {TG_FULL}'s: {}.",
        ratios.join(", ")
    )
}

/// Empties the access logs (every front end appends to them) so a whole bench does not
/// fill the disk: a default run writes gigabytes of log lines.
fn truncate_access_logs(dir: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        // HAProxy logs to stdout, which is its log file.
        if name.ends_with("access.log") || name == format!("{}.log", slug(HAPROXY)) {
            if let Ok(f) = std::fs::OpenOptions::new().write(true).open(e.path()) {
                let _ = f.set_len(0);
            }
        }
    }
}

fn slug(label: &str) -> String {
    label
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect()
}

fn alive(f: &mut Front) -> anyhow::Result<()> {
    if let Some(p) = f.proc.as_mut() {
        if p.exited() {
            bail!("{} exited:\n{}", f.label, crate::guard::log_tail(p.log()));
        }
    }
    Ok(())
}

/// Checks a front answers `/` (from the round-robin pair) and `/100k` (whole); returns
/// notes on anything that differs from the article's behaviour.
fn sanity(f: &Front) -> anyhow::Result<Vec<String>> {
    let mut notes = Vec::new();
    let mut seen = Vec::new();
    for _ in 0..4 {
        let a = crate::http1::get(f.addr, "/").with_context(|| format!("GET / via {}", f.label))?;
        if a.status != 200 || !a.body.starts_with(b"hello from webserver_") {
            bail!(
                "{}: GET / answered {} `{}`",
                f.label,
                a.status,
                String::from_utf8_lossy(&a.body[..a.body.len().min(200)])
            );
        }
        let b = a.header("x-backend").unwrap_or("").to_owned();
        if !seen.contains(&b) {
            seen.push(b);
        }
    }
    if f.kind != Kind::Direct && seen.len() < 2 {
        notes.push(format!(
            "{}: `/` reached only {:?} in 4 requests (no round robin).",
            f.label, seen
        ));
    }
    let a = crate::http1::get(f.addr, "/100k")?;
    let len = a
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(a.body.len());
    if a.status != 200 || len != LARGE {
        bail!(
            "{}: GET /100k answered {} with {len} bytes",
            f.label,
            a.status
        );
    }
    Ok(notes)
}

/// RSS growth per idle keep-alive connection, KiB: `n` connections each make one request
/// and stay open.
fn per_idle_connection(f: &Front, n: usize) -> Option<f64> {
    std::thread::sleep(Duration::from_millis(300));
    let before = procfs::group_status_kib(f.pgid, "VmRSS");
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        match crate::http1::idle_connection(f.addr) {
            Ok(c) => conns.push(c),
            Err(_) => break,
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = procfs::group_status_kib(f.pgid, "VmRSS");
    let held = conns.len();
    drop(conns);
    (held == n).then(|| after.saturating_sub(before) as f64 / n as f64)
}
