//! A running gateway: listeners bound, stack built, background work spawned; reloads swap
//! the stack without dropping a request.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};

use anyhow::Context as _;
use arc_swap::{ArcSwap, ArcSwapOption};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::Service;
use towergate_access_log::LogWriter;
use towergate_proxy_protocol::{ProxyProtocol, ProxyProtocolStats};

use crate::admin::Admin;
use crate::carry::Carryover;
use crate::config::Config;
use crate::server::{ServerOptions, Transport, serve};
use crate::stack;
use crate::status::Status;
use crate::tls::{self, Certificates};
use crate::workers::{Spread, Workers};

type Reloader = Box<dyn Fn(&Config) -> anyhow::Result<()> + Send + Sync>;

/// A gateway serving its config; dropping it stops it without waiting.
pub struct RunningGateway {
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    status: Arc<ArcSwap<Status>>,
    listen: Vec<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    tls_addrs: Vec<SocketAddr>,
    redirect_addrs: Vec<SocketAddr>,
    tls_listen: (Vec<SocketAddr>, Vec<SocketAddr>),
    certificates: Option<Certificates>,
    stop: watch::Sender<bool>,
    servers: JoinSet<()>,
    carry: Arc<Carryover>,
    generation: Arc<AtomicU64>,
    reloader: Reloader,
    config_path: Option<PathBuf>,
    access_log: Arc<ArcSwapOption<LogWriter>>,
    proxy_protocol: ProxyProtocols,
    /// `server.workers` as started (a change takes a restart).
    workers_config: usize,
    /// Declared last: dropped after everything that may still hand work to them.
    _workers: Workers,
}

