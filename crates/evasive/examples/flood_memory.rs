//! Memory under a flood: drives distinct client addresses (and then distinct URIs) through
//! the layer's check and prints the tracked-client count and the process's resident memory.
//!
//! ```text
//! cargo run --release -p towergate-evasive --example flood_memory -- [MAX_TRACKED] [CLIENTS]
//! ```
//!
//! Defaults: the article's `DOSHashTableSize 314739` as `max_tracked`, 1,000,000 clients,
//! the article's limits (2 per URI, 30 per site per second, 30 s blocks). Linux only (reads
//! `/proc/self/status`).

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use towergate_evasive::{EvasiveLayer, Limits, MemoryStore};

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let max_tracked: usize = args
        .next()
        .map_or(314_739, |a| a.parse().expect("MAX_TRACKED"));
    let clients: u32 = args
        .next()
        .map_or(1_000_000, |a| a.parse().expect("CLIENTS"));
    let limits = Limits {
        page_count: 2,
        page_interval: Duration::from_secs(1),
        site_count: 30,
        site_interval: Duration::from_secs(1),
        blocking_period: Duration::from_secs(30),
    };
    let per_client = MemoryStore::new(&limits, 1).bytes_per_client();
    let (layer, _sweeper) = EvasiveLayer::builder()
        .limits(limits)
        .max_tracked(max_tracked)
        .build()
        .unwrap();
    let base = rss_mib();
    println!(
        "max_tracked {max_tracked}, worst case {per_client} B/client = {:.1} MiB; RSS at start {base:.1} MiB",
        (per_client * max_tracked) as f64 / 1048576.0
    );
    let started = Instant::now();
    let step = clients / 4;
    for n in 0..clients {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(n)));
        layer.check(ip, "/index.html");
        if (n + 1) % step == 0 {
            let s = layer.stats();
            println!(
                "{:>9} distinct clients: tracked {:>7}, evicted {:>7}, RSS {:7.1} MiB (+{:.1})",
                n + 1,
                s.tracked,
                s.evicted,
                rss_mib(),
                rss_mib() - base
            );
        }
    }
    let elapsed = started.elapsed();
    println!(
        "{clients} checks in {:.2?} ({:.0} ns each)",
        elapsed,
        elapsed.as_nanos() as f64 / f64::from(clients)
    );

    // Every tracked client now floods distinct URIs (29 each: under the site limit).
    let before = rss_mib();
    for n in 0..max_tracked as u32 {
        let ip = IpAddr::V4(Ipv4Addr::from(0x0a00_0000u32.wrapping_add(clients - 1 - n)));
        for u in 0..29 {
            let path = format!("/u/{n}/{u}");
            layer.check(ip, &path);
        }
    }
    let s = layer.stats();
    println!(
        "then 29 distinct URIs from each of {} clients: tracked {}, blocks {}, RSS {:.1} MiB (+{:.1}; worst case {:.1} MiB)",
        max_tracked,
        s.tracked,
        s.blocks,
        rss_mib(),
        rss_mib() - before,
        (per_client * max_tracked) as f64 / 1048576.0
    );
}
