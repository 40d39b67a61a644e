//! Protocols end to end, over real loopback sockets: TLS termination with SNI, HTTP/2 over
//! TLS (ALPN) and cleartext (h2c), WebSocket tunnels, https upstreams, the redirect
//! listener and certificate reloads.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{Backend, server_section, start_gateway};
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;

const WAIT: Duration = Duration::from_secs(20);

// === certificates ===

/// A self-signed certificate for `names`, written as `stem.pem` / `stem.key` in `dir`.
struct TestCert {
    cert: PathBuf,
    key: PathBuf,
    der: CertificateDer<'static>,
}

fn self_signed(dir: &Path, stem: &str, names: &[&str]) -> TestCert {
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let rcgen::CertifiedKey { cert, signing_key } =
        rcgen::generate_simple_self_signed(names).unwrap();
    let (cert_path, key_path) = (
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
    );
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, signing_key.serialize_pem()).unwrap();
    TestCert {
        cert: cert_path,
        key: key_path,
        der: cert.der().clone(),
    }
}

/// A test CA and a server certificate it issued for `names`.
struct TestCa {
    ca_pem: PathBuf,
    server_chain: Vec<CertificateDer<'static>>,
    server_key: rustls::pki_types::PrivateKeyDer<'static>,
}

fn test_ca(dir: &Path, names: &[&str]) -> TestCa {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "towergate test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let server_key = rcgen::KeyPair::generate().unwrap();
    let server = rcgen::CertificateParams::new(names)
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let ca_pem = dir.join("ca.pem");
    std::fs::write(&ca_pem, ca.pem()).unwrap();
    TestCa {
        ca_pem,
        server_chain: vec![server.der().clone()],
        server_key: rustls::pki_types::PrivateKeyDer::Pkcs8(server_key.serialize_der().into()),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client trusting `roots`, offering `alpn`.
fn client_config(roots: &[&CertificateDer<'static>], alpn: &[&[u8]]) -> rustls::ClientConfig {
    let mut store = rustls::RootCertStore::empty();
    for r in roots {
        store.add((*r).clone()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

async fn tls_connect(
    addr: SocketAddr,
    name: &str,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(name.to_owned()).unwrap(), tcp)
        .await
}

fn tls_section(certs: &[(&TestCert, &[&str], bool)], extra: &str) -> String {
    let mut out = format!("[tls]\nlisten = [\"127.0.0.1:0\"]\n{extra}\n");
    for (c, names, default) in certs {
        let names: Vec<String> = names.iter().map(|n| format!("{n:?}")).collect();
        out.push_str(&format!(
            "[[tls.certificate]]\ncert = {:?}\nkey = {:?}\nnames = [{}]\ndefault = {default}\n",
            c.cert.display().to_string(),
            c.key.display().to_string(),
            names.join(", ")
        ));
    }
    out
}

// === backends and clients ===

/// A backend answering with what it saw: its name, the HTTP version, `Host`,
/// `X-Forwarded-Proto` and the path; `/.../redirect` answers 302 into itself.
async fn reporting_backend(name: &'static str) -> Backend {
    let addr = Arc::new(Mutex::new(String::new()));
    let own = addr.clone();
    let backend = Backend::with_handler(name, move |req: Request<Incoming>| {
        let own = own.lock().unwrap().clone();
        async move {
            let h = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let text = format!(
                "backend: {name}\nversion: {:?}\nhost: {}\nproto: {}\npath: {}\n",
                req.version(),
                h("host"),
                h("x-forwarded-proto"),
                req.uri()
            );
            let mut res = Response::builder().header("x-backend", name);
            if req.uri().path().ends_with("/redirect") {
                res = res.status(302).header("location", format!("{own}/a/login"));
            }
            res.body(Full::new(Bytes::from(text))).unwrap()
        }
    })
    .await
    .unwrap();
    *addr.lock().unwrap() = backend.url();
    backend
}

/// A body-less answer, read to the end.
struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn line(&self, key: &str) -> &str {
        let prefix = format!("{key}: ");
        self.body
            .lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .unwrap_or_else(|| panic!("no `{key}` in {:?}", self.body))
    }
}

/// Sends `uris` (absolute, for `:scheme` and `:authority`) as HTTP/2 GETs on one connection.
async fn h2_get<I>(io: I, uris: &[String]) -> Vec<Answer>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let reqs = uris
        .iter()
        .map(|uri| Request::get(uri.as_str()).body(Full::default()).unwrap())
        .collect();
    h2_send(io, reqs).await
}

/// Sends `reqs` over one HTTP/2 connection, one after the other.
async fn h2_send<I>(io: I, reqs: Vec<Request<Full<Bytes>>>) -> Vec<Answer>
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(io))
            .await
            .expect("HTTP/2 handshake");
    tokio::spawn(conn);
    let mut out = Vec::new();
    for req in reqs {
        let res = tokio::time::timeout(WAIT, sender.send_request(req))
            .await
            .expect("in time")
            .expect("an HTTP/2 answer");
        assert_eq!(res.version(), http::Version::HTTP_2);
        let (parts, body) = res.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        out.push(Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    out
}

/// Sends a raw HTTP/1.1 GET with `host` over `io` and reads the answer.
async fn h1_get<I>(io: I, host: &str, path: &str) -> Answer
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let res = sender.send_request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

// === TLS termination ===

#[tokio::test]
async fn sni_picks_the_certificate_and_alpn_offers_h2() {
    let dir = tempfile::tempdir().unwrap();
    let a = self_signed(dir.path(), "a", &["a.test"]);
    let b = self_signed(dir.path(), "b", &["b.test", "*.wild.test"]);
    let backend = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&format!(
        "{}{}{}",
        server_section(""),
        tls_section(
            &[
                (&a, &["a.test"], false),
                (&b, &["b.test", "*.wild.test"], true)
            ],
            ""
        ),
        common::route("/", &backend.url())
    ))
    .await;
    let addr = gw.tls_addrs()[0];
    let both = [&a.der, &b.der];

    // The client verifies the served certificate for the name it asked for.
    for (name, expect) in [
        ("a.test", &a.der),
        ("b.test", &b.der),
        ("x.wild.test", &b.der),
    ] {
        let tls = tls_connect(addr, name, client_config(&both, &[b"h2", b"http/1.1"]))
            .await
            .unwrap_or_else(|e| panic!("handshake for {name}: {e}"));
        let (_, conn) = tls.get_ref();
        assert_eq!(&conn.peer_certificates().unwrap()[0], expect, "{name}");
        assert_eq!(conn.alpn_protocol(), Some(&b"h2"[..]));
    }

    // An unknown name gets the default certificate (b), which the client refuses for it.
    let err = tls_connect(addr, "c.test", client_config(&both, &[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // No SNI at all: the default certificate.
    let mut no_sni = client_config(&both, &[]);
    no_sni.enable_sni = false;
    let tls = tls_connect(addr, "b.test", no_sni).await.unwrap();
    assert_eq!(&tls.get_ref().1.peer_certificates().unwrap()[0], &b.der);

    // TLS 1.2 too, and HTTP/1.1 by ALPN.
    let mut v12 = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates({
            let mut r = rustls::RootCertStore::empty();
            r.add(a.der.clone()).unwrap();
            r
        })
        .with_no_client_auth();
    v12.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tls = tls_connect(addr, "a.test", v12).await.unwrap();
    assert_eq!(
        tls.get_ref().1.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_2)
    );
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let answer = h1_get(tls, "a.test", "/hello").await;
    assert_eq!(answer.status, 200);
    assert_eq!(answer.line("backend"), "web");
}

#[tokio::test]
async fn bad_certificates_are_config_errors_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let a = self_signed(dir.path(), "a", &["a.test"]);
    let b = self_signed(dir.path(), "b", &["b.test"]);
    let parse = |tls: String| {
        towergate::Config::from_toml(&format!("{}{tls}", server_section("")), Path::new("t.toml"))
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    let mismatched = TestCert {
        cert: a.cert.clone(),
        key: b.key.clone(),
        der: a.der.clone(),
    };
    let err = parse(tls_section(&[(&mismatched, &["a.test"], false)], ""));
    assert!(
        err.contains("does not belong") && err.contains("b.key") && err.contains("a.pem"),
        "{err}"
    );
    let err = parse(tls_section(&[(&a, &["b.test"], false)], ""));
    assert!(err.contains("a.pem") && err.contains("`b.test`"), "{err}");
    let missing = TestCert {
        cert: dir.path().join("nope.pem"),
        key: a.key.clone(),
        der: a.der.clone(),
    };
    let err = parse(tls_section(&[(&missing, &["a.test"], false)], ""));
    assert!(
        err.contains("tls.certificate.cert") && err.contains("nope.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn certificates_are_reloaded_with_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let old = self_signed(dir.path(), "old", &["a.test"]);
    let new = self_signed(dir.path(), "new", &["a.test"]);
    let backend = Backend::echo("web").await.unwrap();
    let config = |c: &TestCert| {
        format!(
            "{}{}{}",
            server_section(""),
            tls_section(&[(c, &["a.test"], false)], ""),
            common::route("/", &backend.url())
        )
    };
    let gw = start_gateway(&config(&old)).await;
    let addr = gw.tls_addrs()[0];
    let both = [&old.der, &new.der];
    let served = || async {
        let tls = tls_connect(addr, "a.test", client_config(&both, &[]))
            .await
            .unwrap();
        tls.get_ref().1.peer_certificates().unwrap()[0].clone()
    };
    assert_eq!(served().await, old.der);
    // Same listeners (the test's port 0 stays port 0), new files.
    let next = towergate::Config::from_toml(&config(&new), Path::new("test.toml")).unwrap();
    gw.reload(&next).unwrap();
    assert_eq!(served().await, new.der);
    // A broken file refuses the reload; the certificate in use stays.
    std::fs::write(&old.key, "garbage").unwrap();
    let broken = towergate::Config {
        tls: towergate::Config::from_toml(&config(&new), Path::new("test.toml"))
            .unwrap()
            .tls
            .map(|mut t| {
                t.certificates[0].key = old.key.clone();
                t
            }),
        ..next
    };
    assert!(gw.reload(&broken).is_err());
    assert_eq!(served().await, new.der);
}

#[tokio::test]
async fn redirect_listener_sends_clients_to_https() {
    let dir = tempfile::tempdir().unwrap();
    let a = self_signed(dir.path(), "a", &["front.test"]);
    let gw = start_gateway(&format!(
        "{}{}",
        server_section(""),
        tls_section(
            &[(&a, &["front.test"], false)],
            "redirect_http = [\"127.0.0.1:0\"]"
        ),
    ))
    .await;
    let https_port = gw.tls_addrs()[0].port();
    let tcp = TcpStream::connect(gw.redirect_addrs()[0]).await.unwrap();
    let answer = h1_get(tcp, "front.test:80", "/news_rss/today?x=1").await;
    assert_eq!(answer.status, 301);
    assert_eq!(
        answer.headers["location"],
        format!("https://front.test:{https_port}/news_rss/today?x=1").as_str()
    );
}

// === HTTP/2 ===

#[tokio::test]
async fn http2_over_tls_and_h2c_routes_like_http11() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "front", &["front.test"]);
    let a = reporting_backend("a").await;
    let web = reporting_backend("web").await;
    let gw = start_gateway(&format!(
        "{}{}{}{}",
        server_section(""),
        tls_section(&[(&cert, &["front.test"], false)], ""),
        common::route("/a/", &format!("{}/a/", a.url())),
        common::route("/", &web.url()),
    ))
    .await;
    let paths = ["/a/x?q=1", "/other", "/a/redirect"];

    let h11 = {
        let mut out = Vec::new();
        for p in paths {
            out.push(
                h1_get(
                    TcpStream::connect(gw.addr()).await.unwrap(),
                    "front.test",
                    p,
                )
                .await,
            );
        }
        out
    };
    let h2c = h2_get(
        TcpStream::connect(gw.addr()).await.unwrap(),
        &paths.map(|p| format!("http://front.test{p}")),
    )
    .await;
    let tls = tls_connect(
        gw.tls_addrs()[0],
        "front.test",
        client_config(&[&cert.der], &[b"h2"]),
    )
    .await
    .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    let h2 = h2_get(tls, &paths.map(|p| format!("https://front.test{p}"))).await;

    for (answers, proto) in [(&h11, "http"), (&h2c, "http"), (&h2, "https")] {
        let (x, other, redirect) = (&answers[0], &answers[1], &answers[2]);
        assert_eq!(x.status, 200);
        assert_eq!(x.line("backend"), "a");
        assert_eq!(x.line("path"), "/a/x?q=1");
        assert_eq!(other.line("backend"), "web");
        assert_eq!(other.line("path"), "/other");
        for answer in [x, other] {
            // Upstreams always get HTTP/1.1 with the client's host and the front's scheme.
            assert_eq!(answer.line("version"), "HTTP/1.1");
            assert_eq!(answer.line("host"), "front.test");
            assert_eq!(answer.line("proto"), proto);
        }
        assert_eq!(redirect.status, 302);
        assert_eq!(
            redirect.headers["location"],
            format!("{proto}://front.test/a/login").as_str(),
            "ProxyPassReverse keeps the front's scheme"
        );
    }
}

/// A gateway with a header-read timeout of one second in front of a reporting backend
/// (kept alive with it).
async fn one_second_to_ask() -> (common::RunningGateway, Backend) {
    let web = reporting_backend("web").await;
    let gw = start_gateway(&format!(
        "{}{}",
        server_section("header_read_timeout = \"1s\"\n"),
        common::route("/", &web.url()),
    ))
    .await;
    (gw, web)
}

/// Cleartext connections are HTTP/2 when their first bytes are the preface's, HTTP/1.1
/// otherwise, however the first bytes are split; one that sends nothing is closed after
/// the header-read timeout.
#[tokio::test]
async fn first_bytes_choose_the_protocol_and_silent_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _web) = one_second_to_ask().await;
    let pause = || tokio::time::sleep(Duration::from_millis(100));

    // "P" could still be the preface: the gateway waits for more before choosing.
    let mut h1 = TcpStream::connect(gw.addr()).await.unwrap();
    h1.write_all(b"P").await.unwrap();
    pause().await;
    h1.write_all(b"OST /posted HTTP/1.1\r\nHost: front.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(WAIT, h1.read_to_string(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("path: /posted"), "{answer}");

    // The preface in two pieces, then an empty SETTINGS frame: the HTTP/2 server answers
    // with its own SETTINGS.
    let mut h2 = TcpStream::connect(gw.addr()).await.unwrap();
    h2.write_all(b"PR").await.unwrap();
    pause().await;
    h2.write_all(b"I * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\0\x04\0\0\0\0\0")
        .await
        .unwrap();
    let mut frame_head = [0u8; 9];
    tokio::time::timeout(WAIT, h2.read_exact(&mut frame_head))
        .await
        .expect("a frame in time")
        .unwrap();
    assert_eq!(frame_head[3], 0x04, "a SETTINGS frame: {frame_head:?}");

    // Nothing sent, or nothing more after an answer on a kept-alive connection: closed once
    // the header-read timeout (1 s) is over.
    let silent = TcpStream::connect(gw.addr()).await.unwrap();
    let mut idle = TcpStream::connect(gw.addr()).await.unwrap();
    idle.write_all(b"GET /kept HTTP/1.1\r\nHost: front.test\r\n\r\n")
        .await
        .unwrap();
    let mut head = [0u8; 12];
    idle.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let started = std::time::Instant::now();
    for mut conn in [silent, idle] {
        let mut rest = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest))
            .await
            .expect("closed within 10 s");
        assert!(read.is_ok() || rest.is_empty(), "{read:?}");
        assert!(
            started.elapsed() >= Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
    }
}

/// Each request's head gets the whole header-read timeout, counted from when the gateway
/// starts waiting for it (after the answer before): a kept-alive connection asking every
/// 400 ms outlives a 1 s timeout, and a head begun and never finished is still cut off.
#[tokio::test]
async fn each_request_head_gets_the_whole_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (gw, _web) = one_second_to_ask().await;
    let mut conn = TcpStream::connect(gw.addr()).await.unwrap();
    let started = std::time::Instant::now();
    let mut answered = started;
    for i in 0..6 {
        conn.write_all(format!("GET /n{i} HTTP/1.1\r\nHost: front.test\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&answer).contains(&format!("path: /n{i}")) {
            let n = tokio::time::timeout(WAIT, conn.read(&mut buf))
                .await
                .expect("an answer in time")
                .unwrap();
            assert!(
                n > 0,
                "closed before request {i}, {:?} in",
                started.elapsed()
            );
            answer.extend_from_slice(&buf[..n]);
        }
        answered = std::time::Instant::now();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    assert!(started.elapsed() >= Duration::from_millis(2000));

    // Half a head, then nothing: closed about a second after the last answer.
    conn.write_all(b"GET /half HTTP/1.1\r\nHost: fr")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), conn.read_to_end(&mut rest))
        .await
        .expect("closed within 10 s");
    let waited = answered.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
}

/// The article's character filter (its RewriteRule ... [F]).
const ARTICLE_RULE: &str = "[[charfilter.rule]]\ndeny = '[^a-zA-Z0-9|\\.|/|_|-]'\n";

#[tokio::test]
async fn guards_answer_http2_as_http11() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "front", &["front.test"]);
    let web = Backend::echo("web").await.unwrap();
    let gw = start_gateway(&format!(
        "{}{}[limits]\nbody = 1000\n{ARTICLE_RULE}{}",
        server_section(""),
        tls_section(&[(&cert, &["front.test"], false)], ""),
        common::route("/", &web.url()),
    ))
    .await;
    // A small upload, one over `[limits] body`, and a path the character filter refuses.
    let posts = |scheme: &str| {
        let mut reqs: Vec<_> = [10usize, 5000]
            .map(|n| {
                Request::post(format!("{scheme}://front.test/upload"))
                    .header("content-length", n)
                    .body(Full::new(Bytes::from(vec![b'x'; n])))
                    .unwrap()
            })
            .to_vec();
        reqs.push(
            Request::get(format!("{scheme}://front.test/a%20b"))
                .body(Full::default())
                .unwrap(),
        );
        reqs
    };
    let h2c = h2_send(TcpStream::connect(gw.addr()).await.unwrap(), posts("http")).await;
    let tls = tls_connect(
        gw.tls_addrs()[0],
        "front.test",
        client_config(&[&cert.der], &[b"h2"]),
    )
    .await
    .unwrap();
    let h2 = h2_send(tls, posts("https")).await;
    let h11 = common::Client::new(gw.addr());
    let small = h11
        .request(
            Request::post("/upload")
                .body(Full::new(Bytes::from(vec![b'x'; 10])))
                .unwrap(),
        )
        .await
        .unwrap();
    let big = h11
        .request(
            Request::post("/upload")
                .body(Full::new(Bytes::from(vec![b'x'; 5000])))
                .unwrap(),
        )
        .await
        .unwrap();
    let refused = h11.get("/a%20b").await.unwrap();
    assert_eq!(
        (
            small.status.as_u16(),
            big.status.as_u16(),
            refused.status.as_u16()
        ),
        (200, 413, 403)
    );
    for answers in [&h2c, &h2] {
        assert_eq!(answers[0].status, 200);
        assert_eq!(answers[0].line("body-bytes"), "10");
        assert_eq!(answers[1].status, 413);
        assert_eq!(answers[1].body, String::from_utf8_lossy(&big.body));
        assert_eq!(answers[2].status, 403);
        assert_eq!(answers[2].body, String::from_utf8_lossy(&refused.body));
    }
}

