//! The admin listener: status JSON and page, Prometheus metrics after known traffic, and
//! its own access rule.

mod common;

use common::*;
use towergate_testkit::client;

/// An admin listener on an ephemeral port that lets loopback in.
const ADMIN: &str = "[admin]\nlisten = \"127.0.0.1:0\"\nallow = [\"127.0.0.1/32\"]\n";

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        l.strip_prefix(name_and_labels)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

#[tokio::test]
async fn metrics_and_status_count_what_was_sent() {
    let web = Backend::echo("web").await.unwrap();
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let config = format!(
        "{}{}{}{ADMIN}",
        server_section(""),
        route("/", &web.url()),
        route("/dead", &format!("http://{dead}"))
    );
    let gw = start_gateway(&config).await;
    let admin = gw.admin_addr().expect("admin listener");
    let client = Client::new(gw.addr());
    for _ in 0..7 {
        assert_eq!(client.get("/page").await.unwrap().status, 200);
    }
    for _ in 0..3 {
        assert_eq!(client.get("/dead/x").await.unwrap().status, 502);
    }

    let metrics = client::get(admin, "/metrics").await;
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert_eq!(
        metric(
            &text,
            "towergate_requests_total{route=\"/\",status=\"2xx\"}"
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "towergate_requests_total{route=\"/dead\",status=\"5xx\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "towergate_upstream_errors_total{route=\"/dead\",kind=\"connect\"}"
        ),
        Some(3.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "towergate_request_duration_seconds_count{route=\"/\"}"
        ),
        Some(7.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "towergate_config_generation"),
        Some(1.0),
        "{text}"
    );

    let json: serde_json::Value =
        serde_json::from_slice(&client::get(admin, "/status.json").await.body).unwrap();
    assert_eq!(json["generation"], 1);
    let prefixes: Vec<&str> = json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, ["/", "/dead"], "in config order");

    let page = client::get(admin, "/").await;
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(page.text().contains("<table id=routes>") && page.text().contains("/dead"));

    // After a reload the counters go on and the generation moves.
    gw.reload(&towergate::Config::from_toml(&config, std::path::Path::new("t.toml")).unwrap())
        .unwrap();
    client.get("/again").await.unwrap();
    let text = client::get(admin, "/metrics").await.text();
    assert_eq!(
        metric(
            &text,
            "towergate_requests_total{route=\"/\",status=\"2xx\"}"
        ),
        Some(8.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "towergate_config_generation"),
        Some(2.0),
        "{text}"
    );
}

#[tokio::test]
async fn the_admin_listener_refuses_clients_outside_its_networks() {
    let web = Backend::echo("web").await.unwrap();
    let config = format!("{}{}{ADMIN}", server_section(""), route("/", &web.url()));
    let gw = start_gateway(&config).await;
    let admin = gw.admin_addr().unwrap();
    let res = client::get_from("127.0.0.2".parse().unwrap(), admin, "/status.json")
        .await
        .unwrap();
    assert_eq!(res.status, 403);
    let res = client::get_from("127.0.0.1".parse().unwrap(), admin, "/status.json")
        .await
        .unwrap();
    assert_eq!(res.status, 200);
}

#[tokio::test]
async fn the_block_list_and_limit_refusals_show_in_status_and_metrics() {
    let web = Backend::echo("web").await.unwrap();
    let config = format!(
        "{}{}[limits]\nline = 100\n[evasive]\npage_count = 2\npage_interval = \"10s\"\nsite_count = 100\nsite_interval = \"10s\"\nblocking_period = \"60s\"\n[admin]\nlisten = \"127.0.0.1:0\"\n",
        server_section(""),
        route("/", &web.url())
    );
    let gw = start_gateway(&config).await;
    let admin = gw.admin_addr().unwrap();
    let client2: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(
            client::get_from(client2, gw.addr(), "/same")
                .await
                .unwrap()
                .status
                .as_u16(),
        );
    }
    assert_eq!(statuses, [200, 200, 403]);
    let long = format!("/{}", "a".repeat(120));
    assert_eq!(
        client::get_from("127.0.0.3".parse().unwrap(), gw.addr(), &long)
            .await
            .unwrap()
            .status,
        414
    );

    let json: serde_json::Value =
        serde_json::from_slice(&client::get(admin, "/status.json").await.body).unwrap();
    assert_eq!(
        json["evasive"]["blocked"][0]["client"], "127.0.0.2/32",
        "{json}"
    );
    assert_eq!(json["evasive"]["blocked"][0]["reason"], "page", "{json}");
    assert_eq!(json["limits"]["line"], 1, "{json}");
    let text = client::get(admin, "/metrics").await.text();
    assert_eq!(
        metric(&text, "towergate_evasive_blocks_started"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric(&text, "towergate_limit_rejections{limit=\"line\"}"),
        Some(1.0),
        "{text}"
    );
    let page = client::get(admin, "/").await.text();
    assert!(
        page.contains("<table id=blocks>") && page.contains("127.0.0.2/32"),
        "{page}"
    );
}

#[tokio::test]
async fn new_connections_are_spread_evenly_over_the_workers() {
    let web = Backend::echo("web").await.unwrap();
    let config = format!(
        "{}{}{ADMIN}",
        server_section("workers = 4"),
        route("/", &web.url()),
    );
    let gw = start_gateway(&config).await;
    let admin = gw.admin_addr().expect("admin listener");
    // 64 keep-alive connections, each answered once and then held open. The kernel hashes
    // them over the four sockets unevenly; the workers even it out.
    let mut held = Vec::new();
    for _ in 0..64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nHost: front.test\r\n\r\n")
            .await
            .unwrap();
        let mut answer = [0u8; 12];
        stream.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"HTTP/1.1 200");
        held.push(stream);
    }
    let json: serde_json::Value =
        serde_json::from_slice(&client::get(admin, "/status.json").await.body).unwrap();
    let per_worker: Vec<u64> = json["workers"]
        .as_array()
        .expect("connections per worker")
        .iter()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(per_worker.len(), 4);
    assert_eq!(json["max_connections"], 10_000, "the default");
    // The admin request's own connection is served on the main runtime, not a worker.
    assert_eq!(per_worker.iter().sum::<u64>(), 64, "{per_worker:?}");
    let (min, max) = (
        per_worker.iter().min().unwrap(),
        per_worker.iter().max().unwrap(),
    );
    assert!(max - min <= 2, "connections per worker: {per_worker:?}");
    drop(held);
}
