//! The hot path: one request's check, through the layer (`EvasiveLayer::check`, what the
//! service does after reading the client address) and through the service itself.
//!
//! - `store/pass_hot`, `store/pass_cold`: the article's limits on a virtual clock, so
//!   that windows hold real counts: 64 clients (all in cache) and 65,536 clients in a
//!   table sized for 314,739 (cache misses dominate);
//! - `pass_tracked`: a known client under the limits, on the real clock (1 ms windows, so
//!   the client's counts have expired by its next turn);
//! - `new_client_evicting`: a new client arriving at a full table (a distinct-address flood);
//! - `blocked`: a blocked client sending on (a flood being refused);
//! - `whitelisted`: never counted;
//! - `concurrent/*`: the same with 2 and 4 threads calling at once (ns per call per thread).
//!
//! `cargo bench -p towergate-evasive --bench check -- --measurement-time 3`

#![allow(missing_docs)]

use std::convert::Infallible;
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response};
use http_body_util::Full;
use ipnet::IpNet;
use tower::{Service, ServiceExt, service_fn};
use towergate_client_addr::PeerAddr;
use towergate_evasive::{EvasiveLayer, Limits, MemoryStore, Store, Verdict};

const CLIENTS: u32 = 65_536;

fn ip(n: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + n))
}

/// The article's counts; short intervals so that clients visited in a loop stay under
/// them (the work per check does not depend on the interval's length).
fn layer(max_tracked: usize) -> EvasiveLayer {
    EvasiveLayer::builder()
        .page_count(2)
        .page_interval(Duration::from_millis(1))
        .site_count(30)
        .site_interval(Duration::from_millis(1))
        .blocking_period(Duration::from_secs(3600))
        .max_tracked(max_tracked)
        .whitelist(ip(0))
        .build()
        .unwrap()
        .0
}

const PATHS: [&str; 4] = [
    "/",
    "/news_rss/today",
    "/paid_user/file.bin",
    "/img/logo.png",
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    for (name, clients) in [("pass_hot", 64u32), ("pass_cold", CLIENTS)] {
        let store = MemoryStore::new(
            &Limits {
                page_count: 2,
                page_interval: Duration::from_secs(1),
                site_count: 30,
                site_interval: Duration::from_secs(1),
                blocking_period: Duration::from_secs(30),
            },
            314_739,
        );
        // Each client sends 20 requests a second (virtual time), cycling through 64
        // paths: the windows hold about 20 requests each, under the limits.
        let paths: Vec<String> = (0..64).map(|p| format!("/static/{p}.png")).collect();
        let step = Duration::from_secs(1) / (clients * 20);
        let mut now = Instant::now();
        let mut n = 0u32;
        let mut next = || {
            n = n.wrapping_add(1);
            now += step;
            let client = IpNet::from(ip(n % clients));
            (client, &paths[((n / clients) % 64) as usize], now)
        };
        for _ in 0..clients * 64 {
            let (client, path, now) = next();
            assert!(store.check(client, path, now).is_pass());
        }
        g.bench_function(name, |b| {
            b.iter(|| {
                let (client, path, now) = next();
                black_box(store.check(client, path, now))
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("check");
    {
        let l = layer(314_739);
        for n in 1..CLIENTS {
            l.check(ip(n), "/");
        }
        let mut n = 1;
        g.bench_function("pass_tracked", |b| {
            b.iter(|| {
                n = n % (CLIENTS - 1) + 1;
                black_box(l.check(ip(n), PATHS[(n & 3) as usize]))
            })
        });
    }
    {
        let l = layer(65_536);
        let mut n = 1u32;
        g.bench_function("new_client_evicting", |b| {
            b.iter(|| {
                n = n.wrapping_add(1);
                black_box(l.check(IpAddr::V4(Ipv4Addr::from(n)), "/"))
            })
        });
    }
    {
        let l = layer(1024);
        let a = ip(7);
        while l.check(a, "/") == Verdict::Pass {}
        g.bench_function("blocked", |b| b.iter(|| black_box(l.check(a, "/x"))));
    }
    {
        let l = layer(1024);
        g.bench_function("whitelisted", |b| b.iter(|| black_box(l.check(ip(0), "/"))));
    }
    g.finish();

    let mut g = c.benchmark_group("service");
    for (name, blocked) in [("pass", false), ("blocked", true)] {
        let l = layer(314_739);
        let a = ip(9);
        if blocked {
            while l.check(a, "/") == Verdict::Pass {}
        }
        let mut svc = tower::ServiceBuilder::new()
            .layer(l.clone())
            .service(service_fn(|_req: Request<Full<Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::<Bytes>::default()))
            }));
        let mut n = 1;
        g.bench_function(name, |b| {
            b.iter_batched(
                || {
                    n = n % (CLIENTS - 1) + 1;
                    let client = if blocked { a } else { ip(n) };
                    let mut req = Request::get(PATHS[(n & 3) as usize])
                        .body(Full::default())
                        .unwrap();
                    req.extensions_mut()
                        .insert(PeerAddr(SocketAddr::new(client, 40000)));
                    req
                },
                |req| {
                    let svc = svc.ready().now_or_never().unwrap().unwrap();
                    black_box(svc.call(req).now_or_never())
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    let mut g = c.benchmark_group("concurrent");
    for threads in [2u32, 4] {
        for (name, blocked) in [("pass_tracked", false), ("blocked", true)] {
            let l = layer(314_739);
            for n in 1..CLIENTS {
                l.check(ip(n), "/");
            }
            if blocked {
                for t in 0..threads {
                    while l.check(ip(t + 1), "/") == Verdict::Pass {}
                }
            }
            g.bench_function(format!("{name}/{threads}_threads"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    std::thread::scope(|s| {
                        for t in 0..threads {
                            let l = l.clone();
                            s.spawn(move || {
                                let mut n = 1 + t * (CLIENTS / threads);
                                for _ in 0..iters {
                                    let client = if blocked {
                                        ip(t + 1)
                                    } else {
                                        n = n % (CLIENTS - 1) + 1;
                                        ip(n)
                                    };
                                    black_box(l.check(client, PATHS[(n & 3) as usize]));
                                }
                            });
                        }
                    });
                    start.elapsed()
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
