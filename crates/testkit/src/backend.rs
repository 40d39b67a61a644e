//! Loopback HTTP backends that can be stopped and started again on the same port, and raw
//! TCP backends for answers no HTTP server library sends (a body cut short by a reset).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A request handler for a [`Backend`].
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A raw TCP handler for a [`Backend::raw`]: gets each accepted connection.
pub type RawHandler =
    Arc<dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// How a [`Backend::cut_short`] frames the body it cuts short.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// `Content-Length` names more bytes than are sent.
    ContentLength,
    /// `Transfer-Encoding: chunked`, without the last chunk.
    Chunked,
}

/// What a backend serves its connections with.
#[derive(Clone)]
enum Serve {
    Http(Handler),
    Raw(RawHandler),
}

/// Counters a backend keeps, shared with the test.
#[derive(Debug, Default)]
pub struct BackendStats {
    /// Requests received.
    pub requests: AtomicUsize,
    /// TCP connections accepted.
    pub connections: AtomicUsize,
}

/// A loopback HTTP/1.1 backend.
pub struct Backend {
    name: String,
    addr: SocketAddr,
    serve: Serve,
    stats: Arc<BackendStats>,
    stop: Option<watch::Sender<bool>>,
}

impl Backend {
    /// An echo backend on an ephemeral port of 127.0.0.1.
    pub async fn echo(name: &str) -> std::io::Result<Self> {
        Self::start(name, "127.0.0.1:0".parse().unwrap(), echo_handler(name)).await
    }

    /// A backend with its own handler on an ephemeral port of 127.0.0.1.
    pub async fn with_handler<F, Fut>(name: &str, f: F) -> std::io::Result<Self>
    where
        F: Fn(Request<Incoming>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Response<Full<Bytes>>> + Send + 'static,
    {
        let handler: Handler = Arc::new(move |req| Box::pin(f(req)));
        Self::start(name, "127.0.0.1:0".parse().unwrap(), handler).await
    }

    /// A backend on an ephemeral port of 127.0.0.1 that speaks raw TCP: `f` gets each
    /// accepted connection (counted in [`connections`](Self::connections)).
    pub async fn raw<F, Fut>(name: &str, f: F) -> std::io::Result<Self>
    where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let handler: RawHandler = Arc::new(move |stream| Box::pin(f(stream)));
        Self::serving(name, "127.0.0.1:0".parse().unwrap(), Serve::Raw(handler)).await
    }

    /// A member that resets mid-response: on each connection it reads a request head and
    /// answers `200 OK` with `X-Backend: <name>` and the first 1,000 bytes of a 100,000
    /// byte body framed as `framing` says, then resets the connection (TCP RST).
    pub async fn cut_short(name: &str, framing: Framing) -> std::io::Result<Self> {
        let name_header: Arc<str> = name.into();
        Self::raw(name, move |stream| {
            cut_short(stream, name_header.clone(), framing)
        })
        .await
    }

    /// Starts a backend with `handler` on `addr`.
    pub async fn start(name: &str, addr: SocketAddr, handler: Handler) -> std::io::Result<Self> {
        Self::serving(name, addr, Serve::Http(handler)).await
    }

    async fn serving(name: &str, addr: SocketAddr, serve: Serve) -> std::io::Result<Self> {
        let mut backend = Self {
            name: name.to_owned(),
            addr,
            serve,
            stats: Arc::default(),
            stop: None,
        };
        backend.listen().await?;
        Ok(backend)
    }

    async fn listen(&mut self) -> std::io::Result<()> {
        let listener = bind_reusable(self.addr)?;
        self.addr = listener.local_addr()?;
        let (tx, rx) = watch::channel(false);
        self.stop = Some(tx);
        tokio::spawn(serve(listener, self.serve.clone(), self.stats.clone(), rx));
        Ok(())
    }

    /// The backend's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://addr`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its counters.
    pub fn stats(&self) -> &Arc<BackendStats> {
        &self.stats
    }

    /// Requests received so far.
    pub fn requests(&self) -> usize {
        self.stats.requests.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn connections(&self) -> usize {
        self.stats.connections.load(Ordering::Relaxed)
    }

    /// True while it listens.
    pub fn is_running(&self) -> bool {
        self.stop.is_some()
    }

    /// Closes the listener and every open connection, as a crashed server would.
    pub fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(true);
        }
    }

    /// Listens again on the same port.
    pub async fn restart(&mut self) -> std::io::Result<()> {
        self.stop();
        // The old accept loop lets go of the port asynchronously; retry briefly.
        let mut last = None;
        for _ in 0..50 {
            match self.listen().await {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(last.unwrap())
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop();
    }
}

fn bind_reusable(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

async fn serve(
    listener: TcpListener,
    serve: Serve,
    stats: Arc<BackendStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        // Stop first: once `stop()` returns, nothing more is accepted or served, even
        // when a request is already waiting.
        let (stream, _) = tokio::select! {
            biased;
            _ = stop.changed() => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let handler = match &serve {
            Serve::Http(handler) => handler.clone(),
            Serve::Raw(raw) => {
                let connection = raw(stream);
                let mut stop = stop.clone();
                tokio::spawn(async move {
                    tokio::select! {
                        biased;
                        _ = stop.changed() => {}
                        _ = connection => {}
                    }
                });
                continue;
            }
        };
        let stats = stats.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                stats.requests.fetch_add(1, Ordering::Relaxed);
                let fut = handler(req);
                async move { Ok::<_, Infallible>(fut.await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
            tokio::select! {
                biased;
                _ = stop.changed() => {}
                _ = conn => {}
            }
        });
    }
}

/// One connection of a [`Backend::cut_short`].
async fn cut_short(mut stream: TcpStream, name: Arc<str>, framing: Framing) {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let part = vec![b'x'; 1000];
    let mut answer =
        format!("HTTP/1.1 200 OK\r\nx-backend: {name}\r\ncontent-type: text/plain\r\n")
            .into_bytes();
    match framing {
        Framing::ContentLength => {
            answer.extend_from_slice(b"content-length: 100000\r\n\r\n");
            answer.extend_from_slice(&part);
        }
        Framing::Chunked => {
            answer.extend_from_slice(b"transfer-encoding: chunked\r\n\r\n");
            answer.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
            answer.extend_from_slice(&part);
            answer.extend_from_slice(b"\r\n");
        }
    }
    if stream.write_all(&answer).await.is_err() {
        return;
    }
    // Let the answer leave before the reset, which discards what is still queued.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let _ = stream.set_zero_linger();
}

/// The echo handler: `X-Backend: <name>` and a body naming method, path, `Host`,
/// `X-Forwarded-For` and the number of body bytes received.
pub fn echo_handler(name: &str) -> Handler {
    let name: Arc<str> = name.into();
    Arc::new(move |req: Request<Incoming>| {
        let name = name.clone();
        Box::pin(async move {
            let header = |n: &str| {
                req.headers()
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("-")
                    .to_owned()
            };
            let (method, uri, host, xff) = (
                req.method().clone(),
                req.uri().clone(),
                header("host"),
                header("x-forwarded-for"),
            );
            let mut received = 0u64;
            let mut body = req.into_body();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => received += f.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => break,
                }
            }
            let text = format!(
                "backend: {name}\nmethod: {method}\npath: {uri}\nhost: {host}\nx-forwarded-for: {xff}\nbody-bytes: {received}\n"
            );
            Response::builder()
                .header("x-backend", &*name)
                .header("content-type", "text/plain; charset=utf-8")
                .body(Full::new(Bytes::from(text)))
                .unwrap()
        })
    })
}
