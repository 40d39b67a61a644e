//! Clients that talk to a gateway the way outside clients do.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// A complete response, read to the end.
#[derive(Debug, Clone)]
pub struct TestResponse {
    /// Status code.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The whole body.
    pub body: Bytes,
}

impl TestResponse {
    /// A header as a string, or `None`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The echo backend's answer for `key` (`backend`, `path`, `host`, ...).
    pub fn echo(&self, key: &str) -> Option<String> {
        let prefix = format!("{key}: ");
        self.text()
            .lines()
            .find_map(|l| l.strip_prefix(&prefix).map(str::to_owned))
    }
}

/// A keep-alive HTTP/1.1 client (hyper-util's pooled client).
#[derive(Clone)]
pub struct Client {
    inner: hyper_util::client::legacy::Client<HttpConnector, Full<Bytes>>,
    base: String,
}

impl Client {
    /// A client for the server at `addr`.
    pub fn new(addr: SocketAddr) -> Self {
        let inner = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
            .build(HttpConnector::new());
        Self {
            inner,
            base: format!("http://{addr}"),
        }
    }

    /// GET `path`.
    pub async fn get(&self, path: &str) -> Result<TestResponse, hyper_util::client::legacy::Error> {
        self.request(Request::get(path).body(Full::default()).unwrap())
            .await
    }

    /// Sends `req`; a relative URI is resolved against the server's address.
    pub async fn request(
        &self,
        mut req: Request<Full<Bytes>>,
    ) -> Result<TestResponse, hyper_util::client::legacy::Error> {
        if req.uri().authority().is_none() {
            *req.uri_mut() = format!("{}{}", self.base, req.uri()).parse().unwrap();
        }
        let res = self.inner.request(req).await?;
        let (parts, body) = res.into_parts();
        let body = body
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok(TestResponse {
            status: parts.status,
            headers: parts.headers,
            body,
        })
    }
}

/// GET `path` on a fresh connection.
pub async fn get(addr: SocketAddr, path: &str) -> TestResponse {
    Client::new(addr).get(path).await.expect("request failed")
}

/// Connects to `addr` from source address `from` (any port).
pub async fn connect_from(from: IpAddr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match from {
        IpAddr::V4(_) => TcpSocket::new_v4()?,
        IpAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(addr).await
}

/// Sends one request over a connection from source address `from`.
pub async fn send_from(
    from: IpAddr,
    addr: SocketAddr,
    req: Request<Full<Bytes>>,
) -> std::io::Result<TestResponse> {
    let stream = connect_from(from, addr).await?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(conn);
    let res = sender
        .send_request(req)
        .await
        .map_err(std::io::Error::other)?;
    let (parts, body) = res.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    Ok(TestResponse {
        status: parts.status,
        headers: parts.headers,
        body,
    })
}

/// GET `path` with `Host: test` over a connection from source address `from`.
pub async fn get_from(from: IpAddr, addr: SocketAddr, path: &str) -> std::io::Result<TestResponse> {
    let req = Request::get(path)
        .header("host", "test")
        .body(Full::default())
        .unwrap();
    send_from(from, addr, req).await
}

/// Writes `bytes` as they are and returns everything read until the server closes or
/// goes quiet for a second.
pub async fn raw(addr: SocketAddr, bytes: &[u8]) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(bytes).await?;
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match tokio::time::timeout(Duration::from_secs(1), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if out.is_empty() => return Err(e),
            Ok(Err(_)) => break,
        }
    }
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The status code of the first response in a raw answer (0 if none).
pub fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
