//! The gateway's configuration: one TOML file.
//!
//! The gateway owns `[server]` and `[[route]]`; each layer crate owns its own section's
//! struct. Unknown keys are errors, and every error names the file, line, column and key.
//! Values are checked while they are read (URLs, durations), so a bad value is reported at
//! its own position rather than after the fact.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use http::HeaderValue;
use serde::{Deserialize, Deserializer};
use toml::Spanned;
use towergate_client_addr::NetSpec;
use towergate_proxy::Upstream;
use towergate_request_limits::RequestLimitsConfig;

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners, names, timeouts.
    pub server: ServerConfig,
    /// Routes, matched by longest prefix (`ProxyPass`).
    #[serde(default, rename = "route")]
    pub routes: Vec<RouteConfig>,
    /// Balancer pools by name (`<Proxy balancer://NAME>` and its `BalancerMember`s).
    #[serde(default, rename = "pool")]
    pub pools: BTreeMap<String, Spanned<towergate_balancer::PoolConfig>>,
    /// The admin listener: status page, JSON, metrics (off when absent).
    #[serde(default)]
    pub admin: Option<crate::admin::AdminConfig>,
    /// TLS listeners and certificates (mod_ssl).
    #[serde(default)]
    pub tls: Option<crate::tls::TlsConfig>,
    /// How `https://` upstreams are verified (`SSLProxyCACertificateFile`, `SSLProxyVerify`).
    #[serde(default)]
    pub upstream_tls: UpstreamTlsConfig,
    /// `[limits]`: request line, header field and body limits (`LimitRequest*`).
    #[serde(default)]
    pub limits: Limits,
    /// `[client_addr]`: proxies trusted to report the client (`mod_remoteip`).
    #[serde(default)]
    pub client_addr: towergate_client_addr::ClientAddrConfig,
    /// `[acl]`: allow/deny by client address (`Order`, `Allow from`, `Deny from`).
    #[serde(default)]
    pub acl: towergate_acl::AclConfig,
    /// `[evasive]`: per-client flood blocking (mod_evasive's `DOS*` directives); off when
    /// absent.
    #[serde(default)]
    pub evasive: Option<towergate_evasive::EvasiveConfig>,
    /// `[charfilter]`: path character rules (the article's `RewriteRule ... [F]`).
    #[serde(default)]
    pub charfilter: towergate_charfilter::CharFilterConfig,
    /// `[expires]`: `Expires` and `Cache-Control: max-age` (`ExpiresDefault`, `ExpiresByType`).
    #[serde(default)]
    pub expires: Option<towergate_expires::ExpiresConfig>,
    /// `[error_pages]`: custom error answers (`ErrorDocument`, `ProxyErrorOverride`).
    #[serde(default)]
    pub error_pages: Option<towergate_error_pages::ErrorPagesConfig>,
    /// `[access_log]`: the access log (`CustomLog`, `LogFormat`); off when absent.
    #[serde(default)]
    pub access_log: Option<AccessLog>,
    /// `[error_log]`: the gateway's own messages (`ErrorLog`, `LogLevel`).
    #[serde(default)]
    pub error_log: crate::error_log::ErrorLogConfig,
    /// `[cluster]`: flood counts, blocks and operator intent shared with other instances
    /// through Redis (cargo feature `redis`); off when absent.
    #[serde(default)]
    pub cluster: Option<crate::cluster::Cluster>,
    /// `[waf]`: ModSecurity rules, e.g. the OWASP CRS (mod_security's
    /// `Include conf/modsecurity/*.conf`); needs the `waf` cargo feature.
    #[serde(default)]
    pub waf: Option<Spanned<crate::waf::WafSection>>,
    /// The `[waf]` rules, compiled when the file is read.
    #[cfg(feature = "waf")]
    #[serde(skip)]
    pub waf_layer: Option<towergate_waf::WafLayer>,
}

/// `[upstream_tls]`: verification of `https://` upstreams.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// PEM file with the CA certificates upstream certificates must chain to, instead of
    /// the system's roots (`SSLProxyCACertificateFile`).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any upstream certificate, for any name (`SSLProxyVerify none` with
    /// `SSLProxyCheckPeerName off`): anybody between the gateway and the upstream can
    /// then read and change the traffic. Logged as a warning at start.
    #[serde(default)]
    pub danger_accept_invalid_certs: bool,
}