impl RunningGateway {
    /// Binds every listener, builds the stack and starts serving.
    pub async fn start(config: Config) -> anyhow::Result<Self> {
        let carry = Arc::new(Carryover::new());
        carry.begin();
        let built = match stack::build(&config, &carry) {
            Ok(built) => built,
            Err(e) => {
                carry.rollback();
                return Err(e);
            }
        };
        let workers = Workers::start(config.server.workers, config.server.max_connections)?;
        let (addrs, listeners) = bind(&workers, &config.server.listen)?;
        let certificates = match &config.tls {
            Some(t) => Some(Certificates::new(tls::load(
                t,
                config.server.http2.enabled,
            )?)),
            None => None,
        };
        let tls_listen = tls_listen(&config);
        let (tls_addrs, tls_listeners) = bind(&workers, &tls_listen.0)?;
        let (redirect_addrs, redirect_listeners) = bind(&workers, &tls_listen.1)?;
        let admin_listener = match &config.admin {
            Some(admin) => Some(
                TcpListener::bind(admin.listen)
                    .await
                    .with_context(|| format!("cannot listen on {} (admin)", admin.listen))?,
            ),
            None => None,
        };
        let admin_addr = admin_listener
            .as_ref()
            .map(|l| l.local_addr())
            .transpose()?;
        carry.commit();
        spawn_all(built.background);
        let access_log = Arc::new(ArcSwapOption::from(built.access_log.map(Arc::new)));

        let current = Current {
            service: Arc::new(ArcSwap::from_pointee(built.service)),
            local: None,
        };
        let generation = Arc::new(AtomicU64::new(1));
        let mut first_status = built.status;
        first_status.generation = 1;
        let server_limits = Arc::new(ArcSwap::from_pointee(config.limits.0.server_limits()));
        let proxy_protocol = ProxyProtocols::new(&config);
        first_status.proxy_protocol = proxy_protocol.all();
        first_status.workers = Some(workers.load());
        let status = Arc::new(ArcSwap::from_pointee(first_status));
        let reloader: Reloader = {
            let proxy_protocol = proxy_protocol.clone();
            let worker_load = workers.load();
            let current = current.service.clone();
            let carry = carry.clone();
            let generation = generation.clone();
            let status = status.clone();
            let server_limits = server_limits.clone();
            let access_log = access_log.clone();
            Box::new(move |config: &Config| {
                carry.begin();
                match stack::build(config, &carry) {
                    Ok(built) => {
                        server_limits.store(Arc::new(config.limits.0.server_limits()));
                        worker_load.set_max_connections(config.server.max_connections);
                        proxy_protocol.update(config);
                        current.store(Arc::new(built.service));
                        carry.commit();
                        // A reload reopens the access log, as Apache's graceful restart does.
                        if let Some(w) = &built.access_log {
                            w.reopen();
                        }
                        access_log.store(built.access_log.map(Arc::new));
                        spawn_all(built.background);
                        let mut new_status = built.status;
                        new_status.generation = generation.fetch_add(1, Ordering::Relaxed) + 1;
                        new_status.proxy_protocol = proxy_protocol.all();
                        new_status.workers = Some(worker_load.clone());
                        status.store(Arc::new(new_status));
                        Ok(())
                    }
                    Err(e) => {
                        carry.rollback();
                        Err(e)
                    }
                }
            })
        };

        let (stop, stopped) = watch::channel(false);
        let opts = ServerOptions {
            header_read_timeout: config.server.header_read_timeout,
            grace_period: config.server.grace_period,
            http2: config.server.http2.clone(),
            limits: server_limits,
            proxy_protocol: proxy_protocol.plain.clone(),
        };
        let tls_opts = ServerOptions {
            proxy_protocol: proxy_protocol.tls.clone(),
            ..opts.clone()
        };
        let mut servers = JoinSet::new();
        // Each worker accepts on its own socket of every address and serves what it accepts.
        let mut on_workers =
            |listeners: Vec<Vec<TcpListener>>,
             serving: &dyn Fn(TcpListener, Spread) -> ServeFuture| {
                for per_worker in listeners {
                    for (index, listener) in per_worker.into_iter().enumerate() {
                        let served = workers.spawn(index, serving(listener, workers.spread(index)));
                        servers.spawn(async move {
                            let _ = served.await;
                        });
                    }
                }
            };
        on_workers(listeners, &|listener, spread| {
            Box::pin(serve(
                listener,
                current.clone(),
                opts.clone(),
                Transport::Plain,
                spread,
                stopped.clone(),
            ))
        });
        if let Some(certificates) = &certificates {
            on_workers(tls_listeners, &|listener, spread| {
                Box::pin(serve(
                    listener,
                    current.clone(),
                    tls_opts.clone(),
                    Transport::Tls(certificates.clone()),
                    spread,
                    stopped.clone(),
                ))
            });
            let https_port = tls_addrs.first().map_or(443, |a| a.port());
            let names: Arc<[String]> = config.server.names.clone().into();
            let redirect = tower::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                std::future::ready(Ok::<_, std::convert::Infallible>(tls::redirect_to_https(
                    &req, https_port, &names,
                )))
            });
            on_workers(redirect_listeners, &|listener, spread| {
                Box::pin(serve(
                    listener,
                    redirect.clone(),
                    tls_opts.clone(),
                    Transport::Plain,
                    spread,
                    stopped.clone(),
                ))
            });
        }
        if let (Some(listener), Some(admin)) = (admin_listener, &config.admin) {
            let admin = Admin::new(status.clone(), &admin.allow);
            servers.spawn(crate::admin::serve(listener, admin, stopped.clone()));
        }
        for addr in &addrs {
            tracing::info!(%addr, "listening");
        }
        for addr in &tls_addrs {
            tracing::info!(%addr, "listening (TLS)");
        }
        for addr in &redirect_addrs {
            tracing::info!(%addr, "listening (redirects to https)");
        }
        if let Some(addr) = admin_addr {
            tracing::info!(%addr, "admin listener (status page, /status.json, /metrics)");
        }
        Ok(Self {
            addrs,
            admin_addr,
            status,
            listen: config.server.listen.clone(),
            admin_listen: config.admin.as_ref().map(|a| a.listen),
            tls_addrs,
            redirect_addrs,
            tls_listen,
            certificates,
            stop,
            servers,
            carry,
            generation,
            reloader,
            config_path: None,
            access_log,
            proxy_protocol,
            workers_config: config.server.workers,
            _workers: workers,
        })
    }

    /// Remembers the file the config came from, for reloads on SIGHUP.
    pub fn with_config_path(mut self, path: PathBuf) -> Self {
        self.config_path = Some(path);
        self
    }

    /// The bound listen addresses, in config order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The admin listener's address, if configured.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The current generation's status.
    pub fn status(&self) -> Arc<Status> {
        self.status.load_full()
    }

    /// The first listen address (the first TLS one when there is no plain listener).
    pub fn addr(&self) -> SocketAddr {
        self.addrs
            .first()
            .copied()
            .unwrap_or_else(|| self.tls_addrs[0])
    }

    /// The bound TLS listen addresses (`[tls] listen`), in config order.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The bound redirect-to-https addresses (`[tls] redirect_http`), in config order.
    pub fn redirect_addrs(&self) -> &[SocketAddr] {
        &self.redirect_addrs
    }

    /// The access log's writer, when `[access_log]` is on: to [`flush`](LogWriter::flush)
    /// or [`reopen`](LogWriter::reopen) it.
    pub fn access_log(&self) -> Option<LogWriter> {
        self.access_log.load_full().map(|w| LogWriter::clone(&w))
    }

    /// Reopens the access log and the error log files by their paths, after log rotation
    /// moved them (what `SIGUSR1` does).
    pub fn reopen_logs(&self) {
        crate::error_log::reopen();
        tracing::info!("reopening the access and error logs");
        if let Some(w) = self.access_log.load_full() {
            w.reopen();
        }
    }

    /// The PROXY protocol counts of the `[server]` listeners and of the `[tls]` ones
    /// (`None` where it is off), kept across reloads.
    pub fn proxy_protocol_stats(&self) -> (Option<ProxyProtocolStats>, Option<ProxyProtocolStats>) {
        let stats = |s: &ArcSwapOption<ProxyProtocol>| s.load().as_ref().map(|p| p.stats());
        (
            stats(&self.proxy_protocol.plain),
            stats(&self.proxy_protocol.tls),
        )
    }

    /// The config generation serving now: 1 at start, one more per successful reload.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Relaxed)
    }

    /// Swaps in a stack built from `config`: requests from now on use it, requests in
    /// flight finish on the old one. On error the old config keeps serving. Listener
    /// addresses are bound at start; a change to them takes a restart (and is refused).
    pub fn reload(&self, config: &Config) -> anyhow::Result<()> {
        if config.server.listen != self.listen
            || config.admin.as_ref().map(|a| a.listen) != self.admin_listen
        {
            anyhow::bail!(
                "server.listen or admin.listen changed; listeners are bound at start, so that takes a restart"
            );
        }
        if config.server.workers != self.workers_config {
            tracing::warn!(
                "server.workers changed; the worker threads are started once, so the new count takes effect at the next restart"
            );
        }
        if tls_listen(config) != self.tls_listen
            || config.tls.is_some() != self.certificates.is_some()
        {
            anyhow::bail!(
                "tls.listen or tls.redirect_http changed (or [tls] was added or removed); listeners are bound at start, so that takes a restart"
            );
        }
        // Certificates are read before the stack is swapped, so a bad file refuses the
        // whole reload; they are swapped in after it, so both change together.
        let certificates = match (&self.certificates, &config.tls) {
            (Some(_), Some(t)) => Some(tls::load(t, config.server.http2.enabled)?),
            _ => None,
        };
        (self.reloader)(config)?;
        if let (Some(current), Some(new)) = (&self.certificates, certificates) {
            current.replace(new);
        }
        tracing::info!(generation = self.generation(), "configuration reloaded");
        Ok(())
    }

    /// Re-reads the config file and reloads; on error logs why and keeps serving.
    pub fn reload_from_file(&self) -> anyhow::Result<()> {
        let path = self
            .config_path
            .as_ref()
            .context("no config file to reload from")?;
        let result = Config::load(path)
            .map_err(anyhow::Error::from)
            .and_then(|config| self.reload(&config));
        if let Err(e) = &result {
            tracing::error!(error = %format!("{e:#}"), "reload refused; the previous configuration keeps serving");
        }
        result
    }

    /// Stops accepting, lets requests in flight finish (within the grace period), and
    /// stops the background work.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        while self.servers.join_next().await.is_some() {}
        self.carry.stop_all();
        if let Some(w) = self.access_log.load_full() {
            if let Err(e) = w.flush().await {
                tracing::error!(error = %e, "the access log's last lines could not be written");
            }
        }
    }

    /// Serves until SIGINT or SIGTERM, then shuts down gracefully; SIGHUP reloads the
    /// config file; SIGUSR1 reopens the log files.
    pub async fn run_until_signal(self) -> anyhow::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut hup = signal(SignalKind::hangup())?;
        let mut usr1 = signal(SignalKind::user_defined1())?;
        loop {
            tokio::select! {
                r = tokio::signal::ctrl_c() => { r?; break; }
                _ = term.recv() => break,
                _ = hup.recv() => { let _ = self.reload_from_file(); }
                _ = usr1.recv() => self.reopen_logs(),
            }
        }
        tracing::info!("shutting down: no new connections; finishing requests in flight");
        self.shutdown().await;
        Ok(())
    }
}

