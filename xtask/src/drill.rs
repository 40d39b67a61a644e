//! `cargo xtask drill`: fault drills under load against towergate, nginx and HAProxy, each
//! front end started fresh for each drill with the same short timeouts.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;

use crate::backend::Mode;
use crate::client::{self, Load};
use crate::cluster::{self, Binaries, Front, Kind};
use crate::guard::Proc;
use crate::peers::{self, NAMES, Topology, Tuning};
use crate::procfs;
use crate::tools;

/// Options of `cargo xtask drill`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Shorter drills (about two and a half minutes in all, after the build).
    #[arg(long)]
    pub quick: bool,
    /// Where to write the JSON results (default: TARGET/bench/drill.json; markdown beside it).
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Keep the scratch directory (configs, logs) and print its path.
    #[arg(long)]
    pub keep: bool,
}

/// One drill's results.
#[derive(Debug, Clone, Serialize)]
pub struct Table {
    /// Drill name.
    pub title: String,
    /// What was done.
    pub what: String,
    /// Column heads.
    pub columns: Vec<String>,
    /// One row per front end.
    pub rows: Vec<Vec<String>>,
    /// Notes (skips, caveats).
    pub notes: Vec<String>,
}

impl Table {
    fn new(title: &str, what: String, columns: &[&str]) -> Self {
        Self {
            title: title.into(),
            what,
            columns: columns.iter().map(|c| c.to_string()).collect(),
            rows: Vec::new(),
            notes: Vec::new(),
        }
    }

    fn markdown(&self) -> String {
        let mut m = format!("### {}\n\n{}\n\n", self.title, self.what);
        if !self.rows.is_empty() {
            let _ = writeln!(m, "| {} |", self.columns.join(" | "));
            let _ = writeln!(m, "|{}", " --- |".repeat(self.columns.len()));
            for r in &self.rows {
                let _ = writeln!(m, "| {} |", r.join(" | "));
            }
            m.push('\n');
        }
        for n in &self.notes {
            let _ = writeln!(m, "{n}\n");
        }
        m
    }
}

/// Timings, shortened by `--quick`.
struct Plan {
    failover_kill: Duration,
    failover_restart: Duration,
    failover_end: Duration,
    fault_run: Duration,
    slowloris_conns: usize,
    slowloris_run: Duration,
    reload_run: Duration,
}

impl Plan {
    fn new(quick: bool) -> Self {
        if quick {
            Self {
                failover_kill: Duration::from_secs(1),
                failover_restart: Duration::from_secs(4),
                failover_end: Duration::from_secs(10),
                fault_run: Duration::from_secs(5),
                slowloris_conns: 1000,
                slowloris_run: Duration::from_secs(12),
                reload_run: Duration::from_secs(4),
            }
        } else {
            Self {
                failover_kill: Duration::from_secs(2),
                failover_restart: Duration::from_secs(7),
                failover_end: Duration::from_secs(15),
                fault_run: Duration::from_secs(8),
                slowloris_conns: 2000,
                slowloris_run: Duration::from_secs(14),
                reload_run: Duration::from_secs(6),
            }
        }
    }
}

/// Shared state of a drill run.
struct Ctx {
    bins: Binaries,
    dir: PathBuf,
    tuning: Tuning,
    rt: tokio::runtime::Runtime,
    plan: Plan,
    /// The gateway has `[pool.NAME]`.
    pools: bool,
}

const FRONTS: [(Kind, &str); 3] = [
    (Kind::Towergate, "towergate"),
    (Kind::Nginx, "nginx"),
    (Kind::Haproxy, "HAProxy"),
];

