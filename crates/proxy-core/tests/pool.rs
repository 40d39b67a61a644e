//! The forwarder's own connection pool, against loopback upstreams: connections are reused
//! only once their answer was read to the end, replaced when the upstream closed them, and
//! closed when idle too long or beyond the idle limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use towergate_proxy::{Forward, ForwardConfig, RouteInfo, Target, Upstream, UpstreamBody};
use towergate_testkit::Backend;

type Body = Empty<Bytes>;

fn request(upstream: &str, path: &str) -> Request<Body> {
    let mut req = Request::get(path)
        .header("host", "front.test")
        .body(Body::new())
        .unwrap();
    req.extensions_mut().insert(Target {
        route: Arc::new(RouteInfo::new("root", "/")),
        upstream: Arc::new(Upstream::parse(upstream).unwrap()),
    });
    req
}

async fn get(forward: &Forward<Body>, upstream: &str, path: &str) -> (StatusCode, Bytes) {
    let res = forward
        .clone()
        .oneshot(request(upstream, path))
        .await
        .unwrap();
    let status = res.status();
    (status, res.into_body().collect().await.unwrap().to_bytes())
}

/// Connections a raw upstream has open, and how many it accepted in all.
#[derive(Default)]
struct Counts {
    accepted: AtomicUsize,
    open: AtomicUsize,
}

/// A keep-alive upstream written by hand, so a test sees when the gateway closes a
/// connection. `/slow` answers its head at once and its body after `slow`; `/big` sends
/// 1 MB; `/close` answers and then closes the connection as a server whose keep-alive
/// timeout ran out would; anything else answers `ok`.
async fn raw_upstream(slow: Duration) -> (Backend, Arc<Counts>) {
    let counts = Arc::new(Counts::default());
    let seen = counts.clone();
    let backend = Backend::raw("raw", move |stream| serve(stream, seen.clone(), slow))
        .await
        .unwrap();
    (backend, counts)
}

async fn serve(mut stream: TcpStream, counts: Arc<Counts>, slow: Duration) {
    counts.accepted.fetch_add(1, Ordering::SeqCst);
    counts.open.fetch_add(1, Ordering::SeqCst);
    let mut buf = Vec::new();
    'conn: loop {
        let head_end = loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
            let mut chunk = [0u8; 1024];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break 'conn,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let written = match path.as_str() {
            "/slow" => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
                if stream.write_all(head.as_bytes()).await.is_err() {
                    break;
                }
                tokio::time::sleep(slow).await;
                stream.write_all(b"slow").await
            }
            "/big" => {
                let head = "HTTP/1.1 200 OK\r\ncontent-length: 1048576\r\n\r\n";
                let mut answer = head.as_bytes().to_vec();
                answer.resize(head.len() + 1_048_576, b'x');
                stream.write_all(&answer).await
            }
            "/close" => {
                let answer = "HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nclose";
                let _ = stream.write_all(answer.as_bytes()).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
                break;
            }
            _ => {
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await
            }
        };
        if written.is_err() {
            break;
        }
    }
    counts.open.fetch_sub(1, Ordering::SeqCst);
}

/// Waits up to two seconds for `open` connections.
async fn open_becomes(counts: &Counts, open: usize) -> bool {
    for _ in 0..200 {
        if counts.open.load(Ordering::SeqCst) == open {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let web = Backend::echo("web").await.unwrap();
    let forward = Forward::new(ForwardConfig::default());
    for i in 0..20 {
        let (status, _) = get(&forward, &web.url(), &format!("/r{i}")).await;
        assert_eq!(status, 200);
    }
    assert_eq!(web.requests(), 20);
    assert_eq!(web.connections(), 1);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_while_idle_is_replaced() {
    let (up, counts) = raw_upstream(Duration::ZERO).await;
    let forward = Forward::new(ForwardConfig::default());
    let (status, body) = get(&forward, &up.url(), "/close").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"close"[..]));
    assert!(
        open_becomes(&counts, 0).await,
        "the upstream closed its side"
    );
    for _ in 0..3 {
        let (status, body) = get(&forward, &up.url(), "/").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    }
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_answer_dropped_before_its_end_closes_its_connection() {
    let (up, counts) = raw_upstream(Duration::ZERO).await;
    let forward = Forward::new(ForwardConfig::default());
    let res = forward
        .clone()
        .oneshot(request(&up.url(), "/big"))
        .await
        .unwrap();
    let mut body: UpstreamBody = res.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    drop(body);
    // The rest of the answer is still on that connection: it must not be reused.
    assert!(open_becomes(&counts, 0).await, "the cut connection closed");
    let (status, body) = get(&forward, &up.url(), "/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
    // Read to the end, an answer gives its connection back.
    let (status, body) = get(&forward, &up.url(), "/big").await;
    assert_eq!((status, body.len()), (StatusCode::OK, 1_048_576));
    let (status, _) = get(&forward, &up.url(), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_request_does_not_wait_for_a_connection_still_streaming_an_answer() {
    let (up, counts) = raw_upstream(Duration::from_secs(3)).await;
    let forward = Forward::new(ForwardConfig::default());
    let slow = forward
        .clone()
        .oneshot(request(&up.url(), "/slow"))
        .await
        .unwrap();
    assert_eq!(slow.status(), StatusCode::OK);
    let fast = tokio::time::timeout(Duration::from_secs(2), get(&forward, &up.url(), "/"))
        .await
        .expect("answered on a second connection, not after the slow body");
    assert_eq!(fast.0, StatusCode::OK);
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 2);
    let body = slow.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"slow");
}

#[tokio::test]
async fn idle_connections_close_after_the_idle_timeout_and_beyond_the_idle_limit() {
    let (up, counts) = raw_upstream(Duration::from_millis(300)).await;
    let forward = Forward::new(ForwardConfig {
        idle_timeout: Duration::from_millis(400),
        max_idle_per_host: 1,
        ..ForwardConfig::default()
    });
    // Three requests at once need three connections; one is kept idle afterwards.
    let url = up.url();
    let answers =
        futures_util::future::join_all((0..3).map(|_| get(&forward, &url, "/slow"))).await;
    assert!(answers.iter().all(|(status, _)| *status == StatusCode::OK));
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 3);
    assert!(open_becomes(&counts, 1).await, "one idle connection kept");
    // Idle past the timeout (closed between one and one and a half times it).
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(
        open_becomes(&counts, 0).await,
        "the idle connection was closed"
    );
    let (status, _) = get(&forward, &up.url(), "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(counts.accepted.load(Ordering::SeqCst), 4);
}