impl Drop for RunningGateway {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.servers.abort_all();
    }
}

/// The TLS and redirect listen addresses of `config`.
fn tls_listen(config: &Config) -> (Vec<SocketAddr>, Vec<SocketAddr>) {
    config.tls.as_ref().map_or_else(Default::default, |t| {
        (t.listen.clone(), t.redirect_http.clone())
    })
}

/// A listener's accept loop, boxed so that the plain, TLS and redirect listeners share
/// one spawning path (it runs once per listener, not per request).
type ServeFuture = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Binds each address once per worker: the bound addresses, and for each address one
/// listener per worker.
#[allow(clippy::type_complexity)]
fn bind(
    workers: &Workers,
    addrs: &[SocketAddr],
) -> anyhow::Result<(Vec<SocketAddr>, Vec<Vec<TcpListener>>)> {
    let mut bound = Vec::with_capacity(addrs.len());
    let mut listeners = Vec::with_capacity(addrs.len());
    for addr in addrs {
        let (local, per_worker) = workers.bind(*addr)?;
        bound.push(local);
        listeners.push(per_worker);
    }
    Ok((bound, listeners))
}

fn spawn_all(work: Vec<stack::Background>) {
    for w in work {
        tokio::spawn(w);
    }
}

/// The PROXY protocol acceptors of the `[server]` and `[tls]` listeners, swapped on reload.
#[derive(Clone)]
struct ProxyProtocols {
    plain: Arc<ArcSwapOption<ProxyProtocol>>,
    tls: Arc<ArcSwapOption<ProxyProtocol>>,
}

