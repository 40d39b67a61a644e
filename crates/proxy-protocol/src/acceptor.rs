//! [`ProxyProtocol`]: who may send the header, how long it may take, and what was refused.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use tokio::net::TcpStream;

use crate::header::{ProxyHeader, ProxyProtocolError, read_header};

const TARGET: &str = "towergate_proxy_protocol";

/// How often a refusal is logged at most (the others are counted, and their number is
/// given with the next message).
const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The default time a trusted peer has to send the whole header.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

// === impl ProxyProtocol ===

/// Accepts the PROXY protocol on connections from trusted balancers.
///
/// Cheap to clone (shared state behind an `Arc`); one per listener, or one for several.
/// See the [crate docs](crate) for an example.
#[derive(Debug, Clone)]
pub struct ProxyProtocol {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    trusted: Vec<IpNet>,
    timeout: Duration,
    stats: Arc<Counters>,
    log: LogGate,
}

#[derive(Debug, Default)]
struct Counters {
    proxied: AtomicU64,
    local: AtomicU64,
    untrusted: AtomicU64,
    invalid: AtomicU64,
    timed_out: AtomicU64,
    closed: AtomicU64,
}

/// Counts of connections since the [`ProxyProtocol`] was built (or the one whose counts
/// it [kept](ProxyProtocolBuilder::keep_stats)).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyProtocolStats {
    /// Connections whose header carried the client's address.
    pub proxied: u64,
    /// Connections whose header carried no address (`LOCAL`, `UNKNOWN`): the balancer's
    /// own health checks; the socket peer is the client.
    pub local: u64,
    /// Connections refused because the peer is not a trusted balancer.
    pub untrusted: u64,
    /// Connections refused for a missing, malformed or oversized header.
    pub invalid: u64,
    /// Connections refused because the header did not arrive within the timeout.
    pub timed_out: u64,
    /// Connections closed (or failed) before their header was complete.
    pub closed: u64,
}

impl ProxyProtocolStats {
    /// All refused connections.
    pub fn refused(&self) -> u64 {
        self.untrusted + self.invalid + self.timed_out + self.closed
    }
}

impl ProxyProtocol {
    /// A builder; with no trusted network, every connection is refused.
    pub fn builder() -> ProxyProtocolBuilder {
        ProxyProtocolBuilder {
            trusted: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            stats: None,
        }
    }

    /// Whether `ip` may send a header.
    pub fn is_trusted(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.shared.trusted.iter().any(|n| n.contains(&ip))
    }

    /// The trusted networks.
    pub fn trusted(&self) -> &[IpNet] {
        &self.shared.trusted
    }

    /// The time a peer has to send the header.
    pub fn timeout(&self) -> Duration {
        self.shared.timeout
    }

    /// Reads the header of a connection just accepted from `peer`, within the timeout.
    ///
    /// `Ok` gives the header; its `source`, when present, is the client, and `None`
    /// means the socket peer is. `Err` means the connection must be closed: the peer is
    /// not trusted (nothing is read), or the header is missing, malformed, oversized, or
    /// late. Every outcome is counted; refusals are logged under the target
    /// `towergate_proxy_protocol`, each at debug level, and as a warning at most once per
    /// 10 seconds (the number left out is given with the next one); a peer that closes
    /// before its header is complete is not warned about.
    pub async fn accept(
        &self,
        stream: &mut TcpStream,
        peer: SocketAddr,
    ) -> Result<ProxyHeader, ProxyProtocolError> {
        let result = if self.is_trusted(peer.ip()) {
            match tokio::time::timeout(self.shared.timeout, read_header(stream)).await {
                Ok(result) => result,
                Err(_) => Err(ProxyProtocolError::TimedOut),
            }
        } else {
            Err(ProxyProtocolError::Untrusted)
        };
        let c = &self.shared.stats;
        match &result {
            Ok(h) if h.source.is_some() => c.proxied.fetch_add(1, Relaxed),
            Ok(_) => c.local.fetch_add(1, Relaxed),
            Err(e) => {
                self.refused(peer, e);
                match e {
                    ProxyProtocolError::Untrusted => c.untrusted.fetch_add(1, Relaxed),
                    ProxyProtocolError::TimedOut => c.timed_out.fetch_add(1, Relaxed),
                    ProxyProtocolError::Closed | ProxyProtocolError::Io(_) => {
                        c.closed.fetch_add(1, Relaxed)
                    }
                    ProxyProtocolError::Missing
                    | ProxyProtocolError::Invalid(_)
                    | ProxyProtocolError::TooLarge => c.invalid.fetch_add(1, Relaxed),
                }
            }
        };
        result
    }

