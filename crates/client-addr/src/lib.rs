//! The client address that every towergate layer reads.
//!
//! The accept loop inserts [`PeerAddr`] (the socket peer) and [`ClientAddr`] (the address
//! the guards act on) into every request's extensions. Layers such as the ACL, the flood
//! blocker and the access log call [`client_ip`] instead of looking at sockets, so one
//! decision about who the client is (socket peer, or the real client behind trusted proxies)
//! holds for all of them.

use std::net::{IpAddr, SocketAddr};

use http::{Extensions, Request};

/// The socket address of the connection's peer, as accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerAddr(pub SocketAddr);

/// The address the guards treat as the client: the socket peer, or, behind trusted
/// proxies, the client those proxies report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ClientAddr(pub IpAddr);

/// The client address of a request: [`ClientAddr`] if set, else the [`PeerAddr`]'s IP.
pub fn client_ip<B>(req: &Request<B>) -> Option<IpAddr> {
    client_ip_of(req.extensions())
}

/// [`client_ip`] for a request's extensions alone (after `into_parts`).
pub fn client_ip_of(ext: &Extensions) -> Option<IpAddr> {
    ext.get::<ClientAddr>()
        .map(|c| c.0)
        .or_else(|| peer_ip(ext))
}

/// The socket peer's IP, from [`PeerAddr`].
pub fn peer_ip(ext: &Extensions) -> Option<IpAddr> {
    ext.get::<PeerAddr>().map(|p| p.0.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_addr_wins_over_peer() {
        let mut req = Request::new(());
        assert_eq!(client_ip(&req), None);
        req.extensions_mut()
            .insert(PeerAddr("127.0.0.2:4000".parse().unwrap()));
        assert_eq!(client_ip(&req), Some("127.0.0.2".parse().unwrap()));
        req.extensions_mut()
            .insert(ClientAddr("10.0.0.9".parse().unwrap()));
        assert_eq!(client_ip(&req), Some("10.0.0.9".parse().unwrap()));
    }
}
