//! [`EvasiveLayer`], its builder, and the [`Evasive`] service.

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tokio::sync::mpsc;
use tower_layer::Layer;
use tower_service::Service;
use towergate_client_addr::client_ip;
use towergate_guard::refusal;

use crate::config::EvasiveError;
use crate::future::ResponseFuture;
use crate::memory::{MAX_PERIOD, MemoryStore};
use crate::store::{Block, Limits, Reason, Store, Verdict};
use crate::sweeper::{Report, Sweeper};
use crate::whitelist::{Whitelist, canonical};

pub(crate) const TARGET: &str = "towergate_evasive";
const FORBIDDEN: &str = "403 Forbidden\n";
/// Block reports waiting for the sweeper; more are dropped (and counted).
const REPORT_QUEUE: usize = 256;
/// The largest table [`EvasiveBuilder::build`] accepts, in bytes, at its worst.
const MAX_TABLE_BYTES: u64 = 8 << 30;

/// The most requests per URI and interval (`page_count`) the layer accepts.
pub const MAX_PAGE_COUNT: u32 = 64;
/// The most requests per interval (`site_count`) the layer accepts.
pub const MAX_SITE_COUNT: u32 = 100_000;

// === impl EvasiveLayer ===

/// Answers 403 to clients that flood one URI or the site. Cheap to clone.
///
/// See the [crate docs](crate) for the semantics and an example.
#[derive(Clone)]
pub struct EvasiveLayer {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn Store>,
    whitelist: Whitelist,
    ipv6_prefix: u8,
    limits: Limits,
    reporting: bool,
    reports: mpsc::Sender<Report>,
    blocks: AtomicU64,
    rejected: AtomicU64,
    unidentified: AtomicU64,
    pub(crate) reports_dropped: AtomicU64,
}

/// Counts of the layer's decisions since it was built, and the table's size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EvasiveStats {
    /// Blocks started (a client went over a limit).
    pub blocks: u64,
    /// Requests answered 403 (the one that started a block included).
    pub rejected: u64,
    /// Requests without a client address, let through uncounted.
    pub unidentified: u64,
    /// Clients tracked now.
    pub tracked: usize,
    /// Tracked clients forgotten to make room (the table was full).
    pub evicted: u64,
    /// Block reports (log file, command) dropped: the [`Sweeper`] was not running or
    /// could not keep up.
    pub reports_dropped: u64,
}

impl fmt::Debug for EvasiveLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvasiveLayer")
            .field("limits", &self.shared.limits)
            .field("whitelist", &self.shared.whitelist)
            .field("ipv6_prefix", &self.shared.ipv6_prefix)
            .finish_non_exhaustive()
    }
}

impl EvasiveLayer {
    /// A builder, starting from mod_evasive's defaults.
    pub fn builder() -> EvasiveBuilder {
        EvasiveBuilder::default()
    }

    /// Counts a request from `client` for `path` (the URI's path, without the query) and
    /// answers whether it passes, as the service does. Whitelisted clients always pass,
    /// uncounted.
    pub fn check(&self, client: IpAddr, path: &str) -> Verdict {
        self.shared.check(client, path)
    }

    /// The decisions counted so far, and the table's size.
    pub fn stats(&self) -> EvasiveStats {
        let s = &self.shared;
        EvasiveStats {
            blocks: s.blocks.load(Relaxed),
            rejected: s.rejected.load(Relaxed),
            unidentified: s.unidentified.load(Relaxed),
            tracked: s.store.tracked(),
            evicted: s.store.evicted(),
            reports_dropped: s.reports_dropped.load(Relaxed),
        }
    }

    /// The blocks in force now.
    pub fn blocks(&self) -> Vec<Block> {
        self.shared.store.blocks(now())
    }

    /// Lifts the block on `client` (the address, or any address in its IPv6 network);
    /// `true` if it was blocked.
    pub fn unblock(&self, client: IpAddr) -> bool {
        let net = self.shared.key(client);
        self.shared.store.unblock(net, now())
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.shared.limits
    }