    fn refused(&self, peer: SocketAddr, error: &ProxyProtocolError) {
        tracing::debug!(target: TARGET, %peer, %error, "connection refused");
        // A peer that hangs up early (a TCP health check, a client giving up) is no news.
        let early_close = matches!(
            error,
            ProxyProtocolError::Closed | ProxyProtocolError::Io(_)
        );
        if early_close {
            return;
        }
        if let Some(left_out) = self.shared.log.pass() {
            tracing::warn!(
                target: TARGET,
                %peer,
                %error,
                refused_without_message = left_out,
                "PROXY protocol: connection refused (one message per {}s at most)",
                LOG_INTERVAL.as_secs()
            );
        }
    }

    /// Counts since the acceptor was built.
    pub fn stats(&self) -> ProxyProtocolStats {
        let c = &self.shared.stats;
        ProxyProtocolStats {
            proxied: c.proxied.load(Relaxed),
            local: c.local.load(Relaxed),
            untrusted: c.untrusted.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            timed_out: c.timed_out.load(Relaxed),
            closed: c.closed.load(Relaxed),
        }
    }
}

// === impl ProxyProtocolBuilder ===

/// Builds a [`ProxyProtocol`].
#[derive(Debug, Clone)]
pub struct ProxyProtocolBuilder {
    trusted: Vec<IpNet>,
    timeout: Duration,
    stats: Option<Arc<Counters>>,
}

impl ProxyProtocolBuilder {
    /// Trusts a balancer's address or network to send headers (HAProxy's
    /// `tcp-request connection expect-proxy layer4 if { src ... }`, nginx's
    /// `set_real_ip_from`). IPv4-mapped IPv6 peers count as their IPv4 address.
    pub fn trusted(mut self, net: IpNet) -> Self {
        self.trusted.push(net.trunc());
        self
    }

    /// Trusts several networks.
    pub fn trusted_networks(mut self, nets: impl IntoIterator<Item = IpNet>) -> Self {
        self.trusted.extend(nets.into_iter().map(|n| n.trunc()));
        self
    }

    /// The time a trusted peer has to send the whole header (default 5 s; nginx's
    /// `proxy_protocol_timeout`): a peer that connects and stays silent is closed then.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Counts into `previous`'s counters, so a configuration reload keeps the totals.
    pub fn keep_stats(mut self, previous: &ProxyProtocol) -> Self {
        self.stats = Some(previous.shared.stats.clone());
        self
    }

    /// The acceptor.
    pub fn build(self) -> ProxyProtocol {
        ProxyProtocol {
            shared: Arc::new(Shared {
                trusted: self.trusted,
                timeout: self.timeout,
                stats: self.stats.unwrap_or_default(),
                log: LogGate::new(),
            }),
        }
    }
}

// === impl LogGate ===

/// Lets one message through per [`LOG_INTERVAL`], counting the others.
#[derive(Debug)]
struct LogGate {
    start: Instant,
    /// Milliseconds since `start` before which messages are held back.
    next: AtomicU64,
    held_back: AtomicU64,
}

impl LogGate {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            next: AtomicU64::new(0),
            held_back: AtomicU64::new(0),
        }
    }

    /// `Some(messages held back since the last one)` when a message may go out now.
    fn pass(&self) -> Option<u64> {
        let now = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next.load(Relaxed);
        let interval = u64::try_from(LOG_INTERVAL.as_millis()).unwrap_or(u64::MAX);
        if now < next
            || self
                .next
                .compare_exchange(next, now.saturating_add(interval), Relaxed, Relaxed)
                .is_err()
        {
            self.held_back.fetch_add(1, Relaxed);
            return None;
        }
        Some(self.held_back.swap(0, Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_by_network() {
        let pp = ProxyProtocol::builder()
            .trusted("10.1.2.3/8".parse().unwrap())
            .trusted("::1/128".parse().unwrap())
            .build();
        assert_eq!(pp.trusted()[0].to_string(), "10.0.0.0/8");
        assert!(pp.is_trusted("10.200.0.1".parse().unwrap()));
        assert!(pp.is_trusted("::ffff:10.0.0.9".parse().unwrap()));
        assert!(pp.is_trusted("::1".parse().unwrap()));
        assert!(!pp.is_trusted("127.0.0.1".parse().unwrap()));
        assert!(
            !ProxyProtocol::builder()
                .build()
                .is_trusted("10.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn log_gate_lets_one_through_per_interval() {
        let gate = LogGate::new();
        assert_eq!(gate.pass(), Some(0));
        assert_eq!(gate.pass(), None);
        assert_eq!(gate.pass(), None);
        gate.next.store(0, Relaxed);
        assert_eq!(gate.pass(), Some(2));
    }
}
