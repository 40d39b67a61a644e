//! Operating the gateway: reloads that drop nothing, refused bad reloads, graceful stop.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::Full;
use towergate_testkit::client;

fn config_text(routes: &str) -> String {
    format!("{}{routes}", server_section(""))
}

fn parse(text: &str) -> towergate::Config {
    towergate::Config::from_toml(text, std::path::Path::new("reload.toml")).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_reloads_under_load_drop_nothing_and_new_routes_take_effect() {
    let one = Backend::echo("one").await.unwrap();
    let two = Backend::echo("two").await.unwrap();
    let gw = start_gateway(&route("/", &one.url())).await;
    let addr = gw.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut clients = Vec::new();
    for _ in 0..8 {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        clients.push(tokio::spawn(async move {
            let client = Client::new(addr);
            while !stop.load(Ordering::Relaxed) {
                match client.get("/x").await {
                    Ok(res) if res.status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    _ => failed.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for i in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Alternate the backend and add a route that only newer generations have.
        let backend = if i % 2 == 0 { &two } else { &one };
        let routes = format!(
            "{}{}",
            route("/", &backend.url()),
            route(&format!("/gen{i}"), &backend.url())
        );
        gw.reload(&parse(&config_text(&routes))).expect("reload");
        let res = Client::new(addr).get(&format!("/gen{i}/y")).await.unwrap();
        assert_eq!(res.status, 200, "generation {i}'s new route");
        assert_eq!(res.header("x-backend"), Some(backend.name()));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "requests failed during reloads"
    );
    assert!(
        ok.load(Ordering::Relaxed) > 100,
        "too little traffic to mean anything: {}",
        ok.load(Ordering::Relaxed)
    );
    assert_eq!(gw.generation(), 11);
}

#[tokio::test]
async fn an_invalid_reload_is_refused_and_the_old_config_keeps_serving() {
    let one = Backend::echo("one").await.unwrap();
    let text = config_text(&route("/", &one.url()));
    let file = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    std::fs::write(file.path(), &text).unwrap();
    let gw = start_gateway(&text)
        .await
        .with_config_path(file.path().to_owned());
    std::fs::write(file.path(), format!("{text}\n[server.typo]\n")).unwrap();
    let err = gw.reload_from_file().unwrap_err();
    assert!(format!("{err:#}").contains("unknown field"), "{err:#}");
    assert_eq!(gw.generation(), 1);
    let res = Client::new(gw.addr()).get("/still").await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.header("x-backend"), Some("one"));
    // A listener change is refused too: it takes a restart.
    let mut moved = parse(&text);
    moved.server.listen = vec!["127.0.0.1:1".parse().unwrap()];
    assert!(gw.reload(&moved).is_err());
}

#[tokio::test]
async fn towergate_reload_signals_the_running_binary_through_its_pid_file() {
    let one = Backend::echo("one").await.unwrap();
    let two = Backend::echo("two").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("towergate.pid");
    let gw = GatewayProcess::start(
        &route("/", &one.url()),
        &format!("pid_file = {:?}", pid_file),
    )
    .await;
    assert_eq!(
        client::get(gw.addr, "/").await.header("x-backend"),
        Some("one")
    );
    let pid: u32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(pid, gw.child.id());

    let text = std::fs::read_to_string(gw.config.path())
        .unwrap()
        .replace(&one.url(), &two.url());
    std::fs::write(gw.config.path(), text).unwrap();
    towergate_ok("reload", gw.config.path());
    let started = std::time::Instant::now();
    loop {
        if client::get(gw.addr, "/").await.header("x-backend") == Some("two") {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the reload did not take effect"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_refuses_new_connections_and_exits_zero() {
    let slow = Backend::with_handler("slow", |_req: Request<_>| async {
        tokio::time::sleep(Duration::from_millis(1500)).await;
        Response::new(Full::new(Bytes::from_static(b"finally")))
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pid_file = dir.path().join("towergate.pid");
    let mut gw = GatewayProcess::start(
        &route("/", &slow.url()),
        &format!("grace_period = \"10s\"\npid_file = {pid_file:?}"),
    )
    .await;
    let addr = gw.addr;
    let in_flight = tokio::spawn(async move { client::get(addr, "/slow").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused while draining"
    );
    let res = in_flight.await.unwrap();
    assert_eq!(res.status, 200);
    assert_eq!(res.body, "finally");
    let status = tokio::task::spawn_blocking(move || gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}

#[tokio::test]
async fn sigterm_closes_idle_keep_alive_connections_without_waiting_for_the_grace_period() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Backend::echo("origin").await.unwrap();
    let mut gw = GatewayProcess::start(&route("/", &origin.url()), "grace_period = \"30s\"").await;
    let mut conns = Vec::new();
    for _ in 0..4 {
        let mut conn = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        conn.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n")
            .await
            .unwrap();
        let mut buf = vec![0; 4096];
        let n = conn.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        conns.push(conn);
    }
    gw.signal("TERM");
    // Each idle connection is closed by the gateway (EOF), well before the 30 s grace.
    for mut conn in conns {
        let mut buf = [0; 64];
        let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
            .await
            .expect("an idle connection is closed at shutdown, not held for the grace period")
            .unwrap_or(0);
        assert_eq!(n, 0);
    }
    let status = tokio::task::spawn_blocking(move || gw.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
}
