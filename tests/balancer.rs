//! The balancer through the real gateway over sockets: the article's pools, weights,
//! hot standby failover and fall-back, both members down, sticky routes, and failover
//! under concurrent load.

mod common;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::{Backend, Client, start_gateway};
use http::{Request, StatusCode};
use http_body_util::Full;

/// Sends `n` sequential GETs for `path` and counts the answering backends.
async fn split(client: &Client, path: &str, n: usize) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for _ in 0..n {
        let res = client.get(path).await.expect("request");
        assert_eq!(res.status, StatusCode::OK, "{}", res.text());
        *seen
            .entry(res.header("x-backend").unwrap().to_owned())
            .or_insert(0) += 1;
    }
    seen
}

async fn backend_of(client: &Client, path: &str) -> String {
    let res = client.get(path).await.expect("no client-visible error");
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.header("x-backend").unwrap().to_owned()
}

async fn with_cookie(client: &Client, path: &str, cookie: &str) -> String {
    let req = Request::get(path)
        .header("cookie", cookie)
        .body(Full::default())
        .unwrap();
    let res = client.request(req).await.expect("request");
    assert_eq!(res.status, StatusCode::OK, "{}", res.text());
    res.header("x-backend").unwrap().to_owned()
}

/// The article's paid_servers pool (with `extra` options) and web_servers pool.
fn cluster(
    paid_one: &Backend,
    paid_two: &Backend,
    web_one: &Backend,
    web_two: &Backend,
    extra: &str,
) -> String {
    format!(
        r#"
[[route]]
prefix = "/paid_user"
pool = "paid_servers"

[[route]]
prefix = "/"
pool = "web_servers"

[pool.paid_servers]
members = [
  {{ url = "{}/paid_user", route = "a", redirect = "b" }},
  {{ url = "{}/paid_user", route = "b", standby = true }},
]
{extra}

[pool.web_servers]
members = [{{ url = "{}" }}, {{ url = "{}" }}]
"#,
        paid_one.url(),
        paid_two.url(),
        web_one.url(),
        web_two.url()
    )
}

