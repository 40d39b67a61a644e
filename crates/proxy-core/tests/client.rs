//! The forwarder's HTTP/1.1 client against a loopback upstream written by hand, so each
//! test controls the exact bytes of the answer: how bodies are framed both ways, interim
//! answers, broken answers, and kept-alive connections closed under a request.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt;
use towergate_proxy::{Forward, ForwardConfig, ForwardErrorKind, RouteInfo, Target, Upstream};
use towergate_testkit::Backend;

type Body = http_body_util::combinators::UnsyncBoxBody<Bytes, std::io::Error>;

/// What the upstream saw: each request's head and body bytes, and the connection it came
/// on (numbered from 1 in accept order).
#[derive(Default)]
struct Seen {
    accepted: AtomicUsize,
    requests: Mutex<Vec<(usize, String, Vec<u8>)>>,
}

impl Seen {
    fn requests(&self) -> Vec<(usize, String, Vec<u8>)> {
        self.requests.lock().unwrap().clone()
    }
}

/// The answer to a request for `path` as the `n`th request on its connection; `None`
/// closes the connection without answering.
fn answer(path: &str, n: usize) -> Option<Vec<u8>> {
    let raw: &[u8] = match path {
        "/chunked" => {
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 11\r\n\r\n"
        }
        "/until-close" => b"HTTP/1.1 200 OK\r\n\r\nread to the end",
        "/continue" => {
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal"
        }
        "/head" => b"HTTP/1.1 200 OK\r\ncontent-length: 1000\r\n\r\n",
        "/close" => b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
        "/bad-length" => b"HTTP/1.1 200 OK\r\ncontent-length: 2, 3\r\n\r\nok",
        "/bad-chunk" => b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n",
        "/not-http" => b"SSH-2.0-OpenSSH_9.6\r\n\r\n",
        "/huge-head" => {
            let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
            for i in 0..2000 {
                head.extend_from_slice(format!("x-filler-{i:04}: {}\r\n", "y".repeat(40)).as_bytes());
            }
            head.extend_from_slice(b"content-length: 0\r\n\r\n");
            return Some(head);
        }
        "/reason" => b"HTTP/1.1 404 Nothing Here\r\ncontent-length: 0\r\n\r\n",
        // Answers the first request on a connection; later ones find it closing.
        "/hang-up" if n > 1 => return None,
        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
    };
    Some(raw.to_vec())
}

async fn upstream() -> (Backend, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let log = seen.clone();
    let backend = Backend::raw("scripted", move |stream| serve(stream, log.clone()))
        .await
        .unwrap();
    (backend, seen)
}

