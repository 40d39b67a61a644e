//! The balancer layer in front of the real forwarder, against loopback backends: what is
//! resent after which failure, health checks, and the check task's end.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};

use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tower::{Service, ServiceExt};
use towergate_balancer::{
    Balancer, HealthCheckConfig, MemberConfig, MemberHealth, Pool, PoolConfig, ReplayBody,
};
use towergate_proxy::{Forward, ForwardConfig, ForwardError, ProxyBody, UpstreamBody};
use towergate_testkit::Backend;

type Body = Full<Bytes>;

fn to_proxy(res: Response<UpstreamBody>) -> Response<ProxyBody> {
    res.map(ProxyBody::upstream)
}

fn balancer(
    pool: &Pool,
    config: ForwardConfig,
) -> impl Service<Request<Body>, Response = Response<ProxyBody>, Error = ForwardError> + Clone {
    let forward = Forward::<ReplayBody<Body>>::new(config).map_response(to_proxy as fn(_) -> _);
    Balancer::new(forward, pool.clone())
}

fn pool(config: PoolConfig) -> Pool {
    Pool::from_config("test", &config).unwrap()
}

/// A loopback address where nothing listens.
async fn dead_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    drop(l);
    url
}

/// A server that reads a request and closes the connection without answering.
async fn hang_up_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    url
}

async fn send(
    svc: &(impl Service<Request<Body>, Response = Response<ProxyBody>, Error = ForwardError> + Clone),
    req: Request<Body>,
) -> Result<(StatusCode, String), ForwardError> {
    let res = svc.clone().oneshot(req).await?;
    let status = res.status();
    let body = res.into_body().collect().await.unwrap().to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("host", "front.test")
        .body(Body::default())
        .unwrap()
}

