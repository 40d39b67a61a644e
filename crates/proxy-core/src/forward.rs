//! The forwarding service: sends a request to the upstream its [`Target`] names over a
//! pooled keep-alive client, and streams both bodies.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use pin_project_lite::pin_project;
use rustls::ClientConfig;
use tower_service::Service;

use crate::error::{ForwardError, ForwardErrorKind};
use crate::headers::{ReverseMap, remove_hop_by_hop, set_forwarded};
use crate::upgrade::{PendingUpgrade, restore_response_headers};
use crate::{RouteInfo, Upstream, UpstreamTls};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where a request goes: set by the router (or a balancer) as a request extension, read
/// by [`Forward`].
#[derive(Debug, Clone)]
pub struct Target {
    /// The route the request matched.
    pub route: Arc<RouteInfo>,
    /// The upstream chosen for it.
    pub upstream: Arc<Upstream>,
}

/// Marks a request that arrived over TLS, for `X-Forwarded-Proto` and redirects.
#[derive(Debug, Clone, Copy)]
pub struct FrontTls;

/// How the forwarder connects and waits.
#[derive(Debug, Clone)]
pub struct ForwardConfig {
    /// Time allowed to establish a TCP connection to the upstream.
    pub connect_timeout: Duration,
    /// Time allowed from sending the request until the response headers arrive
    /// (Apache `Timeout`).
    pub response_timeout: Duration,
    /// How long an idle keep-alive connection to an upstream is kept in the pool.
    pub idle_timeout: Duration,
    /// Idle connections kept per upstream.
    pub max_idle_per_host: usize,
    /// Send the client's `Host` to the upstream (Apache `ProxyPreserveHost On`).
    pub preserve_host: bool,
    /// How long an upgraded connection (WebSocket) may go without a byte in either
    /// direction before it is closed.
    pub tunnel_idle_timeout: Duration,
    /// How `https://` upstreams are verified; `None`: against the system's root
    /// certificates ([`UpstreamTls::system_roots`]).
    pub upstream_tls: Option<UpstreamTls>,
    /// One connection pool per thread instead of one shared pool. For a server that runs
    /// one single-threaded runtime per core: each thread then reuses only connections its
    /// own runtime drives, so a request never waits on another thread's wake-up and no
    /// pool lock is shared between cores (nginx's per-worker keep-alive pools). Leave it
    /// off on a multi-threaded runtime, where it would only split the pool.
    pub pool_per_thread: bool,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            response_timeout: Duration::from_secs(180),
            idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 256,
            preserve_host: true,
            tunnel_idle_timeout: Duration::from_secs(300),
            upstream_tls: None,
            pool_per_thread: false,
        }
    }
}

/// Forwards requests to the upstream named by their [`Target`] extension.
///
/// Implements ProxyPass/ProxyPassReverse: the route prefix is replaced by the upstream's
/// base path, hop-by-hop headers are dropped both ways, `X-Forwarded-*` are set, `Host`
/// is preserved or replaced, redirects into the upstream are mapped back to the front.
/// Errors are returned, not answered, so a balancer can retry what was never sent; turn
/// them into responses with [`ForwardError::to_response`].
///
/// `https://` upstreams are reached over TLS as [`ForwardConfig::upstream_tls`] says, with
/// SNI from the upstream's host; HTTP/1.1 `Upgrade` requests (WebSocket) are tunnelled
/// when the upstream switches protocols (see [`Tunnel`](crate::Tunnel)).
pub struct Forward<B: Send> {
    clients: Clients<B>,
    config: Arc<ForwardConfig>,
}

type PooledClient<B> = Client<HttpsConnector<HttpConnector>, B>;

/// The connection pool: shared by every thread, or one per thread
/// ([`ForwardConfig::pool_per_thread`]).
enum Clients<B: Send> {
    Shared(Arc<PooledClient<B>>),
    PerThread(Arc<PerThread<B>>),
}

/// Pools made on first use on each thread, all with the same connector (TLS settings
/// included) and pool settings.
struct PerThread<B: Send> {
    builder: hyper_util::client::legacy::Builder,
    connector: HttpsConnector<HttpConnector>,
    pools: thread_local::ThreadLocal<PooledClient<B>>,
}

impl<B: Send> Clone for Clients<B> {
    fn clone(&self) -> Self {
        match self {
            Self::Shared(client) => Self::Shared(client.clone()),
            Self::PerThread(per_thread) => Self::PerThread(per_thread.clone()),
        }
    }
}

impl<B: Send> Clone for Forward<B> {
    fn clone(&self) -> Self {
        Self {
            clients: self.clients.clone(),
            config: self.config.clone(),
        }
    }
}

impl<B> Forward<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static + Unpin,
    B::Error: Into<BoxError>,
{
    /// A forwarder with its own connection pool.
    pub fn new(config: ForwardConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        connector.enforce_http(false);
        let tls = config
            .upstream_tls
            .clone()
            .unwrap_or_else(UpstreamTls::system_roots);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(ClientConfig::clone(tls.client_config()))
            .https_or_http()
            .enable_http1()
            .wrap_connector(connector);
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.idle_timeout)
            .pool_max_idle_per_host(config.max_idle_per_host);
        let clients = if config.pool_per_thread {
            Clients::PerThread(Arc::new(PerThread {
                builder,
                connector,
                pools: thread_local::ThreadLocal::new(),
            }))
        } else {
            Clients::Shared(Arc::new(builder.build(connector)))
        };
        Self {
            clients,
            config: Arc::new(config),
        }
    }

    /// The pool this thread sends through.
    fn client(&self) -> &PooledClient<B> {
        match &self.clients {
            Clients::Shared(client) => client,
            Clients::PerThread(per_thread) => per_thread
                .pools
                .get_or(|| per_thread.builder.build(per_thread.connector.clone())),
        }
    }

    /// The configuration in use.
    pub fn config(&self) -> &ForwardConfig {
        &self.config
    }
}