/// Runs the drills.
pub fn run(args: Args) -> anyhow::Result<()> {
    let started = Instant::now();
    tools::ensure(&[tools::NGINX, tools::HAPROXY])?;
    let bins = cluster::build()?;
    let scratch = cluster::scratch_dir("towergate-drill")?;
    let dir = scratch.path().to_owned();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut ctx = Ctx {
        bins,
        dir,
        tuning: Tuning::drill(),
        rt,
        plan: Plan::new(args.quick),
        pools: false,
    };
    let result = (|| -> anyhow::Result<Vec<Table>> {
        // Does this gateway have pools? Generate a config against placeholder addresses.
        let ports = cluster::ports(NAMES.len() + 1)?;
        let topo = topology(&ports);
        ctx.pools = generate(&ctx, ports[NAMES.len()], &topo, "probe")?.pools;
        let tables = vec![
            failover(&ctx)?,
            faulty_member(&ctx, Mode::Hang)?,
            faulty_member(&ctx, Mode::Reset)?,
            slowloris(&ctx)?,
            reload(&ctx)?,
        ];
        Ok(tables)
    })();
    let tables = match result {
        Ok(t) => t,
        Err(e) => {
            let kept = scratch.keep();
            return Err(e.context(format!("configs and logs kept in {}", kept.display())));
        }
    };
    let machine = tools::machine();
    let mut md = format!(
        "Machine: {} CPUs ({}); load average {} at the end. Command: `cargo xtask drill{}` ({:.0} s).\n\n",
        machine.nproc,
        machine.cpu_model,
        machine.load_average,
        if args.quick { " --quick" } else { "" },
        started.elapsed().as_secs_f64()
    );
    let t = &ctx.tuning;
    let _ = writeln!(
        md,
        "Every front end gets the same settings: {}s for an upstream's answer (proxy_read_timeout, \
         timeout server, `timeout`), a failed member retried after {}s (fail_timeout, `retry`; \
         HAProxy: health checks every {}ms, fall 2 rise 2, which its backups need), {}s for a \
         client's request head (client_header_timeout, timeout http-request, header_read_timeout). \
         Loads are paced keep-alive clients that do not retry; \"send\" failures are connections \
         closed before an answer, \"truncated\" answers whose body broke off.\n",
        peers::secs(t.timeout),
        peers::secs(t.retry),
        t.check_interval.as_millis(),
        peers::secs(t.header_timeout)
    );
    for table in &tables {
        md.push_str(&table.markdown());
    }
    println!("\n{md}");
    let json = match args.json {
        Some(p) => p,
        None => cluster::target_dir()?.join("bench").join("drill.json"),
    };
    if let Some(parent) = json.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&json, serde_json::to_string_pretty(&tables)?)?;
    std::fs::write(json.with_extension("md"), &md)?;
    println!(
        "written: {} and {}",
        json.display(),
        json.with_extension("md").display()
    );
    if args.keep {
        println!("configs and logs kept in {}", scratch.keep().display());
    }
    Ok(())
}

/// The article's topology on `ports` (in [`NAMES`] order).
fn topology(ports: &[u16]) -> Topology {
    Topology::new(
        NAMES
            .iter()
            .zip(ports)
            .map(|(n, p)| (n.to_string(), ([127, 0, 0, 1], *p).into()))
            .collect(),
    )
}

fn generate(
    ctx: &Ctx,
    port: u16,
    topo: &Topology,
    name: &str,
) -> anyhow::Result<peers::towergate::Generated> {
    peers::towergate::generate(&peers::towergate::Options {
        bin: &ctx.bins.towergate,
        dir: &ctx.dir,
        port,
        topo,
        tuning: &ctx.tuning,
        name,
    })
}

/// Backends for a drill: every machine in `ok` mode in one process, except those listed in
/// `separate`, each in its own process with its mode (so it can be killed alone).
fn start_backends(
    ctx: &Ctx,
    ports: &[u16],
    separate: &[(&str, Mode)],
) -> anyhow::Result<(Vec<Proc>, Topology)> {
    let mut procs = Vec::new();
    let shared: Vec<(String, u16)> = NAMES
        .iter()
        .zip(ports)
        .filter(|(n, _)| !separate.iter().any(|(s, _)| s == *n))
        .map(|(n, p)| (n.to_string(), *p))
        .collect();
    procs.push(
        cluster::start_backends(&ctx.bins.xtask, &ctx.dir, "backends", Mode::Ok, 1, &shared)?.0,
    );
    for (name, mode) in separate {
        let i = NAMES
            .iter()
            .position(|n| n == name)
            .context("unknown machine")?;
        procs.push(
            cluster::start_backends(
                &ctx.bins.xtask,
                &ctx.dir,
                name,
                *mode,
                1,
                &[(name.to_string(), ports[i])],
            )?
            .0,
        );
    }
    Ok((procs, topology(ports)))
}

