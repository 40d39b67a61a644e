//! Several gateways, one Redis: two `towergate` processes share flood counts, blocks and
//! operator drains through a real `redis-server` on a loopback port, and keep serving
//! when it goes away. Needs the cargo feature `redis` and the `redis-server` program
//! (Debian package `redis-server`); without the program each test reports itself skipped.
#![cfg(feature = "redis")]

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, GatewayProcess};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use towergate_testkit::client::{get_from, raw, raw_status};

// === Redis ===

/// A `redis-server` on a loopback port, without persistence, stopped by its PID.
struct Redis {
    child: Option<Child>,
    port: u16,
}

impl Redis {
    /// Starts one on a free port; `None` (with a message) when the program is missing.
    async fn start() -> Option<Redis> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!("skipped: redis-server is not installed (Debian package redis-server)");
            return None;
        }
        let mut redis = Redis {
            child: None,
            port: free_port(),
        };
        redis.restart().await;
        Some(redis)
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// Starts it (again) on its port and waits until it answers PING.
    async fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--dir", &std::env::temp_dir().display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        self.child = Some(child);
        let started = Instant::now();
        while !self.ping().await {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "redis-server did not answer on port {}",
                self.port
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn ping(&self) -> bool {
        let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut buf = [0u8; 16];
        s.write_all(b"PING\r\n").await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(1), s.read(&mut buf)).await,
                Ok(Ok(n)) if buf[..n].starts_with(b"+PONG")
            )
    }

    /// Kills it (by PID) and waits for it to be gone.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// === gateways ===

struct Instance {
    gw: GatewayProcess,
    admin: SocketAddr,
}

/// Starts instance `name` with `sections` and a `[cluster]` on `redis`.
async fn instance(name: &str, redis: &Redis, sections: &str) -> Instance {
    let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let toml = format!(
        "{sections}\n[admin]\nlisten = \"{admin}\"\n\n[cluster]\nredis = \"{}\"\ninstance = \"{name}\"\nkey_prefix = \"t{}\"\nsync_interval = \"100ms\"\ntimeout = \"100ms\"\n",
        redis.url(),
        redis.port
    );
    let gw = GatewayProcess::start(&toml, "").await;
    let instance = Instance { gw, admin };
    instance.wait_linked(true).await;
    instance
}

impl Instance {
    fn addr(&self) -> SocketAddr {
        self.gw.addr
    }

