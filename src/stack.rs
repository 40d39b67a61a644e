//! The layer stack, top-down in request order (DESIGN.md "One request, outermost layer
//! first"). Each `// [layer: NAME]` marks where that crate's layer goes.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use http::{Request, Response, header};
use hyper::body::Incoming;
use tower::util::MapResponseLayer;
use tower::{Service, ServiceBuilder};
use tower_http::set_header::SetResponseHeaderLayer;
use towergate_access_log::{AccessLogLayer, LogClientAddrLayer, LogWriter, ResponseBody};
use towergate_balancer::{BalancerLayer, Pool};
use towergate_error_pages::ErrorPagesLayer;
use towergate_expires::ExpiresLayer;
use towergate_proxy::{
    CanonicalRequestLayer, Forward, ForwardConfig, ProxyBody, RouteInfo, RouteTable,
};
use towergate_request_limits::RequestLimitsLayer;

use crate::carry::Carryover;
use crate::config::Config;
use crate::dispatch::{Dispatch, RouteAction, Routed};
use crate::metrics::Metrics;
use crate::status::{RouteStatus, Status};

/// How often latency samples are drained into the histograms between scrapes.
const METRICS_UPKEEP: Duration = Duration::from_secs(5);

/// Work the stack needs running beside it (health checks, table sweeps): spawn each.
pub type Background = Pin<Box<dyn Future<Output = ()> + Send>>;

/// A built stack: the service and the background work it needs.
pub struct Stack<S> {
    /// The service, ready to serve requests.
    pub service: S,
    /// Work to spawn beside it.
    pub background: Vec<Background>,
    /// What the admin listener shows of this generation.
    pub status: Status,
    /// The access log's writer, when `[access_log]` is on (for SIGUSR1 and shutdown).
    pub access_log: Option<LogWriter>,
}

/// How `https://` upstreams are verified; skipping verification is logged loudly.
fn upstream_tls(config: &Config) -> anyhow::Result<towergate_proxy::UpstreamTls> {
    let tls = config.upstream_tls.build().map_err(anyhow::Error::msg)?;
    if tls.is_dangerous() {
        tracing::warn!(
            target: "towergate",
            "upstream_tls.danger_accept_invalid_certs = true: certificates of https upstreams are NOT verified; anybody on the path can read and change that traffic"
        );
    }
    Ok(tls)
}

/// The body of the stack's answers: the forwarder's, passed through the WAF when the build
/// has it (which may hold an answer back to inspect its body).
#[cfg(feature = "waf")]
pub type StackBody = towergate_waf::WafBody<ProxyBody>;
/// The body of the stack's answers: the forwarder's.
#[cfg(not(feature = "waf"))]
pub type StackBody = ProxyBody;

/// Builds the service for `config`, and the background work it needs. Parts that must
/// survive a reload (pool health, block lists) are taken from `carry`.
pub fn build(
    config: &Config,
    carry: &Carryover,
) -> anyhow::Result<
    Stack<
        impl Service<
            Request<Incoming>,
            Response = Response<ResponseBody<StackBody>>,
            Error = Infallible,
            Future = impl Send + use<>,
        >
        + Clone
        + Send
        + Sync
        + 'static
        + use<>,
    >,