    /// The whitelist.
    pub fn whitelist(&self) -> &Whitelist {
        &self.shared.whitelist
    }

    /// The state of a shared store's link to the other instances (`None` for a store of
    /// one instance, such as the default [`MemoryStore`]).
    pub fn link(&self) -> Option<crate::LinkStatus> {
        self.shared.store.link()
    }

    /// The store behind the layer.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.shared.store
    }
}

impl<S> Layer<S> for EvasiveLayer {
    type Service = Evasive<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Evasive {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The current time on the clock the stores count with (tokio's, so that tests can pause
/// it).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl Shared {
    /// The key a client is counted under: its IPv4 address, or its IPv6 network.
    fn key(&self, ip: IpAddr) -> IpNet {
        match canonical(ip) {
            IpAddr::V4(a) => IpNet::V4(Ipv4Net::from(a)),
            IpAddr::V6(a) => IpNet::V6(
                Ipv6Net::new(a, self.ipv6_prefix)
                    .map(|n| n.trunc())
                    .unwrap_or_else(|_| Ipv6Net::from(a)),
            ),
        }
    }

    fn check(&self, ip: IpAddr, path: &str) -> Verdict {
        if !self.whitelist.is_empty() && self.whitelist.contains(ip) {
            return Verdict::Pass;
        }
        let client = self.key(ip);
        let now = now();
        let verdict = self.store.check(client, path, now);
        match verdict {
            Verdict::Pass => {}
            Verdict::Blocked => {
                self.rejected.fetch_add(1, Relaxed);
            }
            Verdict::NewBlock { reason, until } => {
                self.rejected.fetch_add(1, Relaxed);
                self.blocks.fetch_add(1, Relaxed);
                self.started(client, reason, until.saturating_duration_since(now));
            }
        }
        verdict
    }

    /// Reports a new block: one warning, and a report for the sweeper to deliver.
    #[cold]
    fn started(&self, client: IpNet, reason: Reason, lasts: Duration) {
        let since = SystemTime::now();
        let until = since + lasts;
        tracing::warn!(
            target: TARGET,
            client = %Address(client),
            reason = reason.as_str(),
            until = %humantime::format_rfc3339_seconds(until),
            "client blocked: over the {reason} limit"
        );
        if self.reporting {
            let report = Report {
                client,
                reason,
                since,
                until,
            };
            if self.reports.try_send(report).is_err() {
                self.reports_dropped.fetch_add(1, Relaxed);
            }
        }
    }
}

/// A client key as an operator writes it: `10.0.0.1`, `2001:db8::1`, `2001:db8:1:2::/64`.
pub(crate) struct Address(pub(crate) IpNet);

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.prefix_len() == self.0.max_prefix_len() {
            self.0.addr().fmt(f)
        } else {
            self.0.fmt(f)
        }
    }
}

// === impl EvasiveBuilder ===

/// Builds an [`EvasiveLayer`] in code. Starts from mod_evasive's defaults: page count 2
/// per second, site count 50 per second, blocked for 10 seconds, 100000 clients tracked,
/// IPv6 counted per /64.
#[derive(Clone)]
pub struct EvasiveBuilder {
    limits: Limits,
    max_tracked: usize,
    whitelist: Whitelist,
    ipv6_prefix: u8,
    log_dir: Option<PathBuf>,
    command: Option<String>,
    store: Option<Arc<dyn Store>>,
}

impl Default for EvasiveBuilder {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            max_tracked: 100_000,
            whitelist: Whitelist::new(),
            ipv6_prefix: 64,
            log_dir: None,
            command: None,
            store: None,
        }
    }
}

impl fmt::Debug for EvasiveBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvasiveBuilder")
            .field("limits", &self.limits)
            .field("max_tracked", &self.max_tracked)
            .field("whitelist", &self.whitelist)
            .field("ipv6_prefix", &self.ipv6_prefix)
            .field("log_dir", &self.log_dir)
            .field("command", &self.command)
            .field("store", &self.store.is_some())
            .finish()
    }
}

