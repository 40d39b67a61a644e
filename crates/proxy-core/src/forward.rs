//! The forwarding service: sends a request to the upstream its [`Target`] names over a
//! pooled keep-alive client, and streams both bodies.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::header::{self, HeaderValue};
use http::{Request, Response, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use rustls::ClientConfig;
use tower_service::Service;

use crate::body::UpstreamBody;
use crate::error::{ForwardError, ForwardErrorKind};
use crate::headers::{ReverseMap, remove_hop_by_hop, set_forwarded};
use crate::pool::{Pools, SendError};
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
    /// Time allowed from sending the request until the response headers arrive, and the
    /// longest the response body may then wait for the upstream's next bytes (Apache
    /// `Timeout`, nginx `proxy_read_timeout`): a body that waits longer is cut off.
    pub response_timeout: Duration,
    /// How long an idle keep-alive connection to an upstream is kept in the pool: it is
    /// closed between this and one and a half times this.
    pub idle_timeout: Duration,
    /// Idle connections kept per upstream (per thread with
    /// [`pool_per_thread`](Self::pool_per_thread)).
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
    pools: Arc<Pools>,
    config: Arc<ForwardConfig>,
    _body: PhantomData<fn(B)>,
}

impl<B: Send> Clone for Forward<B> {
    fn clone(&self) -> Self {
        Self {
            pools: self.pools.clone(),
            config: self.config.clone(),
            _body: PhantomData,
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
        let pools = Pools::new(
            connector,
            config.response_timeout,
            config.idle_timeout,
            config.max_idle_per_host,
            config.pool_per_thread,
        );
        Self {
            pools: Arc::new(pools),
            config: Arc::new(config),
            _body: PhantomData,
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
    type Response = Response<UpstreamBody>;
    type Error = ForwardError;
    type Future = ForwardFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        // Taken, not copied: each attempt (a balancer's retry too) sets its own.
        let Some(target) = req.extensions_mut().remove::<Target>() else {
            return ForwardFuture {
                inner: Box::pin(std::future::ready(Err(ForwardError::new(
                    ForwardErrorKind::NoTarget,
                    None,
                )))),
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
        parts.uri = Uri::from(target.upstream.path_for(
            &target.route.prefix,
            remainder,
            parts.uri.path_and_query(),
        ));
        parts.version = Version::HTTP_11;
        // The upstream needs none of them; they come back with an error, for a retry.
        let extensions = std::mem::take(&mut parts.extensions);

        let sent = Sent {
            extensions,
            pools: self.pools.clone(),
            target,
            front_host,
            tls,
            upgrade,
        };
        ForwardFuture {
            inner: Box::pin(sent.answer(Request::from_parts(parts, body))),
        }
    }
}

/// The future of [`Forward`]: waits for the response head within the timeout, then
/// cleans and rewrites its headers.
pub struct ForwardFuture {
    inner: Pin<Box<dyn Future<Output = Result<Response<UpstreamBody>, ForwardError>> + Send>>,
}

impl Future for ForwardFuture {
    type Output = Result<Response<UpstreamBody>, ForwardError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl std::fmt::Debug for ForwardFuture {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ForwardFuture").finish_non_exhaustive()
    }
}

/// A request on its way: what the answer's headers are rewritten with.
struct Sent {
    extensions: http::Extensions,
    pools: Arc<Pools>,
    target: Target,
    front_host: Option<HeaderValue>,
    tls: bool,
    upgrade: Option<PendingUpgrade>,
}

impl Sent {
    async fn answer<B>(self, req: Request<B>) -> Result<Response<UpstreamBody>, ForwardError>
    where
        B: http_body::Body<Data = Bytes> + Send + 'static + Unpin,
        B::Error: Into<BoxError>,
    {
        let Self {
            extensions,
            pools,
            target,
            front_host,
            tls,
            upgrade,
        } = self;
        match pools.send(&target.upstream, req).await {
            Ok(mut res) => {
                let switched = upgrade.and_then(|u| u.switch(&mut res, &target));
                if switched.is_none() && res.status() == http::StatusCode::SWITCHING_PROTOCOLS {
                    tracing::warn!(target: "towergate_proxy", route = %target.route.name, upstream = %target.upstream, "upstream switched protocols unasked");
                    let err = ForwardError::new(
                        ForwardErrorKind::Upstream,
                        Some("the upstream switched protocols unasked".into()),
                    );
                    return Err(err.with_extensions(extensions));
                }
                remove_hop_by_hop(res.headers_mut());
                if let Some(protocol) = switched {
                    restore_response_headers(res.headers_mut(), protocol);
                }
                rewrite_redirects(&mut res, &target, front_host.as_ref(), tls);
                Ok(res)
            }
            Err(e) => {
                let err = match e {
                    SendError::Connect(e) => ForwardError::new(ForwardErrorKind::Connect, Some(e)),
                    SendError::Upstream(e) => {
                        ForwardError::new(ForwardErrorKind::Upstream, Some(e))
                    }
                    SendError::RequestBody(e) => {
                        ForwardError::new(ForwardErrorKind::RequestBody, Some(e))
                    }
                    SendError::TimedOut => ForwardError::new(ForwardErrorKind::Timeout, None),
                };
                tracing::warn!(target: "towergate_proxy", route = %target.route.name, upstream = %target.upstream, error = %err, "forwarding failed");
                Err(err.with_extensions(extensions))
            }
        }
    }
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