impl UpstreamTlsConfig {
    /// The verification these settings ask for.
    pub fn build(&self) -> Result<towergate_proxy::UpstreamTls, String> {
        use towergate_proxy::UpstreamTls;
        match (&self.ca_file, self.danger_accept_invalid_certs) {
            (Some(_), true) => Err(
                "upstream_tls: ca_file and danger_accept_invalid_certs exclude each other; keep one"
                    .into(),
            ),
            (Some(path), false) => {
                UpstreamTls::from_ca_file(path).map_err(|e| format!("upstream_tls.ca_file: {e}"))
            }
            (None, true) => Ok(UpstreamTls::danger_accept_invalid_certs()),
            (None, false) => Ok(UpstreamTls::system_roots()),
        }
    }
}

/// `[server.http2]`: HTTP/2 from clients (ALPN `h2` on TLS listeners, prior-knowledge
/// cleartext `h2c` on plain ones). The largest header list comes from `[limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Http2Config {
    /// Serve HTTP/2 at all.
    #[serde(default = "defaults::yes")]
    pub enabled: bool,
    /// Streams one connection may have open at once (nginx `http2_max_concurrent_streams`).
    #[serde(default = "defaults::h2_max_concurrent_streams")]
    pub max_concurrent_streams: u32,
    /// Streams a client may open and reset before they are accepted, before the
    /// connection is closed (rapid-reset flood protection, CVE-2023-44487).
    #[serde(default = "defaults::h2_max_pending_accept_reset_streams")]
    pub max_pending_accept_reset_streams: usize,
    /// Streams the server may have to reset because of client errors before the
    /// connection is closed (reset-flood protection, CVE-2019-9514 and kin).
    #[serde(default = "defaults::h2_max_local_error_reset_streams")]
    pub max_local_error_reset_streams: usize,
}

impl Default for Http2Config {
    fn default() -> Self {
        Self {
            enabled: true,
            max_concurrent_streams: defaults::h2_max_concurrent_streams(),
            max_pending_accept_reset_streams: defaults::h2_max_pending_accept_reset_streams(),
            max_local_error_reset_streams: defaults::h2_max_local_error_reset_streams(),
        }
    }
}

/// `[server]`: how the gateway listens and forwards.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to listen on (Apache `Listen`); may be empty when `[tls] listen` names some.
    #[serde(default)]
    pub listen: Vec<SocketAddr>,
    /// The names this server answers to (`ServerName`, `ServerAlias`), without port.
    /// An absolute-form request target naming another host is refused.
    #[serde(default)]
    pub names: Vec<String>,
    /// Time to wait for an upstream's response headers, and the longest a response body
    /// waits for its next bytes (Apache `Timeout`).
    #[serde(default = "defaults::timeout", with = "duration")]
    pub timeout: Duration,
    /// Time allowed to connect to an upstream.
    #[serde(default = "defaults::connect_timeout", with = "duration")]
    pub connect_timeout: Duration,
    /// How long idle upstream connections stay pooled.
    #[serde(default = "defaults::upstream_idle_timeout", with = "duration")]
    pub upstream_idle_timeout: Duration,
    /// Time a client has to send a request's headers (slowloris protection).
    #[serde(default = "defaults::header_read_timeout", with = "duration")]
    pub header_read_timeout: Duration,
    /// Send the client's `Host` upstream (`ProxyPreserveHost`).
    #[serde(default = "defaults::yes")]
    pub preserve_host: bool,
    /// Time requests in flight get to finish on shutdown.
    #[serde(default = "defaults::grace_period", with = "duration")]
    pub grace_period: Duration,
    /// Where `towergate run` writes its process id, for `towergate reload` (Apache `PidFile`).
    #[serde(default)]
    pub pid_file: Option<PathBuf>,
    /// How long an upgraded connection (WebSocket) may carry no byte either way before
    /// it is closed.
    #[serde(default = "defaults::tunnel_idle_timeout", with = "duration")]
    pub tunnel_idle_timeout: Duration,
    /// HTTP/2 from clients.
    #[serde(default)]
    pub http2: Http2Config,
    /// Worker threads serving connections, each with its own single-threaded runtime and
    /// upstream connection pools (nginx's `worker_processes`); `0`, the default: one per
    /// CPU. Taken at start; a change takes a restart.
    #[serde(default)]
    pub workers: usize,
    /// Client connections served at once, over all listeners and workers (nginx's
    /// `worker_connections`, HAProxy's `maxconn`); `0`: no limit. At the limit new
    /// connections wait in the listen queue until one closes (each worker's accept loop
    /// may take one more while it waits for room). A reload applies it.
    #[serde(default = "defaults::max_connections")]
    pub max_connections: usize,
    /// The `Server` header of every answer (ModSecurity's `SecServerSignature`); without it
    /// answers carry no `Server` header at all, the backends' included.
    #[serde(default)]
    pub signature: Signature,
    /// Connections on `listen` start with a PROXY protocol header (v1 or v2) naming the
    /// client, sent by an L4 balancer in front (HAProxy `bind ... accept-proxy`, nginx
    /// `listen ... proxy_protocol`). The header's address becomes the client's for every
    /// layer. Connections from outside `proxy_protocol_from`, or without a valid header
    /// within `header_read_timeout`, are closed.
    #[serde(default)]
    pub proxy_protocol: bool,
    /// The balancers trusted to send the PROXY protocol header (addresses or CIDR
    /// networks); required with `proxy_protocol = true`.
    #[serde(default, deserialize_with = "proxy_protocol_from::server")]
    pub proxy_protocol_from: Vec<NetSpec>,
}