    async fn status(&self) -> serde_json::Value {
        let answer = raw(
            self.admin,
            b"GET /status.json HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
        let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {answer}"))
    }

    /// Waits until the status page reports the link to Redis `up` (or down).
    async fn wait_linked(&self, up: bool) {
        let started = Instant::now();
        loop {
            let status = self.status().await;
            if status["cluster"]["up"] == up {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "cluster link never became {}: {}",
                if up { "up" } else { "down" },
                status["cluster"]
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn post(&self, path: &str) -> u16 {
        let req = format!(
            "POST {path} HTTP/1.1\r\nHost: admin\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        raw_status(&raw(self.admin, req.as_bytes()).await.unwrap())
    }
}

async fn status_from(from: &str, addr: SocketAddr, path: &str) -> u16 {
    let ip: IpAddr = from.parse().unwrap();
    get_from(ip, addr, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} from {from} failed: {e}"))
        .status
        .as_u16()
}

/// Longer than a round of both instances (push, then pull), with room for a loaded
/// machine.
const SYNCED: Duration = Duration::from_millis(1000);

fn evasive_sections(backend: &Backend) -> String {
    format!(
        "[[route]]\nprefix = \"/\"\nupstream = \"{}\"\n\n[evasive]\npage_count = 2\npage_interval = \"20s\"\nsite_count = 1000\nsite_interval = \"1s\"\nblocking_period = \"20s\"\n",
        backend.url()
    )
}

// === tests ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn page_counts_split_across_instances_trip_as_on_one() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let backend = Backend::echo("app").await.unwrap();
    let a = instance("a", &redis, &evasive_sections(&backend)).await;
    let b = instance("b", &redis, &evasive_sections(&backend)).await;

    // One instance: the third request for a URI within the interval is refused.
    let one = "127.0.0.11";
    assert_eq!(status_from(one, a.addr(), "/page").await, 200);
    assert_eq!(status_from(one, a.addr(), "/page").await, 200);
    assert_eq!(status_from(one, a.addr(), "/page").await, 403);

    // Two instances, the requests spread over them: the same answers.
    let split = "127.0.0.12";
    assert_eq!(status_from(split, a.addr(), "/page").await, 200);
    tokio::time::sleep(SYNCED).await;
    assert_eq!(
        status_from(split, b.addr(), "/page").await,
        200,
        "the second request is within the limit: counts are not doubled"
    );
    tokio::time::sleep(SYNCED).await;
    assert_eq!(
        status_from(split, a.addr(), "/page").await,
        403,
        "the third request for the URI, the second on A, is refused: B's request counted"
    );

    // The other way round, ending on B.
    let other = "127.0.0.13";
    assert_eq!(status_from(other, b.addr(), "/page").await, 200);
    tokio::time::sleep(SYNCED).await;
    assert_eq!(status_from(other, a.addr(), "/page").await, 200);
    tokio::time::sleep(SYNCED).await;
    assert_eq!(status_from(other, b.addr(), "/page").await, 403);
    // Another URI and another client are not affected.
    assert_eq!(status_from("127.0.0.14", b.addr(), "/page").await, 200);
    assert_eq!(status_from("127.0.0.14", a.addr(), "/page").await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_blocked_via_one_instance_is_refused_by_the_other_within_a_second() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let backend = Backend::echo("app").await.unwrap();
    let a = instance("a", &redis, &evasive_sections(&backend)).await;
    let b = instance("b", &redis, &evasive_sections(&backend)).await;

    let flooder = "127.0.0.21";
    assert_eq!(status_from(flooder, b.addr(), "/warm-up").await, 200);
    for _ in 0..2 {
        assert_eq!(status_from(flooder, a.addr(), "/flood").await, 200);
    }
    assert_eq!(status_from(flooder, a.addr(), "/flood").await, 403);
    let blocked = Instant::now();
    // Each probe asks another URI, so B's own page count never blocks the client.
    let mut probe = 0;
    let refused_after = loop {
        probe += 1;
        let status = status_from(flooder, b.addr(), &format!("/probe/{probe}")).await;
        if status == 403 {
            break blocked.elapsed();
        }
        assert_eq!(status, 200);
        assert!(
            blocked.elapsed() < Duration::from_secs(5),
            "B never refused the client blocked via A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        refused_after <= Duration::from_secs(1),
        "B refused the client {refused_after:?} after A blocked it (at most 1 s)"
    );
    // Others are served by both; the block shows on B's status page.
    assert_eq!(status_from("127.0.0.22", b.addr(), "/flood").await, 200);
    assert_eq!(status_from("127.0.0.22", a.addr(), "/flood").await, 200);
    let status = b.status().await;
    let blocks = status["evasive"]["blocked"].as_array().unwrap();
    assert!(
        blocks.iter().any(|b| b["client"] == "127.0.0.21/32"),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_drained_on_one_instance_gets_no_traffic_from_the_other() {
    let Some(redis) = Redis::start().await else {
        return;
    };
    let one = Backend::echo("one").await.unwrap();
    let two = Backend::echo("two").await.unwrap();
    let sections = format!(
        "[[route]]\nprefix = \"/\"\npool = \"web\"\n[pool.web]\nmembers = [{{ url = \"{}\" }}, {{ url = \"{}\" }}]\n",
        one.url(),
        two.url()
    );
    let a = instance("a", &redis, &sections).await;
    let b = instance("b", &redis, &sections).await;

    for _ in 0..4 {
        assert_eq!(status_from("127.0.0.1", b.addr(), "/").await, 200);
    }
    assert!(one.requests() > 0, "both members serve before the drain");

    assert_eq!(a.post("/pools/web/members/0/drain").await, 303);
    let started = Instant::now();
    while b.status().await["pools"][0]["members"][0]["intent"] != "drained" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "B never saw the drain made on A"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let before = one.requests();
    for _ in 0..20 {
        assert_eq!(status_from("127.0.0.1", b.addr(), "/").await, 200);
    }
    assert_eq!(
        one.requests(),
        before,
        "the member drained on A took no traffic from B"
    );
    assert!(two.requests() >= 20);

    // Enabled again on B: A follows.
    assert_eq!(b.post("/pools/web/members/0/enable").await, 303);
    let started = Instant::now();
    while a.status().await["pools"][0]["members"][0]["intent"] != "active" {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "A never saw the enable made on B"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..4 {
        assert_eq!(status_from("127.0.0.1", a.addr(), "/").await, 200);
    }
    assert!(one.requests() > before, "the enabled member serves again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_mid_run_fails_no_request_and_sharing_resumes() {
    let Some(mut redis) = Redis::start().await else {
        return;
    };
    let backend = Backend::echo("app").await.unwrap();
    let a = instance("a", &redis, &evasive_sections(&backend)).await;
    let b = instance("b", &redis, &evasive_sections(&backend)).await;
    let addrs = [a.addr(), b.addr()];

    // Steady traffic to both, from clients that never go over the limits.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let load = {
        let (stop, sent, failed) = (stop.clone(), sent.clone(), failed.clone());
        tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let from: IpAddr = format!("127.0.1.{}", n % 200 + 1).parse().unwrap();
                let path = format!("/load/{n}");
                let ok = matches!(get_from(from, addrs[n as usize % 2], &path).await, Ok(r) if r.status == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;

    redis.stop();
    a.wait_linked(false).await;
    b.wait_linked(false).await;
    // Local limits still apply while Redis is away.
    for _ in 0..2 {
        assert_eq!(status_from("127.0.0.31", a.addr(), "/alone").await, 200);
    }
    assert_eq!(status_from("127.0.0.31", a.addr(), "/alone").await, 403);
    let metrics = raw(
        a.admin,
        b"GET /metrics HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert!(
        metrics.contains("towergate_cluster_link_up{part=\"evasive\"} 0"),
        "{metrics}"
    );
    // Keep serving a while without Redis.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    redis.restart().await;
    a.wait_linked(true).await;
    b.wait_linked(true).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert!(sent > 20, "the load ran ({sent} requests)");
    assert_eq!(
        failed, 0,
        "{failed} of {sent} requests failed while Redis was away"
    );

    // Sharing resumed: a block made on B reaches A.
    let flooder = "127.0.0.32";
    for _ in 0..2 {
        assert_eq!(status_from(flooder, b.addr(), "/again").await, 200);
    }
    assert_eq!(status_from(flooder, b.addr(), "/again").await, 403);
    let blocked = Instant::now();
    let mut probe = 0;
    loop {
        probe += 1;
        if status_from(flooder, a.addr(), &format!("/probe/{probe}")).await == 403 {
            break;
        }
        assert!(
            blocked.elapsed() < Duration::from_secs(5),
            "sharing did not resume after Redis came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