> {
    let background: Vec<Background> = Vec::new();
    let metrics = carry.reuse::<Metrics, _>("metrics", "", || {
        let metrics = Arc::new(Metrics::new());
        let upkeep = metrics.clone().upkeep(METRICS_UPKEEP);
        Ok((metrics, Some(Box::pin(upkeep) as Background)))
    })?;
    let mut status = Status::new(metrics.clone());
    let server = &config.server;

    // Forwarding and health checks verify https members alike.
    let upstream_tls = upstream_tls(config)?;
    let forward = Forward::new(ForwardConfig {
        connect_timeout: server.connect_timeout,
        response_timeout: server.timeout,
        idle_timeout: server.upstream_idle_timeout,
        max_idle_per_host: 256,
        preserve_host: server.preserve_host,
        tunnel_idle_timeout: server.tunnel_idle_timeout,
        upstream_tls: Some(upstream_tls.clone()),
        // Each worker thread runs its own runtime (see `workers`): one pool per worker.
        pool_per_thread: true,
    });

    // Pools outlive a reload whose config leaves them unchanged: health and counters stay.
    let mut pools = std::collections::BTreeMap::new();
    for (name, pool_config) in &config.pools {
        let pool_config = pool_config.get_ref();
        let fingerprint = format!("{pool_config:?} {upstream_tls:?}");
        let pool = carry.reuse::<Pool, _>(name, &fingerprint, || {
            let pool = Pool::from_config(name, pool_config)?;
            let checks = pool
                .health_checks_with_tls(upstream_tls.clone())
                .map(|checks| Box::pin(checks) as Background);
            Ok((Arc::new(pool), checks))
        })?;
        status.pools.push(Pool::clone(&pool));
        pools.insert(name.as_str(), pool);
    }

    let mut routes = RouteTable::new();
    for route in &config.routes {
        let prefix = &route.prefix.get_ref().0;
        let name = route.name.clone().unwrap_or_else(|| prefix.clone());
        let (action, target) = match (&route.upstream, &route.pool) {
            (Some(upstream), _) => (
                RouteAction::Origin(upstream.0.clone()),
                upstream.0.url().to_owned(),
            ),
            (None, Some(pool)) => {
                let pool = pools
                    .get(pool.get_ref().as_str())
                    .with_context(|| format!("route `{prefix}`: no pool `{}`", pool.get_ref()))?;
                let layer =
                    BalancerLayer::new(Pool::clone(pool)).route(RouteInfo::new(&name, prefix));
                (RouteAction::Pool(layer), format!("pool {}", pool.name()))
            }
            (None, None) => anyhow::bail!("route `{prefix}` has neither upstream nor pool"),
        };
        status.routes.push(RouteStatus {
            name: name.clone(),
            prefix: prefix.clone(),
            target,
        });
        let action = Routed {
            action,
            metrics: metrics.route(&name),
            override_errors: route.override_errors,
        };
        routes
            .insert(RouteInfo::new(name, prefix), action)
            .ok()
            .with_context(|| format!("route `{prefix}` is defined twice"))?;
    }
    let dispatch = Dispatch::new(routes, forward);
    let signature = server.signature.0.clone();
    let no_signature = signature.is_none();
    // Each guard is left out when its section asks nothing of it. Without trusted proxies
    // the socket peer is the client, which `client_ip` reads without the layer.
    let client_addr =
        (!config.client_addr.trusted_proxies.is_empty()).then(|| config.client_addr.build());
    let acl = (config.acl != towergate_acl::AclConfig::default()).then(|| config.acl.build());
    let charfilter = (!config.charfilter.rules.is_empty()).then(|| config.charfilter.build());
    let cluster = cluster(config, carry)?;
    let evasive = config
        .evasive
        .as_ref()
        .map(|c| evasive(c, config, carry))
        .transpose()?;

    let limits = RequestLimitsLayer::from_config(config.limits.0);
    status.limits = Some(limits.clone());
    status.evasive = evasive.clone();
    if let Some(cluster) = &cluster {
        cluster.set_pools(status.pools.clone());
    }
    status.cluster = cluster;

    // Always present, empty when unconfigured: it sets the request body type inside.
    let error_pages = match &config.error_pages {
        Some(pages) => ErrorPagesLayer::from_config(pages).context("error_pages")?,
        None => ErrorPagesLayer::disabled(),
    };
    let expires = config.expires.as_ref().map(ExpiresLayer::from_config);
    let access_log = access_log(config, carry)?;
    let access_log_writer = access_log.writer().cloned();

    // [layer: expires], then the dispatcher.
    let inner = ServiceBuilder::new()
        .option_layer(expires)
        .service(dispatch);
    // [layer: waf]: always present with the feature (it sets the request body type
    // inside), inspecting only when `[waf]` is configured.
    #[cfg(feature = "waf")]
    let inner = {
        let waf = config
            .waf_layer
            .clone()
            .unwrap_or_else(towergate_waf::WafLayer::disabled);
        status.waf = waf.is_enabled().then(|| waf.clone());
        tower::Layer::layer(&waf, inner)
    };

    let service = ServiceBuilder::new()
        // [layer: access-log]
        .layer(access_log)
        // [layer: error-pages]
        .layer(error_pages)
        // [layer: signature]
        .option_layer(signature.map(|v| SetResponseHeaderLayer::overriding(header::SERVER, v)))
        .option_layer(no_signature.then(|| MapResponseLayer::new(strip_server as fn(_) -> _)))
        // [layer: request-limits]
        .layer(limits)
        .layer(CanonicalRequestLayer::new(server.names.iter().cloned()))
        // [layer: client-addr]
        .option_layer(client_addr)
        // Tells the access log, outside, the client decided here.
        .layer(LogClientAddrLayer)
        // [layer: acl]
        .option_layer(acl)
        // [layer: evasive]
        .option_layer(evasive)
        // [layer: charfilter]
        .option_layer(charfilter)
        // [layer: waf]
        .service(inner);
    Ok(Stack {
        service,
        background,
        status,
        access_log: access_log_writer,
    })
}