/// `proxy_protocol_from`, read with its key in errors.
pub(crate) mod proxy_protocol_from {
    use serde::{Deserialize, Deserializer};
    use towergate_client_addr::NetSpec;

    fn read<'de, D: Deserializer<'de>>(d: D, key: &str) -> Result<Vec<NetSpec>, D::Error> {
        let list = Vec::<String>::deserialize(d)?;
        list.iter()
            .map(|s| {
                s.parse::<NetSpec>()
                    .map_err(|e| serde::de::Error::custom(format!("{key}: {e}")))
            })
            .collect()
    }

    pub fn server<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NetSpec>, D::Error> {
        read(d, "server.proxy_protocol_from")
    }

    pub fn tls<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<NetSpec>, D::Error> {
        read(d, "tls.proxy_protocol_from")
    }
}

/// `server.signature`, checked where it is written: a header value, or none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signature(pub Option<HeaderValue>);

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() {
            return Ok(Self(None));
        }
        HeaderValue::from_str(&s).map(|v| Self(Some(v))).map_err(|_| {
            serde::de::Error::custom(format!(
                "server.signature {s:?} cannot be sent as a header: use visible ASCII characters and spaces, \
                 e.g. \"your_hostname.com\" (or \"\" for no Server header)"
            ))
        })
    }
}

/// `[access_log]`, checked where it is written (the format is parsed; the file is opened
/// when the stack is built).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLog(pub towergate_access_log::AccessLogConfig);

impl<'de> Deserialize<'de> for AccessLog {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let config = towergate_access_log::AccessLogConfig::deserialize(d)?;
        config.validate().map_err(serde::de::Error::custom)?;
        Ok(Self(config))
    }
}

/// `[limits]`, checked where it is written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits(pub RequestLimitsConfig);

impl<'de> Deserialize<'de> for Limits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let limits = RequestLimitsConfig::deserialize(d)?;
        limits.validate().map_err(serde::de::Error::custom)?;
        Ok(Self(limits))
    }
}

/// `[[route]]`: a front prefix and where it leads (`ProxyPass`/`ProxyPassReverse`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// The front path prefix, e.g. `/news_rss/`.
    pub prefix: Spanned<RoutePrefix>,
    /// A name for logs and metrics; the prefix by default.
    #[serde(default)]
    pub name: Option<String>,
    /// A single origin, e.g. `http://news_server.domain.lan/news_rss/`.
    #[serde(default)]
    pub upstream: Option<UpstreamUrl>,
    /// A balancer pool named in `[pool.NAME]` (`ProxyPass /x balancer://NAME/`), instead
    /// of `upstream`.
    #[serde(default)]
    pub pool: Option<Spanned<String>>,
    /// Replace this route's backend error answers with `[error_pages]` documents too
    /// (Apache `ProxyErrorOverride On` in its `<Location>`).
    #[serde(default)]
    pub override_errors: bool,
}

/// A route prefix: starts with `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutePrefix(pub String);

