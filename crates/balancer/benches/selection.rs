//! Member selection cost: one pick (plan read, one atomic increment, one member check) for
//! pools of 2 and 16 members, alone and with concurrent callers on other threads.
//!
//! cargo bench -p towergate-balancer --bench selection

// criterion_group! makes an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use towergate_balancer::{LbMethod, MemberConfig, Pool, PoolConfig};

fn pool(members: usize, method: LbMethod, sticky: bool) -> Pool {
    let config = PoolConfig::new((0..members).map(|i| {
        MemberConfig::new(format!("http://10.0.0.{}:8080", i + 1))
            .weight(1 + (i as u32 % 3))
            .route(format!("r{i}"))
    }))
    .lbmethod(method);
    let config = if sticky {
        config.stickysession("ROUTEID")
    } else {
        config
    };
    Pool::from_config("bench", &config).unwrap()
}

/// `iters` picks split over `threads` threads, started together; the time is the
/// slowest thread's, so the figure is per pick with that many callers at once.
fn concurrent(pool: &Pool, threads: usize, iters: u64) -> Duration {
    let per_thread = iters.div_ceil(threads as u64);
    let barrier = Barrier::new(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..per_thread {
                        black_box(pool.pick());
                    }
                    start.elapsed()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .max()
            .unwrap()
    })
}

fn selection(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    // The floor: a shared counter and a table lookup, what any round robin costs.
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let table: Vec<u16> = (0..16).collect();
    group.bench_function("baseline_atomic_round_robin", |b| {
        b.iter(|| {
            let i =
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % black_box(table.len());
            black_box(table[i])
        })
    });
    for members in [2, 16] {
        for (name, method) in [
            ("byrequests", LbMethod::ByRequests),
            ("bybusyness", LbMethod::ByBusyness),
        ] {
            let p = pool(members, method, false);
            group.bench_with_input(BenchmarkId::new(name, members), &p, |b, p| {
                b.iter(|| black_box(p.pick()))
            });
        }
        let p = pool(members, LbMethod::ByRequests, true);
        let route = format!("r{}", members - 1);
        group.bench_with_input(BenchmarkId::new("sticky_route", members), &p, |b, p| {
            b.iter(|| black_box(p.pick_route(black_box(&route))))
        });
    }
    group.finish();

    let mut group = c.benchmark_group("pick_concurrent");
    for members in [2, 16] {
        let p = pool(members, LbMethod::ByRequests, false);
        for threads in [2, 4] {
            group.bench_with_input(
                BenchmarkId::new(format!("byrequests_{threads}_threads"), members),
                &p,
                |b, p| b.iter_custom(|iters| concurrent(p, threads, iters)),
            );
        }
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = selection
}
criterion_main!(benches);
