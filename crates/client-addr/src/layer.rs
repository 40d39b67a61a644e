//! [`ClientAddrLayer`]: decides the client address and inserts [`ClientAddr`].

use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use http::header::{FORWARDED, HeaderMap, HeaderName};
use http::{Extensions, Request};
use ipnet::IpNet;
use tower_layer::Layer;
use tower_service::Service;

use crate::{ClientAddr, peer_ip};

const TARGET: &str = "towergate_client_addr";
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The header trusted proxies report the client in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (the de-facto standard; the default).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239; only `for=` is read).
    Forwarded,
}

impl ForwardedHeader {
    fn name(self) -> &'static HeaderName {
        match self {
            ForwardedHeader::XForwardedFor => &X_FORWARDED_FOR,
            ForwardedHeader::Forwarded => &FORWARDED,
        }
    }
}

// === impl ClientAddrLayer ===

/// Decides each request's client address and inserts it as [`ClientAddr`].
///
/// Cheap to clone. See the [crate docs](crate) for an example.
#[derive(Debug, Clone, Default)]
pub struct ClientAddrLayer {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
    stats: Counters,
}

#[derive(Debug, Default)]
struct Counters {
    from_header: AtomicU64,
    untrusted_header: AtomicU64,
    unknown: AtomicU64,
}

/// Counts of the layer's decisions since it was built (the common case, the socket peer
/// as the client, is not counted, to keep shared counters off the common path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientAddrStats {
    /// Requests whose client came from a trusted proxy's header.
    pub from_header: u64,
    /// Requests carrying the forwarded header from a peer that is not a trusted proxy
    /// (the header was ignored: spoofing attempts, or a proxy missing from the list).
    pub untrusted_header: u64,
    /// Requests without a known socket peer (no [`PeerAddr`](crate::PeerAddr)); left as
    /// they were.
    pub unknown: u64,
}

impl ClientAddrLayer {
    /// A layer that takes the socket peer as the client, trusting no proxy.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder, to name trusted proxies and the header they write.
    pub fn builder() -> ClientAddrBuilder {
        ClientAddrBuilder::default()
    }

    /// The decisions counted so far.
    pub fn stats(&self) -> ClientAddrStats {
        let c = &self.shared.stats;
        ClientAddrStats {
            from_header: c.from_header.load(Relaxed),
            untrusted_header: c.untrusted_header.load(Relaxed),
            unknown: c.unknown.load(Relaxed),
        }
    }

    /// The client address for a request with these extensions and headers, or `None`
    /// when the socket peer is unknown. This is what the service inserts.
    pub fn resolve(&self, ext: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        self.shared.resolve(ext, headers)
    }
}

impl<S> Layer<S> for ClientAddrLayer {
    type Service = SetClientAddr<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetClientAddr {
            inner,
            shared: self.shared.clone(),
        }
    }
}

impl Shared {
    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted.iter().any(|net| net.contains(&ip))
    }

    fn resolve(&self, ext: &Extensions, headers: &HeaderMap) -> Option<IpAddr> {
        let stats = &self.stats;
        let Some(peer) = peer_ip(ext).map(|ip| ip.to_canonical()) else {
            stats.unknown.fetch_add(1, Relaxed);
            return None;
        };
        let name = self.header.name();
        if !self.is_trusted(peer) {
            if headers.contains_key(name) {
                stats.untrusted_header.fetch_add(1, Relaxed);
                tracing::debug!(target: TARGET, %peer, header = %name, "header from an untrusted peer ignored");
            }
            return Some(peer);
        }
        // The peer is a trusted proxy: walk the hops it (and the proxies before it)
        // reported, right to left, to the first one we do not trust.
        let mut client = peer;
        'walk: for value in headers.get_all(name).iter().rev() {
            let Ok(value) = value.to_str() else { break };
            for entry in value.rsplit(',') {
                let entry = entry.trim();
                if entry.is_empty() {
                    continue;
                }
                let hop = match self.header {
                    ForwardedHeader::XForwardedFor => parse_node(entry),
                    ForwardedHeader::Forwarded => forwarded_for(entry).and_then(parse_node),
                };
                let Some(hop) = hop else {
                    tracing::debug!(target: TARGET, %peer, entry, "forwarded entry is not an address; walk stopped");
                    break 'walk;
                };
                client = hop.to_canonical();
                if !self.is_trusted(client) {
                    break 'walk;
                }
            }
        }
        if client != peer {
            stats.from_header.fetch_add(1, Relaxed);
        }
        Some(client)
    }
}