impl<B> Service<Request<B>> for Forward<B>
where
    B: http_body::Body<Data = Bytes> + Send + 'static + Unpin,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = ForwardError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let Some(target) = req.extensions().get::<Target>().cloned() else {
            return ForwardFuture {
                state: State::NoTarget,
            };
        };
        let (mut parts, body) = req.into_parts();
        let tls = parts.extensions.get::<FrontTls>().is_some();
        let front_host = parts.headers.get(header::HOST).cloned().or_else(|| {
            parts
                .uri
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
        });
        let peer = towergate_client_addr::peer_ip(&parts.extensions);
        let upgrade = PendingUpgrade::take(&mut parts, self.config.tunnel_idle_timeout);

        remove_hop_by_hop(&mut parts.headers);
        if let Some(upgrade) = &upgrade {
            upgrade.restore_request_headers(&mut parts.headers);
        }
        set_forwarded(&mut parts.headers, peer, front_host.as_ref(), tls);
        match (&front_host, self.config.preserve_host) {
            (Some(host), true) => parts.headers.insert(header::HOST, host.clone()),
            _ => parts
                .headers
                .insert(header::HOST, target.upstream.host_header().clone()),
        };
        let remainder = target.route.remainder(parts.uri.path());
        parts.uri =
            target
                .upstream
                .uri_for(&target.route.prefix, remainder, parts.uri.path_and_query());
        parts.version = Version::HTTP_11;

        let sent = self.client().request(Request::from_parts(parts, body));
        ForwardFuture {
            state: State::Sent {
                sent: tokio::time::timeout(self.config.response_timeout, sent),
                target: Some(target),
                front_host,
                tls,
                upgrade,
            },
        }
    }
}

pin_project! {
    /// The future of [`Forward`]: waits for the response head within the timeout, then
    /// cleans and rewrites its headers.
    pub struct ForwardFuture {
        #[pin]
        state: State,
    }
}

pin_project! {
    #[project = StateProj]
    enum State {
        NoTarget,
        Sent {
            #[pin]
            sent: tokio::time::Timeout<hyper_util::client::legacy::ResponseFuture>,
            target: Option<Target>,
            front_host: Option<HeaderValue>,
            tls: bool,
            upgrade: Option<PendingUpgrade>,
        },
    }
}

impl Future for ForwardFuture {
    type Output = Result<Response<Incoming>, ForwardError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let (sent, target, front_host, tls, upgrade) = match self.project().state.project() {
            StateProj::NoTarget => {
                return Poll::Ready(Err(ForwardError::new(ForwardErrorKind::NoTarget, None)));
            }
            StateProj::Sent {
                sent,
                target,
                front_host,
                tls,
                upgrade,
            } => (sent, target, front_host, *tls, upgrade),
        };
        let result = ready!(sent.poll(cx));
        let target = target.take().expect("polled after completion");
        Poll::Ready(match result {
            Ok(Ok(mut res)) => {
                let switched = upgrade.take().and_then(|u| u.switch(&mut res, &target));
                remove_hop_by_hop(res.headers_mut());
                if let Some(protocol) = switched {
                    restore_response_headers(res.headers_mut(), protocol);
                }
                rewrite_redirects(&mut res, &target, front_host.as_ref(), tls);
                Ok(res)
            }
            Ok(Err(e)) => {
                let kind = if e.is_connect() {
                    ForwardErrorKind::Connect
                } else if request_body_failed(&e) {
                    ForwardErrorKind::RequestBody
                } else {
                    ForwardErrorKind::Upstream
                };
                let err = ForwardError::new(kind, Some(e.into()));
                tracing::warn!(target: "towergate_proxy", route = %target.route.name, upstream = %target.upstream, error = %err, "forwarding failed");
                Err(err)
            }
            Err(_) => {
                tracing::warn!(target: "towergate_proxy", route = %target.route.name, upstream = %target.upstream, "upstream timed out");
                Err(ForwardError::new(ForwardErrorKind::Timeout, None))
            }
        })
    }
}

/// True when the client's body stream failed, rather than the upstream connection.
fn request_body_failed(e: &hyper_util::client::legacy::Error) -> bool {
    let mut next = std::error::Error::source(e);
    while let Some(err) = next {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_user() && std::error::Error::source(h).is_some() {
                return true;
            }
        }
        next = err.source();
    }
    false
}

/// ProxyPassReverse: only does work when the answer carries a header to rewrite.
fn rewrite_redirects<T>(
    res: &mut Response<T>,
    target: &Target,
    front_host: Option<&HeaderValue>,
    tls: bool,
) {
    let h = res.headers();
    if !(h.contains_key(header::LOCATION)
        || h.contains_key(header::CONTENT_LOCATION)
        || h.contains_key("uri"))
    {
        return;
    }
    let Some(host) = front_host.and_then(|h| h.to_str().ok()) else {
        return;
    };
    let front_origin = format!("{}://{host}", if tls { "https" } else { "http" });
    ReverseMap {
        upstream_origin: target.upstream.origin(),
        upstream_path: target.upstream.base_path(),
        front_origin: &front_origin,
        front_prefix: &target.route.prefix,
    }
    .rewrite(res.headers_mut());
}