impl EvasiveBuilder {
    /// `DOSPageCount`: requests for one URI allowed within the page interval; the next
    /// one is refused (1..=64).
    pub fn page_count(mut self, n: u32) -> Self {
        self.limits.page_count = n;
        self
    }

    /// `DOSPageInterval`: the sliding window for the page count (1 ms ..= 24 days).
    pub fn page_interval(mut self, d: Duration) -> Self {
        self.limits.page_interval = d;
        self
    }

    /// `DOSSiteCount`: requests for any URIs allowed within the site interval; the next
    /// one is refused (1..=100000).
    pub fn site_count(mut self, n: u32) -> Self {
        self.limits.site_count = n;
        self
    }

    /// `DOSSiteInterval`: the sliding window for the site count (1 ms ..= 24 days).
    pub fn site_interval(mut self, d: Duration) -> Self {
        self.limits.site_interval = d;
        self
    }

    /// `DOSBlockingPeriod`: how long a blocked client is refused after its last request
    /// (1 ms ..= 24 days).
    pub fn blocking_period(mut self, d: Duration) -> Self {
        self.limits.blocking_period = d;
        self
    }

    /// All five limits at once.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The most clients tracked at once (`DOSHashTableSize`'s role).
    pub fn max_tracked(mut self, n: usize) -> Self {
        self.max_tracked = n;
        self
    }

    /// `DOSWhitelist`: never count this address or network. May be called repeatedly.
    pub fn whitelist(mut self, net: impl Into<IpNet>) -> Self {
        self.whitelist.insert(net.into());
        self
    }

    /// Count IPv6 clients per network of this prefix length (default 64; 128 counts
    /// each address on its own).
    pub fn ipv6_prefix(mut self, len: u8) -> Self {
        self.ipv6_prefix = len;
        self
    }

