//! PROXY protocol listeners end to end: the real gateway on loopback, the test playing the
//! L4 balancer (sending the header from 127.0.0.1, a trusted source) and outsiders
//! (127.0.0.2, untrusted). The client address in the header is the one the ACL, the
//! flood blocker, the access log and the backend's `X-Forwarded-For` see; everything
//! else is refused by closing the connection without an answer.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::{Backend, RunningGateway, route, server_section, start_gateway};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use towergate_testkit::client::{connect_from, raw_status};

const BALANCER: &str = "127.0.0.1";
const OUTSIDER: &str = "127.0.0.2";
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A version 2 `PROXY` header for a TCP connection from `client` to `server`.
fn v2(client: SocketAddr, server: SocketAddr) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    let (family, addrs) = match (client, server) {
        (SocketAddr::V4(c), SocketAddr::V4(s)) => {
            let mut a = c.ip().octets().to_vec();
            a.extend(s.ip().octets());
            (0x11, a)
        }
        (SocketAddr::V6(c), SocketAddr::V6(s)) => {
            let mut a = c.ip().octets().to_vec();
            a.extend(s.ip().octets());
            (0x21, a)
        }
        _ => panic!("one family"),
    };
    h.extend([0x21, family]);
    h.extend(((addrs.len() + 4) as u16).to_be_bytes());
    h.extend(addrs);
    h.extend(client.port().to_be_bytes());
    h.extend(server.port().to_be_bytes());
    // A TLV (PP2_TYPE_NOOP), as balancers add them: skipped.
    h.extend([0x04, 0x00, 0x02, 0xab, 0xcd]);
    let len = (h.len() - 16) as u16;
    h[14..16].copy_from_slice(&len.to_be_bytes());
    h
}

/// A version 2 `LOCAL` header (a balancer's health check): the socket peer stays.
fn v2_local() -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.extend([0x20, 0x00, 0x00, 0x00]);
    h
}

fn client(s: &str) -> SocketAddr {
    format!("{s}:51000").parse().unwrap()
}

/// What came back on a connection.
#[derive(Debug, PartialEq)]
enum Answer {
    /// The server closed (or reset) the connection without sending a byte.
    Closed,
    /// The bytes the server sent, until it closed or went quiet.
    Text(String),
}

impl Answer {
    fn status(&self) -> u16 {
        match self {
            Answer::Closed => 0,
            Answer::Text(t) => raw_status(t),
        }
    }

    fn text(&self) -> &str {
        match self {
            Answer::Closed => "",
            Answer::Text(t) => t,
        }
    }
}

/// Reads until the server closes, resets, or sends nothing more for a while.
async fn read_answer(stream: &mut TcpStream, quiet: Duration) -> Answer {
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(quiet, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) if out.is_empty() => panic!("no answer and the connection still open"),
            Err(_) => break,
        }
    }
    if out.is_empty() {
        Answer::Closed
    } else {
        Answer::Text(String::from_utf8_lossy(&out).into_owned())
    }
}

