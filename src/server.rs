//! The accept loop: HTTP/1.1 keep-alive and HTTP/2 connections served by hyper, in
//! cleartext (HTTP/2 by prior knowledge, `h2c`) or over TLS (HTTP/2 by ALPN), with a
//! header-read timeout, parser ceilings from `[limits]`, HTTP/2 stream and reset limits,
//! and graceful shutdown. A listener may take a PROXY protocol header first (from an L4
//! balancer): its client address then becomes the connection's [`PeerAddr`] (and its
//! destination the [`LocalAddr`]), before the TLS handshake and everything else.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};

use bytes::Bytes;
use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tower::{Service, ServiceExt};
use towergate_access_log::LocalAddr;
use towergate_client_addr::PeerAddr;
use towergate_proxy::{FrontTls, LazySleep};
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

/// hyper's HTTP/1 and HTTP/2 connection builders for these options and parser ceilings
/// (HTTP/2 `None` when it is off).
///
/// The protocol of a connection is chosen before either sees a byte (see [`sniff_h2c`] and
/// [`serve_tls`]), rather than by hyper-util's `auto` builder: that one reads the first 24
/// bytes on its own and hands them to HTTP/1 as a separate first read, so hyper's read
/// buffer, 8 KiB, grew to 16 KiB on every connection, and every connection read its first
/// request in two system calls.
#[derive(Clone)]
pub struct Protocols {
    http1: http1::Builder,
    http2: Option<http2::Builder<TokioExecutor>>,
}

impl Protocols {
    /// The builders for `opts`, with the parser ceilings of `limits`.
    pub fn new(opts: &ServerOptions, limits: &ServerLimits) -> Self {
        let mut http1 = http1::Builder::new();
        // The timer is set per connection (`HeadTimer`).
        http1
            .header_read_timeout(opts.header_read_timeout)
            .keep_alive(true)
            // While a request is waiting for its answer, hyper otherwise reads the client's
            // socket to notice an early close, and makes room in its read buffer for that:
            // a fresh 8 KiB buffer for every request, since the request's head still holds
            // the old one. A client that leaves is noticed when its answer is written
            // instead (HAProxy's default too, without `option abortonclose`).
            .half_close(true)
            .max_headers(limits.h1_max_headers)
            .max_buf_size(limits.h1_max_buf_size);
        let http2 = opts.http2.enabled.then(|| {
            let mut http2 = http2::Builder::new(TokioExecutor::new());
            http2
                .timer(TokioTimer::new())
                .max_header_list_size(limits.h2_max_header_list_size)
                .max_concurrent_streams(opts.http2.max_concurrent_streams)
                .max_pending_accept_reset_streams(opts.http2.max_pending_accept_reset_streams)
                .max_local_error_reset_streams(opts.http2.max_local_error_reset_streams);
            http2
        });
        Self { http1, http2 }
    }

    /// Serves `io` as HTTP/2 when `h2` says so (and HTTP/2 is on), else as HTTP/1.1 with
    /// upgrades, until it closes, or until it has finished its requests once `drain` says
    /// so.
    async fn serve<I, S>(&self, io: I, h2: bool, service: S, drain: Drain, peer: SocketAddr)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: ConnService,
    {
        let result = match self.http2.as_ref().filter(|_| h2) {
            // Boxed: an HTTP/2 connection's state is several times an HTTP/1 one's and
            // would otherwise size every connection's task.
            Some(http2) => {
                let mut conn = Box::pin(http2.serve_connection(io, service));
                drain
                    .watch(conn.as_mut(), http2::Connection::graceful_shutdown)
                    .await
            }
            None => {
                let mut http1 = self.http1.clone();
                http1.timer(HeadTimer::default());
                let conn = pin!(http1.serve_connection(io, service).with_upgrades());
                drain
                    .watch(conn, http1::UpgradeableConnection::graceful_shutdown)
                    .await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        }
    }
}

/// hyper's timer for one HTTP/1 connection, which it asks for a new header-read timeout
/// before each request: the connection's one [`LazySleep`], moved to each new deadline,
/// rather than a new tokio timer per request (an allocation, and an insertion into and a
/// removal from the timer wheel).
#[derive(Clone, Default)]
struct HeadTimer(Arc<Mutex<Option<LazySleep>>>);

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(std::time::Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: std::time::Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        Box::pin(HeadSleep {
            timer: self.clone(),
            deadline: deadline.into(),
        })
    }
}

/// A deadline of a [`HeadTimer`].
struct HeadSleep {
    timer: HeadTimer,
    deadline: tokio::time::Instant,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // Only this connection's task takes the lock.
        let mut slot = self.timer.0.lock().unwrap_or_else(PoisonError::into_inner);
        let sleep = match &mut *slot {
            Some(sleep) => {
                sleep.set(self.deadline);
                sleep
            }
            None => slot.insert(LazySleep::until(self.deadline)),
        };
        sleep.poll_expired(cx)
    }
}

impl hyper::rt::Sleep for HeadSleep {}

/// A service hyper can serve a connection with, as the gateway's are: its bounds, spelled
/// once.
trait ConnService:
    hyper::service::HttpService<
        Incoming,
        Future: Send + 'static,
        Error: Into<BoxError>,
        ResBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
    > + 'static
{
}

impl<S> ConnService for S where
    S: hyper::service::HttpService<
            Incoming,
            Future: Send + 'static,
            Error: Into<BoxError>,
            ResBody: http_body::Body<Data = Bytes, Error: Into<BoxError>> + Send + 'static,
        > + 'static
{
}