// === WebSocket ===

/// A hyper backend that upgrades `/ws/...` requests to a WebSocket echo and answers
/// anything else with 200 "no upgrade".
async fn websocket_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(
                        TokioIo::new(stream),
                        hyper::service::service_fn(websocket_handler),
                    )
                    .with_upgrades(),
            );
        }
    });
    addr
}

async fn websocket_handler(
    mut req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let wants_ws = req
        .headers()
        .get("upgrade")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"websocket"));
    let (Some(key), true, true) = (key, wants_ws, req.uri().path().starts_with("/ws/")) else {
        return Ok(Response::new(Full::new(Bytes::from_static(
            b"no upgrade\n",
        ))));
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let upgraded = on_upgrade.await.expect("upgraded");
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(upgraded),
            Role::Server,
            None,
        )
        .await;
        ws.send(Message::text("welcome")).await.unwrap();
        while let Some(Ok(msg)) = ws.next().await {
            if msg.is_text() || msg.is_binary() {
                ws.send(msg).await.unwrap();
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Full::default())
        .unwrap())
}

async fn next_message<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Message
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("a message in time")
        .expect("the stream is open")
        .expect("a valid message")
}

#[tokio::test]
async fn websocket_echo_through_the_gateway() {
    let backend = websocket_backend().await;
    let gw = start_gateway(&common::route("/", &format!("http://{backend}"))).await;

    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut ws, answer) = tokio_tungstenite::client_async("ws://front.test/ws/chat", tcp)
        .await
        .expect("WebSocket handshake through the gateway");
    assert_eq!(answer.status(), 101);
    assert_eq!(next_message(&mut ws).await, Message::text("welcome"));
    for i in 0..5 {
        ws.send(Message::text(format!("hello {i}"))).await.unwrap();
        assert_eq!(
            next_message(&mut ws).await,
            Message::text(format!("hello {i}"))
        );
    }
    let big = Message::binary(vec![7u8; 200_000]);
    ws.send(big.clone()).await.unwrap();
    assert_eq!(next_message(&mut ws).await, big);

    // A clean close: our Close, the backend's Close back, then the end of the stream.
    ws.close(None).await.unwrap();
    let closing = tokio::time::timeout(WAIT, async {
        let mut saw_close = false;
        while let Some(msg) = ws.next().await {
            saw_close |= matches!(msg, Ok(Message::Close(_)));
        }
        saw_close
    })
    .await
    .expect("the tunnel closes in time");
    assert!(closing, "the backend's Close frame came through");

    // A request that asks for an upgrade the backend does not grant is an ordinary one.
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let res = sender
        .send_request(
            Request::get("/plain")
                .header("host", "front.test")
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .body(Empty::<Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.into_body().collect().await.unwrap().to_bytes(),
        "no upgrade\n"
    );
}