/// Starts front end `kind` for `topo` on `port`.
fn start_front(
    ctx: &Ctx,
    kind: Kind,
    label: &str,
    port: u16,
    topo: &Topology,
) -> anyhow::Result<Front> {
    let slug = format!("{}_{port}", label.to_lowercase());
    let conf = match kind {
        Kind::Towergate => Some(generate(ctx, port, topo, &slug)?.full),
        _ => None,
    };
    let front = cluster::start_front(
        kind,
        &slug,
        &ctx.dir,
        port,
        topo,
        &ctx.tuning,
        conf.as_deref().map(|c| (ctx.bins.towergate.as_path(), c)),
    )?;
    // Let health checks (HAProxy) see every member once.
    std::thread::sleep(Duration::from_millis(1500));
    Ok(front)
}

fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2} s", x / 1000.0)
    } else {
        format!("{x:.0} ms")
    }
}

fn not_without_pools(table: &mut Table) {
    table.notes.push(
        "towergate: skipped, this build has no `[pool.NAME]` balancer pools yet (the drill needs a \
         pool with a hot standby or two members)."
            .into(),
    );
}

/// Kill the primary of a hot-spare pool under load, restart it, watch where traffic goes.
fn failover(ctx: &Ctx) -> anyhow::Result<Table> {
    let p = &ctx.plan;
    let mut table = Table::new(
        "Primary of a hot-spare pool killed under load",
        format!(
            "8 clients, each one request every 5 ms on `/paid_user/x` (pool paid_servers: paid_one \
             primary, paid_two hot standby). paid_one is killed (SIGKILL) at {}s and started again \
             on the same port at {}s; the run ends at {}s.",
            p.failover_kill.as_secs(),
            p.failover_restart.as_secs(),
            p.failover_end.as_secs()
        ),
        &[
            "front end",
            "requests",
            "failed (kinds)",
            "all on the standby after",
            "back on the primary after",
            "p99",
            "max",
        ],
    );
    eprintln!("drill: {}", table.title);
    for (kind, label) in FRONTS {
        if kind == Kind::Towergate && !ctx.pools {
            not_without_pools(&mut table);
            continue;
        }
        let ports = cluster::ports(NAMES.len() + 1)?;
        let (mut procs, topo) = start_backends(
            ctx,
            &ports,
            &[("paid_one", Mode::Ok), ("paid_two", Mode::Ok)],
        )?;
        let front = start_front(ctx, kind, label, ports[NAMES.len()], &topo)?;
        let t0 = Instant::now();
        let load = Load {
            addr: front.addr,
            path: "/paid_user/x".into(),
            workers: 8,
            interval: Duration::from_millis(5),
            duration: p.failover_end,
            timeout: Duration::from_secs(5),
        };
        let handle = ctx.rt.spawn(load.run(t0));
        sleep_until(t0 + p.failover_kill);
        let killed_ms = t0.elapsed().as_secs_f64() * 1000.0;
        procs[1].kill();
        sleep_until(t0 + p.failover_restart);
        let paid_one = NAMES.iter().position(|n| *n == "paid_one").unwrap_or(1);
        let (restarted, _) = cluster::start_backends(
            &ctx.bins.xtask,
            &ctx.dir,
            "paid_one",
            Mode::Ok,
            1,
            &[("paid_one".into(), ports[paid_one])],
        )?;
        let restarted_ms = t0.elapsed().as_secs_f64() * 1000.0;
        procs[1] = restarted;
        let samples = ctx.rt.block_on(handle)?;
        let all = client::count(&samples, 0.0, f64::MAX);
        let standby = client::settled_on(&samples, "paid_two", killed_ms, restarted_ms);
        let back = client::settled_on(&samples, "paid_one", restarted_ms, f64::MAX);
        let before = client::count(&samples, 0.0, killed_ms);
        if before.by_backend.get("paid_one").copied().unwrap_or(0) != before.ok {
            table.notes.push(format!(
                "{label}: before the kill, answers came from {:?}.",
                before.by_backend
            ));
        }
        let end_s = (p.failover_end.as_secs_f64() * 1000.0 - restarted_ms) / 1000.0;
        table.rows.push(vec![
            label.into(),
            all.total.to_string(),
            format!("{} ({})", all.errors(), all.error_kinds()),
            standby.map_or("never".into(), ms),
            back.map_or(format!("not within {end_s:.0} s"), ms),
            ms(all.p99_ms),
            ms(all.max_ms),
        ]);
        eprintln!("  {label}: {:?}", table.rows.last());
        drop(front);
        drop(procs);
    }
    Ok(table)
}

