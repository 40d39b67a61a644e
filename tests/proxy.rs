//! Forwarding end to end: routes, path normalisation, ProxyPassReverse, forwarded headers,
//! hop-by-hop headers, forward-proxy refusal, framing, errors and keep-alive.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use towergate_testkit::client::{raw, raw_status};

/// The article's routes in front of three echo backends.
async fn article_routes() -> (RunningGateway, Backend, Backend, Backend) {
    let news = Backend::echo("news_server").await.unwrap();
    let paid = Backend::echo("paid_one").await.unwrap();
    let web = Backend::echo("webserver_one").await.unwrap();
    let config = [
        route("/news_rss/", &format!("{}/news_rss/", news.url())),
        route("/news_blog/", &format!("{}/news_blog/", news.url())),
        route("/paid_user", &format!("{}/paid_user", paid.url())),
        route("/", &web.url()),
    ]
    .concat();
    (start_gateway(&config).await, news, paid, web)
}

#[tokio::test]
async fn prefixes_map_onto_upstream_paths_without_doubled_slashes() {
    let (gw, _news, _paid, _web) = article_routes().await;
    let client = Client::new(gw.addr());
    for (front, backend, path) in [
        ("/", "webserver_one", "/"),
        ("/index.html?x=1", "webserver_one", "/index.html?x=1"),
        ("/news_rss/x", "news_server", "/news_rss/x"),
        (
            "/news_blog/2024/post",
            "news_server",
            "/news_blog/2024/post",
        ),
        ("/paid_user/x", "paid_one", "/paid_user/x"),
        ("/paid_user", "paid_one", "/paid_user"),
        ("/paid_users", "webserver_one", "/paid_users"),
    ] {
        let res = client.get(front).await.unwrap();
        assert_eq!(res.status, 200, "{front}");
        assert_eq!(res.header("x-backend"), Some(backend), "{front}");
        assert_eq!(res.echo("path").as_deref(), Some(path), "{front}");
    }
}

#[tokio::test]
async fn prefix_mapping_to_a_different_base_path() {
    let app = Backend::echo("app").await.unwrap();
    let gw = start_gateway(&[route("/shop/", &format!("{}/app", app.url()))].concat()).await;
    let client = Client::new(gw.addr());
    let res = client.get("/shop/cart?id=7").await.unwrap();
    assert_eq!(res.echo("path").as_deref(), Some("/app/cart?id=7"));
    let res = client.get("/shop").await.unwrap();
    assert_eq!(res.echo("path").as_deref(), Some("/app"));
    // No route for the rest: 404 from the gateway.
    assert_eq!(client.get("/other").await.unwrap().status, 404);
}