impl<'de> Deserialize<'de> for RoutePrefix {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if !s.starts_with('/') {
            return Err(serde::de::Error::custom(format!(
                "route prefix `{s}` must start with '/'"
            )));
        }
        match towergate_proxy::normalize_path(&s) {
            Ok(n) if n == s => Ok(Self(s)),
            _ => Err(serde::de::Error::custom(format!(
                "route prefix `{s}` is not a normalised path (no `.`/`..` segments, doubled slashes or encoded separators)"
            ))),
        }
    }
}

/// An upstream URL, parsed and checked where it is written.
#[derive(Debug, Clone)]
pub struct UpstreamUrl(pub Arc<Upstream>);

impl<'de> Deserialize<'de> for UpstreamUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Upstream::parse(&s)
            .map(|u| Self(Arc::new(u)))
            .map_err(serde::de::Error::custom)
    }
}

mod defaults {
    use std::time::Duration;

    pub fn timeout() -> Duration {
        Duration::from_secs(180)
    }
    pub fn connect_timeout() -> Duration {
        Duration::from_secs(5)
    }
    pub fn upstream_idle_timeout() -> Duration {
        Duration::from_secs(90)
    }
    pub fn header_read_timeout() -> Duration {
        Duration::from_secs(30)
    }
    pub fn max_connections() -> usize {
        10_000
    }
    pub fn grace_period() -> Duration {
        Duration::from_secs(30)
    }
    pub fn yes() -> bool {
        true
    }
    pub fn tunnel_idle_timeout() -> Duration {
        Duration::from_secs(300)
    }
    pub fn h2_max_concurrent_streams() -> u32 {
        128
    }
    pub fn h2_max_pending_accept_reset_streams() -> usize {
        20
    }
    pub fn h2_max_local_error_reset_streams() -> usize {
        1024
    }
}

/// Human durations: `"180s"`, `"2m"`, `"1h 30m"`, `"250ms"`.
pub mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    /// Reads a human duration.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "`{s}` is not a duration ({e}); write e.g. \"30s\", \"2m\", \"250ms\""
            ))
        })
    }
}

/// A configuration error, located in its file.
#[derive(Debug)]
pub struct ConfigError {
    /// The file (or a description of the source).
    pub file: PathBuf,
    /// 1-based line and column, when known.
    pub position: Option<(usize, usize)>,
    /// What is wrong, naming the key.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.position {
            Some((line, col)) => {
                write!(f, "{}:{line}:{col}: {}", self.file.display(), self.message)
            }
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    /// An error at byte offset `at` of `text`.
    pub fn at(file: &Path, text: &str, at: Option<usize>, message: impl Into<String>) -> Self {
        Self {
            file: file.to_owned(),
            position: at.map(|at| line_col(text, at)),
            message: message.into(),
        }
    }
}

/// The dotted path of the key whose name or value holds byte `at` of `text` (e.g.
/// `server.timeout`, `pool.web.members[0].url`), for an error the TOML deserializer
/// reports by position only.
fn key_at(text: &str, at: usize) -> Option<String> {
    let doc = toml_edit::ImDocument::parse(text).ok()?;
    let mut path = String::new();
    key_in_table(doc.as_table(), at, &mut path).then_some(path)
}

/// Whether `message` starts with a key path in the section of `key`.
fn names_a_key(message: &str, key: &str) -> bool {
    let section = key.split(['.', '[']).next().unwrap_or(key);
    message
        .strip_prefix(section)
        .is_some_and(|rest| rest.starts_with(['.', ':']))
}

fn holds(span: Option<std::ops::Range<usize>>, at: usize) -> bool {
    span.is_some_and(|s| s.contains(&at))
}

fn push_key(path: &mut String, key: &str) {
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(key);
}

fn key_in_table(table: &toml_edit::Table, at: usize, path: &mut String) -> bool {
    for (name, item) in table.iter() {
        let len = path.len();
        push_key(path, name);
        let on_key = holds(table.key(name).and_then(toml_edit::Key::span), at);
        let found = on_key
            || match item {
                toml_edit::Item::Value(value) => key_in_value(value, at, path),
                toml_edit::Item::Table(table) => key_in_table(table, at, path),
                toml_edit::Item::ArrayOfTables(tables) => {
                    tables.iter().enumerate().any(|(i, table)| {
                        let len = path.len();
                        path.push_str(&format!("[{i}]"));
                        key_in_table(table, at, path) || {
                            path.truncate(len);
                            false
                        }
                    })
                }
                toml_edit::Item::None => false,
            };
        if found {
            return true;
        }
        path.truncate(len);
    }
    false
}

