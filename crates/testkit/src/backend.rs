//! Loopback HTTP backends that can be stopped and started again on the same port.

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
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A request handler for a [`Backend`].
pub type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

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
    handler: Handler,
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

    /// Starts a backend with `handler` on `addr`.
    pub async fn start(name: &str, addr: SocketAddr, handler: Handler) -> std::io::Result<Self> {
        let mut backend = Self {
            name: name.to_owned(),
            addr,
            handler,
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
        tokio::spawn(serve(
            listener,
            self.handler.clone(),
            self.stats.clone(),
            rx,
        ));
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
    handler: Handler,
    stats: Arc<BackendStats>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(_) => continue,
            },
            _ = stop.changed() => return,
        };
        stats.connections.fetch_add(1, Ordering::Relaxed);
        let handler = handler.clone();
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
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
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