/// Connects from `from`, writes `header` then a `GET path` (closing), and reads the answer.
async fn send(gw: SocketAddr, from: &str, header: &[u8], path: &str) -> Answer {
    let mut stream = connect_from(ip(from), gw).await.unwrap();
    let mut bytes = header.to_vec();
    bytes.extend(
        format!("GET {path} HTTP/1.1\r\nHost: front.test\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    // The gateway may close (and reset) a refused connection before all is written.
    let _ = stream.write_all(&bytes).await;
    read_answer(&mut stream, Duration::from_secs(10)).await
}

/// [`send`] from the trusted balancer, with a v2 header naming `client` (port 51000).
async fn send_for(gw: SocketAddr, client_ip: &str, path: &str) -> Answer {
    send(gw, BALANCER, &v2(client(client_ip), gw), path).await
}

fn echo_field(answer: &Answer, key: &str) -> Option<String> {
    let prefix = format!("{key}: ");
    answer
        .text()
        .lines()
        .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
}

const PROXIED: &str = "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1/32\", \"10.0.0.0/8\"]\nheader_read_timeout = \"1s\"\n";

async fn gateway(extra: &str) -> (RunningGateway, Backend) {
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&format!(
        "{}{}{extra}",
        server_section(PROXIED),
        route("/", &web.url())
    ))
    .await;
    (gw, web)
}

fn stats(gw: &RunningGateway) -> towergate_proxy_protocol::ProxyProtocolStats {
    gw.proxy_protocol_stats().0.expect("on for [server]")
}

#[tokio::test]
async fn the_v2_client_is_the_client_for_acl_evasive_access_log_and_backend() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access_log");
    let (gw, web) = gateway(&format!(
        "[acl]\norder = \"deny,allow\"\ndeny = [\"198.51.100.66\"]\n\
         [evasive]\npage_count = 2\npage_interval = \"10s\"\nsite_count = 100\nsite_interval = \"10s\"\nblocking_period = \"60s\"\n\
         [access_log]\npath = \"{}\"\nformat = \"%h %>s %U\"\n",
        log.display()
    ))
    .await;
    let addr = gw.addr();

    // The backend sees the client in X-Forwarded-For; the access log names it.
    let answer = send_for(addr, "203.0.113.7", "/index.html").await;
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(
        echo_field(&answer, "x-forwarded-for").as_deref(),
        Some("203.0.113.7")
    );

    // The ACL refuses by the header's address, not the balancer's.
    let answer = send_for(addr, "198.51.100.66", "/").await;
    assert_eq!(answer.status(), 403, "{answer:?}");
    let answer = send_for(addr, "198.51.100.67", "/").await;
    assert_eq!(answer.status(), 200, "{answer:?}");

    // The flood blocker counts 203.0.113.7 (its second and third request for one URI)...
    let answer = send_for(addr, "203.0.113.7", "/index.html").await;
    assert_eq!(answer.status(), 200, "{answer:?}");
    let answer = send_for(addr, "203.0.113.7", "/index.html").await;
    assert_eq!(answer.status(), 403, "blocked: {answer:?}");
    // ... while the balancer's own address (a LOCAL header keeps the socket peer) and
    // other clients behind it are served.
    for _ in 0..2 {
        let answer = send(addr, BALANCER, &v2_local(), "/index.html").await;
        assert_eq!(answer.status(), 200, "{answer:?}");
        assert_eq!(
            echo_field(&answer, "x-forwarded-for").as_deref(),
            Some("127.0.0.1")
        );
    }
    let answer = send_for(addr, "203.0.113.8", "/index.html").await;
    assert_eq!(answer.status(), 200, "{answer:?}");
    let blocked: Vec<String> = gw
        .status()
        .evasive
        .as_ref()
        .unwrap()
        .blocks()
        .iter()
        .map(|b| b.client.to_string())
        .collect();
    assert_eq!(blocked, ["203.0.113.7/32"]);
    assert_eq!(web.requests(), 6, "the ACL and the blocker refused two");

    // The access log's %h is the header's client on every line.
    let writer = gw.access_log().unwrap();
    let lines = loop {
        writer.flush().await.unwrap();
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 8 {
            break text;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    // Worker threads write their lines apart: compared in any order.
    let mut lines: Vec<&str> = lines.lines().collect();
    lines.sort_unstable();
    let mut expected = [
        "203.0.113.7 200 /index.html",
        "198.51.100.66 403 /",
        "198.51.100.67 200 /",
        "203.0.113.7 200 /index.html",
        "203.0.113.7 403 /index.html",
        "127.0.0.1 200 /index.html",
        "127.0.0.1 200 /index.html",
        "203.0.113.8 200 /index.html",
    ];
    expected.sort_unstable();
    assert_eq!(lines, expected);
    let s = stats(&gw);
    assert_eq!((s.proxied, s.local, s.refused()), (6, 2, 0), "{s:?}");
}

#[tokio::test]
async fn v1_headers_work_too_and_ipv6_clients_keep_their_address() {
    let (gw, web) = gateway("").await;
    let addr = gw.addr();
    let answer = send(
        addr,
        BALANCER,
        b"PROXY TCP4 198.51.100.23 10.0.0.1 40000 80\r\n",
        "/v1",
    )
    .await;
    assert_eq!(answer.status(), 200, "{answer:?}");
    assert_eq!(
        echo_field(&answer, "x-forwarded-for").as_deref(),
        Some("198.51.100.23")
    );
    let answer = send(
        addr,
        BALANCER,
        b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 443\r\n",
        "/v1",
    )
    .await;
    assert_eq!(
        echo_field(&answer, "x-forwarded-for").as_deref(),
        Some("2001:db8::7")
    );
    let six = v2(
        "[2001:db8::9]:40000".parse().unwrap(),
        "[2001:db8::1]:80".parse().unwrap(),
    );
    let answer = send(addr, BALANCER, &six, "/v2").await;
    assert_eq!(
        echo_field(&answer, "x-forwarded-for").as_deref(),
        Some("2001:db8::9")
    );
    // UNKNOWN: the socket peer is the client.
    let answer = send(addr, BALANCER, b"PROXY UNKNOWN\r\n", "/v1").await;
    assert_eq!(
        echo_field(&answer, "x-forwarded-for").as_deref(),
        Some("127.0.0.1")
    );
    assert_eq!(web.requests(), 4);
    let s = stats(&gw);
    assert_eq!((s.proxied, s.local), (3, 1), "{s:?}");
}

#[tokio::test]
async fn keep_alive_requests_after_the_header_keep_its_client() {
    let (gw, _web) = gateway("").await;
    let mut stream = connect_from(ip(BALANCER), gw.addr()).await.unwrap();
    stream
        .write_all(&v2(client("203.0.113.9"), gw.addr()))
        .await
        .unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    for path in ["/a", "/b", "/c"] {
        let req = Request::get(path)
            .header("host", "front.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let res = sender.send_request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert!(
            String::from_utf8_lossy(&body).contains("x-forwarded-for: 203.0.113.9\n"),
            "{path}"
        );
    }
    assert_eq!(stats(&gw).proxied, 1, "one header per connection");
}

#[tokio::test]
async fn a_header_from_an_untrusted_source_is_refused() {
    let (gw, web) = gateway("").await;
    let answer = send(
        gw.addr(),
        OUTSIDER,
        &v2(client("203.0.113.7"), gw.addr()),
        "/",
    )
    .await;
    assert_eq!(answer, Answer::Closed);
    // Without a header either.
    assert_eq!(send(gw.addr(), OUTSIDER, b"", "/").await, Answer::Closed);
    assert_eq!(web.requests(), 0);
    let s = stats(&gw);
    assert_eq!((s.untrusted, s.proxied), (2, 0), "{s:?}");
    // The balancer is still served.
    let answer = send_for(gw.addr(), "203.0.113.7", "/").await;
    assert_eq!(answer.status(), 200);
}

#[tokio::test]
async fn a_connection_without_a_header_is_refused() {
    let (gw, web) = gateway("").await;
    assert_eq!(send(gw.addr(), BALANCER, b"", "/").await, Answer::Closed);
    assert_eq!(web.requests(), 0);
    assert_eq!(stats(&gw).invalid, 1);
}

#[tokio::test]
async fn garbage_and_oversized_headers_are_refused() {
    let (gw, web) = gateway("").await;
    let mut oversized_v2 = V2_SIGNATURE.to_vec();
    oversized_v2.extend([0x21, 0x11]);
    oversized_v2.extend(60_000u16.to_be_bytes());
    oversized_v2.extend(vec![0u8; 4096]);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "bad address",
            b"PROXY TCP4 203.0.113.300 10.0.0.1 1 2\r\n".to_vec(),
        ),
        (
            "bad protocol",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 1 2\r\n".to_vec(),
        ),
        ("v1 over 107 bytes", {
            let mut h = b"PROXY TCP4 ".to_vec();
            h.extend([b'1'; 200]);
            h
        }),
        ("v2 over the bound", oversized_v2),
        ("v2 bad version", {
            let mut h = v2(client("203.0.113.7"), gw.addr());
            h[12] = 0x31;
            h
        }),
        ("binary garbage", vec![0xff; 64]),
    ];
    for (what, header) in &cases {
        assert_eq!(
            send(gw.addr(), BALANCER, header, "/").await,
            Answer::Closed,
            "{what}"
        );
    }
    assert_eq!(web.requests(), 0);
    assert_eq!(stats(&gw).invalid, cases.len() as u64);
}