    /// `DOSLogDir`: write `dos-<address>` in this directory when a block starts.
    pub fn log_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.log_dir = Some(dir.into());
        self
    }

    /// `DOSSystemCommand`: run this with `sh -c` when a block starts, `%s` replaced by
    /// the blocked address.
    pub fn command(mut self, command: impl Into<String>) -> Self {
        self.command = Some(command.into());
        self
    }

    /// Count in this store instead of a [`MemoryStore`] (which `max_tracked` then sizes).
    pub fn store(mut self, store: Arc<dyn Store>) -> Self {
        self.store = Some(store);
        self
    }

    /// Checks the values and builds the layer and its [`Sweeper`], which the caller
    /// spawns (`tokio::spawn(sweeper.run())`).
    pub fn build(self) -> Result<(EvasiveLayer, Sweeper), EvasiveError> {
        let l = &self.limits;
        if l.page_count == 0 || l.page_count > MAX_PAGE_COUNT {
            return Err(EvasiveError::new(
                "page_count",
                format!(
                    "{} is out of range; allow 1 to {MAX_PAGE_COUNT} requests per URI and interval (mod_evasive's default is 2)",
                    l.page_count
                ),
            ));
        }
        if l.site_count == 0 || l.site_count > MAX_SITE_COUNT {
            return Err(EvasiveError::new(
                "site_count",
                format!(
                    "{} is out of range; allow 1 to {MAX_SITE_COUNT} requests per interval (mod_evasive's default is 50)",
                    l.site_count
                ),
            ));
        }
        for (key, d) in [
            ("page_interval", l.page_interval),
            ("site_interval", l.site_interval),
            ("blocking_period", l.blocking_period),
        ] {
            if d < Duration::from_millis(1) || d > MAX_PERIOD {
                return Err(EvasiveError::new(
                    key,
                    format!(
                        "{} is out of range; write a duration from \"1ms\" to \"24days\", e.g. \"1s\"",
                        humantime::format_duration(d)
                    ),
                ));
            }
        }
        if self.ipv6_prefix > 128 {
            return Err(EvasiveError::new(
                "ipv6_prefix",
                format!(
                    "{} is not an IPv6 prefix length; use 0 to 128 (64 counts each /64 as one client)",
                    self.ipv6_prefix
                ),
            ));
        }
        if let Some(dir) = self.log_dir.as_ref().filter(|d| !d.is_dir()) {
            return Err(EvasiveError::new(
                "log_dir",
                format!(
                    "`{}` is not a directory; create it or remove the key",
                    dir.display()
                ),
            ));
        }
        if self.command.as_ref().is_some_and(|c| c.trim().is_empty()) {
            return Err(EvasiveError::new(
                "command",
                "is empty; give a shell command (%s is replaced by the address) or remove the key",
            ));
        }
        let store = match self.store {
            Some(store) => store,
            None => {
                if self.max_tracked == 0 {
                    return Err(EvasiveError::new(
                        "max_tracked",
                        "must be at least 1; it caps the clients tracked at once (the article uses 314739)",
                    ));
                }
                let store = MemoryStore::new(&self.limits, self.max_tracked);
                let bound = store.bytes_per_client() as u64 * self.max_tracked as u64;
                if bound > MAX_TABLE_BYTES {
                    return Err(EvasiveError::new(
                        "max_tracked",
                        format!(
                            "{} clients of up to {} bytes each could take {:.1} GiB (at most 8 GiB); lower max_tracked, site_count or page_count",
                            self.max_tracked,
                            store.bytes_per_client(),
                            bound as f64 / f64::from(1u32 << 30)
                        ),
                    ));
                }
                tracing::debug!(
                    target: TARGET,
                    max_tracked = self.max_tracked,
                    worst_case_mib = bound >> 20,
                    "flood table sized"
                );
                Arc::new(store) as Arc<dyn Store>
            }
        };
        let reporting = self.log_dir.is_some() || self.command.is_some();
        let (tx, rx) = mpsc::channel(REPORT_QUEUE);
        let shared = Arc::new(Shared {
            store: store.clone(),
            whitelist: self.whitelist,
            ipv6_prefix: self.ipv6_prefix,
            limits: self.limits,
            reporting,
            reports: tx,
            blocks: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            unidentified: AtomicU64::new(0),
            reports_dropped: AtomicU64::new(0),
        });
        let every = self
            .limits
            .page_interval
            .max(self.limits.site_interval)
            .clamp(Duration::from_secs(1), Duration::from_secs(60));
        let sweeper = Sweeper::new(
            Arc::downgrade(&shared),
            store,
            every,
            rx,
            self.log_dir,
            self.command,
        );
        Ok((EvasiveLayer { shared }, sweeper))
    }
}

// === impl Evasive ===

/// Answers 403 to flooding clients; built by [`EvasiveLayer`].
#[derive(Clone)]
pub struct Evasive<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for Evasive<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Evasive")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> Evasive<S> {
    /// Wraps `inner` with a layer's table and limits.
    pub fn new(inner: S, layer: &EvasiveLayer) -> Self {
        layer.layer(inner)
    }

    towergate_guard::inner_service_accessors!();
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for Evasive<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
    ResBody: From<Bytes>,
{
    type Response = Response<ResBody>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future, ResBody>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let Some(ip) = client_ip(&req) else {
            self.shared.unidentified.fetch_add(1, Relaxed);
            tracing::debug!(target: TARGET, "request without a client address: not counted");
            return ResponseFuture::inner(self.inner.call(req));
        };
        if self.shared.check(ip, req.uri().path()).is_pass() {
            ResponseFuture::inner(self.inner.call(req))
        } else {
            ResponseFuture::refused(forbidden())
        }
    }
}

fn forbidden<B: From<Bytes>>() -> Response<B> {
    refusal(
        StatusCode::FORBIDDEN,
        Bytes::from_static(FORBIDDEN.as_bytes()),
    )
}