fn key_in_value(value: &toml_edit::Value, at: usize, path: &mut String) -> bool {
    if !holds(value.span(), at) {
        return false;
    }
    match value {
        toml_edit::Value::InlineTable(table) => {
            for (name, inner) in table.iter() {
                let len = path.len();
                push_key(path, name);
                if holds(table.key(name).and_then(toml_edit::Key::span), at)
                    || key_in_value(inner, at, path)
                {
                    return true;
                }
                path.truncate(len);
            }
        }
        toml_edit::Value::Array(array) => {
            for (i, inner) in array.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                if key_in_value(inner, at, path) {
                    return true;
                }
                path.truncate(len);
            }
        }
        _ => {}
    }
    true
}

fn line_col(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

impl Config {
    /// Reads and checks a config file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            position: None,
            message: format!("cannot read the file: {e}"),
        })?;
        Self::from_toml(&text, path)
    }

    /// Parses and checks config text; `file` names it in errors.
    pub fn from_toml(text: &str, file: &Path) -> Result<Self, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let at = e.span().map(|s| s.start);
            let message = e.message().trim();
            // Messages of our own deserializers may name their key already (`server.x: ...`).
            let message = match at.and_then(|at| key_at(text, at)) {
                Some(key) if !names_a_key(message, &key) => format!("{key}: {message}"),
                _ => message.to_owned(),
            };
            ConfigError::at(file, text, at, message)
        })?;
        // File names in the config are relative to the config file.
        let base = file.parent().unwrap_or(Path::new(""));
        if let Some(tls) = &mut config.tls {
            tls.resolve_paths(base);
        }
        if let Some(ca) = &mut config.upstream_tls.ca_file {
            if ca.is_relative() {
                *ca = base.join(&*ca);
            }
        }
        config.check(text, file)?;
        #[cfg(feature = "waf")]
        if let Some(waf) = &config.waf {
            let layer = waf
                .get_ref()
                .build(base)
                .map_err(|e| ConfigError::at(file, text, Some(waf.span().start), e.to_string()))?;
            config.waf_layer = Some(layer);
        }
        Ok(config)
    }

    /// Checks that span several values.
    fn check(&self, text: &str, file: &Path) -> Result<(), ConfigError> {
        let tls_listens = self.tls.as_ref().is_some_and(|t| !t.listen.is_empty());
        if self.server.listen.is_empty() && !tls_listens {
            return Err(ConfigError::at(
                file,
                text,
                None,
                "server.listen: name at least one address, e.g. [\"0.0.0.0:80\"] (or TLS ones in [tls] listen)",
            ));
        }
        let no_balancer = |section: &str| {
            ConfigError::at(
                file,
                text,
                text.find(&format!("[{section}]")),
                format!(
                    "{section}.proxy_protocol_from: name the balancers trusted to send the PROXY protocol header, \
                     e.g. [\"10.0.0.0/8\"]; proxy_protocol = true refuses every other connection"
                ),
            )
        };
        if self.server.proxy_protocol && self.server.proxy_protocol_from.is_empty() {
            return Err(no_balancer("server"));
        }
        if let Some(tls) = &self.tls {
            if tls.proxy_protocol && tls.proxy_protocol_from.is_empty() {
                return Err(no_balancer("tls"));
            }
            if tls.listen.is_empty() {
                return Err(ConfigError::at(
                    file,
                    text,
                    None,
                    "tls.listen: name at least one address, e.g. [\"0.0.0.0:443\"]",
                ));
            }
            crate::tls::load(tls, self.server.http2.enabled)
                .map_err(|e| ConfigError::at(file, text, None, e.to_string()))?;
        }
        self.upstream_tls
            .build()
            .map_err(|e| ConfigError::at(file, text, None, e))?;
        if let Some(evasive) = &self.evasive {
            evasive
                .build()
                .map_err(|e| ConfigError::at(file, text, text.find("[evasive]"), e.to_string()))?;
        }
        for (i, route) in self.routes.iter().enumerate() {
            let prefix = route.prefix.get_ref().0.trim_end_matches('/');
            if let Some(first) = self.routes[..i]
                .iter()
                .find(|r| r.prefix.get_ref().0.trim_end_matches('/') == prefix)
            {
                return Err(ConfigError::at(
                    file,
                    text,
                    Some(route.prefix.span().start),
                    format!(
                        "route.prefix: `{}` is already routed (as `{}`); each prefix may appear once",
                        route.prefix.get_ref().0,
                        first.prefix.get_ref().0
                    ),
                ));
            }
            match (&route.upstream, &route.pool) {
                (Some(_), None) => {}
                (None, Some(pool)) if self.pools.contains_key(pool.get_ref()) => {}
                (None, Some(pool)) => {
                    let known: Vec<&str> = self.pools.keys().map(String::as_str).collect();
                    return Err(ConfigError::at(
                        file,
                        text,
                        Some(pool.span().start),
                        if known.is_empty() {
                            format!(
                                "route.pool: no pool `{}`; define it as [pool.{}] with members = [{{ url = \"http://...\" }}]",
                                pool.get_ref(),
                                pool.get_ref()
                            )
                        } else {
                            format!(
                                "route.pool: no pool `{}`; pools here: {}",
                                pool.get_ref(),
                                known.join(", ")
                            )
                        },
                    ));
                }
                (upstream, _) => {
                    let what = if upstream.is_some() {
                        "has both `upstream` and `pool`; keep one"
                    } else {
                        "leads nowhere; give it `upstream = \"URL\"` (a single origin) or `pool = \"NAME\"` (a [pool.NAME])"
                    };
                    return Err(ConfigError::at(
                        file,
                        text,
                        Some(route.prefix.span().start),
                        format!("route `{}` {what}", route.prefix.get_ref().0),
                    ));
                }
            }
        }
        #[cfg(not(feature = "waf"))]
        if let Some(waf) = &self.waf {
            return Err(ConfigError::at(
                file,
                text,
                Some(waf.span().start),
                crate::waf::NOT_BUILT,
            ));
        }
        for (name, pool) in &self.pools {
            if let Err(e) = towergate_balancer::Pool::from_config(name, pool.get_ref()) {
                return Err(ConfigError::at(
                    file,
                    text,
                    Some(pool.span().start),
                    e.to_string(),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::from_toml(text, Path::new("t.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config() {
        let c = parse("[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\nprefix = \"/\"\nupstream = \"http://a.lan\"\n").unwrap();
        assert_eq!(c.server.timeout, Duration::from_secs(180));
        assert_eq!(c.routes.len(), 1);
    }

    #[test]
    fn unknown_key_names_file_line_column_and_key() {
        let err = parse("[server]\nlisten = [\"127.0.0.1:0\"]\nlistn = 1\n").unwrap_err();
        assert!(
            err.starts_with("t.toml:3:1: server.listn: unknown field `listn`"),
            "{err}"
        );
    }

    #[test]
    fn type_errors_name_the_key() {
        let err = parse("[server]\nlisten = [\"127.0.0.1:0\"]\ntimeout = 5\n").unwrap_err();
        assert!(
            err.starts_with("t.toml:3:11: server.timeout: invalid type: integer `5`"),
            "{err}"
        );
        let err = parse(
            "[server]\nlisten = [\"127.0.0.1:0\"]\n[pool.web]\nmembers = [{ url = \"http://a\" }, { url = 5 }]\n",
        )
        .unwrap_err();
        assert!(
            err.starts_with("t.toml:4:42: pool.web.members[1].url: invalid type"),
            "{err}"
        );
        let err = parse("[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\nprefix = \"/\"\nupstream = \"http://x\"\n[[route]]\nprefix = 7\n").unwrap_err();
        assert!(err.starts_with("t.toml:7:10: route[1].prefix: "), "{err}");
    }

    #[test]
    fn bad_values_are_located() {
        let err = parse("[server]\nlisten = [\"127.0.0.1:0\"]\ntimeout = \"soon\"\n").unwrap_err();
        assert!(
            err.starts_with("t.toml:3:11:") && err.contains("not a duration"),
            "{err}"
        );
        let err = parse("[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\nprefix = \"/\"\nupstream = \"ftp://x\"\n").unwrap_err();
        assert!(
            err.starts_with("t.toml:5:12:") && err.contains("scheme must be http"),
            "{err}"
        );
        let err = parse("[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\nprefix = \"/a/../b\"\nupstream = \"http://x\"\n").unwrap_err();
        assert!(err.starts_with("t.toml:4:10:"), "{err}");
    }

    #[test]
    fn duplicate_prefix() {
        let err = parse("[server]\nlisten = [\"127.0.0.1:0\"]\n[[route]]\nprefix = \"/a\"\nupstream = \"http://x\"\n[[route]]\nprefix = \"/a/\"\nupstream = \"http://y\"\n").unwrap_err();
        assert!(
            err.starts_with("t.toml:7:10:") && err.contains("already routed"),
            "{err}"
        );
    }

    #[test]
    fn proxy_protocol_keys() {
        let head = "[server]\nlisten = [\"127.0.0.1:0\"]\n";
        let c = parse(&format!(
            "{head}proxy_protocol = true\nproxy_protocol_from = [\"10.1.0.0/16\", \"192.0.2.7\"]\n"
        ))
        .unwrap();
        assert!(c.server.proxy_protocol);
        assert_eq!(c.server.proxy_protocol_from[1].to_string(), "192.0.2.7/32");
        // Off by default; the list may stay while it is switched off.
        let c = parse(&format!("{head}proxy_protocol_from = [\"10.0.0.0/8\"]\n")).unwrap();
        assert!(!c.server.proxy_protocol);
        let err = parse(&format!(
            "{head}proxy_protocol = true\nproxy_protocol_from = [\"lb.lan\"]\n"
        ))
        .unwrap_err();
        assert!(
            err.starts_with(
                "t.toml:4:23: server.proxy_protocol_from: `lb.lan` is not an IP address"
            ),
            "{err}"
        );
        let err = parse(&format!("{head}proxy_protocol = true\n")).unwrap_err();
        assert!(
            err.starts_with("t.toml:1:1: server.proxy_protocol_from: name the balancers"),
            "{err}"
        );
        let err = parse(&format!("{head}proxy_protocol = \"yes\"\n")).unwrap_err();
        assert!(err.starts_with("t.toml:3:18:"), "{err}");
    }

    #[test]
    fn routes_lead_to_a_pool_or_an_origin() {
        let head = "[server]\nlisten = [\"127.0.0.1:0\"]\n";
        let c = parse(&format!(
            "{head}[[route]]\nprefix = \"/\"\npool = \"web\"\n[pool.web]\nmembers = [{{ url = \"http://a\" }}, {{ url = \"http://b\", weight = 3 }}]\n"
        ))
        .unwrap();
        assert_eq!(c.pools["web"].get_ref().members[1].weight, 3);
        let err = parse(&format!(
            "{head}[[route]]\nprefix = \"/\"\npool = \"nope\"\n"
        ))
        .unwrap_err();
        assert!(
            err.starts_with("t.toml:5:8: route.pool: no pool `nope`; define it as [pool.nope]"),
            "{err}"
        );
        let err = parse(&format!("{head}[[route]]\nprefix = \"/\"\n")).unwrap_err();
        assert!(
            err.starts_with("t.toml:4:10: route `/` leads nowhere"),
            "{err}"
        );
        let err = parse(&format!(
            "{head}[[route]]\nprefix = \"/\"\nupstream = \"http://a\"\npool = \"web\"\n[pool.web]\nmembers = [{{ url = \"http://a\" }}]\n"
        ))
        .unwrap_err();
        assert!(err.contains("has both `upstream` and `pool`"), "{err}");
        let err = parse(&format!(
            "{head}[pool.web]\nmembers = [{{ url = \"http://a\", weight = 0 }}]\n"
        ))
        .unwrap_err();
        assert!(
            err.starts_with("t.toml:3:1: pool.web.members[0].weight: 0 is out of range"),
            "{err}"
        );
        let err = parse(&format!(
            "{head}[pool.web]\nmembers = [{{ url = \"http://a\", wieght = 2 }}]\n"
        ))
        .unwrap_err();
        assert!(err.contains("unknown field `wieght`"), "{err}");
    }

    #[cfg(not(feature = "waf"))]
    #[test]
    fn waf_section_needs_the_feature() {
        let err =
            parse("[server]\nlisten = [\"127.0.0.1:0\"]\n[waf]\nrules_files = [\"/x/*.conf\"]\n")
                .unwrap_err();
        assert!(err.starts_with("t.toml:"), "{err}");
        assert!(
            err.contains("built without the waf feature") && err.contains("--features waf"),
            "{err}"
        );
    }
}