#[tokio::test]
async fn a_slow_header_times_out() {
    let (gw, web) = gateway("").await;
    let started = Instant::now();
    let mut stream = connect_from(ip(BALANCER), gw.addr()).await.unwrap();
    let header = v2(client("203.0.113.7"), gw.addr());
    stream.write_all(&header[..10]).await.unwrap();
    // header_read_timeout is 1 s: the gateway closes the connection; a generous wait.
    let answer = read_answer(&mut stream, Duration::from_secs(20)).await;
    assert_eq!(answer, Answer::Closed);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(stats(&gw).timed_out, 1);
    assert_eq!(web.requests(), 0);
}

#[tokio::test]
async fn the_header_precedes_the_tls_handshake() {
    let dir = tempfile::tempdir().unwrap();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(vec!["front.test".to_owned()]).unwrap();
    let (cert_path, key_path) = (dir.path().join("c.pem"), dir.path().join("c.key"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&format!(
        "[server]\nnames = [\"front.test\"]\n{}\
         [tls]\nlisten = [\"127.0.0.1:0\"]\nproxy_protocol = true\nproxy_protocol_from = [\"127.0.0.1\"]\n\
         [[tls.certificate]]\ncert = {:?}\nkey = {:?}\nnames = [\"front.test\"]\n",
        route("/", &web.url()),
        cert_path.display().to_string(),
        key_path.display().to_string(),
    ))
    .await;
    let addr = gw.tls_addrs()[0];
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let config = Arc::new(
        rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth(),
    );

    let mut tcp = connect_from(ip(BALANCER), addr).await.unwrap();
    tcp.write_all(&v2(client("203.0.113.7"), addr))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(config.clone())
        .connect("front.test".try_into().unwrap(), tcp)
        .await
        .expect("handshake after the header");
    let body = get_over(tls).await;
    assert!(body.contains("x-forwarded-for: 203.0.113.7\n"), "{body}");

    // A TLS client without the header is refused.
    let tcp = connect_from(ip(BALANCER), addr).await.unwrap();
    let refused = tokio_rustls::TlsConnector::from(config)
        .connect("front.test".try_into().unwrap(), tcp)
        .await;
    assert!(refused.is_err());
    let tls_stats = gw.proxy_protocol_stats().1.expect("on for [tls]");
    assert_eq!((tls_stats.proxied, tls_stats.invalid), (1, 1));
    assert!(gw.proxy_protocol_stats().0.is_none(), "off for [server]");
}

async fn get_over<I>(io: I) -> String
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get("/tls")
        .header("host", "front.test")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8_lossy(&body).into_owned()
}