/// The `for=` value of one `Forwarded` element (`for=1.2.3.4;proto=https`).
fn forwarded_for(element: &str) -> Option<&str> {
    element.split(';').find_map(|pair| {
        let (key, value) = pair.split_once('=')?;
        key.trim().eq_ignore_ascii_case("for").then(|| {
            let v = value.trim();
            v.strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v)
        })
    })
}

/// An address as proxies write it: `1.2.3.4`, `1.2.3.4:80`, `::1`, `[::1]`, `[::1]:80`.
fn parse_node(s: &str) -> Option<IpAddr> {
    if let Ok(ip) = IpAddr::from_str(s) {
        return Some(ip);
    }
    if let Ok(sa) = SocketAddr::from_str(s) {
        return Some(sa.ip());
    }
    s.strip_prefix('[')
        .and_then(|s| s.strip_suffix(']'))
        .and_then(|s| IpAddr::from_str(s).ok())
}

// === impl ClientAddrBuilder ===

/// Builds a [`ClientAddrLayer`] in code.
#[derive(Debug, Clone, Default)]
pub struct ClientAddrBuilder {
    trusted: Vec<IpNet>,
    header: ForwardedHeader,
}

impl ClientAddrBuilder {
    /// Trusts the proxies in `net` (a single address is a /32 or /128 network) to report
    /// the client.
    pub fn trusted_proxy(mut self, net: IpNet) -> Self {
        self.trusted.push(net.trunc());
        self
    }

    /// Trusts every network in `nets`.
    pub fn trusted_proxies(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted.extend(nets.into_iter().map(|n| n.trunc()));
        self
    }

    /// The header the trusted proxies write (`X-Forwarded-For` by default).
    pub fn header(mut self, header: ForwardedHeader) -> Self {
        self.header = header;
        self
    }

    /// The layer.
    pub fn build(self) -> ClientAddrLayer {
        ClientAddrLayer {
            shared: Arc::new(Shared {
                trusted: self.trusted,
                header: self.header,
                stats: Counters::default(),
            }),
        }
    }
}

// === impl SetClientAddr ===

