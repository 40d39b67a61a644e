//! The accept loop: HTTP/1.1 keep-alive and HTTP/2 connections served by hyper-util, in
//! cleartext (HTTP/2 by prior knowledge, `h2c`) or over TLS (HTTP/2 by ALPN), with a
//! header-read timeout, parser ceilings from `[limits]`, HTTP/2 stream and reset limits,
//! and graceful shutdown. A listener may take a PROXY protocol header first (from an L4
//! balancer): its client address then becomes the connection's [`PeerAddr`] (and its
//! destination the [`LocalAddr`]), before the TLS handshake and everything else.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{Service, ServiceExt};
use towergate_access_log::LocalAddr;
use towergate_client_addr::PeerAddr;
use towergate_proxy::FrontTls;
use towergate_proxy_protocol::ProxyProtocol;
use towergate_request_limits::ServerLimits;

use crate::config::Http2Config;
use crate::tls::Certificates;
use crate::workers::Spread;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Connection-level settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Time a client has to send a complete request head.
    pub header_read_timeout: Duration,
    /// Time requests in flight get to finish once shutdown begins.
    pub grace_period: Duration,
    /// The parser's ceilings for `[limits]`: a request head far over the limits is refused
    /// while it is read (431, or 414 for a giant target) instead of being buffered. A reload
    /// stores new ones; connections accepted from then on use them.
    pub limits: Arc<ArcSwap<ServerLimits>>,
    /// HTTP/2 settings.
    pub http2: Http2Config,
    /// The PROXY protocol acceptor when connections start with its header (`None`: off).
    /// A reload stores a new one; connections accepted from then on use it.
    pub proxy_protocol: Arc<ArcSwapOption<ProxyProtocol>>,
}

/// What a listener speaks.
#[derive(Debug, Clone)]
pub enum Transport {
    /// Cleartext HTTP/1.1, and HTTP/2 by prior knowledge.
    Plain,
    /// TLS with these certificates; HTTP/2 by ALPN. Requests carry [`FrontTls`].
    Tls(Certificates),
}

/// The hyper-util connection builder for these options and parser ceilings.
pub fn connection_builder(
    opts: &ServerOptions,
    limits: &ServerLimits,
) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_read_timeout)
        .keep_alive(true)
        // While a request is waiting for its answer, hyper otherwise reads the client's
        // socket to notice an early close, and makes room in its read buffer for that:
        // a fresh 8 KiB buffer for every request, since the request's head still holds the
        // old one. A client that leaves is noticed when its answer is written instead
        // (HAProxy's default too, without `option abortonclose`).
        .half_close(true)
        .max_headers(limits.h1_max_headers)
        .max_buf_size(limits.h1_max_buf_size);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.h2_max_header_list_size)
        .max_concurrent_streams(opts.http2.max_concurrent_streams)
        .max_pending_accept_reset_streams(opts.http2.max_pending_accept_reset_streams)
        .max_local_error_reset_streams(opts.http2.max_local_error_reset_streams);
    if opts.http2.enabled {
        builder
    } else {
        builder.http1_only()
    }
}

