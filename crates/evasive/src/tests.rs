//! The layer as a tower service: statuses, whitelist, client keys, reports, sweeper.

use std::convert::Infallible;
use std::io::Write;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{ServiceBuilder, ServiceExt, service_fn};
use towergate_client_addr::{ClientAddr, PeerAddr};

use crate::{EvasiveLayer, Reason, Verdict};

type Body = Full<Bytes>;

fn app(
    layer: &EvasiveLayer,
) -> impl tower::Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + use<>
{
    ServiceBuilder::new()
        .layer(layer.clone())
        .service(service_fn(|_req: Request<Body>| async {
            Ok::<_, Infallible>(Response::new(Body::from("ok")))
        }))
}

fn from(ip: &str, path: &str) -> Request<Body> {
    let mut req = Request::get(path).body(Body::default()).unwrap();
    req.extensions_mut()
        .insert(PeerAddr(std::net::SocketAddr::new(
            ip.parse().unwrap(),
            40000,
        )));
    req
}

async fn status(layer: &EvasiveLayer, ip: &str, path: &str) -> StatusCode {
    app(layer).oneshot(from(ip, path)).await.unwrap().status()
}

fn addr(s: &str) -> IpAddr {
    s.parse().unwrap()
}

#[tokio::test]
async fn refuses_with_a_plain_403_and_counts() {
    let (layer, _sweeper) = EvasiveLayer::builder().build().unwrap();
    assert_eq!(status(&layer, "192.0.2.1", "/a?x=1").await, StatusCode::OK);
    assert_eq!(status(&layer, "192.0.2.1", "/a?x=2").await, StatusCode::OK);
    let res = app(&layer).oneshot(from("192.0.2.1", "/a")).await.unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(res.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(res.headers()["content-length"], "14");
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "403 Forbidden\n"
    );
    assert_eq!(
        status(&layer, "192.0.2.1", "/b").await,
        StatusCode::FORBIDDEN
    );
    assert_eq!(status(&layer, "192.0.2.2", "/a").await, StatusCode::OK);
    let stats = layer.stats();
    assert_eq!((stats.blocks, stats.rejected, stats.tracked), (1, 2, 2));
    let blocks = layer.blocks();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].client, "192.0.2.1/32".parse().unwrap());
    assert_eq!(blocks[0].reason, Reason::Page);
    assert_eq!(blocks[0].refused, 2);
    assert!(blocks[0].until > blocks[0].since + Duration::from_secs(9));
}

#[tokio::test]
async fn the_real_client_address_is_counted() {
    let (layer, _sweeper) = EvasiveLayer::builder().page_count(1).build().unwrap();
    // Behind a proxy: ClientAddr wins over the peer.
    let behind = |client: &str| {
        let mut req = from("10.0.0.2", "/");
        req.extensions_mut().insert(ClientAddr(addr(client)));
        req
    };
    let svc = app(&layer);
    assert_eq!(
        svc.clone()
            .oneshot(behind("203.0.113.1"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        svc.clone()
            .oneshot(behind("203.0.113.2"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        svc.clone()
            .oneshot(behind("203.0.113.1"))
            .await
            .unwrap()
            .status(),
        403
    );
    // No address at all: let through, uncounted.
    for _ in 0..5 {
        let req = Request::get("/").body(Body::default()).unwrap();
        assert_eq!(svc.clone().oneshot(req).await.unwrap().status(), 200);
    }
    assert_eq!(layer.stats().unidentified, 5);
}

#[tokio::test]
async fn whitelisted_addresses_and_networks_are_never_counted() {
    let (layer, _sweeper) = EvasiveLayer::builder()
        .whitelist(addr("10.10.10.2"))
        .whitelist("192.168.0.0/16".parse::<ipnet::IpNet>().unwrap())
        .whitelist("2001:db8::/32".parse::<ipnet::IpNet>().unwrap())
        .build()
        .unwrap();
    for ip in [
        "10.10.10.2",
        "192.168.4.4",
        "2001:db8:7::1",
        "::ffff:10.10.10.2",
    ] {
        for _ in 0..100 {
            assert_eq!(layer.check(addr(ip), "/"), Verdict::Pass, "{ip}");
        }
    }
    assert_eq!(layer.stats().tracked, 0);
    assert!(layer.check(addr("10.10.10.3"), "/").is_pass());
    assert!(layer.check(addr("10.10.10.3"), "/").is_pass());
    assert!(!layer.check(addr("10.10.10.3"), "/").is_pass());
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_prefix() {
    let (layer, _sweeper) = EvasiveLayer::builder().build().unwrap();
    assert!(layer.check(addr("2001:db8:1:2::1"), "/").is_pass());
    assert!(layer.check(addr("2001:db8:1:2::ffff"), "/").is_pass());
    assert!(!layer.check(addr("2001:db8:1:2:abcd::9"), "/").is_pass());
    assert!(layer.check(addr("2001:db8:1:3::1"), "/").is_pass());
    assert_eq!(
        layer.blocks()[0].client,
        "2001:db8:1:2::/64".parse::<ipnet::IpNet>().unwrap()
    );
    assert!(layer.unblock(addr("2001:db8:1:2::77")));

    let (layer, _sweeper) = EvasiveLayer::builder().ipv6_prefix(128).build().unwrap();
    for n in 1..10u16 {
        let ip = IpAddr::from([0x2001, 0xdb8, 0, 0, 0, 0, 0, n]);
        assert!(layer.check(ip, "/").is_pass());
        assert!(layer.check(ip, "/").is_pass());
    }
    // IPv4-mapped addresses are their IPv4 address.
    assert!(layer.check(addr("192.0.2.1"), "/").is_pass());
    assert!(layer.check(addr("::ffff:192.0.2.1"), "/").is_pass());
    assert!(!layer.check(addr("192.0.2.1"), "/").is_pass());
}

#[tokio::test(start_paused = true)]
async fn blocks_last_a_blocking_period_after_the_last_request() {
    let (layer, _sweeper) = EvasiveLayer::builder()
        .blocking_period(Duration::from_secs(30))
        .build()
        .unwrap();
    let a = addr("192.0.2.1");
    layer.check(a, "/");
    layer.check(a, "/");
    assert!(matches!(
        layer.check(a, "/"),
        Verdict::NewBlock {
            reason: Reason::Page,
            ..
        }
    ));
    for _ in 0..4 {
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(layer.check(a, "/other"), Verdict::Blocked);
    }
    tokio::time::advance(Duration::from_millis(29_999)).await;
    assert_eq!(layer.check(a, "/"), Verdict::Blocked);
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(layer.check(a, "/"), Verdict::Pass);
    assert_eq!(layer.stats().rejected, 6);
}

/// Captures `towergate_evasive` events as text.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn one_warning_per_block() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    tracing::subscriber::with_default(subscriber, || {
        let (layer, _sweeper) = EvasiveLayer::builder().build().unwrap();
        for _ in 0..20 {
            layer.check(addr("192.0.2.1"), "/");
        }
        for n in 0..60 {
            layer.check(addr("192.0.2.2"), &format!("/{n}"));
        }
    });
    let text = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].contains("WARN")
            && lines[0].contains("towergate_evasive")
            && lines[0].contains("client blocked: over the page limit")
            && lines[0].contains("client=192.0.2.1")
            && lines[0].contains("reason=\"page\"")
            && lines[0].contains("until="),
        "{text}"
    );
    assert!(
        lines[1].contains("client=192.0.2.2") && lines[1].contains("site"),
        "{text}"
    );
}