/// Inserts the request's [`ClientAddr`]; built by [`ClientAddrLayer`].
#[derive(Debug, Clone)]
pub struct SetClientAddr<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> SetClientAddr<S> {
    /// Wraps `inner` with a layer's settings.
    pub fn new(inner: S, layer: &ClientAddrLayer) -> Self {
        layer.layer(inner)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// The inner service, unwrapped.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S, B> Service<Request<B>> for SetClientAddr<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(ip) = self.shared.resolve(req.extensions(), req.headers()) {
            req.extensions_mut().insert(ClientAddr(ip));
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerAddr;

    fn layer(trusted: &[&str], header: ForwardedHeader) -> ClientAddrLayer {
        ClientAddrLayer::builder()
            .trusted_proxies(trusted.iter().map(|t| t.parse().unwrap()))
            .header(header)
            .build()
    }

    fn resolve(layer: &ClientAddrLayer, peer: &str, headers: &[(&str, &str)]) -> Option<String> {
        let mut ext = Extensions::new();
        ext.insert(PeerAddr(SocketAddr::new(peer.parse().unwrap(), 1234)));
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        layer.resolve(&ext, &map).map(|ip| ip.to_string())
    }

    #[test]
    fn no_trusted_proxies_means_the_peer() {
        let l = ClientAddrLayer::new();
        let got = resolve(&l, "192.0.2.1", &[("x-forwarded-for", "10.9.9.9")]);
        assert_eq!(got.as_deref(), Some("192.0.2.1"));
        assert_eq!(l.stats().untrusted_header, 1);
        assert_eq!(l.resolve(&Extensions::new(), &HeaderMap::new()), None);
        assert_eq!(l.stats().unknown, 1);
    }

    #[test]
    fn right_most_untrusted_hop() {
        let l = layer(
            &["10.0.0.0/8", "2001:db8::/32"],
            ForwardedHeader::XForwardedFor,
        );
        // The client itself claims 1.1.1.1 at the left; the first proxy saw 203.0.113.7.
        let h = [("x-forwarded-for", "1.1.1.1, 203.0.113.7, 10.0.0.5")];
        assert_eq!(resolve(&l, "10.0.0.2", &h).as_deref(), Some("203.0.113.7"));
        // Several header lines are one list, in order.
        let h = [
            ("x-forwarded-for", "1.1.1.1, 203.0.113.7"),
            ("x-forwarded-for", "10.0.0.5"),
        ];
        assert_eq!(resolve(&l, "10.0.0.2", &h).as_deref(), Some("203.0.113.7"));
        // Ports and brackets as proxies write them.
        let h = [("x-forwarded-for", "[2001:db9::1]:443, 10.0.0.5:80")];
        assert_eq!(
            resolve(&l, "2001:db8::2", &h).as_deref(),
            Some("2001:db9::1")
        );
        // All hops trusted: the left-most.
        let h = [("x-forwarded-for", "10.1.1.1, 10.0.0.5")];
        assert_eq!(resolve(&l, "10.0.0.2", &h).as_deref(), Some("10.1.1.1"));
        // No header: the peer.
        assert_eq!(resolve(&l, "10.0.0.2", &[]).as_deref(), Some("10.0.0.2"));
        // Garbage stops the walk at the last trusted hop.
        let h = [("x-forwarded-for", "203.0.113.7, unknown, 10.0.0.5")];
        assert_eq!(resolve(&l, "10.0.0.2", &h).as_deref(), Some("10.0.0.5"));
        assert_eq!(l.stats().from_header, 5);
    }

    #[test]
    fn ipv4_mapped_peers_count_as_ipv4() {
        let l = layer(&["10.0.0.0/8"], ForwardedHeader::XForwardedFor);
        let h = [("x-forwarded-for", "203.0.113.7")];
        assert_eq!(
            resolve(&l, "::ffff:10.0.0.2", &h).as_deref(),
            Some("203.0.113.7")
        );
        let h = [("x-forwarded-for", "::ffff:203.0.113.7")];
        assert_eq!(resolve(&l, "10.0.0.2", &h).as_deref(), Some("203.0.113.7"));
    }

    #[test]
    fn forwarded_header() {
        let l = layer(&["10.0.0.0/8"], ForwardedHeader::Forwarded);
        let h = [
            (
                "forwarded",
                "for=1.1.1.1, for=\"[2001:db8:cafe::17]:4711\";proto=https",
            ),
            ("forwarded", "For=10.0.0.9;by=10.0.0.2"),
            ("x-forwarded-for", "5.5.5.5"),
        ];
        assert_eq!(
            resolve(&l, "10.0.0.2", &h).as_deref(),
            Some("2001:db8:cafe::17")
        );
        let h = [("forwarded", "for=_hidden, for=10.0.0.9")];
        assert_eq!(resolve(&l, "10.0.0.2", &h).as_deref(), Some("10.0.0.9"));
        let h = [("forwarded", "proto=https")];
        assert_eq!(resolve(&l, "10.0.0.2", &h).as_deref(), Some("10.0.0.2"));
        // X-Forwarded-For is not read when Forwarded is configured.
        let h = [("x-forwarded-for", "5.5.5.5")];
        assert_eq!(resolve(&l, "10.0.0.2", &h).as_deref(), Some("10.0.0.2"));
    }
}