/// The `[cluster]` membership (shared operator intent), carried across reloads while the
/// section stays the same.
fn cluster(
    config: &Config,
    carry: &Carryover,
) -> anyhow::Result<Option<Arc<crate::cluster::ClusterState>>> {
    let Some(section) = &config.cluster else {
        return Ok(None);
    };
    #[cfg(feature = "redis")]
    {
        let c = &section.0;
        let state =
            carry.reuse::<crate::cluster::ClusterState, _>("cluster", &format!("{c:?}"), || {
                let (state, work) = crate::cluster::start(c)?;
                Ok((state, Some(work)))
            })?;
        Ok(Some(state))
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = carry;
        section.0.validate().map_err(anyhow::Error::msg)?;
        Ok(None)
    }
}

/// The `[evasive]` layer. Its table (counts and blocks) and sweeper are carried across
/// reloads while the section (and `[cluster]`) stays the same; a changed section starts a
/// new table. With `[cluster]` its counts and blocks are shared through Redis.
fn evasive(
    c: &towergate_evasive::EvasiveConfig,
    config: &Config,
    carry: &Carryover,
) -> anyhow::Result<towergate_evasive::EvasiveLayer> {
    let fingerprint = format!("{c:?} {:?}", config.cluster);
    let layer =
        carry.reuse::<towergate_evasive::EvasiveLayer, _>("evasive", &fingerprint, || {
            #[cfg(feature = "redis")]
            if let Some(cluster) = &config.cluster {
                let limits = towergate_evasive::Limits {
                    page_count: c.page_count,
                    page_interval: c.page_interval,
                    site_count: c.site_count,
                    site_interval: c.site_interval,
                    blocking_period: c.blocking_period,
                };
                let (store, sync) = towergate_evasive::RedisStore::new(
                    &limits,
                    c.max_tracked.max(1),
                    cluster.0.options(),
                )
                .map_err(|e| anyhow::anyhow!("cluster.{e}"))?;
                let (layer, sweeper) = c.builder()?.store(store).build()?;
                let work = async move {
                    tokio::join!(sweeper.run(), sync.run());
                };
                return Ok((Arc::new(layer), Some(Box::pin(work) as Background)));
            }
            let (layer, sweeper) = c.build()?;
            Ok((Arc::new(layer), Some(Box::pin(sweeper.run()) as Background)))
        })?;
    Ok(towergate_evasive::EvasiveLayer::clone(&layer))
}

/// The `[access_log]` layer, or a disabled one (it keeps the types). The writer (its file
/// and thread) is carried across reloads while `path`, `buffer` and `flush_interval` stay
/// the same; a new `format` applies at once.
fn access_log(config: &Config, carry: &Carryover) -> anyhow::Result<AccessLogLayer> {
    let Some(section) = &config.access_log else {
        return Ok(AccessLogLayer::disabled());
    };
    let c = &section.0;
    let format = c.validate()?;
    let fingerprint = format!("{:?} {} {:?}", c.file(), c.buffer, c.flush_interval);
    let writer = carry.reuse::<LogWriter, _>("access_log", &fingerprint, || {
        Ok((Arc::new(c.open_writer()?), None))
    })?;
    let layer = AccessLogLayer::new(format, LogWriter::clone(&writer));
    Ok(match config.server.names.first() {
        Some(name) => layer.server_name(name.as_str()),
        None => layer,
    })
}

/// Without a configured signature no answer names a server: the backends' `Server` headers
/// (product and version) are removed too.
fn strip_server<B>(mut res: Response<B>) -> Response<B> {
    res.headers_mut().remove(header::SERVER);
    res
}