/// A member of the round-robin pair that hangs (accepts, never answers) or resets mid-answer.
fn faulty_member(ctx: &Ctx, mode: Mode) -> anyhow::Result<Table> {
    let run = ctx.plan.fault_run;
    let half = run.as_secs_f64() * 500.0;
    let (title, what, path) = match mode {
        Mode::Hang => (
            "A member that accepts and never answers",
            format!(
                "webserver_two accepts connections and reads requests but never answers; \
                 webserver_one is healthy. 8 clients, each one request every 10 ms on `/`, for {} s.",
                run.as_secs()
            ),
            "/",
        ),
        _ => (
            "A member that resets mid-response",
            format!(
                "webserver_two sends the head of a 100 KiB answer and 16 KiB of its body, then \
                 resets the connection (RST); webserver_one is healthy. 8 clients, each one request \
                 every 10 ms on `/100k`, for {} s.",
                run.as_secs()
            ),
            "/100k",
        ),
    };
    let mut table = Table::new(
        title,
        what,
        &[
            "front end",
            "requests",
            "whole 2xx",
            "failed (kinds)",
            "failed in the second half",
            "waited over 1 s",
            "p50",
            "p99",
            "max",
        ],
    );
    eprintln!("drill: {}", table.title);
    for (kind, label) in FRONTS {
        if kind == Kind::Towergate && !ctx.pools {
            not_without_pools(&mut table);
            continue;
        }
        let ports = cluster::ports(NAMES.len() + 1)?;
        let (procs, topo) = start_backends(ctx, &ports, &[("webserver_two", mode)])?;
        let front = start_front(ctx, kind, label, ports[NAMES.len()], &topo)?;
        let t0 = Instant::now();
        let load = Load {
            addr: front.addr,
            path: path.into(),
            workers: 8,
            interval: Duration::from_millis(10),
            duration: run,
            timeout: Duration::from_secs(10),
        };
        let samples = ctx.rt.block_on(load.run(t0));
        let all = client::count(&samples, 0.0, f64::MAX);
        let late = client::count(&samples, half, f64::MAX);
        table.rows.push(vec![
            label.into(),
            all.total.to_string(),
            all.ok.to_string(),
            format!("{} ({})", all.errors(), all.error_kinds()),
            format!("{} of {}", late.errors(), late.total),
            samples
                .iter()
                .filter(|s| s.end_ms - s.start_ms > 1000.0)
                .count()
                .to_string(),
            ms(all.p50_ms),
            ms(all.p99_ms),
            ms(all.max_ms),
        ]);
        eprintln!("  {label}: {:?}", table.rows.last());
        drop(front);
        drop(procs);
    }
    Ok(table)
}

/// Slowloris: many connections holding unfinished request heads, while normal clients go on.
fn slowloris(ctx: &Ctx) -> anyhow::Result<Table> {
    let p = &ctx.plan;
    let mut table = Table::new(
        "Slowloris",
        format!(
            "{} connections each send an unfinished request head and one more header line every \
             3 s, for {} s; meanwhile 4 normal clients make one request every 20 ms on `/`. \
             Descriptors are counted in /proc/PID/fd over the front end's processes, connections \
             in /proc/net/tcp.",
            p.slowloris_conns,
            p.slowloris_run.as_secs()
        ),
        &[
            "front end",
            "held open",
            "fds before → peak",
            "connections peak",
            "closed by the front (first – last)",
            "normal requests",
            "normal failed",
            "normal p99",
            "normal max",
        ],
    );
    eprintln!("drill: {}", table.title);
    for (kind, label) in FRONTS {
        let ports = cluster::ports(NAMES.len() + 1)?;
        let (procs, topo) = start_backends(ctx, &ports, &[])?;
        let front = start_front(ctx, kind, label, ports[NAMES.len()], &topo)?;
        let fds_before = procfs::group_fds(front.pgid);
        let t0 = Instant::now();
        let attack = ctx.rt.spawn(client::slowloris(
            front.addr,
            p.slowloris_conns,
            Duration::from_secs(3),
            p.slowloris_run,
        ));
        let normal = ctx.rt.spawn(
            Load {
                addr: front.addr,
                path: "/".into(),
                workers: 4,
                interval: Duration::from_millis(20),
                duration: p.slowloris_run,
                timeout: Duration::from_secs(10),
            }
            .run(t0),
        );
        let (mut peak_fds, mut peak_conns) = (0, 0);
        while !attack.is_finished() {
            peak_fds = peak_fds.max(procfs::group_fds(front.pgid));
            peak_conns = peak_conns.max(procfs::established_on(front.addr.port()));
            std::thread::sleep(Duration::from_millis(250));
        }
        let attack = ctx.rt.block_on(attack)?;
        let normal = client::count(&ctx.rt.block_on(normal)?, 0.0, f64::MAX);
        let closes = match (attack.first_close_ms, attack.last_close_ms) {
            (Some(a), Some(b)) => format!("{} ({} – {})", attack.closed_by_front, ms(a), ms(b)),
            _ => "0".into(),
        };
        table.rows.push(vec![
            label.into(),
            attack.opened.to_string(),
            format!("{fds_before} → {peak_fds}"),
            peak_conns.to_string(),
            closes,
            normal.total.to_string(),
            format!("{} ({})", normal.errors(), normal.error_kinds()),
            ms(normal.p99_ms),
            ms(normal.max_ms),
        ]);
        eprintln!("  {label}: {:?}", table.rows.last());
        drop(front);
        drop(procs);
    }
    Ok(table)
}