#[tokio::test]
async fn counts_show_on_the_status_json_and_metrics() {
    let (gw, _web) = gateway("[admin]\nlisten = \"127.0.0.1:0\"\n").await;
    send_for(gw.addr(), "203.0.113.7", "/").await;
    send(gw.addr(), OUTSIDER, b"", "/").await;
    let json = gw.status().to_json();
    let pp = &json["proxy_protocol"][0];
    assert_eq!(pp["listeners"], "server");
    assert_eq!(pp["proxied"], 1);
    assert_eq!(pp["refused"]["untrusted"], 1);
    let metrics = gw.status().metrics_text();
    assert!(
        metrics.contains(
            "towergate_proxy_protocol_connections{listeners=\"server\",result=\"untrusted\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_reload_changes_the_trusted_networks_and_keeps_the_counts() {
    let (gw, web) = gateway("").await;
    let header = v2(client("203.0.113.7"), gw.addr());
    assert_eq!(
        send(gw.addr(), OUTSIDER, &header, "/").await,
        Answer::Closed
    );
    let text = format!(
        "{}{}",
        server_section(
            "proxy_protocol = true\nproxy_protocol_from = [\"127.0.0.0/29\"]\nheader_read_timeout = \"1s\"\n"
        ),
        route("/", &web.url())
    );
    let config = towergate::Config::from_toml(&text, std::path::Path::new("t.toml")).unwrap();
    gw.reload(&config).unwrap();
    let answer = send(gw.addr(), OUTSIDER, &header, "/").await;
    assert_eq!(answer.status(), 200, "trusted now: {answer:?}");
    let s = stats(&gw);
    assert_eq!((s.untrusted, s.proxied), (1, 1), "{s:?}");
}
