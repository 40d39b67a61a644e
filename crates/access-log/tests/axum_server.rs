//! The layer in front of an axum router served by hyper on a loopback port, spoken to over
//! raw sockets: the byte counts match the bytes on the wire, escaping holds for what a
//! client can really send, and requests cut short are logged too.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, post};
use bytes::Bytes;
use http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::{Layer, ServiceBuilder, ServiceExt};
use towergate_access_log::{AccessLogLayer, LocalAddr, LogClientAddrLayer, LogFormat, LogWriter};
use towergate_client_addr::{ClientAddrLayer, PeerAddr};

struct Server {
    addr: SocketAddr,
    writer: LogWriter,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn lines(&self) -> Vec<String> {
        self.writer.flush().await.unwrap();
        std::fs::read_to_string(&self.path)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    /// Waits for `n` lines (a line is written when its response ends, which may be just
    /// after the client has read it).
    async fn wait_lines(&self, n: usize) -> Vec<String> {
        let start = std::time::Instant::now();
        loop {
            let lines = self.lines().await;
            if lines.len() >= n || start.elapsed() > Duration::from_secs(20) {
                return lines;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn app() -> Router {
    Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/{*rest}", get(|| async { "any\n" }))
        .route(
            "/upload",
            post(|body: Bytes| async move { format!("got {}\n", body.len()) }),
        )
        .route(
            "/stream",
            get(|| async {
                let chunks = (0..3).map(|i| Ok::<_, Infallible>(Bytes::from(vec![b'a' + i; 100])));
                Body::from_stream(futures_util::stream::iter(chunks))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late\n"
            }),
        )
        .route(
            "/client",
            get(|req: axum::extract::Request| async move {
                towergate_client_addr::client_ip(&req).unwrap().to_string()
            }),
        )
}

/// Serves `app` behind the access log (and, when `trusted` is given, the client-address
/// layer trusting it, with [`LogClientAddrLayer`] inside).
async fn start(format: &str, trusted: Option<&str>) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access_log");
    let writer = LogWriter::file(&path).unwrap();
    let format = LogFormat::from_name_or_format(format).unwrap();
    let client_addr = trusted.map(|net| {
        ClientAddrLayer::builder()
            .trusted_proxy(net.parse().unwrap())
            .build()
    });
    let service = ServiceBuilder::new()
        .layer(AccessLogLayer::new(format, writer.clone()).server_name("front.test"))
        .option_layer(client_addr)
        .layer(LogClientAddrLayer)
        .service(app());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, peer) = listener.accept().await.unwrap();
            let local = stream.local_addr().unwrap();
            let service = service.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |mut req: Request<Incoming>| {
                    req.extensions_mut().insert(PeerAddr(peer));
                    req.extensions_mut().insert(LocalAddr(local));
                    service.clone().oneshot(req)
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Server {
        addr,
        writer,
        path,
        _dir: dir,
    }
}

/// Sends `request` and reads one whole response (by `content-length` or chunked
/// framing); returns its bytes exactly as received.
async fn exchange(stream: &mut TcpStream, request: &[u8]) -> Vec<u8> {
    stream.write_all(request).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(len) = complete_len(&got) {
            assert_eq!(len, got.len(), "more than one response");
            return got;
        }
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("response in time")
            .unwrap();
        assert!(
            n > 0,
            "connection closed: {}",
            String::from_utf8_lossy(&got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

/// The length of the complete response at the start of `b`, if it is all there.
fn complete_len(b: &[u8]) -> Option<usize> {
    let head_end = b.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = String::from_utf8_lossy(&b[..head_end]).to_ascii_lowercase();
    if let Some(cl) = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
    {
        let len = head_end + cl.trim().parse::<usize>().unwrap();
        return (b.len() >= len).then_some(len);
    }
    assert!(head.contains("transfer-encoding: chunked"), "{head}");
    let mut i = head_end;
    loop {
        let line_end = b[i..].windows(2).position(|w| w == b"\r\n")? + i;
        let size =
            usize::from_str_radix(std::str::from_utf8(&b[i..line_end]).unwrap(), 16).unwrap();
        i = line_end + 2 + size + 2;
        if b.len() < i {
            return None;
        }
        if size == 0 {
            return Some(i);
        }
    }
}

#[tokio::test]
async fn byte_counts_are_the_bytes_on_the_wire() {
    let server = start(
        r#"%h %{c}a %A %{local}p %{remote}p "%r" %>s %b %B %I %O %S %m %U "%q" %H %v %V %p "%{User-Agent}i" "%{Content-Type}o" %D %{ms}T"#,
        None,
    )
    .await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let local_port = s.local_addr().unwrap().port();
    let req1 = b"GET /?lang=en HTTP/1.1\r\nhost: front.test:8080\r\nuser-agent: raw/1\r\n\r\n";
    let res1 = exchange(&mut s, req1).await;
    let req2 =
        b"POST /upload HTTP/1.1\r\nhost: front.test\r\ncontent-length: 11\r\n\r\nhello world";
    let res2 = exchange(&mut s, req2).await;
    let req3 = b"GET /stream HTTP/1.1\r\nhost: front.test\r\n\r\n";
    let res3 = exchange(&mut s, req3).await;
    assert!(String::from_utf8_lossy(&res3).contains("transfer-encoding: chunked"));
    let req4 = b"HEAD / HTTP/1.1\r\nhost: front.test\r\n\r\n";
    let res4 = {
        s.write_all(req4).await.unwrap();
        let mut got = Vec::new();
        let mut buf = [0u8; 1024];
        while !got.ends_with(b"\r\n\r\n") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0);
            got.extend_from_slice(&buf[..n]);
        }
        got
    };
    drop(s);

    let lines = server.wait_lines(4).await;
    assert_eq!(lines.len(), 4, "{lines:#?}");
    let f: Vec<Vec<&str>> = lines.iter().map(|l| l.split(' ').collect()).collect();
    let port = server.addr.port().to_string();
    let client_port = local_port.to_string();

    // GET /?lang=en
    let l = &f[0];
    assert_eq!(
        &l[..5],
        [
            "127.0.0.1",
            "127.0.0.1",
            "127.0.0.1",
            port.as_str(),
            client_port.as_str()
        ]
    );
    assert_eq!(&l[5..8], ["\"GET", "/?lang=en", "HTTP/1.1\""]);
    assert_eq!(&l[8..10], ["200", "6"], "{}", lines[0]);
    assert_eq!(l[10], "6");
    assert_eq!(l[11], req1.len().to_string(), "%I");
    assert_eq!(
        l[12],
        res1.len().to_string(),
        "%O: {}",
        String::from_utf8_lossy(&res1)
    );
    assert_eq!(l[13], (req1.len() + res1.len()).to_string(), "%S");
    assert_eq!(
        &l[14..19],
        ["GET", "/", "\"?lang=en\"", "HTTP/1.1", "front.test"]
    );
    assert_eq!(&l[19..22], ["front.test", "8080", "\"raw/1\""]);
    assert_eq!(l[22], "\"text/plain\"", "content-type without its charset");
    assert!(l[23].parse::<u64>().is_ok() && l[24].parse::<u64>().is_ok());

    // POST with a body: %I counts it, the path has no query.
    let l = &f[1];
    assert_eq!(&l[5..10], ["\"POST", "/upload", "HTTP/1.1\"", "200", "7"]);
    assert_eq!(l[11], req2.len().to_string(), "%I");
    assert_eq!(l[12], res2.len().to_string(), "%O");
    assert_eq!(l[16], "\"\"", "no query");
    assert_eq!(l[20], port, "%p: no port in Host, the local one");
    assert_eq!(l[21], "\"-\"", "no user-agent");

    // A chunked answer: %O includes the chunk framing as sent.
    let l = &f[2];
    assert_eq!(&l[8..11], ["200", "300", "300"]);
    assert_eq!(
        l[12],
        res3.len().to_string(),
        "%O: {}",
        String::from_utf8_lossy(&res3)
    );

    // HEAD: no body sent, `%b` is `-`.
    let l = &f[3];
    assert_eq!(&l[8..11], ["200", "-", "0"]);
    assert_eq!(
        l[12],
        res4.len().to_string(),
        "%O: {}",
        String::from_utf8_lossy(&res4)
    );
}

#[tokio::test]
async fn what_a_client_sends_cannot_forge_a_line() {
    let server = start("combined", None).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    // A quote and a backslash in the target (hyper refuses control characters there), a
    // quote, a tab and a non-ASCII byte in the user agent, a fake field in the referer.
    let req: &[u8] = b"GET /a\"b\\c HTTP/1.1\r\nhost: front.test\r\n\
        user-agent: x\" 200 1 \"-\" \"\t\xff\r\n\
        referer: \"\\\" \r\n\r\n";
    let res = exchange(&mut s, req).await;
    assert!(
        res.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&res)
    );
    let lines = server.wait_lines(1).await;
    assert_eq!(lines.len(), 1, "{lines:#?}");
    let line = &lines[0];
    assert!(
        line.ends_with(r#""GET /a\"b\\c HTTP/1.1" 200 4 "\"\\\"" "x\" 200 1 \"-\" \"\t\xff""#),
        "{line}"
    );
    // The combined regex (quoted fields with escapes) reads exactly seven fields.
    let re = regex::Regex::new(
        r#"^(\S+) (\S+) (\S+) \[([^\]]+)\] "((?:[^"\\]|\\.)*)" (\d{3}) (\S+) "((?:[^"\\]|\\.)*)" "((?:[^"\\]|\\.)*)"$"#,
    )
    .unwrap();
    let caps = re.captures(line).unwrap_or_else(|| panic!("{line}"));
    assert_eq!(&caps[5], r#"GET /a\"b\\c HTTP/1.1"#);
    assert_eq!(&caps[6], "200");
}

#[tokio::test]
async fn requests_cut_short_are_logged() {
    let server = start(r#""%r" %>s %b"#, None).await;
    // The client leaves before the answer begins.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(b"GET /slow HTTP/1.1\r\nhost: front.test\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    drop(s);
    let lines = server.wait_lines(1).await;
    assert_eq!(lines, [r#""GET /slow HTTP/1.1" 499 -"#]);
}

#[tokio::test]
async fn the_client_behind_a_trusted_proxy() {
    let server = start("%h %{c}a %>s", Some("127.0.0.1/32")).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let res = exchange(
        &mut s,
        b"GET /client HTTP/1.1\r\nhost: front.test\r\nx-forwarded-for: 203.0.113.9\r\n\r\n",
    )
    .await;
    assert!(res.ends_with(b"203.0.113.9"));
    exchange(&mut s, b"GET /client HTTP/1.1\r\nhost: front.test\r\n\r\n").await;
    let lines = server.wait_lines(2).await;
    assert_eq!(
        lines,
        ["203.0.113.9 127.0.0.1 200", "127.0.0.1 127.0.0.1 200"]
    );
}

#[tokio::test]
async fn a_disabled_layer_keeps_the_types_and_logs_nothing() {
    let service = AccessLogLayer::disabled().layer(app());
    let res = service
        .oneshot(Request::get("/").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