async fn wait_for(path: &std::path::Path) -> String {
    for _ in 0..200 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if !text.is_empty() {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("{} did not appear", path.display());
}

#[tokio::test]
async fn blocks_are_reported_to_the_log_dir_and_the_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("commands");
    let (layer, sweeper) = EvasiveLayer::builder()
        .log_dir(dir.path())
        .command(format!("echo \"blocked %s\" >> {}", out.display()))
        .build()
        .unwrap();
    tokio::spawn(sweeper.run());
    for _ in 0..5 {
        layer.check(addr("192.0.2.1"), "/");
    }
    for n in 0..51 {
        layer.check(addr("2001:db8:1:2::5"), &format!("/{n}"));
    }
    let v4 = wait_for(&dir.path().join("dos-192.0.2.1")).await;
    assert!(
        v4.starts_with("192.0.2.1 blocked: over the page limit since "),
        "{v4}"
    );
    let v6 = wait_for(&dir.path().join("dos-2001:db8:1:2::_64")).await;
    assert!(
        v6.starts_with("2001:db8:1:2::/64 blocked: over the site limit"),
        "{v6}"
    );
    let mut commands = String::new();
    for _ in 0..200 {
        commands = std::fs::read_to_string(&out).unwrap_or_default();
        if commands.lines().count() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let mut lines: Vec<&str> = commands.lines().collect();
    lines.sort();
    assert_eq!(lines, ["blocked 192.0.2.1", "blocked 2001:db8:1:2::/64"]);
    assert_eq!(layer.stats().reports_dropped, 0);
}

#[tokio::test]
async fn reports_without_a_running_sweeper_are_dropped_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (layer, _sweeper) = EvasiveLayer::builder()
        .page_count(1)
        .log_dir(dir.path())
        .build()
        .unwrap();
    for n in 0..300u32 {
        let ip = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + n));
        layer.check(ip, "/");
        layer.check(ip, "/");
    }
    let stats = layer.stats();
    assert_eq!((stats.blocks, stats.reports_dropped), (300, 300 - 256));
}

#[tokio::test]
async fn the_sweeper_ends_when_the_layer_is_dropped() {
    let (layer, sweeper) = EvasiveLayer::builder().build().unwrap();
    let svc = app(&layer);
    let task = tokio::spawn(sweeper.run());
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished());
    drop(layer);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!task.is_finished(), "a service still holds the layer");
    drop(svc);
    tokio::time::timeout(Duration::from_secs(5), task)
        .await
        .expect("sweeper ended")
        .unwrap();
}

#[tokio::test(start_paused = true)]
async fn the_sweeper_forgets_idle_clients() {
    let (layer, sweeper) = EvasiveLayer::builder().build().unwrap();
    assert_eq!(sweeper.period(), Duration::from_secs(1));
    tokio::spawn(sweeper.run());
    for n in 0..1000u32 {
        layer.check(IpAddr::from(std::net::Ipv4Addr::from(n)), "/");
    }
    assert_eq!(layer.stats().tracked, 1000);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(layer.stats().tracked, 0);
}