/// Serves `listener` with `service` until `shutdown` turns true, then stops accepting and
/// gives connections the grace period to finish their requests. A PROXY protocol header
/// (when the listener takes one) and a TLS handshake must each complete within the
/// header-read timeout.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    opts: ServerOptions,
    transport: Transport,
    spread: Spread,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut limits = **opts.limits.load();
    let mut builder = Arc::new(connection_builder(&opts, &limits));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped(&mut shutdown) => break,
        };
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let current = **opts.limits.load();
        if current != limits {
            limits = current;
            builder = Arc::new(connection_builder(&opts, &limits));
        }
        let proxy_protocol = opts.proxy_protocol.load_full();
        let acceptor = match &transport {
            Transport::Plain => None,
            Transport::Tls(certificates) => {
                Some(tokio_rustls::TlsAcceptor::from(certificates.current()))
            }
        };
        // The PROXY protocol header and the TLS handshake are read in the connection's own
        // task, so a slow client never holds up the accept loop.
        let (builder, service, watcher) = (builder.clone(), service.clone(), graceful.watcher());
        let handshake_timeout = opts.header_read_timeout;
        let (worker, active) = spread.place();
        let serve_connection = move |mut stream: TcpStream| async move {
            let _active = active;
            let (peer, local) = match proxy_protocol {
                None => (peer, local),
                Some(pp) => match pp.accept(&mut stream, peer).await {
                    Ok(header) => (header.source.unwrap_or(peer), header.destination.or(local)),
                    // Refused (counted and logged by the acceptor): dropping the stream
                    // closes it without an answer.
                    Err(_) => return,
                },
            };
            let Some(acceptor) = acceptor else {
                let conn = builder.serve_connection_with_upgrades(
                    TokioIo::new(stream),
                    per_peer(service, peer, local, false),
                );
                if let Err(e) = watcher.watch(conn).await {
                    tracing::debug!(%peer, error = %e, "connection ended with an error");
                }
                return;
            };
            // Boxed: a TLS connection's state would otherwise size every plain one's task.
            Box::pin(serve_tls(
                stream,
                acceptor,
                handshake_timeout,
                &builder,
                per_peer(service, peer, local, true),
                watcher,
                peer,
            ))
            .await;
        };
        if spread.is_local(worker) {
            tokio::spawn(serve_connection(stream));
            continue;
        }
        // Another worker serves it: the socket moves to that worker's reactor.
        match stream.into_std() {
            Ok(stream) => spread.spawn_on(worker, async move {
                match TcpStream::from_std(stream) {
                    Ok(stream) => serve_connection(stream).await,
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "handing a connection over failed")
                    }
                }
            }),
            Err(e) => tracing::debug!(%peer, error = %e, "handing a connection over failed"),
        }
    }
    drop(listener);
    if tokio::time::timeout(opts.grace_period, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?opts.grace_period, "grace period over; closing remaining connections");
    }
}

/// Serves one TLS connection: the handshake within `handshake_timeout`, then HTTP.
async fn serve_tls<S, B>(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    builder: &auto::Builder<TokioExecutor>,
    service: S,
    watcher: hyper_util::server::graceful::Watcher,
    peer: SocketAddr,
) where
    S: hyper::service::Service<Request<Incoming>, Response = Response<B>> + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
    }
}

/// Resolves once `shutdown` turns true.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    // The guard `wait_for` returns must not be held across an await.
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// A hyper service for one connection: tags each request with the peer address (and the
/// local one, for the access log's `%A` and `%p`), and those that came over TLS with
/// [`FrontTls`]. The connection keeps one instance of `service` for all its requests
/// (behind an uncontended lock: only its own worker touches it), rather than a clone per
/// request.
fn per_peer<S, B>(
    service: S,
    peer: SocketAddr,
    local: Option<SocketAddr>,
    tls: bool,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = Response<B>,
    Error = Infallible,
    Future = CallNow<S, Request<Incoming>>,
> + Clone
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body,
{
    let service = Arc::new(std::sync::Mutex::new(service));
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(PeerAddr(peer));
        if let Some(local) = local {
            req.extensions_mut().insert(LocalAddr(local));
        }
        if tls {
            req.extensions_mut().insert(FrontTls);
        }
        let mut service = service.lock().unwrap_or_else(|e| e.into_inner());
        call_now(&mut *service, req)
    })
}

/// The future of [`call_now`].
pub type CallNow<S, R> =
    futures_util::future::Either<<S as Service<R>>::Future, tower::util::Oneshot<S, R>>;

/// Calls `service` straight away when it is ready at once, as the gateway's stacks
/// always are, instead of through tower's `Oneshot`, which moves the whole response
/// future once more on its first poll; a service that is not ready yet is cloned into a
/// `Oneshot`.
pub fn call_now<S: Service<R> + Clone, R>(service: &mut S, req: R) -> CallNow<S, R> {
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match service.poll_ready(&mut cx) {
        std::task::Poll::Ready(Ok(())) => futures_util::future::Either::Left(service.call(req)),
        _ => futures_util::future::Either::Right(service.clone().oneshot(req)),
    }
}