impl ProxyProtocols {
    fn new(config: &Config) -> Self {
        let this = Self {
            plain: Arc::default(),
            tls: Arc::default(),
        };
        this.update(config);
        this
    }

    /// Stores the acceptors `config` asks for; counts carry over.
    fn update(&self, config: &Config) {
        let timeout = config.server.header_read_timeout;
        let server = &config.server;
        let tls = config.tls.as_ref();
        for (slot, on, from) in [
            (
                &self.plain,
                server.proxy_protocol,
                &server.proxy_protocol_from[..],
            ),
            (
                &self.tls,
                tls.is_some_and(|t| t.proxy_protocol),
                tls.map_or(&[][..], |t| &t.proxy_protocol_from[..]),
            ),
        ] {
            let new = on.then(|| {
                let builder = ProxyProtocol::builder()
                    .trusted_networks(from.iter().map(|n| n.0))
                    .timeout(timeout);
                match slot.load_full() {
                    Some(old) => builder.keep_stats(&old).build(),
                    None => builder.build(),
                }
            });
            slot.store(new.map(Arc::new));
        }
    }

    /// The acceptors on, by listener group, for the status page and metrics.
    fn all(&self) -> Vec<(&'static str, ProxyProtocol)> {
        [("server", &self.plain), ("tls", &self.tls)]
            .into_iter()
            .filter_map(|(name, slot)| slot.load_full().map(|p| (name, ProxyProtocol::clone(&p))))
            .collect()
    }
}

/// The stack serving now. Each connection's instance keeps its own copy of the current
/// generation's service and uses it for every request until a reload swaps in a new
/// one: a request costs one check of the generation, not a clone of the whole stack
/// (a dozen reference counts shared by every worker).
struct Current<S> {
    service: Arc<ArcSwap<S>>,
    local: Option<(Arc<S>, S)>,
}

impl<S> Clone for Current<S> {
    fn clone(&self) -> Self {
        Self {
            service: self.service.clone(),
            local: None,
        }
    }
}

impl<S, R> Service<R> for Current<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = crate::server::CallNow<S, R>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: R) -> Self::Future {
        let now = self.service.load();
        let stale = self
            .local
            .as_ref()
            .is_none_or(|(generation, _)| !Arc::ptr_eq(generation, &now));
        if stale {
            let generation = arc_swap::Guard::into_inner(now);
            let service = S::clone(&generation);
            self.local = Some((generation, service));
        }
        let (_, service) = self.local.as_mut().expect("set above");
        crate::server::call_now(service, req)
    }
}