fn post(path: &str, body: &'static str) -> Request<Body> {
    Request::post(path)
        .header("host", "front.test")
        .header("content-length", body.len())
        .body(Body::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

fn echo(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}: ")).map(str::to_owned))
        .unwrap_or_default()
}

#[tokio::test]
async fn connect_failure_resends_the_whole_body_elsewhere() {
    let alive = Backend::echo("alive").await.unwrap();
    let p = pool(PoolConfig::new([
        MemberConfig::new(dead_url().await),
        MemberConfig::new(alive.url()),
    ]));
    let svc = balancer(&p, ForwardConfig::default());
    for _ in 0..4 {
        let (status, text) = send(&svc, post("/upload", "twelve bytes")).await.unwrap();
        assert_eq!(status, StatusCode::OK);
        assert_eq!(echo(&text, "backend"), "alive");
        assert_eq!(echo(&text, "body-bytes"), "12");
        assert_eq!(echo(&text, "method"), "POST");
    }
    let s = p.snapshot();
    assert!(matches!(s.members[0].health, MemberHealth::Error { .. }));
    assert_eq!(s.members[0].requests, 1, "in error after the first refusal");
    assert_eq!(s.members[1].requests, 4);
    assert_eq!(s.failovers, 1);
    assert!(s.members.iter().all(|m| m.in_flight == 0));
}

#[tokio::test]
async fn reached_member_failure_resends_only_idempotent_empty_requests() {
    let alive = Backend::echo("alive").await.unwrap();
    let hang_up = hang_up_url().await;
    let p = pool(PoolConfig::new([
        MemberConfig::new(hang_up.clone()),
        MemberConfig::new(alive.url()),
    ]));
    let svc = balancer(&p, ForwardConfig::default());
    // GET: the member took it and hung up; the next member answers.
    let (status, text) = send(&svc, get("/a")).await.unwrap();
    assert_eq!(
        (status, echo(&text, "backend")),
        (StatusCode::OK, "alive".into())
    );
    // A broken connection does not put the member in error: POSTs reach it and fail,
    // and are not resent (the member may have acted on them).
    let mut failed = 0;
    for _ in 0..4 {
        match send(&svc, post("/b", "x")).await {
            Ok((status, text)) => assert_eq!(
                (status, echo(&text, "backend")),
                (StatusCode::OK, "alive".into())
            ),
            Err(e) => {
                assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
                failed += 1;
            }
        }
    }
    assert_eq!(failed, 2, "every other POST goes to the hanging member");

    // With resending switched off, a GET that reached a member is not resent either.
    let p = pool(
        PoolConfig::new([MemberConfig::new(hang_up), MemberConfig::new(alive.url())])
            .retry_methods(Vec::<String>::new()),
    );
    let svc = balancer(&p, ForwardConfig::default());
    assert!(send(&svc, get("/c")).await.is_err());
}

#[tokio::test]
async fn timeout_puts_the_member_in_error_and_get_goes_elsewhere() {
    let slow = Backend::with_handler("slow", |_req| async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Response::new(Full::new(Bytes::from_static(b"late")))
    })
    .await
    .unwrap();
    let alive = Backend::echo("alive").await.unwrap();
    let p = pool(PoolConfig::new([
        MemberConfig::new(slow.url()),
        MemberConfig::new(alive.url()),
    ]));
    let config = ForwardConfig {
        response_timeout: Duration::from_millis(300),
        ..ForwardConfig::default()
    };
    let svc = balancer(&p, config);
    let (status, text) = send(&svc, get("/")).await.unwrap();
    assert_eq!(
        (status, echo(&text, "backend")),
        (StatusCode::OK, "alive".into())
    );
    let s = p.snapshot();
    assert!(matches!(s.members[0].health, MemberHealth::Error { .. }));
    assert!(
        s.members[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("in time")
    );
    // In error: the next requests do not wait for it.
    for _ in 0..3 {
        let (_, text) = send(&svc, get("/")).await.unwrap();
        assert_eq!(echo(&text, "backend"), "alive");
    }
}

/// A member that answers every request `503 Service Unavailable`, body `sick`.
async fn sick_backend() -> Backend {
    Backend::with_handler("sick", |_req| async {
        let mut res = Response::new(Full::new(Bytes::from_static(b"sick\n")));
        *res.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        res
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn failonstatus_answer_is_replaced_or_passed_on() {
    let sick = sick_backend().await;
    let alive = Backend::echo("alive").await.unwrap();
    let members = || {
        [
            MemberConfig::new(sick.url()),
            MemberConfig::new(alive.url()),
        ]
    };
    let p = pool(PoolConfig::new(members()).failonstatus([503]));
    let svc = balancer(&p, ForwardConfig::default());
    let (status, text) = send(&svc, get("/")).await.unwrap();
    assert_eq!(
        (status, echo(&text, "backend")),
        (StatusCode::OK, "alive".into())
    );
    assert!(matches!(
        p.snapshot().members[0].health,
        MemberHealth::Error { .. }
    ));

    // A POST is not resent: the member's own answer goes to the client.
    let p = pool(PoolConfig::new(members()).failonstatus([503]));
    let svc = balancer(&p, ForwardConfig::default());
    let (status, text) = send(&svc, post("/", "x")).await.unwrap();
    assert_eq!(
        (status, text.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "sick\n")
    );

    // Without failonstatus a 503 is an ordinary answer.
    let p = pool(PoolConfig::new(members()));
    let svc = balancer(&p, ForwardConfig::default());
    assert_eq!(
        send(&svc, get("/")).await.unwrap().0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(p.snapshot().members[0].health, MemberHealth::Ok);
}

#[tokio::test]
async fn nothing_reachable_is_503_and_counted() {
    let p = pool(PoolConfig::new([
        MemberConfig::new(dead_url().await),
        MemberConfig::new(dead_url().await).standby(),
    ]));
    let svc = balancer(&p, ForwardConfig::default());
    for _ in 0..3 {
        let (status, text) = send(&svc, get("/")).await.unwrap();
        assert_eq!(
            (status, text.as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, "503 Service Unavailable\n")
        );
    }
    let s = p.snapshot();
    assert_eq!(s.unavailable, 3);
    assert_eq!(
        s.members[0].requests + s.members[1].requests,
        2,
        "each member tried once, then left alone"
    );
}

#[tokio::test]
async fn health_checks_take_members_out_and_bring_them_back() {
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let a = Backend::with_handler("a", move |req| {
        let flag = flag.clone();
        async move {
            let mut res = Response::new(Full::new(Bytes::from_static(b"a")));
            if req.uri().path() == "/base/health" && !flag.load(Ordering::Relaxed) {
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            res.headers_mut().insert("x-backend", "a".parse().unwrap());
            res
        }
    })
    .await
    .unwrap();
    let b = Backend::echo("b").await.unwrap();
    let p = pool(
        PoolConfig::new([
            MemberConfig::new(format!("{}/base", a.url())),
            MemberConfig::new(b.url()),
        ])
        .health_check(
            HealthCheckConfig::every(Duration::from_millis(100))
                .path("/health")
                .rise_fall(2, 2),
        ),
    );
    let checks = tokio::spawn(p.health_checks().unwrap());
    let svc = balancer(&p, ForwardConfig::default());
    let backends = |n| {
        let svc = svc.clone();
        async move {
            let mut seen = Vec::new();
            for _ in 0..n {
                let res = svc.clone().oneshot(get("/")).await.unwrap();
                seen.push(res.headers()["x-backend"].to_str().unwrap().to_owned());
            }
            seen
        }
    };
    assert_eq!(backends(4).await, ["a", "b", "a", "b"]);

    healthy.store(false, Ordering::Relaxed);
    wait_for(|| p.snapshot().members[0].health == MemberHealth::CheckFailed).await;
    assert!(backends(4).await.iter().all(|b| b == "b"));
    assert!(
        p.snapshot().members[0]
            .last_error
            .as_deref()
            .unwrap()
            .contains("500")
    );

    healthy.store(true, Ordering::Relaxed);
    wait_for(|| p.snapshot().members[0].health == MemberHealth::Ok).await;
    assert_eq!(backends(4).await.iter().filter(|b| *b == "a").count(), 2);
    // Four proxied requests; the rest are checks.
    assert!(
        a.requests() >= 4 + 4,
        "the checks reached the member: {}",
        a.requests()
    );

    // The check task ends once the pool and every service holding it are gone.
    drop(svc);
    drop(p);
    tokio::time::timeout(Duration::from_secs(2), checks)
        .await
        .expect("health checks stop with the pool")
        .unwrap();
}

#[tokio::test]
async fn health_checks_end_a_passive_error_before_the_retry_time() {
    let mut a = Backend::echo("a").await.unwrap();
    let b = Backend::echo("b").await.unwrap();
    let p = pool(
        PoolConfig::new([
            MemberConfig::new(a.url()),
            MemberConfig::new(b.url()).standby(),
        ])
        .retry(Duration::from_secs(600))
        .health_check(HealthCheckConfig::every(Duration::from_millis(100))),
    );
    let _checks = tokio::spawn(p.health_checks().unwrap());
    let svc = balancer(&p, ForwardConfig::default());
    a.stop();
    let (_, text) = send(&svc, get("/")).await.unwrap();
    assert_eq!(echo(&text, "backend"), "b");
    a.restart().await.unwrap();
    wait_for(|| p.snapshot().members[0].health == MemberHealth::Ok).await;
    let (_, text) = send(&svc, get("/")).await.unwrap();
    assert_eq!(echo(&text, "backend"), "a");
}

async fn wait_for(mut cond: impl FnMut() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("condition not met within 5 s");
}

/// A request from 203.0.113.7 as the server tags it: the forwarder turns the extension into
/// `X-Forwarded-For`, so the backend's echo shows whether a resent request still had it.
fn from_peer(mut req: Request<Body>) -> Request<Body> {
    let peer = "203.0.113.7:40000".parse().unwrap();
    req.extensions_mut()
        .insert(towergate_client_addr::PeerAddr(peer));
    req
}

#[tokio::test]
async fn a_resent_request_keeps_its_extensions() {
    let alive = Backend::echo("alive").await.unwrap();
    // Resent after a refused connection: the extensions come back with the error.
    let p = pool(PoolConfig::new([
        MemberConfig::new(dead_url().await),
        MemberConfig::new(alive.url()),
    ]));
    let svc = balancer(&p, ForwardConfig::default());
    let (status, text) = send(&svc, from_peer(post("/", "body"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p.snapshot().failovers, 1);
    assert_eq!(echo(&text, "x-forwarded-for"), "203.0.113.7");

    // Resent after a member failed once reached (an idempotent request).
    let p = pool(PoolConfig::new([
        MemberConfig::new(hang_up_url().await),
        MemberConfig::new(alive.url()),
    ]));
    let svc = balancer(&p, ForwardConfig::default());
    let (status, text) = send(&svc, from_peer(get("/"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p.snapshot().failovers, 1);
    assert_eq!(echo(&text, "x-forwarded-for"), "203.0.113.7");

    // Resent after a failonstatus answer, which hands nothing back.
    let sick = sick_backend().await;
    let p = pool(
        PoolConfig::new([
            MemberConfig::new(sick.url()),
            MemberConfig::new(alive.url()),
        ])
        .failonstatus([503]),
    );
    let svc = balancer(&p, ForwardConfig::default());
    let (status, text) = send(&svc, from_peer(get("/"))).await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(p.snapshot().failovers, 1);
    assert_eq!(echo(&text, "x-forwarded-for"), "203.0.113.7");
}