#[tokio::test]
async fn dot_segments_cannot_escape_a_route() {
    let (gw, news, paid, _web) = article_routes().await;
    for target in [
        "/news_rss/%2e%2e/paid_user/x",
        "/news_rss/../paid_user/x",
        "/news_rss/%2E./paid_user/x",
        "/news_rss/.%2e/paid_user/x",
        "/news_rss//..//paid_user/x",
    ] {
        let answer = raw(
            gw.addr(),
            format!("GET {target} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(raw_status(&answer), 200, "{target}: {answer}");
        assert!(
            answer.contains("backend: paid_one") && answer.contains("path: /paid_user/x"),
            "{target}: {answer}"
        );
    }
    assert_eq!(
        news.requests(),
        0,
        "the news backend never saw the dot segments"
    );
    assert_eq!(paid.requests(), 5);
    // Encoded separators are refused outright.
    for target in [
        "/news_rss/..%2fpaid_user/x",
        "/news_rss/%2e%2e%5cpaid_user",
        "/news_rss/a%00",
    ] {
        let answer = raw(
            gw.addr(),
            format!("GET {target} HTTP/1.1\r\nHost: front.test\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(raw_status(&answer), 400, "{target}: {answer}");
    }
    assert_eq!(news.requests(), 0);
}

#[tokio::test]
async fn redirects_into_the_upstream_are_mapped_back_to_the_front() {
    let app = Backend::with_handler("app", |req: Request<_>| async move {
        let base = format!(
            "http://{}",
            req.headers()["x-backend-authority"].to_str().unwrap()
        );
        Response::builder()
            .status(302)
            .header("location", format!("{base}/app/login?next=%2Fcart"))
            .header("content-location", format!("{base}/app/cart"))
            .header("x-untouched", format!("{base}/app/cart"))
            .body(Full::new(Bytes::new()))
            .unwrap()
    })
    .await
    .unwrap();
    let gw = start_gateway(&route("/shop/", &format!("{}/app/", app.url()))).await;
    let req = Request::get("/shop/cart")
        .header("host", "front.test")
        .header("x-backend-authority", app.addr().to_string())
        .body(Full::default())
        .unwrap();
    let res = Client::new(gw.addr()).request(req).await.unwrap();
    assert_eq!(res.status, 302);
    assert_eq!(
        res.header("location"),
        Some("http://front.test/shop/login?next=%2Fcart")
    );
    assert_eq!(
        res.header("content-location"),
        Some("http://front.test/shop/cart")
    );
    assert_eq!(
        res.header("x-untouched"),
        Some(format!("http://{}/app/cart", app.addr()).as_str())
    );
}

#[tokio::test]
async fn host_is_preserved_and_forwarded_for_appended() {
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&route("/", &web.url())).await;
    let req = Request::get("/x")
        .header("host", "www.front.test")
        .header("x-forwarded-for", "203.0.113.9")
        .body(Full::default())
        .unwrap();
    let res = Client::new(gw.addr()).request(req).await.unwrap();
    assert_eq!(res.echo("host").as_deref(), Some("www.front.test"));
    assert_eq!(
        res.echo("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );

    let gw = start_gateway(&format!(
        "{}{}",
        server_section("preserve_host = false"),
        route("/", &web.url())
    ))
    .await;
    let res = Client::new(gw.addr()).get("/x").await.unwrap();
    assert_eq!(res.echo("host"), Some(web.addr().to_string()));
    assert_eq!(res.echo("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn hop_by_hop_headers_are_removed_both_ways() {
    let app = Backend::with_handler("app", |req: Request<_>| async move {
        let mut seen: Vec<String> = req.headers().keys().map(|k| k.to_string()).collect();
        seen.sort();
        Response::builder()
            .header("connection", "x-internal")
            .header("x-internal", "secret")
            .header("keep-alive", "timeout=5")
            .header("proxy-authenticate", "Basic")
            .header("x-kept", "1")
            .body(Full::new(Bytes::from(seen.join(","))))
            .unwrap()
    })
    .await
    .unwrap();
    let gw = start_gateway(&route("/", &app.url())).await;
    let answer = raw(
        gw.addr(),
        b"GET / HTTP/1.1\r\nHost: front.test\r\nConnection: keep-alive, X-Private\r\nX-Private: 1\r\nKeep-Alive: 300\r\nTE: trailers\r\nProxy-Authorization: Basic eA==\r\nUpgrade: h2c\r\nX-Public: 1\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&answer), 200, "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    let head = head.to_ascii_lowercase();
    for gone in [
        "x-private",
        "keep-alive",
        "te",
        "proxy-authorization",
        "upgrade",
    ] {
        assert!(
            !body.split(',').any(|h| h == gone),
            "{gone} reached the backend: {body}"
        );
    }
    assert!(body.split(',').any(|h| h == "x-public"), "{body}");
    for gone in ["x-internal", "keep-alive", "proxy-authenticate"] {
        assert!(
            !head.contains(&format!("\n{gone}:")),
            "{gone} reached the client: {head}"
        );
    }
    assert!(head.contains("\nx-kept: 1"), "{head}");
}

#[tokio::test]
async fn forward_proxy_requests_are_refused() {
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&route("/", &web.url())).await;
    let foreign = raw(
        gw.addr(),
        b"GET http://example.com/ HTTP/1.1\r\nHost: example.com\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&foreign), 400, "{foreign}");
    let connect = raw(
        gw.addr(),
        b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&connect), 405, "{connect}");
    assert_eq!(web.requests(), 0);
    // An absolute-form target naming this server is an ordinary request.
    let own = raw(
        gw.addr(),
        b"GET http://front.test/a HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    assert_eq!(raw_status(&own), 200, "{own}");
    assert!(
        own.contains("path: /a\n") && own.contains("host: front.test\n"),
        "{own}"
    );
}

#[tokio::test]
async fn ambiguous_framing_is_refused_and_the_connection_closed() {
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&route("/", &web.url())).await;
    for (what, request) in [
        (
            "TE not chunked",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "two TE fields",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        (
            "differing CLs",
            "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
        ),
        (
            "bad chunk size",
            "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nab\r\n0\r\n\r\n",
        ),
        ("no Host", "GET / HTTP/1.1\r\n\r\n"),
        ("two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    ] {
        // A second, valid request follows on the same connection: it must not be answered.
        let smuggled = format!("{request}GET /second HTTP/1.1\r\nHost: a\r\n\r\n");
        let answer = raw(gw.addr(), smuggled.as_bytes()).await.unwrap();
        assert_eq!(raw_status(&answer), 400, "{what}: {answer}");
        assert_eq!(
            answer.matches("HTTP/1.1 ").count(),
            1,
            "{what}: the connection went on: {answer}"
        );
    }
    assert_eq!(web.requests(), 0, "nothing ambiguous reached the backend");
}

#[tokio::test]
async fn content_length_with_transfer_encoding_is_reframed_and_the_connection_closed() {
    // hyper drops the Content-Length before any layer sees the request and reads the body
    // as chunked (RFC 9112 section 6.1); the request is re-framed on the way out and the
    // connection is closed after the answer, so nothing can be smuggled behind it.
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&route("/", &web.url())).await;
    let request = "POST /first HTTP/1.1\r\nHost: a\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n";
    let answer = raw(gw.addr(), request.as_bytes()).await.unwrap();
    assert_eq!(answer.matches("HTTP/1.1 ").count(), 1, "{answer}");
    assert!(
        answer.contains("path: /first") && answer.contains("body-bytes: 3"),
        "{answer}"
    );
    assert_eq!(web.requests(), 1, "the request behind it was never read");
}

#[tokio::test]
async fn closed_port_answers_502() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let gw = start_gateway(&route("/", &format!("http://127.0.0.1:{port}"))).await;
    let res = Client::new(gw.addr()).get("/").await.unwrap();
    assert_eq!(res.status, StatusCode::BAD_GATEWAY);
    assert_eq!(res.text(), "502 Bad Gateway\n");
}

#[tokio::test]
async fn silent_backend_answers_504_after_the_timeout() {
    let silent = Backend::with_handler("silent", |_req: Request<_>| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Response::new(Full::new(Bytes::new()))
    })
    .await
    .unwrap();
    let gw = start_gateway(&format!(
        "{}{}",
        server_section("timeout = \"300ms\""),
        route("/", &silent.url())
    ))
    .await;
    let started = std::time::Instant::now();
    let res = Client::new(gw.addr()).get("/").await.unwrap();
    assert_eq!(res.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(res.text(), "504 Gateway Timeout\n");
    assert!(started.elapsed() < Duration::from_secs(30));
}

#[tokio::test]
async fn upstream_connections_are_kept_alive_and_reused() {
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&route("/", &web.url())).await;
    let client = Client::new(gw.addr());
    for i in 0..50 {
        let res = client.get(&format!("/r{i}")).await.unwrap();
        assert_eq!(res.status, 200);
    }
    assert_eq!(web.requests(), 50);
    assert!(
        web.connections() <= 2,
        "50 requests used {} upstream connections",
        web.connections()
    );
}

#[tokio::test]
async fn several_workers_serve_many_connections_and_reuse_upstream_connections() {
    let web = Backend::echo("webserver_one").await.unwrap();
    let config = format!(
        "{}{}",
        server_section("workers = 3"),
        route("/", &web.url())
    );
    let gw = start_gateway(&config).await;
    // Twelve client connections, each sending ten requests one after another: the kernel
    // spreads the connections over the three workers.
    let mut clients = tokio::task::JoinSet::new();
    for c in 0..12 {
        let addr = gw.addr();
        clients.spawn(async move {
            let client = Client::new(addr);
            for i in 0..10 {
                let res = client.get(&format!("/c{c}/r{i}")).await.unwrap();
                assert_eq!(res.status, 200);
                assert_eq!(
                    res.echo("path").as_deref(),
                    Some(format!("/c{c}/r{i}").as_str())
                );
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    assert_eq!(web.requests(), 120);
    // Each worker keeps its own idle upstream connections and reuses them: at most one
    // per concurrent request, never one per request.
    assert!(
        web.connections() <= 12,
        "{} upstream connections for 120 requests",
        web.connections()
    );
}

#[test]
fn a_negative_worker_count_is_refused_with_its_key() {
    let text = format!(
        "{}{}",
        server_section("workers = -1"),
        route("/", "http://127.0.0.1:9")
    );
    let Err(err) = towergate::Config::from_toml(&text, std::path::Path::new("test.toml")) else {
        panic!("a negative worker count was accepted");
    };
    let err = err.to_string();
    // The position is that of `workers = -1`, the fourth line.
    assert!(err.starts_with("test.toml:4:"), "{err}");
    assert!(err.contains("-1"), "{err}");
}

/// At `server.max_connections` a new connection waits in the listen queue, and is served
/// as soon as another closes. One worker: each worker's accept loop may take one
/// connection over the limit while the others wait at it.
#[tokio::test]
async fn connections_over_the_limit_wait_until_one_closes() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    async fn get(conn: &mut TcpStream) {
        conn.write_all(b"GET / HTTP/1.1\r\nHost: front.test\r\n\r\n")
            .await
            .unwrap();
    }
    async fn answered(conn: &mut TcpStream, within: Duration) -> bool {
        let mut head = [0u8; 12];
        match tokio::time::timeout(within, conn.read_exact(&mut head)).await {
            Ok(read) => {
                read.unwrap();
                assert_eq!(&head, b"HTTP/1.1 200");
                true
            }
            Err(_) => false,
        }
    }

    let origin = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&format!(
        "{}{}",
        server_section("max_connections = 2\nworkers = 1\n"),
        route("/", &origin.url())
    ))
    .await;
    let mut first = TcpStream::connect(gw.addr()).await.unwrap();
    let mut second = TcpStream::connect(gw.addr()).await.unwrap();
    for conn in [&mut first, &mut second] {
        get(conn).await;
        assert!(answered(conn, Duration::from_secs(5)).await);
    }
    // The kernel completes the handshake (the listen queue); the gateway does not take
    // the connection while two are open.
    let mut third = TcpStream::connect(gw.addr()).await.unwrap();
    get(&mut third).await;
    assert!(!answered(&mut third, Duration::from_millis(500)).await);
    drop(first);
    assert!(
        answered(&mut third, Duration::from_secs(5)).await,
        "served once a connection closed"
    );
}
