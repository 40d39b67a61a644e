//! Request limits and the server signature, end to end: the real gateway on a loopback port,
//! a real backend behind it, requests written byte for byte.
//!
//! The article's limits: LimitRequestBody 102400, LimitRequestFields 40,
//! LimitRequestFieldsize 1000, LimitRequestLine 1000, SecServerSignature your_hostname.com.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::{Backend, route, server_section, start_gateway};
use http::Response;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use towergate_testkit::client::{raw, raw_status};

const LIMITS: &str = "[limits]\nbody = 102400\nfields = 40\nfield_size = 1000\nline = 1000\n";
const SIGNATURE: &str = "your_hostname.com";
/// What the backend says about itself, which must not reach clients.
const BACKEND_SERVER: &str = "Apache/2.2.3 (CentOS)";

/// What the upload backend saw.
#[derive(Default)]
struct Seen {
    /// Body bytes received, over all requests.
    bytes: AtomicU64,
    /// Requests whose body arrived complete.
    complete: AtomicUsize,
    /// Requests whose body broke off (the gateway aborted them).
    broken: AtomicUsize,
}

/// A backend that reads every body frame by frame, counting the bytes as they arrive, and
/// answers with the count and a `Server` header of its own.
async fn upload_backend() -> (Backend, Arc<Seen>) {
    let seen = Arc::new(Seen::default());
    let counter = seen.clone();
    let backend = Backend::with_handler("uploads", move |req| {
        let seen = counter.clone();
        async move {
            let mut body = req.into_body();
            let mut received = 0;
            loop {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            received += data.len();
                            seen.bytes.fetch_add(data.len() as u64, Ordering::SeqCst);
                        }
                    }
                    Some(Err(_)) => {
                        seen.broken.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                    None => {
                        seen.complete.fetch_add(1, Ordering::SeqCst);
                        break;
                    }
                }
            }
            Response::builder()
                .header("server", BACKEND_SERVER)
                .body(Full::new(Bytes::from(format!("received {received}\n"))))
                .unwrap()
        }
    })
    .await
    .unwrap();
    (backend, seen)
}

/// The gateway with the article's limits and signature in front of the upload backend.
async fn gateway() -> (common::RunningGateway, Backend, Arc<Seen>) {
    let (backend, seen) = upload_backend().await;
    let config = format!(
        "{}{LIMITS}{}",
        server_section(&format!("signature = \"{SIGNATURE}\"")),
        route("/", &backend.url())
    );
    (start_gateway(&config).await, backend, seen)
}

/// A request head for `target` with `fields` header fields in all (`Host` and
/// `Connection: close` among them) and the given extra lines.
fn head(method: &str, target: &str, extra: &[String]) -> String {
    let mut head =
        format!("{method} {target} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n");
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head
}