async fn serve(mut stream: TcpStream, seen: Arc<Seen>) {
    let conn = seen.accepted.fetch_add(1, Ordering::SeqCst) + 1;
    let mut buf = Vec::new();
    let mut n = 0;
    loop {
        let Some(head_end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        buf.drain(..head_end);
        let lower = head.to_ascii_lowercase();
        let body = if let Some(len) = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
        {
            let len: usize = len.trim().parse().unwrap();
            while buf.len() < len {
                if read_more(&mut stream, &mut buf).await == 0 {
                    return;
                }
            }
            buf.drain(..len).collect()
        } else if lower.contains("transfer-encoding: chunked") {
            // Kept raw, framing and all: the last chunk, trailers and the empty line end it.
            let Some(last) = read_until(&mut stream, &mut buf, b"\r\n0\r\n").await else {
                return;
            };
            let end = loop {
                if let Some(at) = buf[last - 2..].windows(4).position(|w| w == b"\r\n\r\n") {
                    break last - 2 + at + 4;
                }
                if read_more(&mut stream, &mut buf).await == 0 {
                    return;
                }
            };
            buf.drain(..end).collect()
        } else {
            Vec::new()
        };
        n += 1;
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        seen.requests.lock().unwrap().push((conn, head, body));
        let Some(answer) = answer(&path, n) else {
            return;
        };
        if stream.write_all(&answer).await.is_err() {
            return;
        }
        if path == "/until-close" || path == "/close" {
            return;
        }
    }
}

/// Reads until `buf` holds `end`; returns the index just past it.
async fn read_until(stream: &mut TcpStream, buf: &mut Vec<u8>, end: &[u8]) -> Option<usize> {
    loop {
        if let Some(at) = buf.windows(end.len()).position(|w| w == end) {
            return Some(at + end.len());
        }
        if read_more(stream, buf).await == 0 {
            return None;
        }
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> usize {
    let mut chunk = [0u8; 4096];
    let n = stream.read(&mut chunk).await.unwrap_or(0);
    buf.extend_from_slice(&chunk[..n]);
    n
}

fn request(up: &Backend, method: Method, path: &str, body: Body) -> Request<Body> {
    let mut req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", "front.test")
        .body(body)
        .unwrap();
    req.extensions_mut().insert(Target {
        route: Arc::new(RouteInfo::new("root", "/")),
        upstream: Arc::new(Upstream::parse(&up.url()).unwrap()),
    });
    req
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// Status, body and trailers of a GET.
async fn get(
    forward: &Forward<Body>,
    up: &Backend,
    path: &str,
) -> (StatusCode, Bytes, Option<http::HeaderMap>) {
    let res = forward
        .clone()
        .oneshot(request(up, Method::GET, path, empty()))
        .await
        .unwrap();
    let status = res.status();
    let collected = res.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned();
    (status, collected.to_bytes(), trailers)
}

#[tokio::test]
async fn chunked_answers_are_decoded_with_their_trailers_and_the_connection_kept() {
    let (up, seen) = upstream().await;
    let forward = Forward::new(ForwardConfig::default());
    for _ in 0..3 {
        let (status, body, trailers) = get(&forward, &up, "/chunked").await;
        assert_eq!((status, &body[..]), (StatusCode::OK, &b"hello world"[..]));
        assert_eq!(trailers.unwrap()["x-sum"], "11");
    }
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1, "one connection");
}

#[tokio::test]
async fn an_answer_without_length_is_read_to_the_close_and_not_reused() {
    let (up, seen) = upstream().await;
    let forward = Forward::new(ForwardConfig::default());
    for _ in 0..2 {
        let (status, body, _) = get(&forward, &up, "/until-close").await;
        assert_eq!(
            (status, &body[..]),
            (StatusCode::OK, &b"read to the end"[..])
        );
    }
    let (status, _, _) = get(&forward, &up, "/close").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = get(&forward, &up, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        seen.accepted.load(Ordering::SeqCst),
        4,
        "none of them reused"
    );
}

#[tokio::test]
async fn interim_answers_are_skipped_and_head_answers_have_no_body() {
    let (up, seen) = upstream().await;
    let forward = Forward::new(ForwardConfig::default());
    let (status, body, _) = get(&forward, &up, "/continue").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"final"[..]));

    let res = forward
        .clone()
        .oneshot(request(&up, Method::HEAD, "/head", empty()))
        .await
        .unwrap();
    assert_eq!(res.headers()["content-length"], "1000");
    assert!(
        res.into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .is_empty()
    );
    // The connection is still good after a HEAD answer's missing body.
    let (status, body, _) = get(&forward, &up, "/").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_reason_phrase_of_its_own_is_kept() {
    let (up, _) = upstream().await;
    let forward = Forward::new(ForwardConfig::default());
    let res = forward
        .clone()
        .oneshot(request(&up, Method::GET, "/reason", empty()))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    let reason = res.extensions().get::<hyper::ext::ReasonPhrase>().unwrap();
    assert_eq!(reason.as_bytes(), b"Nothing Here");
}

#[tokio::test]
async fn request_bodies_go_with_their_length_or_chunked() {
    let (up, seen) = upstream().await;
    let forward = Forward::new(ForwardConfig::default());
    let known = Full::new(Bytes::from_static(b"twelve bytes"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let res = forward
        .clone()
        .oneshot(request(&up, Method::POST, "/known", known))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();

    // A streamed body of unknown length: three pieces, then trailers.
    let frames = vec![
        Ok(http_body::Frame::data(Bytes::from_static(b"abc"))),
        Ok(http_body::Frame::data(Bytes::from(vec![b'x'; 20_000]))),
        Ok(http_body::Frame::data(Bytes::from_static(b"end"))),
        Ok(http_body::Frame::trailers({
            let mut t = http::HeaderMap::new();
            t.insert("x-digest", "d".parse().unwrap());
            t
        })),
    ];
    let streamed = StreamBody::new(futures_util::stream::iter(frames)).boxed_unsync();
    let res = forward
        .clone()
        .oneshot(request(&up, Method::PUT, "/streamed", streamed))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();

    let requests = seen.requests();
    let (_, head, body) = &requests[0];
    assert!(head.contains("content-length: 12\r\n"), "{head}");
    assert_eq!(body, b"twelve bytes");
    let (conn, head, body) = &requests[1];
    assert_eq!(*conn, 1, "the same connection");
    assert!(head.contains("transfer-encoding: chunked\r\n"), "{head}");
    let mut expected = b"3\r\nabc\r\n4E20\r\n".to_vec();
    expected.extend_from_slice(&[b'x'; 20_000]);
    expected.extend_from_slice(b"\r\n3\r\nend\r\n0\r\nx-digest: d\r\n\r\n");
    assert!(*body == expected, "chunked framing as sent");
}

#[tokio::test]
async fn a_kept_alive_connection_closed_under_a_request_gets_it_again_when_safe() {
    let (up, seen) = upstream().await;
    let forward = Forward::new(ForwardConfig::default());
    // The first request opens the connection; the second finds it closing and is sent
    // again over a new one (where it is that connection's first request).
    let (status, _, _) = get(&forward, &up, "/hang-up").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body, _) = get(&forward, &up, "/hang-up").await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"ok"[..]));
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);

    // A POST is not sent twice: the upstream may have acted on it.
    let post = request(&up, Method::POST, "/hang-up", empty());
    let err = forward.clone().oneshot(post).await.unwrap_err();
    assert_eq!(err.kind(), ForwardErrorKind::Upstream);
    assert_eq!(err.status(), StatusCode::BAD_GATEWAY);
    assert_eq!(seen.accepted.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn broken_answers_are_upstream_errors_and_the_process_goes_on() {
    let (up, _) = upstream().await;
    let forward = Forward::new(ForwardConfig::default());
    for path in ["/bad-length", "/not-http", "/huge-head"] {
        let err = forward
            .clone()
            .oneshot(request(&up, Method::GET, path, empty()))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ForwardErrorKind::Upstream, "{path}: {err}");
    }
    // Broken chunking shows as a body error after a good head.
    let res = forward
        .clone()
        .oneshot(request(&up, Method::GET, "/bad-chunk", empty()))
        .await
        .unwrap();
    assert!(res.into_body().collect().await.is_err());
    let (status, _, _) = get(&forward, &up, "/").await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn an_answer_before_the_whole_request_body_is_relayed() {
    // An upstream that refuses an upload after its head, without reading the body.
    let up = Backend::raw("refuser", |mut stream: TcpStream| async move {
        let mut buf = Vec::new();
        if read_until(&mut stream, &mut buf, b"\r\n\r\n").await.is_some() {
            let _ = stream
                .write_all(b"HTTP/1.1 413 Payload Too Large\r\ncontent-length: 3\r\nconnection: close\r\n\r\nbig")
                .await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap();
    let forward = Forward::new(ForwardConfig::default());
    // A body that never ends: only the early answer can end the exchange.
    let (tx, body) = open_body(Bytes::from(vec![0u8; 64 * 1024])).await;
    let req = request(&up, Method::POST, "/upload", body);
    let res = head_within(&forward, req, "answered while the body was still open").await;
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        &res.into_body().collect().await.unwrap().to_bytes()[..],
        b"big"
    );
    drop(tx);
}

type FrameSender = tokio::sync::mpsc::Sender<Result<http_body::Frame<Bytes>, std::io::Error>>;

/// A request body of `first`, then what is sent on the channel, until it is dropped.
async fn open_body(first: Bytes) -> (FrameSender, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel(4);
    tx.send(Ok(http_body::Frame::data(first))).await.unwrap();
    let frames =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|t| (t, rx)) });
    (tx, StreamBody::new(frames).boxed_unsync())
}

/// Sends `req`; its answer's head must come within five seconds.
async fn head_within(
    forward: &Forward<Body>,
    req: Request<Body>,
    why: &str,
) -> http::Response<towergate_proxy::UpstreamBody> {
    tokio::time::timeout(Duration::from_secs(5), forward.clone().oneshot(req))
        .await
        .expect(why)
        .unwrap()
}

#[tokio::test]
async fn an_upstream_answering_while_it_reads_the_body_gets_the_rest() {
    // Answers as soon as it has the request head and echoes the (chunked) body as it
    // arrives, chunk framing and all, until the last chunk.
    let up = Backend::raw("duplex", |mut stream: TcpStream| async move {
        let mut buf = Vec::new();
        let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        buf.drain(..end);
        let head = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n";
        if stream.write_all(head).await.is_err() {
            return;
        }
        let mut all = Vec::new();
        loop {
            if !buf.is_empty() {
                if stream.write_all(&buf).await.is_err() {
                    return;
                }
                all.append(&mut buf);
            }
            if all.ends_with(b"0\r\n\r\n") || read_more(&mut stream, &mut buf).await == 0 {
                return;
            }
        }
    })
    .await
    .unwrap();
    let forward = Forward::new(ForwardConfig::default());
    let (tx, body) = open_body(Bytes::from_static(b"first ")).await;
    let req = request(&up, Method::POST, "/echo", body);
    let res = head_within(
        &forward,
        req,
        "the head came before the whole body was sent",
    )
    .await;
    // Only now does the rest of the request body exist.
    tx.send(Ok(http_body::Frame::data(Bytes::from_static(b"second"))))
        .await
        .unwrap();
    drop(tx);
    let echoed = tokio::time::timeout(Duration::from_secs(5), res.into_body().collect())
        .await
        .expect("the rest of the request went out while the answer was read")
        .unwrap()
        .to_bytes();
    assert_eq!(&echoed[..], b"first second");
}

#[tokio::test]
async fn a_body_that_stalls_longer_than_the_timeout_fails_one_that_trickles_does_not() {
    // Sends the head and "a", then one more byte every 200 ms for `/trickle` (5 in all,
    // 800 ms, longer than the timeout but never a pause as long); `/stall` stops after "a".
    let up = Backend::raw("slow", |mut stream: TcpStream| async move {
        let mut buf = Vec::new();
        let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await else {
            return;
        };
        let stall = String::from_utf8_lossy(&buf[..end]).contains("/stall");
        if stream
            .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\na")
            .await
            .is_err()
        {
            return;
        }
        if stall {
            tokio::time::sleep(Duration::from_secs(30)).await;
            return;
        }
        for byte in [b"b", b"c", b"d", b"e"] {
            tokio::time::sleep(Duration::from_millis(200)).await;
            if stream.write_all(byte).await.is_err() {
                return;
            }
        }
    })
    .await
    .unwrap();
    let forward = Forward::new(ForwardConfig {
        response_timeout: Duration::from_millis(500),
        ..ForwardConfig::default()
    });

    let res = head_within(
        &forward,
        request(&up, Method::GET, "/trickle", empty()),
        "head",
    )
    .await;
    let body = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"abcde");

    let res = head_within(
        &forward,
        request(&up, Method::GET, "/stall", empty()),
        "head",
    )
    .await;
    let started = std::time::Instant::now();
    let mut body = res.into_body();
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert_eq!(&first[..], b"a");
    let err = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the stalled body fails within 5 s")
        .expect("an error, not the end")
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::TimedOut, "{err}");
    assert!(
        started.elapsed() >= Duration::from_millis(450),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn each_request_on_a_kept_alive_connection_gets_the_whole_timeout() {
    // Answers at once, except `/slow`: 600 ms late. With a 1 s timeout, a `/slow` sent
    // 500 ms after a first request on the same connection is in time (its deadline is
    // 1.5 s, not the first request's 1 s); a `/never` fails after the timeout.
    let up = Backend::raw("late", |mut stream: TcpStream| async move {
        let mut buf = Vec::new();
        while let Some(end) = read_until(&mut stream, &mut buf, b"\r\n\r\n").await {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end);
            if head.contains("/never") {
                tokio::time::sleep(Duration::from_secs(30)).await;
                return;
            }
            if head.contains("/slow") {
                tokio::time::sleep(Duration::from_millis(600)).await;
            }
            let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
            if stream.write_all(answer).await.is_err() {
                return;
            }
        }
    })
    .await
    .unwrap();
    let forward = Forward::new(ForwardConfig {
        response_timeout: Duration::from_secs(1),
        ..ForwardConfig::default()
    });
    assert_eq!(get(&forward, &up, "/first").await.0, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(get(&forward, &up, "/slow").await.0, StatusCode::OK);

    let started = std::time::Instant::now();
    let err = forward
        .clone()
        .oneshot(request(&up, Method::GET, "/never", empty()))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ForwardErrorKind::Timeout, "{err}");
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(950) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}