/// Configuration reloads under load.
fn reload(ctx: &Ctx) -> anyhow::Result<Table> {
    let run = ctx.plan.reload_run;
    let mut table = Table::new(
        "Reloads under load",
        format!(
            "8 clients, each one request every 5 ms on `/`, for {} s; a reload every 500 ms from \
             the first second to the last (towergate: SIGHUP, as `towergate reload` sends; nginx: \
             SIGHUP, as `nginx -s reload`; HAProxy master-worker: SIGUSR2).",
            run.as_secs()
        ),
        &[
            "front end",
            "reloads",
            "requests",
            "failed (kinds)",
            "p99",
            "max",
        ],
    );
    eprintln!("drill: {}", table.title);
    let help = std::process::Command::new(&ctx.bins.towergate)
        .arg("--help")
        .output()?;
    let hot_reload = String::from_utf8_lossy(&help.stdout).contains("reload");
    for (kind, label) in FRONTS {
        if kind == Kind::Towergate && !hot_reload {
            table
                .notes
                .push("towergate: skipped, this build has no hot reload yet.".into());
            continue;
        }
        let ports = cluster::ports(NAMES.len() + 1)?;
        let (procs, topo) = start_backends(ctx, &ports, &[])?;
        let mut front = start_front(ctx, kind, label, ports[NAMES.len()], &topo)?;
        let signal = match kind {
            Kind::Haproxy => "USR2",
            _ => "HUP",
        };
        let t0 = Instant::now();
        let handle = ctx.rt.spawn(
            Load {
                addr: front.addr,
                path: "/".into(),
                workers: 8,
                interval: Duration::from_millis(5),
                duration: run,
                timeout: Duration::from_secs(5),
            }
            .run(t0),
        );
        let mut reloads = 0;
        let mut at = Duration::from_secs(1);
        while at + Duration::from_millis(500) < run {
            sleep_until(t0 + at);
            if let Some(proc) = front.proc.as_ref() {
                proc.signal(signal)?;
                reloads += 1;
            }
            at += Duration::from_millis(500);
        }
        let samples = ctx.rt.block_on(handle)?;
        let all = client::count(&samples, 0.0, f64::MAX);
        if let Some(proc) = front.proc.as_mut() {
            if kind == Kind::Towergate {
                let log = std::fs::read_to_string(proc.log()).unwrap_or_default();
                let confirmed = log.matches("configuration reloaded").count();
                table.notes.push(format!(
                    "towergate logged {confirmed} of the {reloads} reloads as done (\"configuration reloaded\")."
                ));
            }
            if proc.exited() {
                table.notes.push(format!(
                    "{label} exited during the reloads: {}",
                    crate::guard::log_tail(proc.log())
                ));
            }
        }
        table.rows.push(vec![
            label.into(),
            reloads.to_string(),
            all.total.to_string(),
            format!("{} ({})", all.errors(), all.error_kinds()),
            ms(all.p99_ms),
            ms(all.max_ms),
        ]);
        eprintln!("  {label}: {:?}", table.rows.last());
        drop(front);
        drop(procs);
    }
    Ok(table)
}

fn sleep_until(t: Instant) {
    let now = Instant::now();
    if t > now {
        std::thread::sleep(t - now);
    }
}