/// A header value of an answer in raw text (case-insensitive name).
fn raw_header<'a>(answer: &'a str, name: &str) -> Option<&'a str> {
    let head = answer.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|line| {
        let (n, v) = line.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

async fn send(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    raw(addr, bytes).await.expect("the gateway answers")
}

#[tokio::test]
async fn request_line_of_exactly_the_limit_passes_and_one_byte_more_gets_414() {
    let (gw, backend, _) = gateway().await;
    // "GET " + target + " HTTP/1.1" is 13 bytes plus the target.
    let target = format!("/{}", "a".repeat(1000 - 13 - 1));
    assert_eq!(format!("GET {target} HTTP/1.1").len(), 1000);
    let answer = send(gw.addr(), head("GET", &target, &[]).as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(backend.requests(), 1);

    let answer = send(
        gw.addr(),
        head("GET", &format!("{target}b"), &[]).as_bytes(),
    )
    .await;
    assert_eq!(raw_status(&answer), 414, "{answer}");
    assert!(answer.ends_with("414 URI Too Long\n"), "{answer}");
    assert_eq!(raw_header(&answer, "server"), Some(SIGNATURE), "{answer}");
    assert_eq!(
        backend.requests(),
        1,
        "a refused request never reaches the backend"
    );
}

#[tokio::test]
async fn forty_fields_pass_and_forty_one_get_431() {
    let (gw, backend, _) = gateway().await;
    // Host and Connection are two of them.
    let fields = |n: usize| {
        (0..n - 2)
            .map(|i| format!("X-Field-{i}: {i}"))
            .collect::<Vec<_>>()
    };
    let answer = send(gw.addr(), head("GET", "/", &fields(40)).as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");

    let answer = send(gw.addr(), head("GET", "/", &fields(41)).as_bytes()).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    assert!(
        answer.ends_with("431 Request Header Fields Too Large\n"),
        "{answer}"
    );
    assert_eq!(raw_header(&answer, "server"), Some(SIGNATURE));
    // A repeated name counts once per field.
    let repeated = vec!["Accept: text/plain".to_owned(); 39];
    let answer = send(gw.addr(), head("GET", "/", &repeated).as_bytes()).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn a_1000_byte_field_passes_and_1001_bytes_get_431() {
    let (gw, backend, _) = gateway().await;
    // A field counts as `name: value`: "X-Long: " is 8 bytes.
    let field = |len: usize| vec![format!("X-Long: {}", "v".repeat(len - 8))];
    assert_eq!(field(1000)[0].len(), 1000);
    let answer = send(gw.addr(), head("GET", "/", &field(1000)).as_bytes()).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");

    let answer = send(gw.addr(), head("GET", "/", &field(1001)).as_bytes()).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    assert_eq!(raw_header(&answer, "server"), Some(SIGNATURE));
    assert_eq!(backend.requests(), 1);
}

#[tokio::test]
async fn heads_far_over_the_limits_are_refused_by_the_parser_with_the_same_statuses() {
    let (gw, backend, _) = gateway().await;
    // A head that never ends: once the server has buffered more than these limits allow
    // (about 45 KB), its parser refuses it, rather than waiting for the rest.
    let unfinished = format!(
        "GET / HTTP/1.1\r\nHost: front.test\r\nX-Huge: {}",
        "v".repeat(50_000)
    );
    let answer = send(gw.addr(), unfinished.as_bytes()).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    // More fields than the parser's table (100): the parser's own, empty 431.
    let many = (0..150).map(|i| format!("X-{i}: 1")).collect::<Vec<_>>();
    let answer = send(gw.addr(), head("GET", "/", &many).as_bytes()).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    assert_eq!(raw_header(&answer, "content-length"), Some("0"), "{answer}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn a_body_of_exactly_the_limit_passes_by_content_length_and_chunked() {
    let (gw, _backend, seen) = gateway().await;
    let body = vec![b'x'; 102_400];
    let mut request = head("POST", "/upload", &["Content-Length: 102400".to_owned()]).into_bytes();
    request.extend_from_slice(&body);
    let answer = send(gw.addr(), &request).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(answer.ends_with("received 102400\n"), "{answer}");

    let mut request = head(
        "POST",
        "/upload",
        &["Transfer-Encoding: chunked".to_owned()],
    )
    .into_bytes();
    for chunk in body.chunks(1000) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let answer = send(gw.addr(), &request).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(answer.ends_with("received 102400\n"), "{answer}");
    assert_eq!(seen.complete.load(Ordering::SeqCst), 2);
    assert_eq!(seen.bytes.load(Ordering::SeqCst), 2 * 102_400);
}

#[tokio::test]
async fn a_declared_body_one_byte_over_gets_413_before_it_is_sent() {
    let (gw, backend, _) = gateway().await;
    // Only the head is sent: the answer must come without the body.
    let request = head("POST", "/upload", &["Content-Length: 102401".to_owned()]);
    let answer = send(gw.addr(), request.as_bytes()).await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert!(answer.ends_with("413 Content Too Large\n"), "{answer}");
    assert_eq!(raw_header(&answer, "server"), Some(SIGNATURE), "{answer}");
    assert_eq!(backend.requests(), 0);

    // With the body behind the head, too.
    let mut request = request.into_bytes();
    request.extend_from_slice(&vec![b'x'; 102_401]);
    let answer = send(gw.addr(), &request).await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert_eq!(backend.requests(), 0);
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_at_the_limit_and_the_backend_gets_nothing_beyond_it() {
    let (gw, _backend, seen) = gateway().await;
    let mut stream = TcpStream::connect(gw.addr()).await.unwrap();
    let mut request = head(
        "POST",
        "/upload",
        &["Transfer-Encoding: chunked".to_owned()],
    )
    .into_bytes();
    for _ in 0..100 {
        request.extend_from_slice(b"400\r\n");
        request.extend_from_slice(&[b'x'; 1024]);
        request.extend_from_slice(b"\r\n");
    }
    stream.write_all(&request).await.unwrap();

    // The limit's worth streams through to the backend...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.bytes.load(Ordering::SeqCst) < 102_400 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend got {} bytes",
            seen.bytes.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...and one byte more ends it.
    stream.write_all(b"1\r\nx\r\n0\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(raw_status(&answer), 413, "{answer}");
    assert_eq!(raw_header(&answer, "server"), Some(SIGNATURE), "{answer}");

    // The backend's request was aborted with exactly the limit received.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.broken.load(Ordering::SeqCst) == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the backend's request was not aborted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(seen.bytes.load(Ordering::SeqCst), 102_400);
    assert_eq!(seen.complete.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_chunked_body_sent_at_once_one_byte_over_gets_413() {
    let (gw, _backend, seen) = gateway().await;
    let mut request = head(
        "POST",
        "/upload",
        &["Transfer-Encoding: chunked".to_owned()],
    )
    .into_bytes();
    request.extend_from_slice(format!("{:x}\r\n", 102_401).as_bytes());
    request.extend_from_slice(&vec![b'x'; 102_401]);
    request.extend_from_slice(b"\r\n0\r\n\r\n");
    let answer = send(gw.addr(), &request).await;
    assert_eq!(raw_status(&answer), 413, "{answer}");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(seen.bytes.load(Ordering::SeqCst) <= 102_400);
    assert_eq!(seen.complete.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn proxied_answers_carry_the_signature_instead_of_the_backends() {
    let (gw, _backend, _) = gateway().await;
    let res = towergate_testkit::client::get(gw.addr(), "/page").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("server"), Some(SIGNATURE));
    assert_eq!(res.headers.get_all("server").iter().count(), 1);
    // The gateway's own answers too: no route here gives 404.
    let (backend, _) = upload_backend().await;
    let config = format!(
        "{}{}",
        server_section(&format!("signature = \"{SIGNATURE}\"")),
        route("/only/", &backend.url())
    );
    let gw = start_gateway(&config).await;
    let res = towergate_testkit::client::get(gw.addr(), "/elsewhere").await;
    assert_eq!(res.status, 404);
    assert_eq!(res.header("server"), Some(SIGNATURE));
}

#[tokio::test]
async fn without_a_signature_no_server_header_leaks() {
    let (backend, _) = upload_backend().await;
    let gw = start_gateway(&format!(
        "{}{}",
        server_section(""),
        route("/", &backend.url())
    ))
    .await;
    let res = towergate_testkit::client::get(gw.addr(), "/page").await;
    assert_eq!(res.status, 200);
    assert_eq!(res.header("server"), None, "{:?}", res.headers);
}

#[tokio::test]
async fn a_bad_limits_section_is_a_config_error_naming_the_key() {
    let text = format!("{}[limits]\nline = 5\n", server_section(""));
    let err = towergate::Config::from_toml(&text, std::path::Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("limits.line = 5"), "{err}");
    let text = format!("{}[limits]\nbodysize = 5\n", server_section(""));
    let err = towergate::Config::from_toml(&text, std::path::Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `bodysize`"), "{err}");
    let text = server_section("signature = \"bad\\nvalue\"");
    let err = towergate::Config::from_toml(&text, std::path::Path::new("t.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("signature"), "{err}");
}

/// Writes `first`, waits, then writes `rest` (ignoring a connection the server closed in
/// between), and reads the answer until the server closes or goes quiet.
async fn send_in_two(addr: std::net::SocketAddr, first: &[u8], rest: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(first).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = stream.write_all(rest).await;
    let mut answer = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test]
async fn a_reload_moves_the_parser_ceilings_with_the_limits() {
    let (backend, _) = upload_backend().await;
    let config = |field_size: usize| {
        format!(
            "{}[limits]\nfields = 40\nfield_size = {field_size}\n{}",
            server_section(""),
            route("/", &backend.url())
        )
    };
    // A 60 KB field, its head sent in two parts so that the server holds an unfinished head.
    let request = head("GET", "/", &[format!("X-Big: {}", "v".repeat(60_000))]);
    let (first, rest) = request.as_bytes().split_at(55_000);

    // With field_size = 1000 (and line = 8190) the parser's buffer stops at about 52 KB: its
    // own, empty 431
    // before the head is complete (the layer's 431 would have a body).
    let gw = start_gateway(&config(1000)).await;
    let answer = send_in_two(gw.addr(), first, rest).await;
    assert_eq!(raw_status(&answer), 431, "{answer}");
    assert_eq!(raw_header(&answer, "content-length"), Some("0"), "{answer}");
    assert_eq!(backend.requests(), 0);

    // With field_size = 70000 it takes the whole head, on connections accepted from now on.
    let reloaded =
        towergate::Config::from_toml(&config(70_000), std::path::Path::new("t.toml")).unwrap();
    gw.reload(&reloaded).unwrap();
    let answer = send_in_two(gw.addr(), first, rest).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(backend.requests(), 1);
}