#[tokio::test]
async fn websocket_over_tls_and_idle_tunnels_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let cert = self_signed(dir.path(), "front", &["front.test"]);
    let backend = websocket_backend().await;
    let gw = start_gateway(&format!(
        "{}{}{}",
        server_section("tunnel_idle_timeout = \"1s\""),
        tls_section(&[(&cert, &["front.test"], false)], ""),
        common::route("/", &format!("http://{backend}")),
    ))
    .await;
    let tls = tls_connect(
        gw.tls_addrs()[0],
        "front.test",
        client_config(&[&cert.der], &[b"http/1.1"]),
    )
    .await
    .unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("wss://front.test/ws/chat", tls)
        .await
        .expect("WebSocket handshake over TLS");
    assert_eq!(next_message(&mut ws).await, Message::text("welcome"));
    ws.send(Message::text("over tls")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("over tls"));
    // Silence both ways: the gateway closes the tunnel after about a second.
    let started = std::time::Instant::now();
    let end = tokio::time::timeout(WAIT, ws.next())
        .await
        .expect("the idle tunnel is closed in time");
    assert!(!matches!(end, Some(Ok(Message::Text(_)))), "{end:?}");
    assert!(started.elapsed() >= Duration::from_millis(900));
}

/// The requests in flight at each member of the gateway's first pool.
fn in_flight(gw: &common::RunningGateway) -> Vec<usize> {
    let pool = &gw.status().pools[0];
    pool.snapshot()
        .members
        .iter()
        .map(|m| m.in_flight)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_tunnels_count_as_in_flight_on_their_member_until_closed() {
    use towergate_balancer::Intent;

    let (one, two) = (websocket_backend().await, websocket_backend().await);
    let gw = start_gateway(&format!(
        "[[route]]\nprefix = \"/\"\npool = \"chat\"\n\n[pool.chat]\nlbmethod = \"bybusyness\"\n\
         members = [{{ url = \"http://{one}\" }}, {{ url = \"http://{two}\" }}]\n"
    ))
    .await;
    let tcp = TcpStream::connect(gw.addr()).await.unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async("ws://front.test/ws/chat", tcp)
        .await
        .expect("WebSocket handshake through the pool");
    assert_eq!(next_message(&mut ws).await, Message::text("welcome"));

    // The open tunnel counts at its member.
    let counts = in_flight(&gw);
    assert_eq!(counts.iter().sum::<usize>(), 1, "{counts:?}");
    let busy = counts.iter().position(|&n| n == 1).unwrap();
    let idle = 1 - busy;

    // bybusyness sees it: every plain request goes to the other member.
    let requests = |gw: &common::RunningGateway| -> Vec<u64> {
        let pool = &gw.status().pools[0];
        pool.snapshot().members.iter().map(|m| m.requests).collect()
    };
    let before = requests(&gw);
    for _ in 0..6 {
        let answer = testkit_get(gw.addr(), "/plain").await;
        assert_eq!(answer.body, "no upgrade\n");
    }
    let after = requests(&gw);
    assert_eq!(after[busy], before[busy], "{before:?} -> {after:?}");
    assert_eq!(after[idle], before[idle] + 6, "{before:?} -> {after:?}");

    // Drained, the member keeps its tunnel, which still counts: what an operator waits
    // for before taking the member down.
    let pool = gw.status().pools[0].clone();
    let url = pool.members()[busy].url().to_owned();
    assert!(pool.set_intent(&url, Intent::Drained));
    ws.send(Message::text("still here")).await.unwrap();
    assert_eq!(next_message(&mut ws).await, Message::text("still here"));
    assert_eq!(in_flight(&gw)[busy], 1);

    // Closed (the close handshake, then the client's connection), it counts no more.
    ws.close(None).await.unwrap();
    while ws.next().await.is_some() {}
    drop(ws);
    let closed = std::time::Instant::now();
    while in_flight(&gw)[busy] != 0 {
        assert!(
            closed.elapsed() < WAIT,
            "still in flight: {:?}",
            in_flight(&gw)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(in_flight(&gw), [0, 0]);
}

// === https upstreams ===

/// A TLS backend serving `chain`; records the SNI names it was asked for.
async fn tls_backend(
    chain: Vec<CertificateDer<'static>>,
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let names = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let (acceptor, names) = (acceptor.clone(), names.clone());
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let sni = tls.get_ref().1.server_name().unwrap_or("-").to_owned();
                names.lock().unwrap().push(sni);
                let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let text = format!("secure backend: {}\n", req.uri());
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (addr, seen)
}

#[tokio::test]
async fn https_upstream_verified_against_a_test_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), &["localhost"]);
    let (addr, sni) = tls_backend(ca.server_chain.clone(), ca.server_key.clone_key()).await;
    let upstream = format!("https://localhost:{}/app", addr.port());
    let get = |gw: &common::RunningGateway| {
        let addr = gw.addr();
        async move { testkit_get(addr, "/x?y=1").await }
    };

    let trusted = start_gateway(&format!(
        "{}[upstream_tls]\nca_file = {:?}\n{}",
        server_section(""),
        ca.ca_pem.display().to_string(),
        common::route("/", &upstream)
    ))
    .await;
    let answer = get(&trusted).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.body, "secure backend: /app/x?y=1\n");
    assert_eq!(sni.lock().unwrap().as_slice(), ["localhost"]);

    // The system's roots do not know the test CA: 502, nothing sent.
    let system = start_gateway(&common::route("/", &upstream)).await;
    assert_eq!(get(&system).await.status, 502);

    // Only the loudly named switch accepts it unverified.
    let unverified = start_gateway(&format!(
        "{}[upstream_tls]\ndanger_accept_invalid_certs = true\n{}",
        server_section(""),
        common::route("/", &upstream)
    ))
    .await;
    assert_eq!(get(&unverified).await.status, 200);
}