/// The start of the HTTP/2 connection preface; no HTTP/1 request starts with it (RFC 9113
/// §3.4 registered the `PRI` method so that none would).
const H2_PREFACE_START: &[u8] = b"PRI ";

/// Whether a cleartext connection speaks HTTP/2 by prior knowledge: peeks at its first
/// bytes without taking them, so hyper reads the whole first request in one go. Waits for
/// the first bytes at most `timeout`; a connection that sends nothing in that time, or
/// whose socket fails, gets `None`.
async fn sniff_h2c(stream: &TcpStream, timeout: Duration) -> Option<bool> {
    let sniff = async {
        let mut start = [0u8; H2_PREFACE_START.len()];
        let mut pause = Duration::from_millis(5);
        loop {
            let n = stream.peek(&mut start).await.ok()?;
            if n == 0 || start[..n] != H2_PREFACE_START[..n] {
                return Some(false);
            }
            if n == start.len() {
                return Some(true);
            }
            // "P", "PR" or "PRI" so far, which real clients never send alone. The socket
            // stays readable while it holds the bytes a peek left there, so wait instead of
            // spinning, longer each time: a client that stops there costs a few wake-ups a
            // second until the timeout closes it.
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    };
    tokio::time::timeout(timeout, sniff).await.ok().flatten()
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
    let mut protocols = Arc::new(Protocols::new(&opts, &limits));
    let (drain_tx, _) = watch::channel(false);
    loop {
        // At server.max_connections new connections wait in the listen queue.
        tokio::select! {
            () = spread.room() => {}
            _ = stopped(&mut shutdown) => break,
        }
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
            protocols = Arc::new(Protocols::new(&opts, &limits));
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
        let (protocols, service, drain) = (
            protocols.clone(),
            service.clone(),
            Drain(drain_tx.subscribe()),
        );
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
                let service = per_peer(service, peer, local, false);
                return serve_plain(stream, handshake_timeout, &protocols, service, drain, peer)
                    .await;
            };
            // Boxed: a TLS connection's state would otherwise size every plain one's task.
            Box::pin(serve_tls(
                stream,
                acceptor,
                handshake_timeout,
                &protocols,
                per_peer(service, peer, local, true),
                drain,
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
    // Every connection holds a receiver: once all are gone, all have finished.
    drain_tx.send_replace(true);
    if tokio::time::timeout(opts.grace_period, drain_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?opts.grace_period, "grace period over; closing remaining connections");
    }
}

/// Serves one cleartext connection: HTTP/2 when it starts with the preface (and HTTP/2 is
/// on), else HTTP/1.1.
async fn serve_plain<S: ConnService>(
    stream: TcpStream,
    handshake_timeout: Duration,
    protocols: &Protocols,
    service: S,
    mut drain: Drain,
    peer: SocketAddr,
) {
    let h2 = match protocols.http2 {
        None => false,
        Some(_) => tokio::select! {
            h2 = sniff_h2c(&stream, handshake_timeout) => match h2 {
                Some(h2) => h2,
                None => return,
            },
            // Nothing asked yet: nothing to finish.
            _ = stopped(&mut drain.0) => return,
        },
    };
    protocols
        .serve(TokioIo::new(stream), h2, service, drain, peer)
        .await;
}

/// Serves one TLS connection: the handshake within `handshake_timeout`, then HTTP/2 when
/// ALPN chose it, else HTTP/1.1.
async fn serve_tls<S: ConnService>(
    stream: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    handshake_timeout: Duration,
    protocols: &Protocols,
    service: S,
    drain: Drain,
    peer: SocketAddr,
) {
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
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    protocols
        .serve(TokioIo::new(stream), h2, service, drain, peer)
        .await;
}

/// A connection's view of the listener's shutdown: it turns true when the listener stops,
/// and the listener waits until every connection has dropped its `Drain`.
struct Drain(watch::Receiver<bool>);

impl Drain {
    /// Drives `conn` to its end; once the listener stops, `graceful_shutdown` lets it finish
    /// the requests it has begun and then close.
    ///
    /// The connection comes pinned by the caller: moved into this future and pinned here, it
    /// would take its room in the task twice.
    ///
    /// The shutdown signal is a `watch` channel all the listener's connections share, and
    /// polling its waiting future takes the channel's lock: polled on every wake-up of every
    /// connection, that was a lock both workers took a few times per request. It is polled
    /// once to register this task's waker, and again only when the channel says it has
    /// changed (an atomic load) or the task's waker is another one.
    async fn watch<C, E>(
        self,
        mut conn: Pin<&mut C>,
        graceful_shutdown: fn(Pin<&mut C>),
    ) -> Result<(), BoxError>
    where
        C: Future<Output = Result<(), E>>,
        E: Into<BoxError>,
    {
        let mut signal = self.0.clone();
        let mut stop = pin!(stopped(&mut signal));
        let mut registered: Option<Waker> = None;
        let ended = std::future::poll_fn(|cx| {
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(Some(result));
            }
            let fresh = registered
                .as_ref()
                .is_none_or(|waker| !waker.will_wake(cx.waker()));
            if fresh || self.0.has_changed().unwrap_or(true) {
                if stop.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(None);
                }
                if fresh {
                    registered = Some(cx.waker().clone());
                }
            }
            Poll::Pending
        })
        .await;
        match ended {
            Some(result) => result.map_err(Into::into),
            None => {
                graceful_shutdown(conn.as_mut());
                conn.await.map_err(Into::into)
            }
        }
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
