//! A flood of 1,000,000 distinct client addresses, then of distinct URIs, keeps the table
//! at its cap and the process's memory within the table's stated bound. (Its own test
//! binary, so that nothing else runs in the process while its memory is measured.)

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use towergate_evasive::{EvasiveLayer, Limits, MemoryStore, Verdict};

fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[test]
fn a_million_distinct_clients_stay_within_the_cap() {
    const CAP: usize = 50_000;
    let limits = Limits {
        page_count: 2,
        page_interval: Duration::from_secs(1),
        site_count: 30,
        site_interval: Duration::from_secs(1),
        blocking_period: Duration::from_secs(30),
    };
    let bound = (MemoryStore::new(&limits, 1).bytes_per_client() * CAP) as u64;
    let (layer, _sweeper) = EvasiveLayer::builder()
        .limits(limits)
        .max_tracked(CAP)
        .build()
        .unwrap();
    let base = rss_bytes();

    let ip = |n: u32| IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n));
    for n in 0..1_000_000 {
        assert_eq!(layer.check(ip(n), "/"), Verdict::Pass);
    }
    let stats = layer.stats();
    assert_eq!(stats.tracked, CAP);
    assert_eq!(stats.evicted, 1_000_000 - CAP as u64);
    let after_addresses = rss_bytes().saturating_sub(base);

    // Then each tracked client sends 29 distinct URIs (under the site limit), and one
    // client 100,000 URIs: page slots are bounded per client.
    let mut path = String::new();
    for n in 1_000_000 - CAP as u32..1_000_000 {
        for u in 0..29 {
            path.clear();
            use std::fmt::Write;
            write!(path, "/u/{n}/{u}").unwrap();
            assert_eq!(layer.check(ip(n), &path), Verdict::Pass);
        }
    }
    let one = ip(999_999);
    for u in 0..100_000 {
        layer.check(one, &format!("/v/{u}"));
    }
    assert_eq!(layer.stats().tracked, CAP);
    let after_uris = rss_bytes().saturating_sub(base);
    eprintln!(
        "RSS growth: {} MiB after 1,000,000 addresses, {} MiB after their URIs; stated bound {} MiB",
        after_addresses >> 20,
        after_uris >> 20,
        bound >> 20
    );
    assert!(
        after_addresses < bound / 2,
        "one-request clients took {after_addresses} bytes (bound {bound})"
    );
    assert!(
        after_uris < bound,
        "grew by {after_uris} bytes, bound {bound}"
    );
}