async fn testkit_get(addr: SocketAddr, path: &str) -> Answer {
    h1_get(TcpStream::connect(addr).await.unwrap(), "front.test", path).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_members_pass_health_checks_verified_as_forwarding_verifies_them() {
    use towergate_balancer::MemberHealth;

    let dir = tempfile::tempdir().unwrap();
    let ca = test_ca(dir.path(), &["localhost"]);
    let (addr, sni) = tls_backend(ca.server_chain.clone(), ca.server_key.clone_key()).await;
    let standby = Backend::echo("standby").await.unwrap();
    // Checks every 200 ms; the https member is the primary, an http standby beside it.
    let pool = format!(
        "[[route]]\nprefix = \"/\"\npool = \"secure\"\n\n[pool.secure]\n\
         health_check = {{ interval = \"200ms\", timeout = \"200ms\", path = \"/health\" }}\n\
         members = [{{ url = \"https://localhost:{}/app\" }}, {{ url = \"{}\", standby = true }}]\n",
        addr.port(),
        standby.url()
    );
    let health = |gw: &common::RunningGateway| gw.status().pools[0].snapshot().members[0].clone();

    // Trusting the test CA: the checks reach the member over TLS (SNI `localhost`) and
    // pass, and requests go to it.
    let trusted = start_gateway(&format!(
        "{}[upstream_tls]\nca_file = {:?}\n{pool}",
        server_section(""),
        ca.ca_pem.display().to_string(),
    ))
    .await;
    let started = std::time::Instant::now();
    while sni.lock().unwrap().len() < 4 {
        assert!(started.elapsed() < WAIT, "the checks did not come");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sni.lock().unwrap().iter().all(|name| name == "localhost"));
    let member = health(&trusted);
    assert_eq!(member.health, MemberHealth::Ok, "{:?}", member.last_error);
    assert_eq!(member.failures, 0, "{:?}", member.last_error);
    for _ in 0..3 {
        let answer = testkit_get(trusted.addr(), "/x").await;
        assert_eq!(answer.body, "secure backend: /app/x\n");
    }
    drop(trusted);

    // With the system's roots the member's certificate is not trusted, by the checks
    // either: they take it out, and the standby serves.
    let system = start_gateway(&format!("{}{pool}", server_section(""))).await;
    let started = std::time::Instant::now();
    while health(&system).health != MemberHealth::CheckFailed {
        assert!(started.elapsed() < WAIT, "{:?}", health(&system));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_error = health(&system).last_error.unwrap_or_default();
    assert!(last_error.contains("certificate"), "{last_error}");
    let answer = testkit_get(system.addr(), "/x").await;
    assert!(answer.body.contains("backend: standby"), "{}", answer.body);
}