async fn backends() -> [Backend; 4] {
    [
        Backend::echo("paid_one").await.unwrap(),
        Backend::echo("paid_two").await.unwrap(),
        Backend::echo("webserver_one").await.unwrap(),
        Backend::echo("webserver_two").await.unwrap(),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn web_servers_split_exactly_and_paid_user_goes_to_paid_one() {
    let [paid_one, paid_two, web_one, web_two] = backends().await;
    let gw = start_gateway(&cluster(&paid_one, &paid_two, &web_one, &web_two, "")).await;
    let client = Client::new(gw.addr());

    let seen = split(&client, "/", 1000).await;
    assert_eq!(seen["webserver_one"], 500, "{seen:?}");
    assert_eq!(seen["webserver_two"], 500, "{seen:?}");

    let seen = split(&client, "/paid_user/file.bin", 100).await;
    assert_eq!(seen.get("paid_one"), Some(&100), "{seen:?}");
    assert_eq!(paid_two.requests(), 0);
    let res = client.get("/paid_user/file.bin").await.unwrap();
    assert_eq!(res.echo("path").as_deref(), Some("/paid_user/file.bin"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_three_to_one_split_exactly() {
    let one = Backend::echo("one").await.unwrap();
    let two = Backend::echo("two").await.unwrap();
    let gw = start_gateway(&format!(
        "[[route]]\nprefix = \"/\"\npool = \"web\"\n[pool.web]\nmembers = [{{ url = \"{}\", weight = 3 }}, {{ url = \"{}\" }}]\n",
        one.url(),
        two.url()
    ))
    .await;
    let seen = split(&Client::new(gw.addr()), "/", 400).await;
    assert_eq!((seen["one"], seen["two"]), (300, 100), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standby_takes_over_and_traffic_returns_after_the_retry_time() {
    let [mut paid_one, paid_two, web_one, web_two] = backends().await;
    let retry = Duration::from_secs(1);
    let gw = start_gateway(&cluster(
        &paid_one,
        &paid_two,
        &web_one,
        &web_two,
        "retry = \"1s\"",
    ))
    .await;
    let client = Client::new(gw.addr());
    assert_eq!(backend_of(&client, "/paid_user/x").await, "paid_one");

    paid_one.stop();
    let stopped = Instant::now();
    // Every request from now on is served by the standby, none fails; this also spans
    // retry times, when one request at a time tries paid_one again, unseen.
    while stopped.elapsed() < retry * 2 {
        assert_eq!(backend_of(&client, "/paid_user/x").await, "paid_two");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    paid_one.restart().await.unwrap();
    let restarted = Instant::now();
    while backend_of(&client, "/paid_user/x").await != "paid_one" {
        assert!(
            restarted.elapsed() < retry + Duration::from_secs(2),
            "traffic did not return within the retry time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = split(&client, "/paid_user/x", 20).await;
    assert_eq!(
        seen.get("paid_one"),
        Some(&20),
        "all traffic reverts to paid_one: {seen:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_checks_bring_the_primary_back_within_one_interval() {
    let [mut paid_one, paid_two, web_one, web_two] = backends().await;
    let interval = Duration::from_millis(300);
    // The retry time is long: only the checks can bring paid_one back this soon.
    let options = "retry = \"120s\"\nhealth_check = { interval = \"300ms\", timeout = \"250ms\" }";
    let gw = start_gateway(&cluster(&paid_one, &paid_two, &web_one, &web_two, options)).await;
    let client = Client::new(gw.addr());
    assert_eq!(backend_of(&client, "/paid_user/x").await, "paid_one");

    paid_one.stop();
    for _ in 0..20 {
        assert_eq!(backend_of(&client, "/paid_user/x").await, "paid_two");
    }
    // Let the checks see it down too.
    tokio::time::sleep(interval * 2).await;

    paid_one.restart().await.unwrap();
    let restarted = Instant::now();
    while backend_of(&client, "/paid_user/x").await != "paid_one" {
        // One interval, plus a generous margin for a slow machine.
        assert!(
            restarted.elapsed() < interval + Duration::from_secs(2),
            "not back within one health interval"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seen = split(&client, "/paid_user/x", 20).await;
    assert_eq!(seen.get("paid_one"), Some(&20), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_members_down_is_503() {
    let [mut paid_one, mut paid_two, web_one, web_two] = backends().await;
    let gw = start_gateway(&cluster(&paid_one, &paid_two, &web_one, &web_two, "")).await;
    let client = Client::new(gw.addr());
    assert_eq!(backend_of(&client, "/paid_user/x").await, "paid_one");
    paid_one.stop();
    paid_two.stop();
    // `stop` closes the backends' listeners and kept-alive connections from their own
    // tasks; a crashed server's are closed at once. Without the pause a request can reach a
    // connection just before it closes, which counts against the member as a broken
    // answer (502), not as a refused connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    for _ in 0..3 {
        let res = client.get("/paid_user/x").await.unwrap();
        assert_eq!(
            res.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{}",
            res.text()
        );
    }
    // The other pool is unaffected.
    assert_eq!(client.get("/").await.unwrap().status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sticky_routes_and_redirect() {
    let [paid_one, mut paid_two, web_one, mut web_two] = backends().await;
    let mut text = cluster(
        &paid_one,
        &paid_two,
        &web_one,
        &web_two,
        "stickysession = \"ROUTEID\"",
    );
    // web_servers with routes a and b, each the other's redirect.
    text = text.replace(
        &format!("members = [{{ url = \"{}\" }}, {{ url = \"{}\" }}]", web_one.url(), web_two.url()),
        &format!(
            "members = [{{ url = \"{}\", route = \"a\", redirect = \"b\" }}, {{ url = \"{}\", route = \"b\", redirect = \"a\" }}]\nstickysession = \"ROUTEID\"",
            web_one.url(),
            web_two.url()
        ),
    );
    let gw = start_gateway(&text).await;
    let client = Client::new(gw.addr());

    for _ in 0..10 {
        assert_eq!(
            with_cookie(&client, "/", "ROUTEID=.b").await,
            "webserver_two"
        );
        assert_eq!(
            with_cookie(&client, "/", "session=1; ROUTEID=xyz.a").await,
            "webserver_one"
        );
    }
    // Route b on the paid pool is the hot standby: the cookie still reaches it.
    assert_eq!(
        with_cookie(&client, "/paid_user/x", "ROUTEID=.b").await,
        "paid_two"
    );
    // The path parameter form.
    assert_eq!(
        backend_of(&client, "/paid_user/x;ROUTEID=.b").await,
        "paid_two"
    );

    web_two.stop();
    for _ in 0..5 {
        assert_eq!(
            with_cookie(&client, "/", "ROUTEID=.b").await,
            "webserver_one",
            "b is down: its redirect"
        );
    }
    // paid_two (route b) down: it has no redirect, so the pool balances as usual.
    paid_two.stop();
    assert_eq!(
        with_cookie(&client, "/paid_user/x", "ROUTEID=.b").await,
        "paid_one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_under_load_costs_no_request() {
    let [mut paid_one, paid_two, web_one, web_two] = backends().await;
    let gw = start_gateway(&cluster(&paid_one, &paid_two, &web_one, &web_two, "")).await;
    let addr = gw.addr();
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (stop, ok) = (stop.clone(), ok.clone());
            tokio::spawn(async move {
                let client = Client::new(addr);
                let mut failures = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    match client.get("/paid_user/load").await {
                        Ok(res) if res.status == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(res) => failures.push(format!("{} {}", res.status, res.text())),
                        Err(e) => failures.push(e.to_string()),
                    }
                }
                failures
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before_kill = paid_one.requests();
    paid_one.stop();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut failures = Vec::new();
    for c in clients {
        failures.extend(c.await.unwrap());
    }
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(before_kill > 0, "paid_one served before it was killed");
    assert!(paid_two.requests() > 0, "paid_two took over");
    assert!(
        ok.load(Ordering::Relaxed) > before_kill,
        "requests went on after the kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demo_serves_the_article_pools_and_its_control_endpoint_stops_and_starts_backends() {
    use towergate::demo::{DemoBackends, serve_control};

    let backends = DemoBackends::start().await.unwrap();
    let config = backends.config("127.0.0.1:0".parse().unwrap()).unwrap();
    assert_eq!(
        config.pools.len(),
        3,
        "paid_servers, free_servers, web_servers"
    );
    let gw = common::RunningGateway::start(config).await.unwrap();
    let control = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let control_addr = control.local_addr().unwrap();
    tokio::spawn(serve_control(
        control,
        Arc::new(tokio::sync::Mutex::new(backends)),
    ));
    let client = Client::new(gw.addr());
    let ctl = Client::new(control_addr);
    let post = |path: &str| Request::post(path).body(Full::default()).unwrap();

    // Distinct paths, slow pace: the demo runs the article's guards too.
    let mut n = 0;
    let mut paid = || {
        n += 1;
        format!("/paid_user/file{n}.bin")
    };
    assert_eq!(backend_of(&client, &paid()).await, "paid_one");
    let seen = split(&client, "/", 2).await;
    assert_eq!((seen["webserver_one"], seen["webserver_two"]), (1, 1));
    assert_eq!(backend_of(&client, "/free_user/a.bin").await, "free_one");

    let res = ctl.request(post("/stop/paid_one")).await.unwrap();
    assert_eq!(
        (res.status, res.text()),
        (StatusCode::OK, "paid_one stopped\n".into())
    );
    assert!(
        ctl.get("/")
            .await
            .unwrap()
            .text()
            .lines()
            .any(|l| l.starts_with("paid_one") && l.ends_with("stopped"))
    );
    for _ in 0..3 {
        assert_eq!(backend_of(&client, &paid()).await, "paid_two");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let res = ctl.request(post("/start/paid_one")).await.unwrap();
    assert_eq!(
        (res.status, res.text()),
        (StatusCode::OK, "paid_one started\n".into())
    );
    // The seed cluster checks every 5 s: back within one interval (plus a margin).
    let started = Instant::now();
    while backend_of(&client, &paid()).await != "paid_one" {
        assert!(
            started.elapsed() < Duration::from_secs(8),
            "paid_one not back within the health interval"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    assert_eq!(
        ctl.request(post("/stop/nobody")).await.unwrap().status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ctl.get("/stop/paid_one").await.unwrap().status,
        StatusCode::METHOD_NOT_ALLOWED
    );
}

/// A GET for `path` on a fresh keep-alive connection: the raw answer, and whether the
/// gateway closed the connection (rather than keeping it open for the next request).
async fn raw_get(addr: std::net::SocketAddr, path: &str) -> (String, bool) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nhost: front.test\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 16384];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await {
            Err(_) => break false,
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    };
    (String::from_utf8_lossy(&answer).into_owned(), closed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn member_resetting_mid_response_is_put_in_error_and_the_client_sees_a_cut_body() {
    use http_body_util::BodyExt;
    use towergate_balancer::MemberHealth;
    use towergate_testkit::Framing;

    for framing in [Framing::ContentLength, Framing::Chunked] {
        let cut = Backend::cut_short("cut", framing).await.unwrap();
        let good = Backend::echo("good").await.unwrap();
        let gw = start_gateway(&format!(
            "[[route]]\nprefix = \"/\"\npool = \"web\"\n\n[pool.web]\nmembers = [{{ url = \"{}\" }}, {{ url = \"{}\" }}]\n",
            cut.url(),
            good.url()
        ))
        .await;

        // The first request goes to `cut`: headers, part of the body, then a reset. The
        // client gets the headers and the part, and its connection is closed before the
        // body's framing is complete.
        let (answer, closed) = raw_get(gw.addr(), "/first").await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{framing:?}: {answer}");
        assert!(answer.contains("x-backend: cut"), "{framing:?}: {answer}");
        assert!(closed, "{framing:?}: the connection was left open");
        let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
        match framing {
            Framing::ContentLength => {
                assert!(answer.contains("content-length: 100000"), "{answer}");
                assert!(body.len() < 100_000, "{} body bytes", body.len());
            }
            Framing::Chunked => {
                assert!(answer.contains("transfer-encoding: chunked"), "{answer}");
                assert!(!body.ends_with("0\r\n\r\n"), "the body looks complete");
            }
        }

        // The member is in error, as after a connect error: nothing more goes to it.
        let snapshot = gw.status().pools[0].snapshot();
        let member = &snapshot.members[0];
        assert!(
            matches!(member.health, MemberHealth::Error { .. }),
            "{framing:?}: {:?}",
            member.health
        );
        assert_eq!(member.failures, 1);
        let last_error = member.last_error.as_deref().unwrap_or("");
        assert!(last_error.contains("cut short"), "{last_error}");
        let client = Client::new(gw.addr());
        let seen = split(&client, "/next", 10).await;
        assert_eq!(seen.get("good"), Some(&10), "{framing:?}: {seen:?}");
        assert_eq!(cut.connections(), 1, "{framing:?}");

        // Nothing counts as in flight once the bodies are over.
        let snapshot = gw.status().pools[0].snapshot();
        assert_eq!(
            snapshot.members.iter().map(|m| m.in_flight).sum::<usize>(),
            0
        );

        // To an HTTP client, the cut body is an error, never a short success.
        cut_body_is_an_error(&cut).await;
        drop(gw);
    }

    /// Straight at the gateway's HTTP/1.1 parser: the member cut alone in a pool.
    async fn cut_body_is_an_error(cut: &Backend) {
        let gw = start_gateway(&format!(
            "[[route]]\nprefix = \"/\"\npool = \"one\"\n\n[pool.one]\nmembers = [{{ url = \"{}\" }}]\n",
            cut.url()
        ))
        .await;
        let tcp = tokio::net::TcpStream::connect(gw.addr()).await.unwrap();
        let (mut sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp))
                .await
                .unwrap();
        tokio::spawn(conn);
        let req = Request::get("/x")
            .header("host", "front.test")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await;
        assert!(body.is_err(), "a cut body read as complete");
        let snapshot = gw.status().pools[0].snapshot();
        assert!(matches!(
            snapshot.members[0].health,
            MemberHealth::Error { .. }
        ));
        assert_eq!(snapshot.members[0].in_flight, 0);
    }
}
